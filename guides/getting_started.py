"""
# Getting started with keras_muse: text to image, and editing

Muse generates an image by predicting all of its VQGAN tokens in parallel and
keeping the most confident ones at each of a few steps. This guide uses the
`muse_shapes_64` preset that ships inside the package (trained on this repo's
captioned-shapes dataset, nothing downloaded) to show every way of sampling:
seeds, classifier-free guidance, negative prompts, inpainting, outpainting and
mask-free editing. Every result is written as a PNG.

Run it as a script: `KERAS_BACKEND=jax python guides/getting_started.py`
(`GUIDE_STEPS=2` for a quick look, `GUIDE_OUT=dir` for the output folder).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

import keras_muse
from keras_muse.utils.image_utils import make_captioned_grid
from keras_muse.utils.image_utils import save_png

STEPS = int(os.environ.get("GUIDE_STEPS", 24))
OUT = os.environ.get("GUIDE_OUT", "guide_outputs")
os.makedirs(OUT, exist_ok=True)

"""
## Load the preset

One call builds the text encoder (a small T5 encoder with its SentencePiece
tokenizer), the base masked transformer and the VQGAN, and loads their weights.
On JAX, `keras_muse.backend.enable_compilation_cache()` keeps the compiled
sampler on disk, so a second run skips compilation (the CLI turns it on).
"""

keras_muse.backend.enable_compilation_cache()
task = keras_muse.models.MuseTextToImage.from_preset("muse_shapes_64")
print(task.backbone.count_params(), "transformer parameters;", task.backbone.grid_size, "token grid")

"""
## Text to image

`generate` takes prompts and returns uint8 images. The same seed gives the same
images; the whole decoding loop is one compiled program, so the second call
with the same batch size and number of steps runs without tracing.
"""

prompts = [
    "a large red circle in the top left",
    "two blue squares",
    "a small yellow star at the bottom",
    "a large green triangle in the center",
]
images = task.generate(prompts, num_steps=STEPS, seed=0)
print(images.shape, images.dtype)
save_png(make_captioned_grid(images, prompts), os.path.join(OUT, "generate.png"))

again = task.generate(prompts, num_steps=STEPS, seed=0)
assert np.array_equal(images, again), "the same seed gives the same images"

"""
## Seeds

Different seeds give different samples of the same prompt.
"""

prompt = ["a large purple hexagon on the right"] * 4
samples = [task.generate(prompt[:1], num_steps=STEPS, seed=s)[0] for s in range(4)]
save_png(make_captioned_grid(np.stack(samples), [f"seed {s}" for s in range(4)]),
         os.path.join(OUT, "seeds.png"))

"""
## Classifier-free guidance

The logits are pushed away from the unconditional ones,
ℓ = (1+t)·ℓ_cond − t·ℓ_uncond, with t ramping up over the steps (paper §2.7).
t = 0 ignores how strongly the text is followed; larger t follows it more
closely, at the cost of diversity.
"""

scales = [0.0, 1.0, 3.0, 6.0]
guided = np.concatenate([
    task.generate(prompt[:1], num_steps=STEPS, guidance_scale=t, seed=1) for t in scales
])
save_png(make_captioned_grid(guided, [f"guidance {t}" for t in scales]),
         os.path.join(OUT, "guidance.png"))

"""
## Negative prompts

A negative prompt takes the place of the empty prompt in guidance: the sample
moves away from it (paper §2.8).
"""

plain = task.generate(["a large circle in the center"], num_steps=STEPS, seed=2)
negative = task.generate(["a large circle in the center"], negative_prompts="a red circle",
                         num_steps=STEPS, seed=2)
save_png(make_captioned_grid(np.concatenate([plain, negative]), ["no negative", "negative: red"]),
         os.path.join(OUT, "negative_prompt.png"))

"""
## Inpainting

Mask pixels (True = regenerate); every token whose patch touches the mask is
regenerated, conditioned on the rest of the image and the prompt. The other
tokens are kept exactly.
"""

mask = np.zeros((64, 64), bool)
mask[:, 32:] = True
inpainted = task.inpaint(images[:1], mask, "a small cyan diamond on the right",
                         num_steps=max(STEPS // 2, 1), seed=0)
save_png(make_captioned_grid(np.concatenate([images[:1], inpainted]), ["original", "inpainted right half"]),
         os.path.join(OUT, "inpaint.png"))

"""
## Outpainting

The image is shifted away from `direction` and the uncovered strip generated.
"""

wider = task.outpaint(images[:1], "a large red circle in the top left and a black square on the right",
                      direction="right", extent=0.25, num_steps=max(STEPS // 2, 1), seed=0)
save_png(make_captioned_grid(np.concatenate([images[:1], wider]), ["original", "outpainted right"]),
         os.path.join(OUT, "outpaint.png"))

"""
## Mask-free editing

No mask: each of `iterations` rounds re-masks a random 8 % of the tokens and
resamples them with the new prompt (paper §3.3: 100 rounds, guidance 4,
top-k 3). Parts the prompt does not mention tend to stay.
"""

edited = task.edit(images[:1], "a large blue circle in the top left",
                   iterations=max(STEPS * 2, 2), seed=0)
save_png(make_captioned_grid(np.concatenate([images[:1], edited]), ["original", "edited: blue"]),
         os.path.join(OUT, "edit.png"))

"""
## Watching the decoding

`return_history=True` returns the token grid after every step ([MASK] where
still masked): the cosine schedule fixes few tokens first and most at the end.
"""

out = task.generate(prompts[:1], num_steps=STEPS, seed=0, return_history=True)
history = out["history"][0]  # [T, h, w]
print("tokens still masked after each step:",
      [int((h == task.backbone.mask_token_id).sum()) for h in history])

"""
## From the command line

```bash
python -m keras_muse generate "a large red circle in the top left" -n 4 --seed 0 --out samples.png
```
"""

print("wrote", sorted(f for f in os.listdir(OUT) if f.endswith(".png")))
