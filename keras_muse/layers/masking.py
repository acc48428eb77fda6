"""Masking schedules and random token masks (Muse §2.6, MaskGIT §3.2).

A mask schedule γ maps progress t ∈ [0, 1] to the fraction of image tokens
that are still masked: γ(0) = 1 (everything masked), γ(1) = 0 (nothing
masked), non-increasing in between. The same γ serves two purposes:

- training: each example's masking rate is r = γ(u), u ~ U(0, 1). For the
  cosine schedule r follows the truncated arccos distribution of the paper,
  p(r) = (2/π)(1 − r²)^(−1/2), mean 2/π ≈ 0.64; ceil(r·N) positions, chosen
  uniformly at random, are replaced by [MASK].
- sampling: after decoding step k (0-based) of T, floor(N·γ((k+1)/T)) tokens
  are still masked (`scheduled_mask_count`).

Everything here is written with `keras.ops` / `keras.random`, takes explicit
seeds and has no Python control flow on tensor values, so it can run inside a
jit-compiled train step or sampler loop on JAX and TensorFlow.
"""

import math
import numbers

import keras
from keras import ops

SCHEDULES = ("cosine", "linear", "square", "arccos")

# Float32 evaluates e.g. 256·cos(π/3) as 127.99999 although it is 128 exactly;
# a margin of 1e-6 on γ (≈ 16 float32 half-ulps of 1) makes floor() agree
# with exact arithmetic on every backend, and both code paths below use it.
_COUNT_EPSILON = 1e-6


# Python and NumPy scalars are static values (validated, computed in float64);
# tensors and arrays, possibly traced, go through keras.ops.
def _is_python_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_python_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_int(name, value, minimum):
    """Validates `value` when it is a Python int; tensors pass through."""
    if _is_python_int(value):
        if value < minimum:
            raise ValueError(
                f"`{name}` must be an int >= {minimum}. Received: {name}={value}"
            )
        return
    if _is_python_number(value) or isinstance(value, (str, bool)) or value is None:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}"
        )


# Each schedule has a Python-float form (exact, float64, usable while building
# static shapes) and a tensor form (traceable); `mask_ratio_schedule` clips t
# and γ to [0, 1] so that rounding never yields a rate outside it (or a NaN
# from arccos).
def _cosine(t, python):
    # sin(π/2·(1 − t)) = cos(π/2·t), written so that both endpoints are exact
    # (sin(0) = 0, whereas cos(π/2) evaluates to 6e-17).
    if python:
        return math.sin(0.5 * math.pi * (1.0 - t))
    return ops.sin((0.5 * math.pi) * (1.0 - t))


def _linear(t, python):
    return 1.0 - t


def _square(t, python):
    return 1.0 - t * t


def _arccos(t, python):
    if python:
        return (2.0 / math.pi) * math.acos(t)
    return (2.0 / math.pi) * ops.arccos(t)


_SCHEDULE_FNS = {
    "cosine": _cosine,
    "linear": _linear,
    "square": _square,
    "arccos": _arccos,
}


