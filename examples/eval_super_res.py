"""Does the super-res stage keep the base image's content? (paper §2.4)

Generates images for held-out shapes prompts with a two-stage preset (base
at 64², super-res to 128²), then has the shapes attribute classifier (trained
on real renders only) read both the base output and the super-res output
downsampled to the base size, and reports how often they agree: per object
colour, shape, size and grid cell, per image the count, and whole scenes.
Also the held-out PSNR figures of `train_super_res` (super-res vs bicubic),
if its report is given.

`--source real` starts from the real scenes instead of base samples: their
64² tokens go through super-res, and the same agreement is read between the
64² tokenizer's reconstruction and the super-res output. It also reports two
ceilings on the same scenes: the real 64² vs 128² renders, and the two
tokenizers' reconstructions. That separates what the super-res stage loses
from what malformed base samples make ambiguous.

    KERAS_BACKEND=jax python examples/eval_super_res.py --preset outputs/muse_shapes_128 \
        -n 256 --report super_res_eval.json --grid super_res_pairs.png
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

from keras_muse.datasets import shapes  # noqa: E402
from keras_muse.metrics.attribute_classifier import ShapesAttributeClassifier  # noqa: E402
from keras_muse.metrics.attribute_classifier import decode_predictions  # noqa: E402
from keras_muse.metrics.attribute_classifier import scene_targets  # noqa: E402
from keras_muse.metrics.attribute_classifier import score_predictions  # noqa: E402
from keras_muse.models import MuseTextToImage  # noqa: E402
from keras_muse.training.train_super_res import upsample_real_scenes  # noqa: E402
from keras_muse.utils.image_utils import make_grid  # noqa: E402
from keras_muse.utils.image_utils import resize_images  # noqa: E402
from keras_muse.utils.image_utils import save_png  # noqa: E402


def _raw_predictions(classifier, images, batch_size):
    return classifier.predict(np.asarray(images).astype("float32"), batch_size=batch_size, verbose=0)


def content_agreement(classifier, low_res_images, high_res_images, batch_size=64):
    """The classifier's reading of `high_res_images` (downsampled to the
    low-res size) scored against its reading of `low_res_images`."""
    low_res_images = np.asarray(low_res_images)
    down = resize_images(high_res_images, low_res_images.shape[1:3], resample="box")
    base_scenes = decode_predictions(_raw_predictions(classifier, low_res_images, batch_size))
    return score_predictions(_raw_predictions(classifier, down, batch_size), scene_targets(base_scenes))


def _from_real_scenes(task, args):
    """Held-out scenes rendered at both sizes; super-res from their 64² tokens."""
    sr = task.super_resolution
    low_vq = sr.low_res_vqgan
    size = task.backbone.grid_size[0] * task.vqgan.factor
    high_size = sr.backbone.grid_size[0] * sr.vqgan.factor
    real_low, prompts, _ = shapes.make_arrays(args.num_prompts, resolution=size, split=args.split,
                                              seed=args.seed + 100)
    real_high, _, _ = shapes.make_arrays(args.num_prompts, resolution=high_size, split=args.split,
                                         seed=args.seed + 100)
    low_ids = low_vq.encode(low_vq.preprocess_images(real_low), batch_size=128)
    high, low_recon, high_recon = upsample_real_scenes(sr, low_ids, real_high, prompts, seed=args.seed,
                                                       batch_size=args.batch_size)
    ceilings = {"real_renders": (real_low, real_high), "tokenizer_reconstructions": (low_recon, high_recon)}
    return low_recon, high, ceilings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, help="a two-stage MuseTextToImage preset")
    parser.add_argument("-n", "--num-prompts", type=int, default=256)
    parser.add_argument("--split", default="heldout", choices=("train", "heldout"))
    parser.add_argument("--source", default="generated", choices=("generated", "real"),
                        help="low-res input: base samples, or the real scenes' 64^2 tokens")
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-report", default=None, help="train_super_res's JSON (for its PSNR figures)")
    parser.add_argument("--report", default=None)
    parser.add_argument("--grid", default=None, help="PNG: base (upsampled) over super-res")
    args = parser.parse_args(argv)

    task = MuseTextToImage.from_preset(args.preset)
    if task.super_resolution is None:
        raise SystemExit(f"--preset {args.preset!r} has no super-resolution stage")
    classifier = ShapesAttributeClassifier.from_preset("shapes_attribute_classifier")
    started = time.time()
    ceilings = {}
    if args.source == "generated":
        _, prompts, _ = shapes.make_arrays(args.num_prompts, resolution=64, split=args.split, seed=args.seed + 100)
        out = task.generate(list(prompts), guidance_scale=args.guidance_scale, seed=args.seed,
                            batch_size=args.batch_size, return_tokens=True, verbose=1)
        low, high = np.asarray(out["low_res_images"]), np.asarray(out["images"])
    else:
        low, high, ceilings = _from_real_scenes(task, args)
    seconds = time.time() - started
    agreement = content_agreement(classifier, low, high)
    result = {"preset": args.preset, "split": args.split, "num_prompts": args.num_prompts,
              "source": args.source, "seed": args.seed,
              "classifier_agreement_base_vs_super_res": agreement,
              "seconds_per_image": round(seconds / len(low), 3)}
    if args.source == "generated":
        result["guidance_scale"] = args.guidance_scale
    for name, (a, b) in ceilings.items():
        result[f"classifier_agreement_{name}"] = content_agreement(classifier, a, b)
    if args.train_report:
        with open(args.train_report) as f:
            result["heldout_upsampling"] = json.load(f)["heldout_upsampling"]
    for name, value in result.items():
        if name.startswith("classifier_agreement_"):
            print(f"{name[len('classifier_agreement_'):]}, 64^2 vs 128^2 (downsampled): " + ", ".join(
                f"{key} {value[key]:.1%}" for key in ("color", "shape", "size", "position", "count", "scene")))
    if args.grid:
        k = min(8, len(low))
        save_png(make_grid(np.concatenate([resize_images(low[:k], high.shape[1:3]), high[:k]]), columns=k), args.grid)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
