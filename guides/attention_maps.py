"""
# What does the model look at? Cross-attention maps and saliency per word

Every image token of a Muse transformer cross-attends to the words of the
prompt. This guide generates an image with the shipped `muse_shapes_64`
preset and asks two questions:

1. **Where does each word go?** The cross-attention probabilities, averaged
   over heads and layers, give a 16x16 map per word piece
   (`MuseBackbone.text_attention_maps`).
2. **Which words drive a region?** With [tf-keras-vis](https://github.com/keisen/tf-keras-vis)
   `Saliency` (and SmoothGrad), the gradient of the logits of a region's
   tokens with respect to the text embeddings gives one score per word.

tf-keras-vis computes gradients with `tf.GradientTape`, so this guide runs on
the TensorFlow backend (the model and the preset are the same on every
backend). Install it with `pip install "keras-muse[vis]"`.

Run it as a script: `python guides/attention_maps.py`
(`GUIDE_STEPS=2` for a quick look, `GUIDE_OUT=dir` for the output folder).
"""

import os
import warnings

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from PIL import ImageDraw
from tf_keras_vis.saliency import Saliency

import keras_muse
from keras_muse.utils.image_utils import make_captioned_grid
from keras_muse.utils.image_utils import save_png

STEPS = int(os.environ.get("GUIDE_STEPS", 24))
OUT = os.environ.get("GUIDE_OUT", "guide_outputs")
os.makedirs(OUT, exist_ok=True)

"""
## Generate an image and keep its tokens
"""

task = keras_muse.models.MuseTextToImage.from_preset("muse_shapes_64")
backbone = task.backbone
prompt = "a large red circle in the top left and a small blue square in the bottom right"
out = task.generate([prompt], num_steps=STEPS, seed=0, return_tokens=True)
image = out["images"][0]
token_ids = out["token_ids"].reshape(1, -1).astype("int32")  # [1, 256]
grid_h, grid_w = backbone.grid_size

"""
## Word pieces

The text encoder's SentencePiece tokenizer splits the prompt into pieces; the
padding mask marks the real ones.
"""

text_embeddings, text_mask = task.text_encoder.encode_text([prompt])
tokenizer = task.preprocessor.tokenizer
piece_ids = np.asarray(task.preprocessor([prompt])["token_ids"])[0]
length = int(text_mask[0].sum())
# "▁" marks a word start in SentencePiece; PIL's default font cannot draw it.
pieces = [tokenizer.id_to_token(int(i)).replace("\u2581", "") for i in piece_ids[:length]]
print(pieces)

"""
## 1. Cross-attention maps per word

`text_attention_maps` returns `[layers, batch, heads, tokens, words]`
probabilities, computed exactly as the forward pass uses them. We average
heads and layers and show, for each word piece, which image tokens read it.
"""

maps = np.asarray(backbone.text_attention_maps(token_ids, text_embeddings, text_mask))
per_word = maps.mean(axis=(0, 2))[0]  # [tokens, words]


def overlay(image, heat):
    """Darkens a uint8 image where a [h, w] map in [0, 1] (upsampled) is low."""
    size = image.shape[0]
    heat = np.asarray(Image.fromarray((heat * 255).astype("uint8")).resize((size, size), Image.BILINEAR))
    heat = heat[..., None].astype("float32") / 255.0
    return (image * (0.25 + 0.75 * heat)).astype("uint8")


tiles, captions = [image], ["generated"]
for j, piece in enumerate(pieces):
    heat = per_word[:, j].reshape(grid_h, grid_w)
    heat = (heat - heat.min()) / max(heat.max() - heat.min(), 1e-8)
    tiles.append(overlay(image, heat))
    captions.append(piece)
save_png(make_captioned_grid(np.stack(tiles), captions, columns=6), os.path.join(OUT, "attention_per_word.png"))

"""
## 2. Saliency of a region's tokens with respect to the words (tf-keras-vis)

tf-keras-vis wants a Keras model from a float input to a score. We wrap the
backbone as a model of the text embeddings: the image tokens of a region are
masked (the model must predict them from the rest and the text), and the
score is the sum of the logits of the tokens the sampler chose there.
`Saliency` returns |d score / d embedding| reduced over the embedding axis:
one value per word piece. SmoothGrad averages it over noisy copies.
"""


class FixedGridLogits(keras.layers.Layer):
    """text embeddings [1, L, D] -> logits of a fixed (partly masked) grid."""

    def __init__(self, backbone, token_ids, text_mask, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.token_ids = token_ids
        self.text_mask = text_mask

    def call(self, text_embeddings):
        return self.backbone({
            "token_ids": keras.ops.convert_to_tensor(self.token_ids),
            "text_embeddings": text_embeddings,
            "text_padding_mask": keras.ops.convert_to_tensor(self.text_mask),
        })


def region_saliency(rows, cols, smooth_samples=0):
    region = np.zeros((grid_h, grid_w), bool)
    region[rows, cols] = True
    region = region.reshape(-1)
    masked = np.where(region[None], backbone.mask_token_id, token_ids).astype("int32")
    # tf-keras-vis needs a functional model (it reads `model.outputs`).
    inputs = keras.Input(text_embeddings.shape[1:])
    model = keras.Model(inputs, FixedGridLogits(backbone, masked, text_mask)(inputs))
    chosen = tf.one_hot(token_ids[0], backbone.codebook_size) * region[:, None]

    def score(logits):
        return tf.reduce_sum(logits * chosen, axis=(1, 2))

    saliency = Saliency(model, clone=False)
    # tf-keras-vis passes the one input as a list; Keras warns about that.
    warnings.filterwarnings("ignore", message="The structure of `inputs`")
    values = saliency(score, tf.constant(text_embeddings), smooth_samples=smooth_samples,
                      smooth_noise=0.05)
    return np.asarray(values)[0, :length]


half_h, half_w = grid_h // 2, grid_w // 2
regions = {
    "top left": (slice(0, half_h), slice(0, half_w)),
    "bottom right": (slice(half_h, None), slice(half_w, None)),
}


def word_bars(name, values):
    """A PNG row: each word piece with a bar as high as its saliency."""
    width, height = 44 * len(pieces), 110
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = max(values.max(), 1e-8)
    for j, (piece, v) in enumerate(zip(pieces, values)):
        bar = int(70 * v / top)
        draw.rectangle((j * 44 + 8, 80 - bar, j * 44 + 36, 80), fill=(200, 40, 40))
        draw.text((j * 44 + 2, 86), piece[:7], fill=(0, 0, 0))
    draw.text((4, 2), f"saliency of the {name} tokens", fill=(0, 0, 0))
    return np.asarray(canvas)


rows = []
for name, (r, c) in regions.items():
    values = region_saliency(r, c, smooth_samples=max(min(STEPS, 20), 2))
    ranked = sorted(zip(values, pieces), reverse=True)[:4]
    print(f"{name}: most salient pieces", [(p, round(float(v), 2)) for v, p in ranked])
    rows.append(word_bars(name, values))
width = max(r.shape[1] for r in rows)
rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
save_png(np.concatenate(rows), os.path.join(OUT, "saliency_per_word.png"))
print("wrote", os.path.join(OUT, "attention_per_word.png"), "and", os.path.join(OUT, "saliency_per_word.png"))
