import keras
from keras import ops


def _l2_normalize(x, axis=-1, epsilon=1e-6):
    return x * ops.rsqrt(ops.sum(ops.square(x), axis=axis, keepdims=True) + epsilon)


@keras.saving.register_keras_serializable(package="keras_muse")
class VectorQuantizer(keras.layers.Layer):
    """Nearest-code vector quantizer with straight-through gradients.

    Codebook collapse, the common failure of VQGANs, is countered the ViT-VQGAN
    way (Yu et al., 2022): latents are projected to a low-dimensional code
    space (`code_dim`, "factorized codes") and both latents and codes are
    l2-normalized, so lookup is by cosine similarity and every code stays on
    the same sphere as the encoder outputs. An optional entropy regularizer
    (MaskGIT) rewards confident per-token assignments and a spread-out average
    assignment.

    The layer keeps an exponential moving average of how often each code is
    chosen (non-trainable, updated while training) from which
    `codebook_perplexity` and `codebook_usage` (the fraction of codes with at
    least 1% of the uniform frequency) are reported.

    Args:
        codebook_size: int, number of codes (8192 in the paper).
        code_dim: int or None, the lookup dimension; None looks up in the
            latent dimension itself (no factorization).
        use_l2_normalization: bool, cosine-similarity lookup.
        commitment_cost: float, weight of the commitment loss (0.25).
        entropy_temperature: float, softmax temperature of the entropy loss.
        usage_decay: float, decay of the code-frequency moving average.

    Call returns a dict: `quantized` (same shape as the input, straight-through
    gradients), `ids` (int32), `codebook_loss`, `commitment_loss` (already
    weighted), `entropy_loss` (unweighted), `perplexity` (of this batch).

    Example:
    ```python
    vq = VectorQuantizer(codebook_size=1024, code_dim=32)
    out = vq(keras.random.normal((2, 16, 16, 64)))
    out["ids"].shape  # (2, 16, 16)
    ```
    """

    def __init__(
        self,
        codebook_size=8192,
        code_dim=32,
        use_l2_normalization=True,
        commitment_cost=0.25,
        entropy_temperature=0.01,
        usage_decay=0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(codebook_size) < 2:
            raise ValueError(
                f"`codebook_size` must be an int >= 2. Received: codebook_size={codebook_size}"
            )
        self.codebook_size = int(codebook_size)
        self.code_dim = code_dim
        self.use_l2_normalization = use_l2_normalization
        self.commitment_cost = commitment_cost
        self.entropy_temperature = entropy_temperature
        self.usage_decay = usage_decay

    def build(self, input_shape):
        latent_dim = input_shape[-1]
        self.latent_dim = latent_dim
        lookup_dim = self.code_dim or latent_dim
        if self.code_dim:
            self.in_proj = keras.layers.Dense(
                self.code_dim, dtype=self.dtype_policy, name="in_proj"
            )
            self.in_proj.build(input_shape)
            self.out_proj = keras.layers.Dense(
                latent_dim, dtype=self.dtype_policy, name="out_proj"
            )
            self.out_proj.build(tuple(input_shape[:-1]) + (self.code_dim,))
        self.codebook = self.add_weight(
            name="codebook",
            shape=(self.codebook_size, lookup_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            # The lookup is numerically delicate: keep it in float32 even
            # under a mixed-precision policy.
            dtype="float32",
        )
        self.code_frequency = self.add_weight(
            name="code_frequency",
            shape=(self.codebook_size,),
            initializer=keras.initializers.Constant(1.0 / self.codebook_size),
            trainable=False,
            dtype="float32",
        )

    def _project_in(self, x):
        z = self.in_proj(x) if self.code_dim else x
        z = ops.cast(z, "float32")
        return _l2_normalize(z) if self.use_l2_normalization else z

    def _codes(self):
        e = ops.convert_to_tensor(self.codebook)
        return _l2_normalize(e) if self.use_l2_normalization else e

    def _distances(self, z_flat, codes):
        return (
            ops.sum(ops.square(z_flat), axis=-1, keepdims=True)
            - 2.0 * ops.matmul(z_flat, ops.transpose(codes))
            + ops.sum(ops.square(codes), axis=-1)[None, :]
        )

    def lookup(self, ids):
        """Latent vectors (in the input's space) for integer `ids`."""
        z_q = ops.take(self._codes(), ops.cast(ids, "int32"), axis=0)
        z_q = ops.cast(z_q, self.compute_dtype)
        return self.out_proj(z_q) if self.code_dim else z_q

    def quantize_ids(self, x):
        """Only the code ids of latents `x` (no losses): the encode path."""
        z = self._project_in(x)
        shape = ops.shape(z)
        z_flat = ops.reshape(z, (-1, shape[-1]))
        ids = ops.argmin(self._distances(z_flat, self._codes()), axis=-1)
        return ops.reshape(ops.cast(ids, "int32"), shape[:-1])

    def call(self, x, training=False):
        z = self._project_in(x)
        shape = ops.shape(z)
        z_flat = ops.reshape(z, (-1, shape[-1]))
        codes = self._codes()
        distances = self._distances(z_flat, codes)
        ids_flat = ops.argmin(distances, axis=-1)
        z_q = ops.reshape(ops.take(codes, ids_flat, axis=0), shape)
        codebook_loss = ops.mean(ops.square(ops.stop_gradient(z) - z_q))
        commitment_loss = self.commitment_cost * ops.mean(
            ops.square(z - ops.stop_gradient(z_q))
        )
        # Straight-through estimator: forward the code, backward the identity.
        z_st = z + ops.stop_gradient(z_q - z)

        # Entropy regularizer (MaskGIT): low per-token entropy, high entropy of
        # the batch-average assignment.
        logits = -distances / self.entropy_temperature
        probs = ops.softmax(logits, axis=-1)
        log_probs = ops.log_softmax(logits, axis=-1)
        sample_entropy = -ops.mean(ops.sum(probs * log_probs, axis=-1))
        avg_probs = ops.mean(probs, axis=0)
        avg_entropy = -ops.sum(avg_probs * ops.log(avg_probs + 1e-10))
        entropy_loss = sample_entropy - avg_entropy

        one_hot = ops.one_hot(ids_flat, self.codebook_size, dtype="float32")
        batch_frequency = ops.mean(one_hot, axis=0)
        perplexity = ops.exp(
            -ops.sum(batch_frequency * ops.log(batch_frequency + 1e-10))
        )
        if training:
            self.code_frequency.assign(
                self.usage_decay * self.code_frequency
                + (1.0 - self.usage_decay) * batch_frequency
            )

        z_st = ops.cast(z_st, self.compute_dtype)
        quantized = self.out_proj(z_st) if self.code_dim else z_st
        return {
            "quantized": quantized,
            "ids": ops.reshape(ops.cast(ids_flat, "int32"), shape[:-1]),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "entropy_loss": entropy_loss,
            "perplexity": perplexity,
        }

    def codebook_perplexity(self):
        """Perplexity of the moving-average code frequencies."""
        p = ops.convert_to_tensor(self.code_frequency)
        p = p / ops.sum(p)
        return ops.exp(-ops.sum(p * ops.log(p + 1e-10)))

    def codebook_usage(self):
        """Fraction of codes chosen at >= 1% of the uniform frequency."""
        p = ops.convert_to_tensor(self.code_frequency)
        return ops.mean(ops.cast(p > 0.01 / self.codebook_size, "float32"))

    def compute_output_spec(self, x, training=False):
        shape = x.shape
        scalar = keras.KerasTensor((), dtype="float32")
        return {
            "quantized": keras.KerasTensor(shape, dtype=self.compute_dtype),
            "ids": keras.KerasTensor(shape[:-1], dtype="int32"),
            "codebook_loss": scalar,
            "commitment_loss": scalar,
            "entropy_loss": scalar,
            "perplexity": scalar,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            codebook_size=self.codebook_size,
            code_dim=self.code_dim,
            use_l2_normalization=self.use_l2_normalization,
            commitment_cost=self.commitment_cost,
            entropy_temperature=self.entropy_temperature,
            usage_decay=self.usage_decay,
        )
        return config
