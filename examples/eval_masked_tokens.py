"""Held-out masked-token accuracy of a trained base task, with vs without captions.

The text's contribution to the base transformer (issue: "accuracy rises
above the unconditional baseline"): the same masks are scored with the real
captions and with the empty prompt, on all masked tokens and on those that
show objects (88 % of shapes tokens are flat background, which text cannot
help predict), with a 95 % bootstrap interval of the gain.

    KERAS_BACKEND=jax python examples/eval_masked_tokens.py \
        --preset outputs/muse_shapes_64 --report masked_tokens.json
"""

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_muse.datasets import shapes  # noqa: E402
from keras_muse.models import MuseTextToImage  # noqa: E402
from keras_muse.training.train_muse import masked_token_accuracy_report  # noqa: E402
from keras_muse.training.train_muse import object_token_mask  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, help="a trained MuseTextToImage preset")
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--split", default="heldout", choices=("train", "heldout"))
    parser.add_argument("--seed", type=int, default=0, help="the training seed (data: seed+1, masks: seed+2)")
    parser.add_argument("--rates", default="schedule,0.5,0.9,1.0")
    parser.add_argument("--report", default=None, help="JSON file")
    args = parser.parse_args(argv)
    task = MuseTextToImage.from_preset(args.preset)
    resolution = task.backbone.grid_size[0] * task.vqgan.factor
    # The same scenes and masks as `train_muse`'s report for this seed.
    images, captions, _ = shapes.make_arrays(args.num_images, resolution=resolution, split=args.split,
                                             seed=args.seed + 1)
    ids = task.vqgan.encode(task.vqgan.preprocess_images(images), batch_size=128)
    rates = [r if r == "schedule" else float(r) for r in args.rates.split(",")]
    report = masked_token_accuracy_report(
        task, ids, captions, rates=rates, seed=args.seed + 2,
        object_mask=object_token_mask(images, task.vqgan.factor),
    )
    print(f"{'mask rate':>10} | {'all: captions':>13} | {'empty prompt':>12} | {'objects: captions':>17} | "
          f"{'empty prompt':>12} | gain 95% CI")
    for rate, row in report.items():
        lo, hi = row["objects_gain_ci95"]
        print(f"{rate:>10} | {row['conditional']:>13.1%} | {row['unconditional']:>12.1%} | "
              f"{row['conditional_objects']:>17.1%} | {row['unconditional_objects']:>12.1%} | "
              f"{lo:+.1%} .. {hi:+.1%}")
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"preset": args.preset, "split": args.split, "num_images": args.num_images,
                       "seed": args.seed, "accuracy": report}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
