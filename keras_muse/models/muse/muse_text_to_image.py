"""The Muse text-to-image Task: training with `fit` (and, later, generation)."""

import json
import os

import keras
import numpy as np
from keras import ops
from keras_hub.models import TextToImage

from keras_muse import backend as muse_backend
from keras_muse.layers.masked_head_loss import masked_head_loss
from keras_muse.layers.masking import SCHEDULES
from keras_muse.layers.masking import apply_mask
from keras_muse.layers.masking import sample_condition_dropout
from keras_muse.layers.masking import sample_token_mask
from keras_muse.models.muse.muse_backbone import MuseBackbone
from keras_muse.models.muse.muse_generation import MuseGenerationMixin
from keras_muse.models.muse.muse_generation import check_sampling_defaults
from keras_muse.models.muse.super_resolution_pipeline import SuperResolutionPipelineMixin
from keras_muse.models.muse.training_inputs import is_string_data
from keras_muse.models.muse.training_inputs import standardize_training_inputs
from keras_muse.models.muse.training_inputs import validate_training_arrays
from keras_muse.models.text.t5_text_encoder import MuseTextEncoder
from keras_muse.models.text.text_preprocessor import UNCONDITIONAL_PROMPT
from keras_muse.models.text.text_preprocessor import MuseTextPreprocessor
from keras_muse.models.vqgan.vqgan import VQGAN
from keras_muse.models.muse.muse_presets import MUSE_TEXT_TO_IMAGE_PRESETS
from keras_muse.utils.preset_utils import PACKAGE_PRESET_DIR
from keras_muse.utils.preset_utils import atomic_directory
from keras_muse.utils.preset_utils import same_model
from keras_muse.utils.untracked import Untracked

TASK_CONFIG_FILE = "task.json"
_METRICS = ("loss", "masked_accuracy")


