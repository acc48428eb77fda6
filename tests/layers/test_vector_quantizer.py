import keras
import numpy as np
import pytest
from keras import ops

from keras_muse import backend as muse_backend
from keras_muse.layers import VectorQuantizer


def _l2(x):
    return x / np.sqrt(np.sum(x**2, axis=-1, keepdims=True) + 1e-6)


@pytest.mark.parametrize("code_dim,l2", [(8, True), (None, False)])
def test_ids_are_nearest_codes(code_dim, l2):
    vq = VectorQuantizer(32, code_dim=code_dim, use_l2_normalization=l2)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 16)).astype("float32")
    out = vq(x)
    assert tuple(out["ids"].shape) == (2, 4, 4)
    assert tuple(out["quantized"].shape) == (2, 4, 4, 16)
    z = np.asarray(vq.in_proj(x)) if code_dim else x
    codes = np.asarray(vq.codebook)
    if l2:
        z, codes = _l2(z), _l2(codes)
    expected = np.argmin(((z[..., None, :] - codes) ** 2).sum(-1), axis=-1)
    np.testing.assert_array_equal(np.asarray(out["ids"]), expected)
    np.testing.assert_array_equal(np.asarray(vq.quantize_ids(x)), expected)
    # lookup(ids) is what decoding uses; it equals the forward quantized value.
    np.testing.assert_allclose(
        np.asarray(vq.lookup(out["ids"])), np.asarray(out["quantized"]), atol=1e-5
    )


def test_straight_through_gradient_reaches_input():
    vq = VectorQuantizer(16, code_dim=4)
    x = keras.Variable(np.random.default_rng(1).normal(size=(1, 3, 3, 8)).astype("float32"))
    vq(x)

    def loss_fn():
        return ops.sum(ops.square(vq(x)["quantized"])), None

    _, _, grads = muse_backend.variable_grads(loss_fn, [x])
    assert float(np.abs(np.asarray(grads[0])).sum()) > 0.0


def test_losses_and_usage_statistics():
    vq = VectorQuantizer(8, code_dim=4, usage_decay=0.0)
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 6)).astype("float32")
    out = vq(x, training=True)
    for k in ("codebook_loss", "commitment_loss", "entropy_loss", "perplexity"):
        assert np.isfinite(float(out[k]))
    assert float(out["commitment_loss"]) == pytest.approx(0.25 * float(out["codebook_loss"]), rel=1e-4)
    ids = np.asarray(out["ids"])
    freq = np.bincount(ids.ravel(), minlength=8) / ids.size
    np.testing.assert_allclose(np.asarray(vq.code_frequency), freq, atol=1e-6)
    assert float(vq.codebook_usage()) == pytest.approx(np.mean(freq > 0.01 / 8))
    # Not training: statistics stay put.
    vq(x * 0.0 + 1.0, training=False)
    np.testing.assert_allclose(np.asarray(vq.code_frequency), freq, atol=1e-6)


def test_config_round_trip():
    vq = VectorQuantizer(64, code_dim=8, commitment_cost=0.5)
    clone = VectorQuantizer.from_config(vq.get_config())
    assert clone.get_config() == vq.get_config()


def test_bad_codebook_size():
    with pytest.raises(ValueError, match="codebook_size"):
        VectorQuantizer(1)
