import keras
import numpy as np
from keras import ops
from keras_hub.layers import ReversibleEmbedding
from keras_hub.models import Backbone

from keras_muse.layers.position_embedding_2d import PositionEmbedding2D
from keras_muse.layers.transformer_block import MuseTransformerBlock
from keras_muse.layers.transformer_block import apply_on_tokens
from keras_muse.models.muse.muse_presets import MUSE_BACKBONE_PRESETS
from keras_muse.utils.preset_utils import PresetMixin


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseBackbone(PresetMixin, Backbone):
    """The Muse base masked transformer (paper §2.3, App. A.1).

    A bidirectional transformer over the image-token grid with a learned
    [MASK] token (id `codebook_size`): token embedding + learned 2-D position
    embedding, `num_layers` `MuseTransformerBlock`s that cross-attend to the
    text embeddings (projected to the model width by a trainable layer, §2.1),
    a final norm and an MLP head; logits over the codebook come from the token
    embedding matrix (tied, MaskGIT) or a separate projection.

    Inputs (dict): `token_ids` int [B, N] with N = grid_size**2 and values in
    [0, codebook_size] (the last one is [MASK]); `text_embeddings` float
    [B, L, text_dim]; `text_padding_mask` bool [B, L] (True = real token).
    Output: logits [B, N, codebook_size].

    Args:
        codebook_size: int, VQGAN codebook size (8192).
        grid_size: int or (h, w), the token grid (16 for 256x256 / f16).
        hidden_dim, num_layers, num_heads, mlp_dim: transformer size.
        text_dim: int, width of the text encoder's outputs (4096 for T5-XXL).
        dropout: float (0.1).
        tie_embeddings: bool, logits from the input embedding matrix.
        dtype: dtype policy.

    Example:
    ```python
    backbone = MuseBackbone.from_preset("muse_tiny", load_weights=False)
    logits = backbone({
        "token_ids": np.full((2, 16), 64, "int32"),          # all [MASK]
        "text_embeddings": np.zeros((2, 8, 16), "float32"),
        "text_padding_mask": np.ones((2, 8), bool),
    })                                                        # (2, 16, 64)
    ```
    """

    config_presets = MUSE_BACKBONE_PRESETS

    def __init__(
        self,
        codebook_size,
        grid_size,
        hidden_dim,
        num_layers,
        num_heads,
        mlp_dim,
        text_dim,
        dropout=0.1,
        tie_embeddings=True,
        layer_norm_epsilon=1e-6,
        dtype=None,
        **kwargs,
    ):
        grid = (grid_size, grid_size) if np.isscalar(grid_size) else tuple(grid_size)
        grid = tuple(int(g) for g in grid)
        num_tokens = grid[0] * grid[1]

        # === Layers ===
        self.token_embedding = ReversibleEmbedding(
            codebook_size + 1,
            hidden_dim,
            tie_weights=tie_embeddings,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = PositionEmbedding2D(grid, dtype=dtype, name="position_embedding")
        self.embeddings_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_norm"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.text_projection = keras.layers.Dense(hidden_dim, dtype=dtype, name="text_projection")
        self.transformer_layers = [
            MuseTransformerBlock(
                hidden_dim, num_heads, mlp_dim, dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon, dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
        )
        self.head_dense = keras.layers.Dense(hidden_dim, dtype=dtype, name="head_dense")
        self.head_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="head_norm"
        )

        # === Functional Model ===
        token_ids = keras.Input((num_tokens,), dtype="int32", name="token_ids")
        text_embeddings = keras.Input((None, text_dim), name="text_embeddings")
        text_padding_mask = keras.Input((None,), dtype="bool", name="text_padding_mask")
        context = apply_on_tokens(self.text_projection, text_embeddings)
        x = self.embed_tokens(token_ids)
        for block in self.transformer_layers:
            x = block(x, context=context, context_mask=text_padding_mask)
        logits = self.logits_from_hidden(x)
        super().__init__(
            inputs={
                "token_ids": token_ids,
                "text_embeddings": text_embeddings,
                "text_padding_mask": text_padding_mask,
            },
            outputs=logits,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.codebook_size = codebook_size
        self.grid_size = grid
        self.num_tokens = num_tokens
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.text_dim = text_dim
        self.dropout = dropout
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon

    @property
    def mask_token_id(self):
        return self.codebook_size

    # Step methods: the pieces of the forward pass, so a sampler can project
    # the text and compute cross-attention keys/values once per generation.
    def embed_tokens(self, token_ids, training=False):
        x = self.token_embedding(token_ids)
        x = self.position_embedding(x)
        return self.embeddings_dropout(self.embeddings_norm(x), training=training)

    def logits_from_hidden(self, x):
        x = self.head_norm(ops.gelu(apply_on_tokens(self.head_dense, self.final_norm(x)), approximate=True))
        logits = apply_on_tokens(self.token_embedding, x, reverse=True)
        # The [MASK] id is an input only: never predicted.
        return ops.cast(logits[..., : self.token_embedding.input_dim - 1], "float32")

    def text_key_values(self, text_embeddings):
        """Projected text -> per-layer cross-attention (keys, values)."""
        context = apply_on_tokens(self.text_projection, text_embeddings)
        return [block.cross_key_value(context) for block in self.transformer_layers]

    def logits_step(self, token_ids, text_key_values, text_padding_mask, training=False):
        """Logits for `token_ids` given precomputed `text_key_values`."""
        x = self.embed_tokens(token_ids, training=training)
        for block, kv in zip(self.transformer_layers, text_key_values):
            x = block(x, context_mask=text_padding_mask, cross_key_value=kv, training=training)
        return self.logits_from_hidden(x)

    def validate_inputs(self, token_ids, text_embeddings, text_padding_mask):
        """Clear `ValueError`s for concrete (numpy-convertible) inputs."""
        ids = np.asarray(token_ids)
        emb = np.asarray(text_embeddings)
        mask = np.asarray(text_padding_mask)
        if ids.ndim != 2 or ids.shape[0] == 0:
            raise ValueError(
                f"`token_ids` must be a non-empty int batch [batch, {self.num_tokens}]. "
                f"Received shape {ids.shape}."
            )
        if ids.shape[1] != self.num_tokens:
            raise ValueError(
                f"`token_ids` must have {self.num_tokens} tokens per example (grid "
                f"{self.grid_size[0]}x{self.grid_size[1]}). Received {ids.shape[1]}."
            )
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"`token_ids` must be integers. Received dtype {ids.dtype}.")
        if ids.min() < 0 or ids.max() > self.codebook_size:
            raise ValueError(
                f"`token_ids` must lie in [0, {self.codebook_size}] ({self.codebook_size} "
                f"is [MASK]). Received values in [{ids.min()}, {ids.max()}]."
            )
        if emb.ndim != 3 or emb.shape[-1] != self.text_dim:
            raise ValueError(
                f"`text_embeddings` must be [batch, length, {self.text_dim}]. Received shape {emb.shape}."
            )
        if emb.shape[0] != ids.shape[0]:
            raise ValueError(
                f"`text_embeddings` batch ({emb.shape[0]}) must equal the `token_ids` batch ({ids.shape[0]})."
            )
        if mask.shape != emb.shape[:2]:
            raise ValueError(
                f"`text_padding_mask` must be [batch, length] = {emb.shape[:2]}. Received shape {mask.shape}."
            )
        if not np.all(np.isfinite(emb)):
            raise ValueError("`text_embeddings` contain NaN or inf.")

    def get_config(self):
        config = super().get_config()
        config.update(
            codebook_size=self.codebook_size,
            grid_size=list(self.grid_size),
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            text_dim=self.text_dim,
            dropout=self.dropout,
            tie_embeddings=self.tie_embeddings,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
