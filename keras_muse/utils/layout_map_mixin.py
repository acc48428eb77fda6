"""`get_layout_map` for the models that have a model-parallel layout."""


class LayoutMapMixin:
    """Gives a model class keras-hub's `get_layout_map(device_mesh, ...)`.

    The class names its builder in `keras_muse.distribution.layout_maps`
    (`layout_map_builder = "muse_backbone_layout_map"`); the rules and the
    reasons for them live there.
    """

    layout_map_builder = None

    @classmethod
    def get_layout_map(cls, device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
        """A `keras.distribution.LayoutMap` for `ModelParallel` over `device_mesh`
        (rules and reasons: `keras_muse.distribution.layout_maps`).

        Example:
        ```python
        mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"))
        layout_map = MuseBackbone.get_layout_map(mesh)
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
        ```
        """
        # Imported here: keras_muse.distribution imports the models.
        from keras_muse.distribution import layout_maps

        builder = getattr(layout_maps, cls.layout_map_builder)
        return builder(device_mesh, model_parallel_dim_name, data_parallel_dim_name)
