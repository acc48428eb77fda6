"""`fit` and `generate` under DataParallel and ModelParallel on 8 devices.

Needs 8 devices, which on a CPU means `XLA_FLAGS=--xla_force_host_platform_device_count=8`
set before JAX starts: `tests/test_multi_device.py` runs this file in such a
subprocess; in a plain run every test here skips itself.

Each run starts from the same initial weights (copied from the single-device
model) and the same seed and data, so the masks, condition dropout and batch
order are the same: the losses may differ only by floating-point reduction
order. The tiny models (muse_tiny with one layer: hidden 32, MLP 64, text 16;
T5 16/32) have widths that divide the mesh axes (model 4, batch 2).
"""

import contextlib
import json
import os

import keras
import numpy as np
import pytest

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_text_encoder
from helpers import make_vqgan
from keras_muse import distribution as muse_distribution
from keras_muse.datasets import shapes
from keras_muse.models import MuseTextToImage

NUM_DEVICES = 8
_ENOUGH = keras.config.backend() == "jax" and len(keras.distribution.list_devices()) >= NUM_DEVICES
pytestmark = [
    pytest.mark.skipif(
        not _ENOUGH,
        reason=f"needs the JAX backend and {NUM_DEVICES} devices "
        f"(XLA_FLAGS=--xla_force_host_platform_device_count={NUM_DEVICES}; tests/test_multi_device.py)",
    ),
    pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning"),
]

N, BATCH, EPOCHS = 16, 8, 2  # 4 steps
LOSS_ATOL = 1e-5
# Filled by the tests and printed at the end of the module (the numbers the
# report quotes): {name: per-step losses}.
LOSSES = {}


class _StepLosses(keras.callbacks.Callback):
    """Per-step losses from the running means Keras reports."""

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_epoch_begin(self, epoch, logs=None):
        self._mean, self._k = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        self._k += 1
        self.losses.append(self._k * mean - (self._k - 1) * self._mean)
        self._mean = mean


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    ids = ((np.arange(16)[None, :] * 3 + (np.arange(N)[:, None] % 4) * 7) % 64).astype("int32")
    embeddings = rng.normal(size=(N, 8, 16)).astype("float32")
    mask = np.ones((N, 8), bool)
    mask[:, 6:] = False
    unconditional = (rng.normal(size=(8, 16)).astype("float32"), np.arange(8) < 2)
    return ids.reshape(N, 4, 4), embeddings, mask, unconditional


def _task(unconditional, text_encoder=None, vqgan=None):
    task = MuseTextToImage(
        make_tiny_muse_backbone(num_layers=1), text_encoder=text_encoder, vqgan=vqgan, seed=0,
        trainable_text_encoder=text_encoder is not None,
    )
    task.compile(optimizer=keras.optimizers.Adam(3e-3), unconditional_text_embeddings=unconditional)
    return task


def _train(distribution, data, initial_weights=None):
    """Builds the task under `distribution` (None: one device), fits it
    and returns (task, per-step losses)."""
    ids, embeddings, mask, unconditional = data
    with _scope(distribution):
        task = _task(unconditional)
        if initial_weights is not None:
            task.set_weights(initial_weights)
        recorder = _StepLosses()
        task.fit((ids, (embeddings, mask)), batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=[recorder])
    return task, recorder.losses


def _scope(distribution):
    return distribution.scope() if distribution is not None else contextlib.nullcontext()


@pytest.fixture(scope="module", autouse=True)
def loss_table():
    """After the module: the loss trajectories side by side (seen with
    `pytest -s`), and as JSON where MUSE_DISTRIBUTION_REPORT names a file."""
    yield
    reference = LOSSES.get("single device")
    for name, losses in LOSSES.items():
        diff = ""
        if reference is not None and "captions" not in name:
            diff = f"  max |diff| vs single: {np.max(np.abs(np.subtract(losses, reference))):.2e}"
        print(f"\n{name:36s} " + " ".join(f"{x:.7f}" for x in losses) + diff, end="")
    if os.environ.get("MUSE_DISTRIBUTION_REPORT"):
        with open(os.environ["MUSE_DISTRIBUTION_REPORT"], "w") as f:
            json.dump(LOSSES, f, indent=1)


@pytest.fixture(scope="module")
def single_device(data):
    keras.utils.set_random_seed(0)
    task = _task(data[3])
    initial = task.get_weights()
    task, losses = _train(None, data, initial)
    LOSSES["single device"] = losses
    return initial, losses, task


def _spec(variable):
    return tuple(variable.value.sharding.spec)


def _by_path(task):
    return {v.path: v for v in task.backbone.weights}


