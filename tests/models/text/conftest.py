"""Tiny text-encoder fixtures: a vocabulary trained in process on shapes captions."""

import keras
import keras_hub
import pytest

from keras_muse.datasets import shapes
from keras_muse.models.text import MuseTextEncoder
from keras_muse.models.text import MuseTextPreprocessor
from keras_muse.models.text import sentencepiece_utils

VOCAB_SIZE = 64
TINY_T5 = dict(
    vocabulary_size=VOCAB_SIZE, num_layers=2, num_heads=4, hidden_dim=64,
    intermediate_dim=128, dropout=0.0, activation="gelu",
)


@pytest.fixture(scope="session")
def tiny_t5():
    """The tiny T5 architecture (a fresh dict per test)."""
    return TINY_T5


@pytest.fixture(scope="session")
def captions():
    return shapes.make_arrays(500)[1]


@pytest.fixture(scope="session")
def proto(captions):
    return sentencepiece_utils.train_sentencepiece(captions, vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="session")
def tokenizer(proto):
    return keras_hub.models.T5Tokenizer(proto=proto)


@pytest.fixture(scope="session")
def preprocessor(tokenizer):
    return MuseTextPreprocessor(tokenizer, sequence_length=16)


@pytest.fixture(scope="session")
def encoder(preprocessor):
    """Shared: tests must not change it (build their own to mutate)."""
    keras.utils.set_random_seed(0)
    return MuseTextEncoder(**TINY_T5, preprocessor=preprocessor)


@pytest.fixture(scope="session")
def bare_encoder(encoder):
    """The same architecture without a preprocessor, never run (for checks that
    fail before any forward pass, and for attribute-level serialization)."""
    return MuseTextEncoder.from_config(encoder.get_config())
