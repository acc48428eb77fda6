import numpy as np

from keras_muse.datasets import shapes
from keras_muse.models import VQGAN
from keras_muse.training.ship_preset import read_recipe
from keras_muse.training.train_vqgan import evaluate_tokenizer


def test_shipped_shapes_tokenizer_reconstructs_heldout_scenes():
    vqgan = VQGAN.from_preset("vqgan_shapes_64")
    assert vqgan.codebook_size == 512 and vqgan.factor == 4
    # Held-out colour/shape pairs, a seed the recipe never evaluated on.
    images, _, _ = shapes.make_arrays(32, resolution=64, split="heldout", seed=123)
    metrics, ids, recon = evaluate_tokenizer(vqgan, images, batch_size=32)
    assert ids.shape == (32, 16, 16) and recon.shape == images.shape
    # The trained tokenizer measured ~33 dB on 512 held-out scenes; an
    # untrained or frozen-by-mistake one stays near 29 dB.
    assert metrics["psnr"] > 31.5, metrics
    recipe = read_recipe(vqgan_preset_dir())
    assert recipe["name"] == "vqgan_shapes_64" and recipe["commands"]


def vqgan_preset_dir():
    import os

    from keras_muse.utils.preset_utils import PACKAGE_PRESET_DIR

    return os.path.join(PACKAGE_PRESET_DIR, "vqgan_shapes_64")


def test_shipped_128_tokenizer_beats_bicubic_of_the_64_tokenizer():
    import os

    from keras_muse.utils.image_utils import psnr
    from keras_muse.utils.image_utils import resize_images
    from keras_muse.utils.preset_utils import PACKAGE_PRESET_DIR

    high = VQGAN.from_preset("vqgan_shapes_128")
    low = VQGAN.from_preset("vqgan_shapes_64")
    hi_images, _, _ = shapes.make_arrays(16, resolution=128, split="heldout", seed=123)
    lo_images, _, _ = shapes.make_arrays(16, resolution=64, split="heldout", seed=123)
    metrics, ids, _ = evaluate_tokenizer(high, hi_images, batch_size=16)
    assert ids.shape == (16, 32, 32)
    # What super-resolution has to beat: bicubic upsampling of what the base
    # stage's tokenizer hands over (~30.3 dB on 64 held-out scenes).
    bicubic = resize_images(low.reconstruct(lo_images, 16), (128, 128))
    assert metrics["psnr"] > float(np.mean(psnr(bicubic, hi_images))) + 1.5, metrics
    recipe = read_recipe(os.path.join(PACKAGE_PRESET_DIR, "vqgan_shapes_128"))
    assert recipe["name"] == "vqgan_shapes_128" and recipe["commands"]
