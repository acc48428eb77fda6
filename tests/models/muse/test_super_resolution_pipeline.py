"""The two-stage pipeline: base (16x16 images, 4x4 tokens) -> super-res
(32x32 images, 8x8 tokens) -> the high-res decoder (§2.4, §3.3)."""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from keras_muse.datasets import shapes
from keras_muse.models import MuseSuperResBackbone
from keras_muse.models import MuseSuperResolution
from keras_muse.models import MuseTextToImage

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_text_encoder
from helpers import make_vqgan

pytestmark = pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")

PROMPTS = ["a red circle on the left", "two blue squares"]


def _sharpen(backbone):
    # Larger embeddings give peaked logits, so samples depend on the inputs.
    backbone.token_embedding.embeddings.assign(backbone.token_embedding.embeddings * 10.0)
    return backbone


@pytest.fixture(scope="module")
def pipeline(preprocessor):
    encoder = make_tiny_text_encoder(preprocessor)
    keras.utils.set_random_seed(1)
    sr_backbone = _sharpen(MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False))
    sr = MuseSuperResolution(sr_backbone, text_encoder=encoder, vqgan=make_vqgan(factor=4),
                             low_res_vqgan=make_vqgan(factor=4))
    return MuseTextToImage(_sharpen(make_tiny_muse_backbone()), text_encoder=encoder,
                           vqgan=make_vqgan(factor=4), super_resolution=sr)


def test_generate_runs_base_then_super_res(pipeline):
    assert pipeline.resolution == (32, 32)
    out = pipeline.generate(PROMPTS, num_steps=4, seed=0, return_tokens=True)
    assert out["images"].shape == (2, 32, 32, 3)
    assert out["token_ids"].shape == (2, 8, 8)
    assert out["low_res_token_ids"].shape == (2, 4, 4)
    assert out["low_res_images"].shape == (2, 16, 16, 3)
    # The second stage is the super-res model on the base model's tokens.
    direct = pipeline.super_resolution.upsample(out["low_res_token_ids"], PROMPTS, seed=0, return_tokens=True)
    np.testing.assert_array_equal(direct["token_ids"], out["token_ids"])
    base_only = pipeline.generate(PROMPTS, num_steps=4, seed=0, super_resolution_steps=0, return_tokens=True)
    np.testing.assert_array_equal(base_only["token_ids"], out["low_res_token_ids"])
    assert pipeline.generate(PROMPTS, num_steps=4, seed=0).shape == (2, 32, 32, 3)


def test_high_res_inpainting_in_two_stages(pipeline):
    images, _, _ = shapes.make_arrays(2, resolution=32, seed=3)
    mask = np.zeros((32, 32), bool)
    mask[:, 16:] = True
    out = pipeline.inpaint(images, mask, PROMPTS, num_steps=4, seed=0, return_tokens=True)
    high = np.asarray(pipeline.super_resolution.vqgan.encode(pipeline.super_resolution.vqgan.preprocess_images(images)))
    np.testing.assert_array_equal(out["token_ids"][:, :, :4], high[:, :, :4])
    low_images = out["low_res_images"]
    assert low_images.shape == (2, 16, 16, 3)
    # Base-resolution images still go through the base model alone.
    small, _, _ = shapes.make_arrays(2, resolution=16, seed=3)
    assert pipeline.inpaint(small, mask[::2, ::2], PROMPTS, num_steps=4, seed=0).shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="masks"):
        pipeline.inpaint(images, mask[:16], PROMPTS, seed=0)


def test_high_res_outpaint_and_edit(pipeline):
    images, _, _ = shapes.make_arrays(2, resolution=32, seed=4)
    out = pipeline.outpaint(images, PROMPTS, direction="right", extent=0.25, num_steps=4, seed=0,
                            return_tokens=True)
    assert out["images"].shape == (2, 32, 32, 3)
    edited = pipeline.edit(images, PROMPTS, iterations=3, seed=0)
    assert edited.shape == (2, 32, 32, 3)


def test_base_training_leaves_the_super_res_stage_alone(pipeline, preprocessor):
    sr = pipeline.super_resolution
    sr_ids = {id(v) for v in sr.variables}
    assert not sr_ids & {id(v) for v in pipeline.trainable_variables}
    before = [np.array(w) for w in sr.get_weights()]
    ids = np.random.default_rng(0).integers(0, 64, (8, 4, 4)).astype("int32")
    captions = shapes.make_arrays(8, seed=1)[1]
    pipeline.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.5))
    pipeline.fit((ids, captions), batch_size=4, verbose=0)
    for a, b in zip(before, sr.get_weights()):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_preset_round_trip_with_super_res(pipeline, tmp_path):
    pipeline.save_to_preset(tmp_path / "two_stage")
    loaded = MuseTextToImage.from_preset(tmp_path / "two_stage")
    assert isinstance(loaded.super_resolution, MuseSuperResolution)
    a = pipeline.generate(PROMPTS, num_steps=4, seed=5, return_tokens=True)
    b = loaded.generate(PROMPTS, num_steps=4, seed=5, return_tokens=True)
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    np.testing.assert_array_equal(a["low_res_token_ids"], b["low_res_token_ids"])


