from keras import ops


def space_to_depth(x, block):
    """[B, H, W, C] -> [B, H/b, W/b, C*b*b], each b x b patch folded into channels.

    Example:
    ```python
    space_to_depth(keras.ops.zeros((1, 64, 64, 3)), 2).shape  # (1, 32, 32, 12)
    ```
    """
    if block == 1:
        return x
    b, h, w, c = ops.shape(x)
    x = ops.reshape(x, (b, h // block, block, w // block, block, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, h // block, w // block, block * block * c))


def depth_to_space(x, block):
    """The inverse of `space_to_depth`: [B, h, w, C*b*b] -> [B, h*b, w*b, C]."""
    if block == 1:
        return x
    b, h, w, c = ops.shape(x)
    channels = c // (block * block)
    x = ops.reshape(x, (b, h, w, block, block, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, h * block, w * block, channels))
