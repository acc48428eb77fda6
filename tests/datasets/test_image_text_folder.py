import csv
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_muse.datasets.image_text_folder import (
    FolderScan,
    load_image_text_folder,
    scan_image_text_folder,
)

RES = 16

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)
WHITE = (255, 255, 255)
MAGENTA = (255, 0, 255)


def _solid(size, color):
    return Image.new("RGB", size, color)


def _centre_striped(size, centre, side, horizontal=True):
    """Non-square image: the centred square is `centre`, the rest `side`."""
    w, h = size
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = side
    s = min(w, h)
    if horizontal:
        left = (w - s) // 2
        arr[:, left : left + s] = centre
    else:
        top = (h - s) // 2
        arr[top : top + s, :] = centre
    return Image.fromarray(arr)


# (relative path, PIL image, format, caption, expected mean RGB after crop)
GOOD = [
    ("wide.png", _centre_striped((120, 40), RED, BLUE), "PNG", "wide red", RED),
    (
        "tall.jpg",
        _centre_striped((48, 96), GREEN, BLUE, horizontal=False),
        "JPEG",
        "tall green",
        GREEN,
    ),
    ("tiny.png", _solid((7, 5), YELLOW), "PNG", "tiny yellow upscaled", YELLOW),
    ("anim.gif", _solid((30, 20), WHITE), "GIF", "gif white", WHITE),
    ("bitmap.BMP", _solid((25, 40), MAGENTA), "BMP", "bmp magenta", MAGENTA),
    ("sub/dir/nested.png", _solid((64, 32), BLUE), "PNG", "nested blue", BLUE),
]
EXPECTED_COLOR = {cap: color for _, _, _, cap, color in GOOD}


def _save(root, rel, image, fmt):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, format=fmt)
    return path


