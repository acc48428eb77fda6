import keras
from keras import ops
from keras_hub.models import Backbone

from keras_muse.layers.layer_normalization import LayerNormalization
from keras_muse.layers.position_embedding_2d import PositionEmbedding2D
from keras_muse.layers.transformer_block import MuseTransformerBlock
from keras_muse.layers.transformer_block import apply_on_tokens
from keras_muse.models.muse.masked_token_transformer import MaskedTokenTransformerMixin
from keras_muse.models.muse.masked_token_transformer import as_grid
from keras_muse.models.muse.muse_presets import MUSE_SUPER_RES_PRESETS
from keras_muse.utils.layout_map_mixin import LayoutMapMixin
from keras_muse.utils.preset_utils import PresetMixin


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseSuperResBackbone(MaskedTokenTransformerMixin, LayoutMapMixin, PresetMixin, Backbone):
    """The Muse super-resolution masked transformer (paper §2.4, App. A.3).

    The low-res token grid (the base model's output, e.g. 16x16 from the f16
    tokenizer) is embedded and passed through its own stack of
    `low_res_num_layers` self-attention blocks; those outputs, concatenated
    with the projected text embeddings (padding mask: all low-res tokens
    real, then the text's), form the context that the high-res transformer
    over the masked high-res grid (e.g. 64x64 from the f8 tokenizer)
    cross-attends to. The high-res side (embedding with [MASK], 2-D
    positions, `MuseTransformerBlock`s, logits head) is the base model's
    code (`MaskedTokenTransformerMixin`); the low-res stack is the same block
    without cross-attention.

    Inputs (dict): `token_ids` int [B, N] (high-res, N = grid_size**2, id
    `codebook_size` is [MASK]); `low_res_token_ids` int [B, n] (n =
    low_res_grid_size**2, never masked); `text_embeddings` float [B, L,
    text_dim]; `text_padding_mask` bool [B, L]. Output: logits [B, N,
    codebook_size].

    Args:
        codebook_size: int, the high-res tokenizer's codebook.
        grid_size: int or (h, w), the high-res token grid.
        low_res_codebook_size: int, the base tokenizer's codebook.
        low_res_grid_size: int or (h, w), the low-res token grid.
        hidden_dim, num_layers, num_heads, mlp_dim: the high-res transformer.
        low_res_num_layers: int, self-attention blocks over the low-res tokens.
        text_dim: int, width of the text encoder's outputs.
        dropout, tie_embeddings, layer_norm_epsilon, dtype: as `MuseBackbone`.
        aligned_low_res: bool. Besides the cross-attention context, add
            each low-res token's features (projected) to the embeddings of
            the high-res tokens it covers (nearest upsampling). Why: with
            cross-attention alone, a tiny shapes model trained 800 steps
            predicted 1.2 % of fully masked object tokens (it had not learned
            which low-res token lies under which high-res one); the paper's
            pre-training budget is out of reach on a CPU. Needs grid sizes
            that are multiples of the low-res ones.
        attention_window: None (global self-attention over the high-res grid)
            or int: multi-axis attention (paper App. A.3), layers alternating
            `attention_window`-sized tiles and a strided grid of the same
            size; the grid must be divisible by it. Cuts self-attention's
            cost by `attention_window**2 / N`.

    Example:
    ```python
    sr = MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False)
    logits = sr({
        "token_ids": np.full((2, 64), 64, "int32"),           # 8x8, all [MASK]
        "low_res_token_ids": np.zeros((2, 16), "int32"),      # 4x4 base tokens
        "text_embeddings": np.zeros((2, 8, 16), "float32"),
        "text_padding_mask": np.ones((2, 8), bool),
    })                                                         # (2, 64, 64)
    ```
    """

    layout_map_builder = "muse_super_res_layout_map"

    config_presets = MUSE_SUPER_RES_PRESETS

    def __init__(
        self,
        codebook_size,
        grid_size,
        low_res_codebook_size,
        low_res_grid_size,
        hidden_dim,
        num_layers,
        low_res_num_layers,
        num_heads,
        mlp_dim,
        text_dim,
        dropout=0.1,
        tie_embeddings=True,
        layer_norm_epsilon=1e-6,
        attention_window=None,
        aligned_low_res=False,
        dtype=None,
        **kwargs,
    ):
        grid = as_grid(grid_size)
        low_grid = as_grid(low_res_grid_size)
        num_tokens = grid[0] * grid[1]
        num_low_res_tokens = low_grid[0] * low_grid[1]

        # === Layers ===
        self._create_token_layers(
            codebook_size, grid, hidden_dim, num_layers, num_heads, mlp_dim,
            dropout, tie_embeddings, layer_norm_epsilon, dtype, attention_window=attention_window,
        )
        self.low_res_embedding = keras.layers.Embedding(
            low_res_codebook_size,
            hidden_dim,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=dtype,
            name="low_res_embedding",
        )
        self.low_res_position_embedding = PositionEmbedding2D(
            low_grid, dtype=dtype, name="low_res_position_embedding"
        )
        self.low_res_embeddings_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="low_res_embeddings_norm"
        )
        self.low_res_layers = [
            MuseTransformerBlock(
                hidden_dim, num_heads, mlp_dim, dropout=dropout, cross_attention=False,
                layer_norm_epsilon=layer_norm_epsilon, dtype=dtype,
                name=f"low_res_layer_{i}",
            )
            for i in range(low_res_num_layers)
        ]
        self.low_res_final_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="low_res_final_norm"
        )
        if aligned_low_res:
            if grid[0] % low_grid[0] or grid[1] % low_grid[1]:
                raise ValueError(
                    f"`aligned_low_res` needs `grid_size` {grid} to be a multiple of "
                    f"`low_res_grid_size` {low_grid}."
                )
            self.low_res_alignment = keras.layers.Dense(hidden_dim, dtype=dtype, name="low_res_alignment")
        self.aligned_low_res = aligned_low_res
        self._grid, self._low_grid = grid, low_grid

        # === Functional Model ===
        token_ids = keras.Input((num_tokens,), dtype="int32", name="token_ids")
        low_res_token_ids = keras.Input((num_low_res_tokens,), dtype="int32", name="low_res_token_ids")
        text_embeddings = keras.Input((None, text_dim), name="text_embeddings")
        text_padding_mask = keras.Input((None,), dtype="bool", name="text_padding_mask")
        low_res = self.low_res_features(low_res_token_ids)
        context, context_mask = self.context_from_features(low_res, low_res_token_ids, text_embeddings, text_padding_mask)
        x = self.embed_tokens(token_ids)
        if aligned_low_res:
            x = x + self.token_bias(low_res)
        x = self.transform(x, context=context, context_mask=context_mask)
        logits = self.logits_from_hidden(x)
        inputs = {
            "token_ids": token_ids,
            "low_res_token_ids": low_res_token_ids,
            "text_embeddings": text_embeddings,
            "text_padding_mask": text_padding_mask,
        }
        super().__init__(
            inputs=inputs,
            outputs=logits,
            dtype=dtype,
            **kwargs,
        )
        self._set_hidden_view(inputs, x)

        # === Config ===
        self.codebook_size = codebook_size
        self.grid_size = grid
        self.num_tokens = num_tokens
        self.low_res_codebook_size = low_res_codebook_size
        self.low_res_grid_size = low_grid
        self.num_low_res_tokens = num_low_res_tokens
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.low_res_num_layers = low_res_num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.text_dim = text_dim
        self.dropout = dropout
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_window = attention_window

    def low_res_features(self, low_res_token_ids, training=False):
        """The low-res stack's outputs [B, n, hidden]."""
        x = self.low_res_embedding(low_res_token_ids)
        x = self.low_res_embeddings_norm(self.low_res_position_embedding(x))
        for block in self.low_res_layers:
            x = block(x, training=training)
        return self.low_res_final_norm(x)

    def token_bias(self, low_res_features):
        """Each low-res token's projected features, repeated over the
        high-res tokens it covers: [B, N, hidden]."""
        (h, w), (lh, lw) = self._grid, self._low_grid
        d = low_res_features.shape[-1]
        x = ops.reshape(low_res_features, (-1, lh, 1, lw, 1, d))
        x = ops.tile(x, (1, 1, h // lh, 1, w // lw, 1))
        return apply_on_tokens(self.low_res_alignment, ops.reshape(x, (-1, h * w, d)))

    def context(self, low_res_token_ids, text_embeddings, text_padding_mask, training=False):
        """[low-res stack outputs; projected text] and its padding mask."""
        x = self.low_res_features(low_res_token_ids, training=training)
        return self.context_from_features(x, low_res_token_ids, text_embeddings, text_padding_mask)

    def context_from_features(self, x, low_res_token_ids, text_embeddings, text_padding_mask):
        text = self.project_text(text_embeddings)
        context = ops.concatenate([x, ops.cast(text, x.dtype)], axis=1)
        # Every low-res token is real; the text keeps its own padding.
        low_mask = ops.cast(ops.ones_like(low_res_token_ids), "bool")
        mask = ops.concatenate([low_mask, ops.cast(text_padding_mask, "bool")], axis=1)
        return context, mask

    def conditioning_key_values(self, text_embeddings, text_padding_mask, low_res_token_ids):
        """The context's per-layer cross-attention keys/values and mask,
        computed once per generation (`logits_step` reads them)."""
        low_res = self.low_res_features(low_res_token_ids)
        context, mask = self.context_from_features(low_res, low_res_token_ids, text_embeddings, text_padding_mask)
        key_values = self.context_key_values(context)
        if self.aligned_low_res:
            key_values = {"layers": key_values, "token_bias": self.token_bias(low_res)}
        return key_values, mask

    def validate_inputs(self, token_ids, low_res_token_ids, text_embeddings, text_padding_mask):
        """Clear `ValueError`s for concrete (numpy-convertible) inputs."""
        ids = self._validate_ids(
            "token_ids", token_ids, self.num_tokens, self.grid_size, self.codebook_size,
            f" ({self.codebook_size} is [MASK])",
        )
        low = self._validate_ids(
            "low_res_token_ids", low_res_token_ids, self.num_low_res_tokens,
            self.low_res_grid_size, self.low_res_codebook_size - 1, " (low-res codebook ids)",
        )
        if low.shape[0] != ids.shape[0]:
            raise ValueError(
                f"`low_res_token_ids` batch ({low.shape[0]}) must equal the `token_ids` batch ({ids.shape[0]})."
            )
        self._validate_text(ids.shape[0], text_embeddings, text_padding_mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            codebook_size=self.codebook_size,
            grid_size=list(self.grid_size),
            low_res_codebook_size=self.low_res_codebook_size,
            low_res_grid_size=list(self.low_res_grid_size),
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            low_res_num_layers=self.low_res_num_layers,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            text_dim=self.text_dim,
            dropout=self.dropout,
            tie_embeddings=self.tie_embeddings,
            layer_norm_epsilon=self.layer_norm_epsilon,
            attention_window=self.attention_window,
            aligned_low_res=self.aligned_low_res,
        )
        return config

