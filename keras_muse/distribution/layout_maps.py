"""`keras.distribution.LayoutMap`s for the Muse models (model parallelism).

A layout map says, for every variable path (regex keys, `[v.path for v in
model.weights]`), how the variable is split over a `DeviceMesh` with a model
axis (default "model") and a data axis (default "batch"). Variables that match
no rule are replicated. The rules follow keras-hub's `get_layout_map`
convention (Gemma, Llama): Megatron-style tensor parallelism on the model
axis, and the other dimension of each large kernel split over the data axis
(FSDP-like), so a kernel and its optimizer slots are spread over all devices.

Transformers (`MuseBackbone`, `MuseSuperResBackbone`, the T5 text encoder):

| kernel                                  | shape          | layout           |
|-----------------------------------------|----------------|------------------|
| attention query / key / value           | [d, heads*k]   | (data, model)    |
| attention output                        | [heads*k, d]   | (model, data)    |
| MLP in (T5: input + gate)               | [d, mlp]       | (data, model)    |
| MLP out                                 | [mlp, d]       | (model, data)    |
| text projection, logits head dense      | [d_in, d]      | (data, model)    |
| low-res token embedding (super-res)     | [vocab, d]     | (model, data)    |
| token embedding (Muse and T5)           | [vocab, d]     | (None, model)    |
| untied output embedding                 | [d, vocab]     | (model, None)    |

Column-parallel in, row-parallel out: each head group and each slice of the
MLP lives on one model shard, and a block needs one all-reduce per sublayer.
Norms, biases, 2-D position tables and T5's relative-position bias are small
and replicated.

The token embeddings are split on their width, not on the vocabulary: the
Muse table has `codebook_size + 1` rows (the [MASK] token), an odd number for
any power-of-two codebook, which no even model axis divides; T5's table has
the same variable path (`token_embedding/embeddings`), so in a task's map the
two share one rule. The super-res model's low-res table (no [MASK] row) is
split on its vocabulary, as keras-hub does.

VQGAN: replicated, by explicit rules. Its weights are small (the paper's f16
tokenizer, discriminator included, has 55M parameters; its largest conv
kernel 2.4M) while its activations are large (256x256 feature maps):
splitting conv kernels on output channels would make every GroupNorm and the
next conv gather activations across the model axis, which costs more than
the weights it saves. Replicated weights plus the batch split over the data
axis (and over the whole mesh under `DataParallel`) is plain data
parallelism for the convolutions.

Example:
```python
mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"))
layout_map = MuseBackbone.get_layout_map(mesh)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
)
backbone = MuseBackbone.from_preset("muse_3b", load_weights=False)  # created sharded
```
"""

import math

import keras

# Axis placeholders in the rule tables, replaced by the mesh's axis names.
MODEL = "model"
DATA = "data"
_NESTED = r"(?:.*/)?"

_BLOCK = r"(transformer|low_res)_layer_\d+"
MUSE_TRANSFORMER_RULES = (
    # Shared path with the T5 table (see the module docstring).
    (r"token_embedding/embeddings", (None, MODEL)),
    (r"token_embedding/reverse_embeddings", (MODEL, None)),
    (r"text_projection/kernel", (DATA, MODEL)),
    (r"head_dense/kernel", (DATA, MODEL)),
    (_BLOCK + r"/(self|cross)_attention/(query|key|value)/kernel", (DATA, MODEL)),
    (_BLOCK + r"/(self|cross)_attention/output/kernel", (MODEL, DATA)),
    (_BLOCK + r"/mlp_in/kernel", (DATA, MODEL)),
    (_BLOCK + r"/mlp_out/kernel", (MODEL, DATA)),
)
MUSE_SUPER_RES_RULES = MUSE_TRANSFORMER_RULES + (
    (r"low_res_embedding/embeddings", (MODEL, DATA)),
)
_T5_BLOCK = r"transformer_(encoder|decoder)_layer_\d+"
TEXT_ENCODER_RULES = (
    (r"token_embedding/embeddings", (None, MODEL)),
    (r"token_embedding/reverse_embeddings", (MODEL, None)),
    (_T5_BLOCK + r"/(self|cross)_attention/(query|key|value)_projector/kernel", (DATA, MODEL)),
    (_T5_BLOCK + r"/(self|cross)_attention/output_projector/kernel", (MODEL, DATA)),
    (_T5_BLOCK + r"/(input|gate)_projector/kernel", (DATA, MODEL)),
    (_T5_BLOCK + r"/output_projector/kernel", (MODEL, DATA)),
)
# `()` is a replicated layout of any rank (an empty PartitionSpec). Keras
# also looks layer outputs up in the map (path "<layer>/output", to relayout
# activations): those must match no rule.
VQGAN_RULES = ((r"(encoder|decoder|discriminator|quantizer)/(?!(.*/)?output$).*", ()),)


