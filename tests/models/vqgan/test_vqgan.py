import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import make_vqgan
from keras import ops

from keras_muse import backend as muse_backend
from keras_muse.models import VQGAN


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("factor", [4, 8, 16])
def test_encode_decode_shapes(factor):
    vqgan = make_vqgan(factor)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 32, 3)).astype("float32")
    ids = vqgan.encode(x)
    assert ids.dtype == np.int32 and ids.shape == (2, 64 // factor, 32 // factor)
    assert ids.min() >= 0 and ids.max() < vqgan.codebook_size
    out = vqgan.decode(ids)
    assert out.shape == (2, 64, 32, 3) and out.dtype == np.float32
    assert out.min() >= -1 and out.max() <= 1
    assert tuple(vqgan(x).shape) == (2, 64, 32, 3)


def test_patch_size_multiplies_factor():
    vqgan = make_vqgan(4, patch_size=2)
    assert vqgan.factor == 8
    x = np.zeros((1, 32, 32, 3), "float32")
    assert vqgan.encode(x).shape == (1, 4, 4)
    assert vqgan.decode(vqgan.encode(x)).shape == (1, 32, 32, 3)


def test_encode_is_the_forward_ids(images):
    vqgan = make_vqgan()
    np.testing.assert_array_equal(
        vqgan.encode(images), np.asarray(vqgan.forward(images)["ids"])
    )


def test_straight_through_gradient_reaches_encoder(images):
    vqgan = make_vqgan()
    variables = vqgan.encoder.trainable_variables

    def loss_fn():
        recon = vqgan.forward(images, training=True)["reconstructions"]
        return ops.mean(ops.square(recon - images)), None

    _, _, grads = muse_backend.variable_grads(loss_fn, variables)
    norms = {v.path: float(np.abs(np.asarray(g)).sum()) for v, g in zip(variables, grads)}
    # The gradient crosses the quantizer into the encoder: its stem, head and
    # every residual branch's last conv (the earlier ones sit behind that
    # zero-initialized conv at step 0, so they legitimately get none yet).
    checked = [p for p in norms if "conv_in/kernel" in p or "conv_out/kernel" in p or "conv2/kernel" in p]
    assert len(checked) >= 4
    assert all(norms[p] > 0 for p in checked), norms


def _assert_same_ids(a, b, images):
    np.testing.assert_array_equal(a.encode(images), b.encode(images))


def test_config_round_trip(images):
    vqgan = make_vqgan(patch_size=2)
    clone = VQGAN.from_config(vqgan.get_config())
    assert clone.get_config() == vqgan.get_config()
    clone.set_weights(vqgan.get_weights())
    _assert_same_ids(vqgan, clone, images)


def test_keras_file_round_trip(tmp_path, images):
    vqgan = make_vqgan()
    path = str(tmp_path / "vqgan.keras")
    vqgan.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, VQGAN)
    _assert_same_ids(vqgan, loaded, images)
    np.testing.assert_allclose(
        vqgan.decode(vqgan.encode(images)), loaded.decode(loaded.encode(images)), atol=1e-6
    )


def test_preset_round_trip_and_atomic_save(tmp_path, images):
    vqgan = make_vqgan()
    preset = tmp_path / "my_vqgan"
    vqgan.save_to_preset(preset)
    assert sorted(os.listdir(tmp_path)) == ["my_vqgan"]  # no temp dirs left
    assert {"config.json", "metadata.json", "model.weights.h5"} <= set(os.listdir(preset))
    loaded = VQGAN.from_preset(str(preset))
    _assert_same_ids(vqgan, loaded, images)
    # Saving again over an existing preset replaces it whole.
    other = make_vqgan(codebook_size=32)
    other.save_to_preset(preset)
    assert VQGAN.from_preset(str(preset)).codebook_size == 32
    assert sorted(os.listdir(tmp_path)) == ["my_vqgan"]


def test_failed_save_leaves_existing_preset(tmp_path, images, monkeypatch):
    vqgan = make_vqgan()
    preset = tmp_path / "p"
    vqgan.save_to_preset(preset)
    before = sorted(os.listdir(preset))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(VQGAN, "save_weights", boom)
    with pytest.raises(OSError):
        make_vqgan(codebook_size=32).save_to_preset(preset)
    monkeypatch.undo()
    assert sorted(os.listdir(preset)) == before
    assert sorted(os.listdir(tmp_path)) == ["p"]
    assert VQGAN.from_preset(str(preset)).codebook_size == vqgan.codebook_size


