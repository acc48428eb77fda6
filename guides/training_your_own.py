"""
# Training Muse on your own image-text folder with `model.fit`

Muse has three trainable parts: the VQGAN that turns images into tokens, the
text encoder (frozen T5 in the paper) and the masked transformer that learns
to fill in image tokens given the text. This guide trains all of them on a
folder of captioned images, saves the result as one preset and generates
from it.

No data can be downloaded here, so the guide first writes a folder of the
repo's captioned shapes, laid out like your own data would be; point
`FOLDER` at your photos instead.

Run it as a script: `KERAS_BACKEND=jax python guides/training_your_own.py`
(`GUIDE_STEPS=2` for a quick look, `GUIDE_OUT=dir` for the output folder).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import keras_hub
import numpy as np

import keras_muse
from keras_muse.datasets import shapes
from keras_muse.datasets.image_text_folder import load_image_text_folder
from keras_muse.models.text import sentencepiece_utils
from keras_muse.utils.image_utils import make_captioned_grid
from keras_muse.utils.image_utils import save_png

STEPS = int(os.environ.get("GUIDE_STEPS", 400))
OUT = os.environ.get("GUIDE_OUT", "guide_outputs")
FOLDER = os.path.join(OUT, "my_images")
BATCH = 16

"""
## An image-text folder

Any of three layouts works: `cat.jpg` + `cat.txt` side by side (used here),
a `captions.jsonl` or a `captions.csv` at the root. Unreadable images and
missing captions are counted and skipped up front.
"""

from PIL import Image  # noqa: E402

os.makedirs(FOLDER, exist_ok=True)
num_images = max(BATCH * 8, min(STEPS * BATCH, 4096))
images, captions, _ = shapes.make_arrays(num_images, resolution=64)
for i, (image, caption) in enumerate(zip(images, captions)):
    Image.fromarray(image).save(os.path.join(FOLDER, f"{i:05d}.png"))
    with open(os.path.join(FOLDER, f"{i:05d}.txt"), "w") as f:
        f.write(caption)

dataset, report = load_image_text_folder(
    FOLDER, resolution=64, batch_size=BATCH, seed=0, return_report=True
)
print(report.summary())

"""
## 1. The image tokenizer

`vqgan_shapes_f4` is a named architecture (no weights): 64x64 images to a
16x16 grid of ids. `fit` takes the folder's images directly (uint8 is
converted in the graph). The perceptual loss needs ImageNet VGG16 weights,
which cannot be downloaded offline, so it is off; the GAN loss starts late.
"""

vqgan = keras_muse.models.VQGAN.from_preset("vqgan_shapes_f4", load_weights=False)
vqgan.compile(
    optimizer=keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.99),
    perceptual_weight=0.0,
    adversarial_weight=0.1,
    discriminator_start=int(STEPS * 0.8),
)
images_only = dataset.map(lambda batch: batch["images"]).repeat()
vqgan.fit(images_only, epochs=1, steps_per_epoch=STEPS)

"""
## 2. The text encoder

The paper's text encoder is a frozen T5-XXL:
`keras_muse.models.MuseTextEncoder.from_preset("t5_1_1_xxl")` downloads it from
Kaggle through keras-hub (offline it raises an error that says how to use a
local copy). Here we train a SentencePiece vocabulary on the captions and a
small T5 encoder from scratch, jointly with the transformer.
"""

proto = sentencepiece_utils.train_sentencepiece(captions, vocab_size=48)
preprocessor = keras_muse.models.MuseTextPreprocessor(
    keras_hub.models.T5Tokenizer(proto=proto), sequence_length=24
)
text_encoder = keras_muse.models.MuseTextEncoder(
    vocabulary_size=48, num_layers=2, num_heads=4, hidden_dim=64, intermediate_dim=128,
    dropout=0.0, activation="gelu", preprocessor=preprocessor,
)

"""
## 3. The masked transformer

`MuseTextToImage` ties the three together. Every train step draws a cosine
masking rate per example, masks that many tokens, replaces 10 % of the
captions with the empty prompt (for classifier-free guidance) and computes
the cross-entropy on the masked tokens only. It trains on images (tokenized
by the frozen VQGAN inside the step) or on precomputed token ids; tokenizing
once is faster when the VQGAN is frozen, which is what we do.
"""

backbone = keras_muse.models.MuseBackbone(
    codebook_size=vqgan.codebook_size, grid_size=16, hidden_dim=128, num_layers=4,
    num_heads=4, mlp_dim=512, text_dim=text_encoder.hidden_dim, dropout=0.0,
)
task = keras_muse.models.MuseTextToImage(
    backbone, text_encoder=text_encoder, vqgan=vqgan, trainable_text_encoder=True,
    condition_dropout=0.1, seed=0,
)
task.compile(optimizer=keras.optimizers.AdamW(2e-3, beta_2=0.96, weight_decay=0.045))

token_ids = vqgan.encode(vqgan.preprocess_images(images), batch_size=128)
print("token grid:", token_ids.shape)
task.fit((token_ids, np.asarray(captions)), batch_size=32, epochs=max(STEPS // (num_images // 32), 1))

"""
## Generate, save, load

`save_to_preset` writes the transformer, the text encoder (with its
vocabulary) and the VQGAN into one directory, atomically.
`MuseTextToImage.from_preset(dir)` loads it back, as the CLI does:
`python -m keras_muse generate "a red circle" --preset DIR`.
"""

prompts = ["a large red circle in the top left", "two blue squares",
           "a small green star at the bottom", "a large yellow hexagon in the center"]
samples = task.generate(prompts, num_steps=12, seed=0)
os.makedirs(OUT, exist_ok=True)
save_png(make_captioned_grid(samples, prompts), os.path.join(OUT, "my_model_samples.png"))

preset_dir = os.path.join(OUT, "my_muse")
task.save_to_preset(preset_dir)
restored = keras_muse.models.MuseTextToImage.from_preset(preset_dir)
assert np.array_equal(restored.generate(prompts, num_steps=12, seed=0), samples)
print("saved and reloaded", preset_dir)

"""
## Next

- Longer runs: `python examples/train_vqgan.py` and `python examples/train_muse.py`
  (progress bars, `BackupAndRestore` checkpoints, JSON reports) build the
  shipped preset; `python examples/evaluate.py --preset DIR` scores it.
- Many devices: see `guides/distributed_training.py`.
"""
