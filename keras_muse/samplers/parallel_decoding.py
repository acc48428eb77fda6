"""Iterative parallel decoding (Muse §2.8, MaskGIT): one loop for every use.

Start from a token grid where some (or all) positions are [MASK]. At step k
of T, sample every masked position from the model's logits (temperature,
optional top-k / top-p), score each sample by its log-probability plus
Gumbel noise whose temperature anneals linearly to 0, keep the
n_k = floor(M·γ((k+1)/T)) least confident samples masked (M = positions
masked at the start, clipped to [1, still-masked − 1] before the last step)
and accept the rest for good. Accepted tokens are never re-masked, so
exactly `still-masked − n_k` tokens are decided at step k. Text-to-image,
inpainting, outpainting, super-resolution and editing are all this loop with
another initial grid and another `logits_fn`.

The loop is a `keras.ops.fori_loop` with all-static shapes, so under
`jax.jit` / `tf.function` the whole generation is one program.
"""

import math

from keras import ops

from keras_muse.backend import random as muse_random
from keras_muse.layers.masking import mask_ratio_schedule


def filter_logits(logits, top_k=None, top_p=None):
    """Sets logits outside the top-k / nucleus (top-p) to -inf.

    Args:
        logits: float `[..., V]`.
        top_k: int or None (static: it fixes a shape).
        top_p: float in (0, 1] or None.
    """
    neg_inf = ops.cast(-1e30, logits.dtype)
    if top_k is not None:
        kth = ops.top_k(logits, int(top_k), sorted=True)[0][..., -1:]
        logits = ops.where(logits < kth, neg_inf, logits)
    if top_p is not None and top_p < 1.0:
        sorted_logits = ops.flip(ops.sort(logits, axis=-1), axis=-1)
        probs = ops.softmax(sorted_logits, axis=-1)
        # The smallest set whose mass reaches top_p: a token stays if the
        # mass before it is < top_p (the most likely token always stays).
        before = ops.cumsum(probs, axis=-1) - probs
        kept = ops.where(before < top_p, sorted_logits, ops.cast(1e30, logits.dtype))
        threshold = ops.min(kept, axis=-1, keepdims=True)
        logits = ops.where(logits < threshold, neg_inf, logits)
    return logits


def sample_tokens(logits, seed, stream, temperature=1.0, top_k=None, top_p=None):
    """Samples one token per position from the filtered, temperature-scaled
    logits; returns `(ids int32, log-probability of each sampled id under
    that distribution)`.

    Inverse-CDF sampling: one uniform number per position against the
    cumulative probabilities. The Gumbel-max trick needs a random number per
    vocabulary entry instead, measured 3.8x slower on XLA:CPU at 4x256 tokens
    x 8192 codes (269 vs 71 ms per step).
    """
    logits = ops.cast(logits, "float32") / ops.maximum(ops.cast(temperature, "float32"), 1e-6)
    logits = filter_logits(logits, top_k, top_p)
    log_probs = ops.log_softmax(logits, axis=-1)
    cdf = ops.cumsum(ops.exp(log_probs), axis=-1)
    vocab = logits.shape[-1]
    # u in (0, total]: a filtered (zero-probability) token is never chosen.
    u = muse_random.uniform(tuple(logits.shape[:-1]) + (1,), seed, stream, minval=1e-7) * cdf[..., -1:]
    sampled = ops.sum(ops.cast(ops.less(cdf, u), "int32"), axis=-1)
    sampled = ops.minimum(sampled, vocab - 1)
    sampled_logp = ops.squeeze(ops.take_along_axis(log_probs, sampled[..., None], axis=-1), -1)
    return sampled, sampled_logp


