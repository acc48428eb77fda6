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


def resize_images(images, size, resample="bicubic"):
    """uint8 images [n, H, W, 3] -> [n, size, size, 3] (or (h, w)) with PIL.

    `resample`: "bicubic" (upsampling baselines), "box" (area averaging, the
    right filter to make a low-res copy) or "nearest".
    """
    from PIL import Image

    filters = {"bicubic": Image.BICUBIC, "box": Image.BOX, "nearest": Image.NEAREST}
    if resample not in filters:
        raise ValueError(f"`resample` must be one of {sorted(filters)}. Received: {resample!r}")
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 [n, H, W, C]. Received {images.dtype} {images.shape}.")
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    out = [np.asarray(Image.fromarray(im.squeeze()).resize((int(w), int(h)), filters[resample])) for im in images]
    return np.stack(out).reshape(len(images), int(h), int(w), images.shape[-1])


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


def make_captioned_grid(images, captions, columns=None, scale=None, padding=4, max_chars=None):
    """Tiles uint8 images with a caption under each (PIL's built-in font).

    Small images (the 64x64 shapes domain) are upscaled with nearest
    neighbour first (`scale`, default: to at least 128 px) so captions fit.
    """
    from PIL import Image
    from PIL import ImageDraw
    from PIL import ImageFont

    images = np.asarray(images, dtype=np.uint8)
    n, h, w, _ = images.shape
    if len(captions) != n:
        raise ValueError(f"`captions` must have one entry per image ({n}). Received {len(captions)}.")
    scale = scale or max(1, int(np.ceil(128 / w)))
    h, w = h * scale, w * scale
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    font = ImageFont.load_default()
    max_chars = max_chars or max(8, w // 6)
    wrapped = []
    for caption in captions:
        words, lines, line = str(caption).split(), [], ""
        for word in words:
            if line and len(line) + 1 + len(word) > max_chars:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        wrapped.append(lines[:4])
    text_h = 12 * max(len(lines) for lines in wrapped) + 4
    canvas = Image.new("RGB", (columns * (w + padding) + padding, rows * (h + text_h + padding) + padding), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, lines) in enumerate(zip(images, wrapped)):
        r, c = divmod(i, columns)
        x, y = padding + c * (w + padding), padding + r * (h + text_h + padding)
        tile = Image.fromarray(image).resize((w, h), Image.NEAREST)
        canvas.paste(tile, (x, y))
        for j, line in enumerate(lines):
            draw.text((x + 2, y + h + 2 + 12 * j), line, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
