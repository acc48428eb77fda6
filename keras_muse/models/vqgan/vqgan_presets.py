"""Named VQGAN configurations.

The paper's tokenizers (App. A.2: 128 base channels, 2 residual blocks per
level, codebook 8192; MaskGIT's channel multipliers and latent dim) ship as
architectures without weights; the tiny ones serve tests and the shapes domain.
"""

VQGAN_PRESETS = {
    "vqgan_f16_8192": {
        "description": "Muse base tokenizer: 256x256 -> 16x16 ids, codebook 8192 (paper).",
        "config": dict(
            base_channels=128, channel_multipliers=(1, 1, 2, 2, 4), num_res_blocks=2,
            latent_dim=256, codebook_size=8192, code_dim=32, discriminator_channels=64,
        ),
    },
    "vqgan_f8_8192": {
        "description": "Muse super-res tokenizer: 512x512 -> 64x64 ids, codebook 8192 (paper).",
        "config": dict(
            base_channels=128, channel_multipliers=(1, 1, 2, 4), num_res_blocks=2,
            latent_dim=256, codebook_size=8192, code_dim=32, discriminator_channels=64,
        ),
    },
    "vqgan_f16_8192_finetuned_decoder": {
        "description": "The f16 tokenizer with the fine-tuned decoder of §2.5 (4 blocks, 256 channels).",
        "config": dict(
            base_channels=128, channel_multipliers=(1, 1, 2, 2, 4), num_res_blocks=2,
            latent_dim=256, codebook_size=8192, code_dim=32, decoder_base_channels=256,
            decoder_num_res_blocks=4, discriminator_channels=64, trainable_encoder=False,
        ),
    },
    "vqgan_shapes_f4": {
        "description": "Captioned-shapes tokenizer: 64x64 -> 16x16 ids, codebook 512.",
        # 512 codes: the shapes held-out images use ~600 distinct object
        # codes with 1024 and a uniform-use regularizer; fewer, sharper codes
        # make the transformer's targets less noisy.
        "config": dict(
            base_channels=128, channel_multipliers=(1,), num_res_blocks=1,
            latent_dim=64, codebook_size=512, code_dim=16, patch_size=4,
            discriminator_channels=32, discriminator_layers=2,
        ),
    },
    "vqgan_shapes_64": {
        "description": (
            "Trained captioned-shapes tokenizer (vqgan_shapes_f4 architecture): "
            "64x64 -> 16x16 ids, codebook 512, float16 weights; the recipe is in "
            "its metadata.json."
        ),
        # Ships inside the package (keras_muse/presets/vqgan_shapes_64), so a
        # transformer can be trained on its tokens with no tokenizer run first.
        "package_dir": "vqgan_shapes_64",
    },
    "vqgan_shapes_128": {
        "description": (
            "Trained captioned-shapes super-res tokenizer: vqgan_shapes_64 fine-tuned "
            "at 128x128 -> 32x32 ids, codebook 512 (the same codes' meaning), float16 "
            "weights; the recipe is in its metadata.json."
        ),
        "package_dir": "vqgan_shapes_128",
    },
    "vqgan_shapes_f4_128": {
        "description": "Captioned-shapes super-res tokenizer: 128x128 -> 32x32 ids, codebook 512.",
        # f4 like the base tokenizer (4x4-pixel tokens), so the high-res grid
        # has 2x the base grid per side. An f8 tokenizer at 128x128 (16x16
        # ids) measured 27.2 dB held-out PSNR: below bicubic upsampling of
        # the base tokenizer's 64x64 output (28.1 dB), so super-res through
        # it could not win. 64 channels keep the convs (at 32x32) as cheap
        # as the 64x64 tokenizer's.
        "config": dict(
            base_channels=64, channel_multipliers=(1,), num_res_blocks=1,
            latent_dim=64, codebook_size=512, code_dim=16, patch_size=4,
            discriminator_channels=32, discriminator_layers=2,
        ),
    },
    "vqgan_tiny_f4": {
        "description": "Tiny f4 tokenizer for tests.",
        "config": dict(
            base_channels=8, channel_multipliers=(1, 2, 2), num_res_blocks=1,
            latent_dim=16, codebook_size=64, code_dim=8, discriminator_channels=8,
            discriminator_layers=2,
        ),
    },
}
