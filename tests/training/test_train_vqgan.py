import numpy as np
import pytest

from keras_muse.models import VQGAN
from keras_muse.training.train_vqgan import train_vqgan


def test_continuing_from_a_frozen_preset_trains_it(tmp_path):
    # A tokenizer saved inside a task preset is stored frozen; continuing
    # its training used to leave every weight as it was.
    vqgan = VQGAN.from_preset("vqgan_tiny_f4", load_weights=False)
    vqgan.trainable = False
    vqgan.save_to_preset(str(tmp_path / "frozen"))
    before = [np.array(w) for w in vqgan.decoder.weights]
    before_codebook = np.array(vqgan.quantizer.weights[0])

    train_vqgan(
        preset=str(tmp_path / "frozen"), steps=2, batch_size=2, warmup_steps=1, resolution=32,
        num_train_images=4, num_eval_images=2, adversarial_weight=0.0, out=None,
        save_preset=str(tmp_path / "trained"), verbose=0,
    )
    trained = VQGAN.from_preset(str(tmp_path / "trained"))
    after = [np.array(w) for w in trained.decoder.weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    assert not np.allclose(before_codebook, np.array(trained.quantizer.weights[0]))


def test_a_shipped_trained_preset_is_fine_tuned_from_its_weights():
    # `train vqgan --preset vqgan_shapes_64` (e.g. to fine-tune at 128x128)
    # used to build the architecture with fresh weights: 2 steps took the
    # held-out PSNR from ~30 dB to 9 dB.
    from keras_muse.training.train_vqgan import load_tokenizer

    assert VQGAN.preset_has_weights("vqgan_shapes_64")
    assert not VQGAN.preset_has_weights("vqgan_shapes_f4")
    shipped = VQGAN.from_preset("vqgan_shapes_64")
    loaded = load_tokenizer("vqgan_shapes_64")
    for a, b in zip(shipped.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    fresh = load_tokenizer("vqgan_shapes_f4", codebook_size=64)
    assert fresh.codebook_size == 64
    with pytest.raises(ValueError, match="codebook_size"):
        load_tokenizer("vqgan_shapes_64", codebook_size=64)


def test_preset_has_weights_reads_the_directory(tmp_path):
    vqgan = VQGAN.from_preset("vqgan_tiny_f4", load_weights=False)
    assert not VQGAN.preset_has_weights(str(tmp_path / "missing"))
    vqgan.save_to_preset(str(tmp_path / "p"))
    assert VQGAN.preset_has_weights(str(tmp_path / "p"))
