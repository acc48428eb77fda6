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



def test_shipped_muse_shapes_128_super_res_beats_bicubic_on_heldout_scenes(tmp_path):
    from keras_muse.cli import main
    from keras_muse.datasets import shapes
    from keras_muse.models import MuseTextToImage
    from keras_muse.training.train_super_res import upsampling_report
    from keras_muse.utils.preset_utils import PACKAGE_PRESET_DIR

    recipe = read_recipe(os.path.join(PACKAGE_PRESET_DIR, "muse_shapes_128"))
    assert recipe["built_on"] == ["muse_shapes_64", "vqgan_shapes_128"] and len(recipe["commands"]) == 3
    # Every run of the chain is on record, the object-weighted one last.
    assert list(recipe["stages"]) == ["super_res_first_run", "super_res_second_run", "super_res"]
    assert "--object-token-weight 4" in recipe["commands"][-1]
    assert recipe["stages"]["super_res"]["object_token_weight"] == 4.0
    task = MuseTextToImage.from_preset("muse_shapes_128")
    assert task.resolution == (128, 128)
    sr = task.super_resolution
    assert sr.sampling_defaults == recipe["sampling_defaults"]
    # Scenes whose attribute combinations were never seen in training, from their real 64² tokens.
    high, captions, _ = shapes.make_arrays(8, resolution=128, split="heldout", seed=123)
    low, _, _ = shapes.make_arrays(8, resolution=64, split="heldout", seed=123)
    low_ids = np.asarray(sr.low_res_vqgan.encode(sr.low_res_vqgan.preprocess_images(low)))
    report, images, _ = upsampling_report(sr, low_ids, low, high, captions, seed=0, batch_size=8)
    assert images.shape == (8, 128, 128, 3)
    assert report["super_res_psnr"] > report["bicubic_low_res_tokens_psnr"], report
    # The two-stage main job from the CLI.
    out = tmp_path / "two_stage.png"
    assert main(["generate", "two blue squares", "--preset", "muse_shapes_128", "-n", "1", "--steps", "4",
                 "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape[0] >= 128