def _shard_shape(shape, spec, mesh_sizes):
    return tuple(n // (mesh_sizes[a] if a else 1) for n, a in zip(shape, spec))


def test_model_parallel_fit_matches_single_device_and_shards_the_kernels(data, single_device):
    initial, reference, _ = single_device
    dist = muse_distribution.model_parallel(MuseTextToImage, mesh_shape=(2, 4))
    assert isinstance(dist, keras.distribution.ModelParallel)
    task, losses = _train(dist, data, initial)
    LOSSES["ModelParallel 2x4"] = losses
    np.testing.assert_allclose(losses, reference, atol=LOSS_ATOL, rtol=0)
    assert losses[-1] < losses[0]  # it trained

    # The layout map is what the arrays carry, after training too.
    weights = _by_path(task)
    block = "transformer_layer_0"
    for path, expected in {
        f"{block}/self_attention/query/kernel": ("batch", "model"),
        f"{block}/cross_attention/value/kernel": ("batch", "model"),
        f"{block}/self_attention/output/kernel": ("model", "batch"),
        f"{block}/mlp_in/kernel": ("batch", "model"),
        f"{block}/mlp_out/kernel": ("model", "batch"),
        "token_embedding/embeddings": (None, "model"),
        "text_projection/kernel": ("batch", "model"),
        "head_dense/kernel": ("batch", "model"),
    }.items():
        variable = weights[path]
        assert _spec(variable) == expected, (path, _spec(variable))
        # Each device holds its slice only.
        shard = variable.value.addressable_shards[0].data.shape
        assert shard == _shard_shape(variable.shape, expected, {"batch": 2, "model": 4}), (path, shard)
    # Norms and biases are replicated; Adam's slots follow their kernel.
    assert all(a is None for a in _spec(weights[f"{block}/mlp_norm/gamma"]))
    assert all(a is None for a in _spec(weights[f"{block}/mlp_in/bias"]))
    kernel = weights[f"{block}/mlp_in/kernel"]
    slots = [v for v in task.optimizer.variables if v.shape == kernel.shape and "mlp_in" in v.path]
    assert slots and all(_spec(s) == _spec(kernel) for s in slots)


def test_data_parallel_fit_matches_single_device(data, single_device):
    initial, reference, _ = single_device
    dist = muse_distribution.data_parallel()
    assert isinstance(dist, keras.distribution.DataParallel)
    assert dist.device_mesh.shape == (NUM_DEVICES,)
    task, losses = _train(dist, data, initial)
    LOSSES["DataParallel 8"] = losses
    np.testing.assert_allclose(losses, reference, atol=LOSS_ATOL, rtol=0)
    kernel = _by_path(task)["transformer_layer_0/mlp_in/kernel"]
    assert kernel.value.sharding.is_fully_replicated
    assert len(kernel.value.sharding.device_set) == NUM_DEVICES


def test_generate_under_model_parallel_gives_the_single_device_tokens(data, single_device):
    # The trained single-device weights, copied into a sharded task: with the
    # same seed, sampling must pick the same tokens (JAX's threefry keys give
    # the same random bits whatever the sharding).
    _, _, trained = single_device
    ids, embeddings, mask, unconditional = data
    prompts = {"text_embeddings": embeddings[:4], "text_padding_mask": mask[:4]}
    kwargs = dict(num_steps=4, seed=3, guidance_scale=2.0, return_tokens=True)
    reference = np.asarray(trained.generate(prompts, **kwargs)["token_ids"])
    with muse_distribution.model_parallel(MuseTextToImage, mesh_shape=(2, 4)).scope():
        task = _task(unconditional)
        task.set_weights(trained.get_weights())
        tokens = np.asarray(task.generate(prompts, **kwargs)["token_ids"])
    assert tokens.shape == (4, 4, 4)
    np.testing.assert_array_equal(tokens, reference)
    assert len(np.unique(reference)) > 1


@pytest.mark.slow
def test_captions_trainable_text_encoder_and_vqgan_under_model_parallel(preprocessor):
    # The full task: captions tokenized in the input pipeline, the T5 encoder
    # trained jointly (its kernels sharded too), a VQGAN decoding the samples.
    _, captions, _ = shapes.make_arrays(N, seed=3)
    ids = ((np.arange(16)[None, :] * 3 + (np.arange(N)[:, None] % 4) * 7) % 64).astype("int32")
    ids = ids.reshape(N, 4, 4)
    runs = {}
    initial = None
    for name, dist in (
        ("single", None),
        ("model_parallel", muse_distribution.model_parallel(MuseTextToImage, mesh_shape=(2, 4))),
        ("data_parallel", muse_distribution.data_parallel()),
    ):
        with _scope(dist):
            task = _task(None, text_encoder=make_tiny_text_encoder(preprocessor), vqgan=make_vqgan(factor=4))
            if initial is None:
                initial = task.get_weights()
            task.set_weights(initial)
            recorder = _StepLosses()
            task.fit((ids, list(captions)), batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=[recorder])
            out = task.generate(["a red circle", "two blue squares"] * 2, num_steps=4, seed=0, return_tokens=True)
            runs[name] = (recorder.losses, np.asarray(out["token_ids"]), out["images"], task)
    LOSSES["captions + T5: single"] = runs["single"][0]
    LOSSES["captions + T5: ModelParallel 2x4"] = runs["model_parallel"][0]
    LOSSES["captions + T5: DataParallel 8"] = runs["data_parallel"][0]
    for name in ("model_parallel", "data_parallel"):
        np.testing.assert_allclose(runs[name][0], runs["single"][0], atol=LOSS_ATOL, rtol=0)
        np.testing.assert_array_equal(runs[name][1], runs["single"][1])
        assert runs[name][2].shape == (4, 16, 16, 3) and runs[name][2].dtype == np.uint8
    encoder = {v.path: v for v in runs["model_parallel"][3].text_encoder.weights}
    assert _spec(encoder["transformer_encoder_layer_0/self_attention/query_projector/kernel"]) == ("batch", "model")
    assert _spec(encoder["transformer_encoder_layer_0/output_projector/kernel"]) == ("model", "batch")
    conv = {v.path: v for v in runs["model_parallel"][3].vqgan.weights}["decoder/conv_in/kernel"]
    assert conv.value.sharding.is_fully_replicated and len(conv.value.sharding.device_set) == NUM_DEVICES


def test_creating_a_model_that_the_mesh_does_not_divide_names_the_variable():
    # The check runs as each variable is created, before JAX places it.
    with muse_distribution.model_parallel(MuseTextToImage, mesh_shape=(2, 4)).scope():
        with pytest.raises(ValueError, match=r"'token_embedding/embeddings' with shape \(65, 30\)"):
            make_tiny_muse_backbone(hidden_dim=30, num_heads=2, mlp_dim=60)
