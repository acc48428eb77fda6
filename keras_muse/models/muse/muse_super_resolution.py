"""The super-resolution Task: low-res tokens + text -> high-res tokens (§2.4)."""

import keras
import numpy as np
from keras import ops

from keras_muse.models.muse.muse_super_res_backbone import MuseSuperResBackbone
from keras_muse.models.muse.muse_text_to_image import MuseTextToImage
from keras_muse.models.vqgan.vqgan import VQGAN
from keras_muse.utils.image_utils import resize_images


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseSuperResolution(MuseTextToImage):
    """Muse's second stage: high-res image tokens from low-res ones + text.

    The same Task as `MuseTextToImage` (training with `fit`, sampling,
    presets: one implementation), over a `MuseSuperResBackbone`, with the
    low-res token grid as an extra condition. Masks, the masked-token loss
    and the sampler act on the high-res tokens only; condition dropout drops
    the text only (the low-res tokens are always seen, paper §2.4).

    Holds `vqgan` (the high-res tokenizer, e.g. f8 at 512²) and optionally
    `low_res_vqgan` (the base model's tokenizer, e.g. f16 at 256²) to
    tokenize low-res images.

    Training data (tuples or dicts, arrays or datasets):
    - `((low_res_token_ids, token_ids), prompts)`, or images in either slot
      (`low_res_vqgan` / `vqgan` tokenize them in the step), or
      `(text_embeddings, text_padding_mask)` for the text;
    - dicts with `"low_res_token_ids"` or `"low_res_images"`, `"token_ids"`
      or `"images"`, and the text keys of `MuseTextToImage`.

    Example:
    ```python
    sr = MuseSuperResolution(
        MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False),
        text_encoder=encoder, vqgan=vqgan_f8, low_res_vqgan=vqgan_f16,
    )
    sr.compile(optimizer=keras.optimizers.AdamW(3e-4))
    sr.fit(((low_ids, high_ids), captions), batch_size=32)
    images = sr.upsample(low_ids[:4], captions[:4], seed=0)   # 8 steps
    ```
    """

    backbone_cls = MuseSuperResBackbone
    component_classes = MuseTextToImage.component_classes + (("low_res_vqgan", VQGAN),)
    task_presets = {}  # shipped two-stage presets load as a MuseTextToImage
    low_res_inputs = True
    # The paper's super-res model decodes in 8 steps.
    builtin_sampling = {**MuseTextToImage.builtin_sampling, "num_steps": 8}

    def __init__(self, backbone, text_encoder=None, vqgan=None, low_res_vqgan=None, **kwargs):
        if kwargs.get("super_resolution") is not None:
            raise ValueError("A MuseSuperResolution task cannot hold another `super_resolution` stage.")
        kwargs.pop("super_resolution", None)
        if low_res_vqgan is not None:
            if not isinstance(low_res_vqgan, VQGAN):
                raise ValueError(
                    f"`low_res_vqgan` must be a VQGAN or None. Received: {type(low_res_vqgan).__name__}"
                )
            if isinstance(backbone, MuseSuperResBackbone) and (
                low_res_vqgan.codebook_size != backbone.low_res_codebook_size
            ):
                raise ValueError(
                    f"The low-res VQGAN's codebook ({low_res_vqgan.codebook_size}) must equal the "
                    f"backbone's `low_res_codebook_size` ({backbone.low_res_codebook_size})."
                )
            low_res_vqgan.trainable = False
        self.low_res_vqgan = low_res_vqgan
        super().__init__(backbone, text_encoder=text_encoder, vqgan=vqgan, **kwargs)

    # ------------------------------------------------------------- training
    def _low_res_spec(self):
        bb = self.backbone
        return {
            "num_tokens": bb.num_low_res_tokens,
            "grid_size": bb.low_res_grid_size,
            "codebook_size": bb.low_res_codebook_size,
            "has_vqgan": self.low_res_vqgan is not None,
        }

    def _condition_inputs(self, x):
        bb = self.backbone
        ids = self._tokens_in_step(x, "low_res_", self.low_res_vqgan, bb.num_low_res_tokens, bb.low_res_grid_size)
        return {"low_res_token_ids": ids}

    # ------------------------------------------------------------- sampling
    @property
    def low_res_resolution(self):
        """(H, W) of the low-res images (needs `low_res_vqgan`)."""
        if self.low_res_vqgan is None:
            raise ValueError("Low-res images need a `low_res_vqgan` to tokenize them; this task has none.")
        return tuple(g * self.low_res_vqgan.factor for g in self.backbone.low_res_grid_size)

    def low_res_token_ids(self, low_res, n=None):
        """Low-res token ids `[n, h*w]` from ids `[n, h, w]`/`[n, h*w]` or from
        low-res uint8 images (tokenized by `low_res_vqgan`), checked."""
        arr = np.asarray(low_res)
        bb = self.backbone
        if arr.ndim == 4:
            expected = self.low_res_resolution
            if arr.shape[1:3] != expected or arr.shape[-1] != 3:
                raise ValueError(
                    f"Low-res images must be [n, {expected[0]}, {expected[1]}, 3]. Received shape {arr.shape}."
                )
            floats = self.low_res_vqgan.preprocess_images(arr) if arr.dtype == np.uint8 else arr.astype("float32")
            arr = np.asarray(self.low_res_vqgan.encode(floats))
        if arr.ndim not in (2, 3) or len(arr) == 0:
            raise ValueError(
                f"`low_res` must be token ids [n, {bb.low_res_grid_size[0]}, {bb.low_res_grid_size[1]}] "
                f"(or [n, {bb.num_low_res_tokens}]) or low-res images [n, H, W, 3]. Received shape {arr.shape}."
            )
        arr = arr.reshape(len(arr), -1)
        if n is not None and len(arr) != n:
            raise ValueError(f"`low_res` must have one entry per image/prompt ({n}). Received {len(arr)}.")
        if arr.shape[1] != bb.num_low_res_tokens:
            raise ValueError(
                f"`low_res` token ids must have {bb.num_low_res_tokens} tokens per example (grid "
                f"{bb.low_res_grid_size[0]}x{bb.low_res_grid_size[1]}). Received {arr.shape[1]}."
            )
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"`low_res` token ids must be integers. Received dtype {arr.dtype}.")
        if arr.min() < 0 or arr.max() >= bb.low_res_codebook_size:
            raise ValueError(
                f"`low_res` token ids must lie in [0, {bb.low_res_codebook_size - 1}]. "
                f"Received values in [{arr.min()}, {arr.max()}]."
            )
        return arr.astype("int32")

    def upsample(self, low_res, prompts, num_steps=None, **kwargs):
        """High-res images from low-res tokens (or images) and prompts.

        Args:
            low_res: the base model's token ids `[n, h, w]` (or `[n, h*w]`),
                or low-res uint8 images `[n, H, W, 3]` (needs `low_res_vqgan`).
            prompts: str (for all) or list of n str (or precomputed text
                embeddings, as in `generate`).
            num_steps: decoding steps (default: `sampling_defaults`, else 8,
                the paper's for super-res).
            **kwargs: any `generate` argument (guidance, seed, ...).

        Returns:
            as `generate`: uint8 high-res images, or a dict with tokens.

        Example:
        ```python
        images = sr.upsample(base_tokens, ["a red circle"] * len(base_tokens), seed=0)
        ```
        """
        low = np.asarray(low_res)
        n = len(low) if low.ndim >= 2 else None
        if isinstance(prompts, str) and n is not None:
            prompts = [prompts] * n
        ids = self.low_res_token_ids(low_res)
        return MuseTextToImage.generate(self, prompts, num_steps=num_steps, conditions=[ids], **kwargs)

    def generate(self, prompts, low_res=None, num_steps=None, **kwargs):
        """`upsample(low_res, prompts)`: the super-res model needs the low-res tokens."""
        if low_res is None:
            raise ValueError(
                "MuseSuperResolution generates high-res tokens from low-res ones: pass `low_res` "
                "(the base model's token ids or low-res images), or use `upsample(low_res, prompts)`."
            )
        return self.upsample(low_res, prompts, num_steps=num_steps, **kwargs)

    def _image_conditions(self, images, kwargs, n):
        # Editing at high res: the low-res tokens given (e.g. the base model's
        # inpainting of the same region, paper §3.3), or by default the
        # image's own, from a box-filtered low-res copy.
        low_res = kwargs.pop("low_res", None)
        if low_res is None:
            if images is None:
                raise ValueError(
                    "Outpainting with the super-res model needs `low_res`: the low-res tokens of "
                    "the extended scene (outpaint with the base model first)."
                )
            images = np.asarray(images)
            if images.dtype != np.uint8:
                images = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
            low_res = resize_images(images, self.low_res_resolution, resample="box")
        return [self.low_res_token_ids(low_res, n)]
