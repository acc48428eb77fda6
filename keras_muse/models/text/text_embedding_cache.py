"""Precomputed text embeddings on disk (the text encoder is frozen, paper §2.1).

Training Muse runs the frozen T5 encoder on every caption of every epoch
unless the embeddings are computed once and read back; for T5-XXL the encoder
costs more than the Muse transformer step itself. A cache is a directory:

```
cache/
  meta.json                 format, shapes, dtype, encoder fingerprint, caption hash
  captions.json             the N captions, in order
  caption_index.npy         int32 [N]: caption i -> row of the arrays below
  text_embeddings.npy       float [U, L, D], one row per distinct caption
  text_padding_mask.npy     bool  [U, L]
```

Identical captions share a row. The arrays are memory-mapped on load, so a
cache larger than RAM streams from disk. A cache is written into a temporary
sibling directory and renamed into place, so readers never see half of one.

A cache is stale when the captions differ, when the encoder's fingerprint
(architecture, dtype, tokenizer vocabulary and packing) differs, or when the
encoder's weights changed: `load` re-encodes a few stored captions and
compares, so retrained weights are caught without hashing billions of
parameters.

Example:

```python
encoder = MuseTextEncoder.from_preset("muse_text_tiny", load_weights=False)
images, captions, _ = shapes.make_arrays(10_000)
cache = TextEmbeddingCache.load_or_build("./cache", captions, encoder)
ds = cache.as_tf_dataset(batch_size=64, shuffle=True, repeat=True,
                         extra={"images": images})
batch = next(iter(ds))  # {"text_embeddings": [64, L, D], "text_padding_mask":
                        #  [64, L], "images": [64, 64, 64, 3]}
```
"""

import hashlib
import json
import os
import shutil
import uuid
import warnings

import numpy as np

from keras_muse.models.text.text_preprocessor import UNCONDITIONAL_PROMPT
from keras_muse.models.text.text_preprocessor import standardize_prompts
from keras_muse.models.text.text_preprocessor import PromptTruncationWarning

FORMAT_VERSION = 2
_ARRAYS = ("caption_index", "text_embeddings", "text_padding_mask")
_DTYPES = ("float32", "float16")


class StaleTextEmbeddingCacheError(ValueError):
    """The cache on disk was made from other captions or another encoder."""


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def captions_hash(captions):
    """A hash of the caption list (order matters: rows follow captions)."""
    digest = hashlib.sha256()
    for caption in captions:
        encoded = caption.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def encoder_fingerprint(text_encoder):
    """A hash of everything but the weights that decides the embeddings."""
    preprocessor = _require_preprocessor(text_encoder)
    config = dict(text_encoder.get_config())
    for key in ("name", "trainable"):
        config.pop(key, None)
    spec = {
        "encoder": config,
        "compute_dtype": str(text_encoder.compute_dtype),
        "sequence_length": int(preprocessor.sequence_length),
        "add_start_token": bool(preprocessor.add_start_token),
        "add_end_token": bool(preprocessor.add_end_token),
        "vocabulary_sha256": _sha256(preprocessor.tokenizer.proto),
    }
    return _sha256(json.dumps(spec, sort_keys=True, default=str).encode("utf-8"))


def _require_preprocessor(text_encoder):
    preprocessor = getattr(text_encoder, "preprocessor", None)
    if preprocessor is None:
        raise ValueError(
            "`text_encoder` must be a MuseTextEncoder with a `preprocessor` "
            f"(tokenizer). Received: {type(text_encoder).__name__} without one."
        )
    return preprocessor


def _check_captions(captions):
    if isinstance(captions, (str, bytes)):
        raise ValueError("`captions` must be a list of strings, not a single string.")
    captions = list(captions)
    if not captions:
        raise ValueError("`captions` must hold at least one caption. Received an empty list.")
    return standardize_prompts(captions, "captions")


def _report_truncation(caught, num_unique, sequence_length):
    truncated = 0
    for w in caught:
        if isinstance(w.message, PromptTruncationWarning):
            truncated += w.message.num_truncated
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if truncated:
        warnings.warn(
            PromptTruncationWarning(
                f"{truncated} of {num_unique} distinct captions were truncated to "
                f"sequence_length={sequence_length} in the cached embeddings.",
                truncated,
                num_unique,
            ),
            stacklevel=3,
        )


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)


def _replace_dir(tmp, path):
    """Renames `tmp` to `path`, replacing an existing directory."""
    if os.path.exists(path):
        old = f"{tmp}.old"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


