"""Generation, inpainting, outpainting and mask-free editing for `MuseTextToImage`.

Every use is one compiled program per shape (`generation_step`): text encoder,
cross-attention keys/values computed once, the sampling loop (iterative
parallel decoding, or the editing loop) with conditional and unconditional
(or negative-prompt) passes as one doubled batch, and the VQGAN decoder.
Seeds, guidance scales and temperatures are inputs of that program, so
changing them does not recompile.
"""

import keras
import numpy as np
from keras import ops

from keras_muse import backend as muse_backend
from keras_muse.backend import random as muse_random
from keras_muse.models.text.text_preprocessor import UNCONDITIONAL_PROMPT
from keras_muse.samplers.guidance import GUIDANCE_SCHEDULES
from keras_muse.samplers.guidance import guidance_weight
from keras_muse.samplers.guidance import guide_logits
from keras_muse.samplers.mask_free_editing import resample_random_tokens
from keras_muse.samplers.parallel_decoding import parallel_decode

OUTPAINT_DIRECTIONS = ("left", "right", "top", "bottom")


# What `generate` uses for an argument left as None when the task's
# `sampling_defaults` do not set it either.
BUILTIN_SAMPLING = {
    "num_steps": 24,
    "guidance_scale": 3.0,
    "guidance_schedule": "linear",
    "temperature": 1.0,
    "choice_temperature": 4.5,
}


def check_sampling_defaults(defaults):
    """Validates a task's `sampling_defaults` dict; returns a plain copy."""
    if defaults is None:
        return {}
    if not isinstance(defaults, dict):
        raise ValueError(f"`sampling_defaults` must be a dict or None. Received: {defaults!r}")
    unknown = sorted(set(defaults) - set(BUILTIN_SAMPLING))
    if unknown:
        raise ValueError(
            f"`sampling_defaults` may set {sorted(BUILTIN_SAMPLING)}. Received unknown keys: {unknown}"
        )
    out = dict(defaults)
    if "num_steps" in out:
        out["num_steps"] = _positive_int("sampling_defaults['num_steps']", out["num_steps"])
    for key in ("guidance_scale", "temperature", "choice_temperature"):
        if key in out:
            value = out[key]
            low_ok = value >= 0 if key != "temperature" else value > 0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or not low_ok:
                bound = "> 0" if key == "temperature" else ">= 0"
                raise ValueError(f"`sampling_defaults['{key}']` must be a finite number {bound}. Received: {value!r}")
            out[key] = float(value)
    if "guidance_schedule" in out and out["guidance_schedule"] not in GUIDANCE_SCHEDULES:
        raise ValueError(
            f"`sampling_defaults['guidance_schedule']` must be one of {GUIDANCE_SCHEDULES}. "
            f"Received: {out['guidance_schedule']!r}"
        )
    return out


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")
    return int(value)


