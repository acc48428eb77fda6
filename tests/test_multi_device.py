"""tests/distribution/ on 8 virtual CPU devices.

JAX fixes its device count when it starts, so the 8 devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) need a fresh process:
this runs a pytest subprocess over tests/distribution/ with that flag. In the
main process those tests skip themselves (one device).
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(marker):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip(),
    }
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-x", "-rs", "-s", "-m", marker,
        os.path.join(HERE, "distribution", "test_distributed_training.py"),
    ]
    result = subprocess.run(cmd, env=env, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=1200)
    output = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    # Guard against the subprocess silently skipping (e.g. too few devices).
    assert "skipped" not in result.stdout.splitlines()[-1], output
    assert " passed" in result.stdout.splitlines()[-1], output


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") != "jax", reason="keras.distribution needs the JAX backend"
)
def test_distribution_on_8_devices():
    _run("not slow")


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") != "jax", reason="keras.distribution needs the JAX backend"
)
def test_distribution_on_8_devices_slow():
    _run("slow")


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") != "jax", reason="keras.distribution needs the JAX backend"
)
def test_distributed_training_guide_runs(tmp_path):
    # The guide sets the 8-device flag itself (before JAX starts).
    env = {**os.environ, "KERAS_BACKEND": "jax", "GUIDE_STEPS": "4", "GUIDE_OUT": str(tmp_path)}
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, os.path.join(os.path.dirname(HERE), "guides", "distributed_training.py")],
        env=env, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "8 devices" in result.stdout and "P('batch', 'model')" in result.stdout
    assert "weights equal: True" in result.stdout
    assert (tmp_path / "guide_distributed_samples.png").exists()