def keep_masked_counts(step, num_steps, initial_masked, still_masked, schedule="cosine"):
    """How many positions stay masked after `step` (0-based), per example.

    floor(M·γ((step+1)/T)) with M the initially masked count, clipped to
    [1, still − 1] so every step decides at least one token and one stays for
    later; the last step decides everything. int32 `[B]`.
    """
    gamma = mask_ratio_schedule(schedule)
    t = (ops.cast(step, "float32") + 1.0) / float(num_steps)
    n = ops.floor(ops.cast(initial_masked, "float32") * (gamma(t) + 1e-6))
    n = ops.cast(n, "int32")
    n = ops.minimum(n, still_masked - 1)
    n = ops.maximum(n, ops.minimum(1, still_masked))
    last = ops.equal(ops.cast(step, "int32"), num_steps - 1)
    return ops.where(last, ops.zeros_like(n), n)


def parallel_decode(
    logits_fn,
    token_ids,
    token_mask,
    seed,
    num_steps,
    mask_token_id,
    temperature=1.0,
    top_k=None,
    top_p=None,
    choice_temperature=4.5,
    schedule="cosine",
    return_history=False,
):
    """Fills the masked positions of `token_ids` by iterative parallel decoding.

    Args:
        logits_fn: `(token_ids [B, N], step) -> logits [B, N, V]` (guidance
            already applied); traced once, inside the loop.
        token_ids: int `[B, N]`, the known tokens (any value where masked).
        token_mask: bool `[B, N]`, True = generate this position.
        seed: int32 `[2]` tensor (`keras_muse.backend.random.make_seed`).
        num_steps: int, T (static).
        mask_token_id: int, the [MASK] id.
        temperature: float or scalar tensor, sampling temperature (> 0).
        top_k: int or None; top_p: float or None.
        choice_temperature: float or scalar tensor, τ of the confidence
            noise, annealed as τ·(1 − (k+1)/T) (MaskGIT's 4.5).
        schedule: masking schedule name.
        return_history: also return the grid after every step, int32
            `[T, B, N]` ([MASK] where still masked).

    Returns:
        int32 `[B, N]` with every position decided (and the history).

    Example:
    ```python
    ids = parallel_decode(lambda ids, k: model_logits(ids), ops.zeros((2, 256), "int32"),
                          ops.ones((2, 256), bool), make_seed(0), 12, mask_token_id=8192)
    ```
    """
    if num_steps < 1:
        raise ValueError(f"`num_steps` must be >= 1. Received: {num_steps}")
    token_ids = ops.cast(token_ids, "int32")
    token_mask = ops.cast(token_mask, "bool")
    batch, num_tokens = token_ids.shape
    initial_masked = ops.sum(ops.cast(token_mask, "int32"), axis=1)
    ids = ops.where(token_mask, mask_token_id, token_ids)
    choice_temperature = ops.cast(choice_temperature, "float32")
    history = ops.zeros((num_steps, batch, num_tokens), "int32") if return_history else None

    def body(step, state):
        ids, mask = state[0], state[1]
        logits = logits_fn(ids, step)
        sampled, sampled_logp = sample_tokens(logits, seed, 2 * step, temperature, top_k, top_p)
        sampled = ops.where(mask, sampled, ids)

        still = ops.sum(ops.cast(mask, "int32"), axis=1)
        n_keep = keep_masked_counts(step, num_steps, initial_masked, still, schedule)
        tau = choice_temperature * (1.0 - (ops.cast(step, "float32") + 1.0) / float(num_steps))
        confidence = sampled_logp + tau * muse_random.gumbel((batch, num_tokens), seed, 2 * step + 1)
        # Decided tokens can never be chosen to stay masked.
        confidence = ops.where(mask, confidence, math.inf)
        # Ranks, not a threshold: exactly n_keep positions even with ties.
        ranks = ops.argsort(ops.argsort(confidence, axis=-1), axis=-1)
        new_mask = ops.less(ops.cast(ranks, "int32"), n_keep[:, None])
        ids = ops.where(new_mask, mask_token_id, sampled)
        if len(state) == 3:
            history = ops.slice_update(state[2], (step, 0, 0), ids[None])
            return ids, new_mask, history
        return ids, new_mask

    state = (ids, token_mask) + ((history,) if return_history else ())
    state = ops.fori_loop(0, num_steps, body, state)
    if return_history:
        return state[0], state[2]
    return state[0]
