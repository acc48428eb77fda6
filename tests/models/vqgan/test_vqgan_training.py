import keras
import numpy as np
import pytest
from helpers import make_vqgan

from keras_muse.models.vqgan import vqgan_losses


def _shape_images(n=8, size=32, seed=0):
    """Flat-colour rectangles on white: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    x = np.full((n, size, size, 3), 255, "uint8")
    for i in range(n):
        y0, x0 = rng.integers(0, size // 2, 2)
        x[i, y0 : y0 + size // 2, x0 : x0 + size // 2] = rng.integers(0, 255, 3)
    return x


def test_reconstruction_loss_decreases_without_gan():
    vqgan = make_vqgan(discriminator_channels=None)
    vqgan.compile(
        optimizer=keras.optimizers.Adam(3e-3), perceptual_weight=0.0, adversarial_weight=0.0
    )
    data = _shape_images()
    history = vqgan.fit(data, batch_size=4, epochs=8, verbose=0).history
    assert history["reconstruction_loss"][-1] < 0.7 * history["reconstruction_loss"][0]
    assert history["psnr"][-1] > history["psnr"][0]
    assert "discriminator_loss" not in history
    assert 0 < history["codebook_usage"][-1] <= 1


def test_gan_training_updates_both_players_with_their_own_optimizers():
    vqgan = make_vqgan()
    g_opt = keras.optimizers.Adam(1e-3)
    d_opt = keras.optimizers.Adam(5e-4)
    vqgan.compile(
        optimizer=g_opt, discriminator_optimizer=d_opt, perceptual_weight=0.0,
        adversarial_weight=0.1, r1_weight=10.0, lecam_weight=0.01,
    )
    d_before = [np.array(w) for w in vqgan.discriminator.get_weights()]
    g_before = [np.array(w) for w in vqgan.decoder.get_weights()]
    history = vqgan.fit(_shape_images(), batch_size=4, epochs=2, verbose=0).history
    for k in ("discriminator_loss", "generator_adversarial_loss", "r1_penalty"):
        assert np.all(np.isfinite(history[k]))
    assert history["r1_penalty"][-1] > 0
    assert any(not np.allclose(a, b) for a, b in zip(d_before, vqgan.discriminator.get_weights()))
    assert any(not np.allclose(a, b) for a, b in zip(g_before, vqgan.decoder.get_weights()))
    # Each player's variables live in its own optimizer.
    assert int(d_opt.iterations) == 4 and int(g_opt.iterations) == 4
    d_paths = {v.path for v in vqgan.discriminator.trainable_variables}
    d_slots = {v.path for v in d_opt.variables}
    assert any(p.replace("/", "_") in s for p in d_paths for s in d_slots) or len(d_opt.variables) > 2
    assert float(np.abs(np.asarray(vqgan.lecam_state.ema)).sum()) > 0


def test_discriminator_start_delays_gan():
    vqgan = make_vqgan()
    vqgan.compile(
        optimizer=keras.optimizers.Adam(1e-3), perceptual_weight=0.0,
        adversarial_weight=0.1, discriminator_start=2,
    )
    d_before = [np.array(w) for w in vqgan.discriminator.get_weights()]
    # 8 images, batch 4: steps 0-1 without the GAN (epoch 1), 2-3 with it.
    history = vqgan.fit(_shape_images(), batch_size=4, epochs=1, verbose=0).history
    assert history["adversarial_weight"][-1] == 0.0
    for a, b in zip(d_before, vqgan.discriminator.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = vqgan.fit(_shape_images(), batch_size=4, epochs=1, verbose=0).history
    assert history["adversarial_weight"][-1] > 0.0
    assert history["discriminator_loss"][-1] > 0.0
    assert any(not np.allclose(a, b) for a, b in zip(d_before, vqgan.discriminator.get_weights()))


def test_adaptive_weight_and_hinge_loss_run():
    vqgan = make_vqgan()
    vqgan.compile(
        optimizer="adam", perceptual_weight=0.0, adversarial_weight=0.1,
        adversarial_loss="hinge", adaptive_adversarial_weight=True,
    )
    history = vqgan.fit(_shape_images(4), batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][-1])
    assert history["adversarial_weight"][-1] > 0
    assert history["adversarial_weight"][-1] != pytest.approx(0.1)


def test_pluggable_perceptual_network():
    inputs = keras.Input((None, None, 3))
    f1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    f2 = keras.layers.Conv2D(4, 3, strides=2, padding="same")(f1)
    network = keras.Model(inputs, [f1, f2])
    vqgan = make_vqgan(discriminator_channels=None)
    vqgan.compile(
        optimizer="adam", perceptual_weight=1.0, perceptual_network=network,
        adversarial_weight=0.0,
    )
    history = vqgan.fit(_shape_images(4), batch_size=4, epochs=1, verbose=0).history
    assert history["perceptual_loss"][-1] > 0
    # The perceptual network is not part of the tokenizer's weights.
    assert len(vqgan.weights) == len(make_vqgan(discriminator_channels=None).weights)


def test_perceptual_network_offline_error_is_clear():
    with pytest.raises(ValueError, match="perceptual_weight=0"):
        vqgan_losses.resolve_perceptual_network("vgg16:/nonexistent/vgg16.h5")
    with pytest.raises(ValueError, match="perceptual_network"):
        vqgan_losses.resolve_perceptual_network(42)


def test_bad_compile_arguments():
    vqgan = make_vqgan()
    with pytest.raises(ValueError, match="reconstruction_loss"):
        vqgan.compile(reconstruction_loss="l3", perceptual_weight=0)
    with pytest.raises(ValueError, match="adversarial_loss"):
        vqgan.compile(adversarial_loss="wasserstein", perceptual_weight=0)
    with pytest.raises(ValueError, match="r1_weight"):
        vqgan.compile(r1_weight=-1, perceptual_weight=0)
    no_disc = make_vqgan(discriminator_channels=None)
    with pytest.raises(ValueError, match="adversarial_weight"):
        no_disc.compile(adversarial_weight=0.1, perceptual_weight=0)


def test_evaluate_reports_reconstruction_metrics():
    vqgan = make_vqgan()
    vqgan.compile(optimizer="adam", perceptual_weight=0.0)
    logs = vqgan.evaluate(_shape_images(4), batch_size=2, verbose=0, return_dict=True)
    assert np.isfinite(logs["psnr"]) and logs["reconstruction_loss"] > 0


def test_decoder_finetuning_keeps_ids():
    vqgan = make_vqgan()
    images = vqgan.preprocess_images(_shape_images(4))
    ids = vqgan.encode(images)
    tuned = vqgan.with_finetuned_decoder(decoder_base_channels=12, decoder_num_res_blocks=2)
    assert tuned.decoder.base_channels == 12 and tuned.decoder.num_res_blocks == 2
    np.testing.assert_array_equal(tuned.encode(images), ids)
    encoder_before = [np.array(w) for w in tuned.encoder.get_weights()]
    codebook_before = np.array(tuned.quantizer.codebook)
    decoder_before = [np.array(w) for w in tuned.decoder.get_weights()]
    tuned.compile(optimizer=keras.optimizers.Adam(1e-2), perceptual_weight=0.0)
    tuned.fit(_shape_images(4), batch_size=2, epochs=2, verbose=0)
    np.testing.assert_array_equal(tuned.encode(images), ids)
    for a, b in zip(encoder_before, tuned.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(codebook_before, np.asarray(tuned.quantizer.codebook))
    assert any(not np.allclose(a, b) for a, b in zip(decoder_before, tuned.decoder.get_weights()))
    assert tuned.get_config()["trainable_encoder"] is False
