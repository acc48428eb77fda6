"""Mask-free editing (Muse §3.3): resample random token subsets, repeatedly.

From an image's tokens, each of `iterations` rounds re-masks a random
`fraction` of the (editable) tokens and resamples all of them at once from the
model conditioned on the edit prompt (the paper: 100 rounds of 8 %, guidance
4, top-k 3). The image drifts toward the prompt while the unmasked context
keeps its layout. One `fori_loop`: a compiled program like decoding.
"""

import math

from keras import ops

from keras_muse.backend import random as muse_random
from keras_muse.samplers.parallel_decoding import sample_tokens


def resample_random_tokens(
    logits_fn,
    token_ids,
    seed,
    iterations,
    fraction,
    mask_token_id,
    temperature=1.0,
    top_k=3,
    top_p=None,
    editable_mask=None,
):
    """Runs the editing loop; returns the edited int32 `[B, N]` ids.

    Args:
        logits_fn: `(token_ids [B, N], iteration) -> logits [B, N, V]`.
        token_ids: int `[B, N]`, the image's tokens.
        seed: int32 `[2]` seed tensor.
        iterations: int (static), rounds of resampling (100).
        fraction: float (static), share of the tokens re-masked per round
            (0.08); at least one token.
        editable_mask: optional bool `[B, N]`: only these positions may change
            (all by default); the count is a fraction of all N tokens.

    Example:
    ```python
    edited = resample_random_tokens(fn, ids, make_seed(0), 100, 0.08, mask_token_id=8192)
    ```
    """
    if iterations < 1:
        raise ValueError(f"`iterations` must be >= 1. Received: {iterations}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1]. Received: {fraction}")
    token_ids = ops.cast(token_ids, "int32")
    batch, num_tokens = token_ids.shape
    count = max(1, math.ceil(fraction * num_tokens))

    def body(i, ids):
        noise = muse_random.uniform((batch, num_tokens), seed, 2 * i)
        if editable_mask is not None:
            noise = ops.where(editable_mask, noise, 2.0)  # never chosen
        ranks = ops.argsort(ops.argsort(noise, axis=-1), axis=-1)
        mask = ops.less(ops.cast(ranks, "int32"), count)
        if editable_mask is not None:
            mask = ops.logical_and(mask, editable_mask)
        logits = logits_fn(ops.where(mask, mask_token_id, ids), i)
        sampled, _ = sample_tokens(logits, seed, 2 * i + 1, temperature, top_k, top_p)
        return ops.where(mask, sampled, ids)

    return ops.fori_loop(0, iterations, body, token_ids)
