import os

import keras
from keras import ops

from keras_muse.layers.layer_normalization import LayerNormalization


def apply_on_tokens(layer, x, **kwargs):
    """`layer(x)` for `x` [..., D], computed on the 2-D [tokens, D] view.

    Why: the weight gradient of a Dense layer on [B, N, D] contracts over two
    axes, which XLA:CPU does not map to one GEMM (measured 2x slower than
    the same product on [B*N, D]); on accelerators the reshape is free.
    """
    if isinstance(x, keras.KerasTensor):  # functional construction: shapes only
        return layer(x, **kwargs)
    shape = ops.shape(x)
    y = layer(ops.reshape(x, (-1, shape[-1])), **kwargs)
    return ops.reshape(y, (*shape[:-1], y.shape[-1]))


_ON_CPU = None


def _on_cpu():
    global _ON_CPU
    if _ON_CPU is None:
        devices = keras.distribution.list_devices()
        _ON_CPU = not devices or all(str(d).lower().startswith("cpu") for d in devices)
    return _ON_CPU


def attention(q, k, v, mask=None, training=False):
    """Scaled dot-product attention on [B, N, heads, d] queries/keys/values.

    On accelerators `keras.ops.dot_product_attention` (fused flash/cuDNN
    kernels where the backend has them). On CPU the same maths as batched
    matmuls on a heads-first layout, measured faster with XLA:CPU (width 512,
    8 heads, 256 tokens, batch 8: 17 vs 45 ms forward, 80 vs 103 ms with the
    gradient; `benchmarks/train_bench.py --attention`), with the softmax
    normalized after the value product (exp(s - max) @ v / sum): one division
    per [N, d] output instead of per [N, L] weight, so XLA:CPU never
    materializes the [B, heads, N, L] broadcast of the row sums. Measured
    with jax 0.10.2 on a 2-core AMD EPYC (AVX2), forward + backward of the
    core: 176 -> 131-138 ms at 32 x 4 heads x 256 x 32, 117-127 -> 88-92 ms at
    8 x 8 x 256 x 64 (forward alone 50 -> 15 and 25 -> 18 ms). The row maximum
    is a constant shift (it cancels in the ratio), so no gradient flows
    through it. `training` does not change the maths (dropout is the
    caller's, on the projected output).
    """
    if not _on_cpu():
        return ops.dot_product_attention(q, k, v, mask=mask)
    parts = _batch_parts(q.shape[0])
    if parts > 1:
        def chunk(x, i):
            if x is None or x.shape[0] == 1:  # broadcast along the batch
                return x
            size = x.shape[0] // parts
            return x[i * size:(i + 1) * size]
        return ops.concatenate(
            [_cpu_attention(chunk(q, i), chunk(k, i), chunk(v, i), chunk(mask, i)) for i in range(parts)], axis=0)
    return _cpu_attention(q, k, v, mask)


def _parts_from_env():
    value = os.environ.get("KM_ATTN_SPLIT", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"KM_ATTN_SPLIT: expected a positive integer (batch pieces of the CPU attention), "
                         f"got {value!r}")
    return int(value)


# Why pieces: XLA:CPU runs each batched score product on one thread, while
# independent pieces can run side by side (micro-benchmark, forward+backward:
# 48 -> 39 ms with 4). In the whole train step it is worth little: on a 2-core
# Xeon, alternating runs of `benchmarks/train_bench.py` gave, with 4 pieces vs
# 1, d512/L8 2.27-2.39 s (median 2.38) vs 2.39-2.40 s (2.39), the shapes d128
# step 0.68-0.71 vs 0.715-0.722 s, guided d512 sampling 6.55 vs 6.57 s, and
# 1-2 s more compilation for every program. So 1 by default; KM_ATTN_SPLIT=4
# is worth setting for a long training run on such a machine.
ATTENTION_BATCH_PARTS = _parts_from_env()


def _batch_parts(batch):
    parts = ATTENTION_BATCH_PARTS
    if batch is None or parts <= 1 or batch % parts:
        return 1
    return parts


def _cpu_attention(q, k, v, mask=None):
    vh = ops.transpose(v, (0, 2, 1, 3))
    scores = _attention_scores(q, k, mask)
    p = ops.exp(scores - ops.stop_gradient(ops.max(scores, axis=-1, keepdims=True)))
    out = ops.matmul(ops.cast(p, vh.dtype), vh)
    out = out / ops.cast(ops.sum(p, axis=-1, keepdims=True), out.dtype)
    return ops.transpose(out, (0, 2, 1, 3))


