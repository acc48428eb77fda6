import keras
from keras import ops


def group_count(channels, max_groups=32):
    """Largest divisor of `channels` not above `max_groups` (GroupNorm groups)."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


@keras.saving.register_keras_serializable(package="keras_muse")
class ResnetBlock(keras.layers.Layer):
    """Pre-activation residual block of the VQGAN (GroupNorm, swish, conv x2).

    A 1x1 convolution projects the shortcut when the channel count changes.
    The second convolution starts at zero so a fresh block is the identity,
    which keeps deep encoders/decoders trainable from the first step.

    Args:
        filters: int, output channels.
        dropout: float, dropout between the two convolutions.
        norm_groups: int, maximum number of GroupNorm groups.

    Example:
    ```python
    block = ResnetBlock(64)
    y = block(keras.ops.zeros((2, 16, 16, 32)))  # (2, 16, 16, 64)
    ```
    """

    def __init__(self, filters, dropout=0.0, norm_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.dropout = dropout
        self.norm_groups = norm_groups

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.norm1 = keras.layers.GroupNormalization(
            group_count(in_channels, self.norm_groups),
            epsilon=1e-6,
            dtype=self.dtype_policy,
            name="norm1",
        )
        self.conv1 = keras.layers.Conv2D(
            self.filters, 3, padding="same", dtype=self.dtype_policy, name="conv1"
        )
        self.norm2 = keras.layers.GroupNormalization(
            group_count(self.filters, self.norm_groups),
            epsilon=1e-6,
            dtype=self.dtype_policy,
            name="norm2",
        )
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(
            self.filters,
            3,
            padding="same",
            kernel_initializer="zeros",
            dtype=self.dtype_policy,
            name="conv2",
        )
        self.norm1.build(input_shape)
        self.conv1.build(input_shape)
        mid_shape = tuple(input_shape[:-1]) + (self.filters,)
        self.norm2.build(mid_shape)
        self.conv2.build(mid_shape)
        if in_channels != self.filters:
            self.shortcut = keras.layers.Conv2D(
                self.filters, 1, dtype=self.dtype_policy, name="shortcut"
            )
            self.shortcut.build(input_shape)
        else:
            self.shortcut = None

    def call(self, x, training=False):
        h = self.conv1(ops.silu(self.norm1(x)))
        h = self.drop(ops.silu(self.norm2(h)), training=training)
        h = self.conv2(h)
        if self.shortcut is not None:
            x = self.shortcut(x)
        return x + h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, dropout=self.dropout, norm_groups=self.norm_groups
        )
        return config
