"""Classifier-free guidance (Muse §2.7) and its scale schedule."""

from keras import ops

GUIDANCE_SCHEDULES = ("linear", "constant")


def guidance_weight(scale, step, num_steps, schedule="linear"):
    """t at decoding step `step` (0-based): `scale·(step+1)/T` ("linear",
    the paper's: guidance grows over the steps) or `scale` ("constant")."""
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"`guidance_schedule` must be one of {GUIDANCE_SCHEDULES}. Received: {schedule!r}")
    scale = ops.cast(scale, "float32")
    if schedule == "constant":
        return scale
    return scale * (ops.cast(step, "float32") + 1.0) / float(num_steps)


def guide_logits(conditional, unconditional, weight):
    """ℓ = (1 + t)·ℓ_cond − t·ℓ_uncond. With a negative prompt, its logits
    are `unconditional`."""
    return (1.0 + weight) * conditional - weight * unconditional
