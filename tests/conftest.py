"""Test-session settings shared by every test module."""

import os
import tempfile

# CLI runs in subprocesses turn on the persistent compilation cache: keep it
# out of the home directory.
os.environ.setdefault("KERAS_MUSE_CACHE_DIR", os.path.join(tempfile.gettempdir(), "keras_muse_test_xla_cache"))

# Most of the suite's time is XLA compiling the same tiny train steps and
# samplers again: in every test that builds a fresh task, in each xdist
# worker and in every subprocess (guides, 8-device runs). JAX's persistent
# cache (read from these variables when JAX starts, here and in the children)
# compiles each distinct program once per machine. A hit runs the identical
# executable, so no result depends on it; tests of the cache itself set their
# own directory.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["KERAS_MUSE_CACHE_DIR"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Tests that run whole pytest sessions (or several Python processes) of
# their own: minutes each. Collected first, so that under pytest-xdist
# (`-n auto`) the workers start on them and the short tests fill in around
# them, instead of one worker finishing alone on a long tail.
_LONG_FIRST = (
    "test_tensorflow_backend.py",
    "test_multi_device.py",
    "test_benchmarks_and_guides.py",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        return _LONG_FIRST.index(name) if name in _LONG_FIRST else len(_LONG_FIRST)

    items.sort(key=rank)  # stable: the order within each group is kept
