import numpy as np
import pytest

from keras_muse.layers import MuseTransformerBlock


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    context = rng.normal(size=(2, 5, 16)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    return x, context, mask


def test_shapes_and_cross_attention_is_used():
    x, context, mask = _inputs()
    block = MuseTransformerBlock(16, 4, 32)
    y = np.asarray(block(x, context=context, context_mask=mask))
    assert y.shape == x.shape
    other = context.copy()
    other[:, :2] += 1.0
    y2 = np.asarray(block(x, context=other, context_mask=mask))
    assert np.abs(y - y2).max() > 1e-4


def test_padding_is_ignored_and_cached_key_values_match():
    x, context, mask = _inputs()
    block = MuseTransformerBlock(16, 4, 32)
    y = np.asarray(block(x, context=context, context_mask=mask))
    padded = context.copy()
    padded[0, 3:] = 50.0  # only padded positions change
    np.testing.assert_allclose(
        np.asarray(block(x, context=padded, context_mask=mask)), y, atol=1e-5
    )
    kv = block.cross_key_value(context)
    np.testing.assert_allclose(
        np.asarray(block(x, context_mask=mask, cross_key_value=kv)), y, atol=1e-5
    )


def test_self_attention_only_block_and_config():
    x, _, _ = _inputs()
    block = MuseTransformerBlock(16, 2, 32, cross_attention=False, dropout=0.1)
    assert np.asarray(block(x)).shape == x.shape
    clone = MuseTransformerBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        MuseTransformerBlock(10, 4, 32)
    x, _, _ = _inputs()
    with pytest.raises(ValueError, match="context"):
        MuseTransformerBlock(16, 4, 32)(x)
