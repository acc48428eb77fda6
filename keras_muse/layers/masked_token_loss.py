"""Cross-entropy and accuracy on masked image tokens only (Muse §2.3).

Only the positions replaced by [MASK] carry a training signal: unmasked
positions see their own id in the input, so predicting them is trivial and
would drown the loss. Both functions average over the masked positions of the
whole batch (each masked token weighs the same, as in MaskGIT), compute in
float32 whatever the logits' dtype (bf16/fp16 softmax over an 8192-way
codebook loses too much precision), and return 0 rather than NaN when a batch
has no masked position.
"""

from keras import ops


def _prepare(labels, logits, mask):
    logits = ops.convert_to_tensor(logits)
    labels = ops.convert_to_tensor(labels)
    mask = ops.convert_to_tensor(mask)
    logits_shape = tuple(logits.shape)
    labels_shape = tuple(labels.shape)
    if len(logits_shape) != len(labels_shape) + 1:
        raise ValueError(
            "`logits` must have one more axis (the codebook) than `labels`. "
            f"Received: labels.shape={labels_shape}, logits.shape={logits_shape}"
        )
    for a, b in zip(labels_shape, logits_shape[:-1]):
        if a is not None and b is not None and a != b:
            raise ValueError(
                "`labels` and `logits` must agree on every axis but the last. "
                f"Received: labels.shape={labels_shape}, "
                f"logits.shape={logits_shape}"
            )
    if len(tuple(mask.shape)) != len(labels_shape):
        raise ValueError(
            "`mask` must have the shape of `labels`. "
            f"Received: mask.shape={tuple(mask.shape)}, labels.shape={labels_shape}"
        )
    weights = ops.cast(mask, "float32")
    is_masked = ops.greater(weights, 0.0)
    # Unmasked labels are never used; zeroing them keeps the gather in range
    # even if a caller marks them with -1 or the [MASK] id.
    labels = ops.where(is_masked, ops.cast(labels, "int32"), 0)
    return labels, ops.cast(logits, "float32"), weights, is_masked


def _weighted_mean(values, weights, is_masked):
    # where(), not a product, so a non-finite value at an unmasked position
    # cannot leak into the sum as 0·inf = NaN.
    total = ops.sum(ops.where(is_masked, values * weights, 0.0))
    count = ops.sum(weights)
    has_any = ops.greater(count, 0.0)
    return ops.where(has_any, total / ops.where(has_any, count, 1.0), 0.0)


def masked_token_loss(labels, logits, mask, label_smoothing=0.0):
    """Mean cross-entropy over the masked positions only.

    With label smoothing ε the target is (1 − ε)·one_hot + ε/V (as in
    `keras.losses.CategoricalCrossentropy`), i.e. the loss per token is
    (1 − ε)·(−log p_label) + ε·mean_v(−log p_v). MaskGIT uses ε = 0.1.

    Args:
        labels: int tensor `(batch, N)` (or any shape), the true token ids.
        logits: float tensor `labels.shape + (V,)`, any float dtype.
        mask: bool tensor of `labels`' shape, True where the input was
            [MASK]; a float tensor is used as per-token weights.
        label_smoothing: float in [0, 1).

    Returns:
        float32 scalar; 0 when no position is masked.

    Example:
    ```python
    labels = keras.ops.convert_to_tensor([[1, 2, 3]])
    logits = keras.random.normal((1, 3, 8))
    mask = keras.ops.convert_to_tensor([[True, False, True]])
    loss = masked_token_loss(labels, logits, mask, label_smoothing=0.1)
    ```
    """
    _check_label_smoothing(label_smoothing)
    labels, logits, weights, is_masked = _prepare(labels, logits, mask)
    return _weighted_mean(per_token_cross_entropy(labels, logits, label_smoothing), weights, is_masked)


def _check_label_smoothing(label_smoothing):
    if isinstance(label_smoothing, (int, float)) and not (0.0 <= label_smoothing < 1.0):
        raise ValueError(
            "`label_smoothing` must lie in [0, 1). "
            f"Received: label_smoothing={label_smoothing}"
        )


def per_token_cross_entropy(labels, logits, label_smoothing=0.0):
    """(Smoothed) cross-entropy per position: int `labels` [...], float32
    `logits` [..., V] -> float32 [...]."""
    # -log p_v = lse - l_v, so the loss needs the log-sum-exp, the label's
    # logit and (with smoothing) the mean logit: no [.., V] log-probabilities
    # are formed, and the gradient is one pass, softmax - target.
    peak = ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
    lse = ops.log(ops.sum(ops.exp(logits - peak), axis=-1)) + ops.squeeze(peak, -1)
    label_logits = ops.squeeze(ops.take_along_axis(logits, ops.expand_dims(labels, -1), axis=-1), -1)
    per_token = lse - label_logits
    if not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0.0):
        uniform_ce = lse - ops.mean(logits, axis=-1)
        per_token = (1.0 - label_smoothing) * per_token + label_smoothing * uniform_ce
    return per_token


def masked_token_accuracy(labels, logits, mask):
    """Fraction of masked positions whose argmax logit equals the label.

    Args:
        labels: int tensor `(batch, N)`.
        logits: float tensor `(batch, N, V)`, any float dtype.
        mask: bool tensor `(batch, N)` (float: per-token weights).

    Returns:
        float32 scalar in [0, 1]; 0 when no position is masked.

    Example:
    ```python
    acc = masked_token_accuracy(labels, logits, mask)
    ```
    """
    labels, logits, weights, is_masked = _prepare(labels, logits, mask)
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    correct = ops.cast(ops.equal(predicted, labels), "float32")
    return _weighted_mean(correct, weights, is_masked)
