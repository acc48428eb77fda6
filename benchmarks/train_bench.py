"""Base-transformer training speed: s/step, tokens/s and peak memory, as a table + JSON.

    KERAS_BACKEND=jax python benchmarks/train_bench.py --out train_bench.json
    KERAS_BACKEND=jax python benchmarks/train_bench.py --quick     # CI-sized
    KERAS_BACKEND=jax python benchmarks/train_bench.py --attention # MHA vs dot_product_attention
    # the peers' train steps at the d512 config, same run (their venv: ../shared/bench/peers/setup_venv.sh):
    KERAS_BACKEND=jax python benchmarks/train_bench.py --configs small_d512_l8 --peers /tmp/keras-muse-peers-venv/bin/python
    # XLA:CPU settings side by side, alternating rounds (a shared CPU drifts between runs):
    KERAS_BACKEND=jax python benchmarks/train_bench.py --configs shapes_d128_l4 small_d512_l8 --rounds 3 \
        --xla-flags default --xla-flags=--xla_cpu_experimental_ynn_fusion_type=

Rows: `muse_tiny`, the shipped shapes preset's model (`shapes_d128_l4`: width
128, depth 4, 256 tokens, codebook 512, batch 32), a wider shapes model
(width 192, codebook 1024) and the issue's small config (width 512, depth 8, 8 heads, 256
tokens, codebook 8192, text length 77). Each row runs `MuseTextToImage.fit`
(in-step masking, condition dropout, AdamW) on precomputed text embeddings in
its own process, so the peak RSS is that configuration's. "tokens/s" counts
image tokens (batch x 256) per second of steady-state training. The first
step (compile) is reported apart. `gflop` / `tflops` count the matrix
products of a step (`flops.py`: forward + backward = 3x the forward pass);
with `--peak-json` (from `matmul_peak.py`) `mfu` divides by the measured
matmul peak of the compute dtype.

    # GPU, bf16, a bigger batch, no TensorFlow on the machine (benchmarks/gpu/README.md):
    python benchmarks/train_bench.py --configs small_d512_l8 --dtype mixed_bfloat16 \
        --batch 64 --steps 20 --input arrays --peak-json peak.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

from bench_utils import format_table, machine_info  # noqa: E402
from flops import add_rates  # noqa: E402
from flops import load_peak  # noqa: E402
from flops import train_step_flops  # noqa: E402

PEERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench", "peers")

CONFIGS = {
    "muse_tiny": dict(codebook_size=64, grid_size=4, hidden_dim=32, num_layers=2, num_heads=4,
                      mlp_dim=64, text_dim=16, text_len=8, batch=32),
    "shapes_d128_l4": dict(codebook_size=512, grid_size=16, hidden_dim=128, num_layers=4, num_heads=4,
                           mlp_dim=512, text_dim=64, text_len=32, batch=32),
    # Two heads of 64 instead of four of 32: half the [B, heads, N, N] score
    # traffic, which bounds XLA:CPU's attention at this width.
    "shapes_d128_l4_h2": dict(codebook_size=512, grid_size=16, hidden_dim=128, num_layers=4, num_heads=2,
                              mlp_dim=512, text_dim=64, text_len=32, batch=32),
    "shapes_d192_l4": dict(codebook_size=1024, grid_size=16, hidden_dim=192, num_layers=4, num_heads=4,
                           mlp_dim=768, text_dim=64, text_len=32, batch=16),
    "small_d512_l8": dict(codebook_size=8192, grid_size=16, hidden_dim=512, num_layers=8, num_heads=8,
                          mlp_dim=2048, text_dim=512, text_len=77, batch=8),
}


def run_config(name, steps, batch=None, dtype="float32", input_pipeline="tf.data", peak_json=None, dropout=0.0):
    """Runs in the child process: returns one result row."""
    import keras
    import numpy as np

    keras.config.set_dtype_policy(dtype)
    devices = keras.distribution.list_devices()
    if len(devices) > 1:
        # Several devices in the process (on a CPU host: `--xla-flags
        # =--xla_force_host_platform_device_count=2`): train data-parallel.
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))

    from keras_muse.models import MuseBackbone
    from keras_muse.models import MuseTextToImage

    cfg = dict(CONFIGS[name])
    text_len, cfg_batch = cfg.pop("text_len"), cfg.pop("batch")
    batch = batch or cfg_batch
    keras.utils.set_random_seed(0)
    backbone = MuseBackbone(**cfg, dropout=dropout)
    task = MuseTextToImage(backbone, condition_dropout=0.1, seed=0)
    rng = np.random.default_rng(0)
    null = (np.zeros((text_len, cfg["text_dim"]), "float32"), np.eye(1, text_len, dtype=bool)[0])
    task.compile(
        optimizer=keras.optimizers.AdamW(1e-4, beta_1=0.9, beta_2=0.96, weight_decay=0.045),
        unconditional_text_embeddings=null,
    )
    n = batch * (steps + 1)
    ids = rng.integers(0, cfg["codebook_size"], (n, backbone.num_tokens)).astype("int32")
    emb = rng.normal(size=(n, text_len, cfg["text_dim"])).astype("float32")
    mask = np.ones((n, text_len), bool)
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    start = time.perf_counter()
    # "tf.data": the task's reshuffling tf.data pipeline (what users get);
    # "arrays": unshuffled in-memory batches (keras-hub feeds them through
    # grain), for machines without TensorFlow. The data is random either way.
    task.fit((ids, (emb, mask)), batch_size=batch, epochs=1, verbose=0, callbacks=[Stamp()],
             shuffle=input_pipeline == "tf.data")
    first = stamps[0] - start
    steady = float(np.median(np.diff(stamps))) if len(stamps) > 2 else float("nan")
    tokens = batch * backbone.num_tokens
    row = {
        "config": name,
        "backend": keras.config.backend(),
        "dtype": dtype,
        "dropout": dropout,
        "input": input_pipeline,
        "params_M": round(backbone.count_params() / 1e6, 2),
        "batch": batch,
        "tokens_per_example": backbone.num_tokens,
        "first_step_s": round(first, 2),
        "s_per_step": round(steady, 4),
        "tokens_per_s": round(tokens / steady, 1),
        "examples_per_s": round(batch / steady, 2),
        "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "steps_timed": len(stamps) - 1,
        "devices": len(devices),
    }
    add_rates(row, train_step_flops(backbone, text_len, batch), steady, load_peak(peak_json, dtype))
    try:
        import jax

        peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        if peak is not None:
            row["device"] = jax.devices()[0].device_kind
            row["device_peak_MB"] = round(peak / 2**20, 1)
    except Exception:  # not JAX, or no device statistics (CPU)
        pass
    return row


def run_peers(python):
    """The peers' train steps at the d512 config (batch 8), in their own venv."""
    script = os.path.join(PEERS_DIR, "sample_bench.py")
    cmd = [python, script, "--peer", "all", "--mode", "train", "--dim", "512", "--depth", "8", "--heads", "8",
           "--train-batch", "8", "--seq-side", "16", "--codebook", "8192", "--text-len", "77",
           "--text-dim", "512", "--runs", "3", "--no-flops"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def attention_comparison(batch=8, tokens=256, width=512, heads=8, text_len=77, repeats=5):
    """Forward+backward of one self-attention + cross-attention pair:
    `MuseAttention` (keras.ops.dot_product_attention) vs
    `keras.layers.MultiHeadAttention`, same shapes."""
    import keras
    import numpy as np
    from keras import ops

    from keras_muse.backend import compile_function
    from keras_muse.backend import variable_grads
    from keras_muse.layers import MuseAttention

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, tokens, width)).astype("float32")
    ctx = rng.normal(size=(batch, text_len, width)).astype("float32")
    cmask = np.ones((batch, text_len), bool)
    rows = []
    for name in ("MuseAttention (matmul on CPU; dot_product_attention on GPU/TPU)", "keras.layers.MultiHeadAttention"):
        if name.startswith("Muse"):
            self_attn, cross_attn = MuseAttention(heads, width // heads), MuseAttention(heads, width // heads)

            def forward(x, ctx, cmask):
                h = self_attn(x)
                return cross_attn(h, context=ctx, context_mask=cmask)
        else:
            self_attn = keras.layers.MultiHeadAttention(heads, width // heads)
            cross_attn = keras.layers.MultiHeadAttention(heads, width // heads)

            def forward(x, ctx, cmask):
                h = self_attn(x, x)
                return cross_attn(h, ctx, attention_mask=ops.cast(cmask, "bool")[:, None, :])

        forward(x, ctx, cmask)  # build
        holder = keras.Model()
        holder.parts = [self_attn, cross_attn]
        variables = self_attn.trainable_variables + cross_attn.trainable_variables

        def step(x, ctx, cmask):
            loss, _, grads = variable_grads(lambda: (ops.mean(ops.square(forward(x, ctx, cmask))), None), variables)
            return loss, grads

        fn = compile_function(holder, step)
        for label, f in (("forward", compile_function(holder, forward)), ("forward+backward", fn)):
            out = f(x, ctx, cmask)
            np.asarray(out[0] if isinstance(out, tuple) else out)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                out = f(x, ctx, cmask)
                np.asarray(out[0] if isinstance(out, tuple) else out)
                times.append(time.perf_counter() - t)
            rows.append({"implementation": name, "pass": label, "ms": round(1000 * float(np.median(times)), 2)})
    return rows


def summarize_rounds(rows):
    """Median / min / max s/step per (config, xla_flags) over the rounds."""
    groups = {}
    for row in rows:
        groups.setdefault((row["config"], row.get("xla_flags", "default")), []).append(row["s_per_step"])
    return [
        {"config": config, "xla_flags": flags, "rounds": len(times),
         "median_s_per_step": round(float(np.median(times)), 4),
         "min_s_per_step": min(times), "max_s_per_step": max(times)}
        for (config, flags), times in groups.items()
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=6, help="timed steps after the first")
    parser.add_argument("--quick", action="store_true", help="muse_tiny only, 3 steps (CI)")
    parser.add_argument("--attention", action="store_true", help="also compare attention implementations")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--dtype", default="float32", choices=["float32", "mixed_bfloat16", "bfloat16"],
                        help="Keras dtype policy (mixed_bfloat16: bf16 compute, fp32 weights and optimizer)")
    parser.add_argument("--batch", type=int, default=None, help="override every config's batch")
    parser.add_argument("--input", default="tf.data", choices=["tf.data", "arrays"],
                        help="tf.data: the task's shuffling pipeline; arrays: unshuffled (no TensorFlow needed)")
    parser.add_argument("--peak-json", default=None, help="matmul_peak.py output: adds the `mfu` column")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="transformer dropout (0: as the peers' train steps; MaskGIT's recipe uses 0.1)")
    parser.add_argument("--peers", default=None,
                        help="python of the peers' venv: time their train steps (batch 8, d512) in the same run")
    parser.add_argument("--xla-flags", action="append", default=None, metavar="FLAGS",
                        help="XLA_FLAGS for the child processes; repeat to compare settings ('default': "
                             "the environment's own). E.g. --xla-flags=--xla_cpu_experimental_ynn_fusion_type=")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every (config, flags) run this many times, alternating, and report "
                             "the median s/step of the rounds")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(run_config(args._child, args.steps, args.batch, args.dtype, args.input, args.peak_json,
                                    args.dropout)))
        return 0
    if args.quick:
        args.configs, args.steps = ["muse_tiny"], 3
    variants = args.xla_flags or ["default"]
    rows = []
    for round_index in range(args.rounds):
        for name in args.configs:
            for flags in variants:
                env = dict(os.environ)
                if flags != "default":
                    env["XLA_FLAGS"] = flags
                # One process per run: its peak RSS is its own, and XLA_FLAGS
                # are read once, when the backend starts.
                proc = subprocess.run(
                    [sys.executable, __file__, "--_child", name, "--steps", str(args.steps), "--dtype", args.dtype,
                     "--input", args.input, "--dropout", str(args.dropout),
                     *(["--batch", str(args.batch)] if args.batch else []),
                     *(["--peak-json", args.peak_json] if args.peak_json else [])],
                    capture_output=True, text=True, env=env,
                )
                if proc.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                if args.xla_flags:
                    row["xla_flags"] = flags
                if args.rounds > 1:
                    row["round"] = round_index
                rows.append(row)
    columns = ["config", *(["xla_flags"] if args.xla_flags else []), *(["round"] if args.rounds > 1 else []),
               "dtype", "dropout", "params_M", "batch", "first_step_s", "s_per_step", "tokens_per_s",
               "examples_per_s", "tflops", "mfu", "peak_rss_MB"]
    print(format_table(rows, columns))
    summary = summarize_rounds(rows) if args.rounds > 1 else None
    if summary:
        print()
        print(format_table(summary, ["config", "xla_flags", "rounds", "median_s_per_step", "min_s_per_step",
                                     "max_s_per_step"]))
    result = {"machine": machine_info(), "train": rows}
    if summary:
        result["summary"] = summary
    if args.peers:
        peers = run_peers(args.peers)
        # The first flag setting's median over the rounds stands for keras_muse.
        first = [r for r in rows if r["config"] == "small_d512_l8" and r.get("xla_flags", "default") == variants[0]]
        ours = {"s_per_step": round(float(np.median([r["s_per_step"] for r in first])), 4)} if first else None
        comparison = [
            {"peer": p["peer"], "peer_s_per_step": p["seconds_per_step"],
             "keras_muse_s_per_step": ours["s_per_step"] if ours else None,
             "speedup": round(p["seconds_per_step"] / ours["s_per_step"], 2) if ours else None}
            for p in peers
        ]
        print()
        print(format_table(comparison, ["peer", "peer_s_per_step", "keras_muse_s_per_step", "speedup"]))
        result["peers"], result["comparison"] = peers, comparison
    if args.attention:
        attn = attention_comparison()
        print()
        print(format_table(attn, ["implementation", "pass", "ms"]))
        result["attention"] = attn
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
