"""
# The Muse image tokenizer: training a VQGAN with `model.fit`

Muse never sees pixels: a VQGAN turns every image into a grid of discrete token
ids, and the transformers model those ids. This guide trains the tokenizer of
the captioned-shapes domain, looks at what it learned, saves it as a preset and
fine-tunes a larger decoder on top of it (paper §2.5).

Run it as a script: `KERAS_BACKEND=jax python guides/vqgan_tokenizer.py`
(`GUIDE_STEPS=20` for a quick look).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

import keras_muse
from keras_muse.datasets import shapes
from keras_muse.training.train_vqgan import comparison_grid
from keras_muse.training.train_vqgan import evaluate_tokenizer
from keras_muse.utils.image_utils import save_png

STEPS = int(os.environ.get("GUIDE_STEPS", 300))
OUT = os.environ.get("GUIDE_OUT", "guide_outputs")

"""
## Data

The captioned-shapes dataset is procedural: example `i` is always the same
image. The held-out split contains colour/shape pairs never seen in training,
which makes it a fair test of the tokenizer too.
"""

train_images, captions, _ = shapes.make_arrays(max(STEPS * 16, 256), resolution=64)
heldout_images, _, _ = shapes.make_arrays(64, resolution=64, split="heldout")
print(captions[:3])

"""
## The model

`vqgan_shapes_f4` maps 64x64 images to 16x16 ids (the paper's 256-token grid)
with a codebook of 1024 l2-normalized, 16-dimensional codes. The first
space-to-depth "patch" layer keeps the convolutions at 16x16, which is what
makes CPU training practical.
"""

vqgan = keras_muse.models.VQGAN.from_preset("vqgan_shapes_f4", load_weights=False)
print(f"{vqgan.count_params():,} parameters, factor {vqgan.factor}")

"""
## Training with `fit`

`compile` takes the loss configuration. The perceptual loss needs ImageNet VGG16
weights, which cannot be downloaded offline, so it is off here; the GAN losses
switch on at `discriminator_start`. uint8 images are converted in the graph.
"""

vqgan.compile(
    optimizer=keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.99),
    perceptual_weight=0.0,
    adversarial_weight=0.1,
    discriminator_start=int(STEPS * 0.8),
)
vqgan.fit(train_images, batch_size=16, epochs=1, steps_per_epoch=STEPS)

"""
## What did it learn?

`encode` gives int32 ids, `decode` images in [-1, 1]. We measure the PSNR on
held-out images and how much of the codebook is in use.
"""

metrics, ids, recon = evaluate_tokenizer(vqgan, heldout_images)
print(metrics)
print("ids of the first image:\n", ids[0])
os.makedirs(OUT, exist_ok=True)
save_png(comparison_grid(heldout_images[:16], recon[:16]), os.path.join(OUT, "guide_reconstructions.png"))

"""
## Presets

`save_to_preset` writes a keras-hub preset directory atomically; `from_preset`
loads it back, with clear errors for missing or corrupt files.
"""

preset_dir = os.path.join(OUT, "my_shapes_tokenizer")
vqgan.save_to_preset(preset_dir)
restored = keras_muse.models.VQGAN.from_preset(preset_dir)
floats = vqgan.preprocess_images(heldout_images[:4])
assert np.array_equal(restored.encode(floats), vqgan.encode(floats))

"""
## Decoder fine-tuning (paper §2.5)

Once the transformers are trained on the ids, the decoder alone can be made
larger and fine-tuned: the encoder and codebook are frozen, so ids never change.
"""

tuned = vqgan.with_finetuned_decoder(decoder_base_channels=160, decoder_num_res_blocks=2)
tuned.compile(optimizer=keras.optimizers.Adam(5e-4), perceptual_weight=0.0, adversarial_weight=0.0)
tuned.fit(train_images, batch_size=16, epochs=1, steps_per_epoch=max(STEPS // 5, 1))
assert np.array_equal(tuned.encode(floats), vqgan.encode(floats))
print("fine-tuned decoder:", evaluate_tokenizer(tuned, heldout_images)[0])
