"""Compile a function of a model's state once per input shape, on any backend.

`compile_function(model, fn)` returns a callable that runs `fn(*tensors)` as
one compiled program: `jax.jit` under JAX (the model's variables are passed
as arguments through a `keras.StatelessScope`, so later weight updates are
seen without recompiling), `tf.function` under TensorFlow, eager under torch.
keras-hub's `make_generate_function` does the same for its samplers.
"""

import keras
from keras.src.backend.common.stateless_scope import StatelessScope

_BACKEND = keras.backend.backend()


def compile_function(model, fn, jit_compile=True):
    if _BACKEND == "jax":
        import jax

        variables = list(model.variables)

        @jax.jit
        def pure(values, *args):
            with StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        def run(*args):
            return pure([v.value for v in variables], *args)

        return run
    if _BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)
    return fn


def default_cache_dir():
    """`$KERAS_MUSE_CACHE_DIR`, else `$XDG_CACHE_HOME/keras_muse/xla`
    (`~/.cache/keras_muse/xla`)."""
    import os

    explicit = os.environ.get("KERAS_MUSE_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_muse", "xla")


def enable_compilation_cache(path=None, min_compile_seconds=0.5):
    """Keeps compiled programs on disk, so the second process that generates
    with a preset skips XLA compilation (JAX's persistent compilation cache).

    Returns the cache directory, or None where there is nothing to enable
    (TensorFlow and torch backends) or the directory cannot be created (a
    read-only home): the cache is an optimization, never a failure.

    Example:
    ```python
    from keras_muse.backend import enable_compilation_cache
    enable_compilation_cache()          # ~/.cache/keras_muse/xla
    ```
    """
    if _BACKEND != "jax":
        return None
    import os

    import jax

    path = path or default_cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    # Programs that compile in under `min_compile_seconds` are not worth a
    # disk round trip; the sampler (seconds) always is.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
