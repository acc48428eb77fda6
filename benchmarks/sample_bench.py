"""Sampling speed: seconds per batch of the compiled parallel-decoding sampler, table + JSON.

    KERAS_BACKEND=jax python benchmarks/sample_bench.py --out sample_bench.json
    KERAS_BACKEND=jax python benchmarks/sample_bench.py --quick      # CI-sized
    # the peers at the same config, same run (their venv: ../shared/bench/peers/setup_venv.sh):
    KERAS_BACKEND=jax python benchmarks/sample_bench.py --peers /tmp/keras-muse-peers-venv/bin/python

Rows: `muse_tiny` and the issue's config (width 512, depth 8, 8 heads, 256
tokens, codebook 8192, text length 77 / width 512, batch 4, 12 steps), each
with classifier-free guidance (scale 3, one doubled batch) and without; and
the super-res stage at its default 8 steps (`MuseSuperResolution.upsample`
from given low-res tokens): tiny, the shapes 64->128 size (16x16 -> 32x32
tokens, width 128, 2 + 4 layers, codebook 512), and, opt-in, a 16x16 ->
32x32 one at width 512 (`--configs sr_d512_32x32`). The
text embeddings are given (as the peers' benchmark does: no T5 and no VQGAN
decoder in the timed region), so the time is the transformer loop:
`MuseTextToImage.generate({"text_embeddings": ..., "text_padding_mask": ...})`.
"first call" includes tracing and XLA compilation; "steady" is the median of
the timed calls after it. `gflop` / `tflops` count the matrix products of the
call (`flops.py`: text keys/values once, the token side once per step, both
on the doubled batch under CFG); with `--peak-json` (from `matmul_peak.py`)
`mfu` divides by the measured matmul peak of the compute dtype. Each config
runs in a process of its own, so `peak_rss_MB` (host memory high-water mark)
is that config's, and `device_peak_MB` where the accelerator reports it.

    # GPU, bf16, bigger batch (benchmarks/gpu/README.md):
    python benchmarks/sample_bench.py --configs d512_l8_cb8192 --dtype mixed_bfloat16 \
        --batch 64 --runs 10 --peak-json peak.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from bench_utils import format_table, machine_info  # noqa: E402
from flops import add_rates  # noqa: E402
from flops import load_peak  # noqa: E402
from flops import sampling_flops  # noqa: E402

CONFIGS = {
    "muse_tiny": dict(codebook_size=64, grid_size=4, hidden_dim=32, num_layers=2, num_heads=4,
                      mlp_dim=64, text_dim=16, text_len=8, batch=4, steps=12),
    "d512_l8_cb8192": dict(codebook_size=8192, grid_size=16, hidden_dim=512, num_layers=8, num_heads=8,
                           mlp_dim=2048, text_dim=512, text_len=77, batch=4, steps=12),
    "sr_tiny": dict(codebook_size=64, grid_size=8, low_res_codebook_size=64, low_res_grid_size=4,
                    hidden_dim=32, num_layers=2, low_res_num_layers=1, num_heads=4, mlp_dim=64,
                    text_dim=16, text_len=8, batch=4, steps=8),
    "sr_shapes_128": dict(codebook_size=512, grid_size=32, low_res_codebook_size=512, low_res_grid_size=16,
                          hidden_dim=128, num_layers=4, low_res_num_layers=2, num_heads=4, mlp_dim=512,
                          text_dim=64, text_len=32, batch=8, steps=8),
    # The shipped muse_shapes_128's super-res stage (multi-axis attention, aligned low-res features).
    "sr_shapes_128_shipped": dict(codebook_size=512, grid_size=32, low_res_codebook_size=512, low_res_grid_size=16,
                                  hidden_dim=128, num_layers=4, low_res_num_layers=2, num_heads=2, mlp_dim=512,
                                  text_dim=64, text_len=32, batch=8, steps=8, attention_window=8,
                                  aligned_low_res=True),
    "sr_d512_32x32": dict(codebook_size=8192, grid_size=32, low_res_codebook_size=8192, low_res_grid_size=16,
                          hidden_dim=512, num_layers=8, low_res_num_layers=4, num_heads=8, mlp_dim=2048,
                          text_dim=512, text_len=77, batch=4, steps=8),
}
DEFAULT_CONFIGS = ["muse_tiny", "d512_l8_cb8192", "sr_tiny", "sr_shapes_128", "sr_shapes_128_shipped"]
PEERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench", "peers")


def device_peak_mb():
    """Peak accelerator memory of this process so far (MB), where the backend says."""
    try:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # not JAX, or a device without statistics (CPU)
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**20, 1)


def bench_config(name, runs, cfg_scales=(3.0, 0.0), batch=None, peak_tflops=None):
    import keras
    import numpy as np

    from keras_muse.models import MuseBackbone
    from keras_muse.models import MuseSuperResBackbone
    from keras_muse.models import MuseSuperResolution
    from keras_muse.models import MuseTextToImage

    cfg = dict(CONFIGS[name])
    text_len, cfg_batch, steps = cfg.pop("text_len"), cfg.pop("batch"), cfg.pop("steps")
    batch = batch or cfg_batch
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    super_res = "low_res_grid_size" in cfg
    if super_res:
        backbone = MuseSuperResBackbone(**cfg, dropout=0.0)
        task = MuseSuperResolution(backbone)
        low_res = rng.integers(0, cfg["low_res_codebook_size"], (batch, backbone.num_low_res_tokens))
    else:
        backbone = MuseBackbone(**cfg, dropout=0.0)
        task = MuseTextToImage(backbone)
    inputs = {
        "text_embeddings": rng.normal(size=(batch, text_len, cfg["text_dim"])).astype("float32"),
        "text_padding_mask": np.ones((batch, text_len), bool),
        "negative_text_embeddings": np.zeros((1, text_len, cfg["text_dim"]), "float32"),
        "negative_text_padding_mask": np.eye(1, text_len, dtype=bool),
    }
    rows = []
    for scale in cfg_scales:
        if not scale:
            inputs_now = {k: v for k, v in inputs.items() if not k.startswith("negative")}
            task.compile(unconditional_text_embeddings=(inputs["negative_text_embeddings"][0],
                                                        inputs["negative_text_padding_mask"][0]))
        else:
            inputs_now = inputs

        def call(seed):
            if super_res:
                return task.upsample(low_res, inputs_now, num_steps=steps, guidance_scale=scale, seed=seed,
                                     batch_size=batch, verbose=0)
            return task.generate(inputs_now, num_steps=steps, guidance_scale=scale, seed=seed,
                                 batch_size=batch, verbose=0)

        start = time.perf_counter()
        call(0)
        first = time.perf_counter() - start
        times = []
        for r in range(runs):
            start = time.perf_counter()
            call(r + 1)
            times.append(time.perf_counter() - start)
        steady = float(np.median(times))
        row = {
            "config": name, "backend": keras.config.backend(), "dtype": keras.config.dtype_policy().name,
            "cfg_scale": scale,
            "params_M": round(backbone.count_params() / 1e6, 2), "batch": batch, "steps": steps,
            "tokens": backbone.num_tokens, "first_call_s": round(first, 2),
            "seconds_per_batch": round(steady, 3), "runs_s": [round(t, 3) for t in times],
            "images_per_s": round(batch / steady, 3),
            "tokens_per_s": round(batch * backbone.num_tokens / steady, 1),
        }
        flop = sampling_flops(backbone, text_len, batch, steps, guidance=bool(scale))
        add_rates(row, flop, steady, peak_tflops)
        # The process runs this one config (`run_in_child`), so its
        # high-water mark is the config's: model, compiled programs, buffers.
        row["peak_rss_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        peak_mb = device_peak_mb()
        if peak_mb is not None:
            row["device_peak_MB"] = peak_mb
        rows.append(row)
    return rows


def run_in_child(name, args):
    """One config in a fresh process: its peak RSS is its own."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", name, "--runs", str(args.runs),
           "--dtype", args.dtype, "--cfg-scales", *map(str, args.cfg_scales),
           *(["--batch", str(args.batch)] if args.batch else []),
           *(["--peak-json", args.peak_json] if args.peak_json else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def device_name():
    """The first device's kind ("NVIDIA H100 80GB HBM3", "cpu"), JAX backend only."""
    try:
        import jax

        device = jax.devices()[0]
        return getattr(device, "device_kind", device.platform)
    except Exception:
        return None


def run_peers(python, runs):
    """The peers at the d512 config, in their own venv; rows as they print them."""
    script = os.path.join(PEERS_DIR, "sample_bench.py")
    cmd = [python, script, "--peer", "all", "--mode", "sample", "--dim", "512", "--depth", "8",
           "--heads", "8", "--batch", "4", "--steps", "12", "--seq-side", "16", "--codebook", "8192",
           "--text-len", "77", "--text-dim", "512", "--cfg", "3", "0", "--runs", str(runs), "--no-flops"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="muse_tiny only (CI)")
    parser.add_argument("--peers", default=None, help="python of the peers' venv: time them in the same run")
    parser.add_argument("--out", default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "mixed_bfloat16", "bfloat16"],
                        help="Keras dtype policy of the models (mixed_bfloat16: bf16 compute, fp32 weights)")
    parser.add_argument("--batch", type=int, default=None, help="override every config's batch")
    parser.add_argument("--cfg-scales", type=float, nargs="+", default=[3.0, 0.0],
                        help="guidance scales to time (0 = no guidance, no doubled batch)")
    parser.add_argument("--peak-json", default=None, help="matmul_peak.py output: adds the `mfu` column")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        import keras

        keras.config.set_dtype_policy(args.dtype)
        peak = load_peak(args.peak_json, args.dtype)
        print(json.dumps(bench_config(args._child, args.runs, tuple(args.cfg_scales), args.batch, peak)))
        return 0
    if args.quick:
        args.configs, args.runs = ["muse_tiny", "sr_tiny"], 2
    rows = [row for name in args.configs for row in run_in_child(name, args)]
    print(format_table(rows, ["config", "dtype", "cfg_scale", "params_M", "batch", "steps", "first_call_s",
                        "seconds_per_batch", "images_per_s", "tflops", "mfu", "peak_rss_MB"]))
    result = {"machine": machine_info(device=device_name()),
              "keras_muse": rows}
    if args.peers:
        peers = run_peers(args.peers, args.runs)
        result["peers"] = peers
        ours = {r["cfg_scale"]: r["seconds_per_batch"] for r in rows if r["config"] == "d512_l8_cb8192"}
        summary = []
        for p in peers:
            scale = float(p.get("cfg", 0.0))
            if scale in ours:
                summary.append({"peer": p["peer"], "cfg_scale": scale, "peer_s": p["seconds_per_batch"],
                                "keras_muse_s": ours[scale],
                                "speedup": round(p["seconds_per_batch"] / ours[scale], 2)})
        print()
        print(format_table(summary, ["peer", "cfg_scale", "peer_s", "keras_muse_s", "speedup"]))
        result["comparison"] = summary
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
