import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_muse")
class PositionEmbedding2D(keras.layers.Layer):
    """Learned 2-D position embedding for a row-major token grid.

    A row table [H, D] plus a column table [W, D], broadcast-summed: H + W
    vectors instead of H x W, and every position of a row shares what it
    learned about rows (MaskGIT / Muse use a learned position embedding for
    the 16x16 token grid).

    Example:
    ```python
    pos = PositionEmbedding2D(grid_size=(16, 16))
    x = pos(keras.ops.zeros((2, 256, 64)))   # adds the embedding, (2, 256, 64)
    ```
    """

    def __init__(self, grid_size, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(int(g) for g in grid_size)
        self.initializer_range = initializer_range

    def build(self, input_shape):
        dim = input_shape[-1]
        init = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        self.rows = self.add_weight(name="rows", shape=(self.grid_size[0], dim), initializer=init)
        self.cols = self.add_weight(name="cols", shape=(self.grid_size[1], dim), initializer=init)

    def call(self, x):
        table = self.rows[:, None, :] + self.cols[None, :, :]
        table = ops.reshape(table, (1, self.grid_size[0] * self.grid_size[1], -1))
        return x + ops.cast(table, x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=list(self.grid_size), initializer_range=self.initializer_range)
        return config
