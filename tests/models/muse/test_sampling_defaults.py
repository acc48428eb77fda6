"""`sampling_defaults`: a task (and its preset) carries the sampler settings
`generate` uses when they are not passed."""

from unittest import mock

import keras
import numpy as np
import pytest

from keras_muse.models import MuseSuperResBackbone
from keras_muse.models import MuseSuperResolution
from keras_muse.models import MuseTextToImage
from keras_muse.models.muse.muse_generation import check_sampling_defaults

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_text_encoder
from helpers import make_vqgan

pytestmark = pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")

PROMPTS = ["a red circle on the left", "two blue squares"]


def _task(preprocessor, **kwargs):
    backbone = make_tiny_muse_backbone()
    backbone.token_embedding.embeddings.assign(backbone.token_embedding.embeddings * 10.0)
    return MuseTextToImage(backbone, text_encoder=make_tiny_text_encoder(preprocessor),
                           vqgan=make_vqgan(factor=4), **kwargs)


def test_defaults_replace_unset_arguments_only(preprocessor):
    settings = {"num_steps": 3, "guidance_scale": 0.0, "temperature": 0.5, "choice_temperature": 1.0}
    task = _task(preprocessor, sampling_defaults=settings)
    out = task.generate(PROMPTS, seed=0, return_history=True)
    assert out["history"].shape[1] == 3
    explicit = _task(preprocessor).generate(PROMPTS, seed=0, return_tokens=True, **settings)
    np.testing.assert_array_equal(out["token_ids"], explicit["token_ids"])
    # Guidance 0 from the defaults: one unguided program, no doubled batch.
    assert all(not dict(key)["use_guidance"] for key in task._generate_functions)
    # A passed argument wins over the default.
    longer = task.generate(PROMPTS, seed=0, num_steps=5, return_history=True)
    assert longer["history"].shape[1] == 5
    assert task.sampling_setting("num_steps") == 3 and task.sampling_setting("guidance_schedule") == "linear"
    assert _task(preprocessor).sampling_setting("num_steps") == 24


def test_saved_with_the_preset(preprocessor, tmp_path):
    task = _task(preprocessor, sampling_defaults={"guidance_scale": 5.0, "num_steps": 2})
    task.save_to_preset(tmp_path / "p")
    loaded = MuseTextToImage.from_preset(tmp_path / "p")
    assert loaded.sampling_defaults == {"guidance_scale": 5.0, "num_steps": 2}
    np.testing.assert_array_equal(loaded.generate(PROMPTS, seed=1), task.generate(PROMPTS, seed=1))
    assert MuseTextToImage.from_config(task.get_config()).sampling_defaults == task.sampling_defaults


@pytest.mark.parametrize("bad, match", [
    ({"steps": 3}, "unknown keys: \\['steps'\\]"),
    ({"num_steps": 0}, "num_steps"),
    ({"temperature": 0.0}, "temperature.*> 0"),
    ({"guidance_scale": -1.0}, "guidance_scale.*>= 0"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"guidance_schedule": "cubic"}, "guidance_schedule"),
    ([("num_steps", 3)], "must be a dict"),
])
def test_bad_defaults_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        check_sampling_defaults(bad)


def test_pipeline_uses_each_stage_defaults(preprocessor):
    encoder = make_tiny_text_encoder(preprocessor)
    keras.utils.set_random_seed(1)
    sr = MuseSuperResolution(MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False),
                             text_encoder=encoder, vqgan=make_vqgan(factor=4), low_res_vqgan=make_vqgan(factor=4),
                             sampling_defaults={"num_steps": 2, "guidance_scale": 0.0, "temperature": 0.25})
    assert MuseSuperResolution(sr.backbone, text_encoder=encoder).sampling_setting("num_steps") == 8
    pipeline = MuseTextToImage(make_tiny_muse_backbone(), text_encoder=encoder, vqgan=make_vqgan(factor=4),
                               super_resolution=sr, sampling_defaults={"num_steps": 3, "guidance_scale": 4.0})
    with mock.patch.object(MuseTextToImage, "_run", autospec=True, side_effect=MuseTextToImage._run) as run:
        images = pipeline.generate(PROMPTS, seed=0)
    assert images.shape == (2, 32, 32, 3)
    (base_self, *_), base = run.call_args_list[0]
    (sr_self, *_), second = run.call_args_list[1]
    assert base_self is pipeline and base["num_steps"] == 3 and base["guidance_scale"] == 4.0
    assert sr_self is sr and second["num_steps"] == 2 and second["guidance_scale"] == 0.0
    # Each stage's unset sampler arguments come from its own defaults.
    assert base["temperature"] == 1.0 and second["temperature"] == 0.25
    with mock.patch.object(MuseTextToImage, "_run", autospec=True, side_effect=MuseTextToImage._run) as run:
        pipeline.generate(PROMPTS, seed=0, super_resolution_steps=1, super_resolution_guidance_scale=2.0)
    assert run.call_args_list[1][1]["num_steps"] == 1 and run.call_args_list[1][1]["guidance_scale"] == 2.0
