import keras
import numpy as np
import pytest
from keras import ops

from keras_muse import backend as muse_backend
from keras_muse.backend import compile_function
from keras_muse.layers.masked_head_loss import masked_head_loss
from keras_muse.layers.masked_token_loss import masked_token_accuracy
from keras_muse.layers.masked_token_loss import masked_token_loss

B, N, H, V = 3, 10, 4, 7


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _data(seed=0, rate=0.4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, V, size=(B, N)).astype("int32")
    hidden = rng.normal(size=(B, N, H)).astype("float32")
    weight = (rng.normal(size=(H, V)) * 2.0).astype("float32")
    mask = rng.random((B, N)) < rate
    return labels, hidden, weight, mask


def _full(labels, hidden, weight, mask, eps):
    logits = ops.matmul(hidden, weight)
    return masked_token_loss(labels, logits, mask, eps), masked_token_accuracy(labels, logits, mask)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 30, 64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_equals_the_full_logits_loss_and_accuracy(chunk_size, eps):
    labels, hidden, weight, mask = _data()
    w = ops.convert_to_tensor(weight)
    loss, acc = masked_head_loss(labels, hidden, mask, lambda h: ops.matmul(h, w), eps, chunk_size)
    ref_loss, ref_acc = _full(labels, hidden, weight, mask, eps)
    np.testing.assert_allclose(_np(loss), _np(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(_np(acc), _np(ref_acc), rtol=1e-6)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.9, 1.0])
def test_gradients_equal_the_full_logits_gradients(rate):
    labels, hidden, weight, mask = _data(seed=1, rate=rate)
    h_var, w_var = keras.Variable(hidden), keras.Variable(weight)

    def chunked():
        return masked_head_loss(labels, h_var, mask, lambda h: ops.matmul(h, w_var), 0.1, chunk_size=4)[0], None

    def full():
        return masked_token_loss(labels, ops.matmul(h_var, w_var), mask, 0.1), None

    loss, _, grads = muse_backend.variable_grads(chunked, [h_var, w_var])
    ref_loss, _, ref_grads = muse_backend.variable_grads(full, [h_var, w_var])
    np.testing.assert_allclose(_np(loss), _np(ref_loss), rtol=1e-5, atol=1e-7)
    for g, r in zip(grads, ref_grads):
        assert np.all(np.isfinite(_np(g)))
        np.testing.assert_allclose(_np(g), _np(r), rtol=1e-4, atol=1e-6)
    if rate == 0.0:
        assert float(_np(loss)) == 0.0 and all(np.all(_np(g) == 0.0) for g in grads)


def test_unmasked_rows_never_reach_the_loss():
    labels, hidden, weight, mask = _data(seed=2)
    poisoned = hidden.copy()
    poisoned[~mask] = np.nan
    w = ops.convert_to_tensor(weight)
    loss, acc = masked_head_loss(labels, poisoned, mask, lambda h: ops.matmul(h, w), 0.1, 4)
    ref_loss, ref_acc = _full(labels, hidden, weight, mask, 0.1)
    np.testing.assert_allclose(_np(loss), _np(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(_np(acc), _np(ref_acc), rtol=1e-6)


def test_float_weights_and_compiled():
    labels, hidden, weight, mask = _data(seed=3)
    weights = mask * np.random.default_rng(0).random((B, N)).astype("float32")
    holder = keras.layers.Layer()
    w = ops.convert_to_tensor(weight)
    fn = compile_function(
        holder, lambda y, h, m: masked_head_loss(y, h, m, lambda r: ops.matmul(r, w), 0.0, 8)
    )
    loss, acc = fn(labels, hidden, weights)
    ref_loss, ref_acc = _full(labels, hidden, weight, weights, 0.0)
    np.testing.assert_allclose(_np(loss), _np(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(_np(acc), _np(ref_acc), rtol=1e-6)


def test_bad_arguments():
    labels, hidden, weight, mask = _data()
    with pytest.raises(ValueError, match="label_smoothing"):
        masked_head_loss(labels, hidden, mask, lambda h: h, label_smoothing=1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        masked_head_loss(labels, hidden, mask, lambda h: h, chunk_size=0)
