"""The frozen T5 text encoder of Muse (paper §2.1), on keras-hub's T5."""

import json
import os
import warnings

import keras
import numpy as np
from keras import ops
from keras_hub.models import Backbone
from keras_hub.models import T5Backbone

from keras_muse.utils.untracked import Untracked
from keras_muse.models.text import text_presets
from keras_muse.models.text.text_presets import MUSE_TEXT_ENCODER_PRESETS
from keras_muse.utils.preset_utils import PresetMixin

_REMOTE_PREFIXES = ("kaggle://", "hf://", "modelscope://", "gs://")
# `T5Backbone` arguments that fix the architecture (and so the weights).
_T5_ARGS = (
    "vocabulary_size",
    "num_layers",
    "num_heads",
    "hidden_dim",
    "intermediate_dim",
    "key_value_dim",
    "dropout",
    "activation",
    "use_gated_activation",
    "layer_norm_epsilon",
    "tie_embedding_weights",
)
# keras-hub's T5 layers take their attention mask as a `mask` argument, which
# Keras then warns "does not support masking" about: not actionable here.
_T5_MASK_WARNING = ".*does not support masking.*"


def _registered_class(preset_dir):
    """The class a local preset's config.json names, or None if unreadable."""
    try:
        with open(os.path.join(preset_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        return keras.saving.get_registered_object(config["registered_name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _release_decoder(t5_backbone, keep):
    """Frees the T5 decoder's weights, which the encoder never reads.

    The decoder holds more than half of T5's parameters (6.4B of T5-XXL's 11B),
    and keras-hub's functional T5Backbone builds it with the encoder. Only JAX
    can free a variable's buffer in place; elsewhere the memory stays.
    """
    if keras.config.backend() != "jax":
        return
    keep = {id(v) for v in keep}
    for variable in t5_backbone.weights:
        value = getattr(variable, "_value", None)
        if id(variable) in keep or value is None or not hasattr(value, "delete"):
            continue
        try:
            value.delete()
        except RuntimeError:
            pass


def _check_preprocessor(preprocessor, vocabulary_size):
    # Imported here: the preprocessor module imports this one (keras-hub's
    # `backbone_cls` link).
    from keras_muse.models.text.text_preprocessor import MuseTextPreprocessor

    if preprocessor is None:
        return None
    if not isinstance(preprocessor, MuseTextPreprocessor):
        raise ValueError(
            "`preprocessor` must be a MuseTextPreprocessor or None. "
            f"Received: {type(preprocessor).__name__}"
        )
    vocab = preprocessor.tokenizer.vocabulary_size()
    if vocab > vocabulary_size:
        raise ValueError(
            f"`preprocessor`'s vocabulary ({vocab} pieces) is larger than the "
            f"encoder's vocabulary_size={vocabulary_size}: some token ids would "
            "have no embedding."
        )
    return preprocessor


class _BackboneWithPreprocessor(Backbone):
    """A Backbone whose presets also carry the preprocessor it is given.

    Sits under `PresetMixin` in the MRO, so the preprocessor is written into
    the same temporary directory as the model and both land atomically.
    """

    def save_to_preset(self, preset_dir, max_shard_size=10):
        super().save_to_preset(preset_dir, max_shard_size=max_shard_size)
        if self.preprocessor is not None:
            self.preprocessor.save_to_preset(preset_dir)


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseTextEncoder(PresetMixin, _BackboneWithPreprocessor):
    """A (frozen) T5 encoder: token ids -> text embeddings (paper §2.1).

    Holds a keras-hub `T5Backbone` but runs only its encoder: the encoder is a
    sub-model from the backbone's `encoder_token_ids`/`encoder_padding_mask`
    inputs to its `encoder_sequence_output`. Outputs at padding positions are
    set to zero (the T5 encoder computes values there that carry no meaning;
    zeros keep caches and padded batches clean). Frozen by default, as in
    Muse; `trainable=True` fine-tunes it (e.g. a tiny encoder trained with the
    shapes domain). While frozen, dropout is off even inside a training step.

    Inputs `{"token_ids": int32 [B, L], "padding_mask": bool/int [B, L]}` (as
    `MuseTextPreprocessor` produces), output: float `[B, L, hidden_dim]`.

    Args:
        vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim,
        key_value_dim, dropout, activation, use_gated_activation,
        layer_norm_epsilon, tie_embedding_weights: the `T5Backbone`
            architecture (same names and defaults).
        trainable: bool, False (frozen) by default.
        preprocessor: optional `MuseTextPreprocessor`, used by `encode_text`
            and saved with the model's presets. Not part of `get_config`.
        dtype: dtype policy, e.g. "bfloat16" for T5-XXL.

    Example:
    ```python
    # The paper's encoder (downloads T5-XXL from Kaggle via keras-hub):
    encoder = MuseTextEncoder.from_preset("t5_1.1_xxl", dtype="bfloat16")
    # A tiny one that works offline (random weights, shapes vocabulary):
    encoder = MuseTextEncoder.from_preset("muse_text_tiny", load_weights=False)

    embeddings, mask = encoder.encode_text(["a red circle", ""], batch_size=32)
    embeddings.shape, mask.shape          # (2, 32, 64), (2, 32)

    x = encoder.preprocessor(["a red circle"])
    encoder(x).shape                      # (1, 32, 64)
    encoder.save_to_preset("./text_encoder")  # weights + tokenizer
    ```
    """

    config_presets = MUSE_TEXT_ENCODER_PRESETS

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        key_value_dim=None,
        dropout=0.1,
        activation="relu",
        use_gated_activation=True,
        layer_norm_epsilon=1e-6,
        tie_embedding_weights=True,
        trainable=False,
        preprocessor=None,
        dtype=None,
        **kwargs,
    ):
        t5_backbone = kwargs.pop("_t5_backbone", None)
        for name, value in (
            ("vocabulary_size", vocabulary_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("hidden_dim", hidden_dim),
            ("intermediate_dim", intermediate_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
        if hidden_dim % num_heads and key_value_dim is None:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_heads` (or pass "
                f"`key_value_dim`). Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
            )

        _check_preprocessor(preprocessor, vocabulary_size)

        # === Layers ===
        owns_backbone = t5_backbone is None
        if owns_backbone:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_T5_MASK_WARNING)
                t5_backbone = T5Backbone(
                    vocabulary_size=vocabulary_size,
                    num_layers=num_layers,
                    num_heads=num_heads,
                    hidden_dim=hidden_dim,
                    intermediate_dim=intermediate_dim,
                    key_value_dim=key_value_dim,
                    dropout=dropout,
                    activation=activation,
                    use_gated_activation=use_gated_activation,
                    layer_norm_epsilon=layer_norm_epsilon,
                    tie_embedding_weights=tie_embedding_weights,
                    dtype=dtype,
                    name="t5",
                )
            # keras-hub builds the T5 token table with `TruncatedNormal(1.0)`,
            # i.e. mean 1.0 and stddev 0.05: every token starts as nearly the
            # same vector (harmless when checkpoint weights overwrite it, fatal
            # when a small T5 trains from scratch: measured, a trained shapes
            # model's text features differed by 2 % between "red circle" and
            # "blue square" and the transformer ignored them). Re-drawn as
            # N(0, 1), T5's own initialization; loaded weights replace it.
            table = t5_backbone.token_embedding.embeddings
            table.assign(keras.random.normal(table.shape, stddev=1.0, dtype=table.dtype))
        elif not isinstance(t5_backbone, T5Backbone):
            raise ValueError(
                f"`_t5_backbone` must be a keras_hub T5Backbone. Received: {type(t5_backbone).__name__}"
            )
        self.t5_encoder = keras.Model(
            inputs={
                "encoder_token_ids": t5_backbone.input["encoder_token_ids"],
                "encoder_padding_mask": t5_backbone.input["encoder_padding_mask"],
            },
            outputs=t5_backbone.output["encoder_sequence_output"],
            name="t5_encoder",
        )

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self.t5_encoder(
            {"encoder_token_ids": token_ids, "encoder_padding_mask": padding_mask}
        )
        outputs = x * ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=outputs,
            dtype=dtype,
            **kwargs,
        )
        self.trainable = trainable
        if owns_backbone:
            _release_decoder(t5_backbone, self.weights)

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.key_value_dim = key_value_dim
        self.dropout = dropout
        self.activation = activation
        self.use_gated_activation = use_gated_activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.tie_embedding_weights = tie_embedding_weights
        self._preprocessor = Untracked(None)
        self.preprocessor = preprocessor

    def __setattr__(self, name, value):
        # Straight to the property: Keras would otherwise track the
        # preprocessor as a sub-layer before the setter runs.
        if name == "preprocessor":
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    @property
    def preprocessor(self):
        """The `MuseTextPreprocessor` used by `encode_text` (or None)."""
        return self._preprocessor.value

    @preprocessor.setter
    def preprocessor(self, value):
        self._preprocessor.value = _check_preprocessor(value, self.vocabulary_size)

    def call(self, inputs, training=None, mask=None):
        # Frozen means a fixed function: no dropout even when the model that
        # uses it trains (Keras would otherwise pass `training=True` down).
        if not self.trainable:
            training = False
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_T5_MASK_WARNING)
            return super().call(inputs, training=training, mask=mask)

    # -------------------------------------------------------------- encoding
    def encode_text(self, prompts, batch_size=32):
        """Tokenizes and encodes prompts; returns NumPy arrays.

        Every batch has the same shape (the last one is padded), so the
        compiled forward pass is traced once per `batch_size`.

        Args:
            prompts: str or list of str; "" is the unconditional prompt.
            batch_size: int, prompts per forward pass.

        Returns:
            `(embeddings, padding_mask)`: float32 `[N, L, hidden_dim]` (zero
            at padding) and bool `[N, L]`, with L the preprocessor's
            `sequence_length`.
        """
        from keras_muse.models.text.text_preprocessor import standardize_prompts

        if self.preprocessor is None:
            raise ValueError(
                "`encode_text` needs a tokenizer, and this MuseTextEncoder has no "
                "`preprocessor`. Set `encoder.preprocessor = MuseTextPreprocessor(...)` "
                "or load a preset that has one."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
        prompts = standardize_prompts(prompts)
        if isinstance(prompts, str):
            prompts = [prompts]
        elif not isinstance(prompts, list):
            prompts = [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in np.asarray(prompts).tolist()]
        tokens = self.preprocessor(prompts)
        token_ids = np.asarray(ops.convert_to_numpy(tokens["token_ids"]), "int32")
        padding_mask = np.asarray(ops.convert_to_numpy(tokens["padding_mask"]), bool)
        n = len(prompts)
        batch_size = min(int(batch_size), n)
        outputs = []
        for start in range(0, n, batch_size):
            ids = token_ids[start : start + batch_size]
            mask = padding_mask[start : start + batch_size]
            real = len(ids)
            if real < batch_size:
                # Repeat the first row: an all-padding row would be a
                # meaningless input, and the shape stays the compiled one.
                fill = batch_size - real
                ids = np.concatenate([ids, np.repeat(ids[:1], fill, 0)])
                mask = np.concatenate([mask, np.repeat(mask[:1], fill, 0)])
            out = self.predict_on_batch({"token_ids": ids, "padding_mask": mask})
            outputs.append(np.asarray(out, dtype="float32")[:real])
        return np.concatenate(outputs), padding_mask

    # ----------------------------------------------------------- distribution
    @staticmethod
    def get_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
        """A `keras.distribution.LayoutMap` sharding T5 over the mesh.

        Megatron-style on the model axis: query/key/value and the MLP's
        input/gate kernels split their output dimension, the attention and
        MLP output kernels their input dimension, so each layer needs one
        all-reduce per block; the other dimension is split over the data axis
        (keras-hub's convention); the embedding splits the hidden dimension.
        Norms and the relative position bias are small and replicated. Rules
        and reasons: `keras_muse.distribution.layout_maps`.

        Example:
        ```python
        mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"))
        keras.distribution.set_distribution(keras.distribution.ModelParallel(
            layout_map=MuseTextEncoder.get_layout_map(mesh), batch_dim_name="batch"))
        encoder = MuseTextEncoder.from_preset("t5_1.1_xxl", dtype="bfloat16")
        ```
        """
        from keras_muse.distribution import layout_maps

        return layout_maps.text_encoder_layout_map(device_mesh, model_parallel_dim_name, data_parallel_dim_name)

    # ---------------------------------------------------------------- presets
    @classmethod
    def from_t5_backbone(cls, t5_backbone, preprocessor=None, trainable=False, **kwargs):
        """Wraps an existing keras-hub `T5Backbone` (weights shared, not copied)."""
        if not isinstance(t5_backbone, T5Backbone):
            raise ValueError(
                "`t5_backbone` must be a keras_hub.models.T5Backbone. "
                f"Received: {type(t5_backbone).__name__}"
            )
        config = t5_backbone.get_config()
        return cls(
            **{k: config[k] for k in _T5_ARGS},
            trainable=trainable,
            preprocessor=preprocessor,
            dtype=t5_backbone.dtype_policy,
            _t5_backbone=t5_backbone,
            **kwargs,
        )

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads an encoder (and its tokenizer) from a preset.

        `preset` is one of:
        - a keras-hub T5 preset name: "t5_1.1_xxl" (the paper's; also spelt
          "t5_1_1_xxl"), "t5_small_multi", ... Downloads from Kaggle; offline
          this raises `PresetDownloadError` saying how to use a local copy;
        - a named config preset: "muse_text_tiny" (with `load_weights=False`);
        - a local directory saved by `MuseTextEncoder.save_to_preset` or by
          keras-hub (`T5Backbone` + `T5Tokenizer`), or a `kaggle://`/`hf://`
          handle of either.

        Args:
            preset: str or path.
            load_weights: bool; False builds the architecture with random
                weights.
            **kwargs: `sequence_length` (for the preprocessor), `trainable`,
                `dtype`, and config overrides.
        """
        if not isinstance(preset, (str, os.PathLike)):
            raise ValueError(f"`preset` must be a preset name or a path. Received: {preset!r}")
        preset = os.fspath(preset)
        preprocessor_kwargs = {
            k: kwargs.pop(k) for k in ("sequence_length",) if k in kwargs
        }
        is_dir = os.path.isdir(preset)
        if preset not in cls.config_presets:
            hub_name = text_presets.keras_hub_t5_preset(preset)
            if hub_name is not None and not is_dir:
                return cls._from_t5_preset(hub_name, preset, load_weights, preprocessor_kwargs, kwargs)
            if is_dir:
                registered = _registered_class(preset)
                if registered is not None and issubclass(registered, T5Backbone):
                    return cls._from_t5_preset(preset, preset, load_weights, preprocessor_kwargs, kwargs)
            elif preset.startswith(_REMOTE_PREFIXES):
                from keras_hub.src.utils.preset_utils import get_preset_loader

                loader = text_presets.fetch(preset, get_preset_loader, preset)
                if issubclass(loader.check_backbone_class(), T5Backbone):
                    return cls._from_t5_preset(preset, preset, load_weights, preprocessor_kwargs, kwargs)
                model = text_presets.fetch(
                    preset, super().from_preset, preset, load_weights=load_weights, **kwargs
                )
                model.preprocessor = cls._preset_preprocessor(preset, preprocessor_kwargs)
                return model
        model = super().from_preset(preset, load_weights=load_weights, **kwargs)
        model.preprocessor = cls._preset_preprocessor(preset, preprocessor_kwargs)
        return model

    @classmethod
    def _preset_preprocessor(cls, preset, preprocessor_kwargs):
        from keras_muse.models.text.text_preprocessor import MuseTextPreprocessor

        entry = cls.config_presets.get(preset)
        if entry is not None:
            has_tokenizer = bool(entry.get("preprocessor"))
        elif os.path.isdir(preset):
            has_tokenizer = any(
                os.path.isfile(os.path.join(preset, f))
                for f in ("preprocessor.json", "tokenizer.json")
            )
        else:
            has_tokenizer = True
        if not has_tokenizer:
            if preprocessor_kwargs:
                raise ValueError(
                    f"`sequence_length` was given, but preset {preset!r} has no "
                    "tokenizer to use it with."
                )
            return None
        return MuseTextPreprocessor.from_preset(preset, **preprocessor_kwargs)

    @classmethod
    def _from_t5_preset(cls, source, shown, load_weights, preprocessor_kwargs, kwargs):
        """Builds from a keras-hub T5 preset (name, handle or local copy)."""
        from keras_muse.models.text.text_preprocessor import MuseTextPreprocessor

        trainable = kwargs.pop("trainable", False)
        name = kwargs.pop("name", None)
        remote = not os.path.isdir(source)

        def load(fn, *args, **fn_kwargs):
            if remote:
                return text_presets.fetch(shown, fn, *args, **fn_kwargs)
            try:
                return fn(*args, **fn_kwargs)
            except ValueError:
                raise
            except Exception as e:
                raise ValueError(
                    f"`preset` {shown!r} (a keras-hub T5 preset) could not be "
                    f"loaded (truncated or corrupt files?): {type(e).__name__}: {e}"
                ) from e

        # The tokenizer first: a few hundred KB, so an offline machine fails
        # before anything large is attempted.
        if remote or os.path.isfile(os.path.join(source, "tokenizer.json")):
            # `shown` resolves to the same preset and keeps the caller's
            # spelling in error messages.
            preprocessor = load(MuseTextPreprocessor.from_preset, shown, **preprocessor_kwargs)
        elif preprocessor_kwargs:
            raise ValueError(
                f"`sequence_length` was given, but preset {shown!r} has no tokenizer."
            )
        else:
            preprocessor = None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_T5_MASK_WARNING)
            t5_backbone = load(T5Backbone.from_preset, source, load_weights=load_weights, **kwargs)
        model = cls.from_t5_backbone(
            t5_backbone, preprocessor=preprocessor, trainable=trainable,
            **({"name": name} if name else {}),
        )
        _release_decoder(t5_backbone, model.weights)
        return model

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            key_value_dim=self.key_value_dim,
            dropout=self.dropout,
            activation=self.activation,
            use_gated_activation=self.use_gated_activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            tie_embedding_weights=self.tie_embedding_weights,
        )
        return config
