"""A `tf.data` loader for a folder of images with captions.

This is the entry point for training Muse on your own data. The folder can
hold captions in one of three layouts:

1. Sidecar text files: ``cat.jpg`` + ``cat.txt`` (same stem, same folder),
   searched recursively through subfolders.
2. ``captions.jsonl`` at the root, one JSON object per line::

       {"file_name": "animals/cat.jpg", "text": "a cat on a sofa"}

   (``"image"`` is accepted for ``"file_name"``, ``"caption"`` for ``"text"``).
3. ``captions.csv`` at the root with a header naming the same columns::

       file_name,text
       animals/cat.jpg,a cat on a sofa

Example:

```python
from keras_muse.datasets.image_text_folder import load_image_text_folder

ds, report = load_image_text_folder(
    "my_photos/", resolution=256, batch_size=16, seed=0, return_report=True
)
print(report.summary())
# image_text_folder: 980 usable pairs; skipped: 15 missing_caption, 5 unreadable
for batch in ds.take(1):
    batch["images"]    # uint8 [16, 256, 256, 3]
    batch["captions"]  # tf.string [16]
```

Problems are reported up front instead of surfacing mid-epoch: images
without a caption (or with an empty one) and files that cannot be decoded
are skipped during the scan, counted, and summarised in one line. Should a
file still fail to decode while training (e.g. it changed on disk, or
``validate=False``), it is dropped rather than ending the epoch.
"""

import concurrent.futures
import csv
import dataclasses
import json
import logging
import os

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
CAPTION_SOURCES = ("auto", "txt", "jsonl", "csv")
JSONL_NAME = "captions.jsonl"
CSV_NAME = "captions.csv"
_PATH_KEYS = ("file_name", "image")
_TEXT_KEYS = ("text", "caption")

# Formats `tf.io.decode_image` understands. PIL opens many more (TIFF, ICO,
# ...), and a file whose extension lies about its content must be rejected at
# scan time rather than crash the TF decoder later. MPO is the multi-picture
# JPEG variant some cameras write; its first frame is a plain JPEG stream.
_TF_DECODABLE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"})

# Fixed order for the summary line so it reads the same on every run,
# regardless of the order in which files happened to be encountered.
_REASON_ORDER = (
    "missing_caption",
    "empty_caption",
    "missing_image",
    "unsupported_extension",
    "malformed_entry",
    "unsupported_format",
    "unreadable",
)


@dataclasses.dataclass
class FolderScan:
    """What `scan_image_text_folder` found.

    Attributes:
        directory: The scanned root directory.
        caption_source: The caption layout actually used (`"txt"`,
            `"jsonl"` or `"csv"`; `"auto"` is resolved).
        image_paths: Absolute paths of the usable images.
        captions: Caption for each entry of `image_paths`.
        skipped: Reason -> number of skipped entries, e.g.
            `{"missing_caption": 2, "empty_caption": 1, "unreadable": 1}`.
        skipped_files: Reason -> paths that were skipped for that reason, so
            users can find and fix them.
        validated: Whether images were test-decoded during the scan. If not,
            `skipped` has no `"unreadable"` count and corrupt files are only
            dropped (uncounted) while iterating.
    """

    directory: str
    caption_source: str
    image_paths: list = dataclasses.field(default_factory=list)
    captions: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)
    skipped_files: dict = dataclasses.field(default_factory=dict)
    validated: bool = True

    def __len__(self):
        return len(self.image_paths)

    @property
    def num_skipped(self):
        return sum(self.skipped.values())

    def summary(self):
        """One line, e.g. `image_text_folder: 8 usable pairs; skipped: ...`."""
        if self.skipped:
            reasons = ", ".join(
                f"{count} {reason}" for reason, count in self._ordered_skips()
            )
        else:
            reasons = "none"
        line = f"image_text_folder: {len(self)} usable pairs; skipped: {reasons}"
        if not self.validated:
            line += " (images not validated)"
        return line

    def _ordered_skips(self):
        def rank(item):
            reason = item[0]
            if reason in _REASON_ORDER:
                return _REASON_ORDER.index(reason)
            return len(_REASON_ORDER)

        return sorted(self.skipped.items(), key=rank)

    def _skip(self, reason, path):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skipped_files.setdefault(reason, []).append(path)


# ---------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------


