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
