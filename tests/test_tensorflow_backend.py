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
@pytest.mark.parametrize(
    "selection",
    [
        # Every backend-agnostic layer: seconds.
        "not vqgan_training",
        # The VQGAN train steps (the GAN's two optimizers through
        # tf.GradientTape, decoder fine-tuning) add two and a half minutes:
        # slow runs only.
        pytest.param(
            "vqgan_training and not adaptive and not perceptual and not evaluate and not bad_compile",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_layers_and_vqgan_training_on_tensorflow(selection):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-x",
        os.path.join(HERE, "layers"),
        os.path.join(HERE, "models", "vqgan", "test_vqgan_training.py"),
        "-k", selection,
    ]
    result = subprocess.run(cmd, env=env, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") == "tensorflow",
    reason="already running on TensorFlow",
)
@pytest.mark.parametrize(
    "selection",
    [
        "learns",
        pytest.param("same_seed or full_condition or precomputed or vqgan", marks=pytest.mark.slow),
    ],
)
def test_muse_training_on_tensorflow(selection):
    # The same train step (masking, condition dropout, joint text encoder)
    # through tf.GradientTape. Seeds, full dropout, precomputed embeddings and
    # an attached VQGAN add three minutes: slow runs only.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-x",
        os.path.join(HERE, "models", "muse", "test_muse_text_to_image.py"),
        "-k", selection,
    ]
    result = subprocess.run(cmd, env=env, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") == "tensorflow",
    reason="already running on TensorFlow",
)
def test_sampler_on_tensorflow():
    # Schedule counts, fixed tokens, seeds and the sampling distribution,
    # with TensorFlow's own (Philox) random stream.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", os.path.join(HERE, "samplers")]
    result = subprocess.run(cmd, env=env, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


_GREEDY = """
import json, sys, warnings
warnings.simplefilter("ignore")
from keras_muse.models import MuseTextToImage
task = MuseTextToImage.from_preset(sys.argv[1])
out = task.generate(["a red circle on the left", "two blue squares"], num_steps=4, seed=0,
                    top_k=1, choice_temperature=0.0, guidance_scale=2.0, return_tokens=True)
print(json.dumps(out["token_ids"].tolist()))
"""


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") == "tensorflow",
    reason="already running on TensorFlow",
)
@pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")
@pytest.mark.slow
def test_greedy_generation_gives_the_same_tokens_on_jax_and_tensorflow(tmp_path):
    # With top_k=1 and no confidence noise the sampler is deterministic, so
    # the backends must agree token for token (with noise, their RNG streams
    # differ; test_sampler_on_tensorflow checks the distributions instead).
    # Two processes compiling the whole sampler: slow runs only. The default
    # run keeps the parts: backbone logits and VQGAN ids agree across
    # backends (tests/models), and the sampler's schedule and distributions
    # hold on TensorFlow (test_sampler_on_tensorflow).
    import json

    from helpers import make_tiny_muse_backbone
    from helpers import make_tiny_preprocessor
    from helpers import make_tiny_text_encoder
    from helpers import make_vqgan
    from keras_muse.models import MuseTextToImage

    backbone = make_tiny_muse_backbone()
    backbone.token_embedding.embeddings.assign(backbone.token_embedding.embeddings * 10.0)
    task = MuseTextToImage(
        backbone, text_encoder=make_tiny_text_encoder(make_tiny_preprocessor()), vqgan=make_vqgan(factor=4)
    )
    task.save_to_preset(tmp_path / "preset")
    tokens = {}
    for backend in ("jax", "tensorflow"):
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run(
            [sys.executable, "-c", _GREEDY, str(tmp_path / "preset")], env=env,
            cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        tokens[backend] = json.loads(result.stdout.strip().splitlines()[-1])
    assert tokens["jax"] == tokens["tensorflow"]
    assert len({t for row in tokens["jax"] for r in row for t in r}) > 1
