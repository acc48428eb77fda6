import numpy as np

from keras_muse.layers import ResnetBlock
from keras_muse.layers.resnet_block import group_count
from keras_muse.layers.space_to_depth import depth_to_space
from keras_muse.layers.space_to_depth import space_to_depth


def test_block_shapes_and_identity_at_init():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
    same = ResnetBlock(16)
    # The second conv starts at zero: a fresh block is the identity.
    np.testing.assert_allclose(np.asarray(same(x)), x, atol=1e-6)
    wider = ResnetBlock(24)
    assert tuple(wider(x).shape) == (2, 8, 8, 24)
    assert ResnetBlock.from_config(wider.get_config()).filters == 24


def test_group_count_divides():
    for c in (3, 8, 24, 48, 64, 96, 256):
        g = group_count(c)
        assert c % g == 0 and g <= 32


def test_space_to_depth_round_trip():
    x = np.arange(2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3)
    y = space_to_depth(x, 2)
    assert tuple(y.shape) == (2, 4, 4, 12)
    # The top-left 2x2 patch of channel 0 lands in the first output pixel.
    np.testing.assert_array_equal(np.asarray(y)[0, 0, 0, ::3], x[0, :2, :2, 0].ravel())
    np.testing.assert_array_equal(np.asarray(depth_to_space(y, 2)), x)
