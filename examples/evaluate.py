"""Evaluate a MuseTextToImage preset on captioned-shapes prompts.

Generates images for N prompts of a split (default: the held-out attribute
combinations), scores them with the shapes judge (per-attribute alignment
accuracy; FID in the judge's feature space beside the real-vs-real floor),
adds Inception FID / CLIP score when their weights can be had (otherwise
prints why they are skipped), and writes a JSON report and a PNG grid. A
guidance sweep adds a table and a PNG plot of alignment vs FID (paper Fig. 8).

    KERAS_BACKEND=jax python examples/evaluate.py --preset muse_shapes_64 \\
        -n 64 --split heldout --guidance-sweep 0,1,2,3,5 \\
        --out report.json --grid samples.png

Every flag of `python -m keras_muse evaluate --help` is accepted.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_muse.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
