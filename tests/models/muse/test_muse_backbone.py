import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import check_hidden_states

from keras_muse.models.muse import MuseBackbone


def _backbone(**overrides):
    import keras

    keras.utils.set_random_seed(0)
    config = {**MuseBackbone.config_presets["muse_tiny"]["config"], **overrides}
    return MuseBackbone(**config)


def _inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "token_ids": rng.integers(0, 65, (batch, 16)).astype("int32"),
        "text_embeddings": rng.normal(size=(batch, 8, 16)).astype("float32"),
        "text_padding_mask": np.array([[True] * 5 + [False] * 3] * batch),
    }


def test_logits_shape_and_step_methods_agree():
    bb = _backbone()
    inputs = _inputs()
    logits = np.asarray(bb(inputs))
    assert logits.shape == (2, 16, 64) and logits.dtype == np.float32
    kv = bb.text_key_values(inputs["text_embeddings"])
    step = np.asarray(bb.logits_step(inputs["token_ids"], kv, inputs["text_padding_mask"]))
    np.testing.assert_allclose(step, logits, atol=1e-5)
    assert bb.mask_token_id == 64



def test_hidden_states_give_the_logits_and_add_no_weights(tmp_path):
    check_hidden_states(_backbone, _inputs(), tmp_path)

@pytest.mark.parametrize("tie", [True, False])
def test_guidance_on_features_equals_guidance_on_logits(tie):
    # The sampler guides the head features and projects once; that must be
    # the paper's (1+t)·l_cond − t·l_uncond on the logits, tied or not.
    from keras_muse.samplers import guide_logits

    bb = _backbone(tie_embeddings=tie)
    inputs = _inputs()
    kv = bb.text_key_values(inputs["text_embeddings"])
    features = bb.features_step(inputs["token_ids"], kv, inputs["text_padding_mask"])
    logits = np.asarray(bb.logits_step(inputs["token_ids"], kv, inputs["text_padding_mask"]))
    np.testing.assert_allclose(np.asarray(bb.token_logits(features)), logits, atol=1e-6)
    np.testing.assert_allclose(logits, np.asarray(bb(inputs)), atol=1e-5)
    guided = np.asarray(bb.token_logits(guide_logits(features[:1], features[1:], 2.5)))
    np.testing.assert_allclose(guided, np.asarray(guide_logits(logits[:1], logits[1:], 2.5)), atol=1e-4)
    assert guided.shape == (1, 16, 64)


def test_text_changes_logits_but_padding_does_not():
    bb = _backbone()
    inputs = _inputs()
    logits = np.asarray(bb(inputs))
    changed = dict(inputs, text_embeddings=inputs["text_embeddings"] + 0.5)
    assert np.abs(np.asarray(bb(changed)) - logits).max() > 1e-4
    padded = inputs["text_embeddings"].copy()
    padded[:, 5:] = -30.0
    np.testing.assert_allclose(
        np.asarray(bb(dict(inputs, text_embeddings=padded))), logits, atol=1e-5
    )


def test_text_attention_maps_per_layer():
    bb = _backbone()
    inputs = _inputs()
    maps = np.asarray(bb.text_attention_maps(**inputs))
    assert maps.shape == (bb.num_layers, 2, bb.num_heads, 16, 8) and maps.dtype == np.float32
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert maps[..., 5:].max() < 1e-6  # padding
    # The first layer's map is its block's, on the embedded tokens.
    first = bb.transformer_layers[0].cross_attention_weights(
        bb.embed_tokens(inputs["token_ids"]), bb.project_text(inputs["text_embeddings"]),
        inputs["text_padding_mask"],
    )
    np.testing.assert_allclose(maps[0], np.asarray(first), atol=1e-6)
    # Different words, different maps.
    other = dict(inputs, text_embeddings=inputs["text_embeddings"][:, ::-1].copy())
    assert np.abs(np.asarray(bb.text_attention_maps(**other)) - maps).max() > 1e-3
    with pytest.raises(ValueError, match="token_ids"):
        bb.text_attention_maps(inputs["token_ids"][:, :3], inputs["text_embeddings"], inputs["text_padding_mask"])


def test_untied_head():
    bb = _backbone(tie_embeddings=False)
    assert np.asarray(bb(_inputs())).shape == (2, 16, 64)


def test_serialization_and_preset_round_trip(tmp_path):
    bb = _backbone()
    inputs = _inputs()
    clone = MuseBackbone.from_config(bb.get_config())
    clone.set_weights(bb.get_weights())
    np.testing.assert_allclose(np.asarray(clone(inputs)), np.asarray(bb(inputs)), atol=1e-6)
    bb.save_to_preset(tmp_path / "preset")
    loaded = MuseBackbone.from_preset(str(tmp_path / "preset"))
    np.testing.assert_array_equal(np.asarray(loaded(inputs)), np.asarray(bb(inputs)))


def test_named_presets():
    paper = MuseBackbone.config_presets["muse_3b"]["config"]
    assert (paper["num_layers"], paper["hidden_dim"], paper["mlp_dim"]) == (48, 2048, 8192)
    with pytest.raises(ValueError, match="load_weights=False"):
        MuseBackbone.from_preset("muse_3b")


def test_validate_inputs():
    bb = _backbone()
    good = _inputs()
    bb.validate_inputs(**good)
    cases = [
        (dict(token_ids=good["token_ids"][:, :10]), "16 tokens"),
        (dict(token_ids=good["token_ids"] + 100), r"\[0, 64\]"),
        (dict(token_ids=good["token_ids"][:0]), "non-empty"),
        (dict(token_ids=good["token_ids"].astype("float32")), "integers"),
        (dict(text_embeddings=good["text_embeddings"][:1], text_padding_mask=good["text_padding_mask"][:1]), "batch"),
        (dict(text_embeddings=good["text_embeddings"][..., :4]), "text_embeddings"),
        (dict(text_padding_mask=good["text_padding_mask"][:, :3]), "text_padding_mask"),
    ]
    for override, match in cases:
        with pytest.raises(ValueError, match=match):
            bb.validate_inputs(**{**good, **override})


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "jax") != "jax", reason="compares JAX against TF")
def test_jax_and_tensorflow_give_the_same_logits(tmp_path):
    bb = _backbone()
    inputs = _inputs()
    bb.save_to_preset(tmp_path / "preset")
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = (
        "import numpy as np\n"
        "from keras_muse.models.muse import MuseBackbone\n"
        f"bb = MuseBackbone.from_preset({str(tmp_path / 'preset')!r})\n"
        f"d = dict(np.load({str(tmp_path / 'inputs.npz')!r}))\n"
        f"np.save({str(tmp_path / 'tf.npy')!r}, np.asarray(bb(d)))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "tf.npy"), np.asarray(bb(inputs)), atol=1e-4)
