"""Train the Muse super-resolution transformer on captioned shapes (paper §2.4).

Needs a trained base task preset (examples/train_muse.py) and a high-res
tokenizer (examples/train_vqgan.py at 128x128: 32x32 ids):

    KERAS_BACKEND=jax python examples/train_vqgan.py --preset vqgan_shapes_f4_128 \
        --resolution 128 --save-preset presets/vqgan_shapes_f4_128
    KERAS_BACKEND=jax python examples/train_super_res.py \
        --base-preset presets/muse_shapes_64 --vqgan-preset presets/vqgan_shapes_f4_128 \
        --steps 600 --out super_res.png --save-preset presets/muse_shapes_128 \
        --report super_res.json --checkpoint-dir /tmp/super_res_ckpt

The saved preset is a two-stage MuseTextToImage: `generate` runs the base
model at 64x64, then super-res to 128x128. Every flag of
`python -m keras_muse train super-res --help` is accepted.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_muse.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "super-res", *sys.argv[1:]]))
