import json
import os
import time
import warnings

import keras
import keras_hub
import numpy as np
import pytest

from keras_muse.models.text import MuseTextEncoder
from keras_muse.models.text import MuseTextPreprocessor
from keras_muse.models.text import PresetDownloadError

PROMPTS = ["a small green star at the bottom", "", "three black hexagons"]


def test_save_to_preset_round_trip(encoder, tmp_path):
    path = tmp_path / "text_encoder"
    encoder.save_to_preset(path)
    assert {"config.json", "model.weights.h5", "preprocessor.json", "tokenizer.json"} <= set(
        os.listdir(path)
    )
    assert os.path.isfile(path / "assets" / "tokenizer" / "vocabulary.spm")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dirs left
    restored = MuseTextEncoder.from_preset(path)
    assert not restored.trainable
    assert restored.preprocessor.tokenizer.proto == encoder.preprocessor.tokenizer.proto
    assert restored.preprocessor.sequence_length == encoder.preprocessor.sequence_length
    a, mask_a = encoder.encode_text(PROMPTS)
    b, mask_b = restored.encode_text(PROMPTS)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mask_a, mask_b)
    # Overrides: the packed length, and fine-tuning (config-level: the
    # preset's architecture, no weights loaded, so it stays cheap).
    again = MuseTextEncoder.from_preset(path, load_weights=False, sequence_length=8, trainable=True)
    assert again.preprocessor.sequence_length == 8 and again.trainable_weights


def test_named_tiny_preset_works_offline():
    encoder = MuseTextEncoder.from_preset("muse_text_tiny", load_weights=False)
    assert encoder.hidden_dim == 64 and not encoder.trainable
    embeddings, mask = encoder.encode_text(["a large red circle in the top left", ""])
    assert embeddings.shape == (2, 32, 64) and mask.sum(axis=1).tolist() == [9, 1]
    with pytest.raises(ValueError, match="without published weights"):
        MuseTextEncoder.from_preset("muse_text_tiny")


def test_offline_keras_hub_preset_fails_fast_and_clearly(monkeypatch, tmp_path):
    # A dead proxy makes this a network failure even on a connected machine
    # (and keeps it from downloading 20 GB there); an empty cache makes sure
    # nothing is found locally.
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    start = time.monotonic()
    with pytest.raises(PresetDownloadError) as info:
        MuseTextEncoder.from_preset("t5_1_1_xxl")
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert "'t5_1_1_xxl' (keras-hub's 't5_1.1_xxl') could not be downloaded" in message
    assert "local" in message and "save_to_preset" in message
    # Both the network's and the package's conventions catch it.
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, ValueError)
    with pytest.raises(PresetDownloadError, match="could not be downloaded"):
        MuseTextPreprocessor.from_preset("t5_1.1_xxl")
    with pytest.raises(PresetDownloadError, match="could not be downloaded"):
        MuseTextEncoder.from_preset("kaggle://keras/t5/keras/t5_small_multi/3")


def test_local_keras_hub_t5_preset(tmp_path, tokenizer, tiny_t5):
    """The offline route: a keras-hub T5 preset copied to a local directory."""
    keras.utils.set_random_seed(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not support masking")
        t5 = keras_hub.models.T5Backbone(**tiny_t5)
    path = tmp_path / "t5_local"
    t5.save_to_preset(path)
    tokenizer.save_to_preset(path)
    encoder = MuseTextEncoder.from_preset(path, sequence_length=16)
    assert not encoder.trainable and encoder.preprocessor.sequence_length == 16
    assert encoder.preprocessor.tokenizer.proto == tokenizer.proto
    # Every encoder weight is the saved T5's, and nothing of its decoder.
    # (Compared in order: T5's relative position biases share one path.)
    t5_encoder = keras.Model(
        {k: t5.input[k] for k in ("encoder_token_ids", "encoder_padding_mask")},
        t5.output["encoder_sequence_output"],
    )
    assert len(encoder.weights) == len(t5_encoder.weights) < len(t5.weights)
    for ours, theirs in zip(encoder.weights, t5_encoder.weights):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_bad_preset_directories(tmp_path):
    with pytest.raises(ValueError, match="neither a known preset"):
        MuseTextEncoder.from_preset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        MuseTextEncoder.from_preset(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        MuseTextEncoder.from_preset(corrupt)
    with pytest.raises(ValueError, match="preset name or a path"):
        MuseTextEncoder.from_preset(3)


def test_truncated_weights_are_reported(encoder, tmp_path):
    path = tmp_path / "truncated"
    encoder.save_to_preset(path)
    with open(path / "model.weights.h5", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match="could not be loaded"):
        MuseTextEncoder.from_preset(path)
    with open(path / "config.json") as f:
        assert json.load(f)["registered_name"] == "keras_muse>MuseTextEncoder"