def _is_int(value):
    # bool is an int subclass; `resolution=True` is surely a mistake.
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_directory(directory):
    if directory is None or not isinstance(directory, (str, os.PathLike)):
        raise ValueError(
            "Argument `directory` must be a path to an existing directory. "
            f"Received: directory={directory!r}"
        )
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.exists(directory):
        raise ValueError(
            "Argument `directory` must be an existing directory, but "
            f"'{directory}' does not exist."
        )
    if not os.path.isdir(directory):
        raise ValueError(
            "Argument `directory` must be a directory, but "
            f"'{directory}' is a file."
        )
    return directory


def _check_caption_source(caption_source):
    if caption_source not in CAPTION_SOURCES:
        raise ValueError(
            "Argument `caption_source` must be one of "
            f"{CAPTION_SOURCES}. Received: caption_source={caption_source!r}"
        )


def _normalize_extensions(image_extensions):
    if isinstance(image_extensions, str):
        image_extensions = (image_extensions,)
    try:
        exts = tuple(image_extensions)
    except TypeError:
        exts = ()
    if not exts or not all(isinstance(e, str) and e.strip(".") for e in exts):
        raise ValueError(
            "Argument `image_extensions` must be a non-empty sequence of file "
            "extensions such as ('.jpg', '.png'). "
            f"Received: image_extensions={image_extensions!r}"
        )
    return tuple("." + e.lower().lstrip(".") for e in exts)


# ---------------------------------------------------------------------------
# Scanning
# ---------------------------------------------------------------------------


def _is_hidden(name):
    # macOS/zip tools leave "._photo.jpg" AppleDouble files next to real
    # images; they carry an image extension but are not images, and
    # counting them as "unreadable" would only confuse users.
    return name.startswith(".")


def _find_images(directory, extensions):
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(files):
            if _is_hidden(name):
                continue
            if os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.join(root, name))
    return found


def _read_text(path):
    # utf-8-sig drops the BOM that Windows editors like to prepend, which
    # would otherwise end up as an invisible token in the caption.
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return f.read().strip()


def _pick(row, keys):
    for key in keys:
        value = row.get(key)
        if value is not None:
            return value
    return None


def _resolve_relative(directory, rel):
    return os.path.normpath(os.path.join(directory, os.fspath(rel)))


def _scan_sidecar(scan, directory, extensions):
    for path in _find_images(directory, extensions):
        txt = os.path.splitext(path)[0] + ".txt"
        if not os.path.isfile(txt):
            scan._skip("missing_caption", path)
            continue
        caption = _read_text(txt)
        if not caption:
            scan._skip("empty_caption", path)
            continue
        scan.image_paths.append(path)
        scan.captions.append(caption)


def _read_jsonl_rows(path):
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                row = {"__malformed__": f"{path}:{line_no}"}
            rows.append(row)
    return rows


def _read_csv_rows(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = fields
        if not any(k in fields for k in _PATH_KEYS) or not any(
            k in fields for k in _TEXT_KEYS
        ):
            raise ValueError(
                f"'{path}' must have a header row with a path column "
                f"({' or '.join(_PATH_KEYS)}) and a caption column "
                f"({' or '.join(_TEXT_KEYS)}). Found columns: {fields}"
            )
        return list(reader)


def _scan_table(scan, directory, extensions, rows):
    # Images present on disk but absent from the table count as
    # missing_caption, mirroring the sidecar layout, so the report tells the
    # user how much of their folder is actually used.
    captioned = set()
    for row in rows:
        if "__malformed__" in row:
            scan._skip("malformed_entry", row["__malformed__"])
            continue
        rel = _pick(row, _PATH_KEYS)
        if not rel or not isinstance(rel, str):
            scan._skip("malformed_entry", json.dumps(row, default=str)[:200])
            continue
        path = _resolve_relative(directory, rel.strip())
        captioned.add(path)
        if os.path.splitext(path)[1].lower() not in extensions:
            scan._skip("unsupported_extension", path)
            continue
        if not os.path.isfile(path):
            scan._skip("missing_image", path)
            continue
        caption = _pick(row, _TEXT_KEYS)
        caption = caption.strip() if isinstance(caption, str) else ""
        if not caption:
            scan._skip("empty_caption", path)
            continue
        scan.image_paths.append(path)
        scan.captions.append(caption)
    for path in _find_images(directory, extensions):
        if path not in captioned:
            scan._skip("missing_caption", path)


def _check_image(path):
    """Return None if TF will be able to decode `path`, else a reason."""
    try:
        with Image.open(path) as img:
            fmt = img.format
            # verify() checks structure and, for PNG, chunk CRCs; it is
            # cheap but does not decode pixel data.
            img.verify()
        if fmt not in _TF_DECODABLE_FORMATS:
            return "unsupported_format"
        # verify() leaves the image unusable and misses truncated JPEG
        # scans, so decode once more. draft() lets libjpeg decode at 1/8
        # scale, which still walks the whole entropy-coded stream (catching
        # truncation) at a fraction of the cost of a full decode.
        with Image.open(path) as img:
            if fmt in ("JPEG", "MPO"):
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception:  # noqa: BLE001 - any failure means "cannot use this"
        return "unreadable"
    return None


def _validate_images(scan):
    # Decoding is I/O- and C-bound (PIL releases the GIL), so threads give a
    # near-linear speed-up on large folders without pickling overhead.
    workers = min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(_check_image, scan.image_paths))
    keep_paths, keep_captions = [], []
    for path, caption, problem in zip(scan.image_paths, scan.captions, problems):
        if problem is None:
            keep_paths.append(path)
            keep_captions.append(caption)
        else:
            scan._skip(problem, path)
    scan.image_paths, scan.captions = keep_paths, keep_captions


