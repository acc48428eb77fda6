"""Train the Muse image tokenizer (VQGAN) on the captioned-shapes dataset.

The recipe behind the shipped shapes tokenizer: 64x64 images -> 16x16 token
ids (f=4, the same 256-token grid as the paper's 256x256/f16 base model),
codebook 1024, l1+l2 reconstruction, a PatchGAN switched on half way.

    KERAS_BACKEND=jax python examples/train_vqgan.py --steps 3000 \
        --out reconstructions.png --save-preset presets/vqgan_shapes_f4 \
        --report vqgan_report.json --checkpoint-dir /tmp/vqgan_ckpt

Every flag of `python -m keras_muse train vqgan --help` is accepted.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_muse.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "vqgan", *sys.argv[1:]]))
