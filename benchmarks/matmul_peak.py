"""The machine's measured matmul ceiling (JAX), the denominator of MFU.

    python benchmarks/matmul_peak.py --out peak.json            # 8192^3 (GPU)
    python benchmarks/matmul_peak.py --n 1024 --out peak.json   # CPU-sized

Times `jnp.dot` of two n x n matrices of random data (never zeros: they run
faster than real data on some GPUs), rotating between three input pairs so
repeated products do not run out of cache, after a warm-up; the median of
`--repeats` timed batches of `--inner` products. Dtypes: bfloat16; float32
at JAX's default precision (what Keras runs: TF32 tensor cores on
Ampere/Hopper GPUs, plain fp32 on CPU); float32 at "highest" precision
(true fp32). Writes `{"peak_tflops": {"bfloat16": ..., "float32": ...,
"float32_highest": ...}, "device": ...}`; `sample_bench.py --peak-json`
and `train_bench.py --peak-json` divide by the entry of their compute dtype.
"""

import argparse
import json
import sys
import time


def measure(n, dtype, precision=None, repeats=5, inner=10):
    import jax
    import jax.numpy as jnp
    import numpy as np

    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    mats = [jax.random.normal(k, (n, n), jnp.float32).astype(dtype) for k in keys]
    pairs = [(mats[2 * i], mats[2 * i + 1]) for i in range(3)]

    @jax.jit
    def dot(a, b):
        return jnp.dot(a, b, precision=precision)

    for a, b in pairs:
        dot(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = [dot(*pairs[i % 3]) for i in range(inner)]
        for o in out:
            o.block_until_ready()
        times.append((time.perf_counter() - start) / inner)
    seconds = float(np.median(times))
    return 2 * n**3 / seconds / 1e12, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8192, help="matrix side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=10, help="products per timed batch")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import jax
    import jax.numpy as jnp

    peaks, rows = {}, []
    for name, dtype, precision in (("bfloat16", jnp.bfloat16, None), ("float32", jnp.float32, None),
                                   ("float32_highest", jnp.float32, "highest")):
        tflops, seconds = measure(args.n, dtype, precision, args.repeats, args.inner)
        peaks[name] = round(tflops, 3)
        rows.append(f"{name:16s} n={args.n}  {seconds * 1e3:9.3f} ms  {tflops:9.3f} TFLOP/s")
    device = jax.devices()[0]
    result = {"device": getattr(device, "device_kind", str(device)), "platform": device.platform,
              "jax": jax.__version__, "n": args.n, "peak_tflops": peaks}
    print("\n".join(rows))
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
