import numpy as np
import pytest
from helpers import check_hidden_states

from keras_muse.models.muse import MuseBackbone
from keras_muse.models.muse import MuseSuperResBackbone
from keras_muse.layers.transformer_block import MuseTransformerBlock


def _backbone(**overrides):
    import keras

    keras.utils.set_random_seed(0)
    config = {**MuseSuperResBackbone.config_presets["muse_super_res_tiny"]["config"], **overrides}
    return MuseSuperResBackbone(**config)


def _inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "token_ids": rng.integers(0, 65, (batch, 64)).astype("int32"),
        "low_res_token_ids": rng.integers(0, 64, (batch, 16)).astype("int32"),
        "text_embeddings": rng.normal(size=(batch, 8, 16)).astype("float32"),
        "text_padding_mask": np.array([[True] * 5 + [False] * 3] * batch),
    }


def test_shapes_and_step_methods_agree():
    sr = _backbone()
    inputs = _inputs()
    logits = np.asarray(sr(inputs))
    assert logits.shape == (2, 64, 64) and logits.dtype == np.float32
    kv, mask = sr.conditioning_key_values(
        inputs["text_embeddings"], inputs["text_padding_mask"], inputs["low_res_token_ids"]
    )
    assert tuple(mask.shape) == (2, 16 + 8)
    step = np.asarray(sr.logits_step(inputs["token_ids"], kv, mask))
    np.testing.assert_allclose(step, logits, atol=1e-5)
    assert sr.mask_token_id == 64



def test_hidden_states_give_the_logits_and_add_no_weights(tmp_path):
    check_hidden_states(_backbone, _inputs(), tmp_path)

def test_reuses_the_base_models_block():
    sr = _backbone()
    blocks = sr.transformer_layers + sr.low_res_layers
    assert all(type(b) is MuseTransformerBlock for b in blocks)
    assert all(b.cross_attention for b in sr.transformer_layers)
    assert not any(b.cross_attention for b in sr.low_res_layers)
    # The high-res side is the base model's code, not a copy of it.
    assert MuseSuperResBackbone.logits_step is MuseBackbone.logits_step
    assert MuseSuperResBackbone.embed_tokens is MuseBackbone.embed_tokens


def test_logits_depend_on_low_res_tokens_and_text_but_not_padding():
    sr = _backbone()
    inputs = _inputs()
    logits = np.asarray(sr(inputs))
    low = inputs["low_res_token_ids"].copy()
    low[:, 3] = (low[:, 3] + 1) % 64
    assert np.abs(np.asarray(sr(dict(inputs, low_res_token_ids=low))) - logits).max() > 1e-4
    changed = dict(inputs, text_embeddings=inputs["text_embeddings"] + 0.5)
    assert np.abs(np.asarray(sr(changed)) - logits).max() > 1e-4
    padded = inputs["text_embeddings"].copy()
    padded[:, 5:] = -30.0
    np.testing.assert_allclose(np.asarray(sr(dict(inputs, text_embeddings=padded))), logits, atol=1e-5)


def test_different_grid_ratio_and_untied_head():
    sr = _backbone(grid_size=(4, 8), low_res_grid_size=2, low_res_codebook_size=10, tie_embeddings=False)
    inputs = _inputs()
    inputs["token_ids"] = inputs["token_ids"][:, :32]
    inputs["low_res_token_ids"] = inputs["low_res_token_ids"][:, :4] % 10
    assert np.asarray(sr(inputs)).shape == (2, 32, 64)


def test_serialization_and_preset_round_trip(tmp_path):
    sr = _backbone()
    inputs = _inputs()
    clone = MuseSuperResBackbone.from_config(sr.get_config())
    clone.set_weights(sr.get_weights())
    np.testing.assert_allclose(np.asarray(clone(inputs)), np.asarray(sr(inputs)), atol=1e-6)
    sr.save_to_preset(tmp_path / "preset")
    loaded = MuseSuperResBackbone.from_preset(str(tmp_path / "preset"))
    np.testing.assert_array_equal(np.asarray(loaded(inputs)), np.asarray(sr(inputs)))
    with pytest.raises(ValueError):
        MuseBackbone.from_preset(str(tmp_path / "preset"))


