"""warm_start: a run starts from a saved backbone of the same config."""

import json

import numpy as np
import pytest

from keras_muse.models import MuseTextToImage
from keras_muse.training.warm_start import warm_start

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_text_encoder
from helpers import make_vqgan

pytestmark = pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")


def test_copies_the_saved_base_backbone(tmp_path, preprocessor):
    saved = MuseTextToImage(make_tiny_muse_backbone(seed=1), text_encoder=make_tiny_text_encoder(preprocessor),
                            vqgan=make_vqgan(factor=4))
    saved.save_to_preset(tmp_path / "base")
    fresh = make_tiny_muse_backbone(seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), saved.backbone.get_weights()))
    warm_start(fresh, tmp_path / "base")
    for a, b in zip(fresh.get_weights(), saved.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_different_config_is_named(tmp_path, preprocessor):
    make_tiny_muse_backbone(seed=1).save_to_preset(tmp_path / "backbone")
    with pytest.raises(ValueError, match=r"another config: num_layers=2 \(wanted 3\)"):
        warm_start(make_tiny_muse_backbone(num_layers=3), tmp_path / "backbone")
    with pytest.raises((FileNotFoundError, ValueError, OSError)):
        warm_start(make_tiny_muse_backbone(), tmp_path / "missing")


@pytest.mark.slow
def test_train_muse_continues_from_a_preset(tmp_path):
    from keras_muse.training.train_muse import train_muse

    make_vqgan(factor=4).save_to_preset(tmp_path / "vqgan")
    common = dict(hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=64, steps=2, batch_size=4,
                  num_train_images=8, num_eval_images=4, resolution=16, verbose=0)
    train_muse(tmp_path / "vqgan", save_preset=tmp_path / "first", **common)
    first = MuseTextToImage.from_preset(tmp_path / "first")
    result = train_muse(tmp_path / "vqgan", init_from=tmp_path / "first", learning_rate=0.0,
                        save_preset=tmp_path / "second", report=tmp_path / "r.json", **common)
    second = MuseTextToImage.from_preset(tmp_path / "second")
    assert json.loads((tmp_path / "r.json").read_text())["init_from"] == str(tmp_path / "first")
    assert result["steps"] == 2
    # Learning rate 0 (weight decay scales with it): the weights come through unchanged.
    for a, b in zip(first.backbone.get_weights(), second.backbone.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(first.text_encoder.get_weights(), second.text_encoder.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_train_muse_can_continue_with_the_text_encoder_frozen(tmp_path):
    from keras_muse.training.train_muse import train_muse

    make_vqgan(factor=4).save_to_preset(tmp_path / "vqgan")
    common = dict(hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=64, steps=3, batch_size=4,
                  num_train_images=8, num_eval_images=4, resolution=16, learning_rate=1e-2, warmup_steps=1,
                  verbose=0)
    train_muse(tmp_path / "vqgan", save_preset=tmp_path / "first", **common)
    first = MuseTextToImage.from_preset(tmp_path / "first")
    result = train_muse(tmp_path / "vqgan", init_from=tmp_path / "first", freeze_text_encoder=True,
                        save_preset=tmp_path / "second", **common)
    second = MuseTextToImage.from_preset(tmp_path / "second")
    assert result["freeze_text_encoder"] is True
    # A super-res stage trained on the first run's text embeddings still gets the same ones...
    for a, b in zip(first.text_encoder.get_weights(), second.text_encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    # ...while the transformer did train.
    assert not all(np.allclose(a, b) for a, b in zip(first.backbone.get_weights(), second.backbone.get_weights()))


def test_train_muse_names_a_bad_dtype_policy(tmp_path):
    from keras_muse.training.train_muse import train_muse

    with pytest.raises(ValueError, match="dtype_policy='bf17'"):
        train_muse(tmp_path / "never-read", dtype_policy="bf17")


@pytest.mark.slow
def test_train_muse_in_mixed_bfloat16_saves_a_preset_that_samples(tmp_path):
    from keras_muse.training.train_muse import train_muse

    make_vqgan(factor=4).save_to_preset(tmp_path / "vqgan")
    result = train_muse(tmp_path / "vqgan", hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=64, steps=3,
                        batch_size=4, num_train_images=8, num_eval_images=4, resolution=16,
                        learning_rate=1e-2, warmup_steps=1, dtype_policy="mixed_bfloat16",
                        save_preset=tmp_path / "bf16", verbose=0)
    assert result["dtype_policy"] == "mixed_bfloat16"
    assert np.isfinite(result["final_train_logs"]["loss"])
    saved = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert saved["config"]["dtype"]["config"]["name"] == "mixed_bfloat16"
    # keras-hub convention: a preset loads in the caller's dtype policy; the
    # float32 weights the optimizer updated load under any policy.
    task = MuseTextToImage.from_preset(tmp_path / "bf16")
    assert all(w.dtype == "float32" for w in task.backbone.weights)
    images = task.generate(["a red circle"], num_steps=2, seed=0)
    assert np.asarray(images).shape[0] == 1
    assert np.isfinite(np.asarray(images, "float32")).all()
