import keras
import numpy as np
import pytest
from keras import ops

from keras_muse.layers import LayerNormalization


def _pair(**kwargs):
    ours, theirs = LayerNormalization(**kwargs), keras.layers.LayerNormalization(**kwargs)
    ours.build((None, 6, 16))
    theirs.build((None, 6, 16))
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype("float32") for w in theirs.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


@pytest.mark.parametrize("kwargs", [dict(epsilon=1e-6), dict(epsilon=1e-3, center=False), dict(axis=1)])
def test_matches_keras_forward_and_gradient(kwargs):
    ours, theirs = _pair(**kwargs)
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(3, 6, 16)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), atol=1e-5)
    if keras.backend.backend() != "jax":
        return
    import jax

    def loss(layer):
        def fn(values, x):
            with keras.StatelessScope(state_mapping=list(zip(layer.trainable_variables, values))):
                y = layer(x)
            return ops.sum(ops.sin(y) * ops.arange(16, dtype="float32"))

        return jax.grad(fn, argnums=(0, 1))

    values = [v.value for v in theirs.trainable_variables]
    (g_ours, dx_ours), (g_theirs, dx_theirs) = loss(ours)(values, x), loss(theirs)(values, x)
    np.testing.assert_allclose(np.asarray(dx_ours), np.asarray(dx_theirs), atol=1e-4)
    for a, b in zip(g_ours, g_theirs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_half_precision_computes_in_float32_and_keeps_the_class_name():
    norm = LayerNormalization(dtype="mixed_bfloat16")
    y = norm(np.full((2, 4), 1000.0, "float32") + np.arange(4, dtype="float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert np.all(np.isfinite(np.asarray(ops.cast(y, "float32"))))
    # Keras files functional models' weights under the class name.
    assert type(norm).__name__ == "LayerNormalization"
