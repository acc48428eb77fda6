"""The super-res recipe end to end on tiny models: trains, reports, saves a
two-stage preset that generates at the high resolution."""

import json

import numpy as np
import pytest

from keras_muse.models import MuseTextToImage
from keras_muse.training.train_super_res import train_super_res

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_text_encoder
from helpers import make_vqgan


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")
def test_train_super_res_recipe(tmp_path, preprocessor):
    base = MuseTextToImage(make_tiny_muse_backbone(), text_encoder=make_tiny_text_encoder(preprocessor),
                           vqgan=make_vqgan(factor=4))
    base.save_to_preset(tmp_path / "base")
    make_vqgan(factor=4).save_to_preset(tmp_path / "vqgan_high")
    result = train_super_res(
        tmp_path / "base", tmp_path / "vqgan_high", resolution=32, hidden_dim=32, num_layers=1,
        low_res_num_layers=1, mlp_dim=64, steps=2, batch_size=4, num_train_images=8,
        num_eval_images=4, save_preset=tmp_path / "two_stage", report=tmp_path / "r.json",
        out=tmp_path / "sr.png", sampling_defaults={"num_steps": 3, "temperature": 0.05},
        object_token_weight=4.0, verbose=0,
    )
    assert result["object_token_weight"] == 4.0
    assert result["sampling_defaults"] == {"num_steps": 3, "temperature": 0.05}
    up = result["heldout_upsampling"]
    for key in ("super_res_psnr", "bicubic_real_low_res_psnr", "bicubic_low_res_tokens_psnr",
                "high_res_tokenizer_psnr"):
        assert np.isfinite(up[key]) and up[key] > 0
    assert json.loads((tmp_path / "r.json").read_text())["resolution"] == [16, 32]
    assert (tmp_path / "sr.png").exists()
    task = MuseTextToImage.from_preset(tmp_path / "two_stage")
    assert task.super_resolution.sampling_defaults == {"num_steps": 3, "temperature": 0.05}
    assert task.generate(["a red circle"], num_steps=2, seed=0).shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="multiple of the base resolution"):
        train_super_res(tmp_path / "base", tmp_path / "vqgan_high", resolution=24, verbose=0)


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan")])
def test_bad_object_token_weight_fails_before_loading_anything(tmp_path, weight):
    with pytest.raises(ValueError, match="object_token_weight.*positive"):
        train_super_res(tmp_path / "missing_base", tmp_path / "missing_vqgan", object_token_weight=weight)


def _super_res_task(preprocessor, seed, **backbone_overrides):
    import keras

    from keras_muse.models import MuseSuperResBackbone
    from keras_muse.models import MuseSuperResolution

    keras.utils.set_random_seed(seed)
    config = MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False).get_config()
    config.update(backbone_overrides)
    return MuseSuperResolution(
        MuseSuperResBackbone.from_config(config), text_encoder=make_tiny_text_encoder(preprocessor),
        vqgan=make_vqgan(factor=4), low_res_vqgan=make_vqgan(factor=4),
    )


@pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")
def test_warm_start_copies_a_saved_backbone_and_checks_its_config(tmp_path, preprocessor):
    from keras_muse.training.train_super_res import _super_res_preset
    from keras_muse.training.warm_start import warm_start

    saved = _super_res_task(preprocessor, seed=1)
    saved.save_to_preset(tmp_path / "sr")
    # A two-stage preset holds the super-res task in `super_resolution/`.
    two_stage = tmp_path / "two_stage"
    (two_stage / "super_resolution").mkdir(parents=True)
    for f in (tmp_path / "sr").iterdir():
        f.rename(two_stage / "super_resolution" / f.name)

    fresh = _super_res_task(preprocessor, seed=2).backbone
    before = [np.array(w) for w in fresh.get_weights()]
    warm_start(fresh, _super_res_preset(two_stage))
    after = fresh.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    for a, b in zip(after, saved.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)

    other = _super_res_task(preprocessor, seed=2, hidden_dim=24).backbone
    with pytest.raises(ValueError, match=r"init_from.*hidden_dim=32 \(wanted 24\)"):
        warm_start(other, _super_res_preset(two_stage / "super_resolution"))
