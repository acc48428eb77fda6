import numpy as np

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
