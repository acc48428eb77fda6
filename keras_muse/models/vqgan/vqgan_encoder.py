import keras
from keras import ops

from keras_muse.layers.resnet_block import ResnetBlock
from keras_muse.layers.resnet_block import group_count
from keras_muse.layers.space_to_depth import space_to_depth


@keras.saving.register_keras_serializable(package="keras_muse")
class VQGANEncoder(keras.layers.Layer):
    """Fully convolutional VQGAN encoder (no attention blocks, as in Muse).

    `len(channel_multipliers) - 1` 2x average-pool downsamplings give the
    downsampling factor: (1, 1, 2, 2, 4) -> 16, (1, 2, 2, 4) -> 8, (1, 2, 4) -> 4.
    `patch_size` > 1 first folds each p x p pixel patch into channels
    (space-to-depth), multiplying the factor by p: the network then never runs
    at full resolution, where few-channel convolutions are slow on CPUs.

    Args:
        base_channels: int, channels at full resolution (128 in the paper).
        channel_multipliers: tuple of ints, one per resolution level.
        num_res_blocks: int, residual blocks per level (2 in the paper).
        latent_dim: int, channels of the output latent grid.
        dropout: float.

    Example:
    ```python
    enc = VQGANEncoder(32, (1, 2, 4), num_res_blocks=1, latent_dim=64)
    enc(keras.ops.zeros((1, 64, 64, 3))).shape  # (1, 16, 16, 64)
    ```
    """

    def __init__(
        self,
        base_channels=128,
        channel_multipliers=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        latent_dim=256,
        dropout=0.0,
        patch_size=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.base_channels = base_channels
        self.channel_multipliers = tuple(channel_multipliers)
        self.num_res_blocks = num_res_blocks
        self.latent_dim = latent_dim
        self.dropout = dropout
        policy = self.dtype_policy
        self.conv_in = keras.layers.Conv2D(
            base_channels, 3, padding="same", dtype=policy, name="conv_in"
        )
        self.levels = []
        for level, mult in enumerate(self.channel_multipliers):
            self.levels.append(
                [
                    ResnetBlock(
                        base_channels * mult,
                        dropout=dropout,
                        dtype=policy,
                        name=f"level{level}_block{i}",
                    )
                    for i in range(num_res_blocks)
                ]
            )
        top = base_channels * self.channel_multipliers[-1]
        self.mid_blocks = [
            ResnetBlock(top, dropout=dropout, dtype=policy, name=f"mid_block{i}")
            for i in range(num_res_blocks)
        ]
        self.norm_out = keras.layers.GroupNormalization(
            group_count(top), epsilon=1e-6, dtype=policy, name="norm_out"
        )
        self.conv_out = keras.layers.Conv2D(
            latent_dim, 1, dtype=policy, name="conv_out"
        )

    @property
    def downsampling_factor(self):
        return self.patch_size * 2 ** (len(self.channel_multipliers) - 1)

    def call(self, images, training=False):
        x = self.conv_in(space_to_depth(images, self.patch_size))
        last = len(self.levels) - 1
        for level, blocks in enumerate(self.levels):
            for block in blocks:
                x = block(x, training=training)
            if level < last:
                x = ops.average_pool(x, 2, strides=2, padding="valid")
        for block in self.mid_blocks:
            x = block(x, training=training)
        return self.conv_out(ops.silu(self.norm_out(x)))

    def compute_output_shape(self, input_shape):
        f = self.downsampling_factor
        b, h, w = input_shape[0], input_shape[1], input_shape[2]
        return (b, None if h is None else h // f, None if w is None else w // f, self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            base_channels=self.base_channels,
            channel_multipliers=self.channel_multipliers,
            num_res_blocks=self.num_res_blocks,
            latent_dim=self.latent_dim,
            dropout=self.dropout,
            patch_size=self.patch_size,
        )
        return config
