"""Conversions between uint8 images and the models' [-1, 1] floats; PNG grids."""

import numpy as np


def uint8_to_float(images):
    """uint8 [0, 255] -> float32 [-1, 1] (numpy)."""
    return np.asarray(images, dtype=np.float32) / 127.5 - 1.0


def float_to_uint8(images):
    """float [-1, 1] -> uint8 [0, 255], clipped and rounded (numpy)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def psnr(a, b, data_range=255.0):
    """Peak signal-to-noise ratio per image, for uint8 (or same-range) arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = np.mean((a - b) ** 2, axis=tuple(range(1, a.ndim)))
    return 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-12))


def make_grid(images, columns=None, padding=2, background=255):
    """Tiles uint8 images [N, H, W, 3] into one uint8 image."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.full(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c),
        background,
        dtype=np.uint8,
    )
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        y = padding + r * (h + padding)
        x = padding + col * (w + padding)
        grid[y : y + h, x : x + w] = image
    return grid


def save_png(image, path):
    """Saves a uint8 [H, W, 3] array as PNG (writes to a temp file, then renames)."""
    import os

    from PIL import Image

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp.png"
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
