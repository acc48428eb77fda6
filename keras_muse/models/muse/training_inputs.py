"""The training-data forms `MuseTextToImage.fit` accepts, made one dict.

Users hand `fit` tuples like `(token_ids, prompts)`, `(images, prompts)` or
`(token_ids, (text_embeddings, text_padding_mask))`, or dicts; arrays or
`tf.data`/grain batches. `standardize_training_inputs` turns each batch into
one dict with an image key (`"token_ids"` or `"images"`) and text keys
(`"prompts"`, or `"text_embeddings"` + `"text_padding_mask"`, or
`"text_token_ids"` + `"text_padding_mask"`), so the train step has one form to
read. `validate_training_arrays` gives clear errors for in-memory data before
anything is traced.
"""

import numpy as np

IMAGE_KEYS = ("token_ids", "images")
# The super-resolution model's extra condition: the same scene at low res.
LOW_RES_KEYS = ("low_res_token_ids", "low_res_images")
TEXT_KEY_SETS = (
    ("prompts",),
    ("text_embeddings", "text_padding_mask"),
    ("text_token_ids", "text_padding_mask"),
)
_FORMS = (
    "(token_ids, prompts), (images, prompts), (token_ids, (text_embeddings, "
    "text_padding_mask)), or a dict with 'token_ids' or 'images' and "
    "'prompts' or 'text_embeddings' + 'text_padding_mask'"
)


def is_string_data(value):
    """True for a str, a list of str/bytes, or a string array/tensor."""
    if isinstance(value, (str, bytes)):
        return True
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(isinstance(v, (str, bytes)) for v in value)
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return False
    if getattr(dtype, "name", None) == "string":  # tf.string
        return True
    try:
        return np.dtype(dtype).kind in "USO"
    except TypeError:
        return False


def _rank(value):
    shape = getattr(value, "shape", None)
    return None if shape is None else len(shape)


def _text_entries(text):
    if isinstance(text, dict):
        return dict(text)
    if is_string_data(text) or (isinstance(text, (list, tuple)) and len(text) == 0):
        return {"prompts": text}
    if isinstance(text, (tuple, list)) and len(text) == 2:
        first, second = text
        if _rank(first) == 2 and "int" in str(getattr(first, "dtype", "")):
            return {"text_token_ids": first, "text_padding_mask": second}
        return {"text_embeddings": first, "text_padding_mask": second}
    raise ValueError(
        "The text part of the training data must be prompts (strings), or "
        "(text_embeddings, text_padding_mask). Received: "
        f"{type(text).__name__}"
    )


def _image_entry(image, prefix=""):
    rank = _rank(image)
    if rank == 4:
        return {prefix + "images": image}
    if rank in (2, 3):
        return {prefix + "token_ids": image}
    raise ValueError(
        f"The {prefix.replace('_', '-') or 'image '}part of the training data must be token ids "
        f"[batch, h, w] or [batch, N], or images [batch, H, W, 3]. Received rank {rank}."
    )


def standardize_training_inputs(x, y=None, low_res=False):
    """One batch (or the whole in-memory data) -> a dict of named parts.

    With `low_res=True` (the super-resolution model) the image part of a
    tuple is itself a pair `(low_res, high_res)` of ids or images, and dicts
    need one of `LOW_RES_KEYS` too.
    """
    if y is not None:
        x = (x, y)
    if isinstance(x, dict):
        data = dict(x)
    elif low_res and isinstance(x, (tuple, list)) and len(x) == 2 and not is_string_data(x):
        pair, text = x
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(
                "Super-resolution training data must be ((low_res, high_res), text) with ids or "
                "images for both resolutions, or a dict with 'low_res_token_ids' or "
                f"'low_res_images'. Received an image part of type {type(pair).__name__}."
            )
        data = {**_image_entry(pair[0], "low_res_"), **_image_entry(pair[1])}
        data.update(_text_entries(text))
    elif isinstance(x, (tuple, list)) and len(x) == 2 and not is_string_data(x):
        image, text = x
        rank = _rank(image)
        if rank == 4:
            data = {"images": image}
        elif rank in (2, 3):
            data = {"token_ids": image}
        else:
            raise ValueError(
                "The image part of the training data must be token ids [batch, h, w] "
                f"or [batch, N], or images [batch, H, W, 3]. Received rank {rank}."
            )
        data.update(_text_entries(text))
    else:
        raise ValueError(f"Training data must be one of {_FORMS}. Received: {type(x).__name__}")
    image_keys = [k for k in IMAGE_KEYS if k in data]
    if len(image_keys) != 1:
        raise ValueError(
            f"Training data must have exactly one of {IMAGE_KEYS}. Received keys: {sorted(data)}"
        )
    text_keys = [ks for ks in TEXT_KEY_SETS if all(k in data for k in ks)]
    if not text_keys or ("prompts" in data and "text_padding_mask" in data):
        raise ValueError(f"Training data must be one of {_FORMS}. Received keys: {sorted(data)}")
    allowed = set(IMAGE_KEYS) | {k for ks in TEXT_KEY_SETS for k in ks}
    if low_res:
        low_keys = [k for k in LOW_RES_KEYS if k in data]
        if len(low_keys) != 1:
            raise ValueError(
                f"Super-resolution training data must have exactly one of {LOW_RES_KEYS}. "
                f"Received keys: {sorted(data)}"
            )
        allowed |= set(LOW_RES_KEYS)
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"Unknown training data keys {sorted(unknown)}; expected {_FORMS}.")
    return data


