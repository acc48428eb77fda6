"""Shared helpers for the tests (importable as `helpers`: pytest.ini puts tests/ on the path)."""

import keras
import numpy as np

from keras_muse.models import VQGAN

TINY = dict(
    base_channels=8, num_res_blocks=1, latent_dim=16, codebook_size=64,
    code_dim=8, discriminator_channels=8, discriminator_layers=2,
)


def make_vqgan(factor=4, **overrides):
    levels = {4: (1, 2, 2), 8: (1, 1, 2, 2), 16: (1, 1, 1, 2, 2)}[factor]
    config = {**TINY, "channel_multipliers": levels, **overrides}
    keras.utils.set_random_seed(0)
    return VQGAN(**config)


def make_tiny_preprocessor(vocab_size=48, sequence_length=12):
    """A shapes-caption SentencePiece vocabulary trained in process."""
    import keras_hub

    from keras_muse.datasets import shapes
    from keras_muse.models import MuseTextPreprocessor
    from keras_muse.models.text import sentencepiece_utils

    captions = shapes.make_arrays(500)[1]
    proto = sentencepiece_utils.train_sentencepiece(captions, vocab_size=vocab_size)
    return MuseTextPreprocessor(keras_hub.models.T5Tokenizer(proto=proto), sequence_length=sequence_length)


def make_tiny_text_encoder(preprocessor, seed=1, vocab_size=48):
    """A 1-layer, width-16 T5 encoder (muse_tiny's text_dim)."""
    from keras_muse.models import MuseTextEncoder

    keras.utils.set_random_seed(seed)
    return MuseTextEncoder(
        vocabulary_size=vocab_size, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
        dropout=0.0, activation="gelu", preprocessor=preprocessor,
    )


def make_tiny_muse_backbone(seed=0, **overrides):
    """muse_tiny: 4x4 grid, codebook 64, width 32, text_dim 16."""
    from keras_muse.models import MuseBackbone

    keras.utils.set_random_seed(seed)
    return MuseBackbone(**{**MuseBackbone.config_presets["muse_tiny"]["config"], **overrides})


def check_hidden_states(make_backbone, inputs, tmp_path):
    """A backbone's `hidden_states` view gives its logits and adds no weights."""
    bb = make_backbone()
    hidden = bb.hidden_states(inputs)
    assert tuple(hidden.shape) == (len(inputs["token_ids"]), bb.num_tokens, bb.hidden_dim)
    np.testing.assert_allclose(np.asarray(bb.logits_from_hidden(hidden)), np.asarray(bb(inputs)), atol=1e-5)
    # The view shares the backbone's layers: no variable and no weight-file
    # entry of its own.
    assert len({id(v) for v in bb.weights}) == len(bb.weights)
    path = str(tmp_path / "w.weights.h5")
    bb.save_weights(path)
    fresh = make_backbone()
    fresh.load_weights(path)
    np.testing.assert_allclose(np.asarray(fresh.hidden_states(inputs)), np.asarray(hidden), atol=1e-6)