def scan_image_text_folder(
    directory,
    caption_source="auto",
    image_extensions=DEFAULT_IMAGE_EXTENSIONS,
    validate=True,
):
    """Find image/caption pairs in `directory` without loading pixels into TF.

    Args:
        directory: Root folder of the dataset.
        caption_source: `"auto"` (use `captions.jsonl` if present, else
            `captions.csv`, else sidecar `.txt` files), `"txt"`, `"jsonl"`
            or `"csv"`.
        image_extensions: File extensions treated as images
            (case-insensitive).
        validate: Test-decode every image with PIL so that corrupt files are
            excluded and counted as `"unreadable"` before training starts.

    Returns:
        A `FolderScan`. An empty scan is returned rather than raising, so
        callers can inspect why nothing was usable.
    """
    directory = _check_directory(directory)
    _check_caption_source(caption_source)
    extensions = _normalize_extensions(image_extensions)

    source = caption_source
    if source == "auto":
        if os.path.isfile(os.path.join(directory, JSONL_NAME)):
            source = "jsonl"
        elif os.path.isfile(os.path.join(directory, CSV_NAME)):
            source = "csv"
        else:
            source = "txt"

    scan = FolderScan(directory=directory, caption_source=source, validated=validate)
    if source == "txt":
        _scan_sidecar(scan, directory, extensions)
    else:
        name = JSONL_NAME if source == "jsonl" else CSV_NAME
        table = os.path.join(directory, name)
        if not os.path.isfile(table):
            raise ValueError(
                f"caption_source={source!r} expects '{name}' at the root of "
                f"`directory`, but '{table}' does not exist."
            )
        rows = _read_jsonl_rows(table) if source == "jsonl" else _read_csv_rows(table)
        _scan_table(scan, directory, extensions, rows)

    if validate and scan.image_paths:
        _validate_images(scan)
    return scan


# ---------------------------------------------------------------------------
# tf.data pipeline
# ---------------------------------------------------------------------------