def _check_mesh(device_mesh, model_parallel_dim_name, data_parallel_dim_name):
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            "`device_mesh` must be a keras.distribution.DeviceMesh. "
            f"Received: {type(device_mesh).__name__}"
        )
    for arg, name in (
        ("model_parallel_dim_name", model_parallel_dim_name),
        ("data_parallel_dim_name", data_parallel_dim_name),
    ):
        if name not in device_mesh.axis_names:
            raise ValueError(
                f"`{arg}` must be one of the mesh's axis names {list(device_mesh.axis_names)}. "
                f"Received: {arg}={name!r}"
            )


def build_layout_map(device_mesh, rules, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """A `LayoutMap` from `(regex, axes)` rules; rules are concatenated
    tables (e.g. `MUSE_TRANSFORMER_RULES + VQGAN_RULES`) whose repeated keys
    must agree."""
    _check_mesh(device_mesh, model_parallel_dim_name, data_parallel_dim_name)
    names = {MODEL: model_parallel_dim_name, DATA: data_parallel_dim_name}
    layout_map = keras.distribution.LayoutMap(device_mesh)
    seen = {}
    for pattern, axes in rules:
        # Also match a model nested under a parent's name scope.
        pattern = _NESTED + pattern
        axes = tuple(names.get(a, a) if a is not None else None for a in axes)
        if pattern in seen:
            if seen[pattern] != axes:
                raise ValueError(
                    f"Conflicting layouts for {pattern!r}: {seen[pattern]} and {axes}."
                )
            continue
        seen[pattern] = axes
        layout_map[pattern] = axes
    return layout_map


def muse_backbone_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """The `MuseBackbone` layout map (see the module docstring)."""
    return build_layout_map(device_mesh, MUSE_TRANSFORMER_RULES, model_parallel_dim_name, data_parallel_dim_name)


def muse_super_res_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """The `MuseSuperResBackbone` layout map: the base rules (its blocks
    match them too) plus the low-res token table."""
    return build_layout_map(device_mesh, MUSE_SUPER_RES_RULES, model_parallel_dim_name, data_parallel_dim_name)


def text_encoder_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """The `MuseTextEncoder` (keras-hub T5) layout map."""
    return build_layout_map(device_mesh, TEXT_ENCODER_RULES, model_parallel_dim_name, data_parallel_dim_name)


def vqgan_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """The `VQGAN` layout map: every weight replicated, explicitly."""
    return build_layout_map(device_mesh, VQGAN_RULES, model_parallel_dim_name, data_parallel_dim_name)


def task_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """One map for a text-to-image or super-resolution task: both
    transformers (an attached super-res stage is covered too), the text
    encoder and the VQGAN(s). Their variable paths do not overlap except the
    token tables, which share one rule."""
    rules = MUSE_SUPER_RES_RULES + TEXT_ENCODER_RULES + VQGAN_RULES
    return build_layout_map(device_mesh, rules, model_parallel_dim_name, data_parallel_dim_name)


# ----------------------------------------------------------------- checks
def _axes(layout):
    return tuple(layout.axes) if hasattr(layout, "axes") else tuple(layout)


def check_variable_layout(path, shape, layout, device_mesh):
    """Raises a `ValueError` unless `layout` fits a variable of `shape`: no
    more axes than dimensions, and each split dimension divisible by the
    product of its mesh axes' sizes."""
    if layout is None:
        return
    axes = _axes(layout)
    shape = tuple(shape)
    if len(axes) > len(shape):
        raise ValueError(
            f"The layout {axes} of variable '{path}' has {len(axes)} axes, but the "
            f"variable has shape {shape} ({len(shape)} dimensions)."
        )
    sizes = dict(zip(device_mesh.axis_names, device_mesh.shape))
    for dim, (size, axis) in enumerate(zip(shape, axes)):
        if axis is None:
            continue
        names = (axis,) if isinstance(axis, str) else tuple(axis)
        parts = math.prod(sizes[name] for name in names)
        if size % parts:
            raise ValueError(
                f"Variable '{path}' with shape {shape} cannot be sharded as {axes} on a mesh "
                f"{dict(sizes)}: dimension {dim} ({size}) must be divisible by the "
                f"{'x'.join(names)} axis size {parts}. Choose a mesh whose axis divides it, or "
                "change the model size."
            )


def check_layout_map(layout_map, model):
    """Checks every weight of a built `model` against `layout_map` (see
    `check_variable_layout`); returns `{path: axes}` of the matched weights.

    Example:
    ```python
    check_layout_map(MuseBackbone.get_layout_map(mesh), backbone)
    ```
    """
    matched = {}
    for variable in model.weights:
        layout = layout_map[variable.path]
        check_variable_layout(variable.path, variable.shape, layout, layout_map.device_mesh)
        if layout is not None:
            matched[variable.path] = _axes(layout)
    return matched
