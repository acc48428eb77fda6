"""Evaluate a text-to-image preset on captioned-shapes prompts.

`python -m keras_muse evaluate` (and `examples/evaluate.py`) generate images
for N prompts of a shapes split, then report, per guidance scale:

- alignment: the judge's per-attribute accuracy against the prompts
  (`keras_muse.metrics.alignment`);
- classifier FID: Fréchet distance in the judge's feature space to real
  renders of the same prompts, beside the real-vs-real floor (the same
  prompts' renders against N other real scenes of the split);
- Inception FID and CLIP score when their pretrained weights can be had
  (otherwise skipped, with the reason in the report).

A sweep over guidance scales (paper Fig. 8) adds a table and a PNG plot of
alignment against FID. Outputs: a JSON report and a PNG grid of samples.

Example:

```
python -m keras_muse evaluate --preset muse_shapes_64 -n 64 --split heldout \\
    --guidance-sweep 0,1,2,3,5 --out report.json --grid samples.png
```
"""

import json
import os
import time

import numpy as np

from keras_muse.datasets import shapes

ALIGNMENT_KEYS = ("color", "shape", "size", "position", "count")
# The split's examples are a pure function of (seed, index); prompts come
# from a data seed no training recipe uses, so the train split's prompts
# are not training captions either.
DEFAULT_DATA_SEED = 777


def add_arguments(parser):
    parser.add_argument("--preset", required=True, help="a MuseTextToImage preset (name or directory)")
    parser.add_argument("-n", "--num-prompts", type=int, default=64, help="prompts to generate for")
    parser.add_argument("--split", default="heldout", choices=shapes.SPLITS)
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the preset's, else 3.0")
    parser.add_argument("--guidance-sweep", default=None,
                        help="comma-separated guidance scales, e.g. 0,1,2,3,5 (overrides --guidance-scale)")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default: the preset's, else 24)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="token sampling temperature (default: the preset's, else 1.0)")
    parser.add_argument("--choice-temperature", type=float, default=None,
                        help="confidence-noise temperature, annealed to 0 (default: the preset's, else 4.5)")
    # samplers.guidance.GUIDANCE_SCHEDULES, spelled out: importing it would
    # import Keras just to build the parser.
    parser.add_argument("--guidance-schedule", default=None, choices=("linear", "constant"),
                        help="guidance ramp over the steps (default: the preset's, else linear)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens only")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--data-seed", type=int, default=DEFAULT_DATA_SEED, help="shapes dataset seed of the prompts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--judge", default="shapes_attribute_classifier",
                        help="ShapesAttributeClassifier preset (name or directory)")
    parser.add_argument("--no-inception", action="store_true", help="skip Inception FID")
    parser.add_argument("--no-clip", action="store_true", help="skip CLIP score")
    parser.add_argument("--clip-preset", default="clip_vit_base_patch16")
    parser.add_argument("--out", default="report.json", help="JSON report")
    parser.add_argument("--grid", default="samples.png", help="PNG grid of samples (first 8 prompts per scale)")
    parser.add_argument("--plot", default=None,
                        help="PNG plot of alignment vs FID for a sweep (default: next to --out)")


def _optional_metric(name, build, enabled, skipped):
    if not enabled:
        skipped[name] = "disabled by a flag"
        print(f"skipping {name}: disabled by a flag")
        return None
    from keras_muse.metrics.fid import WeightsUnavailableError

    try:
        return build()
    except WeightsUnavailableError as e:
        skipped[name] = str(e)
        print(f"skipping {name}: {e}")
        return None


def mean_alignment(report):
    values = [report[k] for k in ALIGNMENT_KEYS if report.get(k) is not None]
    return float(np.mean(values)) if values else None


# Sampler settings `evaluate` passes through to `generate` (and records).
SAMPLING_OPTIONS = ("temperature", "choice_temperature", "guidance_schedule", "top_k")