def test_named_presets():
    assert "vqgan_f16_8192" in VQGAN.config_presets
    with pytest.raises(ValueError, match="load_weights=False"):
        VQGAN.from_preset("vqgan_f16_8192")
    tiny = VQGAN.from_preset("vqgan_tiny_f4", load_weights=False)
    assert tiny.factor == 4
    paper = VQGAN.config_presets["vqgan_f16_8192"]["config"]
    assert paper["codebook_size"] == 8192 and paper["base_channels"] == 128
    assert 2 ** (len(paper["channel_multipliers"]) - 1) == 16


def test_bad_presets(tmp_path):
    with pytest.raises(ValueError, match="neither a known preset name"):
        VQGAN.from_preset(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        VQGAN.from_preset(str(empty))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        VQGAN.from_preset(str(corrupt))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(
        json.dumps({"registered_name": "keras_hub>BertBackbone", "config": {}})
    )
    with pytest.raises(ValueError, match="not a VQGAN"):
        VQGAN.from_preset(str(foreign))
    # A truncated weights file: clear error, no crash deep in h5py.
    good = tmp_path / "good"
    make_vqgan().save_to_preset(good)
    weights = good / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not be loaded"):
        VQGAN.from_preset(str(good))
    os.remove(weights)
    with pytest.raises(ValueError, match="no model.weights.h5"):
        VQGAN.from_preset(str(good))


def test_bad_inputs():
    vqgan = make_vqgan()
    ok = np.zeros((1, 32, 32, 3), "float32")
    with pytest.raises(ValueError, match="4-D"):
        vqgan.encode(ok[0])
    with pytest.raises(ValueError, match="3 channels"):
        vqgan.encode(np.zeros((1, 32, 32, 4), "float32"))
    with pytest.raises(ValueError, match="multiples of the downsampling factor 4"):
        vqgan.encode(np.zeros((1, 30, 32, 3), "float32"))
    with pytest.raises(ValueError, match="preprocess_images"):
        vqgan.encode(np.zeros((1, 32, 32, 3), "uint8"))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        vqgan.encode(ok + 2.0)
    nan = ok.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        vqgan.encode(nan)
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        vqgan.decode(np.full((1, 8, 8), 64, "int32"))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        vqgan.decode(np.full((1, 8, 8), -1, "int32"))
    with pytest.raises(ValueError, match="integers"):
        vqgan.decode(np.zeros((1, 8, 8), "float32"))
    with pytest.raises(ValueError, match="3-D"):
        vqgan.decode(np.zeros((8, 8), "int32"))
    with pytest.raises(ValueError, match="channel_multipliers"):
        VQGAN(channel_multipliers=())


def test_uint8_helpers():
    x = np.array([[[[0, 128, 255]]]], "uint8")
    f = VQGAN.preprocess_images(x)
    assert f.min() == -1.0 and f.max() == 1.0
    np.testing.assert_array_equal(VQGAN.postprocess_images(f), x)


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") != "jax", reason="compares JAX against TF"
)
def test_jax_and_tensorflow_give_the_same_ids(tmp_path):
    vqgan = make_vqgan(8)
    images = np.random.default_rng(3).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    preset = tmp_path / "preset"
    vqgan.save_to_preset(preset)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import numpy as np, sys\n"
        "from keras_muse.models import VQGAN\n"
        f"m = VQGAN.from_preset({str(preset)!r})\n"
        f"x = np.load({str(tmp_path / 'images.npy')!r})\n"
        f"np.save({str(tmp_path / 'tf_ids.npy')!r}, m.encode(x))\n"
        f"np.save({str(tmp_path / 'tf_rec.npy')!r}, m.decode(m.encode(x)))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    jax_ids = vqgan.encode(images)
    np.testing.assert_array_equal(np.load(tmp_path / "tf_ids.npy"), jax_ids)
    np.testing.assert_allclose(
        np.load(tmp_path / "tf_rec.npy"), vqgan.decode(jax_ids), atol=1e-4
    )


def test_coexists_with_other_keras_hub_backbones(images):
    """keras-hub turns `Backbone` functional once any functional backbone is
    built: the VQGAN must be functional too (regression: it was subclassed)."""
    from keras_muse.models.muse import MuseBackbone

    MuseBackbone.from_preset("muse_tiny", load_weights=False)
    vqgan = make_vqgan()
    assert vqgan.encode(images).shape == (4, 8, 8)
    assert len(vqgan.discriminator.trainable_variables) > 0
    assert set(map(id, vqgan.discriminator.weights)) <= set(map(id, vqgan.weights))


def test_construction_warns_nothing():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_vqgan()
