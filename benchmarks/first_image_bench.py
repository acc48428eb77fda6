"""Time to first image: a fresh process, from `python` to a PNG on disk.

    KERAS_BACKEND=jax python benchmarks/first_image_bench.py --out first_image_bench.json

Each row is a new Python process that imports keras_muse, loads the shipped
preset (`MuseTextToImage.from_preset("muse_shapes_64")`), generates one
batch with the CLI's default settings and writes the PNG, the way
`python -m keras_muse generate` does. "cold" runs with an empty persistent
compilation cache (a first run on a new machine), "warm" with the cache the
cold run left (every later run: the JAX backend keeps compiled programs in
`~/.cache/keras_muse/xla`, `keras_muse.backend.enable_compilation_cache`),
"no cache" with the cache off. Phases: `import_s` (keras_muse, Keras, JAX),
`load_s` (the preset), `first_batch_s` (tracing, compilation or a cache
read, and the sampling itself), `steady_batch_s` (a second batch, compiled),
`process_s` (wall time of the whole process, interpreter start included:
the number a user waits).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench_utils import format_table, machine_info

PROMPTS = ["a large red circle in the top left", "two blue squares"]


def child(preset, num_images, use_cache, cache_dir):
    t0 = time.perf_counter()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from keras_muse.backend import enable_compilation_cache
    from keras_muse.models import MuseTextToImage
    from keras_muse.utils.image_utils import make_captioned_grid
    from keras_muse.utils.image_utils import save_png

    if use_cache:
        enable_compilation_cache(cache_dir)
    t1 = time.perf_counter()
    task = MuseTextToImage.from_preset(preset)
    t2 = time.perf_counter()
    prompts = [p for p in PROMPTS for _ in range(num_images)]
    images = task.generate(prompts, seed=0)
    out = os.path.join(cache_dir if use_cache else tempfile.gettempdir(), "first_image.png")
    save_png(make_captioned_grid(images, prompts, columns=num_images), out)
    t3 = time.perf_counter()
    task.generate(prompts, seed=1)
    t4 = time.perf_counter()
    return {"import_s": round(t1 - t0, 2), "load_s": round(t2 - t1, 2), "first_batch_s": round(t3 - t2, 2),
            "steady_batch_s": round(t4 - t3, 2), "images": len(prompts)}


def run(mode, preset, num_images, cache_dir):
    cmd = [sys.executable, __file__, "--_child", mode, "--preset", preset, "--num-images", str(num_images),
           "--cache-dir", cache_dir]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    row = {"mode": mode, **json.loads(proc.stdout.strip().splitlines()[-1])}
    # The process ran the second batch too: the user's wait ends at the PNG.
    row["process_s"] = round(wall - row["steady_batch_s"], 2)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="muse_shapes_64")
    parser.add_argument("--num-images", type=int, default=2, help="images per prompt (2 prompts)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        result = child(args.preset, args.num_images, args._child != "no cache", args.cache_dir)
        print(json.dumps(result))
        return 0
    os.environ.setdefault("KERAS_BACKEND", "jax")
    cache_dir = tempfile.mkdtemp(prefix="keras_muse_xla_cache_")
    try:
        rows = [run(mode, args.preset, args.num_images, cache_dir) for mode in ("no cache", "cold", "warm")]
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    for row in rows:
        row["backend"] = os.environ["KERAS_BACKEND"]
    print(format_table(rows, ["mode", "backend", "images", "import_s", "load_s", "first_batch_s", "process_s",
                              "steady_batch_s"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine_info(),
                       "preset": args.preset, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
