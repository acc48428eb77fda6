"""Rebuild the presets that ship inside keras_muse, from scratch, on a CPU.

Every stage is one of the repo's own recipes; the report each writes goes
into the shipped preset's metadata.json ("keras_muse_recipe") with the
commands, so `MuseTextToImage.from_preset("muse_shapes_64")` says how it was
made. Stages (running minutes on a 2-core CPU, JAX backend):

1. the 64x64 shapes tokenizer (f4, 512 codes): 1000 steps (~12 min), then
   4000 more at batch 16 (~35 min) = the shipped `vqgan_shapes_64`
2. the base transformer + the tiny text encoder, trained jointly on its
   tokens: 6500 steps at batch 32 (~90 min at 0.85 s/step)
3. packaging: float16 weights into keras_muse/presets/muse_shapes_64/

    KERAS_BACKEND=jax python examples/build_shipped_presets.py --work-dir outputs/ship
    # or package presets you already trained:
    python examples/build_shipped_presets.py --package-only \\
        --base-preset DIR --base-report train_muse.json --vqgan-report train_vqgan.json
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

HERE = os.path.dirname(os.path.abspath(__file__))

VQGAN_STAGES = [
    ["--preset", "vqgan_shapes_f4", "--steps", "1000", "--seed", "0"],
    ["--steps", "4000", "--batch-size", "16", "--learning-rate", "1e-3", "--warmup-steps", "100",
     "--resolution", "64", "--seed", "2"],
]
BASE_ARGS = ["--hidden-dim", "128", "--num-layers", "4", "--num-heads", "4", "--mlp-dim", "512",
             "--dropout", "0", "--batch-size", "32", "--steps", "6500", "--learning-rate", "2e-3",
             "--warmup-steps", "100", "--num-train-images", "50000", "--seed", "0"]


def _run(script, args):
    cmd = [sys.executable, os.path.join(HERE, script), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return "python examples/" + script + " " + " ".join(args)


def _summary(report_path):
    with open(report_path) as f:
        report = json.load(f)
    keep = ("steps", "batch_size", "learning_rate", "seed", "train_seconds", "seconds_per_step", "heldout",
            "heldout_masked_token_accuracy", "backbone", "num_train_images", "backend")
    return {k: report[k] for k in keep if k in report}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="outputs/ship")
    parser.add_argument("--package-only", action="store_true")
    parser.add_argument("--base-preset", default=None)
    parser.add_argument("--base-report", default=None)
    parser.add_argument("--vqgan-report", default=None)
    parser.add_argument("--dest-root", default=None, help="default: the package's keras_muse/presets")
    args = parser.parse_args(argv)
    from keras_muse.training.ship_preset import package_preset

    work = args.work_dir
    first_vqgan = os.path.join(work, "vqgan_shapes_f4_1000")
    vqgan_dir, base_dir = os.path.join(work, "vqgan_shapes_64"), os.path.join(work, "muse_shapes_64")
    vqgan_report = args.vqgan_report or os.path.join(work, "train_vqgan.json")
    base_report = args.base_report or os.path.join(work, "train_muse.json")
    commands = [
        "python examples/train_vqgan.py " + " ".join(VQGAN_STAGES[0] + ["--save-preset", "VQ1"]),
        "python examples/train_vqgan.py --preset VQ1 " + " ".join(VQGAN_STAGES[1] + ["--save-preset", "VQGAN_DIR"])
        + "   # = the shipped vqgan_shapes_64",
        "python examples/train_muse.py --vqgan-preset VQGAN_DIR " + " ".join(BASE_ARGS + ["--save-preset", "BASE_DIR"]),
    ]
    if not args.package_only:
        os.makedirs(work, exist_ok=True)
        _run("train_vqgan.py", VQGAN_STAGES[0] + ["--save-preset", first_vqgan])
        _run("train_vqgan.py", ["--preset", first_vqgan, *VQGAN_STAGES[1], "--save-preset", vqgan_dir,
                                "--report", vqgan_report])
        _run("train_muse.py", ["--vqgan-preset", vqgan_dir, *BASE_ARGS, "--save-preset", base_dir,
                               "--report", base_report])
    src = args.base_preset or base_dir
    stages = {}
    for name, path in (("vqgan", vqgan_report), ("base", base_report)):
        if os.path.isfile(path):
            stages[name] = _summary(path)
    minutes = sum(s.get("train_seconds", 0) for s in stages.values()) / 60
    dest = package_preset(src, "muse_shapes_64", recipe={
        "commands": commands, "stages": stages, "train_minutes": round(minutes, 1),
        "hardware": "2-core x86 CPU, JAX backend", "dataset": "keras_muse.datasets.shapes (procedural)",
    }, dest_root=args.dest_root)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(dest) for f in fs)
    print(f"packaged {dest} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
