"""Named base-transformer configurations (paper App. A.1; MaskGIT where silent).

Muse-3B: 48 layers, width 2048, MLP 8192 (paper); 16 heads and dropout 0.1
are MaskGIT's. Text: T5-XXL, 4096-d. Presets without weights: build them with
`from_preset(name, load_weights=False)`.
"""

MUSE_BACKBONE_PRESETS = {
    "muse_3b": {
        "description": "Muse-3B base transformer: 16x16 tokens, codebook 8192, T5-XXL text (paper).",
        "config": dict(
            codebook_size=8192, grid_size=16, hidden_dim=2048, num_layers=48, num_heads=16,
            mlp_dim=8192, text_dim=4096, dropout=0.1,
        ),
    },
    "muse_small_d512_l8": {
        "description": "Benchmark size: width 512, depth 8, 8 heads, 256 tokens, codebook 8192.",
        "config": dict(
            codebook_size=8192, grid_size=16, hidden_dim=512, num_layers=8, num_heads=8,
            mlp_dim=2048, text_dim=512, dropout=0.1,
        ),
    },
    "muse_tiny": {
        "description": "Tiny base transformer for tests.",
        "config": dict(
            codebook_size=64, grid_size=4, hidden_dim=32, num_layers=2, num_heads=4,
            mlp_dim=64, text_dim=16, dropout=0.0,
        ),
    },
}
