"""The backend-agnostic layers and the VQGAN train step, on TensorFlow.

Each backend needs its own process (Keras picks it at import), so this runs a
pytest subprocess with KERAS_BACKEND=tensorflow over those tests.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") == "tensorflow",
    reason="already running on TensorFlow",
)
def test_layers_and_vqgan_training_on_tensorflow():
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-x",
        os.path.join(HERE, "layers"),
        os.path.join(HERE, "models", "vqgan", "test_vqgan_training.py"),
        "-k", "not adaptive and not perceptual and not evaluate and not bad_compile",
    ]
    result = subprocess.run(cmd, env=env, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") == "tensorflow",
    reason="already running on TensorFlow",
)
def test_muse_training_on_tensorflow():
    # The same train step (masking, condition dropout, joint text encoder,
    # precomputed embeddings, attached VQGAN) through tf.GradientTape.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-x",
        os.path.join(HERE, "models", "muse", "test_muse_text_to_image.py"),
        "-k", "learns or same_seed or precomputed or vqgan or full_condition",
    ]
    result = subprocess.run(cmd, env=env, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