def evaluate(task, num_prompts=64, split="heldout", guidance_scales=None, num_steps=None, seed=0,
             data_seed=DEFAULT_DATA_SEED, batch_size=8, judge=None, inception=True, clip=True,
             clip_preset="clip_vit_base_patch16", grid=None, plot=None, name=None, verbose=True,
             sampling=None):
    """Generates for `num_prompts` prompts of `split` at each guidance scale
    and scores the images. Returns the report dict (see the module doc).

    `sampling`: optional dict of further `generate` settings
    (`SAMPLING_OPTIONS`); unset ones are the task's defaults. The report's
    "sampling" entry holds the values used, so sweeps over them stay
    comparable."""
    from keras_muse.metrics import alignment
    from keras_muse.metrics import fid
    from keras_muse.metrics.attribute_classifier import ShapesAttributeClassifier

    if not isinstance(num_prompts, int) or num_prompts < 2:
        raise ValueError(f"`num_prompts` must be an int >= 2 (FID needs 2 images). Received: {num_prompts!r}")
    # None: the task's defaults (its preset's `sampling_defaults`).
    num_steps = task.sampling_setting("num_steps", num_steps)
    if guidance_scales is None:
        guidance_scales = [task.sampling_setting("guidance_scale")]
    guidance_scales = [float(s) for s in guidance_scales]
    if not guidance_scales:
        raise ValueError("`guidance_scales` must name at least one scale. Received: []")
    sampling = dict(sampling or {})
    unknown = sorted(set(sampling) - set(SAMPLING_OPTIONS))
    if unknown:
        raise ValueError(f"`sampling` accepts {SAMPLING_OPTIONS}. Received unknown keys: {unknown}")
    sampling = {k: v for k, v in sampling.items() if v is not None}
    used_sampling = {k: sampling.get(k, task.sampling_setting(k)) for k in SAMPLING_OPTIONS if k != "top_k"}
    used_sampling["top_k"] = sampling.get("top_k")
    resolution = int(task.resolution[0]) if hasattr(task, "resolution") else 64
    judge = judge if judge is not None else ShapesAttributeClassifier.from_preset("shapes_attribute_classifier")
    real, prompts, _ = shapes.make_arrays(num_prompts, resolution=resolution, split=split, seed=data_seed)
    other, _, _ = shapes.make_arrays(num_prompts, resolution=resolution, split=split, seed=data_seed,
                                     start=num_prompts)
    skipped = {}
    features = judge.feature_model()
    real_stats = fid.compute_statistics(real, features)
    real_alignment = alignment.score_alignment(real, prompts, classifier=judge)
    report = {
        "preset": name or getattr(task, "name", None),
        "split": split,
        "num_prompts": num_prompts,
        "resolution": resolution,
        "num_steps": num_steps,
        "sampling": used_sampling,
        "seed": seed,
        "data_seed": data_seed,
        "batch_size": batch_size,
        "real": {
            "alignment": _rounded(real_alignment),
            "classifier_fid_floor": fid.frechet_distance(real_stats, fid.compute_statistics(other, features)),
        },
        "results": [],
    }
    inception_model = _optional_metric("inception_fid", fid.inception_feature_model, inception, skipped)
    real_inception = fid.compute_statistics(real, inception_model) if inception_model is not None else None
    if real_inception is not None:
        report["real"]["inception_fid_floor"] = fid.frechet_distance(
            real_inception, fid.compute_statistics(other, inception_model))
    from keras_muse.metrics.clip_score import CLIPScore

    clip_scorer = _optional_metric("clip_score", lambda: CLIPScore.from_preset(clip_preset), clip, skipped)
    samples = {}
    for scale in guidance_scales:
        if verbose:
            print(f"guidance scale {scale:g}: generating {num_prompts} images")
        start = time.time()
        images = np.asarray(task.generate(prompts, num_steps=num_steps, guidance_scale=scale, seed=seed,
                                          batch_size=batch_size, verbose=1 if verbose else 0, **sampling))
        seconds = time.time() - start
        scores = alignment.score_alignment(images, prompts, classifier=judge)
        row = {
            "guidance_scale": scale,
            "alignment": _rounded(scores),
            "mean_alignment": mean_alignment(scores),
            "classifier_fid": fid.frechet_distance(real_stats, fid.compute_statistics(images, features)),
            "generation_seconds": round(seconds, 1),
        }
        if real_inception is not None:
            row["inception_fid"] = fid.frechet_distance(real_inception, fid.compute_statistics(images, inception_model))
        if clip_scorer is not None:
            row["clip_score"] = clip_scorer.score(images, prompts)
            row["clip_score_real"] = clip_scorer.score(real, prompts)
        report["results"].append(row)
        samples[scale] = images
        if verbose:
            print(format_table(report["results"][-1:], header=False))
    report["skipped"] = skipped
    if grid:
        _save_grid(grid, samples, prompts, real)
        report["grid"] = grid
    if plot and len(guidance_scales) > 1:
        save_png_plot(report, plot)
        report["plot"] = plot
    return report


def _rounded(scores):
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items() if k != "per_prompt"}


def format_table(results, header=True):
    """Rows of `evaluate`'s results as a text table."""
    columns = ["guidance", *ALIGNMENT_KEYS, "all", "mean", "clf_FID"]
    extra = [k for k in ("inception_fid", "clip_score") if any(k in r for r in results)]
    columns += extra
    lines = [" ".join(f"{c:>9}" for c in columns)] if header else []
    for r in results:
        values = [r["guidance_scale"], *[r["alignment"].get(k) for k in ALIGNMENT_KEYS],
                  r["alignment"].get("all"), r["mean_alignment"], r["classifier_fid"], *[r.get(k) for k in extra]]
        lines.append(" ".join(f"{v:>9.3f}" if isinstance(v, float) else f"{'-':>9}" for v in values))
    return "\n".join(lines)


