import numpy as np
from PIL import Image

from keras_muse.utils.image_utils import float_to_uint8
from keras_muse.utils.image_utils import make_grid
from keras_muse.utils.image_utils import psnr
from keras_muse.utils.image_utils import save_png
from keras_muse.utils.image_utils import uint8_to_float


def test_conversions_round_trip():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    f = uint8_to_float(x)
    assert f.dtype == np.float32 and f.min() == -1 and f.max() == 1
    np.testing.assert_array_equal(float_to_uint8(f), x)
    np.testing.assert_array_equal(float_to_uint8(np.array([-3.0, 3.0])), [0, 255])


def test_psnr_known_value():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[1] += 1  # MSE 1 -> 48.13 dB
    p = psnr(a, b)
    assert p[0] > 100 and abs(p[1] - 10 * np.log10(255**2)) < 1e-6


def test_grid_and_png(tmp_path):
    images = np.stack([np.full((4, 5, 3), i * 40, np.uint8) for i in range(5)])
    grid = make_grid(images, columns=3, padding=1)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert (grid[1:5, 1:6] == 0).all() and (grid[1:5, 7:12] == 40).all()
    path = save_png(grid, tmp_path / "sub" / "g.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["g.png"]