def mask_ratio_schedule(schedule):
    """Returns the mask schedule γ(t): fraction of tokens still masked.

    Schedules (all give 1 at t=0, 0 at t=1 and are non-increasing):
    - `"cosine"`: γ(t) = cos(π/2·t), the Muse / MaskGIT default. Sampling r =
      γ(u) with u ~ U(0, 1) gives the paper's truncated arccos distribution.
    - `"linear"`: γ(t) = 1 − t.
    - `"square"`: γ(t) = 1 − t².
    - `"arccos"`: γ(t) = (2/π)·arccos(t), the inverse function of the cosine
      schedule. Like cosine it is concave (keeps many tokens masked early and
      decodes fast at the end, which MaskGIT found to work best) and its
      training rates have the same mean, 2/π; it is more extreme near t=1.

    The returned function takes a Python number (returns a Python float, in
    float64) or a tensor (returns a float32 tensor). t is clipped to [0, 1].

    Args:
        schedule: one of `SCHEDULES`, or a callable t -> γ(t), returned as is.

    Example:
    ```python
    gamma = mask_ratio_schedule("cosine")
    gamma(0.5)                               # 0.7071...
    gamma(keras.ops.convert_to_tensor([0.0, 1.0]))  # [1., 0.]
    ```
    """
    if callable(schedule):
        return schedule
    if schedule not in _SCHEDULE_FNS:
        raise ValueError(
            f"`schedule` must be one of {SCHEDULES} or a callable. "
            f"Received: schedule={schedule!r}"
        )
    fn = _SCHEDULE_FNS[schedule]

    def gamma(t):
        if _is_python_number(t):
            t = min(max(float(t), 0.0), 1.0)
            return min(max(fn(t, True), 0.0), 1.0)
        t = ops.clip(ops.cast(t, "float32"), 0.0, 1.0)
        return ops.clip(fn(t, False), 0.0, 1.0)

    gamma.__name__ = f"{schedule}_schedule"
    return gamma


def sample_mask_rates(batch_size, schedule="cosine", seed=None):
    """Draws one masking rate per example: r = γ(u), u ~ U(0, 1).

    For the cosine schedule r has density p(r) = (2/π)(1 − r²)^(−1/2) on
    [0, 1] (Muse §2.6), mean 2/π ≈ 0.6366.

    Args:
        batch_size: int (or scalar int tensor), number of rates.
        schedule: a name from `SCHEDULES` or a callable.
        seed: int, `keras.random.SeedGenerator` or None (any seed
            `keras.random.uniform` accepts).

    Returns:
        float32 tensor of shape `(batch_size,)` with values in [0, 1].

    Example:
    ```python
    rates = sample_mask_rates(8, seed=keras.random.SeedGenerator(0))
    ```
    """
    _check_int("batch_size", batch_size, 1)
    gamma = mask_ratio_schedule(schedule)
    u = keras.random.uniform((batch_size,), dtype="float32", seed=seed)
    return ops.cast(gamma(u), "float32")


def _mask_from_rates(rates, noise, num_tokens):
    # ceil(r·N) clipped to [1, N]: every example keeps at least one target to
    # learn from, even when r is tiny.
    counts = ops.ceil(rates * float(num_tokens))
    counts = ops.cast(ops.clip(counts, 1.0, float(num_tokens)), "int32")
    # The rank of i.i.d. noise is a uniformly random permutation; masking the
    # ranks below the count selects exactly `count` positions even when two
    # noise values tie (which a threshold on the noise would not).
    ranks = ops.argsort(ops.argsort(noise, axis=-1), axis=-1)
    return ops.less(ops.cast(ranks, "int32"), counts[:, None])


