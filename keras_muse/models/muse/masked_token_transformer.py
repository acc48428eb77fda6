"""The token side shared by the base and super-res transformers.

Both Muse transformers (paper §2.3, §2.4) embed a masked grid of image
tokens, run `MuseTransformerBlock`s that cross-attend to a context, and read
logits over the codebook from the same head. This mixin holds those layers
and the step methods the sampler calls, so there is one implementation of
each; the backbones differ only in what the context is (projected text, or
[low-res tokens; projected text]).
"""

import keras
import numpy as np
from keras import ops

from keras_muse.layers.layer_normalization import LayerNormalization
from keras_muse.layers.reversible_embedding import ReversibleEmbedding
from keras_muse.layers.position_embedding_2d import PositionEmbedding2D
from keras_muse.layers.transformer_block import MuseTransformerBlock
from keras_muse.layers.transformer_block import apply_on_tokens
from keras_muse.utils.untracked import Untracked


def as_grid(grid_size):
    """int or (h, w) -> (h, w) of ints."""
    grid = (grid_size, grid_size) if np.isscalar(grid_size) else tuple(grid_size)
    return tuple(int(g) for g in grid)


class MaskedTokenTransformerMixin:
    """Layers and step methods of a masked-token transformer over a grid.

    Subclasses call `_create_token_layers` before building their functional
    graph, and define `conditioning_key_values(text_embeddings,
    text_padding_mask, **conditions)` -> `(key_values, context_mask)`.
    """

    def _create_token_layers(self, codebook_size, grid, hidden_dim, num_layers, num_heads,
                             mlp_dim, dropout, tie_embeddings, layer_norm_epsilon, dtype,
                             attention_window=None):
        self.token_embedding = ReversibleEmbedding(
            codebook_size,  # + [MASK], an input only
            hidden_dim,
            tie_weights=tie_embeddings,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = PositionEmbedding2D(grid, dtype=dtype, name="position_embedding")
        self.embeddings_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_norm"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.text_projection = keras.layers.Dense(hidden_dim, dtype=dtype, name="text_projection")
        # Normalized like the token stream: without it the projected text was
        # ~40x smaller than the embedded tokens (norms 0.3 vs 11 in a trained
        # shapes model) and cross-attention carried almost nothing.
        self.text_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="text_norm"
        )
        # With `attention_window`, self-attention alternates block / grid
        # partitions (multi-axis attention, MaxViT-style), layer by layer.
        self.transformer_layers = [
            MuseTransformerBlock(
                hidden_dim, num_heads, mlp_dim, dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon, dtype=dtype,
                attention_window=attention_window,
                self_attention_partition=("block", "grid")[i % 2],
                grid_size=grid if attention_window else None,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
        )
        self.head_dense = keras.layers.Dense(hidden_dim, dtype=dtype, name="head_dense")
        self.head_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="head_norm"
        )

    @property
    def mask_token_id(self):
        return self.codebook_size

    # Step methods: the pieces of the forward pass, so a sampler can compute
    # the context's cross-attention keys/values once per generation.
    def embed_tokens(self, token_ids, training=False):
        x = self.token_embedding(token_ids)
        x = self.position_embedding(x)
        return self.embeddings_dropout(self.embeddings_norm(x), training=training)

    def project_text(self, text_embeddings):
        """Text embeddings -> the model width, normalized (paper §2.1)."""
        return self.text_norm(apply_on_tokens(self.text_projection, text_embeddings))

    def transform(self, x, context=None, context_mask=None, key_values=None, training=False):
        """The transformer stack over embedded tokens `x`."""
        for i, block in enumerate(self.transformer_layers):
            kv = None if key_values is None else key_values[i]
            x = block(x, context=context, context_mask=context_mask, cross_key_value=kv, training=training)
        return x

    def head_features(self, x):
        """Transformer output -> the features the codebook logits are read
        from (`token_logits` is linear in them)."""
        return self.head_norm(ops.gelu(apply_on_tokens(self.head_dense, self.final_norm(x)), approximate=True))

    def token_logits(self, features):
        """Head features [..., hidden] -> float32 logits over the codebook.

        A plain product with the (tied or separate) output embedding, so
        classifier-free guidance can combine features instead of logits:
        ((1+t)·f_c − t·f_u)·Eᵀ = (1+t)·ℓ_c − t·ℓ_u at half the cost of the
        largest matmul of a sampling step. The [MASK] id is an input only:
        `keras_muse.layers.ReversibleEmbedding` never predicts it.
        """
        return ops.cast(apply_on_tokens(self.token_embedding, features, reverse=True), "float32")

    def logits_from_hidden(self, x):
        return self.token_logits(self.head_features(x))

    def _set_hidden_view(self, inputs, hidden):
        # A functional view of the same graph up to the transformer output,
        # sharing every layer; held untracked so the weight file is unchanged.
        self._hidden_view = Untracked(keras.Model(inputs, hidden, name=f"{self.name}_hidden"))

    def hidden_states(self, inputs, training=False):
        """The transformer stack's output `[B, N, hidden]` for the backbone's
        inputs: `logits_from_hidden` of it is the backbone's output. Training
        reads logits from the masked positions only
        (`keras_muse.layers.masked_head_loss`).

        Example:
        ```python
        hidden = backbone.hidden_states(inputs)
        logits = backbone.logits_from_hidden(hidden)   # == backbone(inputs)
        ```
        """
        return self._hidden_view.value(inputs, training=training)

    def cross_attention_maps(self, token_ids, context, context_mask=None):
        """How every layer's tokens attend over `context` (for inspection).

        Args:
            token_ids: int `[B, N]` token grid (the [MASK] id where masked).
            context: `[B, L, hidden]` context, as the blocks cross-attend to it.
            context_mask: optional bool `[B, L]`, True = real position.

        Returns:
            float32 `[num_layers, B, heads, N, L]` attention probabilities.
        """
        x = self.embed_tokens(token_ids)
        maps = []
        for block in self.transformer_layers:
            maps.append(block.cross_attention_weights(x, context, context_mask))
            x = block(x, context=context, context_mask=context_mask)
        return ops.stack(maps)

    def context_key_values(self, context, single_position=None):
        """Context [B, L, hidden] -> per-layer cross-attention (keys, values).

        `single_position` [R, 1, hidden]: R more rows follow whose context is
        that one position (`MuseTransformerBlock.cross_key_value`).
        """
        return [block.cross_key_value(context, single_position) for block in self.transformer_layers]

    def features_step(self, token_ids, key_values, context_mask, training=False):
        """Head features for `token_ids` given precomputed context
        `key_values` (from `conditioning_key_values`: the per-layer list, or
        a dict {"layers": list, "token_bias": [B, N, hidden]} when the
        condition also adds a per-position term to the embedded tokens).
        `token_logits` turns them into logits."""
        x = self.embed_tokens(token_ids, training=training)
        if isinstance(key_values, dict):
            x = x + ops.cast(key_values["token_bias"], x.dtype)
            key_values = key_values["layers"]
        x = self.transform(x, context_mask=context_mask, key_values=key_values, training=training)
        return self.head_features(x)

    def logits_step(self, token_ids, key_values, context_mask, training=False):
        """Logits for `token_ids` given precomputed context `key_values`."""
        return self.token_logits(self.features_step(token_ids, key_values, context_mask, training=training))

    # ------------------------------------------------------------ validation
    def _validate_ids(self, name, ids, num_tokens, grid, max_id, mask_note=""):
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] == 0:
            raise ValueError(
                f"`{name}` must be a non-empty int batch [batch, {num_tokens}]. Received shape {ids.shape}."
            )
        if ids.shape[1] != num_tokens:
            raise ValueError(
                f"`{name}` must have {num_tokens} tokens per example (grid "
                f"{grid[0]}x{grid[1]}). Received {ids.shape[1]}."
            )
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"`{name}` must be integers. Received dtype {ids.dtype}.")
        if ids.min() < 0 or ids.max() > max_id:
            raise ValueError(
                f"`{name}` must lie in [0, {max_id}]{mask_note}. "
                f"Received values in [{ids.min()}, {ids.max()}]."
            )
        return ids

    def _validate_text(self, batch, text_embeddings, text_padding_mask):
        emb = np.asarray(text_embeddings)
        mask = np.asarray(text_padding_mask)
        if emb.ndim != 3 or emb.shape[-1] != self.text_dim:
            raise ValueError(
                f"`text_embeddings` must be [batch, length, {self.text_dim}]. Received shape {emb.shape}."
            )
        if emb.shape[0] != batch:
            raise ValueError(
                f"`text_embeddings` batch ({emb.shape[0]}) must equal the `token_ids` batch ({batch})."
            )
        if mask.shape != emb.shape[:2]:
            raise ValueError(
                f"`text_padding_mask` must be [batch, length] = {emb.shape[:2]}. Received shape {mask.shape}."
            )
        if not np.all(np.isfinite(emb)):
            raise ValueError("`text_embeddings` contain NaN or inf.")
