"""Prompt strings -> fixed-length T5 token ids and padding mask."""

import json
import os
import shutil
import uuid
import warnings

import keras
import numpy as np
from keras_hub.models import T5Preprocessor
from keras_hub.models import T5Tokenizer

# keras-hub's own preprocessors use these: the decorator converts raw inputs to
# tf tensors and outputs back to backend tensors (eager) or leaves them as tf
# tensors (inside tf.data); `in_tf_function` tells whether inputs are symbolic.
from keras_hub.src.utils.tensor_utils import in_tf_function
from keras_hub.src.utils.tensor_utils import preprocessing_function

from keras_muse.models.text import sentencepiece_utils
from keras_muse.models.text import text_presets
from keras_muse.models.text.t5_text_encoder import MuseTextEncoder

# The unconditional input of classifier-free guidance (paper §2.7). It packs to
# `[</s>, <pad>, ...]` with one True in the padding mask: a real (if empty) T5
# encoding, never an all-False mask, which would leave cross-attention with
# nothing to attend to.
UNCONDITIONAL_PROMPT = ""

PREPROCESSOR_CONFIG_FILE = "preprocessor.json"


class PromptTruncationWarning(UserWarning):
    """Prompts were longer than the preprocessor's `sequence_length`.

    `num_truncated` and `num_prompts` let callers that tokenize in chunks
    (e.g. `TextEmbeddingCache.build`) report one total instead of many.
    """

    def __init__(self, message, num_truncated=0, num_prompts=0):
        super().__init__(message)
        self.num_truncated = num_truncated
        self.num_prompts = num_prompts

TOKENIZER_CONFIG_FILE = "tokenizer.json"


def check_sequence_length(value, name="sequence_length"):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise ValueError(
            f"`{name}` must be an int >= 2 (at least one token and the end "
            f"token). Received: {name}={value!r}"
        )
    return int(value)


def standardize_prompts(prompts, name="prompts"):
    """Checks prompts; returns a str, a list of str, or a tf string tensor.

    Python containers are checked element by element (keras-hub would quietly
    stringify `["a", 3]` via numpy); tensors (tf.data) by dtype and rank.
    """
    if isinstance(prompts, (str, np.str_)):
        return str(prompts)
    if isinstance(prompts, (bytes, np.bytes_)):
        return bytes(prompts).decode("utf-8")
    if isinstance(prompts, np.ndarray):
        if prompts.ndim > 1:
            raise ValueError(
                f"`{name}` must be a string or a 1-D batch of strings. "
                f"Received an array of shape {prompts.shape}."
            )
        if prompts.dtype.kind not in "USO":
            raise ValueError(
                f"`{name}` must contain strings. Received an array of dtype {prompts.dtype}."
            )
        prompts = prompts.tolist() if prompts.ndim == 1 else prompts.item()
        return standardize_prompts(prompts, name)
    if isinstance(prompts, (list, tuple)):
        if len(prompts) == 0:
            raise ValueError(f"`{name}` must hold at least one prompt. Received an empty batch.")
        out = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, (bytes, np.bytes_)):
                prompt = bytes(prompt).decode("utf-8")
            if not isinstance(prompt, (str, np.str_)):
                raise ValueError(
                    f"`{name}` must contain only strings. Received "
                    f"{type(prompt).__name__} at index {i}: {prompt!r}"
                )
            out.append(str(prompt))
        return out
    dtype = getattr(prompts, "dtype", None)
    shape = getattr(prompts, "shape", None)
    if dtype is not None and shape is not None:
        if getattr(dtype, "name", str(dtype)) != "string":
            raise ValueError(
                f"`{name}` must contain strings. Received a tensor of dtype "
                f"{getattr(dtype, 'name', dtype)}."
            )
        rank = shape.rank if hasattr(shape, "rank") else len(shape)
        if rank is not None and rank > 1:
            raise ValueError(
                f"`{name}` must be a string or a 1-D batch of strings. "
                f"Received a tensor of shape {shape}."
            )
        if rank == 1 and shape[0] == 0:
            raise ValueError(f"`{name}` must hold at least one prompt. Received an empty batch.")
        return prompts
    raise ValueError(
        f"`{name}` must be a string or a list of strings. Received: "
        f"{type(prompts).__name__} {prompts!r}"[:300]
    )