def _save_grid(path, samples, prompts, real, columns=8):
    from keras_muse.utils.image_utils import make_captioned_grid
    from keras_muse.utils.image_utils import save_png

    columns = min(columns, len(prompts))
    tiles, captions = [], []
    for scale, images in samples.items():
        tiles.extend(images[:columns])
        captions.extend(f"[g={scale:g}] {p}" for p in prompts[:columns])
    tiles.extend(real[:columns])
    captions.extend(f"[real] {p}" for p in prompts[:columns])
    save_png(make_captioned_grid(np.stack(tiles), captions, columns=columns), path)


def save_png_plot(report, path, size=(640, 440)):
    """Alignment (mean per-attribute accuracy) against classifier FID, one
    point per guidance scale, the real-vs-real floor as a dashed line.
    Drawn with PIL (no matplotlib dependency)."""
    from PIL import Image
    from PIL import ImageDraw
    from PIL import ImageFont

    from keras_muse.utils.image_utils import save_png

    results = report["results"]
    xs = [r["classifier_fid"] for r in results]
    ys = [r["mean_alignment"] or 0.0 for r in results]
    floor = report["real"]["classifier_fid_floor"]
    real_y = mean_alignment(report["real"]["alignment"]) or 1.0
    width, height = size
    left, right, top, bottom = 70, 20, 40, 60
    x_lo, x_hi = 0.0, max(xs + [floor]) * 1.1 or 1.0
    y_lo, y_hi = max(0.0, min(ys + [real_y]) - 0.05), min(1.0, max(ys + [real_y]) + 0.05)
    if y_hi - y_lo < 0.1:
        y_lo = max(0.0, y_hi - 0.1)

    def px(x, y):
        return (left + (x - x_lo) / (x_hi - x_lo) * (width - left - right),
                height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom))

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for k in range(6):
        x = x_lo + (x_hi - x_lo) * k / 5
        y = y_lo + (y_hi - y_lo) * k / 5
        gx, _ = px(x, y_lo)
        _, gy = px(x_lo, y)
        draw.line([gx, height - bottom, gx, height - bottom + 4], fill=(0, 0, 0))
        draw.text((gx - 12, height - bottom + 6), f"{x:.0f}", fill=(0, 0, 0), font=font)
        draw.line([left - 4, gy, left, gy], fill=(0, 0, 0))
        draw.text((left - 40, gy - 6), f"{y:.2f}", fill=(0, 0, 0), font=font)
    fx, _ = px(floor, y_lo)
    for y0 in range(top, height - bottom, 8):
        draw.line([fx, y0, fx, min(y0 + 4, height - bottom)], fill=(120, 120, 120))
    draw.text((fx + 4, top + 4), "real-vs-real FID", fill=(90, 90, 90), font=font)
    points = [px(x, y) for x, y in zip(xs, ys)]
    draw.line(points, fill=(40, 80, 220), width=2)
    for (x, y), r in zip(points, results):
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(220, 40, 40))
        draw.text((x + 6, y - 14), f"g={r['guidance_scale']:g}", fill=(0, 0, 0), font=font)
    draw.text((left, 12), f"{report.get('preset') or 'preset'}: alignment vs classifier FID "
                          f"({report['split']}, n={report['num_prompts']})", fill=(0, 0, 0), font=font)
    draw.text(((width - left) // 2, height - 24), "FID in the judge's feature space (lower is better)",
              fill=(0, 0, 0), font=font)
    draw.text((4, top - 16), "mean alignment accuracy", fill=(0, 0, 0), font=font)
    save_png(np.asarray(image), path)
    return path


def run(args):
    """The `python -m keras_muse evaluate` command."""
    from keras_muse.metrics.attribute_classifier import ShapesAttributeClassifier
    from keras_muse.models import MuseTextToImage

    if args.num_prompts < 2:
        raise SystemExit("-n/--num-prompts must be >= 2")
    if args.guidance_sweep:
        try:
            scales = [float(s) for s in args.guidance_sweep.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"--guidance-sweep must be comma-separated numbers. Received: {args.guidance_sweep!r}")
    else:
        scales = None if args.guidance_scale is None else [args.guidance_scale]
    plot = args.plot
    if plot is None and scales is not None and len(scales) > 1:
        plot = os.path.splitext(args.out)[0] + "_sweep.png"
    task = MuseTextToImage.from_preset(args.preset)
    judge = ShapesAttributeClassifier.from_preset(args.judge)
    report = evaluate(
        task, num_prompts=args.num_prompts, split=args.split, guidance_scales=scales, num_steps=args.steps,
        seed=args.seed, data_seed=args.data_seed, batch_size=args.batch_size, judge=judge,
        inception=not args.no_inception, clip=not args.no_clip, clip_preset=args.clip_preset,
        grid=args.grid, plot=plot, name=args.preset,
        sampling={k: getattr(args, k) for k in SAMPLING_OPTIONS},
    )
    directory = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(directory, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(format_table(report["results"]))
    print(f"real renders: alignment {mean_alignment(report['real']['alignment']):.3f}, "
          f"classifier FID floor (real vs real) {report['real']['classifier_fid_floor']:.2f}")
    print(f"wrote {args.out}" + (f", {args.grid}" if args.grid else "") + (f", {plot}" if plot else ""))
    return 0
