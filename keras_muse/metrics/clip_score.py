"""CLIP score: how well images match their prompts, by a CLIP model.

For each (image, prompt) pair, `100 * max(cos(image_emb, text_emb), 0)`
(Hessel et al., 2021, without their 2.5 weight; the torchmetrics
convention). Muse reports its mean over COCO prompts (§4: 0.32 as a raw
cosine for Muse-3B).

Embeddings come from a keras-hub `CLIPBackbone` and its `CLIPPreprocessor`
(`CLIPScore.from_preset("clip_vit_base_patch16")` when the weights can be
downloaded; offline it raises `WeightsUnavailableError`), or from any pair
of functions: images -> `[n, d]` and prompts -> `[n, d]`.

Example:

```python
from keras_muse.metrics import CLIPScore

scorer = CLIPScore(image_embedding_fn, text_embedding_fn)  # or .from_preset(...)
scorer(images, prompts)        # float32 [n] per-pair scores in [0, 100]
scorer.score(images, prompts)  # their mean
```
"""

import numpy as np

from keras_muse.metrics.fid import WeightsUnavailableError


def clip_score_from_embeddings(image_embeddings, text_embeddings):
    """Per-pair `100 * max(cosine, 0)` for `[n, d]` embeddings."""
    a = np.asarray(image_embeddings, np.float64)
    b = np.asarray(text_embeddings, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            "`image_embeddings` and `text_embeddings` must both be [n, d] with the same shape. "
            f"Received {a.shape} and {b.shape}."
        )
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (100.0 * np.clip(np.sum(a * b, axis=1), 0.0, None)).astype(np.float32)


class CLIPScore:
    """Scores images against prompts with a pair of embedding functions.

    Args:
        image_embedding_fn: uint8 images `[n, H, W, 3]` -> `[n, d]`.
        text_embedding_fn: list of n prompts -> `[n, d]`.
    """

    def __init__(self, image_embedding_fn, text_embedding_fn):
        for name, fn in (("image_embedding_fn", image_embedding_fn), ("text_embedding_fn", text_embedding_fn)):
            if not callable(fn):
                raise ValueError(f"`{name}` must be callable. Received: {fn!r}")
        self.image_embedding_fn = image_embedding_fn
        self.text_embedding_fn = text_embedding_fn

    @classmethod
    def from_backbone(cls, backbone, preprocessor):
        """From a keras-hub `CLIPBackbone` and `CLIPPreprocessor` (its
        image converter resizes and normalizes the images)."""
        if preprocessor.image_converter is None:
            raise ValueError("`preprocessor` must have an `image_converter` to prepare the images.")

        def image_fn(images):
            pixels = preprocessor.image_converter(np.asarray(images, np.float32))
            return np.asarray(backbone.get_vision_embeddings(pixels))

        def text_fn(prompts):
            inputs = preprocessor({"prompts": list(prompts), "images": None})
            return np.asarray(backbone.get_text_embeddings(inputs["token_ids"]))

        return cls(image_fn, text_fn)

    @classmethod
    def from_preset(cls, preset="clip_vit_base_patch16"):
        """Loads a keras-hub CLIP preset (a name, a `kaggle://` handle or a
        local directory). Raises `WeightsUnavailableError` when it cannot
        be had (e.g. offline and not cached)."""
        import keras_hub

        try:
            backbone = keras_hub.models.CLIPBackbone.from_preset(preset)
            preprocessor = keras_hub.models.CLIPPreprocessor.from_preset(preset)
        except Exception as e:  # Offline, keras-hub raises connection errors of several types.
            raise WeightsUnavailableError(
                f"Could not load the CLIP preset {preset!r} ({type(e).__name__}: {e}). "
                "keras-hub downloads it from Kaggle; offline, pass a local preset "
                "directory, or build `CLIPScore(image_embedding_fn, text_embedding_fn)` "
                "from your own embedding functions."
            ) from e
        return cls.from_backbone(backbone, preprocessor)

    def __call__(self, images, prompts, batch_size=32):
        """Per-pair scores, float32 `[n]` in [0, 100]."""
        images = np.asarray(images)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if images.ndim != 4 or len(images) != len(prompts):
            raise ValueError(
                "`images` must be [n, H, W, 3] with one prompt each. "
                f"Received images {images.shape} and {len(prompts)} prompts."
            )
        scores = []
        for i in range(0, len(prompts), batch_size):
            image_emb = self.image_embedding_fn(images[i:i + batch_size])
            text_emb = self.text_embedding_fn(prompts[i:i + batch_size])
            scores.append(clip_score_from_embeddings(image_emb, text_emb))
        return np.concatenate(scores) if scores else np.zeros((0,), np.float32)

    def score(self, images, prompts, batch_size=32):
        """The mean per-pair score."""
        return float(np.mean(self(images, prompts, batch_size)))