def test_mismatched_stages(preprocessor):
    keras.utils.set_random_seed(0)
    sr = MuseSuperResolution(
        MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False, low_res_grid_size=2)
    )
    with pytest.raises(ValueError, match="must match"):
        MuseTextToImage(make_tiny_muse_backbone(), super_resolution=sr)
    with pytest.raises(ValueError, match="MuseSuperResolution"):
        MuseTextToImage(make_tiny_muse_backbone(), super_resolution=make_tiny_muse_backbone())


def _sr_components(preset_dir):
    with open(preset_dir / "super_resolution" / "task.json") as f:
        return json.load(f)["components"]


def test_shared_components_are_saved_once(preprocessor, tmp_path):
    # Equal models in other objects (as after loading each stage on its
    # own); the base model trains its text encoder, the super-res one not.
    encoder, sr_encoder = make_tiny_text_encoder(preprocessor), make_tiny_text_encoder(preprocessor)
    vqgan, low_res_copy = make_vqgan(factor=4), make_vqgan(factor=4)
    low_res_copy.set_weights(vqgan.get_weights())
    keras.utils.set_random_seed(1)
    sr = MuseSuperResolution(MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False),
                             text_encoder=sr_encoder, vqgan=make_vqgan(factor=4), low_res_vqgan=low_res_copy)
    task = MuseTextToImage(make_tiny_muse_backbone(), text_encoder=encoder, vqgan=vqgan, super_resolution=sr,
                           trainable_text_encoder=True)
    task.save_to_preset(tmp_path / "p")
    assert _sr_components(tmp_path / "p") == {
        "text_encoder": "../text_encoder", "vqgan": "vqgan", "low_res_vqgan": "../vqgan"}
    assert sorted(os.listdir(tmp_path / "p" / "super_resolution")) == [
        "config.json", "metadata.json", "model.weights.h5", "task.json", "vqgan"]

    loaded = MuseTextToImage.from_preset(tmp_path / "p")
    assert loaded.super_resolution.low_res_vqgan is loaded.vqgan
    # The base model trains its text encoder: the super-res stage gets its
    # own copy, so that training cannot move its conditioning.
    assert loaded.super_resolution.text_encoder is not loaded.text_encoder
    assert loaded.text_encoder.trainable and not loaded.super_resolution.text_encoder.trainable
    a = task.generate(PROMPTS, num_steps=2, seed=3, return_tokens=True)
    b = loaded.generate(PROMPTS, num_steps=2, seed=3, return_tokens=True)
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    # Frozen in both stages: one object serves both.
    frozen = MuseTextToImage.from_preset(tmp_path / "p", trainable_text_encoder=False)
    assert frozen.super_resolution.text_encoder is frozen.text_encoder
    # The super-res stage still loads on its own: the references resolve.
    alone = MuseSuperResolution.from_preset(tmp_path / "p" / "super_resolution")
    for x, y in zip(alone.low_res_vqgan.get_weights(), vqgan.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_different_components_are_saved_apart(preprocessor, tmp_path):
    vqgan, other = make_vqgan(factor=4), make_vqgan(factor=4)
    weights = other.get_weights()
    weights[0] = weights[0] + 1.0  # equal config, other weights: another model
    other.set_weights(weights)
    sr = MuseSuperResolution(MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False),
                             text_encoder=make_tiny_text_encoder(preprocessor), vqgan=make_vqgan(factor=4),
                             low_res_vqgan=other)
    task = MuseTextToImage(make_tiny_muse_backbone(), text_encoder=make_tiny_text_encoder(preprocessor),
                           vqgan=vqgan, super_resolution=sr)
    task.save_to_preset(tmp_path / "p")
    assert _sr_components(tmp_path / "p")["low_res_vqgan"] == "low_res_vqgan"
    loaded = MuseTextToImage.from_preset(tmp_path / "p")
    assert loaded.super_resolution.low_res_vqgan is not loaded.vqgan
    np.testing.assert_array_equal(loaded.super_resolution.low_res_vqgan.get_weights()[0], weights[0])


def test_missing_component_directory_is_named(pipeline, tmp_path):
    pipeline.save_to_preset(tmp_path / "p")
    shutil.rmtree(tmp_path / "p" / "vqgan")
    with pytest.raises(ValueError, match="'vqgan'.*not a directory"):
        MuseTextToImage.from_preset(tmp_path / "p")
