"""VQGAN speed: encode+decode images/s and train steps/s, printed as a table + JSON.

    KERAS_BACKEND=jax python benchmarks/vqgan_bench.py --out vqgan_bench.json
    KERAS_BACKEND=jax python benchmarks/vqgan_bench.py --quick   # CI-sized

Rows: the shapes tokenizer at 64x64 and the paper's f16 tokenizer at 256x256
(and any `--preset NAME@RES`). First-call (compile) time is reported apart
from steady state; the train step includes the GAN (discriminator + R1).
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from bench_utils import machine_info  # noqa: E402

from keras_muse.models import VQGAN  # noqa: E402


def _time_calls(fn, repeats):
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def bench(preset, resolution, batch_size, train_batch_size, repeats, train_steps, gan=True):
    vqgan = VQGAN.from_preset(preset, load_weights=False)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch_size, resolution, resolution, 3)).astype("float32")
    first, steady = _time_calls(lambda: vqgan.decode(vqgan.encode(images, batch_size), batch_size), repeats)
    row = {
        "preset": preset,
        "resolution": resolution,
        "tokens": [resolution // vqgan.factor] * 2,
        "params_M": round(vqgan.count_params() / 1e6, 2),
        "batch_size": batch_size,
        "encode_decode_first_s": round(first, 2),
        "encode_decode_s_per_batch": round(steady, 4),
        "encode_decode_images_per_s": round(batch_size / steady, 1),
    }
    use_gan = gan and vqgan.discriminator is not None
    vqgan.compile(
        optimizer=keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.99),
        perceptual_weight=0.0,
        adversarial_weight=0.1 if use_gan else 0.0,
    )
    data = rng.integers(0, 256, (train_batch_size * (train_steps + 1), resolution, resolution, 3)).astype("uint8")
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    start = time.perf_counter()
    vqgan.fit(data, batch_size=train_batch_size, epochs=1, verbose=0, callbacks=[Stamp()])
    steps = np.diff(stamps)
    row.update(
        train_batch_size=train_batch_size,
        train_gan=use_gan,
        train_first_step_s=round(stamps[0] - start, 2),
        train_s_per_step=round(float(np.median(steps)), 4),
        train_steps_per_s=round(1.0 / float(np.median(steps)), 3),
        train_images_per_s=round(train_batch_size / float(np.median(steps)), 1),
    )
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", default=None,
                        help="NAME@RESOLUTION, repeatable (default: shapes@64 and f16@256)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-batch-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny rows only (smoke test)")
    parser.add_argument("--out", default="vqgan_bench.json")
    args = parser.parse_args()
    if args.quick:
        specs = [("vqgan_tiny_f4", 32, 4, 4)]
        args.repeats, args.train_steps = 1, 2
    else:
        specs = []
        for spec in args.preset or ["vqgan_shapes_f4@64", "vqgan_f16_8192@256"]:
            name, res = spec.split("@")
            big = int(res) >= 256
            bs = 4 if big else args.batch_size
            specs.append((name, int(res), bs, 2 if big else (args.train_batch_size or args.batch_size)))
    rows = [bench(n, r, b, tb, args.repeats, args.train_steps) for n, r, b, tb in specs]
    header = ("preset", "res", "tokens", "params(M)", "enc+dec img/s", "first(s)",
              "train bs", "train s/step", "train img/s", "first step(s)")
    table = [header] + [
        (r["preset"], r["resolution"], "x".join(map(str, r["tokens"])), r["params_M"],
         r["encode_decode_images_per_s"], r["encode_decode_first_s"], r["train_batch_size"],
         r["train_s_per_step"], r["train_images_per_s"], r["train_first_step_s"])
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(v).rjust(w) for v, w in zip(row, widths)))
    result = {
        "backend": keras.backend.backend(),
        "machine": machine_info(),
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
