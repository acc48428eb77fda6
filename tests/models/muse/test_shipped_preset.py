"""The trained presets that ship inside the package, and their packaging."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_muse.training.ship_preset import package_preset
from keras_muse.training.ship_preset import read_recipe


@pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")
def test_packaging_stores_float16_keeps_the_codebook_and_the_recipe(tmp_path, preprocessor):
    import h5py

    from helpers import make_tiny_muse_backbone
    from helpers import make_tiny_text_encoder
    from helpers import make_vqgan
    from keras_muse.models import MuseTextToImage

    task = MuseTextToImage(
        make_tiny_muse_backbone(), text_encoder=make_tiny_text_encoder(preprocessor), vqgan=make_vqgan(factor=4),
    )
    task.save_to_preset(tmp_path / "trained")
    dest = package_preset(str(tmp_path / "trained"), "tiny_ship", {"commands": ["python x.py"], "seed": 0},
                          dest_root=str(tmp_path / "presets"))
    assert dest == str(tmp_path / "presets" / "tiny_ship")
    dtypes = {}
    with h5py.File(os.path.join(dest, "vqgan", "model.weights.h5")) as f:
        f.visititems(lambda n, o: dtypes.__setitem__(n, o.dtype) if isinstance(o, h5py.Dataset) else None)
    assert any(d == np.float16 for d in dtypes.values())
    assert all(d != np.float16 for n, d in dtypes.items() if "vector_quantizer" in n)
    loaded = MuseTextToImage.from_preset(dest)
    for a, b in zip(loaded.get_weights(), task.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, atol=2e-3, rtol=2e-3)
    codebook = [w for w in loaded.vqgan.weights if "vector_quantizer" in w.path]
    original = {w.path: np.asarray(w) for w in task.vqgan.weights}
    for w in codebook:
        np.testing.assert_array_equal(np.asarray(w), original[w.path])
    recipe = read_recipe(dest)
    assert recipe["commands"] == ["python x.py"] and recipe["float16_weights"] is True
    with pytest.raises(ValueError, match="src"):
        package_preset(str(tmp_path), "bad", {})
    with pytest.raises(ValueError, match="recipe"):
        package_preset(str(tmp_path / "trained"), "bad", "not a dict")


def test_shipped_muse_shapes_64_generates_from_the_cli(tmp_path):
    from keras_muse.cli import main
    from keras_muse.models import MuseTextToImage
    from keras_muse.utils.preset_utils import PACKAGE_PRESET_DIR

    recipe = read_recipe(os.path.join(PACKAGE_PRESET_DIR, "muse_shapes_64"))
    assert recipe["commands"] and recipe["stages"]["base"]["steps"] > 0
    out = tmp_path / "samples.png"
    # The README's main job, with fewer steps.
    assert main(["generate", "a large red circle in the top left", "-n", "2", "--steps", "6",
                 "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape[1] >= 2 * 64
    task = MuseTextToImage.from_preset("muse_shapes_64")
    assert task.resolution == (64, 64)
    with open(os.path.join(PACKAGE_PRESET_DIR, "muse_shapes_64", "task.json")) as f:
        assert json.load(f)["registered_name"] == "keras_muse>MuseTextToImage"


@pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")
def test_two_stage_packaging_refers_to_the_shipped_stages(tmp_path, preprocessor):
    import keras

    from helpers import make_tiny_muse_backbone
    from helpers import make_tiny_text_encoder
    from helpers import make_vqgan
    from keras_muse.models import MuseSuperResBackbone
    from keras_muse.models import MuseSuperResolution
    from keras_muse.models import MuseTextToImage
    from keras_muse.models import VQGAN
    from keras_muse.training.ship_preset import package_two_stage_preset

    root = tmp_path / "presets"
    base = MuseTextToImage(
        make_tiny_muse_backbone(), text_encoder=make_tiny_text_encoder(preprocessor), vqgan=make_vqgan(factor=4),
    )
    base.save_to_preset(tmp_path / "base_trained")
    package_preset(str(tmp_path / "base_trained"), "base_ship", {"seed": 0}, dest_root=str(root))
    make_vqgan(factor=4).save_to_preset(root / "vq_hi")
    shipped = MuseTextToImage.from_preset(root / "base_ship")
    keras.utils.set_random_seed(4)
    sr_backbone = MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False)
    # float16-exact weights, so the packaged preset must sample identically.
    sr_backbone.set_weights([w.astype("float16").astype(w.dtype) for w in sr_backbone.get_weights()])
    sr = MuseSuperResolution(sr_backbone, text_encoder=shipped.text_encoder, vqgan=VQGAN.from_preset(root / "vq_hi"),
                             low_res_vqgan=shipped.vqgan)
    two = MuseTextToImage(shipped.backbone, text_encoder=shipped.text_encoder, vqgan=shipped.vqgan,
                          super_resolution=sr)
    two.save_to_preset(tmp_path / "two_trained")
    dest = package_two_stage_preset(str(tmp_path / "two_trained"), "two_ship", "base_ship", "vq_hi",
                                    {"commands": ["python sr.py"]}, dest_root=str(root))
    # Only the super-res transformer is new; the rest is read from the shipped stages.
    files = sorted(os.path.relpath(os.path.join(r, f), dest) for r, _, fs in os.walk(dest) for f in fs)
    assert files == ["metadata.json", "super_resolution/config.json", "super_resolution/metadata.json",
                     "super_resolution/model.weights.h5", "super_resolution/task.json", "task.json"]
    assert read_recipe(dest)["built_on"] == ["base_ship", "vq_hi"]
    loaded = MuseTextToImage.from_preset(dest)
    assert loaded.super_resolution.text_encoder is loaded.text_encoder
    assert loaded.super_resolution.low_res_vqgan is loaded.vqgan
    prompts = ["a red circle", "two blue squares"]
    want = two.generate(prompts, num_steps=2, super_resolution_steps=2, seed=0, return_tokens=True)
    got = loaded.generate(prompts, num_steps=2, super_resolution_steps=2, seed=0, return_tokens=True)
    np.testing.assert_array_equal(got["token_ids"], want["token_ids"])
    np.testing.assert_array_equal(got["low_res_token_ids"], want["low_res_token_ids"])

    # A super-res stage trained on another high-res tokenizer cannot refer to the shipped one.
    other_vqgan = make_vqgan(factor=4)
    other_vqgan.weights[0].assign(other_vqgan.weights[0] + 0.5)
    other = MuseSuperResolution(sr_backbone, text_encoder=shipped.text_encoder, vqgan=other_vqgan,
                                low_res_vqgan=shipped.vqgan)
    MuseTextToImage(shipped.backbone, text_encoder=shipped.text_encoder, vqgan=shipped.vqgan,
                    super_resolution=other).save_to_preset(tmp_path / "other")
    with pytest.raises(ValueError, match="high-res VQGAN"):
        package_two_stage_preset(str(tmp_path / "other"), "bad", "base_ship", "vq_hi", {}, dest_root=str(root))
    assert not os.path.exists(root / "bad")

