"""`DataParallel` / `ModelParallel` for the Muse models in one call.

Create the model after the distribution is set (or inside its `scope()`):
Keras lays a variable out when it is created, so a model built before keeps
its single-device weights.

Example:
```python
import keras
from keras_muse import distribution as muse_distribution
from keras_muse.models import MuseTextToImage

# 8 devices: 2 data-parallel replicas x 4-way tensor parallelism.
dist = muse_distribution.model_parallel(MuseTextToImage, mesh_shape=(2, 4))
keras.distribution.set_distribution(dist)
task = MuseTextToImage.from_preset("./my_muse")   # weights created sharded
task.compile(optimizer="auto")
task.fit(dataset, epochs=1)                       # the global batch is split over "batch"
```
"""

import keras
import numpy as np

from keras_muse.distribution import layout_maps


class CheckedModelParallel(keras.distribution.ModelParallel):
    """`keras.distribution.ModelParallel` that checks each variable's layout
    when the variable is created: a split dimension that the mesh axis does
    not divide raises a `ValueError` naming the variable, its shape and the
    mesh, instead of JAX's sharding error without a name."""

    def get_variable_layout(self, variable):
        layout = super().get_variable_layout(variable)
        layout_maps.check_variable_layout(variable.path, variable.shape, layout, self.device_mesh)
        return layout


def _devices(devices, count=None):
    devices = keras.distribution.list_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("`devices` must name at least one device. Received an empty list.")
    if count is not None and len(devices) != count:
        raise ValueError(
            f"`mesh_shape` needs {count} devices; `devices` has {len(devices)}: {devices}. "
            "Pass a `mesh_shape` whose product is the device count."
        )
    return devices


def data_parallel(devices=None):
    """Replicates every weight on every device and splits the batch.

    Args:
        devices: list of devices (default: `keras.distribution.list_devices()`;
            on a TPU pod, all hosts' devices once `jax.distributed` is up).

    Returns:
        `keras.distribution.DataParallel` over a 1-D "batch" mesh. The global
        batch size must be divisible by the number of devices.

    Example:
    ```python
    keras.distribution.set_distribution(data_parallel())
    task = MuseTextToImage(backbone, text_encoder=encoder)
    task.compile(optimizer="auto")
    task.fit((token_ids, captions), batch_size=64)
    ```
    """
    return keras.distribution.DataParallel(devices=_devices(devices))


def get_layout_map(model, device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """The `LayoutMap` for a model class or instance: its own static
    `get_layout_map` (backbones, the text encoder, the VQGAN), or for a task
    (any class with `backbone_cls`, e.g. `MuseTextToImage`) one map that
    covers its backbone, text encoder and VQGAN."""
    cls = model if isinstance(model, type) else type(model)
    if getattr(cls, "backbone_cls", None) is not None:
        return layout_maps.task_layout_map(device_mesh, model_parallel_dim_name, data_parallel_dim_name)
    if not callable(getattr(cls, "get_layout_map", None)):
        raise ValueError(
            "`model_class_or_backbone` must be a keras_muse model class or instance with a "
            f"`get_layout_map` (MuseBackbone, MuseSuperResBackbone, MuseTextEncoder, VQGAN) "
            f"or a task (MuseTextToImage, MuseSuperResolution). Received: {cls.__name__}"
        )
    return cls.get_layout_map(
        device_mesh,
        model_parallel_dim_name=model_parallel_dim_name,
        data_parallel_dim_name=data_parallel_dim_name,
    )


def model_parallel(model_class_or_backbone, mesh_shape=(2, 4), devices=None,
                   model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """Tensor parallelism over a 2-D (data, model) device mesh.

    Args:
        model_class_or_backbone: the model class (or an instance, whose
            weights are then checked against the layout right away) whose
            layout map to use: `MuseBackbone`, `MuseSuperResBackbone`,
            `MuseTextEncoder`, `VQGAN`, or a task class (`MuseTextToImage`,
            `MuseSuperResolution`) for all its parts.
        mesh_shape: `(data, model)` sizes, product = number of devices.
            The model axis must divide the model's widths (hidden, MLP,
            heads x key dim); the data axis the global batch.
        devices: list of devices (default: all, `keras.distribution.list_devices()`).
        model_parallel_dim_name, data_parallel_dim_name: the mesh axis names.

    Returns:
        A `keras.distribution.ModelParallel` (`CheckedModelParallel`) with
        `batch_dim_name=data_parallel_dim_name`.

    Example:
    ```python
    dist = model_parallel(MuseBackbone, mesh_shape=(2, 4))
    keras.distribution.set_distribution(dist)          # or: with dist.scope():
    backbone = MuseBackbone.from_preset("muse_3b", load_weights=False)
    backbone.get_layer("transformer_layer_0").mlp_in.kernel.value.sharding.spec
    # PartitionSpec('batch', 'model')
    ```
    """
    mesh_shape = tuple(int(s) for s in np.atleast_1d(mesh_shape))
    if len(mesh_shape) != 2 or min(mesh_shape) < 1:
        raise ValueError(
            f"`mesh_shape` must be two positive ints (data, model). Received: mesh_shape={mesh_shape}"
        )
    devices = _devices(devices, count=int(np.prod(mesh_shape)))
    mesh = keras.distribution.DeviceMesh(
        shape=mesh_shape,
        axis_names=(data_parallel_dim_name, model_parallel_dim_name),
        devices=devices,
    )
    layout_map = get_layout_map(model_class_or_backbone, mesh, model_parallel_dim_name, data_parallel_dim_name)
    if not isinstance(model_class_or_backbone, type):
        layout_maps.check_layout_map(layout_map, model_class_or_backbone)
    return CheckedModelParallel(layout_map=layout_map, batch_dim_name=data_parallel_dim_name)
