"""Train the Muse base transformer on the captioned-shapes dataset.

Needs a trained shapes tokenizer (`examples/train_vqgan.py --save-preset DIR`).
The tokenizer turns every image into 16x16 ids once; the tiny T5-architecture
text encoder trains jointly; `fit` masks tokens (cosine schedule) and drops
10 % of the captions inside every train step. Progress bar, BackupAndRestore
checkpoints (a killed run resumes), a JSON report with the held-out masked-token
accuracy with and without captions.

    KERAS_BACKEND=jax python examples/train_muse.py \
        --vqgan-preset presets/vqgan_shapes_f4 --steps 1000 \
        --save-preset presets/muse_shapes_64 --report muse_report.json \
        --checkpoint-dir /tmp/muse_ckpt

Every flag of `python -m keras_muse train muse --help` is accepted.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_muse.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "muse", *sys.argv[1:]]))
