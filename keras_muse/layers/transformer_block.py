import keras
from keras import ops


def _split_heads(x, num_heads):
    b, n = ops.shape(x)[0], ops.shape(x)[1]
    return ops.reshape(x, (b, n, num_heads, -1))


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseAttention(keras.layers.Layer):
    """Multi-head attention through `keras.ops.dot_product_attention`.

    Written out (instead of `keras.layers.MultiHeadAttention`) so that a
    sampler can compute the cross-attention keys/values of the text once per
    generation (`key_value(context)`) and pass them to every decoding step.
    `dot_product_attention` dispatches to fused kernels where the backend has
    them (cuDNN / TPU flash attention).

    Example:
    ```python
    attn = MuseAttention(num_heads=4, key_dim=16)
    y = attn(x, context=text, context_mask=mask)   # cross-attention
    y = attn(x)                                     # self-attention
    ```
    """

    def __init__(self, num_heads, key_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = dropout

    def build(self, x_shape, context_shape=None):
        query_shape = x_shape
        hidden = query_shape[-1]
        context_dim = hidden if context_shape is None else context_shape[-1]
        inner = self.num_heads * self.key_dim
        policy = self.dtype_policy
        self.query = keras.layers.Dense(inner, dtype=policy, name="query")
        self.key = keras.layers.Dense(inner, dtype=policy, name="key")
        self.value = keras.layers.Dense(inner, dtype=policy, name="value")
        self.output_dense = keras.layers.Dense(hidden, dtype=policy, name="output")
        self.query.build(query_shape)
        self.key.build((None, None, context_dim))
        self.value.build((None, None, context_dim))
        self.output_dense.build((None, None, inner))
        self.drop = keras.layers.Dropout(self.dropout, dtype=policy)

    def key_value(self, context):
        """Projected keys and values of `context`, [B, L, heads, key_dim] each."""
        return (
            _split_heads(self.key(context), self.num_heads),
            _split_heads(self.value(context), self.num_heads),
        )

    def call(self, x, context=None, context_mask=None, key_value=None, training=False):
        q = _split_heads(self.query(x), self.num_heads)
        if key_value is None:
            key_value = self.key_value(x if context is None else context)
        k, v = key_value
        mask = None
        if context_mask is not None:
            # [B, L] -> [B, 1, 1, L]: every query and head sees the same keys.
            mask = ops.cast(context_mask, "bool")[:, None, None, :]
        out = ops.dot_product_attention(q, k, v, mask=mask)
        b, n = ops.shape(out)[0], ops.shape(out)[1]
        out = ops.reshape(out, (b, n, self.num_heads * self.key_dim))
        return self.drop(self.output_dense(out), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, key_dim=self.key_dim, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseTransformerBlock(keras.layers.Layer):
    """Pre-norm transformer block: self-attention, cross-attention, GELU MLP.

    The one block of both Muse transformers (paper §2.3, §2.4): the base model
    cross-attends to the projected text; the super-res model's low-res stack
    uses it without cross-attention (`cross_attention=False`), and its
    high-res stack cross-attends to [low-res tokens; text].

    Args:
        hidden_dim: int, model width.
        num_heads: int.
        mlp_dim: int, MLP hidden width (4x the width in the paper).
        dropout: float (0.1 in MaskGIT).
        cross_attention: bool.
        layer_norm_epsilon: float.

    Call args: `x` [B, N, hidden]; `context` [B, L, hidden] and
    `context_mask` [B, L] (True = real token) for cross-attention, or
    `cross_key_value` from `cross_key_value(context)` computed once.

    Example:
    ```python
    block = MuseTransformerBlock(hidden_dim=64, num_heads=4, mlp_dim=256)
    y = block(tokens, context=text, context_mask=text_mask)
    ```
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        mlp_dim,
        dropout=0.0,
        cross_attention=True,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"`hidden_dim` ({hidden_dim}) must be divisible by `num_heads` ({num_heads})."
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.cross_attention = cross_attention
        self.layer_norm_epsilon = layer_norm_epsilon
        policy = self.dtype_policy
        key_dim = hidden_dim // num_heads

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=policy, name=name
            )

        self.self_norm = norm("self_attention_norm")
        self.self_attention = MuseAttention(num_heads, key_dim, dropout, dtype=policy, name="self_attention")
        if cross_attention:
            self.cross_norm = norm("cross_attention_norm")
            self.cross_attn = MuseAttention(num_heads, key_dim, dropout, dtype=policy, name="cross_attention")
        self.mlp_norm = norm("mlp_norm")
        self.mlp_in = keras.layers.Dense(mlp_dim, dtype=policy, name="mlp_in")
        self.mlp_out = keras.layers.Dense(hidden_dim, dtype=policy, name="mlp_out")
        self.mlp_drop = keras.layers.Dropout(dropout, dtype=policy)

    def build(self, x_shape, context_shape=None):
        shape = (None, None, self.hidden_dim)
        self.self_norm.build(shape)
        self.self_attention.build(shape)
        if self.cross_attention:
            self.cross_norm.build(shape)
            self.cross_attn.build(shape, shape)
        self.mlp_norm.build(shape)
        self.mlp_in.build(shape)
        self.mlp_out.build((None, None, self.mlp_dim))
        self.built = True

    def cross_key_value(self, context):
        """Keys/values of the context for this block: compute once, reuse."""
        return self.cross_attn.key_value(context)

    def call(self, x, context=None, context_mask=None, cross_key_value=None, training=False):
        h = self.self_norm(x)
        x = x + self.self_attention(h, training=training)
        if self.cross_attention:
            if context is None and cross_key_value is None:
                raise ValueError(
                    "This block cross-attends: pass `context` (and `context_mask`) "
                    "or a precomputed `cross_key_value`."
                )
            h = self.cross_norm(x)
            x = x + self.cross_attn(
                h,
                context=context,
                context_mask=context_mask,
                key_value=cross_key_value,
                training=training,
            )
        h = self.mlp_in(self.mlp_norm(x))
        h = ops.gelu(h, approximate=True)
        x = x + self.mlp_drop(self.mlp_out(h), training=training)
        return x

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout=self.dropout,
            cross_attention=self.cross_attention,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