def _token_lengths(tokens):
    """Token counts of concrete tokenizer output (ragged, list or 1-D array)."""
    if hasattr(tokens, "row_lengths"):
        return np.asarray(tokens.row_lengths()).tolist()
    shape = getattr(tokens, "shape", None)
    if shape is not None and len(shape) == 1:
        return [int(shape[0])]
    return [len(t) for t in tokens]


def _merge_into(src_dir, dst_dir):
    """Moves every file of `src_dir` into `dst_dir`, each with an atomic rename.

    Preprocessor files join a preset directory that may already hold a model
    (keras-hub's layout), so the directory is merged into, never replaced.
    """
    for root, _, files in os.walk(src_dir):
        rel = os.path.relpath(root, src_dir)
        target = os.path.normpath(os.path.join(dst_dir, rel))
        os.makedirs(target, exist_ok=True)
        for f in files:
            os.replace(os.path.join(root, f), os.path.join(target, f))


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseTextPreprocessor(T5Preprocessor):
    """Tokenizes prompts for `MuseTextEncoder` (paper §2.1).

    Wraps a `keras_hub.models.T5Tokenizer` (SentencePiece through
    tensorflow-text inside `tf.function`/`tf.data`, so tokenization can be
    exported with a SavedModel). Every prompt is padded to `sequence_length`
    with the end token `</s>` appended:

    - `"token_ids"`: int32 `[batch, sequence_length]`,
    - `"padding_mask"`: bool `[batch, sequence_length]`, True on real tokens
      and the end token.

    A prompt with more than `sequence_length - 1` tokens is truncated (its end
    token is kept) with a `PromptTruncationWarning` (a `UserWarning`) when the
    inputs are concrete (not inside `tf.data`). The empty prompt `""` is the unconditional input of
    classifier-free guidance: `[</s>, <pad>, ...]`, padding mask True at
    position 0 only.

    Args:
        tokenizer: a `keras_hub.models.T5Tokenizer`.
        sequence_length: int >= 2, the packed length (128; the paper does not
            give one, and Imagen, which uses the same T5-XXL, uses 128).
        add_start_token: bool, prepend `</s>` as a start token (T5 does not).
        add_end_token: must be True: the end token keeps the empty prompt from
            having no real token at all.

    Example:
    ```python
    proto = sentencepiece_utils.train_sentencepiece(captions, vocab_size=64)
    preprocessor = MuseTextPreprocessor(
        keras_hub.models.T5Tokenizer(proto=proto), sequence_length=32
    )
    x = preprocessor(["a red circle on the left", ""])
    x["token_ids"].shape, x["padding_mask"].dtype    # (2, 32), bool
    ds = tf.data.Dataset.from_tensor_slices(captions).batch(8).map(preprocessor)

    preprocessor = MuseTextPreprocessor.from_preset("t5_1.1_xxl")  # downloads
    preprocessor = MuseTextPreprocessor.from_preset("muse_text_tiny")
    ```
    """

    backbone_cls = MuseTextEncoder
    tokenizer_cls = T5Tokenizer

    def __init__(
        self,
        tokenizer,
        sequence_length=128,
        add_start_token=False,
        add_end_token=True,
        **kwargs,
    ):
        sequence_length = check_sequence_length(sequence_length)
        if not add_end_token:
            raise ValueError(
                "`add_end_token` must be True: without it the empty "
                "(unconditional) prompt packs to an all-padding sequence. "
                f"Received: add_end_token={add_end_token!r}"
            )
        if not isinstance(tokenizer, T5Tokenizer):
            raise ValueError(
                "`tokenizer` must be a keras_hub.models.T5Tokenizer. "
                f"Received: {type(tokenizer).__name__}"
            )
        if add_start_token and sequence_length < 3:
            raise ValueError(
                "`sequence_length` must be >= 3 with `add_start_token=True`. "
                f"Received: sequence_length={sequence_length}"
            )
        super().__init__(
            tokenizer,
            sequence_length=sequence_length,
            add_start_token=add_start_token,
            add_end_token=add_end_token,
            **kwargs,
        )

    @property
    def max_prompt_tokens(self):
        """Tokens of a prompt that fit before truncation."""
        return self.sequence_length - 1 - int(bool(self.add_start_token))

    def call(self, x, y=None, sample_weight=None, sequence_length=None):
        if sequence_length is None:
            sequence_length = self.sequence_length
        else:
            sequence_length = check_sequence_length(sequence_length)
        x = standardize_prompts(x)
        return self._pack(x, y=y, sample_weight=sample_weight, sequence_length=sequence_length)

    @preprocessing_function
    def _pack(self, x, y=None, sample_weight=None, sequence_length=None):
        if in_tf_function():
            self._refresh_tf_tokenizer()
        tokens = self.tokenizer(x)
        if not in_tf_function():
            self._warn_if_truncated(x, tokens, sequence_length)
        token_ids, padding_mask = self.packer(
            tokens,
            sequence_length=sequence_length,
            add_start_value=self.add_start_token,
            add_end_value=self.add_end_token,
        )
        x = {"token_ids": token_ids, "padding_mask": padding_mask}
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def _refresh_tf_tokenizer(self):
        """Re-creates the tensorflow-text SentencePiece resource if it died.

        `keras.utils.set_random_seed` (via `tf.random.set_seed`) clears TF's
        kernel caches, which deletes the resource a tokenizer built earlier
        holds; a `tf.data` map traced afterwards then fails with "Resource
        .../SentencepieceOp does not exist". Seeding after building the
        preprocessor is the usual order in training scripts. A live resource
        is kept (an exporter may be tracking it); a dead one is replaced,
        eagerly, before the trace captures it.
        """
        tokenizer = self.tokenizer
        refresh = getattr(tokenizer, "_set_proto_tf", None)
        if refresh is None or tokenizer.proto is None:
            return
        import tensorflow as tf  # only reached while tracing a tf.function

        with tf.init_scope():
            current = getattr(tokenizer, "_sentence_piece", None)
            if current is not None and tf.executing_eagerly():
                try:
                    current.tokenize(tf.constant([""]))
                    return
                except tf.errors.NotFoundError:
                    pass
            refresh(tokenizer.proto)

    def _warn_if_truncated(self, prompts, tokens, sequence_length):
        limit = sequence_length - 1 - int(bool(self.add_start_token))
        lengths = _token_lengths(tokens)
        over = [i for i, n in enumerate(lengths) if n > limit]
        if not over:
            return
        prompts = np.asarray(prompts).reshape(-1)
        example = prompts[over[0]]
        if isinstance(example, bytes):
            example = example.decode("utf-8", "replace")
        message = (
            f"{len(over)} of {len(lengths)} prompts are longer than "
            f"{limit} tokens (longest: {max(lengths)}) and were truncated to "
            f"sequence_length={sequence_length} with the end token, e.g. "
            f"{str(example)[:120]!r}."
        )
        warnings.warn(
            PromptTruncationWarning(message, len(over), len(lengths)), stacklevel=2
        )

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, preset, config_file=PREPROCESSOR_CONFIG_FILE, **kwargs):
        """Builds the preprocessor of a preset.

        `preset` may be a keras-hub T5 name ("t5_1.1_xxl" or "t5_1_1_xxl";
        needs a download), a named config preset ("muse_text_tiny"), a local
        directory saved by `save_to_preset` (ours or keras-hub's T5) or a
        `kaggle://`/`hf://` handle. `kwargs` (e.g. `sequence_length`) override
        the saved configuration.
        """
        if not isinstance(preset, (str, os.PathLike)):
            raise ValueError(f"`preset` must be a preset name or a path. Received: {preset!r}")
        preset = os.fspath(preset)
        entry = MuseTextEncoder.config_presets.get(preset)
        if entry is not None:
            return cls.from_config_preset(preset, **kwargs)
        hub_name = text_presets.keras_hub_t5_preset(preset)
        if hub_name is not None and not os.path.isdir(preset):
            tokenizer = text_presets.fetch(preset, T5Tokenizer.from_preset, hub_name)
            return cls(tokenizer=tokenizer, **kwargs)
        if os.path.isdir(preset):
            return cls._from_local_dir(preset, config_file, **kwargs)
        if preset.startswith(("kaggle://", "hf://", "modelscope://", "gs://")):
            return cls._from_remote(preset, config_file, **kwargs)
        known = ", ".join(sorted(MuseTextEncoder.config_presets))
        raise ValueError(
            f"`preset` {preset!r} is neither a preset name (ours: {known}; or a "
            "keras-hub T5 name such as 't5_1.1_xxl') nor an existing directory."
        )

    @classmethod
    def from_config_preset(cls, name, **kwargs):
        entry = MuseTextEncoder.config_presets[name]
        spec = dict(entry.get("preprocessor") or {})
        if spec.get("vocabulary") != "shapes":
            raise ValueError(
                f"Preset {name!r} has no offline tokenizer (its vocabulary is "
                "T5's, which needs a download). Use a keras-hub T5 preset name "
                "or a local preset directory."
            )
        proto = sentencepiece_utils.shapes_sentencepiece_proto()
        config = {"sequence_length": spec.get("sequence_length", 128), **kwargs}
        return cls(tokenizer=T5Tokenizer(proto=proto), **config)

    @classmethod
    def _from_local_dir(cls, preset, config_file, **kwargs):
        config_path = os.path.join(preset, config_file)
        if os.path.isfile(config_path):
            try:
                with open(config_path, encoding="utf-8") as f:
                    config = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(
                    f"`preset` {preset!r}: {config_file} is unreadable or corrupt ({e})."
                ) from None
            registered = keras.saving.get_registered_object(
                config.get("registered_name", "") if isinstance(config, dict) else ""
            )
            if registered is not None and issubclass(registered, cls):
                config["config"] = {**config["config"], **kwargs}
                preprocessor = keras.saving.deserialize_keras_object(config)
                try:
                    preprocessor.load_preset_assets(preset)
                except (OSError, ValueError, RuntimeError) as e:
                    raise ValueError(
                        f"`preset` {preset!r}: the tokenizer vocabulary "
                        "(assets/tokenizer/vocabulary.spm) is missing or corrupt "
                        f"({type(e).__name__}: {e})."
                    ) from None
                return preprocessor
        # A keras-hub T5 preset (or a model preset without a preprocessor):
        # take its tokenizer and our packing defaults.
        if not os.path.isfile(os.path.join(preset, TOKENIZER_CONFIG_FILE)):
            raise ValueError(
                f"`preset` {preset!r} has neither a {config_file} of a "
                f"MuseTextPreprocessor nor a {TOKENIZER_CONFIG_FILE}: it holds no "
                "tokenizer. Save one with `save_to_preset`."
            )
        try:
            tokenizer = T5Tokenizer.from_preset(preset)
        except Exception as e:
            raise ValueError(
                f"`preset` {preset!r}: the tokenizer could not be loaded "
                f"({type(e).__name__}: {e})."
            ) from e
        return cls(tokenizer=tokenizer, **kwargs)

    @classmethod
    def _from_remote(cls, preset, config_file, **kwargs):
        from keras_hub.src.utils.preset_utils import get_preset_loader

        loader = text_presets.fetch(preset, get_preset_loader, preset)
        if issubclass(loader.check_backbone_class(), MuseTextEncoder):
            return text_presets.fetch(
                preset, loader.load_preprocessor, cls, config_file, **kwargs
            )
        tokenizer = text_presets.fetch(preset, T5Tokenizer.from_preset, preset)
        return cls(tokenizer=tokenizer, **kwargs)

    def save_to_preset(self, preset_dir):
        """Writes preprocessor.json, tokenizer.json and the vocabulary.

        The files join `preset_dir` (which may hold a model already); each is
        written to a temporary directory first and renamed into place.
        """
        from keras_hub.src.utils.preset_utils import get_preset_saver

        preset_dir = os.path.abspath(os.fspath(preset_dir))
        os.makedirs(preset_dir, exist_ok=True)
        tmp = os.path.join(
            os.path.dirname(preset_dir),
            f".{os.path.basename(preset_dir)}.pre-{uuid.uuid4().hex}",
        )
        try:
            get_preset_saver(tmp).save_preprocessor(self)
            _merge_into(tmp, preset_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
