import keras
import numpy as np
from keras import ops
from keras_hub.models import Backbone

from keras_muse import backend as muse_backend
from keras_muse.layers.vector_quantizer import VectorQuantizer
from keras_muse.models.vqgan import vqgan_losses as losses
from keras_muse.models.vqgan.vqgan_decoder import VQGANDecoder
from keras_muse.models.vqgan.vqgan_discriminator import VQGANDiscriminator
from keras_muse.models.vqgan.vqgan_encoder import VQGANEncoder
from keras_muse.models.vqgan.vqgan_presets import VQGAN_PRESETS
from keras_muse.utils.image_utils import float_to_uint8
from keras_muse.utils.image_utils import uint8_to_float
from keras_muse.utils.layout_map_mixin import LayoutMapMixin
from keras_muse.utils.preset_utils import PresetMixin


_GENERATOR_METRICS = (
    "loss", "reconstruction_loss", "perceptual_loss", "quantizer_loss",
    "entropy_loss", "psnr", "batch_perplexity",
)
_GAN_METRICS = (
    "generator_adversarial_loss", "adversarial_weight", "discriminator_loss",
    "r1_penalty", "discriminator_real", "discriminator_fake",
)


class _DiscriminatorStart(keras.callbacks.Callback):
    """Switches the GAN losses on at `discriminator_start` by recompiling the
    train step (a traced conditional would keep the discriminator's double
    backward in every step and, measured on XLA:CPU, run it 5x slower)."""

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations)

    def on_train_batch_begin(self, batch, logs=None):
        model = self.model
        if not model._gan_started and self.step >= model.loss_config["discriminator_start"]:
            model._gan_started = True
            model.make_train_function(force=True)

    def on_train_batch_end(self, batch, logs=None):
        self.step += getattr(self.model, "steps_per_execution", 1) or 1


