"""Rebuild the presets that ship inside keras_muse, from scratch, on a CPU.

Every stage is one of the repo's own recipes; the report each writes goes
into the shipped preset's metadata.json ("keras_muse_recipe") with the
commands, so `MuseTextToImage.from_preset("muse_shapes_64")` says how it was
made. Stages (running minutes on a 2-core CPU, JAX backend):

1. the 64x64 shapes tokenizer (f4, 512 codes): 1000 steps (~12 min), then
   4000 more at batch 16 (~35 min) = the shipped `vqgan_shapes_64`
2. the base transformer + the tiny text encoder, trained jointly on its
   tokens: 6500 steps at batch 32 (~90 min at 0.85 s/step), then continued
   3000 steps with the object tokens' loss weighted 4x, the text encoder frozen,
   then 3500 more on the same terms (~41 min at 0.71 s/step)
3. packaging: float16 weights into keras_muse/presets/muse_shapes_64/

With `--super-res` (the two-stage `muse_shapes_128`: 31.36 dB held-out PSNR at
128² with its sampling defaults, over bicubic's 30.53 dB from the same low-res
tokens; examples/results/train_super_res_shapes_128_ow4.json):

4. the 128x128 tokenizer: `vqgan_shapes_64` fine-tuned 1500 steps at 128²
   (~22 min) = the shipped `vqgan_shapes_128` (its codes keep their meaning)
5. the super-res transformer (16x16 -> 32x32 tokens) on the shipped base
   task, its text encoder frozen: 1400 steps at batch 16 (~50 min at 2.1 s/step),
   continued 1500 steps at 1e-3 (~77 min), then 1000 more at 1e-3 with the object
   tokens' loss weighted 4x (~26 min at 1.55 s/step); near-greedy unguided
   sampling defaults
6. packaging: keras_muse/presets/muse_shapes_128/ holds only the super-res
   transformer and refers to muse_shapes_64 and vqgan_shapes_128

    KERAS_BACKEND=jax python examples/build_shipped_presets.py --work-dir outputs/ship
    KERAS_BACKEND=jax python examples/build_shipped_presets.py --work-dir outputs/ship --super-res
    # or package presets you already trained:
    python examples/build_shipped_presets.py --package-only \\
        --base-preset DIR --base-report train_muse.json --vqgan-report train_vqgan.json
    # a run that continued the shipped base (--init-from) inherits its recorded runs
    python examples/build_shipped_presets.py --package-only --super-res \
        --super-res-preset DIR --super-res-report train_super_res.json   # + .first.json, .second.json

With --package-only, a base or super-res run that continued (`--init-from`) a
packaged preset carries that preset's recorded stages over as its earlier runs.
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
# Continued with the loss on the tokens that show an object weighted 4x (the background is ~87% of
# the tokens and otherwise dominates the loss), its text encoder frozen so that the super-res stage,
# which reads the same text embeddings, stays valid.
BASE_CONTINUE_ARGS = [*BASE_ARGS[:BASE_ARGS.index("--steps")], "--steps", "3000", "--learning-rate", "1e-3",
                      "--warmup-steps", "100", "--num-train-images", "50000", "--seed", "1",
                      "--object-token-weight", "4", "--freeze-text-encoder"]
VQGAN_128_ARGS = ["--preset", "vqgan_shapes_64", "--resolution", "128", "--steps", "1500", "--batch-size", "8",
                  "--learning-rate", "5e-4", "--warmup-steps", "50", "--num-train-images", "12000",
                  "--num-eval-images", "256", "--seed", "3"]
# A third run on the same terms, a new draw of 50,000 scenes (seed 4): held-out classifier FID
# 176 -> 148 at guidance 3 packaged (170 -> 139 on 256 other prompts), alignment within the interval.
BASE_THIRD_ARGS = [*BASE_ARGS[:BASE_ARGS.index("--steps")], "--steps", "3500", "--learning-rate", "1e-3",
                   "--warmup-steps", "100", "--num-train-images", "50000", "--seed", "4",
                   "--object-token-weight", "4", "--freeze-text-encoder"]
# The base chain: the first run, then each continuation (--init-from the run before).
BASE_RUNS = [BASE_ARGS, BASE_CONTINUE_ARGS, BASE_THIRD_ARGS]
SUPER_RES_ARGS = ["--hidden-dim", "128", "--num-layers", "4", "--low-res-num-layers", "2", "--num-heads", "2",
                  "--attention-window", "8", "--aligned-low-res", "1", "--batch-size", "16", "--steps", "1400",
                  "--learning-rate", "2e-3", "--warmup-steps", "100", "--num-train-images", "12000",
                  "--seed", "0"]
# The shipped model continues the first run (v2) with a second (v3): 2900 steps in all.
SUPER_RES_CONTINUE_ARGS = [*SUPER_RES_ARGS[:SUPER_RES_ARGS.index("--steps")], "--steps", "1500",
                           "--learning-rate", "1e-3", "--warmup-steps", "50", "--num-train-images", "12000",
                           "--seed", "1"]
# The object tokens (~13 % of a scene) are where the stages disagree; weighting them 4x
# lifted held-out object-token accuracy .597 -> .630 and PSNR 31.04 -> 31.36 dB.
SUPER_RES_OW_ARGS = [*SUPER_RES_ARGS[:SUPER_RES_ARGS.index("--steps")], "--steps", "1000",
                     "--learning-rate", "1e-3", "--warmup-steps", "50", "--num-train-images", "12000",
                     "--seed", "2", "--object-token-weight", "4"]
# Near-greedy, unguided decoding keeps the base image's content: 31.04 dB held-out PSNR at 8 steps
# (the stage before the weighted continuation) against 29.15 dB at the sampler's defaults
# (examples/results/super_res_sampling_sweep_v3.json).
SUPER_RES_SAMPLING = {"num_steps": 8, "temperature": 0.05, "guidance_scale": 0.0, "choice_temperature": 0.0}


def _run(script, args):
    cmd = [sys.executable, os.path.join(HERE, script), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return "python examples/" + script + " " + " ".join(args)


def _summary(report_path):
    with open(report_path) as f:
        report = json.load(f)
    keep = ("steps", "batch_size", "learning_rate", "seed", "train_seconds", "seconds_per_step", "heldout",
            "freeze_text_encoder", "object_token_weight",
            "heldout_masked_token_accuracy", "backbone", "num_train_images", "backend")
    return {k: report[k] for k in keep if k in report}


def _alignment_summary(report_path):
    """The held-out alignment table of an `evaluate` report, with the
    command that reproduces it on the shipped preset."""
    with open(report_path) as f:
        report = json.load(f)
    if report.get("split") != "heldout":
        raise SystemExit(f"--alignment-report {report_path!r}: expected the held-out split, got {report.get('split')!r}")
    scales = [r["guidance_scale"] for r in report["results"]]
    command = (f"python -m keras_muse evaluate --preset muse_shapes_64 -n {report['num_prompts']} "
               f"--batch-size {report.get('batch_size', 8)} --data-seed {report['data_seed']} --seed {report['seed']} "
               f"--guidance-sweep {','.join(f'{s:g}' for s in scales)} --no-inception --no-clip")
    by_guidance = {}
    for r in report["results"]:
        row = {k: round(r["alignment"][k], 4) for k in ("color", "shape", "size", "position", "count", "all")}
        row["classifier_fid"] = round(r["classifier_fid"], 1)
        by_guidance[str(float(r["guidance_scale"]))] = row
    return {"command": command, "data_seed": report["data_seed"], "num_prompts": report["num_prompts"],
            "by_guidance": by_guidance, "classifier_fid_floor": round(report["real"]["classifier_fid_floor"], 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="outputs/ship")
    parser.add_argument("--package-only", action="store_true")
    parser.add_argument("--base-preset", default=None)
    parser.add_argument("--base-report", default=None)
    parser.add_argument("--vqgan-report", default=None)
    parser.add_argument("--alignment-report", default=None,
                        help="`python -m keras_muse evaluate` JSON of the packaged base (held-out split, "
                             "no Inception/CLIP): its alignment per guidance scale goes into the recipe")
    parser.add_argument("--train-minutes-note", default=None,
                        help="what the reports' train seconds include (pauses, the machine), kept in the recipe")
    parser.add_argument("--dest-root", default=None, help="default: the package's keras_muse/presets")
    parser.add_argument("--super-res", action="store_true", help="also build the two-stage muse_shapes_128")
    parser.add_argument("--skip-base", action="store_true", help="with --super-res: only stages 4-6")
    parser.add_argument("--super-res-preset", default=None)
    parser.add_argument("--super-res-report", default=None)
    args = parser.parse_args(argv)
    from keras_muse.training.ship_preset import package_preset

    work = args.work_dir
    first_vqgan = os.path.join(work, "vqgan_shapes_f4_1000")
    vqgan_dir, base_dir = os.path.join(work, "vqgan_shapes_64"), os.path.join(work, "muse_shapes_64")
    vqgan_report = args.vqgan_report or os.path.join(work, "train_vqgan.json")
    base_report = args.base_report or os.path.join(work, "train_muse.json")
    # Run k of the base chain saves to BASE_k (the last to BASE_DIR) and reports to
    # <base_report>.<ordinal>.json (the last to <base_report>).
    names = [f"BASE_{i + 1}" for i in range(len(BASE_RUNS) - 1)] + ["BASE_DIR"]
    commands = [
        "python examples/train_vqgan.py " + " ".join(VQGAN_STAGES[0] + ["--save-preset", "VQ1"]),
        "python examples/train_vqgan.py --preset VQ1 " + " ".join(VQGAN_STAGES[1] + ["--save-preset", "VQGAN_DIR"])
        + "   # = the shipped vqgan_shapes_64",
    ] + [
        "python examples/train_muse.py --vqgan-preset VQGAN_DIR " + (f"--init-from {names[i - 1]} " if i else "")
        + " ".join(run + ["--save-preset", names[i]]) for i, run in enumerate(BASE_RUNS)
    ]
    base_stages = not (args.super_res and args.skip_base)
    os.makedirs(work, exist_ok=True)
    if base_stages and not args.package_only:
        _run("train_vqgan.py", VQGAN_STAGES[0] + ["--save-preset", first_vqgan])
        _run("train_vqgan.py", ["--preset", first_vqgan, *VQGAN_STAGES[1], "--save-preset", vqgan_dir,
                                "--report", vqgan_report])
        reports = _base_run_reports(base_report)
        for i, run in enumerate(BASE_RUNS):
            save = base_dir if i == len(BASE_RUNS) - 1 else f"{base_dir}_{i + 1}"
            _run("train_muse.py", ["--vqgan-preset", vqgan_dir, *(["--init-from", previous] if i else []),
                                   *run, "--save-preset", save, "--report", reports[i]])
            previous = save
    if base_stages:
        _package_base(args, work, base_dir, vqgan_report, base_report, commands, package_preset)
    if args.super_res:
        _build_super_res(args, work)
    return 0


def _build_super_res(args, work):
    from keras_muse.training.ship_preset import package_two_stage_preset
    from keras_muse.training.ship_preset import package_preset
    from keras_muse.utils.preset_utils import PACKAGE_PRESET_DIR

    root = args.dest_root or PACKAGE_PRESET_DIR
    sr_dir = args.super_res_preset or os.path.join(work, "muse_shapes_128")
    sr_report = args.super_res_report or os.path.join(work, "train_super_res.json")
    vqgan_128_dir = os.path.join(work, "vqgan_shapes_128")
    cli = [sys.executable, "-m", "keras_muse", "train"]
    if not args.package_only:
        vq_report = os.path.join(work, "train_vqgan_128.json")
        subprocess.run([*cli, "vqgan", *VQGAN_128_ARGS, "--save-preset", vqgan_128_dir, "--report", vq_report],
                       check=True)
        package_preset(vqgan_128_dir, "vqgan_shapes_128", recipe={
            "commands": ["python -m keras_muse train vqgan " + " ".join(VQGAN_128_ARGS)],
            "stages": {"vqgan_128": _summary(vq_report)}}, dest_root=args.dest_root)
        first = [*cli, "super-res", "--base-preset", os.path.join(root, "muse_shapes_64"),
                 "--vqgan-preset", os.path.join(root, "vqgan_shapes_128")]
        subprocess.run([*first, *SUPER_RES_ARGS, "--save-preset", sr_dir + "_first",
                        "--report", sr_report + ".first.json"], check=True)
        subprocess.run([*first, *SUPER_RES_CONTINUE_ARGS, "--init-from", sr_dir + "_first",
                        "--save-preset", sr_dir + "_second", "--report", sr_report + ".second.json"], check=True)
        subprocess.run([*first, *SUPER_RES_OW_ARGS, "--init-from", sr_dir + "_second",
                        "--sampling-defaults", json.dumps(SUPER_RES_SAMPLING),
                        "--save-preset", sr_dir, "--report", sr_report], check=True)
    stages = _earlier_stages(sr_report, "super_res") if args.package_only else {}
    for name, suffix in (("super_res_first_run", ".first.json"), ("super_res_second_run", ".second.json")):
        if os.path.isfile(sr_report + suffix):  # the runs that the shipped one continues
            stages[name] = _summary(sr_report + suffix)
    if os.path.isfile(sr_report):
        with open(sr_report) as f:
            upsampling = json.load(f).get("heldout_upsampling")
        stages["super_res"] = {**_summary(sr_report), "heldout_upsampling": upsampling}
    train_seconds = sum(stage.get("train_seconds", 0) for stage in stages.values())
    dest = package_two_stage_preset(sr_dir, "muse_shapes_128", "muse_shapes_64", "vqgan_shapes_128", recipe={
        "commands": ["python -m keras_muse train super-res --base-preset muse_shapes_64 "
                     "--vqgan-preset vqgan_shapes_128 " + " ".join(SUPER_RES_ARGS) + " --save-preset FIRST",
                     "python -m keras_muse train super-res --base-preset muse_shapes_64 "
                     "--vqgan-preset vqgan_shapes_128 " + " ".join(SUPER_RES_CONTINUE_ARGS)
                     + " --init-from FIRST --save-preset SECOND",
                     "python -m keras_muse train super-res --base-preset muse_shapes_64 "
                     "--vqgan-preset vqgan_shapes_128 " + " ".join(SUPER_RES_OW_ARGS)
                     + f" --init-from SECOND --sampling-defaults '{json.dumps(SUPER_RES_SAMPLING)}'"
                     " --save-preset SR_DIR"],
        "sampling_defaults": dict(SUPER_RES_SAMPLING),
        "stages": stages, "train_minutes": round(train_seconds / 60, 1),
        "hardware": "2-core x86 CPU, JAX backend", "dataset": "keras_muse.datasets.shapes (procedural)",
    }, dest_root=args.dest_root)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(dest) for f in fs)
    print(f"packaged {dest} ({size / 2**20:.1f} MiB; the base and the 128 tokenizer by reference)")


ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


def _run_names(chain, count):
    """The stage names of a chain's `count` earlier runs: base_first_run, ..."""
    if count > len(ORDINALS):
        raise SystemExit(f"{chain}: {count} earlier runs; name at most {len(ORDINALS)}")
    return [f"{chain}_{ORDINALS[i]}_run" for i in range(count)]