def sample_token_mask(
    batch_size,
    num_tokens,
    schedule="cosine",
    seed=None,
    rates=None,
    return_rates=False,
):
    """Samples a boolean training mask: True marks a position to replace.

    Each example draws a rate r = γ(u) (see `sample_mask_rates`) and masks
    exactly ceil(r·N) positions, at least 1 and at most N, chosen uniformly at
    random. Rates and positions come from one uniform draw, so a single seed
    (int or `SeedGenerator`) determines the whole mask.

    Args:
        batch_size: int (or scalar int tensor).
        num_tokens: int, N, tokens per example (e.g. 256 for 16×16).
        schedule: a name from `SCHEDULES` or a callable.
        seed: int, `keras.random.SeedGenerator` or None.
        rates: optional fixed masking rates (a float or a `(batch_size,)`
            tensor) used instead of sampling from the schedule, e.g. the
            constant 8 % of mask-free editing.
        return_rates: also return the float32 `(batch_size,)` rates.

    Returns:
        bool tensor `(batch_size, num_tokens)`, or `(mask, rates)`.

    Example:
    ```python
    seed = keras.random.SeedGenerator(42)
    mask, rates = sample_token_mask(4, 256, seed=seed, return_rates=True)
    keras.ops.sum(mask, axis=1)  # == clip(ceil(rates * 256), 1, 256)
    ```
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("num_tokens", num_tokens, 1)
    if not _is_python_int(num_tokens):
        raise ValueError(
            "`num_tokens` must be an int, not a tensor (it fixes the mask's shape). "
            f"Received: num_tokens={num_tokens!r}"
        )
    gamma = mask_ratio_schedule(schedule)
    if rates is None:
        noise = keras.random.uniform(
            (batch_size, num_tokens + 1), dtype="float32", seed=seed
        )
        # Column 0 is the rate's u; the other, independent, columns rank the
        # positions.
        rates = ops.cast(gamma(noise[:, 0]), "float32")
        noise = noise[:, 1:]
    else:
        if _is_python_number(rates) and not 0.0 <= rates <= 1.0:
            raise ValueError(
                f"`rates` must lie in [0, 1]. Received: rates={rates}"
            )
        noise = keras.random.uniform(
            (batch_size, num_tokens), dtype="float32", seed=seed
        )
        rates = ops.cast(rates, "float32") * ops.ones((batch_size,), "float32")
    mask = _mask_from_rates(rates, noise, num_tokens)
    if return_rates:
        return mask, rates
    return mask


def sample_condition_dropout(batch_size, rate, seed=None):
    """Which examples train with the unconditional prompt (Muse §2.7).

    Each example is dropped independently with probability `rate` (0.1 in
    the paper), which is what classifier-free guidance needs at sampling.

    Args:
        batch_size: int (or scalar int tensor).
        rate: float in [0, 1].
        seed: int, `keras.random.SeedGenerator` or None.

    Returns:
        bool tensor `(batch_size,)`, True = use the unconditional prompt.

    Example:
    ```python
    drop = sample_condition_dropout(512, 0.1, seed=keras.random.SeedGenerator(0))
    ```
    """
    _check_int("batch_size", batch_size, 1)
    if not _is_python_number(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"`rate` must be a number in [0, 1]. Received: rate={rate!r}")
    return ops.less(keras.random.uniform((batch_size,), dtype="float32", seed=seed), rate)


def apply_mask(token_ids, mask, mask_token_id):
    """Replaces the ids where `mask` is true by `mask_token_id`.

    Args:
        token_ids: int tensor of any shape.
        mask: bool (or 0/1) tensor of the same shape.
        mask_token_id: int, the [MASK] id (usually `codebook_size`).

    Example:
    ```python
    ids = keras.ops.convert_to_tensor([[3, 4, 5]])
    apply_mask(ids, keras.ops.convert_to_tensor([[True, False, True]]), 8)
    # [[8, 4, 8]]
    ```
    """
    token_ids = ops.convert_to_tensor(token_ids)
    mask = ops.cast(mask, "bool")
    fill = ops.cast(mask_token_id, token_ids.dtype)
    return ops.where(mask, fill, token_ids)


def scheduled_mask_count(step, total_steps, num_tokens, schedule="cosine"):
    """Tokens still masked after decoding step `step` (0-based) of `total_steps`.

    n = floor(N · γ((step + 1) / T)), clipped to [0, N]. The final step gives
    0. The sampler additionally clips n to [1, still-masked − 1] before the
    last step (DESIGN §1.8); that is its business, not this function's.

    With Python ints the arguments are validated and a Python int is returned
    (computed in float64); with a tensor `step` (e.g. a `fori_loop` index) an
    int32 tensor is returned. Both agree: γ gets a 1e-6 margin before floor()
    so float32 rounding cannot drop an exact count such as 256·cos(π/3)=128.

    Args:
        step: int or scalar int tensor, 0 <= step < total_steps.
        total_steps: int, T (>= 1).
        num_tokens: int, N (>= 1).
        schedule: a name from `SCHEDULES` or a callable.

    Example:
    ```python
    [scheduled_mask_count(k, 12, 256) for k in range(12)]
    # [253, 247, 236, 221, 203, 181, 155, 128, 97, 66, 33, 0]
    ```
    """
    _check_int("total_steps", total_steps, 1)
    _check_int("num_tokens", num_tokens, 1)
    gamma = mask_ratio_schedule(schedule)
    if _is_python_int(step) and _is_python_int(total_steps) and _is_python_int(
        num_tokens
    ):
        if not 0 <= step < total_steps:
            raise ValueError(
                f"`step` must satisfy 0 <= step < total_steps={total_steps}. "
                f"Received: step={step}"
            )
        g = float(gamma((step + 1) / total_steps))
        count = math.floor(num_tokens * (g + _COUNT_EPSILON))
        return int(min(max(count, 0), num_tokens))
    if _is_python_number(step) or isinstance(step, (str, bool)) or step is None:
        raise ValueError(
            f"`step` must be an int or an int tensor. Received: step={step!r}"
        )
    t = (ops.cast(step, "float32") + 1.0) / ops.cast(total_steps, "float32")
    g = ops.cast(gamma(t), "float32")
    n = ops.cast(num_tokens, "float32")
    count = ops.clip(ops.floor(n * (g + _COUNT_EPSILON)), 0.0, n)
    return ops.cast(count, "int32")


@keras.saving.register_keras_serializable(package="keras_muse")
class MaskTokens(keras.layers.Layer):
    """Replaces image token ids by [MASK], with a mask it samples or is given.

    Called with ids only, it samples a training mask (`sample_token_mask`,
    one rate per example from `schedule`) using its own `SeedGenerator`, whose
    state Keras carries through compiled train steps like Dropout's. Called
    with `token_mask`, it only applies that mask (inpainting, sampling).

    Token ids may have any shape `(batch, ...)`: trailing axes (e.g. a 16×16
    grid) are flattened for sampling and the mask has the ids' shape.

    Args:
        mask_token_id: int, the [MASK] id (usually `codebook_size`).
        schedule: a name from `SCHEDULES`.
        seed: int or None, seeds the layer's `SeedGenerator`.

    Call returns `(masked_ids, token_mask)`; `token_mask` is bool.

    Example:
    ```python
    layer = MaskTokens(mask_token_id=8192, seed=0)
    ids = keras.random.randint((2, 16, 16), 0, 8192)
    masked_ids, token_mask = layer(ids)
    ```
    """

    def __init__(self, mask_token_id, schedule="cosine", seed=None, **kwargs):
        super().__init__(**kwargs)
        if not _is_python_int(mask_token_id) or mask_token_id < 0:
            raise ValueError(
                "`mask_token_id` must be an int >= 0. "
                f"Received: mask_token_id={mask_token_id!r}"
            )
        if not isinstance(schedule, str):
            raise ValueError(
                "`schedule` must be a name from "
                f"{SCHEDULES} (a callable cannot be serialized). "
                f"Received: schedule={schedule!r}"
            )
        mask_ratio_schedule(schedule)
        self.mask_token_id = int(mask_token_id)
        self.schedule = schedule
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, token_ids, token_mask=None):
        if token_mask is None:
            shape = ops.shape(token_ids)
            num_tokens = math.prod(shape[1:])
            flat_mask = sample_token_mask(
                shape[0], num_tokens, schedule=self.schedule, seed=self.seed_generator
            )
            token_mask = ops.reshape(flat_mask, shape)
        token_mask = ops.cast(token_mask, "bool")
        return apply_mask(token_ids, token_mask, self.mask_token_id), token_mask

    def compute_output_spec(self, token_ids, token_mask=None):
        return (
            keras.KerasTensor(token_ids.shape, dtype=token_ids.dtype),
            keras.KerasTensor(token_ids.shape, dtype="bool"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mask_token_id": self.mask_token_id,
                "schedule": self.schedule,
                "seed": self.seed,
            }
        )
        return config
