import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_muse.models.text import UNCONDITIONAL_PROMPT
from keras_muse.models.text import MuseTextPreprocessor


def _np(x):
    return {k: np.asarray(ops.convert_to_numpy(v)) for k, v in x.items()}


def test_output_format_and_end_token(preprocessor, tokenizer):
    out = _np(preprocessor(["a red circle", "two blue squares on the left"]))
    assert out["token_ids"].shape == (2, 16) and out["token_ids"].dtype == np.int32
    assert out["padding_mask"].shape == (2, 16) and out["padding_mask"].dtype == bool
    for row, prompt in enumerate(["a red circle", "two blue squares on the left"]):
        ids = list(np.asarray(tokenizer(prompt)))
        n = len(ids)
        assert list(out["token_ids"][row, :n]) == ids
        assert out["token_ids"][row, n] == 1  # </s>
        assert out["padding_mask"][row].sum() == n + 1
        assert not out["token_ids"][row, n + 1 :].any()


def test_empty_prompt_is_end_token_only(preprocessor):
    out = _np(preprocessor([UNCONDITIONAL_PROMPT, "a red circle"]))
    assert out["token_ids"][0, 0] == 1 and not out["token_ids"][0, 1:].any()
    assert out["padding_mask"][0].tolist() == [True] + [False] * 15
    # An unbatched prompt gives unbatched outputs (keras-hub convention).
    single = _np(preprocessor(""))
    assert single["token_ids"].shape == (16,)


def test_truncation_warns_and_keeps_end_token(preprocessor):
    long_prompt = "a large red circle in the top left and a small blue square " * 3
    with pytest.warns(UserWarning, match="1 of 2 prompts .* truncated"):
        out = _np(preprocessor([long_prompt, "a red circle"]))
    assert out["padding_mask"][0].all() and out["token_ids"][0, -1] == 1
    with pytest.warns(UserWarning, match="truncated"):
        preprocessor(long_prompt)


def test_short_prompts_do_not_warn(preprocessor, recwarn):
    preprocessor(["a red circle", ""])
    assert not [w for w in recwarn if "truncated" in str(w.message)]


def test_sequence_length_override(preprocessor):
    out = _np(preprocessor(["a red circle"], sequence_length=32))
    assert out["token_ids"].shape == (1, 32)


def test_tf_data_matches_eager(preprocessor):
    prompts = ["a red circle", "", "two green stars"]
    ds = tf.data.Dataset.from_tensor_slices(prompts).batch(3).map(preprocessor)
    graph = next(iter(ds))
    eager = _np(preprocessor(prompts))
    np.testing.assert_array_equal(graph["token_ids"].numpy(), eager["token_ids"])
    np.testing.assert_array_equal(graph["padding_mask"].numpy(), eager["padding_mask"])


def test_tf_data_after_seeding(tokenizer):
    # `set_random_seed` clears TF's kernel caches, which used to delete the
    # tokenizer's tensorflow-text resource under a later `tf.data` map.
    preprocessor = MuseTextPreprocessor(tokenizer, sequence_length=8)
    keras.utils.set_random_seed(1)
    ds = tf.data.Dataset.from_tensor_slices(["a red circle"]).batch(1).map(preprocessor)
    assert next(iter(ds))["token_ids"].shape == (1, 8)


@pytest.mark.parametrize(
    "prompts, match",
    [
        ([1, 2], "only strings"),
        (["a red circle", 3], "only strings"),
        ([None], "only strings"),
        (None, "string or a list"),
        (np.zeros((2,), "float32"), "strings"),
        (np.array([["a"], ["b"]]), "1-D"),
        ([], "empty batch"),
        (np.array([], dtype=str), "empty batch"),
    ],
)
def test_bad_prompts(preprocessor, prompts, match):
    with pytest.raises(ValueError, match=match):
        preprocessor(prompts)


def test_bad_sequence_length(tokenizer, preprocessor):
    for bad in (1, 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="sequence_length"):
            MuseTextPreprocessor(tokenizer, sequence_length=bad)
    with pytest.raises(ValueError, match="sequence_length"):
        preprocessor(["a red circle"], sequence_length=1)
    with pytest.raises(ValueError, match="add_end_token"):
        MuseTextPreprocessor(tokenizer, add_end_token=False)
    with pytest.raises(ValueError, match="T5Tokenizer"):
        MuseTextPreprocessor(object())


def test_config_round_trip(preprocessor):
    config = preprocessor.get_config()
    restored = MuseTextPreprocessor.from_config(config)
    assert restored.sequence_length == 16
    assert isinstance(restored.tokenizer, keras_hub.models.T5Tokenizer)


def test_save_to_preset_round_trip(preprocessor, tmp_path):
    preprocessor.save_to_preset(tmp_path / "pre")
    restored = MuseTextPreprocessor.from_preset(tmp_path / "pre")
    assert restored.sequence_length == 16
    assert restored.tokenizer.proto == preprocessor.tokenizer.proto
    prompts = ["a small black star at the bottom", ""]
    a, b = _np(preprocessor(prompts)), _np(restored(prompts))
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    assert MuseTextPreprocessor.from_preset(tmp_path / "pre", sequence_length=8).sequence_length == 8


def test_named_preset_uses_the_shapes_vocabulary():
    preprocessor = MuseTextPreprocessor.from_preset("muse_text_tiny")
    assert preprocessor.sequence_length == 32
    assert preprocessor.tokenizer.vocabulary_size() == 128
    ids = np.asarray(preprocessor.tokenizer("a large red circle"))
    assert len(ids) == 4  # whole-word pieces


def test_bad_preset_paths(tmp_path):
    with pytest.raises(ValueError, match="neither"):
        MuseTextPreprocessor.from_preset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no tokenizer|holds no"):
        MuseTextPreprocessor.from_preset(tmp_path / "empty")
    with pytest.raises(ValueError, match="offline tokenizer"):
        MuseTextPreprocessor.from_preset("t5_1_1_xxl_encoder")
