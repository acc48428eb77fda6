import keras
import numpy as np
from keras import ops
from keras_hub.models import Backbone

from keras_muse.models.muse.masked_token_transformer import MaskedTokenTransformerMixin
from keras_muse.models.muse.masked_token_transformer import as_grid
from keras_muse.models.muse.muse_presets import MUSE_BACKBONE_PRESETS
from keras_muse.utils.layout_map_mixin import LayoutMapMixin
from keras_muse.utils.preset_utils import PresetMixin


@keras.saving.register_keras_serializable(package="keras_muse")
class MuseBackbone(MaskedTokenTransformerMixin, LayoutMapMixin, PresetMixin, Backbone):
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

    layout_map_builder = "muse_backbone_layout_map"

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
        grid = as_grid(grid_size)
        num_tokens = grid[0] * grid[1]

        # === Layers ===
        self._create_token_layers(
            codebook_size, grid, hidden_dim, num_layers, num_heads, mlp_dim,
            dropout, tie_embeddings, layer_norm_epsilon, dtype,
        )

        # === Functional Model ===
        token_ids = keras.Input((num_tokens,), dtype="int32", name="token_ids")
        text_embeddings = keras.Input((None, text_dim), name="text_embeddings")
        text_padding_mask = keras.Input((None,), dtype="bool", name="text_padding_mask")
        x = self.embed_tokens(token_ids)
        x = self.transform(x, context=self.project_text(text_embeddings), context_mask=text_padding_mask)
        logits = self.logits_from_hidden(x)
        inputs = {
            "token_ids": token_ids,
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
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.text_dim = text_dim
        self.dropout = dropout
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon

    # The sampler may pass `single_position_rows` (see below).
    single_position_guidance = True

    def conditioning_key_values(self, text_embeddings, text_padding_mask, single_position_rows=0):
        """The text's per-layer cross-attention keys/values and their mask,
        computed once per generation (`logits_step` reads them).

        `single_position_rows` (static int R): the last R rows have exactly
        one real text position (the empty prompt of a guided batch's
        unconditional half). Their cross-attention is the same vector for
        every query and step, so it is computed here once, and the mask
        returned covers the other rows only. Exact: softmax over one key is 1.
        """
        mask = ops.cast(text_padding_mask, "bool")
        if not single_position_rows:
            return self.context_key_values(self.project_text(text_embeddings)), mask
        rows = text_embeddings.shape[0] - int(single_position_rows)
        position = ops.argmax(ops.cast(mask[rows:], "int32"), axis=1)[:, None, None]
        single = ops.take_along_axis(text_embeddings[rows:], position, axis=1)
        kv = self.context_key_values(self.project_text(text_embeddings[:rows]), self.project_text(single))
        return kv, mask[:rows]

    def text_key_values(self, text_embeddings):
        """Projected text -> per-layer cross-attention (keys, values)."""
        return self.context_key_values(self.project_text(text_embeddings))

    def text_attention_maps(self, token_ids, text_embeddings, text_padding_mask):
        """Cross-attention over the text, per layer: float32
        `[num_layers, B, heads, num_tokens, L]` (what each image token reads
        from each word piece; guides/attention_maps.py plots them).

        Example:
        ```python
        maps = backbone.text_attention_maps(ids, embeddings, mask)
        per_word = ops.mean(maps, axis=(0, 2))        # [B, num_tokens, L]
        ```
        """
        self.validate_inputs(token_ids, text_embeddings, text_padding_mask)
        return self.cross_attention_maps(
            ops.convert_to_tensor(token_ids, "int32"),
            self.project_text(ops.convert_to_tensor(text_embeddings, self.compute_dtype)),
            ops.convert_to_tensor(text_padding_mask, "bool"),
        )

    def validate_inputs(self, token_ids, text_embeddings, text_padding_mask):
        """Clear `ValueError`s for concrete (numpy-convertible) inputs."""
        ids = self._validate_ids(
            "token_ids", token_ids, self.num_tokens, self.grid_size, self.codebook_size,
            f" ({self.codebook_size} is [MASK])",
        )
        self._validate_text(ids.shape[0], text_embeddings, text_padding_mask)

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
