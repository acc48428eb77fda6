"""Preset loading builds variables without running their initializers (JAX)."""


import keras
import numpy as np
import pytest
from keras.src.backend.common import global_state
from keras.src.backend.common import variables as keras_variables

from helpers import make_tiny_muse_backbone
from helpers import make_vqgan
from keras_muse.backend.deferred_init import load_with_deferred_init
from keras_muse.models import MuseBackbone
from keras_muse.models import VQGAN

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="deferred initialization is a JAX path"
)


@pytest.fixture
def initializer_calls(monkeypatch):
    """Paths of the variables whose initializer produced their value."""
    calls = []
    original = keras_variables.Variable._initialize_with_initializer

    def spy(self, initializer):
        calls.append(self.path)
        return original(self, initializer)

    monkeypatch.setattr(keras_variables.Variable, "_initialize_with_initializer", spy)
    return calls


def _values(model):
    return {v.path: np.asarray(v.value) for v in model.weights}


@pytest.mark.parametrize("make", [make_tiny_muse_backbone, make_vqgan], ids=["muse", "vqgan"])
def test_from_preset_skips_the_initializers_of_loaded_weights(tmp_path, initializer_calls, make):
    model = make()
    model.save_to_preset(tmp_path / "preset")
    initializer_calls.clear()

    loaded = type(model).from_preset(tmp_path / "preset")

    saved = {v.path for v in model.weights}
    assert not saved & set(initializer_calls), "loaded weights ran their initializer"
    expected = _values(model)
    got = _values(loaded)
    assert got.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_array_equal(got[path], value, err_msg=path)
    # Whatever the weights file does not hold (metric counters, seed states)
    # was initialized, and nothing is left for a later scope to initialize.
    assert all(v._value is not None for v in loaded.variables)
    assert not global_state.get_global_attribute("uninitialized_variables", [])


def test_a_loaded_model_runs_like_the_saved_one(tmp_path):
    model = make_tiny_muse_backbone()
    model.save_to_preset(tmp_path / "preset")
    loaded = MuseBackbone.from_preset(tmp_path / "preset")
    inputs = {
        "token_ids": np.zeros((2, 16), "int32"),
        "text_embeddings": np.ones((2, 3, 16), "float32"),
        "text_padding_mask": np.ones((2, 3), bool),
    }
    np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-6)


def test_a_failed_load_leaves_no_uninitialized_variables(tmp_path):
    make_vqgan().save_to_preset(tmp_path / "preset")
    weights = tmp_path / "preset" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:2000])
    with pytest.raises(ValueError, match="could not be loaded"):
        VQGAN.from_preset(tmp_path / "preset")
    assert not global_state.get_global_attribute("uninitialized_variables", [])
    # The process stays usable: a fresh model builds and runs.
    assert make_vqgan().encode(np.zeros((1, 8, 8, 3), "float32")).shape == (1, 2, 2)


def test_under_a_distribution_variables_are_initialized_normally(tmp_path, initializer_calls):
    make_tiny_muse_backbone().save_to_preset(tmp_path / "preset")
    initializer_calls.clear()
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        loaded = MuseBackbone.from_preset(tmp_path / "preset")
    finally:
        keras.distribution.set_distribution(None)
    assert {v.path for v in loaded.weights} <= set(initializer_calls)


def test_build_errors_propagate_and_the_registry_is_restored():
    def build():
        keras.Variable(initializer="zeros", shape=(2,))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        load_with_deferred_init(build, load=lambda model: None)
    assert not global_state.get_global_attribute("uninitialized_variables", [])
