import keras
from keras import ops
from keras_hub import layers as hub_layers


@keras.saving.register_keras_serializable(package="keras_muse")
class ReversibleEmbedding(hub_layers.ReversibleEmbedding):
    """keras-hub's `ReversibleEmbedding` for codebook ids plus input-only ids
    ([MASK]): its reverse pass gives logits over the codebook only.

    The masked-token transformers embed `codebook_size + 1` ids but never
    predict [MASK]. Reading the logits from the codebook's rows alone keeps
    the output product `codebook_size` wide: on XLA:CPU an 8193-wide product
    was 15 % slower than 8192, and slicing the [MASK] column off the logits
    cost a copy of them forward and a padded copy of their gradient backward
    (about 0.3 s of a 7 s d512 train step). It keeps keras-hub's class
    name and variables on purpose: Keras files weights under the snake-cased
    class name (`layers/reversible_embedding`), so presets saved with the
    keras-hub layer load unchanged.

    Args:
        codebook_size: int, number of predictable ids.
        output_dim: int, embedding width.
        num_special_tokens: int, input-only ids after the codebook (1: [MASK]).
        **kwargs: `ReversibleEmbedding` arguments (`tie_weights`, ...).

    Example:
    ```python
    embedding = ReversibleEmbedding(512, 64)
    x = embedding(np.array([[3, 512]]))            # [1, 2, 64]; 512 is [MASK]
    logits = embedding(x, reverse=True)            # [1, 2, 512]
    ```
    """

    def __init__(self, codebook_size, output_dim, num_special_tokens=1, **kwargs):
        kwargs.pop("input_dim", None)
        super().__init__(int(codebook_size) + int(num_special_tokens), output_dim, **kwargs)
        self.codebook_size = int(codebook_size)
        self.num_special_tokens = int(num_special_tokens)

    def call(self, inputs, reverse=False):
        if not reverse:
            return super().call(inputs)
        if self.quantization_mode is not None:
            return super().call(inputs, reverse=True)[..., : self.codebook_size]
        if self.tie_weights:
            kernel = ops.transpose(self.embeddings[: self.codebook_size])
        else:
            kernel = self.reverse_embeddings[:, : self.codebook_size]
        dtype = self.reverse_dtype or inputs.dtype
        logits = ops.matmul(ops.cast(inputs, dtype), ops.cast(kernel, dtype))
        if self.logit_soft_cap is not None:
            logits = ops.multiply(ops.tanh(ops.divide(logits, self.logit_soft_cap)), self.logit_soft_cap)
        return logits

    def compute_output_shape(self, input_shape, reverse=False):
        shape = list(super().compute_output_shape(input_shape, reverse=reverse))
        if reverse:
            shape[-1] = self.codebook_size
        return shape

    def compute_output_spec(self, inputs, reverse=False):
        shape = self.compute_output_shape(inputs.shape, reverse=reverse)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("input_dim", None)
        config.update(codebook_size=self.codebook_size, num_special_tokens=self.num_special_tokens)
        return config
