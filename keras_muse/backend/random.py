"""Stateless random numbers from a seed tensor, for compiled loops.

`keras.random` takes an int or a `SeedGenerator`; a `SeedGenerator` used inside
a `fori_loop` body leaks a tracer under JAX, and TensorFlow's `draw_seed`
refuses tensors. A sampler needs fresh noise at every step of one compiled
loop, reproducible for a seed: `uniform(shape, seed, step)` derives the step's
key from an int32 `[2]` seed tensor and the (traced) step index with each
backend's own stateless generator. The streams differ between backends (JAX's
threefry vs TensorFlow's Philox) and, on TensorFlow, between XLA-compiled and
eager code; the same seed gives the same samples on a backend's compiled
sampler, and the same distribution everywhere.
"""

import keras

_BACKEND = keras.backend.backend()


def make_seed(seed):
    """An int seed -> the int32 `[2]` seed tensor the functions here take."""
    import numpy as np

    seed = int(seed) & 0x7FFFFFFF
    return keras.ops.convert_to_tensor(np.array([seed, 0], "int32"))


def uniform(shape, seed, step=0, minval=0.0, maxval=1.0):
    """float32 uniform noise in [minval, maxval) for `(seed, step)`."""
    if _BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        seed = jnp.asarray(seed, jnp.uint32)
        key = jax.random.PRNGKey(seed[0])
        key = jax.random.fold_in(key, seed[1])
        key = jax.random.fold_in(key, jnp.asarray(step, jnp.uint32))
        return jax.random.uniform(key, shape, jnp.float32, minval, maxval)
    if _BACKEND == "tensorflow":
        import tensorflow as tf

        seed = tf.cast(seed, tf.int32)
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int32), alg="philox")
        # A fixed algorithm, so the stream does not follow TF's default. TF's
        # XLA and non-XLA kernels still give different streams: the samplers
        # always run compiled, so a seed means one result.
        return tf.random.stateless_uniform(
            shape, seed=seed, minval=minval, maxval=maxval, dtype=tf.float32, alg="philox"
        )
    if _BACKEND == "torch":
        import torch

        s = [int(v) for v in keras.ops.convert_to_numpy(seed)]
        generator = torch.Generator().manual_seed((s[0] * 1_000_003 + s[1]) * 1_000_003 + int(step))
        value = torch.rand(tuple(shape), generator=generator, dtype=torch.float32)
        return keras.ops.convert_to_tensor(value * (maxval - minval) + minval)
    raise NotImplementedError(f"Backend {_BACKEND!r} is not supported.")


def gumbel(shape, seed, step=0):
    """Standard Gumbel noise -log(-log(u)) for `(seed, step)`."""
    u = uniform(shape, seed, step, minval=1e-20, maxval=1.0)
    return -keras.ops.log(-keras.ops.log(u))
