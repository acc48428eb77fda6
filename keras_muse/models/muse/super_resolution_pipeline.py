"""Base -> super-res: the two-stage `generate`, `inpaint`, `outpaint` and `edit`.

When a `MuseTextToImage` holds a `super_resolution` task (paper §2.4), its
sampling methods run the base model at the low resolution, then the
super-res model (8 steps by default) conditioned on the base tokens, and
decode with the high-res tokenizer. Editing at the high resolution follows
§3.3: the low-res tokens are edited first, then the high-res ones
conditioned on them.
"""

import numpy as np

from keras_muse.utils.image_utils import resize_images


def _as_uint8(images):
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.round((images.astype("float32") + 1.0) * 127.5), 0, 255).astype(np.uint8)


class SuperResolutionPipelineMixin:
    """Two-stage sampling for a task with `self.super_resolution` (or None).

    Each method takes the base model's arguments plus
    `super_resolution_steps` (default: the super-res task's
    `sampling_defaults`, else 8; 0 skips the stage) and
    `super_resolution_guidance_scale` (default: the super-res task's
    `sampling_defaults`, else the base's). Sampler arguments left unset
    (temperature, ...) take each stage's own defaults.
    """

    @property
    def resolution(self):
        """(H, W) of the images `generate` returns."""
        if self._uses_super_resolution(1):
            return self.super_resolution.resolution
        if self.vqgan is None:
            raise ValueError("This task has no `vqgan`, so it makes tokens, not images.")
        return tuple(g * self.vqgan.factor for g in self.backbone.grid_size)

    def _uses_super_resolution(self, steps):
        return getattr(self, "super_resolution", None) is not None and (steps is None or bool(steps))

    def _super_resolution_settings(self, steps, guidance_scale, base_guidance_scale):
        sr = self.super_resolution
        if guidance_scale is None:
            guidance_scale = sr.sampling_defaults.get("guidance_scale", base_guidance_scale)
        return sr.sampling_setting("num_steps", steps), guidance_scale

    def _base_resolution(self):
        return tuple(g * self.vqgan.factor for g in self.backbone.grid_size)

    def _second_stage(self, base, prompts, negative_prompts, steps, guidance_scale, kwargs, method,
                      *args, **extra):
        """Runs `self.super_resolution.<method>` on the base result."""
        want_tokens = kwargs.get("return_tokens") or kwargs.get("return_history")
        sr_kwargs = {k: v for k, v in kwargs.items() if k not in ("return_history", "num_steps")}
        sr_kwargs["return_tokens"] = True
        out = getattr(self.super_resolution, method)(
            *args, prompts, negative_prompts=negative_prompts, num_steps=steps,
            guidance_scale=guidance_scale, low_res=base["token_ids"], **sr_kwargs, **extra,
        )
        if not want_tokens:
            return out["images"]
        out["low_res_token_ids"] = base["token_ids"]
        out["low_res_images"] = base.get("images")
        if "history" in base:
            out["low_res_history"] = base["history"]
        return out

    def generate(self, prompts, negative_prompts=None, num_steps=None, guidance_scale=None,
                 super_resolution_steps=None, super_resolution_guidance_scale=None, seed=None, **kwargs):
        """`MuseGenerationMixin.generate`, then super-res when attached.

        With a `super_resolution` model the images are high-res; with
        `return_tokens=True` the dict also holds "low_res_token_ids" and
        "low_res_images" (the base stage's).
        """
        if not self._uses_super_resolution(super_resolution_steps):
            return super().generate(prompts, negative_prompts=negative_prompts, num_steps=num_steps,
                                    guidance_scale=guidance_scale, seed=seed, **kwargs)
        base_kwargs = {k: v for k, v in kwargs.items() if k != "return_tokens"}
        base = super().generate(prompts, negative_prompts=negative_prompts, num_steps=num_steps,
                                guidance_scale=guidance_scale, seed=seed, return_tokens=True, **base_kwargs)
        base_guidance = self.sampling_setting("guidance_scale", guidance_scale)
        steps, sr_guidance = self._super_resolution_settings(
            super_resolution_steps, super_resolution_guidance_scale, base_guidance
        )
        kwargs.pop("top_k", None), kwargs.pop("top_p", None)
        return self._second_stage(base, prompts, negative_prompts, steps, sr_guidance,
                                  dict(kwargs, seed=seed), "generate")

    def inpaint(self, images, masks, prompts, negative_prompts=None, num_steps=12, guidance_scale=3.0,
                seed=None, super_resolution_steps=None, super_resolution_guidance_scale=None, **kwargs):
        """`MuseGenerationMixin.inpaint`; high-res images (with a super-res
        model) are inpainted at low res first, then at high res conditioned
        on the new low-res tokens (paper §3.3)."""
        images = np.asarray(images)
        if not self._is_high_res(images, super_resolution_steps):
            return super().inpaint(images, masks, prompts, negative_prompts=negative_prompts,
                                   num_steps=num_steps, guidance_scale=guidance_scale, seed=seed, **kwargs)
        low_images, low_masks = self._low_res_copy(images, masks)
        base = super().inpaint(low_images, low_masks, prompts, negative_prompts=negative_prompts,
                               num_steps=num_steps, guidance_scale=guidance_scale, seed=seed,
                               return_tokens=True, **{k: v for k, v in kwargs.items() if k != "return_tokens"})
        steps, sr_guidance = self._super_resolution_settings(
            super_resolution_steps, super_resolution_guidance_scale, guidance_scale
        )
        return self._second_stage(base, prompts, negative_prompts, steps, sr_guidance,
                                  dict(kwargs, seed=seed), "inpaint", images, masks)

    def outpaint(self, images, prompts, direction="right", extent=0.25, negative_prompts=None,
                 num_steps=12, guidance_scale=3.0, seed=None, super_resolution_steps=None,
                 super_resolution_guidance_scale=None, **kwargs):
        """`MuseGenerationMixin.outpaint`, in two stages for high-res images."""
        images = np.asarray(images)
        if not self._is_high_res(images, super_resolution_steps):
            return super().outpaint(images, prompts, direction=direction, extent=extent,
                                    negative_prompts=negative_prompts, num_steps=num_steps,
                                    guidance_scale=guidance_scale, seed=seed, **kwargs)
        low_images, _ = self._low_res_copy(images, None)
        ratio = images.shape[2] // low_images.shape[2]
        low_extent = extent / ratio if isinstance(extent, (int, np.integer)) and extent > 1 else extent
        if isinstance(extent, (int, np.integer)) and extent > 1:
            low_extent = max(int(round(low_extent)), 2)
        base = super().outpaint(low_images, prompts, direction=direction, extent=low_extent,
                                negative_prompts=negative_prompts, num_steps=num_steps,
                                guidance_scale=guidance_scale, seed=seed, return_tokens=True,
                                **{k: v for k, v in kwargs.items() if k != "return_tokens"})
        steps, sr_guidance = self._super_resolution_settings(
            super_resolution_steps, super_resolution_guidance_scale, guidance_scale
        )
        return self._second_stage(base, prompts, negative_prompts, steps, sr_guidance,
                                  dict(kwargs, seed=seed), "outpaint", images,
                                  direction=direction, extent=extent)

    def edit(self, images, prompts, iterations=100, fraction=0.08, guidance_scale=4.0, top_k=3,
             negative_prompts=None, masks=None, seed=None, super_resolution_steps=None,
             super_resolution_guidance_scale=None, **kwargs):
        """`MuseGenerationMixin.edit`; for high-res images the low-res tokens
        are edited, then super-res runs with the edit prompt (paper §3.3)."""
        images = np.asarray(images)
        if not self._is_high_res(images, super_resolution_steps):
            return super().edit(images, prompts, iterations=iterations, fraction=fraction,
                                guidance_scale=guidance_scale, top_k=top_k, negative_prompts=negative_prompts,
                                masks=masks, seed=seed, **kwargs)
        low_images, low_masks = self._low_res_copy(images, masks)
        base = super().edit(low_images, prompts, iterations=iterations, fraction=fraction,
                            guidance_scale=guidance_scale, top_k=top_k, negative_prompts=negative_prompts,
                            masks=low_masks, seed=seed, return_tokens=True,
                            **{k: v for k, v in kwargs.items() if k != "return_tokens"})
        steps, sr_guidance = self._super_resolution_settings(
            super_resolution_steps, super_resolution_guidance_scale, guidance_scale
        )
        n = len(base["token_ids"])
        prompts = [prompts] * n if isinstance(prompts, str) else prompts
        return self._second_stage(base, prompts, negative_prompts, steps, sr_guidance,
                                  dict(kwargs, seed=seed), "generate")

    # --------------------------------------------------------------- helpers
    def _is_high_res(self, images, steps):
        if not self._uses_super_resolution(steps):
            return False
        shape = images.shape[-3:-1] if images.ndim >= 3 else None
        return shape == tuple(self.super_resolution.resolution)

    def _low_res_copy(self, images, masks):
        """Box-filtered low-res images and any-pooled masks."""
        images = images[None] if images.ndim == 3 else images
        high, low = self.super_resolution.resolution, self._base_resolution()
        if high[0] % low[0] or high[1] % low[1]:
            raise ValueError(
                f"Two-stage editing needs the high resolution {high} to be a multiple of the "
                f"base resolution {low}."
            )
        low_images = resize_images(_as_uint8(images), low, resample="box")
        if masks is None:
            return low_images, None
        masks = np.asarray(masks)
        n = len(images)
        if masks.ndim == 2:
            masks = np.broadcast_to(masks, (n, *masks.shape))
        if masks.shape != (n, *high):
            raise ValueError(
                f"`masks` must be [{n}, {high[0]}, {high[1]}] or [{high[0]}, {high[1]}] pixel masks "
                f"(True = regenerate). Received shape {masks.shape}."
            )
        rh, rw = high[0] // low[0], high[1] // low[1]
        values = masks.astype("float64")
        if not np.all((values == 0) | (values == 1)):
            raise ValueError("`masks` must be binary: bool, or 0/1 values (1 = regenerate).")
        low_masks = (values == 1).reshape(n, low[0], rh, low[1], rw).any(axis=(2, 4))
        return low_images, low_masks