class TextEmbeddingCache:
    """Text embeddings of a caption list, memory-mapped from a cache directory.

    Build one with `TextEmbeddingCache.build` (always writes),
    `TextEmbeddingCache.load` (checks freshness, raises
    `StaleTextEmbeddingCacheError`) or `TextEmbeddingCache.load_or_build`
    (rebuilds when missing or stale). See the module docstring for the layout.

    Attributes:
        path: the cache directory.
        captions: list of the N captions.
        meta: dict from meta.json.
        caption_index: int32 `[N]`, caption -> row.
        text_embeddings: `[U, L, D]` memmap, one row per distinct caption.
        text_padding_mask: bool `[U, L]` memmap.

    Example:
    ```python
    cache = TextEmbeddingCache.build("./cache", captions, encoder, batch_size=64)
    cache[0]        # {"text_embeddings": [L, D], "text_padding_mask": [L]}
    cache.get(np.arange(8))  # the same for 8 captions at once
    ```
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        meta_path = os.path.join(self.path, "meta.json")
        if not os.path.isfile(meta_path):
            raise ValueError(
                f"`path` {self.path!r} is not a text embedding cache (no meta.json). "
                "Create one with `TextEmbeddingCache.build`."
            )
        try:
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
            with open(os.path.join(self.path, "captions.json"), encoding="utf-8") as f:
                self.captions = json.load(f)
            arrays = {
                name: np.load(os.path.join(self.path, f"{name}.npy"), mmap_mode="r")
                for name in _ARRAYS
            }
        except (OSError, ValueError) as e:
            raise ValueError(
                f"Text embedding cache {self.path!r} is corrupt or incomplete "
                f"({type(e).__name__}: {e}). Rebuild it with `TextEmbeddingCache.build`."
            ) from None
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise StaleTextEmbeddingCacheError(
                f"Text embedding cache {self.path!r} has format "
                f"{self.meta.get('format_version')!r}; this version reads {FORMAT_VERSION}."
            )
        n, u = self.meta["num_captions"], self.meta["num_unique"]
        shape = (u, self.meta["sequence_length"], self.meta["hidden_dim"])
        if (
            len(self.captions) != n
            or arrays["caption_index"].shape != (n,)
            or arrays["text_embeddings"].shape != shape
            or arrays["text_padding_mask"].shape != shape[:2]
        ):
            raise ValueError(
                f"Text embedding cache {self.path!r} is corrupt: its arrays do not "
                f"match meta.json ({n} captions, embeddings {shape}). Rebuild it."
            )
        self.caption_index = arrays["caption_index"]
        self.text_embeddings = arrays["text_embeddings"]
        self.text_padding_mask = arrays["text_padding_mask"]

    # ---------------------------------------------------------------- writing
    @classmethod
    def build(cls, path, captions, text_encoder, batch_size=32, dtype="float32"):
        """Encodes `captions` with `text_encoder` and writes the cache at `path`.

        Args:
            path: cache directory (replaced atomically if it exists).
            captions: list of str (duplicates are encoded once).
            text_encoder: a `MuseTextEncoder` with a preprocessor.
            batch_size: int, captions per forward pass.
            dtype: "float32" or "float16" (half the disk; ~1e-3 relative error).
        """
        captions = _check_captions(captions)
        _require_preprocessor(text_encoder)
        if dtype not in _DTYPES:
            raise ValueError(f"`dtype` must be one of {_DTYPES}. Received: {dtype!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int. Received: {batch_size!r}")
        path = os.path.abspath(os.fspath(path))
        rows = {}
        caption_index = np.array([rows.setdefault(c, len(rows)) for c in captions], "int32")
        # The empty prompt is always encoded too: condition dropout in
        # training replaces a caption's embeddings with it (paper §2.7).
        unconditional_row = rows.setdefault(UNCONDITIONAL_PROMPT, len(rows))
        unique = list(rows)
        sequence_length = int(text_encoder.preprocessor.sequence_length)
        hidden_dim = int(text_encoder.hidden_dim)

        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        os.makedirs(tmp)
        try:
            np.save(os.path.join(tmp, "caption_index.npy"), caption_index)
            # Written chunk by chunk into memory maps: the encoder's output for
            # a large caption set need not fit in RAM.
            embeddings = np.lib.format.open_memmap(
                os.path.join(tmp, "text_embeddings.npy"), mode="w+", dtype=dtype,
                shape=(len(unique), sequence_length, hidden_dim),
            )
            masks = np.lib.format.open_memmap(
                os.path.join(tmp, "text_padding_mask.npy"), mode="w+", dtype=bool,
                shape=(len(unique), sequence_length),
            )
            chunk = max(int(batch_size), 1) * 16
            with warnings.catch_warnings(record=True) as caught:
                # Chunks would each warn about their long captions: one
                # total is reported below instead.
                warnings.simplefilter("always", PromptTruncationWarning)
                for start in range(0, len(unique), chunk):
                    emb, mask = text_encoder.encode_text(unique[start : start + chunk], batch_size)
                    embeddings[start : start + len(emb)] = emb.astype(dtype)
                    masks[start : start + len(mask)] = mask
            embeddings.flush()
            masks.flush()
            del embeddings, masks
            _write_json(os.path.join(tmp, "captions.json"), captions)
            _write_json(
                os.path.join(tmp, "meta.json"),
                {
                    "format_version": FORMAT_VERSION,
                    "num_captions": len(captions),
                    "num_unique": len(unique),
                    "unconditional_row": unconditional_row,
                    "sequence_length": sequence_length,
                    "hidden_dim": hidden_dim,
                    "dtype": dtype,
                    "captions_sha256": captions_hash(captions),
                    "encoder_fingerprint": encoder_fingerprint(text_encoder),
                    "encoder_config": {
                        k: v for k, v in text_encoder.get_config().items()
                        if k not in ("dtype",)
                    },
                },
            )
            _replace_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _report_truncation(caught, len(unique), sequence_length)
        return cls(path)

    # ---------------------------------------------------------------- reading
    @classmethod
    def load(cls, path, captions=None, text_encoder=None, num_verify=2):
        """Opens a cache and checks it is fresh.

        Args:
            path: cache directory.
            captions: optional list of str: must equal the cached captions.
            text_encoder: optional `MuseTextEncoder`: its fingerprint must
                match, and re-encoding `num_verify` cached captions must give
                the stored embeddings (catches changed weights).
            num_verify: int >= 0, captions re-encoded for the weight check.

        Raises:
            StaleTextEmbeddingCacheError: (a `ValueError`) if stale.
        """
        cache = cls(path)
        if captions is not None:
            captions = _check_captions(captions)
            if captions_hash(captions) != cache.meta["captions_sha256"]:
                raise StaleTextEmbeddingCacheError(
                    f"Text embedding cache {cache.path!r} holds other captions "
                    f"({cache.meta['num_captions']} cached, {len(captions)} given, "
                    "or a different order/content). Rebuild it."
                )
        if text_encoder is not None:
            if encoder_fingerprint(text_encoder) != cache.meta["encoder_fingerprint"]:
                raise StaleTextEmbeddingCacheError(
                    f"Text embedding cache {cache.path!r} was made with another "
                    "text encoder configuration (architecture, dtype, vocabulary "
                    "or sequence_length differ). Rebuild it."
                )
            cache._verify_weights(text_encoder, num_verify)
        return cache

    @classmethod
    def load_or_build(cls, path, captions, text_encoder, batch_size=32, dtype="float32"):
        """`load` if the cache at `path` is fresh, else `build` (with a warning)."""
        if os.path.isfile(os.path.join(os.fspath(path), "meta.json")):
            try:
                return cls.load(path, captions, text_encoder)
            except ValueError as e:
                warnings.warn(f"Rebuilding the text embedding cache: {e}", UserWarning, stacklevel=2)
        return cls.build(path, captions, text_encoder, batch_size=batch_size, dtype=dtype)

    def _verify_weights(self, text_encoder, num_verify):
        if num_verify <= 0:
            return
        # Spread over the cache: the first and last rows, then between.
        rows = np.unique(np.linspace(0, self.meta["num_unique"] - 1, num_verify).astype(int))
        row_prompt = {int(self.meta["unconditional_row"]): UNCONDITIONAL_PROMPT}
        for i, row in enumerate(np.asarray(self.caption_index)):
            row_prompt.setdefault(int(row), self.captions[i])
        prompts = [row_prompt[int(r)] for r in rows]
        fresh, _ = text_encoder.encode_text(prompts, batch_size=len(prompts))
        stored = np.asarray(self.text_embeddings[rows], "float32")
        # Batches here differ from the build's; in float32 that changes
        # results by round-off only, in (b)float16 by up to ~1e-2 relative.
        low_precision = self.meta["dtype"] == "float16" or str(
            text_encoder.compute_dtype
        ) in ("float16", "bfloat16")
        tol = 2e-2 if low_precision else 1e-4
        scale = max(float(np.abs(stored).max()), 1.0)
        if not np.allclose(fresh, stored, rtol=tol, atol=tol * scale):
            raise StaleTextEmbeddingCacheError(
                f"Text embedding cache {self.path!r} does not match the text "
                "encoder's current weights (re-encoded captions differ by up to "
                f"{float(np.abs(fresh - stored).max()):.3g}). Rebuild it."
            )

    def unconditional(self):
        """`(embeddings [L, D], padding_mask [L])` of the empty prompt, for
        `MuseTextToImage.compile(unconditional_text_embeddings=...)`."""
        row = int(self.meta["unconditional_row"])
        return (
            np.asarray(self.text_embeddings[row], "float32"),
            np.asarray(self.text_padding_mask[row], bool),
        )

    def __len__(self):
        return len(self.captions)

    def get(self, indices):
        """Embeddings and masks of captions `indices` (int or int array)."""
        rows = np.asarray(self.caption_index)[indices]
        if np.ndim(rows) == 0:
            return {
                "text_embeddings": np.asarray(self.text_embeddings[int(rows)]),
                "text_padding_mask": np.asarray(self.text_padding_mask[int(rows)]),
            }
        # Sorted unique reads are sequential on disk; then scatter back.
        unique, inverse = np.unique(rows, return_inverse=True)
        return {
            "text_embeddings": np.asarray(self.text_embeddings[unique])[inverse],
            "text_padding_mask": np.asarray(self.text_padding_mask[unique])[inverse],
        }

    def __getitem__(self, index):
        return self.get(index)

    # --------------------------------------------------------------- tf.data
    def as_tf_dataset(
        self,
        batch_size=None,
        shuffle=False,
        seed=None,
        repeat=False,
        drop_remainder=None,
        extra=None,
        include_captions=False,
    ):
        """A `tf.data.Dataset` of `{"text_embeddings", "text_padding_mask", ...}`.

        Args:
            batch_size: None (single examples) or a positive int.
            shuffle: bool, permute indices (reshuffled every epoch, seeded by
                `seed`).
            seed: int or None.
            repeat: bool, loop forever.
            drop_remainder: bool; defaults to `repeat` (static batch shapes
                for an endless stream).
            extra: optional dict name -> array with N rows (e.g. images or
                image token ids), zipped with the embeddings by index.
            include_captions: bool, add "captions" (tf.string).
        """
        # tf.data is Keras' backend-independent input pipeline; imported here
        # so the cache can be built and read without TensorFlow.
        import tensorflow as tf

        n = len(self)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
        ):
            raise ValueError(f"`batch_size` must be None or a positive int. Received: {batch_size!r}")
        extra = dict(extra or {})
        for name in ("text_embeddings", "text_padding_mask", "captions"):
            if name in extra:
                raise ValueError(f"`extra` may not use the reserved key {name!r}.")
        for name, array in list(extra.items()):
            array = np.asarray(array)
            if array.ndim == 0 or len(array) != n:
                raise ValueError(
                    f"`extra[{name!r}]` must have {n} rows (one per caption). "
                    f"Received shape {array.shape}."
                )
            if array.dtype.kind == "U":
                array = np.char.encode(array, "utf-8")
            extra[name] = array
        names = ["text_embeddings", "text_padding_mask", *extra]
        captions = np.array([c.encode("utf-8") for c in self.captions], dtype=object) if include_captions else None
        if include_captions:
            names.append("captions")

        def fetch(indices):
            out = self.get(indices)
            values = [out["text_embeddings"], out["text_padding_mask"]]
            values += [extra[k][indices] for k in extra]
            if include_captions:
                values.append(captions[indices])
            return values

        specs = [
            (self.text_embeddings.dtype, self.text_embeddings.shape[1:]),
            (np.dtype(bool), self.text_padding_mask.shape[1:]),
        ] + [(a.dtype, a.shape[1:]) for a in extra.values()]
        if include_captions:
            specs.append((np.dtype(object), ()))
        tout = [tf.string if d.kind in "SO" else tf.as_dtype(d) for d, _ in specs]

        def tf_fetch(indices):
            values = tf.numpy_function(fetch, [indices], tout, stateful=False)
            return {
                name: tf.ensure_shape(v, (None, *shape))
                for name, v, (_, shape) in zip(names, values, specs)
            }

        ds = tf.data.Dataset.range(n)
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        if drop_remainder is None:
            drop_remainder = bool(repeat)
        # Indices are batched before reading, so each read is one vectorized
        # memmap gather rather than one Python call per example.
        ds = ds.batch(batch_size or 1, drop_remainder=bool(drop_remainder) and batch_size is not None)
        ds = ds.map(tf_fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if batch_size is None:
            ds = ds.unbatch()
        elif drop_remainder:
            ds = ds.map(
                lambda x: {
                    k: tf.ensure_shape(v, (batch_size, *v.shape[1:])) for k, v in x.items()
                }
            )
        return ds.prefetch(tf.data.AUTOTUNE)
