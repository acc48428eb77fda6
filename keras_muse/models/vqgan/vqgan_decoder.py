import keras
from keras import ops

from keras_muse.layers.resnet_block import ResnetBlock
from keras_muse.layers.resnet_block import group_count
from keras_muse.layers.space_to_depth import depth_to_space


@keras.saving.register_keras_serializable(package="keras_muse")
class VQGANDecoder(keras.layers.Layer):
    """Fully convolutional VQGAN decoder, the mirror of `VQGANEncoder`.

    Nearest-neighbour 2x upsampling followed by a 3x3 convolution (no
    checkerboard artefacts of transposed convolutions). The paper's
    fine-tuned decoder (§2.5) is this class with `num_res_blocks=4` and
    `base_channels=256`. `patch_size` > 1 ends with a depth-to-space
    ("pixel shuffle") of that factor, the mirror of the encoder's patch stem.

    Example:
    ```python
    dec = VQGANDecoder(32, (1, 2, 4), num_res_blocks=1)
    dec(keras.ops.zeros((1, 16, 16, 64))).shape  # (1, 64, 64, 3)
    ```
    """

    def __init__(
        self,
        base_channels=128,
        channel_multipliers=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        output_channels=3,
        dropout=0.0,
        patch_size=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.base_channels = base_channels
        self.channel_multipliers = tuple(channel_multipliers)
        self.num_res_blocks = num_res_blocks
        self.output_channels = output_channels
        self.dropout = dropout
        policy = self.dtype_policy
        top = base_channels * self.channel_multipliers[-1]
        self.conv_in = keras.layers.Conv2D(
            top, 3, padding="same", dtype=policy, name="conv_in"
        )
        self.mid_blocks = [
            ResnetBlock(top, dropout=dropout, dtype=policy, name=f"mid_block{i}")
            for i in range(num_res_blocks)
        ]
        # Levels run from the coarsest resolution to the finest.
        self.levels = []
        self.upsample_convs = []
        num_levels = len(self.channel_multipliers)
        for level in reversed(range(num_levels)):
            channels = base_channels * self.channel_multipliers[level]
            self.levels.append(
                [
                    ResnetBlock(
                        channels,
                        dropout=dropout,
                        dtype=policy,
                        name=f"level{level}_block{i}",
                    )
                    for i in range(num_res_blocks)
                ]
            )
            if level > 0:
                # The conv after upsampling already maps to the finer level's
                # width: the costly full-resolution conv runs on fewer channels.
                self.upsample_convs.append(
                    keras.layers.Conv2D(
                        base_channels * self.channel_multipliers[level - 1],
                        3,
                        padding="same",
                        dtype=policy,
                        name=f"level{level}_upsample",
                    )
                )
        self.norm_out = keras.layers.GroupNormalization(
            group_count(base_channels * self.channel_multipliers[0]),
            epsilon=1e-6,
            dtype=policy,
            name="norm_out",
        )
        self.conv_out = keras.layers.Conv2D(
            output_channels * patch_size**2, 3, padding="same", dtype=policy, name="conv_out"
        )

    @property
    def upsampling_factor(self):
        return self.patch_size * 2 ** (len(self.channel_multipliers) - 1)

    def call(self, latents, training=False):
        x = self.conv_in(latents)
        for block in self.mid_blocks:
            x = block(x, training=training)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                x = block(x, training=training)
            if i < len(self.upsample_convs):
                x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
                x = self.upsample_convs[i](x)
        x = self.conv_out(ops.silu(self.norm_out(x)))
        return depth_to_space(x, self.patch_size)

    def compute_output_shape(self, input_shape):
        f = self.upsampling_factor
        b, h, w = input_shape[0], input_shape[1], input_shape[2]
        return (
            b,
            None if h is None else h * f,
            None if w is None else w * f,
            self.output_channels,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            base_channels=self.base_channels,
            channel_multipliers=self.channel_multipliers,
            num_res_blocks=self.num_res_blocks,
            output_channels=self.output_channels,
            dropout=self.dropout,
            patch_size=self.patch_size,
        )
        return config
