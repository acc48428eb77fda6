"""`same_model`: when a multi-model preset may save a component once."""

from keras_muse.utils.preset_utils import same_model

from helpers import make_tiny_preprocessor
from helpers import make_tiny_text_encoder
from helpers import make_vqgan


def test_equal_models_in_other_objects_are_the_same():
    a, b = make_vqgan(factor=4), make_vqgan(factor=4)
    b.set_weights(a.get_weights())
    assert a.name != b.name  # Keras' unique names are not part of the model
    b.trainable = not a.trainable  # nor is what a task sets
    assert same_model(a, a) and same_model(a, b)


def test_other_weights_or_config_differ():
    a, b = make_vqgan(factor=4), make_vqgan(factor=4)
    weights = a.get_weights()
    weights[-1] = weights[-1] + 1e-3
    b.set_weights(weights)
    assert not same_model(a, b)
    assert not same_model(a, make_vqgan(factor=8))


def test_text_encoders_compare_their_vocabulary():
    preprocessor = make_tiny_preprocessor()
    a, b = make_tiny_text_encoder(preprocessor), make_tiny_text_encoder(preprocessor)
    assert same_model(a, b)
    # Equal weights and config, another SentencePiece vocabulary (an asset).
    other_vocab = make_tiny_text_encoder(make_tiny_preprocessor(vocab_size=40))
    other_vocab.set_weights(a.get_weights())
    assert not same_model(a, other_vocab)
    longer = make_tiny_text_encoder(make_tiny_preprocessor(sequence_length=16))
    assert not same_model(a, longer)