def _attention_scores(q, k, mask=None):
    """float32 scaled scores [B, heads, N, L], -1e9 where `mask` is False."""
    scale = 1.0 / float(q.shape[-1]) ** 0.5
    qh = ops.transpose(q, (0, 2, 1, 3))
    kh = ops.transpose(k, (0, 2, 3, 1))
    scores = ops.cast(ops.matmul(qh, kh) * ops.cast(scale, qh.dtype), "float32")
    if mask is not None:
        scores = ops.where(mask, scores, -1e9)
    return scores


def attention_weights(q, k, mask=None):
    """float32 attention probabilities [B, heads, N, L] of [B, N, heads, d]
    queries over [B, L, heads, d] keys; `mask` broadcasts to [B, heads, N, L]."""
    return ops.softmax(_attention_scores(q, k, mask), axis=-1)


SELF_ATTENTION_PARTITIONS = ("block", "grid")


def partition_tokens(x, grid_size, window, partition):
    """[B, H*W, D] tokens -> [B * groups, window**2, D] attention groups.

    Multi-axis attention (MaxViT; the paper's super-res model uses it for its
    64x64 grid): "block" groups each window x window tile of neighbours;
    "grid" groups the window x window tokens that sit at the same offset in
    every tile (stride H/window), so one block and one grid layer mix the
    whole grid at window**2 / (H*W) of the cost of global attention.
    """
    h, w = grid_size
    d = x.shape[-1]
    if partition == "block":
        x = ops.reshape(x, (-1, h // window, window, w // window, window, d))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    else:
        x = ops.reshape(x, (-1, window, h // window, window, w // window, d))
        x = ops.transpose(x, (0, 2, 4, 1, 3, 5))
    return ops.reshape(x, (-1, window * window, d))


def merge_tokens(x, grid_size, window, partition):
    """The inverse of `partition_tokens`: groups -> [B, H*W, D]."""
    h, w = grid_size
    d = x.shape[-1]
    if partition == "block":
        x = ops.reshape(x, (-1, h // window, w // window, window, window, d))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    else:
        x = ops.reshape(x, (-1, h // window, w // window, window, window, d))
        x = ops.transpose(x, (0, 3, 1, 4, 2, 5))
    return ops.reshape(x, (-1, h * w, d))


def _split_heads(x, num_heads, key_dim):
    # Explicit sizes: a -1 would lose the static head size in a TF graph.
    b, n = ops.shape(x)[0], ops.shape(x)[1]
    return ops.reshape(x, (b, n, num_heads, key_dim))


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
            _split_heads(apply_on_tokens(self.key, context), self.num_heads, self.key_dim),
            _split_heads(apply_on_tokens(self.value, context), self.num_heads, self.key_dim),
        )

    def single_position_output(self, context):
        """What attention over a context of ONE position returns, for every
        query: the softmax over a single key is 1, so the output is that
        position's value through the output projection, whatever the
        queries. `context` [B, 1, D] -> [B, 1, hidden].

        Why: the unconditional half of a guided batch attends to the empty
        prompt, one real position; its cross-attention is a constant per
        layer, not a [N, L] attention per step.
        """
        return apply_on_tokens(self.output_dense, apply_on_tokens(self.value, context))

    def _query_key_value_mask(self, x, context, context_mask, key_value):
        q = _split_heads(apply_on_tokens(self.query, x), self.num_heads, self.key_dim)
        if key_value is None:
            key_value = self.key_value(x if context is None else context)
        mask = None
        if context_mask is not None:
            # [B, L] -> [B, 1, 1, L]: every query and head sees the same keys.
            mask = ops.cast(context_mask, "bool")[:, None, None, :]
        return q, key_value[0], key_value[1], mask

    def attention_weights(self, x, context=None, context_mask=None):
        """The attention probabilities `call` would use, [B, heads, N, L]
        (float32; for inspection, e.g. cross-attention maps per word)."""
        q, k, _, mask = self._query_key_value_mask(x, context, context_mask, None)
        return attention_weights(q, k, mask)

    def call(self, x, context=None, context_mask=None, key_value=None, training=False):
        q, k, v, mask = self._query_key_value_mask(x, context, context_mask, key_value)
        out = attention(q, k, v, mask=mask, training=training)
        b, n = ops.shape(out)[0], ops.shape(out)[1]
        out = ops.reshape(out, (b, n, self.num_heads * self.key_dim))
        return self.drop(apply_on_tokens(self.output_dense, out), training=training)

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
        attention_window: None (global self-attention) or int: self-attention
            within groups of `attention_window**2` tokens of the
            `grid_size` grid, as `self_attention_partition` says.
        self_attention_partition: "block" (local tiles) or "grid" (strided,
            global), see `partition_tokens`.
        grid_size: (h, w) of the token grid; needed with `attention_window`,
            both divisible by it.

    Call args: `x` [B, N, hidden]; `context` [B, L, hidden] and
    `context_mask` [B, L] (True = real token) for cross-attention, or
    `cross_key_value` from `cross_key_value(context)` computed once. That
    may also be `cross_key_value(context, single_position=c)`: a dict
    whose keys/values cover the first rows of `x` (and `context_mask`
    only those rows), while the remaining rows attend to a context of one
    position `c` [R, 1, hidden] and take its constant output.

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
        attention_window=None,
        self_attention_partition="block",
        grid_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"`hidden_dim` ({hidden_dim}) must be divisible by `num_heads` ({num_heads})."
            )
        if attention_window is not None:
            if self_attention_partition not in SELF_ATTENTION_PARTITIONS:
                raise ValueError(
                    f"`self_attention_partition` must be one of {SELF_ATTENTION_PARTITIONS}. "
                    f"Received: {self_attention_partition!r}"
                )
            if grid_size is None or any(int(g) % int(attention_window) for g in grid_size):
                raise ValueError(
                    f"`grid_size` must be given and divisible by `attention_window` "
                    f"({attention_window}). Received: grid_size={grid_size}"
                )
            grid_size = tuple(int(g) for g in grid_size)
            attention_window = int(attention_window)
        self.attention_window = attention_window
        self.self_attention_partition = self_attention_partition
        self.grid_size = grid_size
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.cross_attention = cross_attention
        self.layer_norm_epsilon = layer_norm_epsilon
        policy = self.dtype_policy
        key_dim = hidden_dim // num_heads

        def norm(name):
            return LayerNormalization(
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

    def cross_key_value(self, context, single_position=None):
        """Keys/values of the context for this block: compute once, reuse.

        With `single_position` ([R, 1, hidden], each row's only real
        context position), R more rows of `x` follow the `context` rows and
        get `MuseAttention.single_position_output` instead of attention.
        """
        key_value = self.cross_attn.key_value(context)
        if single_position is None:
            return key_value
        return {"key_value": key_value, "single_position_output": self.cross_attn.single_position_output(single_position)}

    def _cross_attend(self, x, context, context_mask, cross_key_value, training):
        if not isinstance(cross_key_value, dict):
            h = self.cross_norm(x)
            return x + self.cross_attn(
                h, context=context, context_mask=context_mask, key_value=cross_key_value, training=training
            )
        key_value, constant = cross_key_value["key_value"], cross_key_value["single_position_output"]
        rows = key_value[0].shape[0]
        attended = self.cross_attn(
            self.cross_norm(x[:rows]), context_mask=context_mask, key_value=key_value, training=training
        )
        tail = x[rows:] + ops.cast(constant, x.dtype)
        return ops.concatenate([x[:rows] + attended, tail], axis=0)

    def _self_attend(self, x, training=False):
        h = self.self_norm(x)
        if self.attention_window is None:
            return x + self.self_attention(h, training=training)
        args = (self.grid_size, self.attention_window, self.self_attention_partition)
        h = self.self_attention(partition_tokens(h, *args), training=training)
        return x + merge_tokens(h, *args)

    def cross_attention_weights(self, x, context, context_mask=None):
        """How this block's tokens attend over the context: [B, heads, N, L]
        float32 probabilities, as `call(x, context, context_mask)` uses them."""
        if not self.cross_attention:
            raise ValueError("This block has no cross-attention (`cross_attention=False`).")
        h = self.cross_norm(self._self_attend(x))
        return self.cross_attn.attention_weights(h, context=context, context_mask=context_mask)

    def call(self, x, context=None, context_mask=None, cross_key_value=None, training=False):
        x = self._self_attend(x, training=training)
        if self.cross_attention:
            if context is None and cross_key_value is None:
                raise ValueError(
                    "This block cross-attends: pass `context` (and `context_mask`) "
                    "or a precomputed `cross_key_value`."
                )
            x = self._cross_attend(x, context, context_mask, cross_key_value, training)
        h = apply_on_tokens(self.mlp_in, self.mlp_norm(x))
        h = ops.gelu(h, approximate=True)
        x = x + self.mlp_drop(apply_on_tokens(self.mlp_out, h), training=training)
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
            attention_window=self.attention_window,
            self_attention_partition=self.self_attention_partition,
            grid_size=None if self.grid_size is None else list(self.grid_size),
        )
        return config
