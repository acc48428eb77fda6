"""JAX -> TensorFlow function conversion with the weights as variables.

The one backend-specific piece of the export (JAX and TensorFlow imports):
keras.ops cannot produce a TensorFlow graph from the JAX backend, `jax2tf`
can. It is `keras.export.ExportArchive`'s conversion (a stateless trace
through `keras.StatelessScope`, `jax2tf.convert` with native serialization
and a symbolic batch dimension, Keras variables turned into `tf.Variable`s
passed as arguments), minus two things a serving graph must not have:
Keras' endpoint assigns every non-trainable variable back after each call
(for a frozen T5 and VQGAN, all of them: a copy of the weights per
request), and a variable the trace reads without a mapping would be baked
into the program as a constant. Here nothing is written, and an unmapped
read is an error.
"""

import inspect

import keras


class _RecordingScope(keras.StatelessScope):
    """A StatelessScope that records reads of variables it does not map."""

    def __init__(self, state_mapping):
        super().__init__(state_mapping=state_mapping)
        self.unmapped = []

    def get_current_value(self, variable):
        value = super().get_current_value(variable)
        if value is None:
            self.unmapped.append(variable.path)
        return value


class ConvertedWeights:
    """The variables of `layers` as `tf.Variable`s, and converted functions
    that read them.

    Args:
        layers: built Keras layers whose variables the functions may read
            (duplicates and shared variables are kept once).

    Example:
    ```python
    weights = ConvertedWeights([vqgan.quantizer, vqgan.decoder])
    decode = weights.convert(lambda ids: vqgan.decode_step(ids),
                             [tf.TensorSpec((None, 16, 16), tf.int32)], ("cpu",), names=["token_ids"])
    root = tf.Module(); root.weights = weights.tf_variables; root.decode = decode
    ```
    """

    def __init__(self, layers):
        import tensorflow as tf

        self.variables, seen = [], set()
        for layer in layers:
            if not layer.built:
                raise ValueError(f"Layer {layer.name!r} must be built before export.")
            for variable in layer.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    self.variables.append(variable)
        self.tf_variables = [
            tf.Variable(keras.ops.convert_to_numpy(v.value), dtype=v.dtype, trainable=False,
                        name=v.path.replace("/", "_"))
            for v in self.variables
        ]

    def convert(self, fn, input_signature, platforms, names=None):
        """A `tf.function` over `input_signature` running `fn` (traced once on
        JAX; `None` dimensions stay symbolic)."""
        import tensorflow as tf
        from jax.experimental import jax2tf

        variables = self.variables

        def stateless(values, *args):
            scope = _RecordingScope(list(zip(variables, values)))
            with scope:
                outputs = fn(*args)
            if scope.unmapped:
                raise ValueError(
                    "The exported function reads variables that are not exported (they would be "
                    f"baked into the program as constants): {sorted(set(scope.unmapped))[:10]}"
                )
            return outputs

        def poly(spec, batch_ok=True):
            dims = [("batch" if batch_ok and i == 0 else None) if d is None else str(d)
                    for i, d in enumerate(spec.shape)]
            if None in dims:
                raise ValueError(f"Only the leading (batch) dimension may be unknown. Received {spec}.")
            return f"({', '.join(dims)})" if dims else "()"

        converted = jax2tf.convert(
            stateless,
            polymorphic_shapes=[[poly(v, False) for v in self.tf_variables]]
            + [poly(s) for s in input_signature],
            native_serialization_platforms=tuple(platforms),
            with_gradient=False,
        )
        tf_variables = self.tf_variables

        def call(*args):
            return converted(list(tf_variables), *args)

        names = names or [f"arg_{i}" for i in range(len(input_signature))]
        call.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
        )
        return tf.function(call, input_signature=input_signature, autograph=False)
