"""Shared helpers for the tests (importable as `helpers`: pytest.ini puts tests/ on the path)."""

import keras
import numpy as np

from keras_muse.models import VQGAN

TINY = dict(
    base_channels=8, num_res_blocks=1, latent_dim=16, codebook_size=64,
    code_dim=8, discriminator_channels=8, discriminator_layers=2,
)


def make_vqgan(factor=4, **overrides):
    levels = {4: (1, 2, 2), 8: (1, 1, 2, 2), 16: (1, 1, 1, 2, 2)}[factor]
    config = {**TINY, "channel_multipliers": levels, **overrides}
    keras.utils.set_random_seed(0)
    return VQGAN(**config)