def test_named_presets():
    paper = MuseSuperResBackbone.config_presets["muse_super_res_512"]["config"]
    assert (paper["low_res_num_layers"], paper["num_layers"], paper["hidden_dim"], paper["mlp_dim"]) == (
        16, 32, 1024, 4096,
    )
    assert (paper["low_res_grid_size"], paper["grid_size"]) == (16, 64)
    with pytest.raises(ValueError, match="load_weights=False"):
        MuseSuperResBackbone.from_preset("muse_super_res_512")


def test_validate_inputs():
    sr = _backbone()
    good = _inputs()
    sr.validate_inputs(**good)
    cases = [
        (dict(token_ids=good["token_ids"][:, :10]), "64 tokens"),
        (dict(low_res_token_ids=good["low_res_token_ids"][:, :10]), "16 tokens"),
        (dict(low_res_token_ids=good["low_res_token_ids"] + 64), r"low_res_token_ids.*\[0, 63\]"),
        (dict(token_ids=good["token_ids"] + 100), r"\[0, 64\]"),
        (dict(low_res_token_ids=good["low_res_token_ids"][:1]), "batch"),
        (dict(text_embeddings=good["text_embeddings"][:1]), "batch"),
        (dict(text_embeddings=good["text_embeddings"] * np.nan), "NaN"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            sr.validate_inputs(**{**good, **change})


def test_multi_axis_attention_backbone():
    # 8x8 grid, window 4: layer 0 attends within 4x4 tiles, layer 1 across a stride-2 grid.
    sr = _backbone(attention_window=4)
    assert [b.self_attention_partition for b in sr.transformer_layers] == ["block", "grid"]
    inputs = _inputs()
    logits = np.asarray(sr(inputs))
    kv, mask = sr.conditioning_key_values(
        inputs["text_embeddings"], inputs["text_padding_mask"], inputs["low_res_token_ids"]
    )
    np.testing.assert_allclose(np.asarray(sr.logits_step(inputs["token_ids"], kv, mask)), logits, atol=1e-5)
    clone = MuseSuperResBackbone.from_config(sr.get_config())
    clone.set_weights(sr.get_weights())
    np.testing.assert_allclose(np.asarray(clone(inputs)), logits, atol=1e-6)
    # Same weights as global attention, different mixing: the outputs differ.
    full = _backbone()
    full.set_weights(sr.get_weights())
    assert np.abs(np.asarray(full(inputs)) - logits).max() > 1e-4
    with pytest.raises(ValueError, match="attention_window"):
        _backbone(attention_window=3)
    assert MuseSuperResBackbone.config_presets["muse_super_res_512"]["config"]["attention_window"] == 8


def test_aligned_low_res_features_land_on_the_tokens_they_cover():
    sr = _backbone(aligned_low_res=True)
    inputs = _inputs()
    logits = np.asarray(sr(inputs))
    kv, mask = sr.conditioning_key_values(
        inputs["text_embeddings"], inputs["text_padding_mask"], inputs["low_res_token_ids"]
    )
    assert set(kv) == {"layers", "token_bias"}
    np.testing.assert_allclose(np.asarray(sr.logits_step(inputs["token_ids"], kv, mask)), logits, atol=1e-5)
    # With an identity projection, high-res token (r, c) carries low-res token (r // 2, c // 2).
    sr.low_res_alignment.kernel.assign(np.eye(32, dtype="float32"))
    sr.low_res_alignment.bias.assign(np.zeros(32, "float32"))
    features = np.random.default_rng(0).normal(size=(2, 16, 32)).astype("float32")
    bias = np.asarray(sr.token_bias(features)).reshape(2, 8, 8, 32)
    expected = features.reshape(2, 4, 4, 32).repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_allclose(bias, expected, atol=1e-6)
    clone = MuseSuperResBackbone.from_config(sr.get_config())
    assert clone.aligned_low_res
    with pytest.raises(ValueError, match="aligned_low_res"):
        _backbone(aligned_low_res=True, grid_size=(6, 6))
