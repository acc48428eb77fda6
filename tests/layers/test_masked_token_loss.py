import keras
import numpy as np
import pytest
from keras import ops

from keras_muse import backend as muse_backend
from keras_muse.backend import compile_function
from keras_muse.layers.masked_token_loss import masked_token_accuracy
from keras_muse.layers.masked_token_loss import masked_token_loss

B, N, V = 2, 6, 5


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, V, size=(B, N)).astype("int32")
    logits = rng.normal(size=(B, N, V)).astype("float32") * 3.0
    mask = np.zeros((B, N), bool)
    mask[0, [0, 2, 5]] = True
    mask[1, [1]] = True
    return labels, logits, mask


def _reference_loss(labels, logits, mask, eps=0.0):
    logits = logits.astype("float64")
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    target = np.eye(V)[labels] * (1 - eps) + eps / V
    per_token = -(target * log_probs).sum(-1)
    return per_token[mask].mean()


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_equals_hand_computed_cross_entropy(eps):
    labels, logits, mask = _data()
    loss = masked_token_loss(labels, logits, mask, label_smoothing=eps)
    assert _np(loss).shape == () and _np(loss).dtype == np.float32
    np.testing.assert_allclose(_np(loss), _reference_loss(labels, logits, mask, eps), rtol=1e-5)


def test_loss_ignores_unmasked_positions_only():
    labels, logits, mask = _data()
    base = float(_np(masked_token_loss(labels, logits, mask, 0.1)))
    changed = logits.copy()
    changed[~mask] = np.random.default_rng(1).normal(size=changed[~mask].shape) * 10
    # Unmasked labels may be anything, even out of range.
    odd_labels = np.where(mask, labels, -1)
    moved = float(_np(masked_token_loss(odd_labels, changed, mask, 0.1)))
    assert moved == pytest.approx(base, rel=1e-6)
    assert float(_np(masked_token_accuracy(odd_labels, changed, mask))) == pytest.approx(
        float(_np(masked_token_accuracy(labels, logits, mask)))
    )
    changed = logits.copy()
    changed[0, 2, labels[0, 2]] += 5.0
    assert float(_np(masked_token_loss(labels, changed, mask, 0.1))) < base - 1e-3


def test_zero_mask_gives_zero_finite_loss_and_gradients():
    labels, logits, _ = _data()
    empty = np.zeros((B, N), bool)
    assert float(_np(masked_token_loss(labels, logits, empty, 0.1))) == 0.0
    assert float(_np(masked_token_accuracy(labels, logits, empty))) == 0.0
    x = keras.Variable(logits)

    def loss_fn():
        return masked_token_loss(labels, x, empty, 0.1), None

    loss, _, grads = muse_backend.variable_grads(loss_fn, [x])
    assert float(_np(loss)) == 0.0
    assert np.all(np.isfinite(_np(grads[0]))) and np.all(_np(grads[0]) == 0.0)


def test_loss_is_stable_for_huge_logits():
    labels, logits, mask = _data()
    big = logits * 1e4
    loss = float(_np(masked_token_loss(labels, big, mask)))
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, _reference_loss(labels, big, mask), rtol=1e-4)


def test_accuracy_on_hand_example():
    labels = np.array([[0, 1, 2, 3]], "int32")
    logits = np.full((1, 4, 4), -1.0, "float32")
    for pos, pred in enumerate([0, 1, 0, 0]):  # right, right, wrong, wrong
        logits[0, pos, pred] = 1.0
    mask = np.array([[True, False, True, True]])
    # Masked: pos 0 right, pos 2 wrong, pos 3 wrong -> 1/3.
    assert float(_np(masked_token_accuracy(labels, logits, mask))) == pytest.approx(1 / 3)
    everywhere = np.ones((1, 4), bool)
    assert float(_np(masked_token_accuracy(labels, logits, everywhere))) == pytest.approx(0.5)


def test_bfloat16_logits_compute_in_float32():
    labels, logits, mask = _data()
    low = ops.cast(logits, "bfloat16")
    loss = masked_token_loss(labels, low, mask, 0.1)
    assert _np(loss).dtype == np.float32
    rounded = _np(ops.cast(low, "float32"))
    np.testing.assert_allclose(_np(loss), _reference_loss(labels, rounded, mask, 0.1), rtol=1e-5)
    acc = masked_token_accuracy(labels, low, mask)
    assert _np(acc).dtype == np.float32 and 0.0 <= float(_np(acc)) <= 1.0


def test_float_mask_acts_as_weights():
    labels, logits, mask = _data()
    weights = mask.astype("float32") * 2.0
    np.testing.assert_allclose(
        _np(masked_token_loss(labels, logits, weights)),
        _np(masked_token_loss(labels, logits, mask)),
        rtol=1e-6,
    )


def test_bad_arguments():
    labels, logits, mask = _data()
    with pytest.raises(ValueError, match="label_smoothing"):
        masked_token_loss(labels, logits, mask, label_smoothing=1.0)
    with pytest.raises(ValueError, match="logits"):
        masked_token_loss(labels, logits[..., 0], mask)
    with pytest.raises(ValueError, match="labels"):
        masked_token_loss(labels[:, :3], logits, mask[:, :3])
    with pytest.raises(ValueError, match="mask"):
        masked_token_loss(labels, logits, mask[0])


def test_loss_runs_compiled():
    labels, logits, mask = _data()
    holder = keras.layers.Layer()
    fn = compile_function(
        holder,
        lambda y, x, m: (masked_token_loss(y, x, m, 0.1), masked_token_accuracy(y, x, m)),
    )
    loss, acc = fn(labels, logits, mask)
    np.testing.assert_allclose(_np(loss), _reference_loss(labels, logits, mask, 0.1), rtol=1e-5)
    np.testing.assert_allclose(_np(acc), _np(masked_token_accuracy(labels, logits, mask)))
