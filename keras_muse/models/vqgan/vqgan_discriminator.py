import keras
from keras import ops

from keras_muse.layers.resnet_block import group_count


@keras.saving.register_keras_serializable(package="keras_muse")
class VQGANDiscriminator(keras.layers.Layer):
    """PatchGAN discriminator: a grid of real/fake logits, one per patch.

    As in taming-transformers' `NLayerDiscriminator`, but with GroupNorm
    instead of BatchNorm: batch statistics couple real and fake examples and
    misbehave with small or sharded batches, and a stateless norm keeps the R1
    penalty (a gradient with respect to the input) well defined.

    Args:
        base_channels: int, channels of the first layer.
        num_layers: int, strided 4x4 convolutions after the first; the
            output grid is `input / 2 ** (num_layers + 1)`... with the last
            stride-1 layers, `input / 2 ** num_layers` per side.

    Example:
    ```python
    disc = VQGANDiscriminator(32, num_layers=3)
    disc(keras.ops.zeros((2, 64, 64, 3))).shape  # (2, 8, 8, 1)
    ```
    """

    def __init__(self, base_channels=64, num_layers=3, **kwargs):
        super().__init__(**kwargs)
        self.base_channels = base_channels
        self.num_layers = num_layers
        policy = self.dtype_policy
        self.convs = []
        self.norms = []
        for i in range(num_layers + 1):
            channels = base_channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            self.convs.append(
                keras.layers.Conv2D(
                    channels, 4, strides=stride, padding="same", dtype=policy,
                    name=f"conv{i}",
                )
            )
            self.norms.append(
                None
                if i == 0
                else keras.layers.GroupNormalization(
                    group_count(channels), dtype=policy, name=f"norm{i}"
                )
            )
        self.conv_out = keras.layers.Conv2D(
            1, 4, padding="same", dtype=policy, name="conv_out"
        )

    def call(self, images):
        x = images
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            if norm is not None:
                x = norm(x)
            x = ops.leaky_relu(x, 0.2)
        return ops.cast(self.conv_out(x), "float32")

    def compute_output_shape(self, input_shape):
        f = 2**self.num_layers
        b, h, w = input_shape[0], input_shape[1], input_shape[2]
        return (b, None if h is None else -(-h // f), None if w is None else -(-w // f), 1)

    def get_config(self):
        config = super().get_config()
        config.update(base_channels=self.base_channels, num_layers=self.num_layers)
        return config