class MuseGenerationMixin:
    """`generate`, `inpaint`, `outpaint` and `edit` (needs `backbone`,
    `text_encoder`/`preprocessor` or precomputed embeddings, and `vqgan` for
    images)."""

    # ----------------------------------------------------------- the program
    def generation_step(self, text_inputs, text_padding_mask, null_inputs, null_padding_mask,
                        token_ids, token_mask, seed, guidance_scale, temperature, choice_temperature,
                        *conditions, mode, num_steps, use_guidance, guidance_schedule, top_k, top_p,
                        return_history, from_embeddings, edit_fraction=0.08, single_position_null=False):
        """Traceable: prompts' token ids (or embeddings) + an initial token
        grid -> `{"token_ids", "images", "history"}`. `mode` "decode" fills
        the `token_mask` positions by parallel decoding; "edit" runs
        `num_steps` rounds of mask-free editing over them. `conditions` are
        the backbone's extra per-example inputs (the super-res model's
        low-res token ids), shared by the conditional and unconditional
        halves of the guided batch. `single_position_null`: every
        unconditional (negative) prompt has one real position (the empty
        prompt does), so that half's cross-attention is a constant computed
        once (`MuseBackbone.conditioning_key_values`)."""
        self._generate_traces += 1
        backbone = self.backbone
        batch = text_inputs.shape[0]
        if use_guidance:
            text_inputs = ops.concatenate([text_inputs, null_inputs], axis=0)
            text_padding_mask = ops.concatenate([text_padding_mask, null_padding_mask], axis=0)
        text_padding_mask = ops.cast(text_padding_mask, "bool")
        if from_embeddings:
            embeddings = ops.cast(text_inputs, backbone.compute_dtype)
        else:
            embeddings = self.text_encoder(
                {"token_ids": text_inputs, "padding_mask": ops.cast(text_padding_mask, "int32")},
                training=False,
            )
        if use_guidance:
            conditions = [ops.concatenate([c, c], axis=0) for c in conditions]
        # Keys/values of the context for every layer, once per generation.
        single = {"single_position_rows": batch} if use_guidance and single_position_null else {}
        key_values, context_mask = backbone.conditioning_key_values(
            embeddings, text_padding_mask, *conditions, **single
        )

        def logits_fn(ids, step):
            if not use_guidance:
                return backbone.logits_step(ids, key_values, context_mask)
            # Guidance on the head features, then one half-size output
            # projection: exact, as the logits are linear in the features.
            features = backbone.features_step(ops.concatenate([ids, ids], axis=0), key_values, context_mask)
            weight = guidance_weight(guidance_scale, step, num_steps, guidance_schedule)
            features = ops.cast(features, "float32")
            guided = guide_logits(features[:batch], features[batch:], weight)
            return backbone.token_logits(ops.cast(guided, backbone.compute_dtype))

        history = None
        if mode == "edit":
            ids = resample_random_tokens(
                logits_fn, token_ids, seed, num_steps, edit_fraction, backbone.mask_token_id,
                temperature=temperature, top_k=top_k, top_p=top_p, editable_mask=token_mask,
            )
        else:
            result = parallel_decode(
                logits_fn, token_ids, token_mask, seed, num_steps, backbone.mask_token_id,
                temperature=temperature, top_k=top_k, top_p=top_p,
                choice_temperature=choice_temperature, return_history=return_history,
            )
            ids, history = result if return_history else (result, None)
        out = {"token_ids": ids}
        if history is not None:
            out["history"] = history
        if self.vqgan is not None:
            out["images"] = self.vqgan.decode_step(ops.reshape(ids, (batch, *backbone.grid_size)))
        return out

    def _generation_function(self, **static):
        key = tuple(sorted(static.items()))
        cache = self.__dict__.setdefault("_generate_functions", {})
        if key not in cache:
            cache[key] = muse_backend.compile_function(
                self, lambda *args: self.generation_step(*args, **static)
            )
        return cache[key]

    # ---------------------------------------------------------- user methods
    builtin_sampling = BUILTIN_SAMPLING

    def sampling_setting(self, name, value=None):
        """`value`, or when None the task's `sampling_defaults[name]`, or
        the built-in default (`builtin_sampling`)."""
        if value is not None:
            return value
        defaults = getattr(self, "sampling_defaults", None) or {}
        return defaults.get(name, self.builtin_sampling[name])

    def generate(self, prompts, negative_prompts=None, num_steps=None, guidance_scale=None,
                 guidance_schedule=None, temperature=None, top_k=None, top_p=None,
                 choice_temperature=None, seed=None, batch_size=None, return_tokens=False,
                 return_history=False, verbose=None, conditions=()):
        """Generates images from prompts (paper §2.7, §2.8).

        Args:
            prompts: str or list of str; or precomputed text embeddings, a
                dict with "text_embeddings" `[n, L, D]`, "text_padding_mask"
                `[n, L]` and optionally "negative_text_embeddings" /
                "negative_text_padding_mask" (default: the empty prompt's,
                from the text encoder or `compile(unconditional_text_embeddings=...)`).
            negative_prompts: None, a str (for every prompt) or a list: their
                logits replace the unconditional ones in guidance.
            num_steps: decoding steps T (24 for the base model, the paper's).
            guidance_scale: t of ℓ = (1+t)·ℓ_cond − t·ℓ_uncond (3.0); 0
                turns guidance (and the doubled batch) off unless negative
                prompts are given.
            guidance_schedule: "linear" (t ramps up over the steps, the
                paper's) or "constant".
            temperature: sampling temperature (> 0; 1.0).
            top_k, top_p: optional filters of the sampling distribution.
            choice_temperature: τ of the confidence noise (annealed to 0; 4.5).
                These five, left as None, take the task's
                `sampling_defaults` (saved with its preset: the settings
                its recipe found best) or the defaults in brackets.
            seed: int or None; the same seed gives the same images.
            batch_size: prompts per compiled call (default: all, up to 8).
            return_tokens: also return the int32 token grids `[n, h, w]`.
            return_history: also return the grids after every step,
                `[n, T, h, w]` ([MASK] id where still masked).
            verbose: progress bar over batches (default: when > 1 batch).
            conditions: the backbone's extra per-example inputs (the
                super-res model's low-res token ids; `upsample` passes them).

        Returns:
            uint8 images `[n, H, W, 3]`, or a dict with "images",
            "token_ids" (and "history") when tokens or history are asked for
            or when there is no VQGAN.

        Example:
        ```python
        images = task.generate(["a red circle above a blue square"] * 4, seed=0)
        ```
        """
        setting = self.sampling_setting
        num_steps, guidance_scale = setting("num_steps", num_steps), setting("guidance_scale", guidance_scale)
        guidance_schedule = setting("guidance_schedule", guidance_schedule)
        temperature = setting("temperature", temperature)
        choice_temperature = setting("choice_temperature", choice_temperature)
        text, negative, has_negative, from_embeddings = self._text_inputs(prompts, negative_prompts)
        n = len(text[0])
        shape = (n, self.backbone.num_tokens)
        return self._run(
            text, negative, np.zeros(shape, "int32"), np.ones(shape, bool), mode="decode",
            num_steps=num_steps, guidance_scale=guidance_scale, use_guidance=bool(guidance_scale) or has_negative,
            guidance_schedule=guidance_schedule, temperature=temperature, top_k=top_k, top_p=top_p,
            choice_temperature=choice_temperature, seed=seed, batch_size=batch_size,
            return_tokens=return_tokens, return_history=return_history, verbose=verbose,
            from_embeddings=from_embeddings, conditions=conditions,
        )

    def inpaint(self, images, masks, prompts, negative_prompts=None, num_steps=12, guidance_scale=3.0,
                seed=None, **kwargs):
        """Regenerates the masked region of images, conditioned on the rest
        and the prompts (paper §3.3).

        Args:
            images: uint8 `[n, H, W, 3]` (or floats in [-1, 1]), H and W the
                model's resolution.
            masks: `[n, H, W]` (or `[H, W]` for all) binary pixel masks
                (bool or 0/1), True = regenerate. A token is regenerated when any pixel of
                its patch is masked; the others are kept exactly.
            prompts: str or list of str.
            num_steps: decoding steps over the masked tokens (12).
            **kwargs: any `generate` sampling argument.

        Example:
        ```python
        mask = np.zeros((64, 64), bool); mask[:, 32:] = True
        out = task.inpaint(images, mask, "a yellow star on the right", seed=0)
        ```
        """
        ids, images = self._image_tokens(images)
        token_mask = self._token_mask(masks, images.shape[:3])
        return self._edit_like(ids, token_mask, prompts, negative_prompts, "decode", num_steps,
                               guidance_scale, seed, kwargs, images=images)

    def outpaint(self, images, prompts, direction="right", extent=0.25, negative_prompts=None,
                 num_steps=12, guidance_scale=3.0, seed=None, **kwargs):
        """Extends images beyond a border (paper §3.3): the image is shifted
        away from `direction` by `extent` (a fraction of the side, or pixels
        if an int > 1, rounded to whole tokens) and the uncovered strip is
        generated, conditioned on the visible part and the prompts.

        Example:
        ```python
        wider = task.outpaint(images, "a red circle on the right", direction="right", extent=0.25)
        ```
        """
        if direction not in OUTPAINT_DIRECTIONS:
            raise ValueError(f"`direction` must be one of {OUTPAINT_DIRECTIONS}. Received: {direction!r}")
        ids, images = self._image_tokens(images)
        n, h, w = ids.shape
        side = w if direction in ("left", "right") else h
        factor = images.shape[2] // w
        if isinstance(extent, (int, np.integer)) and not isinstance(extent, bool) and extent > 1:
            tokens = int(round(extent / factor))
        elif isinstance(extent, (int, float)) and 0 < extent < 1:
            tokens = int(round(extent * side))
        else:
            raise ValueError(
                "`extent` must be a fraction in (0, 1) or a number of pixels > 1. "
                f"Received: extent={extent!r}"
            )
        if not 1 <= tokens < side:
            raise ValueError(
                f"`extent` covers {tokens} token rows/columns of {side}: it must cover at least one "
                "and leave at least one visible."
            )
        grid = np.zeros_like(ids)
        mask = np.zeros(ids.shape, bool)
        if direction == "right":
            grid[:, :, : w - tokens], mask[:, :, w - tokens :] = ids[:, :, tokens:], True
        elif direction == "left":
            grid[:, :, tokens:], mask[:, :, :tokens] = ids[:, :, : w - tokens], True
        elif direction == "bottom":
            grid[:, : h - tokens], mask[:, h - tokens :] = ids[:, tokens:], True
        else:
            grid[:, tokens:], mask[:, :tokens] = ids[:, : h - tokens], True
        return self._edit_like(grid, mask.reshape(n, -1), prompts, negative_prompts, "decode",
                               num_steps, guidance_scale, seed, kwargs)

    def edit(self, images, prompts, iterations=100, fraction=0.08, guidance_scale=4.0, top_k=3,
             negative_prompts=None, masks=None, seed=None, **kwargs):
        """Mask-free editing (paper §3.3): `iterations` rounds, each
        re-masking a random `fraction` of the image's tokens and resampling
        them with the edit prompt (the paper's 100 x 8 %, guidance 4,
        top-k 3). `masks` optionally restricts which pixels may change.

        Example:
        ```python
        edited = task.edit(images, "a blue circle on the left", seed=0)
        ```
        """
        if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"`fraction` must be in (0, 1]. Received: fraction={fraction!r}")
        ids, images = self._image_tokens(images)
        n = len(ids)
        token_mask = (np.ones((n, self.backbone.num_tokens), bool) if masks is None
                      else self._token_mask(masks, images.shape[:3]))
        kwargs.update(top_k=top_k, edit_fraction=float(fraction), guidance_schedule="constant")
        return self._edit_like(ids, token_mask, prompts, negative_prompts, "edit",
                               _positive_int("iterations", iterations), guidance_scale, seed, kwargs,
                               images=images)

    # --------------------------------------------------------------- helpers
    def _edit_like(self, ids, token_mask, prompts, negative_prompts, mode, num_steps, guidance_scale,
                   seed, kwargs, images=None):
        n = len(ids)
        if isinstance(prompts, str):
            prompts = [prompts] * n
        if isinstance(negative_prompts, str):
            negative_prompts = [negative_prompts] * n
        text, negative, has_negative, from_embeddings = self._text_inputs(prompts, negative_prompts)
        if len(text[0]) != n:
            raise ValueError(f"`prompts` must be one string or one per image ({n}). Received {len(text[0])}.")
        kwargs.setdefault("guidance_schedule", "linear")
        kwargs["conditions"] = self._image_conditions(images, kwargs, n)
        return self._run(
            text, negative, ids.reshape(n, -1), token_mask, mode=mode, num_steps=num_steps,
            guidance_scale=guidance_scale, use_guidance=bool(guidance_scale) or has_negative,
            seed=seed, from_embeddings=from_embeddings, **kwargs,
        )

    def _image_conditions(self, images, kwargs, n):
        """The backbone's extra inputs for editing `images` (none for the
        base model; the super-res model's low-res token ids)."""
        return []

    def _image_tokens(self, images):
        if self.vqgan is None:
            raise ValueError("Editing images needs a `vqgan` to tokenize them; this task has none.")
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        expected = tuple(g * self.vqgan.factor for g in self.backbone.grid_size)
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1:3] != expected or len(images) == 0:
            raise ValueError(
                f"`images` must be [n >= 1, {expected[0]}, {expected[1]}, 3] (the model's resolution). "
                f"Received shape {images.shape}."
            )
        floats = self.vqgan.preprocess_images(images) if images.dtype == np.uint8 else images.astype("float32")
        ids = self.vqgan.encode(floats)
        return np.asarray(ids, "int32"), images

    def _token_mask(self, masks, image_shape):
        n, height, width = image_shape
        masks = np.asarray(masks)
        if masks.ndim == 2:
            masks = np.broadcast_to(masks, (n, *masks.shape))
        if masks.shape != (n, height, width):
            raise ValueError(
                f"`masks` must be [{n}, {height}, {width}] or [{height}, {width}] pixel masks "
                f"(True = regenerate). Received shape {masks.shape}."
            )
        if masks.dtype != bool:
            values = masks.astype("float64")
            if not np.all(np.isfinite(values)):
                raise ValueError("`masks` contain NaN or inf.")
            if not np.all((values == 0) | (values == 1)):
                raise ValueError(
                    "`masks` must be binary: bool, or 0/1 values (1 = regenerate). Received values "
                    f"in [{values.min()}, {values.max()}]; threshold soft masks first."
                )
            masks = values == 1
        f = self.vqgan.factor
        h, w = height // f, width // f
        token_mask = masks.reshape(n, h, f, w, f).any(axis=(2, 4)).reshape(n, -1)
        if not token_mask.any(axis=1).all():
            raise ValueError("Every mask in `masks` must cover at least one pixel.")
        return token_mask

    def _text_inputs(self, prompts, negative_prompts):
        if isinstance(prompts, dict):
            text, negative = self._embedding_inputs(prompts, negative_prompts)
            return text, negative, "negative_text_embeddings" in prompts, True
        text, negative = self._prompt_inputs(prompts, negative_prompts)
        return text, negative, negative_prompts is not None, False

    def _run(self, text, negative, token_ids, token_mask, *, mode, num_steps, guidance_scale,
             use_guidance, guidance_schedule=None, temperature=None, top_k=None, top_p=None,
             choice_temperature=None, seed=None, batch_size=None, return_tokens=False,
             return_history=False, verbose=None, from_embeddings=False, edit_fraction=0.08,
             conditions=()):
        """Validates the sampling arguments, batches, calls the program."""
        guidance_schedule = self.sampling_setting("guidance_schedule", guidance_schedule)
        temperature = self.sampling_setting("temperature", temperature)
        choice_temperature = self.sampling_setting("choice_temperature", choice_temperature)
        num_steps = _positive_int("num_steps", num_steps)
        if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"`temperature` must be a number > 0. Received: temperature={temperature!r}")
        codebook = self.backbone.codebook_size
        if top_k is not None and not (isinstance(top_k, (int, np.integer)) and 1 <= top_k <= codebook):
            raise ValueError(f"`top_k` must be an int in [1, {codebook}] or None. Received: {top_k!r}")
        if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise ValueError(f"`top_p` must be a number in (0, 1] or None. Received: {top_p!r}")
        if guidance_scale is not None and not (
            isinstance(guidance_scale, (int, float)) and np.isfinite(guidance_scale)
        ):
            raise ValueError(f"`guidance_scale` must be a finite number or None. Received: {guidance_scale!r}")
        if guidance_scale is not None and guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be >= 0 (0 turns guidance off). Received: {guidance_scale!r}")
        if guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(
                f"`guidance_schedule` must be one of {GUIDANCE_SCHEDULES}. Received: {guidance_schedule!r}"
            )
        n = len(token_ids)
        batch_size = min(n, 8) if batch_size is None else batch_size
        batch_size = min(_positive_int("batch_size", batch_size), n)
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        # Static: whether the guided batch's second half sees one text
        # position per row (the empty prompt), which the base model's
        # cross-attention computes once instead of every step.
        single_position_null = bool(
            use_guidance and getattr(self.backbone, "single_position_guidance", False)
            and np.all(np.sum(np.asarray(negative[1], bool), axis=1) == 1)
        )
        fn = self._generation_function(
            mode=mode, num_steps=num_steps, use_guidance=bool(use_guidance),
            single_position_null=single_position_null,
            guidance_schedule=guidance_schedule, top_k=None if top_k is None else int(top_k),
            top_p=None if top_p is None else float(top_p), return_history=bool(return_history),
            from_embeddings=bool(from_embeddings), edit_fraction=float(edit_fraction),
        )
        columns = [*text, *negative, np.asarray(token_ids, "int32"), np.asarray(token_mask, bool),
                   *conditions]
        num_main = len(columns) - len(conditions)
        num_batches = -(-n // batch_size)
        progbar = None
        if verbose or (verbose is None and num_batches > 1):
            progbar = keras.utils.Progbar(num_batches, unit_name="batch")
        outputs = []
        for b in range(num_batches):
            parts = [c[b * batch_size : (b + 1) * batch_size] for c in columns]
            real = len(parts[0])
            if real < batch_size:
                # Pad with copies of the first row: the compiled shape stays.
                parts = [np.concatenate([p, np.repeat(p[:1], batch_size - real, 0)]) for p in parts]
            out = fn(*parts[:num_main], muse_random.make_seed(seed + b), np.float32(guidance_scale or 0.0),
                     np.float32(temperature), np.float32(choice_temperature), *parts[num_main:])
            out = {k: np.asarray(ops.convert_to_numpy(v)) for k, v in out.items()}
            outputs.append({k: (v[:, :real] if k == "history" else v[:real]) for k, v in out.items()})
            if progbar is not None:
                progbar.update(b + 1)
        h, w = self.backbone.grid_size
        result = {"token_ids": np.concatenate([o["token_ids"] for o in outputs]).reshape(n, h, w)}
        if return_history and mode == "decode":
            hist = np.concatenate([o["history"] for o in outputs], axis=1)
            result["history"] = hist.transpose(1, 0, 2).reshape(n, num_steps, h, w)
        if self.vqgan is not None:
            images = np.concatenate([o["images"] for o in outputs])
            result["images"] = self.vqgan.postprocess_images(images)
            if not (return_tokens or return_history):
                return result["images"]
        return result

    def _prompt_inputs(self, prompts, negative_prompts):
        """Prompts (and negative prompts) -> token ids and padding masks."""
        from keras_muse.models.text.text_preprocessor import standardize_prompts

        if self.text_encoder is None or self.preprocessor is None:
            raise ValueError(
                "Sampling from prompts needs a `text_encoder` with a preprocessor "
                "(or pass precomputed text embeddings as a dict)."
            )
        prompts = standardize_prompts(prompts)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("`prompts` must not be empty.")
        if negative_prompts is None:
            negative = [UNCONDITIONAL_PROMPT] * len(prompts)
        else:
            negative = standardize_prompts(negative_prompts, name="negative_prompts")
            negative = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
            if len(negative) != len(prompts):
                raise ValueError(
                    f"`negative_prompts` must be one string or one per prompt ({len(prompts)}). "
                    f"Received {len(negative)}."
                )

        def tokenize(texts):
            t = self.preprocessor(texts)
            return (np.asarray(ops.convert_to_numpy(t["token_ids"]), "int32"),
                    np.asarray(ops.convert_to_numpy(t["padding_mask"]), bool))

        return tokenize(prompts), tokenize(negative)

    def _embedding_inputs(self, inputs, negative_prompts):
        """A dict of precomputed text embeddings -> arrays, checked."""
        if negative_prompts is not None:
            raise ValueError(
                "With precomputed text embeddings, pass negative prompts as "
                "'negative_text_embeddings' in the dict, not `negative_prompts`."
            )
        keys = set(inputs)
        allowed = {"text_embeddings", "text_padding_mask", "negative_text_embeddings", "negative_text_padding_mask"}
        if not {"text_embeddings", "text_padding_mask"} <= keys or keys - allowed:
            raise ValueError(
                f"Precomputed inputs must be a dict with keys {sorted(allowed)} (the first two "
                f"required). Received keys: {sorted(keys)}"
            )
        emb = np.asarray(inputs["text_embeddings"], "float32")
        mask = np.asarray(inputs["text_padding_mask"], bool)
        d = self.backbone.text_dim
        if emb.ndim != 3 or emb.shape[0] == 0 or emb.shape[-1] != d or mask.shape != emb.shape[:2]:
            raise ValueError(
                f"`text_embeddings` must be [n >= 1, L, {d}] with `text_padding_mask` [n, L]. "
                f"Received shapes {emb.shape} and {mask.shape}."
            )
        if not np.all(np.isfinite(emb)):
            raise ValueError("`text_embeddings` contain NaN or inf.")
        if "negative_text_embeddings" in inputs:
            nemb = np.asarray(inputs["negative_text_embeddings"], "float32")
            nmask = np.asarray(inputs["negative_text_padding_mask"], bool)
        else:
            u_emb, u_mask = self.unconditional_text_embeddings()
            nemb, nmask = u_emb[None], u_mask[None]
        if nemb.shape[0] == 1:
            nemb, nmask = np.repeat(nemb, len(emb), 0), np.repeat(nmask, len(emb), 0)
        if nemb.shape != emb.shape or nmask.shape != mask.shape:
            raise ValueError(
                f"The negative (or unconditional) text embeddings must match the text "
                f"embeddings' shape {emb.shape} (or have batch 1). Received {nemb.shape}."
            )
        return (emb, mask), (nemb, nmask)