class _LeCamState(keras.layers.Layer):
    """Moving averages of the discriminator's real/fake outputs (LeCam)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ema = self.add_weight(
            shape=(2,), initializer="zeros", trainable=False, dtype="float32", name="ema"
        )
        # Its state exists from the start; unbuilt, it made every VQGAN warn
        # "build() was called ... has unbuilt state" on construction.
        self.built = True


class _Untracked:
    """Holds an object out of Keras' attribute tracking.

    The perceptual network is a frozen training aid: tracking it would put
    its (ImageNet, ~60 MB) weights into every checkpoint and preset.
    """

    def __init__(self, value):
        self.value = value


@keras.saving.register_keras_serializable(package="keras_muse")
class VQGAN(LayoutMapMixin, PresetMixin, Backbone):
    """The VQGAN image tokenizer of Muse (paper §2.2, §2.5, App. A.2).

    Images in [-1, 1] are encoded by a fully convolutional ResNet to a grid of
    latents, each snapped to the nearest entry of a codebook; the grid of code
    ids is what the Muse transformers model. The decoder maps codes back to
    images. A PatchGAN discriminator is part of the model (so that `fit`
    checkpoints and resumes it), used only by `train_step`.

    Args:
        base_channels: int, encoder channels at full resolution (128).
        channel_multipliers: tuple, channels per level; its length sets the
            downsampling factor `2 ** (len - 1)`: (1, 1, 2, 2, 4) gives 16.
        num_res_blocks: int, residual blocks per level (2).
        latent_dim: int, channels of the latent grid (256).
        codebook_size: int, number of codes (8192).
        code_dim: int or None, factorized lookup dimension (32); None looks
            up in `latent_dim`.
        use_l2_normalization: bool, cosine lookup (ViT-VQGAN).
        commitment_cost: float (0.25).
        decoder_base_channels: int or None, decoder width (default: the
            encoder's). The paper's fine-tuned decoder uses 256.
        decoder_num_res_blocks: int or None, decoder depth (fine-tuned: 4).
        discriminator_channels: int or None; None (or 0) builds no
            discriminator (no adversarial loss).
        discriminator_layers: int, strided layers of the PatchGAN.
        trainable_encoder: bool; False freezes encoder and codebook, as in
            decoder fine-tuning (§2.5): ids can no longer change.
        dropout: float.
        patch_size: int, space-to-depth stem / depth-to-space head factor
            (1 in the paper). 2 halves the resolution the convolutions run
            at, for CPU-sized tokenizers; the factor becomes
            `patch_size * 2 ** (len(channel_multipliers) - 1)`.
        dtype: dtype policy, e.g. "mixed_bfloat16".

    Example:
    ```python
    vqgan = keras_muse.models.VQGAN.from_preset("vqgan_tiny_f4", load_weights=False)
    images = np.random.uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    ids = vqgan.encode(images)            # int32 (2, 16, 16)
    reconstructions = vqgan.decode(ids)   # float32 (2, 64, 64, 3) in [-1, 1]

    vqgan.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.99),
                  perceptual_weight=0.0)
    vqgan.fit(dataset_of_uint8_images, epochs=1)
    ```
    """

    layout_map_builder = "vqgan_layout_map"

    config_presets = VQGAN_PRESETS

    def __init__(
        self,
        base_channels=128,
        channel_multipliers=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        latent_dim=256,
        codebook_size=8192,
        code_dim=32,
        use_l2_normalization=True,
        commitment_cost=0.25,
        decoder_base_channels=None,
        decoder_num_res_blocks=None,
        discriminator_channels=64,
        discriminator_layers=3,
        trainable_encoder=True,
        dropout=0.0,
        patch_size=1,
        dtype=None,
        **kwargs,
    ):
        channel_multipliers = tuple(int(m) for m in channel_multipliers)
        if not channel_multipliers:
            raise ValueError(
                "`channel_multipliers` must have at least one level. "
                f"Received: {channel_multipliers}"
            )
        # === Layers ===
        self.encoder = VQGANEncoder(
            base_channels,
            channel_multipliers,
            num_res_blocks,
            latent_dim,
            dropout=dropout,
            patch_size=patch_size,
            dtype=dtype,
            name="encoder",
        )
        self.quantizer = VectorQuantizer(
            codebook_size,
            code_dim=code_dim,
            use_l2_normalization=use_l2_normalization,
            commitment_cost=commitment_cost,
            dtype=dtype,
            name="quantizer",
        )
        self.decoder = VQGANDecoder(
            decoder_base_channels or base_channels,
            channel_multipliers,
            decoder_num_res_blocks or num_res_blocks,
            dropout=dropout,
            patch_size=patch_size,
            dtype=dtype,
            name="decoder",
        )
        self.discriminator = (
            VQGANDiscriminator(
                discriminator_channels,
                discriminator_layers,
                dtype=dtype,
                name="discriminator",
            )
            if discriminator_channels
            else None
        )
        factor = self.encoder.downsampling_factor
        if self.discriminator is not None:
            # Not part of the functional graph (a training aid), so built here;
            # still tracked, so `fit` checkpoints and resumes it. A symbolic
            # call: an eager one compiles every conv for nothing.
            self.discriminator(keras.KerasTensor((1, factor, factor, 3), dtype=self.encoder.compute_dtype))
            self.lecam_state = _LeCamState(dtype="float32", name="lecam_state")
        # Loss trackers exist from the start (Keras locks state after build);
        # `compile` picks the ones its configuration reports.
        self.trackers = {
            n: keras.metrics.Mean(name=n)
            for n in _GENERATOR_METRICS + _GAN_METRICS + ("codebook_usage", "codebook_perplexity")
        }

        # === Functional Model ===
        images = keras.Input((None, None, 3), name="images")
        quantized = self.quantizer(self.encoder(images))["quantized"]
        reconstructions = self.decoder(quantized)
        super().__init__(inputs=images, outputs=reconstructions, dtype=dtype, **kwargs)

        # === Config ===
        self.base_channels = base_channels
        self.channel_multipliers = channel_multipliers
        self.num_res_blocks = num_res_blocks
        self.latent_dim = latent_dim
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.use_l2_normalization = use_l2_normalization
        self.commitment_cost = commitment_cost
        self.decoder_base_channels = decoder_base_channels
        self.decoder_num_res_blocks = decoder_num_res_blocks
        self.discriminator_channels = discriminator_channels
        self.discriminator_layers = discriminator_layers
        self.trainable_encoder = trainable_encoder
        self.dropout = dropout
        self.patch_size = patch_size
        self.factor = self.encoder.downsampling_factor

        self.encoder.trainable = trainable_encoder
        self.quantizer.trainable = trainable_encoder
        self._compiled = {}

    # ------------------------------------------------------------------ steps
    # Traceable building blocks (keras-hub "step" methods): pure `keras.ops`,
    # usable inside other models' compiled functions.
    def forward(self, images, training=False):
        """Encode, quantize and decode; returns a dict with reconstructions,
        ids, the quantizer losses and the batch perplexity."""
        latents = self.encoder(images, training=training)
        q = self.quantizer(latents, training=training)
        reconstructions = self.decoder(q["quantized"], training=training)
        return {**q, "reconstructions": ops.cast(reconstructions, "float32")}

    def encode_step(self, images):
        """Images in [-1, 1] -> int32 ids [B, H/f, W/f] (traceable)."""
        return self.quantizer.quantize_ids(self.encoder(images, training=False))

    def decode_step(self, ids):
        """int32 ids [B, h, w] -> float32 images in [-1, 1] (traceable)."""
        latents = self.quantizer.lookup(ids)
        images = self.decoder(latents, training=False)
        return ops.clip(ops.cast(images, "float32"), -1.0, 1.0)

    # ------------------------------------------------------------ user API
    def _validate_images(self, images, name="images"):
        if not hasattr(images, "shape") or len(images.shape) != 4:
            raise ValueError(
                f"`{name}` must be a 4-D batch [batch, height, width, 3]. "
                f"Received shape: {getattr(images, 'shape', type(images))}"
            )
        _, h, w, c = images.shape
        if c != 3:
            raise ValueError(
                f"`{name}` must have 3 channels (RGB, channels last). Received "
                f"shape {tuple(images.shape)}."
            )
        if h % self.factor or w % self.factor or h == 0 or w == 0:
            raise ValueError(
                f"`{name}` height and width must be positive multiples of the "
                f"downsampling factor {self.factor}. Received shape "
                f"{tuple(images.shape)}."
            )
        array = np.asarray(images)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(
                f"`{name}` must be floats in [-1, 1]. Received dtype "
                f"{array.dtype}; convert uint8 images with "
                "`VQGAN.preprocess_images`."
            )
        if array.size and (not np.all(np.isfinite(array)) or array.min() < -1.001 or array.max() > 1.001):
            raise ValueError(
                f"`{name}` must be finite floats in [-1, 1]. Received values in "
                f"[{np.nanmin(array):.3f}, {np.nanmax(array):.3f}]"
                + ("" if np.all(np.isfinite(array)) else " with NaN/inf")
                + "."
            )
        return array.astype("float32")

    def _validate_ids(self, ids):
        array = np.asarray(ids)
        if array.ndim != 3:
            raise ValueError(
                "`ids` must be a 3-D int batch [batch, height, width]. "
                f"Received shape: {array.shape}"
            )
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"`ids` must be integers. Received dtype {array.dtype}.")
        if array.size and (array.min() < 0 or array.max() >= self.codebook_size):
            raise ValueError(
                f"`ids` must lie in [0, {self.codebook_size}) (the codebook "
                f"size). Received values in [{array.min()}, {array.max()}]."
            )
        return array.astype("int32")

    def _compiled_fn(self, name, fn):
        if name not in self._compiled:
            self._compiled[name] = muse_backend.compile_function(self, fn)
        return self._compiled[name]

    def _batched(self, fn, array, batch_size):
        outputs = []
        for start in range(0, len(array), batch_size):
            outputs.append(np.asarray(fn(array[start : start + batch_size])))
        return np.concatenate(outputs, axis=0)

    def encode(self, images, batch_size=32):
        """Float images [B, H, W, 3] in [-1, 1] -> int32 ids [B, H/f, W/f].

        Runs as one compiled program per batch shape.
        """
        array = self._validate_images(images)
        fn = self._compiled_fn("encode", self.encode_step)
        return self._batched(fn, array, batch_size).astype("int32")

    def decode(self, ids, batch_size=32):
        """int ids [B, h, w] -> float32 images [B, h*f, w*f, 3] in [-1, 1]."""
        array = self._validate_ids(ids)
        fn = self._compiled_fn("decode", self.decode_step)
        return self._batched(fn, array, batch_size)

    def reconstruct(self, images, batch_size=32):
        """uint8 or [-1, 1] float images -> uint8 reconstructions."""
        images = np.asarray(images)
        if images.dtype == np.uint8:
            images = uint8_to_float(images)
        return float_to_uint8(self.decode(self.encode(images, batch_size), batch_size))

    @staticmethod
    def preprocess_images(images):
        """uint8 [0, 255] -> float32 [-1, 1]."""
        return uint8_to_float(images)

    @staticmethod
    def postprocess_images(images):
        """float [-1, 1] -> uint8 [0, 255]."""
        return float_to_uint8(images)

    # --------------------------------------------------------- fine-tuning
    def with_finetuned_decoder(self, decoder_base_channels=256, decoder_num_res_blocks=4):
        """A copy with a new, larger decoder and a frozen encoder + codebook.

        Paper §2.5: after the transformers are trained, the decoder alone is
        fine-tuned (4 residual blocks per level, 256 base channels), so token
        ids never change. The discriminator and the encoder/quantizer weights
        are copied; the decoder starts fresh.
        """
        config = self.get_config()
        config.update(
            decoder_base_channels=decoder_base_channels,
            decoder_num_res_blocks=decoder_num_res_blocks,
            trainable_encoder=False,
        )
        config.pop("name", None)
        model = VQGAN.from_config(config)
        model.encoder.set_weights(self.encoder.get_weights())
        model.quantizer.set_weights(self.quantizer.get_weights())
        if self.discriminator is not None and model.discriminator is not None:
            model.discriminator.set_weights(self.discriminator.get_weights())
        return model

    # ------------------------------------------------------------ training
    def compile(
        self,
        optimizer="adam",
        discriminator_optimizer=None,
        reconstruction_loss="l1+l2",
        perceptual_weight=0.05,
        perceptual_network="vgg16",
        adversarial_weight=0.1,
        adversarial_loss="non_saturating",
        adaptive_adversarial_weight=False,
        discriminator_start=0,
        r1_weight=10.0,
        lecam_weight=0.001,
        entropy_weight=0.1,
        **kwargs,
    ):
        """Configures training (defaults: paper App. A.2 and MaskGIT).

        Args:
            optimizer: the generator's optimizer (encoder, codebook, decoder).
            discriminator_optimizer: the discriminator's; default: a fresh
                copy of `optimizer`'s configuration.
            reconstruction_loss: "l1", "l2" or "l1+l2".
            perceptual_weight: weight of the perceptual loss (0.05); 0 disables.
            perceptual_network: "vgg16" (ImageNet weights, needs a download),
                "vgg16:<weights file>", or a `keras.Model` mapping [-1, 1]
                images to a feature map or a list of them.
            adversarial_weight: generator GAN loss weight (0.1); 0 disables.
            adversarial_loss: "non_saturating" or "hinge".
            adaptive_adversarial_weight: scale the GAN loss by
                ||grad rec|| / ||grad gan|| (taming-transformers), with the
                gradients taken at the reconstruction (decoder output).
            discriminator_start: optimizer step from which the GAN terms
                are on.
            r1_weight: gamma of the R1 penalty gamma/2 E|grad_x D(x)|^2 (10).
            lecam_weight: weight of the LeCam regularizer (0.001).
            entropy_weight: weight of the quantizer's entropy loss (0.1).
        """
        if reconstruction_loss not in losses.RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"`reconstruction_loss` must be one of {losses.RECONSTRUCTION_LOSSES}. "
                f"Received: {reconstruction_loss!r}"
            )
        if adversarial_loss not in losses.ADVERSARIAL_LOSSES:
            raise ValueError(
                f"`adversarial_loss` must be one of {losses.ADVERSARIAL_LOSSES}. "
                f"Received: {adversarial_loss!r}"
            )
        for name, value in (
            ("perceptual_weight", perceptual_weight),
            ("adversarial_weight", adversarial_weight),
            ("r1_weight", r1_weight),
            ("lecam_weight", lecam_weight),
            ("entropy_weight", entropy_weight),
            ("discriminator_start", discriminator_start),
        ):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"`{name}` must be a finite number >= 0. Received: {value!r}")
        use_gan = adversarial_weight > 0 and self.discriminator is not None
        if adversarial_weight > 0 and self.discriminator is None:
            raise ValueError(
                "`adversarial_weight` > 0 needs a discriminator, but this VQGAN "
                "was built with `discriminator_channels=None`. Pass "
                "`adversarial_weight=0`."
            )
        self.loss_config = dict(
            reconstruction_loss=reconstruction_loss,
            perceptual_weight=float(perceptual_weight),
            adversarial_weight=float(adversarial_weight) if use_gan else 0.0,
            adversarial_loss=adversarial_loss,
            adaptive_adversarial_weight=bool(adaptive_adversarial_weight),
            discriminator_start=int(discriminator_start),
            r1_weight=float(r1_weight),
            lecam_weight=float(lecam_weight),
            entropy_weight=float(entropy_weight),
        )
        self._perceptual = _Untracked(
            losses.resolve_perceptual_network(perceptual_network)
            if perceptual_weight > 0
            else None
        )
        optimizer = keras.optimizers.get(optimizer)
        if use_gan:
            if discriminator_optimizer is None:
                discriminator_optimizer = optimizer.__class__.from_config(
                    optimizer.get_config()
                )
            discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
            optimizer = keras.optimizers.MultiOptimizer(
                keras.optimizers.OptimizerMap(
                    optimizer, {"(.*/)?discriminator/.*": discriminator_optimizer}
                )
            )
        self._gan_started = use_gan and discriminator_start == 0
        names = list(_GENERATOR_METRICS) + (list(_GAN_METRICS) if use_gan else [])
        self._active_metrics = tuple(names) + ("codebook_usage", "codebook_perplexity")
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def metrics(self):
        active = getattr(self, "_active_metrics", ())
        return [self.trackers[n] for n in active]

    def fit(self, *args, callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        cfg = getattr(self, "loss_config", None)
        if cfg and cfg["adversarial_weight"] > 0 and not self._gan_started:
            callbacks.append(_DiscriminatorStart())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def _standardize_images(self, data):
        if isinstance(data, dict):
            if "images" not in data:
                raise ValueError(
                    "VQGAN training data must be images or a dict with an "
                    f"'images' key. Received keys: {sorted(data)}"
                )
            data = data["images"]
        elif isinstance(data, (tuple, list)):
            data = data[0]
        if "int" in str(data.dtype):
            # tf.data pipelines yield uint8; map to [-1, 1] in the graph.
            return ops.cast(data, "float32") / 127.5 - 1.0
        return ops.cast(data, "float32")

    def _generator_variables(self):
        disc = {id(v) for v in self.discriminator.trainable_variables} if self.discriminator else set()
        return [v for v in self.trainable_variables if id(v) not in disc]

    def _generator_loss(self, images, gan_on):
        cfg = self.loss_config
        out = self.forward(images, training=True)
        recon = out["reconstructions"]
        perceptual = self._perceptual.value

        def image_loss(r):
            loss = losses.reconstruction_loss(images, r, cfg["reconstruction_loss"])
            if perceptual is not None:
                loss = loss + cfg["perceptual_weight"] * losses.perceptual_loss(
                    perceptual, images, r
                )
            return loss

        rec = losses.reconstruction_loss(images, recon, cfg["reconstruction_loss"])
        perc = (
            losses.perceptual_loss(perceptual, images, recon)
            if perceptual is not None
            else ops.zeros(())
        )
        quant = out["codebook_loss"] + out["commitment_loss"]
        total = rec + cfg["perceptual_weight"] * perc + quant
        total = total + cfg["entropy_weight"] * out["entropy_loss"]
        aux = {
            "reconstructions": recon,
            "reconstruction_loss": rec,
            "perceptual_loss": perc,
            "quantizer_loss": quant,
            "entropy_loss": out["entropy_loss"],
            "batch_perplexity": out["perplexity"],
        }
        if cfg["adversarial_weight"] > 0:

            def adversarial_terms():
                g_adv = losses.generator_adversarial_loss(
                    self.discriminator(recon), cfg["adversarial_loss"]
                )
                weight = ops.convert_to_tensor(cfg["adversarial_weight"], "float32")
                if cfg["adaptive_adversarial_weight"]:
                    (g_rec,) = muse_backend.input_grads(image_loss, [recon])
                    (g_gan,) = muse_backend.input_grads(
                        lambda r: losses.generator_adversarial_loss(
                            self.discriminator(r), cfg["adversarial_loss"]
                        ),
                        [recon],
                    )
                    ratio = ops.sqrt(ops.sum(ops.square(g_rec))) / (
                        ops.sqrt(ops.sum(ops.square(g_gan))) + 1e-4
                    )
                    weight = weight * ops.stop_gradient(ops.clip(ratio, 0.0, 1e4))
                return g_adv, weight

            if gan_on:
                g_adv, weight = adversarial_terms()
            else:
                g_adv, weight = ops.zeros(()), ops.zeros(())
            total = total + weight * g_adv
            aux["generator_adversarial_loss"] = g_adv
            aux["adversarial_weight"] = weight
        return total, aux

    def _discriminator_loss(self, images, reconstructions):
        cfg = self.loss_config
        real = self.discriminator(images)
        fake = self.discriminator(reconstructions)
        loss = losses.discriminator_loss(real, fake, cfg["adversarial_loss"])
        r1 = ops.zeros(())
        if cfg["r1_weight"] > 0:
            (grad,) = muse_backend.input_grads(
                lambda x: ops.sum(self.discriminator(x)), [images]
            )
            r1 = ops.mean(ops.sum(ops.square(grad), axis=(1, 2, 3)))
            loss = loss + 0.5 * cfg["r1_weight"] * r1
        if cfg["lecam_weight"] > 0:
            ema = ops.convert_to_tensor(self.lecam_state.ema)
            loss = loss + cfg["lecam_weight"] * losses.lecam_regularization(
                real, fake, ema[0], ema[1]
            )
        return loss, {
            "discriminator_loss": loss,
            "r1_penalty": r1,
            "discriminator_real": ops.mean(real),
            "discriminator_fake": ops.mean(fake),
        }

    def train_step(self, *args):
        return muse_backend.run_train_step(self, args, self._train_body)

    def _train_body(self, data):
        cfg = self.loss_config
        images = self._standardize_images(data)
        # A Python bool, fixed at trace time: before `discriminator_start` the
        # discriminator (and R1's double backward) is not in the compiled step
        # at all; `fit` recompiles the step once when the GAN starts.
        gan_on = bool(getattr(self, "_gan_started", False))
        g_vars = self._generator_variables()
        loss, aux, grads = muse_backend.variable_grads(
            lambda: self._generator_loss(images, gan_on), g_vars
        )
        recon = ops.stop_gradient(aux.pop("reconstructions"))
        variables = list(g_vars)
        if cfg["adversarial_weight"] > 0:
            d_vars = list(self.discriminator.trainable_variables)
            if gan_on:
                _, d_aux, d_grads = muse_backend.variable_grads(
                    lambda: self._discriminator_loss(images, recon), d_vars
                )
                aux.update(d_aux)
                ema = ops.convert_to_tensor(self.lecam_state.ema)
                self.lecam_state.ema.assign(
                    0.99 * ema
                    + 0.01
                    * ops.stack([d_aux["discriminator_real"], d_aux["discriminator_fake"]])
                )
            else:
                # The discriminator's optimizer still gets (zero) gradients:
                # the optimizer map is built over every trainable variable.
                d_grads = [ops.zeros(v.shape, v.dtype) for v in d_vars]
            grads = list(grads) + list(d_grads)
            variables += d_vars
        self.optimizer.apply(grads, variables)
        aux["loss"] = loss
        aux["psnr"] = self._psnr(images, recon)
        return self._update_metrics(aux)

    def _psnr(self, images, recon):
        mse = ops.mean(ops.square(ops.clip(recon, -1, 1) - images), axis=(1, 2, 3))
        # Images span 2.0 in [-1, 1].
        return ops.mean(10.0 * ops.log(4.0 / ops.maximum(mse, 1e-10)) / np.log(10.0))

    def _update_metrics(self, values):
        values = dict(values)
        values["codebook_usage"] = self.quantizer.codebook_usage()
        values["codebook_perplexity"] = self.quantizer.codebook_perplexity()
        for tracker in self.metrics:
            if tracker.name in values:
                tracker.update_state(values[tracker.name])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, *args):
        return muse_backend.run_test_step(self, args, self._test_body)

    def _test_body(self, data):
        images = self._standardize_images(data)
        out = self.forward(images, training=False)
        recon = out["reconstructions"]
        rec = losses.reconstruction_loss(images, recon, self.loss_config["reconstruction_loss"])
        quant = out["codebook_loss"] + out["commitment_loss"]
        return self._update_metrics(
            {
                "loss": rec + quant,
                "reconstruction_loss": rec,
                "quantizer_loss": quant,
                "entropy_loss": out["entropy_loss"],
                "batch_perplexity": out["perplexity"],
                "psnr": self._psnr(images, recon),
            }
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            base_channels=self.base_channels,
            channel_multipliers=list(self.channel_multipliers),
            num_res_blocks=self.num_res_blocks,
            latent_dim=self.latent_dim,
            codebook_size=self.codebook_size,
            code_dim=self.code_dim,
            use_l2_normalization=self.use_l2_normalization,
            commitment_cost=self.commitment_cost,
            decoder_base_channels=self.decoder_base_channels,
            decoder_num_res_blocks=self.decoder_num_res_blocks,
            discriminator_channels=self.discriminator_channels,
            discriminator_layers=self.discriminator_layers,
            trainable_encoder=self.trainable_encoder,
            dropout=self.dropout,
            patch_size=self.patch_size,
        )
        return config
