import keras
import numpy as np
from keras_hub.layers import ReversibleEmbedding as HubReversibleEmbedding

from keras_muse.layers import ReversibleEmbedding


def test_reverse_pass_reads_the_codebook_rows_only():
    for tie in (True, False):
        layer = ReversibleEmbedding(12, 8, tie_weights=tie)
        ids = np.array([[0, 5, 12]])  # 12 is [MASK]: an input only
        x = layer(ids)
        assert tuple(x.shape) == (1, 3, 8)
        logits = np.asarray(layer(x, reverse=True))
        assert logits.shape == (1, 3, 12)
        kernel = np.asarray(layer.embeddings).T if tie else np.asarray(layer.reverse_embeddings)
        np.testing.assert_allclose(logits, np.asarray(x) @ kernel[:, :12], atol=1e-5)
        symbolic = layer(keras.KerasTensor((None, 3, 8)), reverse=True)
        assert tuple(symbolic.shape) == (None, 3, 12)


def test_config_round_trip_and_same_weight_layout_as_keras_hub():
    layer = ReversibleEmbedding(12, 8, tie_weights=False)
    layer.build()
    clone = ReversibleEmbedding.from_config(layer.get_config())
    clone.build()
    assert clone.codebook_size == 12 and clone.input_dim == 13
    hub = HubReversibleEmbedding(13, 8, tie_weights=False)
    hub.build()
    # Presets saved with keras-hub's layer load into this one: same class
    # name (Keras files weights under it), same variables in the same order.
    assert type(layer).__name__ == type(hub).__name__
    assert [tuple(v.shape) for v in layer.weights] == [tuple(v.shape) for v in hub.weights]
    hub.set_weights(layer.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(x, reverse=True)), np.asarray(hub(x, reverse=True))[:, :12], atol=1e-6)
