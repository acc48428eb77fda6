"""The persistent compilation cache the CLI turns on (JAX backend)."""

import os
import subprocess
import sys

import keras
import pytest

from keras_muse.cli import build_parser

_PROGRAM = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np
from keras_muse.backend import enable_compilation_cache
from keras_muse.backend import compile_function
from keras_muse.models import MuseBackbone
import keras
keras.utils.set_random_seed(0)
path = enable_compilation_cache(sys.argv[1], min_compile_seconds=0.0)
assert path == sys.argv[1], path
backbone = MuseBackbone(**MuseBackbone.config_presets["muse_tiny"]["config"])
fn = compile_function(backbone, lambda ids, emb, mask: backbone({"token_ids": ids, "text_embeddings": emb,
                                                                  "text_padding_mask": mask}))
out = fn(np.zeros((1, 16), "int32"), np.zeros((1, 8, 16), "float32"), np.ones((1, 8), bool))
print(float(np.asarray(out).sum()))
"""


@pytest.mark.skipif(keras.config.backend() != "jax", reason="JAX's persistent cache")
def test_compiled_programs_are_written_and_reused(tmp_path):
    cache = str(tmp_path / "xla")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    first = subprocess.run([sys.executable, "-c", _PROGRAM, cache], env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    entries = sorted(os.listdir(cache))
    assert entries, "nothing was written to the compilation cache"
    second = subprocess.run([sys.executable, "-c", _PROGRAM, cache], env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    # Same program, same result, read back: no new entries.
    assert sorted(os.listdir(cache)) == entries
    assert first.stdout.strip().splitlines()[-1] == second.stdout.strip().splitlines()[-1]


def test_cache_dir_setting_and_cli_switch(tmp_path, monkeypatch):
    from keras_muse.backend.compile import default_cache_dir

    monkeypatch.setenv("KERAS_MUSE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("KERAS_MUSE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "x"), "keras_muse", "xla")
    assert build_parser().parse_args(["generate", "a red circle"]).compile_cache is True
    assert build_parser().parse_args(["--no-compile-cache", "generate", "a red circle"]).compile_cache is False
