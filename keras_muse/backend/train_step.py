"""Gradients for custom train steps on JAX, TensorFlow and torch.

Models write their train step once, as plain stateful Keras code:

```python
def train_step(self, *args):
    return run_train_step(self, args, self._train_body)

def _train_body(self, data):
    loss, aux, grads = variable_grads(lambda: self._loss(data), variables)
    self.optimizer.apply(grads, variables)
    return logs
```

Under JAX, Keras' trainer calls `train_step(state, data)` inside `jax.jit` and
expects the new state back. `run_train_step` binds every model variable to its
traced value in a `keras.StatelessScope`, so the stateful body (layer calls,
`optimizer.apply`, metric updates, seed generators) reads and writes the scope;
the new state is read back from it. `variable_grads` re-binds the variables it
differentiates to tracers in a nested scope and carries any other updates made
while computing the loss (statistics, seeds) back to the enclosing scope.
Under TensorFlow and torch the body runs as is, with a tape / autograd.
"""

import keras
from keras.src.backend.common.stateless_scope import StatelessScope
from keras.src.backend.common.stateless_scope import get_stateless_scope

_BACKEND = keras.backend.backend()


def _state_groups(model):
    optimizer_variables = model.optimizer.variables if model.optimizer else []
    return (
        model.trainable_variables,
        model.non_trainable_variables,
        optimizer_variables,
        model.metrics_variables,
    )


def _run_step(groups, args, body):
    if _BACKEND != "jax":
        (data,) = args
        return body(data)
    state, data = args
    mapping = []
    for variables, values in zip(groups, state):
        mapping.extend(zip(variables, values))
    with StatelessScope(state_mapping=mapping) as scope:
        logs = body(data)
    new_state = tuple(
        [scope.get_current_value(v) for v in variables] for variables in groups
    )
    return logs, new_state


def run_train_step(model, args, body):
    """Runs `body(data) -> logs` as `model`'s train step on any backend."""
    return _run_step(_state_groups(model), args, body)


def run_test_step(model, args, body):
    """Runs `body(data) -> logs` as `model`'s test step on any backend."""
    groups = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.metrics_variables,
    )
    return _run_step(groups, args, body)


def _jax_nested_scope(overrides):
    """A scope that sees the enclosing scope's values, with `overrides`."""
    outer = get_stateless_scope()
    scope = StatelessScope()
    # StatelessScope keeps values by variable id; copying the enclosing
    # mapping is what lets a nested scope read state bound by `run_train_step`.
    base = dict(outer.state_mapping) if outer is not None else {}
    scope.state_mapping = dict(base)
    scope.state_mapping.update(overrides)
    return outer, base, scope


def variable_grads(loss_fn, variables):
    """Differentiates `loss_fn() -> (loss, aux)` with respect to `variables`.

    Returns `(loss, aux, grads)` with `grads` aligned with `variables`.
    """
    variables = list(variables)
    if _BACKEND == "jax":
        import jax

        outer = get_stateless_scope()
        if outer is None:
            values = [v.value for v in variables]
            base = {}
        else:
            values = [
                outer.get_current_value(v)
                if outer.get_current_value(v) is not None
                else v.value
                for v in variables
            ]
            base = dict(outer.state_mapping)
        var_ids = {id(v) for v in variables}

        def pure(vals):
            _, _, scope = _jax_nested_scope(
                {id(v): val for v, val in zip(variables, vals)}
            )
            with scope:
                loss, aux = loss_fn()
            changed = {
                k: val
                for k, val in scope.state_mapping.items()
                if k not in var_ids and (k not in base or val is not base[k])
            }
            return loss, (aux, changed)

        (loss, (aux, changed)), grads = jax.value_and_grad(pure, has_aux=True)(
            values
        )
        if outer is not None:
            outer.state_mapping.update(changed)
        return loss, aux, grads
    if _BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, aux = loss_fn()
        grads = tape.gradient(loss, variables)
        grads = [
            g if g is not None else tf.zeros_like(v.value)
            for g, v in zip(grads, variables)
        ]
        return loss, aux, grads
    if _BACKEND == "torch":
        import torch

        loss, aux = loss_fn()
        grads = torch.autograd.grad(
            loss, [v.value for v in variables], allow_unused=True
        )
        grads = [
            g if g is not None else torch.zeros_like(v.value)
            for g, v in zip(grads, variables)
        ]
        return loss, aux, grads
    raise NotImplementedError(f"Backend {_BACKEND!r} is not supported.")


def input_grads(fn, inputs, create_graph=True):
    """Gradients of the scalar `fn(*inputs)` with respect to tensors `inputs`.

    Differentiable itself (for penalties such as R1 that enter a loss). Any
    variable updates made by `fn` are discarded: it is meant for pure
    functions of the inputs (a discriminator's forward pass).
    """
    inputs = list(inputs)
    if _BACKEND == "jax":
        import jax

        def pure(*xs):
            _, _, scope = _jax_nested_scope({})
            with scope:
                return fn(*xs)

        return list(jax.grad(pure, argnums=tuple(range(len(inputs))))(*inputs))
    if _BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            for x in inputs:
                tape.watch(x)
            out = fn(*inputs)
        return list(tape.gradient(out, inputs))
    if _BACKEND == "torch":
        import torch

        inputs = [x if x.requires_grad else x.detach().requires_grad_(True) for x in inputs]
        out = fn(*inputs)
        return list(torch.autograd.grad(out, inputs, create_graph=create_graph))
    raise NotImplementedError(f"Backend {_BACKEND!r} is not supported.")