def _write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _truncated_jpeg_bytes():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    return data[: len(data) // 2]


def _make_images(root):
    """Good images + the problem files shared by all caption layouts."""
    for rel, img, fmt, _, _ in GOOD:
        _save(root, rel, img, fmt)
    _save(root, "nocap.png", _solid((10, 10), RED), "PNG")
    _save(root, "empty.png", _solid((10, 10), RED), "PNG")
    _write(root, "corrupt.jpg", "this is not a jpeg at all")
    with open(os.path.join(root, "truncated.jpg"), "wb") as f:
        f.write(_truncated_jpeg_bytes())
    # AppleDouble junk must be ignored entirely, not counted.
    _write(root, "._wide.png", "resource fork")
    # Non-image files are not part of the dataset.
    _write(root, "notes.md", "hello")


@pytest.fixture
def txt_folder(tmp_path):
    root = str(tmp_path / "txt")
    _make_images(root)
    for rel, _, _, cap, _ in GOOD:
        _write(root, os.path.splitext(rel)[0] + ".txt", cap + "\n")
    _write(root, "empty.txt", "   \n")
    _write(root, "corrupt.txt", "a corrupt file")
    _write(root, "truncated.txt", "a truncated file")
    return root


def _table_rows():
    rows = [(rel, cap) for rel, _, _, cap, _ in GOOD]
    rows += [
        ("empty.png", ""),
        ("corrupt.jpg", "a corrupt file"),
        ("truncated.jpg", "a truncated file"),
        ("does/not/exist.png", "ghost"),
    ]
    return rows


@pytest.fixture
def jsonl_folder(tmp_path):
    root = str(tmp_path / "jsonl")
    _make_images(root)
    lines = []
    for i, (rel, cap) in enumerate(_table_rows()):
        # Alternate key spellings: both must be accepted.
        if i % 2:
            row = {"file_name": rel, "text": cap}
        else:
            row = {"image": rel, "caption": cap}
        lines.append(json.dumps(row))
    lines.insert(2, "")  # blank lines are tolerated
    _write(root, "captions.jsonl", "\n".join(lines) + "\n")
    # A stray sidecar must not be used when jsonl takes precedence.
    _write(root, "nocap.txt", "sidecar caption")
    return root


@pytest.fixture
def csv_folder(tmp_path):
    root = str(tmp_path / "csv")
    _make_images(root)

    with open(os.path.join(root, "captions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for rel, cap in _table_rows():
            w.writerow([rel, cap])
    return root


def _collect(ds):
    images, captions = [], []
    for el in ds.as_numpy_iterator():
        imgs, caps = el["images"], el["captions"]
        if imgs.ndim == 3:
            imgs, caps = imgs[None], np.asarray([caps])
        images.extend(imgs)
        captions.extend(c.decode() for c in caps)
    return images, captions


def _check_pairs(images, captions):
    assert sorted(captions) == sorted(EXPECTED_COLOR)
    for img, cap in zip(images, captions):
        assert img.shape == (RES, RES, 3) and img.dtype == np.uint8
        expected = np.array(EXPECTED_COLOR[cap], np.float32)
        # JPEG chroma subsampling blurs colours slightly; everything else is
        # exact, but every pixel must be the centre colour (no side bleed).
        err = np.abs(img.astype(np.float32) - expected).max()
        assert err < 40, (cap, err, img.reshape(-1, 3).mean(0))


# ---------------------------------------------------------------------------


def test_sidecar_scan_counts_exact(txt_folder):
    scan = scan_image_text_folder(txt_folder)
    assert isinstance(scan, FolderScan)
    assert scan.caption_source == "txt"
    assert len(scan) == len(GOOD)
    assert scan.skipped == {"missing_caption": 1, "empty_caption": 1, "unreadable": 2}
    assert sorted(os.path.basename(p) for p in scan.skipped_files["unreadable"]) == [
        "corrupt.jpg",
        "truncated.jpg",
    ]
    assert scan.summary() == (
        "image_text_folder: 6 usable pairs; skipped: 1 missing_caption, "
        "1 empty_caption, 2 unreadable"
    )


def test_sidecar_load_shapes_crop_and_captions(txt_folder, capsys):
    ds, report = load_image_text_folder(
        txt_folder, resolution=RES, shuffle=False, return_report=True
    )
    assert "image_text_folder: 6 usable pairs" in capsys.readouterr().out
    assert ds.element_spec["images"].shape == (RES, RES, 3)
    assert ds.element_spec["images"].dtype == tf.uint8
    assert ds.element_spec["captions"].dtype == tf.string
    images, captions = _collect(ds)
    _check_pairs(images, captions)
    assert report.skipped["unreadable"] == 2


def test_wide_image_centre_crop_is_red(txt_folder):
    ds = load_image_text_folder(
        txt_folder, resolution=RES, shuffle=False, verbose=False
    )
    images, captions = _collect(ds)
    wide = images[captions.index("wide red")]
    assert (wide[..., 0] >= 250).all()
    assert (wide[..., 2] <= 5).all()


def test_jsonl_source_and_precedence(jsonl_folder):
    ds, report = load_image_text_folder(
        jsonl_folder, resolution=RES, seed=1, return_report=True, verbose=False
    )
    assert report.caption_source == "jsonl"
    assert report.skipped == {
        "empty_caption": 1,
        "missing_image": 1,
        "missing_caption": 1,
        "unreadable": 2,
    }
    _check_pairs(*_collect(ds))


def test_csv_source(csv_folder):
    ds, report = load_image_text_folder(
        csv_folder, resolution=RES, return_report=True, verbose=False
    )
    assert report.caption_source == "csv"
    assert report.skipped == {
        "empty_caption": 1,
        "missing_image": 1,
        "missing_caption": 1,
        "unreadable": 2,
    }
    _check_pairs(*_collect(ds))


def test_explicit_source_overrides_auto(jsonl_folder):
    # Forcing sidecars ignores captions.jsonl: only nocap.png has a .txt.
    scan = scan_image_text_folder(jsonl_folder, caption_source="txt")
    assert scan.caption_source == "txt"
    assert scan.captions == ["sidecar caption"]


def test_unvalidated_corrupt_files_dropped_without_crash(txt_folder):
    ds, report = load_image_text_folder(
        txt_folder,
        resolution=RES,
        batch_size=3,
        validate=False,
        return_report=True,
        verbose=False,
    )
    assert "unreadable" not in report.skipped
    assert len(report) == len(GOOD) + 2
    images, captions = _collect(ds)
    _check_pairs(images, captions)


def test_batching_and_drop_remainder(txt_folder):
    ds = load_image_text_folder(
        txt_folder, resolution=RES, batch_size=4, seed=0, verbose=False
    )
    sizes = [b["images"].shape[0] for b in ds.as_numpy_iterator()]
    assert sizes == [4, 2]
    ds = load_image_text_folder(
        txt_folder,
        resolution=RES,
        batch_size=4,
        drop_remainder=True,
        seed=0,
        verbose=False,
    )
    assert ds.element_spec["images"].shape == (4, RES, RES, 3)
    assert [b["images"].shape[0] for b in ds.as_numpy_iterator()] == [4]


def test_repeat(txt_folder):
    ds = load_image_text_folder(
        txt_folder, resolution=RES, repeat=2, shuffle=False, verbose=False
    )
    assert len(_collect(ds)[1]) == 2 * len(GOOD)
    ds = load_image_text_folder(
        txt_folder, resolution=RES, batch_size=4, repeat=True, verbose=False
    )
    assert len(list(ds.take(5).as_numpy_iterator())) == 5


def test_seeded_shuffle_deterministic_and_reshuffles(txt_folder):
    def epochs(seed):
        ds = load_image_text_folder(
            txt_folder, resolution=RES, batch_size=2, seed=seed, verbose=False
        )
        return [_collect(ds)[1] for _ in range(3)]

    a, b = epochs(123), epochs(123)
    assert a == b
    # A new order each epoch (3 epochs of 6! orders identical is ~impossible).
    assert not (a[0] == a[1] == a[2])
    assert all(sorted(e) == sorted(EXPECTED_COLOR) for e in a)

    unshuffled = load_image_text_folder(
        txt_folder, resolution=RES, shuffle=False, verbose=False
    )
    first = _collect(unshuffled)[1]
    assert first == _collect(unshuffled)[1]


def test_directory_errors(tmp_path, txt_folder):
    with pytest.raises(ValueError, match="directory"):
        load_image_text_folder(str(tmp_path / "nope"))
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="directory"):
        load_image_text_folder(str(f))
    with pytest.raises(ValueError, match="directory"):
        scan_image_text_folder(None)


@pytest.mark.parametrize("resolution", [0, -3, 2.5, "256", True])
def test_resolution_error(txt_folder, resolution):
    with pytest.raises(ValueError, match="resolution"):
        load_image_text_folder(txt_folder, resolution=resolution)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5])
