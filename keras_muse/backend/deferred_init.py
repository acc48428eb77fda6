"""Build a model without running its initializers, for weights about to be loaded.

Under JAX every random initializer of a new shape is its own compiled XLA
program. Loading the shipped preset used to build ~100 of them, run each once
and throw the result away when the preset's weights were assigned: about two
thirds of `from_preset`'s time. Here variables are created *uninitialized*
(a `keras.StatelessScope(initialize_variables=False)`: shape, dtype and
initializer recorded, no value), the weights are assigned, and only the
model's variables the weights file did not cover (metric counters, seed
states) run their initializer. Variables built on the way but not tracked by
the model (keras-hub's T5 decoder, which `MuseTextEncoder` drops) stay
without a value: nothing reachable from the model reads them.

Only JAX without a `keras.distribution` takes this path: a JAX variable
accepts its first value through `assign`, while TF and torch variables need
their initializer to create the backend variable, and a distributed variable
needs its layout set by `_initialize`. Everywhere else `load_with_deferred_init`
builds and loads as before.

Example:

```python
model = load_with_deferred_init(
    build=lambda: Backbone.from_preset(path, load_weights=False),
    load=lambda model: model.load_weights(os.path.join(path, "model.weights.h5")),
)
```
"""

import keras
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import StatelessScope
from keras.src.backend.common.stateless_scope import in_stateless_scope

_REGISTRY = "uninitialized_variables"


def deferred_init_available():
    return (
        keras.backend.backend() == "jax"
        and keras.distribution.distribution() is None
        and not in_stateless_scope()
    )


def load_with_deferred_init(build, load):
    """Returns `build()` with its weights set by `load(model)`.

    Args:
        build: callable returning the model, built (variables created).
        load: callable assigning the weights to every variable it covers.
    """
    if not deferred_init_available():
        model = build()
        load(model)
        return model
    before = list(global_state.get_global_attribute(_REGISTRY, [], set_to_default=True))
    try:
        with StatelessScope(initialize_variables=False):
            model = build()
        created = global_state.get_global_attribute(_REGISTRY, [])[len(before):]
        load(model)
    except BaseException:
        # Leave no half-built variables behind for a later scope to initialize.
        global_state.set_global_attribute(_REGISTRY, before)
        raise
    global_state.set_global_attribute(_REGISTRY, before)
    tracked = {id(v) for v in model.variables}
    for variable in created:
        if variable._value is None and id(variable) in tracked:
            variable._deferred_initialize()
    return model
