"""Named transformer configurations (paper App. A.1, A.3; MaskGIT where silent).

Muse-3B: 48 layers, width 2048, MLP 8192 (paper); 16 heads and dropout 0.1
are MaskGIT's. Super-res: 16 low-res self-attention layers, a 32-layer
high-res transformer, width 1024, MLP 4096, 16x16 -> 64x64 tokens (paper).
Text: T5-XXL, 4096-d. The paper does not give the sizes of its CC3M models
(Muse-632M, the 268M super-res), so they are not guessed here. Presets
without weights: build them with `from_preset(name, load_weights=False)`.
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

MUSE_SUPER_RES_PRESETS = {
    "muse_super_res_512": {
        "description": (
            "Muse super-res transformer (paper App. A.3): 16x16 f16 tokens -> 64x64 f8 "
            "tokens (256^2 -> 512^2), 16 low-res + 32 high-res layers, width 1024, T5-XXL text, "
            "multi-axis attention over the 64x64 grid (window 8: the paper does not give it)."
        ),
        "config": dict(
            codebook_size=8192, grid_size=64, low_res_codebook_size=8192, low_res_grid_size=16,
            hidden_dim=1024, num_layers=32, low_res_num_layers=16, num_heads=16, mlp_dim=4096,
            text_dim=4096, dropout=0.1, attention_window=8,
        ),
    },
    "muse_super_res_tiny": {
        "description": "Tiny super-res transformer for tests: 4x4 -> 8x8 tokens.",
        "config": dict(
            codebook_size=64, grid_size=8, low_res_codebook_size=64, low_res_grid_size=4,
            hidden_dim=32, num_layers=2, low_res_num_layers=1, num_heads=4, mlp_dim=64,
            text_dim=16, dropout=0.0,
        ),
    },
}

# Trained `MuseTextToImage` presets shipped inside the package
# (keras_muse/presets/<package_dir>; rebuilt by examples/build_shipped_presets.py).
MUSE_TEXT_TO_IMAGE_PRESETS = {
    "muse_shapes_64": {
        "description": (
            "Captioned shapes at 64x64 (DESIGN.md section 6): f4 VQGAN (512 codes, 16x16 ids), "
            "a tiny T5-architecture text encoder trained jointly, a width-128 4-layer base "
            "transformer. Trained on a 2-core CPU; recipe in its metadata.json."
        ),
        "package_dir": "muse_shapes_64",
    },
    "muse_shapes_128": {
        "description": (
            "muse_shapes_64 plus a super-resolution stage to 128x128: a width-128 4-layer "
            "super-res transformer (16x16 -> 32x32 tokens, window-8 multi-axis attention) "
            "decoded by vqgan_shapes_128; near-greedy, unguided super-res sampling by default. "
            "Holds only the super-res weights (3.4 MiB) and reads the base and the 128 "
            "tokenizer from their shipped presets. Recipe in its metadata.json."
        ),
        "package_dir": "muse_shapes_128",
    },
}
