"""Losses of VQGAN training (paper App. A.2; MaskGIT defaults).

All functions take and return tensors and use `keras.ops` only, so they run
inside any backend's train step. Inputs are images in [-1, 1].
"""

import keras
from keras import ops

RECONSTRUCTION_LOSSES = ("l1", "l2", "l1+l2")
ADVERSARIAL_LOSSES = ("non_saturating", "hinge")


def reconstruction_loss(images, reconstructions, kind="l1"):
    """Mean L1, L2 or L1 + L2 distance, computed in float32."""
    diff = ops.cast(images, "float32") - ops.cast(reconstructions, "float32")
    if kind == "l1":
        return ops.mean(ops.abs(diff))
    if kind == "l2":
        return ops.mean(ops.square(diff))
    if kind == "l1+l2":
        return ops.mean(ops.abs(diff)) + ops.mean(ops.square(diff))
    raise ValueError(
        f"`reconstruction_loss` must be one of {RECONSTRUCTION_LOSSES}. Received: {kind!r}"
    )


def generator_adversarial_loss(fake_logits, kind="non_saturating"):
    """The generator's GAN loss on discriminator logits of reconstructions."""
    fake_logits = ops.cast(fake_logits, "float32")
    if kind == "non_saturating":
        return ops.mean(ops.softplus(-fake_logits))
    if kind == "hinge":
        return -ops.mean(fake_logits)
    raise ValueError(
        f"`adversarial_loss` must be one of {ADVERSARIAL_LOSSES}. Received: {kind!r}"
    )


def discriminator_loss(real_logits, fake_logits, kind="non_saturating"):
    """The discriminator's GAN loss (real -> positive logits, fake -> negative)."""
    real_logits = ops.cast(real_logits, "float32")
    fake_logits = ops.cast(fake_logits, "float32")
    if kind == "non_saturating":
        return ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))
    if kind == "hinge":
        return ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(ops.relu(1.0 + fake_logits))
    raise ValueError(
        f"`adversarial_loss` must be one of {ADVERSARIAL_LOSSES}. Received: {kind!r}"
    )


def lecam_regularization(real_logits, fake_logits, ema_real, ema_fake):
    """LeCam regularizer (Tseng et al., 2021): anchors the discriminator's
    outputs to moving averages of its own outputs, stabilizing small-data GANs."""
    real = ops.cast(real_logits, "float32")
    fake = ops.cast(fake_logits, "float32")
    return ops.mean(ops.square(ops.relu(real - ema_fake))) + ops.mean(
        ops.square(ops.relu(ema_real - fake))
    )


# VGG's ImageNet preprocessing ("caffe" mode): BGR, mean-subtracted, 0..255.
_VGG_MEAN_BGR = (103.939, 116.779, 123.68)
_VGG16_LAYERS = (
    "block1_conv2",
    "block2_conv2",
    "block3_conv3",
    "block4_conv3",
    "block5_conv3",
)


def vgg16_feature_network(weights="imagenet"):
    """The default perceptual network: VGG16's conv features (LPIPS layers).

    Real loading code: with no network access the ImageNet weights cannot be
    fetched, and this raises a `ValueError` explaining the alternatives.
    """
    try:
        vgg = keras.applications.VGG16(include_top=False, weights=weights)
    except Exception as e:  # keras raises a bare Exception on fetch failure
        raise ValueError(
            "The default perceptual network (keras.applications.VGG16 with "
            f"weights={weights!r}) could not be loaded: {e}. Without network "
            "access, pass `perceptual_network=<a keras.Model mapping images in "
            "[-1, 1] to a list of feature maps>` or a local weights file path "
            "as `perceptual_network='vgg16:/path/to/weights.h5'`, or disable "
            "the perceptual loss with `perceptual_weight=0`."
        ) from None
    vgg.trainable = False
    outputs = [vgg.get_layer(name).output for name in _VGG16_LAYERS]
    features = keras.Model(vgg.input, outputs, name="vgg16_features")
    images = keras.Input((None, None, 3))
    x = (images + 1.0) * 127.5
    x = ops.flip(x, axis=-1) - ops.convert_to_tensor(_VGG_MEAN_BGR)
    model = keras.Model(images, features(x), name="vgg16_perceptual")
    model.trainable = False
    return model


def resolve_perceptual_network(network):
    """`"vgg16"`, `"vgg16:<weights path>"`, a keras Model, or None."""
    if network is None or isinstance(network, keras.Model):
        return network
    if isinstance(network, str) and network.split(":", 1)[0] == "vgg16":
        weights = network.split(":", 1)[1] if ":" in network else "imagenet"
        return vgg16_feature_network(weights)
    raise ValueError(
        "`perceptual_network` must be 'vgg16', 'vgg16:<weights path>', a "
        f"keras.Model, or None. Received: {network!r}"
    )


def perceptual_loss(network, images, reconstructions):
    """LPIPS-style distance: unit-normalized features, squared difference,
    averaged per layer and summed over layers (no learned layer weights)."""
    real = network(images)
    fake = network(reconstructions)
    if not isinstance(real, (list, tuple)):
        real, fake = [real], [fake]
    total = 0.0
    for r, f in zip(real, fake):
        r = ops.cast(r, "float32")
        f = ops.cast(f, "float32")
        r = r * ops.rsqrt(ops.sum(ops.square(r), axis=-1, keepdims=True) + 1e-10)
        f = f * ops.rsqrt(ops.sum(ops.square(f), axis=-1, keepdims=True) + 1e-10)
        total = total + ops.mean(ops.sum(ops.square(r - f), axis=-1))
    return total
