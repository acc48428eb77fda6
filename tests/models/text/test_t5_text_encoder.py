import keras
import numpy as np
import pytest
from keras import ops

from keras_muse.models.text import MuseTextEncoder
from keras_muse.models.text import MuseTextPreprocessor

PROMPTS = ["a red circle", "two blue squares on the left", ""]


def _np(x):
    return {k: np.asarray(ops.convert_to_numpy(v)) for k, v in x.items()}


def test_output_shape_and_zero_padding(encoder, preprocessor):
    x = _np(preprocessor(PROMPTS))
    y = encoder.predict_on_batch(x)
    assert y.shape == (3, 16, 64) and y.dtype == np.float32
    assert encoder.hidden_dim == 64
    assert np.isfinite(y).all()
    # Padding positions are zero, real ones are not.
    assert not y[~x["padding_mask"]].any()
    assert (np.abs(y[x["padding_mask"]]).sum(-1) > 0).all()
    # The empty prompt still has one real position: the end token.
    assert x["padding_mask"][2].sum() == 1


def test_padding_does_not_change_real_positions(encoder, tokenizer):
    short = _np(MuseTextPreprocessor(tokenizer, sequence_length=16)(PROMPTS))
    long = _np(MuseTextPreprocessor(tokenizer, sequence_length=32)(PROMPTS))
    np.testing.assert_array_equal(short["token_ids"], long["token_ids"][:, :16])
    a = encoder.predict_on_batch(short)
    b = encoder.predict_on_batch(long)
    # The T5 encoder masks padded keys: real positions see the same inputs.
    # (Shapes differ, so XLA may sum in another order: float32 round-off.)
    np.testing.assert_allclose(a, b[:, :16], atol=1e-5, rtol=1e-5)
    assert not b[:, 16:].any()


def test_encode_text_matches_model_call(encoder, preprocessor):
    embeddings, mask = encoder.encode_text(PROMPTS, batch_size=2)
    assert embeddings.shape == (3, 16, 64) and embeddings.dtype == np.float32
    assert mask.shape == (3, 16) and mask.dtype == bool
    x = _np(preprocessor(PROMPTS))
    np.testing.assert_array_equal(mask, x["padding_mask"])
    np.testing.assert_allclose(embeddings, encoder.predict_on_batch(x), atol=1e-5)
    single, single_mask = encoder.encode_text("a red circle")
    assert single.shape == (1, 16, 64) and single_mask.shape == (1, 16)
    np.testing.assert_allclose(single[0], embeddings[0], atol=1e-5)


def test_encode_text_bad_inputs(encoder, bare_encoder):
    with pytest.raises(ValueError, match="empty batch"):
        encoder.encode_text([])
    with pytest.raises(ValueError, match="only strings"):
        encoder.encode_text(["a red circle", None])
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode_text(["a red circle"], batch_size=0)
    with pytest.raises(ValueError, match="no `preprocessor`"):
        bare_encoder.encode_text(["a red circle"])


def test_frozen_by_default_and_trainable_on_request(encoder):
    assert not encoder.trainable
    assert encoder.trainable_weights == [] and len(encoder.weights) > 0
    config = encoder.get_config()
    assert config["trainable"] is False
    trainable = MuseTextEncoder.from_config({**config, "trainable": True})
    assert trainable.trainable
    assert len(trainable.trainable_weights) == len(trainable.weights) == len(encoder.weights)


def test_weights_are_the_encoders_only(encoder):
    paths = [w.path for w in encoder.weights]
    assert not any("decoder" in p for p in paths)
    assert any("transformer_encoder_layer_1" in p for p in paths)


def test_serialization_round_trip(bare_encoder):
    from keras_hub.src.tests.test_case import TestCase

    # keras-hub's own check: get_config/from_config and serialize/deserialize
    # are idempotent and give objects with the same attributes (so on a model
    # that has not run: running adds attributes such as `predict_function`).
    TestCase("run_serialization_test").run_serialization_test(bare_encoder)


def test_bfloat16_outputs_are_finite(tiny_t5, preprocessor):
    # mixed_bfloat16 computes in bfloat16 like "bfloat16" does, but builds
    # float32 variables, whose initializers are already compiled (5 s less).
    encoder = MuseTextEncoder(**tiny_t5, preprocessor=preprocessor, dtype="mixed_bfloat16")
    assert encoder.compute_dtype == "bfloat16"
    embeddings, mask = encoder.encode_text(PROMPTS)
    assert embeddings.dtype == np.float32 and np.isfinite(embeddings).all()
    assert not embeddings[~mask].any()


def test_bad_arguments(preprocessor, tiny_t5):
    with pytest.raises(ValueError, match="num_layers"):
        MuseTextEncoder(**{**tiny_t5, "num_layers": 0})
    with pytest.raises(ValueError, match="divisible"):
        MuseTextEncoder(**{**tiny_t5, "num_heads": 5})
    with pytest.raises(ValueError, match="vocabulary"):
        MuseTextEncoder(**{**tiny_t5, "vocabulary_size": 32}, preprocessor=preprocessor)
    with pytest.raises(ValueError, match="MuseTextPreprocessor"):
        MuseTextEncoder(**tiny_t5, preprocessor="t5")


def test_layout_map_covers_every_kernel(encoder):
    devices = keras.distribution.list_devices()[:1]
    mesh = keras.distribution.DeviceMesh((1, 1), ("batch", "model"), devices)
    layout_map = MuseTextEncoder.get_layout_map(mesh)
    for weight in encoder.weights:
        layout = layout_map[weight.path]  # raises if two rules match
        if len(weight.shape) == 2 and "self_attention/embeddings" not in weight.path:
            assert layout is not None and "model" in layout.axes, weight.path
    with pytest.raises(ValueError, match="model_parallel_dim_name"):
        MuseTextEncoder.get_layout_map(mesh, model_parallel_dim_name="tensor")


def test_from_scratch_tokens_start_distinct():
    # keras-hub's T5 table initializer is TruncatedNormal(mean=1.0, stddev=0.05):
    # every token nearly the same vector. A from-scratch encoder re-draws it
    # as N(0, 1), so different tokens give clearly different features.
    keras.utils.set_random_seed(0)
    enc = MuseTextEncoder(vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32)
    table = np.asarray(enc.t5_encoder.get_layer("token_embedding").embeddings)
    assert abs(table.mean()) < 0.1 and 0.8 < table.std() < 1.2
    out = np.asarray(enc({"token_ids": np.array([[3, 4, 5, 6]], "int32"), "padding_mask": np.ones((1, 4), "int32")}))
    # Features vary across positions about as much as across channels.
    assert out[0].std(axis=0).mean() > 0.3 * out[0].std()