def _earlier_stages(report_path, chain):
    """The recorded stages of the packaged preset that the run behind
    `report_path` continued (`--init-from`): its `chain` runs
    (`{chain}_first_run`, ..., then `{chain}` itself) become this run's
    earlier runs, in order, and its other stages (the tokenizer) stay as
    they are. The reports of those runs may be gone, their summaries are
    not. {} for a run that continued nothing."""
    if not os.path.isfile(report_path):
        return {}
    with open(report_path) as f:
        init_from = json.load(f).get("init_from")
    metadata = os.path.join(init_from, "metadata.json") if init_from else None
    if not metadata or not os.path.isfile(metadata):
        return {}
    with open(metadata) as f:
        earlier = json.load(f).get("keras_muse_recipe", {}).get("stages", {})
    runs = [earlier[name] for name in _run_names(chain, len(ORDINALS)) if name in earlier]
    expected = set(_run_names(chain, len(runs))) | {chain}
    if chain not in earlier or not expected <= set(earlier):
        raise SystemExit(f"{metadata}: expected the stages {chain}_first_run, ... and {chain}, got {sorted(earlier)}")
    runs.append(earlier[chain])
    stages = {name: stage for name, stage in earlier.items() if name not in expected}
    stages.update(zip(_run_names(chain, len(runs)), runs))
    return stages