def test_batch_size_error(txt_folder, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        load_image_text_folder(txt_folder, batch_size=batch_size)


def test_caption_source_error(txt_folder):
    with pytest.raises(ValueError, match="caption_source"):
        load_image_text_folder(txt_folder, caption_source="yaml")
    with pytest.raises(ValueError, match="caption_source"):
        scan_image_text_folder(txt_folder, caption_source="yaml")
    # Explicit table source without the table file.
    with pytest.raises(ValueError, match="captions.csv"):
        scan_image_text_folder(txt_folder, caption_source="csv")


def test_csv_without_required_columns(tmp_path):
    root = tmp_path / "badcsv"
    root.mkdir()
    (root / "captions.csv").write_text("path,label\na.png,x\n")
    with pytest.raises(ValueError, match="file_name or image"):
        scan_image_text_folder(str(root))


def test_zero_usable_pairs_explains_why(tmp_path):
    root = str(tmp_path / "bad")
    _save(root, "a.png", _solid((8, 8), RED), "PNG")
    _save(root, "b.png", _solid((8, 8), RED), "PNG")
    _write(root, "b.txt", "")
    with pytest.raises(ValueError, match=r"0 usable pairs") as exc:
        load_image_text_folder(root, verbose=False)
    msg = str(exc.value)
    assert "1 missing_caption" in msg and "1 empty_caption" in msg

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no files with extensions"):
        load_image_text_folder(str(empty), verbose=False)