def _check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseTextToImage(SuperResolutionPipelineMixin, MuseGenerationMixin, TextToImage):
    """Muse: text -> image tokens -> image (paper §2). Train it with `fit`;
    sample with `generate`, `inpaint`, `outpaint` and `edit` (see
    `MuseGenerationMixin`).

    Holds the base masked transformer (`backbone`, a `MuseBackbone`), and
    optionally the text encoder (`text_encoder`, a `MuseTextEncoder`, frozen
    unless `trainable_text_encoder=True`) and the image tokenizer (`vqgan`, a
    `VQGAN`, always frozen).

    `fit` trains the transformer as the paper does (§2.3, §2.6, §2.7): inside
    every train step, a masking rate r = cos(π/2·u) is drawn per example, and
    ceil(r·N) random image tokens are replaced by [MASK]; a fraction
    `condition_dropout` of the examples get the unconditional (empty) prompt;
    the loss is the cross-entropy on masked positions only (label smoothing
    `label_smoothing`), reported with the masked-token accuracy. The masks
    come from the task's `SeedGenerator`: fresh every step, reproducible for
    a `seed`. Training data is any of (tuples or dicts, arrays or datasets):

    - `(token_ids, prompts)`: int ids `[B, h, w]` or `[B, N]` + strings
      (tokenized by the text encoder's preprocessor in the input pipeline);
    - `(images, prompts)`: uint8 or [-1, 1] images `[B, H, W, 3]`, tokenized
      in the step by the attached frozen `vqgan`;
    - `(token_ids, (text_embeddings, text_padding_mask))`: precomputed text
      embeddings (e.g. a `TextEmbeddingCache`), no text encoder needed;
    - dicts with keys `"token_ids"` or `"images"`, and `"prompts"`, or
      `"text_embeddings"` + `"text_padding_mask"`, or `"text_token_ids"` +
      `"text_padding_mask"` (already tokenized).

    Args:
        backbone: `MuseBackbone`.
        text_encoder: `MuseTextEncoder` or None (precomputed embeddings).
        vqgan: `VQGAN` or None (training on token ids).
        preprocessor: `MuseTextPreprocessor`; default: the text encoder's.
        trainable_text_encoder: bool, train the text encoder jointly (the
            shapes domain, where no pre-trained T5 can be had); default False.
        condition_dropout: float, fraction of examples trained with the
            unconditional prompt (0.1, paper §2.7).
        mask_schedule: masking-rate schedule for training, one of
            `keras_muse.layers.masking.SCHEDULES` ("cosine").
        label_smoothing: float (0.1, MaskGIT).
        seed: int or None, seeds masks and condition dropout.
        super_resolution: a trained `MuseSuperResolution` whose low-res grid
            and codebook are this backbone's, or None. With one, `generate`,
            `inpaint`, `outpaint` and `edit` run base -> super-res -> the
            high-res decoder (see `SuperResolutionPipelineMixin`); `fit`
            still trains the base model only.
        sampling_defaults: dict or None, what `generate` uses for
            `num_steps`, `guidance_scale`, `guidance_schedule`,
            `temperature` and `choice_temperature` when they are not
            passed (the sampler arguments for the other methods); saved in
            the preset, so a trained preset carries the settings its
            evaluation chose.

    Example:
    ```python
    task = MuseTextToImage(
        backbone=MuseBackbone.from_preset("muse_tiny", load_weights=False,
                                          codebook_size=1024, grid_size=16,
                                          text_dim=64),
        text_encoder=MuseTextEncoder.from_preset("muse_text_tiny", load_weights=False),
        trainable_text_encoder=True,
    )
    task.compile(optimizer=keras.optimizers.AdamW(3e-4))
    task.fit((token_ids, captions), batch_size=32, epochs=1)  # ids [B, 16, 16]
    task.save_to_preset("./my_muse")
    ```
    """

    backbone_cls = MuseBackbone
    preprocessor_cls = MuseTextPreprocessor
    # Sub-models saved as sub-presets: (attribute, class).
    component_classes = (("text_encoder", MuseTextEncoder), ("vqgan", VQGAN))
    # Trained presets shipped inside the package, by short name.
    task_presets = MUSE_TEXT_TO_IMAGE_PRESETS
    # Whether training data carries a low-res condition (super-resolution).
    low_res_inputs = False

    def __init__(
        self,
        backbone,
        text_encoder=None,
        vqgan=None,
        preprocessor=None,
        trainable_text_encoder=False,
        condition_dropout=0.1,
        mask_schedule="cosine",
        label_smoothing=0.1,
        seed=None,
        super_resolution=None,
        sampling_defaults=None,
        **kwargs,
    ):
        if not isinstance(backbone, self.backbone_cls):
            raise ValueError(
                f"`backbone` must be a {self.backbone_cls.__name__}. Received: {type(backbone).__name__}"
            )
        if text_encoder is not None and not isinstance(text_encoder, MuseTextEncoder):
            raise ValueError(
                f"`text_encoder` must be a MuseTextEncoder or None. Received: {type(text_encoder).__name__}"
            )
        if vqgan is not None and not isinstance(vqgan, VQGAN):
            raise ValueError(f"`vqgan` must be a VQGAN or None. Received: {type(vqgan).__name__}")
        if text_encoder is not None and text_encoder.hidden_dim != backbone.text_dim:
            raise ValueError(
                f"The text encoder's width ({text_encoder.hidden_dim}) must equal the "
                f"backbone's `text_dim` ({backbone.text_dim})."
            )
        if vqgan is not None and vqgan.codebook_size != backbone.codebook_size:
            raise ValueError(
                f"The VQGAN's codebook ({vqgan.codebook_size}) must equal the "
                f"backbone's `codebook_size` ({backbone.codebook_size})."
            )
        if trainable_text_encoder and text_encoder is None:
            raise ValueError("`trainable_text_encoder=True` needs a `text_encoder`.")
        if mask_schedule not in SCHEDULES:
            raise ValueError(f"`mask_schedule` must be one of {SCHEDULES}. Received: {mask_schedule!r}")
        if preprocessor is None and text_encoder is not None:
            preprocessor = text_encoder.preprocessor
        if super_resolution is not None:
            self._check_super_resolution(backbone, super_resolution)
        # Untracked: the base `fit` must not see (or decay) its weights, and
        # it samples with its own compiled program.
        self._super_resolution = Untracked(super_resolution)

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.text_encoder = text_encoder
        self.vqgan = vqgan
        if text_encoder is not None:
            text_encoder.trainable = bool(trainable_text_encoder)
        if vqgan is not None:
            vqgan.trainable = False
        self.seed_generator = keras.random.SeedGenerator(seed, name="train_seed")
        # Created before the functional init: Keras locks tracking after it.
        self.trackers = {n: keras.metrics.Mean(name=n) for n in _METRICS}

        # === Functional Model ===
        inputs = backbone.input
        outputs = backbone(inputs)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.trainable_text_encoder = bool(trainable_text_encoder)
        self.condition_dropout = _check_rate("condition_dropout", condition_dropout)
        self.mask_schedule = mask_schedule
        self.label_smoothing = _check_rate("label_smoothing", label_smoothing)
        if self.label_smoothing >= 1.0:
            raise ValueError(f"`label_smoothing` must be < 1. Received: {label_smoothing}")
        self.seed = seed
        self.sampling_defaults = check_sampling_defaults(sampling_defaults)
        self._unconditional = {}
        self._generate_traces = 0

    # ------------------------------------------------------------- training
    def compile(self, optimizer="auto", unconditional_text_embeddings=None, **kwargs):
        """Configures training.

        Args:
            optimizer: "auto" is AdamW with the paper's App. A.1 settings
                (β = (0.9, 0.96), weight decay 0.045; lr 1e-4 with no schedule:
                pass your own optimizer for warm-up + cosine decay), or any
                Keras optimizer.
            unconditional_text_embeddings: `(embeddings [L, D], padding_mask
                [L])` of the empty prompt, used for condition dropout when
                training on precomputed embeddings without a text encoder
                (`TextEmbeddingCache.unconditional()` gives them).
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(
                1e-4, beta_1=0.9, beta_2=0.96, weight_decay=0.045, clipnorm=1.0
            )
        for name in ("loss", "metrics"):
            if kwargs.get(name) not in (None, "auto"):
                raise ValueError(
                    f"MuseTextToImage computes its own loss and metrics (masked-token "
                    f"cross-entropy and accuracy); do not pass `{name}`."
                )
            kwargs.pop(name, None)
        if unconditional_text_embeddings is not None:
            emb, mask = unconditional_text_embeddings
            emb, mask = np.asarray(emb, "float32"), np.asarray(mask, bool)
            if emb.ndim == 3 and emb.shape[0] == 1:
                emb, mask = emb[0], mask[0]
            if emb.ndim != 2 or emb.shape[-1] != self.backbone.text_dim or mask.shape != emb.shape[:1]:
                raise ValueError(
                    "`unconditional_text_embeddings` must be (embeddings [L, "
                    f"{self.backbone.text_dim}], padding_mask [L]). Received shapes "
                    f"{emb.shape} and {mask.shape}."
                )
            self._unconditional["embeddings"] = (emb, mask)
        keras.Model.compile(self, optimizer=optimizer, **kwargs)
        self.generate_function = None

    @property
    def metrics(self):
        return [self.trackers[n] for n in _METRICS]

    def _standardize(self, x, y=None):
        return standardize_training_inputs(x, y, low_res=self.low_res_inputs)

    def _low_res_spec(self):
        """Shapes of the low-res condition, for the super-resolution task."""
        return None

    def _condition_inputs(self, x):
        """Backbone inputs beyond tokens and text (the super-res low-res ids)."""
        return {}

    def preprocess_samples(self, x, y=None, sample_weight=None):
        x = self._standardize(x, y)
        if sample_weight is not None:
            # Carried to the train step as Keras' third element.
            return self._preprocess_text(x), None, sample_weight
        return self._preprocess_text(x)

    def _preprocess_text(self, x):
        if "prompts" in x:
            prompts = x.pop("prompts")
            if self.preprocessor is None:
                raise ValueError(
                    "Training on prompts needs a text preprocessor: attach a "
                    "`text_encoder` with one, or train on precomputed text embeddings."
                )
            tokens = self.preprocessor(prompts)
            x["text_token_ids"] = tokens["token_ids"]
            x["text_padding_mask"] = tokens["padding_mask"]
        return x

    def fit(self, x=None, y=None, batch_size=None, epochs=1, shuffle=True, sample_weight=None, **kwargs):
        """Trains on masked tokens; `x`/`y` take the forms of
        `keras_muse.models.muse.training_inputs`.

        `sample_weight` (in-memory data; or a dataset's third element)
        weights the masked-token loss: `[batch]` per example, or
        `[batch, N]` / `[batch, h, w]` per token (e.g. more weight on the
        tokens that show objects than on flat background). The loss is the
        weighted mean over the masked tokens, and `masked_accuracy` is
        weighted the same way.
        """
        self._check_arrays(x, y)
        in_memory = y is not None or isinstance(x, (tuple, list, dict))
        if sample_weight is not None and not in_memory:
            raise ValueError(
                "`sample_weight` goes with in-memory data; a dataset carries its weights as "
                "the third element of each batch, `(x, y, sample_weight)`."
            )
        if sample_weight is not None:
            sample_weight = self._check_sample_weight(sample_weight, x, y)
        self._prepare_unconditional()
        keys = self._data_keys(x, y)
        if self.condition_dropout > 0 and "text_embeddings" in keys:
            # Raised here, not while tracing the step (which would leave
            # half-built optimizer state behind).
            self.unconditional_text_embeddings()
        if in_memory and not kwargs.get("validation_split") and (shuffle or sample_weight is not None):
            # keras-hub feeds in-memory data through grain unshuffled; a
            # tf.data pipeline reshuffles every epoch (seeded by `seed`) and
            # keeps the weights with their examples.
            x, y = self._shuffled_dataset(x, y, batch_size or 32, sample_weight, shuffle), None
            batch_size, shuffle, sample_weight = None, False, None
        return super().fit(
            x, y, batch_size=batch_size, epochs=epochs, shuffle=shuffle, sample_weight=sample_weight, **kwargs
        )

    def _check_sample_weight(self, sample_weight, x, y):
        weights = np.asarray(sample_weight)
        if not np.issubdtype(weights.dtype, np.number) or weights.dtype == bool:
            raise ValueError(f"`sample_weight` must be numbers. Received dtype {weights.dtype}.")
        weights = weights.astype("float32")
        data = self._standardize(x, y)
        image = data.get("token_ids", data.get("images"))
        batch = len(image) if image is not None else None
        n = self.backbone.num_tokens
        grid = tuple(self.backbone.grid_size)
        ok_shapes = ((batch,), (batch, n), (batch,) + grid)
        if weights.shape not in ok_shapes:
            raise ValueError(
                f"`sample_weight` must be [batch] per example or [batch, {n}] / [batch, "
                f"{grid[0]}, {grid[1]}] per token, batch {batch}. Received shape {weights.shape}."
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("`sample_weight` must be finite and >= 0 (NaN, inf or negative found).")
        return weights

    def _shuffled_dataset(self, x, y, batch_size, sample_weight=None, shuffle=True):
        import tensorflow as tf  # tf.data: Keras' backend-independent input pipeline

        def slices(v):
            # Lists of arrays are structure (a tuple), lists of str are data.
            if isinstance(v, dict):
                return {k: slices(u) for k, u in v.items()}
            if isinstance(v, (list, tuple)) and not is_string_data(v):
                return tuple(slices(u) for u in v)
            return np.asarray(v) if isinstance(v, (list, tuple)) else v

        data = slices((x, y) if y is not None else x)
        if sample_weight is not None:
            # Keras' (x, y, sample_weight): a 2-tuple x is (images, text).
            if isinstance(data, tuple) and len(data) == 2:
                data = (data[0], data[1], sample_weight)
            else:
                data = (data, None, sample_weight)
        ds = tf.data.Dataset.from_tensor_slices(data)
        n = int(ds.cardinality())
        if shuffle:
            ds = ds.shuffle(max(n, 1), seed=self.seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)

    def _data_keys(self, x, y):
        """The standardized keys of the training data, where they can be told
        without reading it (in-memory data, or a tf.data element spec)."""
        spec = getattr(x, "element_spec", None)
        try:
            if spec is not None:
                return set(self._standardize(*keras.utils.unpack_x_y_sample_weight(spec)[:2]))
            if y is None and not isinstance(x, (tuple, list, dict)):
                return set()
            return set(self._standardize(x, y))
        except ValueError:
            return set()

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_arrays(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def _check_arrays(self, x, y):
        """Eager checks of in-memory training data (datasets are checked by
        shape when the step is traced)."""
        if y is None and not isinstance(x, (tuple, list, dict)):
            return  # a dataset or generator: checked by shape in the step
        data = self._standardize(x, y)
        if not all(hasattr(v, "shape") or isinstance(v, (list, str)) for v in data.values()):
            return
        validate_training_arrays(
            data,
            num_tokens=self.backbone.num_tokens,
            grid_size=self.backbone.grid_size,
            codebook_size=self.backbone.codebook_size,
            text_dim=self.backbone.text_dim,
            has_vqgan=self.vqgan is not None,
            low_res=self._low_res_spec(),
        )

    def _prepare_unconditional(self):
        """The empty prompt's tokens (and frozen embeddings), computed eagerly:
        the train step only reads these constants."""
        if self.condition_dropout == 0 or self.preprocessor is None:
            return
        if "tokens" not in self._unconditional:
            tokens = self.preprocessor([UNCONDITIONAL_PROMPT])
            self._unconditional["tokens"] = (
                np.asarray(ops.convert_to_numpy(tokens["token_ids"]), "int32")[0],
                np.asarray(ops.convert_to_numpy(tokens["padding_mask"]), bool)[0],
            )
        if self.text_encoder is not None and not self.trainable_text_encoder:
            self.unconditional_text_embeddings()

    def _unconditional_tokens(self, length):
        if "tokens" not in self._unconditional:
            raise ValueError(
                "Condition dropout on text token ids needs the task's `preprocessor` "
                "to tokenize the empty prompt."
            )
        ids, mask = self._unconditional["tokens"]
        if length is not None and ids.shape[0] != length:
            raise ValueError(
                f"The training text token ids have length {length}, but the "
                f"preprocessor packs to {ids.shape[0]}: tokenize with the task's preprocessor."
            )
        return ids, mask

    def unconditional_text_embeddings(self):
        """`(embeddings [L, D], padding_mask [L])` of the empty prompt."""
        if "embeddings" not in self._unconditional:
            if self.text_encoder is None or self.preprocessor is None:
                raise ValueError(
                    "Condition dropout on precomputed text embeddings needs the "
                    "empty prompt's embeddings: attach a `text_encoder`, or pass "
                    "`compile(unconditional_text_embeddings=cache.unconditional())`, "
                    "or set `condition_dropout=0`."
                )
            emb, mask = self.text_encoder.encode_text([UNCONDITIONAL_PROMPT])
            self._unconditional["embeddings"] = (emb[0], mask[0])
        return self._unconditional["embeddings"]

    def _image_token_ids(self, x):
        return self._tokens_in_step(x, "", self.vqgan, self.backbone.num_tokens, self.backbone.grid_size)

    @staticmethod
    def _tokens_in_step(x, prefix, vqgan, num_tokens, grid_size):
        """`x[prefix + "token_ids"]`, or `x[prefix + "images"]` tokenized by the
        frozen `vqgan`, as int32 `[batch, num_tokens]` (checked by shape)."""
        if prefix + "token_ids" in x:
            ids = ops.cast(x[prefix + "token_ids"], "int32")
        else:
            images = x[prefix + "images"]
            if "int" in str(images.dtype):
                images = ops.cast(images, "float32") / 127.5 - 1.0
            ids = ops.stop_gradient(vqgan.encode_step(ops.cast(images, "float32")))
        shape = tuple(ids.shape)
        n = int(np.prod(shape[1:])) if all(s is not None for s in shape[1:]) else None
        if n != num_tokens:
            what = "Low-res token ids" if prefix else "Image token ids"
            raise ValueError(
                f"{what} must have {num_tokens} tokens per example (grid {grid_size}). "
                f"Received shape {shape}."
            )
        return ops.reshape(ids, (-1, num_tokens))

    def _text_embeddings(self, x, drop, training):
        """Text embeddings and padding mask, with the dropped examples'
        text replaced by the unconditional prompt."""
        mask = ops.cast(x["text_padding_mask"], "bool")
        length = mask.shape[1]
        if "text_token_ids" in x:
            token_ids = ops.cast(x["text_token_ids"], "int32")
            if drop is not None:
                u_ids, u_mask = self._unconditional_tokens(length)
                token_ids = ops.where(drop[:, None], u_ids[None, :], token_ids)
                mask = ops.where(drop[:, None], u_mask[None, :], mask)
            embeddings = self.text_encoder(
                {"token_ids": token_ids, "padding_mask": ops.cast(mask, "int32")},
                training=training and self.trainable_text_encoder,
            )
            return embeddings, mask
        embeddings = ops.cast(x["text_embeddings"], self.backbone.compute_dtype)
        if drop is not None:
            u_emb, u_mask = self.unconditional_text_embeddings()
            if u_emb.shape[0] != length:
                raise ValueError(
                    f"The precomputed text embeddings have length {length}, but the "
                    f"unconditional embeddings have {u_emb.shape[0]}."
                )
            embeddings = ops.where(drop[:, None, None], ops.cast(u_emb[None], embeddings.dtype), embeddings)
            mask = ops.where(drop[:, None], u_mask[None, :], mask)
        return embeddings, mask

    def _check_batch(self, x, ids):
        text = x.get("text_token_ids", x.get("text_embeddings"))
        b_img, b_txt = ids.shape[0], text.shape[0]
        if b_img is not None and b_txt is not None and b_img != b_txt:
            raise ValueError(
                f"The text batch ({b_txt}) must equal the image batch ({b_img})."
            )
        if "text_embeddings" in x and text.shape[-1] != self.backbone.text_dim:
            raise ValueError(
                f"`text_embeddings` must be [batch, length, {self.backbone.text_dim}]. "
                f"Received shape {tuple(text.shape)}."
            )
        if "text_token_ids" in x and self.text_encoder is None:
            raise ValueError("Training on text token ids needs a `text_encoder`.")

    def _token_weights(self, token_mask, sample_weight):
        """The masked positions' loss weights: the mask, times the
        per-example `[B]` or per-token `[B, N]` / `[B, h, w]` weights."""
        if sample_weight is None:
            return token_mask
        w = ops.cast(sample_weight, "float32")
        n = self.backbone.num_tokens
        if len(w.shape) == 1:
            w = w[:, None]
        elif len(w.shape) in (2, 3) and int(np.prod(w.shape[1:])) == n:
            w = ops.reshape(w, (-1, n))
        else:
            raise ValueError(
                f"`sample_weight` must be [batch] or [batch, {n}] (or the token grid). "
                f"Received shape {tuple(w.shape)}."
            )
        return ops.cast(token_mask, "float32") * w

    def _masked_forward(self, x, training, sample_weight=None):
        """Draws the masks, runs the model; returns (loss, logs) inputs."""
        ids = self._image_token_ids(x)
        self._check_batch(x, ids)
        batch = ops.shape(ids)[0]
        token_mask = sample_token_mask(
            batch, self.backbone.num_tokens, schedule=self.mask_schedule, seed=self.seed_generator
        )
        loss_weights = self._token_weights(token_mask, sample_weight)
        drop = None
        if training and self.condition_dropout > 0:
            drop = sample_condition_dropout(batch, self.condition_dropout, seed=self.seed_generator)
        masked_ids = apply_mask(ids, token_mask, self.backbone.mask_token_id)

        def loss_fn():
            embeddings, text_mask = self._text_embeddings(x, drop, training)
            hidden = self.backbone.hidden_states(
                {
                    "token_ids": masked_ids,
                    "text_embeddings": embeddings,
                    "text_padding_mask": text_mask,
                    **self._condition_inputs(x),
                },
                training=training,
            )
            loss, accuracy = masked_head_loss(
                ids, hidden, loss_weights, self.backbone.logits_from_hidden, self.label_smoothing
            )
            return loss, {"masked_accuracy": accuracy}

        return loss_fn

    def _symbolic_build(self, iterator=None, data_batch=None):
        # Every model the task holds is built at construction; only the
        # optimizer is left. Keras' generic path would call the functional
        # graph (the backbone's inputs) on the raw training dict instead.
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, *args):
        return muse_backend.run_train_step(self, args, self._train_body)

    def _train_body(self, data):
        x, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss_fn = self._masked_forward(x, training=True, sample_weight=sample_weight)
        variables = list(self.trainable_variables)
        loss, aux, grads = muse_backend.variable_grads(loss_fn, variables)
        self.optimizer.apply(grads, variables)
        return self._update_metrics({"loss": loss, **aux})

    def test_step(self, *args):
        return muse_backend.run_test_step(self, args, self._test_body)

    def _test_body(self, data):
        x, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, aux = self._masked_forward(x, training=False, sample_weight=sample_weight)()
        return self._update_metrics({"loss": loss, **aux})

    def _update_metrics(self, values):
        for name, tracker in self.trackers.items():
            tracker.update_state(values[name])
        return {n: t.result() for n, t in self.trackers.items()}

    # -------------------------------------------------------------- presets
    def get_config(self):
        components = {
            name: keras.layers.serialize(getattr(self, name)) if getattr(self, name) is not None else None
            for name, _ in self.component_classes
        }
        return {
            "backbone": keras.layers.serialize(self.backbone),
            **components,
            "preprocessor": keras.layers.serialize(self.preprocessor) if self.preprocessor else None,
            "trainable_text_encoder": self.trainable_text_encoder,
            "condition_dropout": self.condition_dropout,
            "mask_schedule": self.mask_schedule,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
            "sampling_defaults": dict(self.sampling_defaults),
            "name": self.name,
            **({"super_resolution": keras.layers.serialize(self.super_resolution)}
               if getattr(self, "super_resolution", None) is not None else {}),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "preprocessor", "super_resolution", *(n for n, _ in cls.component_classes)):
            if isinstance(config.get(key), dict):
                config[key] = keras.layers.deserialize(config[key])
        return cls(**config)

    @property
    def super_resolution(self):
        """The attached `MuseSuperResolution` stage, or None."""
        holder = self.__dict__.get("_super_resolution")
        return None if holder is None else holder.value

    @staticmethod
    def _check_super_resolution(backbone, super_resolution):
        from keras_muse.models.muse.muse_super_resolution import MuseSuperResolution

        if not isinstance(super_resolution, MuseSuperResolution):
            raise ValueError(
                "`super_resolution` must be a MuseSuperResolution task or None. "
                f"Received: {type(super_resolution).__name__}"
            )
        sr = super_resolution.backbone
        if tuple(sr.low_res_grid_size) != tuple(backbone.grid_size) or (
            sr.low_res_codebook_size != backbone.codebook_size
        ):
            raise ValueError(
                f"The super-res model takes {sr.low_res_grid_size} low-res tokens from a codebook of "
                f"{sr.low_res_codebook_size}; the base model makes {backbone.grid_size} from "
                f"{backbone.codebook_size}. They must match."
            )

    def _task_settings(self):
        return {
            "trainable_text_encoder": self.trainable_text_encoder,
            "condition_dropout": self.condition_dropout,
            "mask_schedule": self.mask_schedule,
            "label_smoothing": self.label_smoothing,
            "sampling_defaults": dict(self.sampling_defaults),
        }

    def save_to_preset(self, preset_dir):
        """Saves the task as a directory of keras-hub presets, atomically.

        ```
        preset_dir/
          config.json, model.weights.h5, metadata.json   the MuseBackbone
          text_encoder/                                  MuseTextEncoder (+ tokenizer)
          vqgan/                                         VQGAN
          super_resolution/                              MuseSuperResolution (a task preset)
          task.json                                      the task's settings
        ```
        The super-res stage's text encoder and low-res VQGAN are most often
        the base model's own (same object, or same config and weights): they
        are then saved once, and the super-res task.json points at them
        (`"../text_encoder"`), so a T5-XXL is not written twice.
        A crash mid-save leaves any previous preset at `preset_dir` intact.
        """
        with atomic_directory(preset_dir) as tmp:
            self._save_task(tmp)

    # The super-res component that may be the base model's own: name in the
    # super-res task -> name in this task.
    _shareable_with_super_resolution = (("text_encoder", "text_encoder"), ("low_res_vqgan", "vqgan"))

    def _save_task(self, path, shared=None):
        """Writes the task into the new directory `path`. `shared`:
        component name -> path (relative to `path`) of an equal model saved
        elsewhere in the same preset, written as a reference instead."""
        shared = dict(shared or {})
        self.backbone.save_to_preset(path)
        components = {}
        for name, _ in self.component_classes:
            model = getattr(self, name)
            if model is None:
                continue
            if name in shared:
                components[name] = shared[name]
            else:
                model.save_to_preset(os.path.join(path, name))
                components[name] = name
        sr = getattr(self, "super_resolution", None)
        if sr is not None:
            sr_shared = {}
            for sr_name, own_name in self._shareable_with_super_resolution:
                theirs, ours = getattr(sr, sr_name, None), getattr(self, own_name, None)
                if theirs is not None and ours is not None and same_model(theirs, ours):
                    sr_shared[sr_name] = "../" + components[own_name]
            sr._save_task(os.path.join(path, "super_resolution"), shared=sr_shared)
            components["super_resolution"] = "super_resolution"
        with open(os.path.join(path, TASK_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(
                {
                    "registered_name": keras.saving.get_registered_name(type(self)),
                    "config": self._task_settings(),
                    "components": components,
                },
                f,
                indent=2,
            )

    @classmethod
    def _shared_components_of(cls, sr_dir, preset, components, loaded, trains_text_encoder):
        """The loaded components that the super-res task.json at `sr_dir`
        points at (e.g. "../text_encoder"), to pass to its `from_preset` so
        one model serves both stages. A text encoder that either stage
        trains is not shared: training the base model's must not move the
        super-res model's conditioning (that stage then loads its own copy
        from the same files)."""
        try:
            with open(os.path.join(sr_dir, TASK_CONFIG_FILE), encoding="utf-8") as f:
                spec = json.load(f)
            sr_components = dict(spec.get("components", {}))
            sr_trains = bool(dict(spec.get("config", {})).get("trainable_text_encoder", False))
        except (OSError, ValueError, TypeError, AttributeError):
            return {}  # the super-res from_preset names what is wrong
        shared = {}
        for sr_name, own_name in cls._shareable_with_super_resolution:
            rel = sr_components.get(sr_name)
            if rel is None or own_name not in components or own_name not in loaded:
                continue
            if own_name == "text_encoder" and (trains_text_encoder or sr_trains):
                continue
            theirs = os.path.realpath(os.path.join(sr_dir, rel))
            if theirs == os.path.realpath(os.path.join(preset, components[own_name])):
                shared[sr_name] = loaded[own_name]
        return shared

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a task saved by `save_to_preset` (or wraps a backbone preset).

        Args:
            preset: a shipped preset name (`task_presets`, e.g.
                "muse_shapes_64"), a preset directory, or a `MuseBackbone`
                preset name (then no text encoder or VQGAN is attached).
            load_weights: bool.
            **kwargs: task settings (`condition_dropout`, `seed`, ...) that
                override the saved ones.
        """
        if not isinstance(preset, (str, os.PathLike)):
            raise ValueError(f"`preset` must be a preset name or a path. Received: {preset!r}")
        preset = os.fspath(preset)
        entry = cls.task_presets.get(preset)
        if entry is not None:
            path = os.path.join(PACKAGE_PRESET_DIR, entry["package_dir"])
            if not os.path.isfile(os.path.join(path, TASK_CONFIG_FILE)):
                raise ValueError(
                    f"The shipped preset {preset!r} is missing from this installation ({path}): "
                    "reinstall keras-muse, or rebuild it with examples/build_shipped_presets.py."
                )
            preset = path
        task_file = os.path.join(preset, TASK_CONFIG_FILE)
        if not os.path.isfile(task_file):
            backbone = cls.backbone_cls.from_preset(preset, load_weights=load_weights)
            return cls(backbone=backbone, **kwargs)
        try:
            with open(task_file, encoding="utf-8") as f:
                spec = json.load(f)
            settings, components = dict(spec["config"]), dict(spec.get("components", {}))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"`preset` {preset!r}: {TASK_CONFIG_FILE} is unreadable or corrupt ({e}).") from None
        if spec.get("registered_name") != keras.saving.get_registered_name(cls):
            raise ValueError(
                f"`preset` {preset!r} holds a {spec.get('registered_name')!r}, not a {cls.__name__}."
            )
        for name, rel in components.items():
            if not isinstance(rel, str) or not os.path.isdir(os.path.join(preset, rel)):
                raise ValueError(
                    f"`preset` {preset!r}: {TASK_CONFIG_FILE} names component {name!r} at {rel!r}, "
                    "which is not a directory of the preset (missing or corrupt preset)."
                )
        # A shipped preset built on other shipped ones names their
        # directories ("backbone": "../muse_shapes_64") instead of copying them.
        backbone = cls.backbone_cls.from_preset(
            os.path.normpath(os.path.join(preset, components.pop("backbone", "."))), load_weights=load_weights
        )
        # Components passed in (by a parent preset that shares them) are used
        # as they are, not loaded a second time.
        loaded = {}
        for name, model_cls in cls.component_classes:
            if name in kwargs:
                loaded[name] = kwargs.pop(name)
            elif name in components:
                loaded[name] = model_cls.from_preset(
                    os.path.join(preset, components[name]), load_weights=load_weights
                )
        if "super_resolution" in components:
            from keras_muse.models.muse.muse_super_resolution import MuseSuperResolution

            sr_dir = os.path.join(preset, components["super_resolution"])
            loaded["super_resolution"] = MuseSuperResolution.from_preset(
                sr_dir,
                load_weights=load_weights,
                **cls._shared_components_of(
                    sr_dir, preset, components, loaded,
                    trains_text_encoder=kwargs.get(
                        "trainable_text_encoder", settings.get("trainable_text_encoder", False)
                    ),
                ),
            )
        settings.update(kwargs)
        return cls(backbone=backbone, **loaded, **settings)