def _batch_size(name, value):
    if isinstance(value, (str, bytes)):
        return 1
    if isinstance(value, (list, tuple)):
        return len(value)
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) == 0:
        raise ValueError(f"`{name}` must be batched (have a batch axis). Received: {value!r}")
    return shape[0]


def _validate_ids(name, ids, num_tokens, grid_size, codebook_size):
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"`{name}` must be integers. Received dtype {ids.dtype}.")
    if int(np.prod(ids.shape[1:])) != num_tokens:
        raise ValueError(
            f"`{name}` must have {num_tokens} tokens per example (grid "
            f"{grid_size[0]}x{grid_size[1]}). Received shape {ids.shape}."
        )
    if ids.min() < 0 or ids.max() >= codebook_size:
        raise ValueError(
            f"`{name}` must lie in [0, {codebook_size - 1}] (codebook ids; the "
            f"[MASK] id {codebook_size} is added by the task). Received values in "
            f"[{ids.min()}, {ids.max()}]."
        )


def _validate_images(name, images, has_vqgan, vqgan_arg="vqgan"):
    if not has_vqgan:
        raise ValueError(f"Training on `{name}` needs a `{vqgan_arg}` to tokenize them; attach one.")
    shape = np.shape(images)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"`{name}` must be [batch, H, W, 3]. Received shape {shape}.")


def validate_training_arrays(data, num_tokens, grid_size, codebook_size, text_dim, has_vqgan,
                             low_res=None):
    """Clear `ValueError`s for in-memory training data (numpy-convertible).

    `low_res`: for the super-resolution model, a dict with the low-res
    `num_tokens`, `grid_size`, `codebook_size` and `has_vqgan`.
    """
    sizes = {name: _batch_size(name, value) for name, value in data.items()}
    known = {n: s for n, s in sizes.items() if s is not None}
    if any(s == 0 for s in known.values()):
        raise ValueError(f"The training data is empty (batch sizes {known}).")
    if len(set(known.values())) > 1:
        raise ValueError(
            "The text batch must equal the image batch: every part of the "
            f"training data needs the same number of examples. Received {known}."
        )
    if "token_ids" in data:
        _validate_ids("token_ids", data["token_ids"], num_tokens, grid_size, codebook_size)
    if "images" in data:
        _validate_images("images", data["images"], has_vqgan)
    if low_res is not None and "low_res_token_ids" in data:
        _validate_ids("low_res_token_ids", data["low_res_token_ids"], low_res["num_tokens"],
                      low_res["grid_size"], low_res["codebook_size"])
    if low_res is not None and "low_res_images" in data:
        _validate_images("low_res_images", data["low_res_images"], low_res["has_vqgan"], "low_res_vqgan")
    if "text_embeddings" in data:
        emb = np.asarray(data["text_embeddings"])
        mask = np.asarray(data["text_padding_mask"])
        if emb.ndim != 3 or emb.shape[-1] != text_dim:
            raise ValueError(
                f"`text_embeddings` must be [batch, length, {text_dim}]. Received shape {emb.shape}."
            )
        if mask.shape != emb.shape[:2]:
            raise ValueError(
                f"`text_padding_mask` must be [batch, length] = {emb.shape[:2]}. "
                f"Received shape {mask.shape}."
            )
        if not np.all(np.isfinite(emb)):
            raise ValueError("`text_embeddings` contain NaN or inf.")