def _base_run_reports(base_report):
    """The reports of the base chain's runs: <base_report>.first.json, ...,
    and the last run's <base_report>."""
    return [f"{base_report}.{ORDINALS[i]}.json" for i in range(len(BASE_RUNS) - 1)] + [base_report]


def _package_base(args, work, base_dir, vqgan_report, base_report, commands, package_preset):
    src = args.base_preset or base_dir
    # A packaged run that continued the shipped preset (--init-from) inherits its recorded runs;
    # the reports found here (a rebuild's, or --package-only's) take their places.
    stages = _earlier_stages(base_report, "base") if args.package_only else {}
    names = ["vqgan", *_run_names("base", len(BASE_RUNS) - 1), "base"]
    for name, path in zip(names, [vqgan_report, *_base_run_reports(base_report)]):
        if os.path.isfile(path):
            stages[name] = _summary(path)
    minutes = sum(s.get("train_seconds", 0) for s in stages.values()) / 60
    recipe = {
        "commands": commands, "stages": stages, "train_minutes": round(minutes, 1),
        "hardware": "2-core x86 CPU, JAX backend", "dataset": "keras_muse.datasets.shapes (procedural)",
    }
    if args.train_minutes_note:
        recipe["train_minutes_note"] = args.train_minutes_note
    if args.alignment_report:
        recipe["heldout_alignment"] = _alignment_summary(args.alignment_report)
    dest = package_preset(src, "muse_shapes_64", recipe=recipe, dest_root=args.dest_root)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(dest) for f in fs)
    print(f"packaged {dest} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    raise SystemExit(main())