def _decode_resize_crop(path, caption, resolution):
    import tensorflow as tf  # lazy: `import keras_muse` must work without TF (e.g. JAX-only GPU hosts)

    data = tf.io.read_file(path)
    image = tf.io.decode_image(
        data, channels=3, dtype=tf.uint8, expand_animations=False
    )
    image = tf.ensure_shape(image, [None, None, 3])
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    # Crop the centred square first and resize only that: it is the same
    # "short side -> resolution, then centre crop" mapping (up to sub-pixel
    # rounding), but avoids resampling pixels that would be thrown away,
    # which matters for wide panoramas and large photos.
    side = tf.minimum(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    square = image[top : top + side, left : left + side, :]
    # Antialiasing prevents moire/aliasing when downscaling large photos.
    resized = tf.image.resize(
        square, [resolution, resolution], method="bilinear", antialias=True
    )
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    resized = tf.ensure_shape(resized, [resolution, resolution, 3])
    return {"images": resized, "captions": caption}


def load_image_text_folder(
    directory,
    resolution=256,
    batch_size=None,
    shuffle=True,
    seed=None,
    caption_source="auto",
    image_extensions=DEFAULT_IMAGE_EXTENSIONS,
    repeat=False,
    drop_remainder=False,
    return_report=False,
    validate=True,
    verbose=True,
):
    """Build a `tf.data.Dataset` of `{"images", "captions"}` from a folder.

    Each image is decoded (first frame for animations), resized so its short
    side equals `resolution` and centre-cropped to a square.

    Args:
        directory: Root folder of the dataset (see module docstring).
        resolution: Output side length in pixels (positive int).
        batch_size: If set, elements are batched; if `None`, single examples
            `{"images": uint8 [res, res, 3], "captions": tf.string []}`.
        shuffle: Shuffle the examples, with a new order every epoch.
        seed: Shuffle seed; fixes the sequence of epoch orders.
        caption_source: `"auto"`, `"txt"`, `"jsonl"` or `"csv"`.
        image_extensions: File extensions treated as images.
        repeat: `False` for one epoch, `True` to repeat forever, or a
            positive int number of epochs.
        drop_remainder: Drop the last partial batch (gives static batch
            shapes, which XLA-compiled training steps prefer).
        return_report: Also return the `FolderScan` with skip counts.
        validate: Test-decode every image during the scan so corrupt files
            are excluded and counted before training (see
            `scan_image_text_folder`).
        verbose: Print the one-line summary. It is logged at INFO level
            regardless.

    Returns:
        The dataset, or `(dataset, report)` if `return_report=True`.

    Raises:
        ValueError: For invalid arguments or if no usable pair is found.
    """
    directory = _check_directory(directory)
    if not _is_int(resolution) or resolution <= 0:
        raise ValueError(
            "Argument `resolution` must be a positive integer. "
            f"Received: resolution={resolution!r}"
        )
    resolution = int(resolution)
    if batch_size is not None and (not _is_int(batch_size) or batch_size <= 0):
        raise ValueError(
            "Argument `batch_size` must be None or a positive integer. "
            f"Received: batch_size={batch_size!r}"
        )
    if seed is not None and not _is_int(seed):
        raise ValueError(
            f"Argument `seed` must be None or an integer. Received: seed={seed!r}"
        )
    if not (isinstance(repeat, bool) or (_is_int(repeat) and repeat > 0)):
        raise ValueError(
            "Argument `repeat` must be a bool or a positive integer number of "
            f"epochs. Received: repeat={repeat!r}"
        )
    _check_caption_source(caption_source)

    scan = scan_image_text_folder(
        directory,
        caption_source=caption_source,
        image_extensions=image_extensions,
        validate=validate,
    )
    summary = scan.summary()
    logger.info(summary)
    if verbose:
        print(summary)

    if not scan.image_paths:
        if scan.skipped:
            details = "; ".join(
                f"{count} {reason} (e.g. '{scan.skipped_files[reason][0]}')"
                for reason, count in scan._ordered_skips()
            )
        else:
            details = (
                "no files with extensions "
                f"{_normalize_extensions(image_extensions)} were found"
            )
        raise ValueError(
            f"Argument `directory` must contain at least one usable image with "
            f"a non-empty caption (caption_source={scan.caption_source!r}), "
            f"but '{directory}' has 0 usable pairs out of {scan.num_skipped} "
            f"entries found. Skipped: {details}."
        )

    import tensorflow as tf  # lazy: see _decode_resize_crop

    ds = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(scan.image_paths, dtype=tf.string),
            tf.constant(scan.captions, dtype=tf.string),
        )
    )
    if shuffle:
        # Shuffling paths (not pixels) lets the buffer hold the whole
        # dataset cheaply, giving a true uniform shuffle.
        ds = ds.shuffle(
            buffer_size=len(scan.image_paths),
            seed=seed,
            reshuffle_each_iteration=True,
        )
    if repeat is True:
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(int(repeat))

    ds = ds.map(
        lambda path, caption: _decode_resize_crop(path, caption, resolution),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    # Safety net for files that break after the scan (or when validate=False):
    # drop the element instead of aborting the epoch. Placed before batching
    # so one bad file costs one example, not a whole batch.
    ds = ds.ignore_errors(log_warning=True)

    if batch_size is not None:
        ds = ds.batch(
            batch_size,
            drop_remainder=drop_remainder,
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.prefetch(tf.data.AUTOTUNE)

    if return_report:
        return ds, scan
    return ds
