"""Fréchet distance between image sets, over any feature network.

FID (Heusel et al., 2017) fits a Gaussian to the features of each image set
and measures

    FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

The paper's numbers (Muse §4: COCO FID-30K 7.88) use Inception-v3's 2048-d
pool features; `inception_feature_model()` builds that network from
`keras.applications` when its ImageNet weights can be had (downloaded once,
or already in `~/.keras/models`) and fails with `WeightsUnavailableError`
otherwise. Any Keras model or callable from images to `[n, d]` features
works instead, e.g. the shapes judge's penultimate layer
(`ShapesAttributeClassifier.feature_model()`).

Statistics stream: `FeatureStatistics` keeps the count, the mean and the
centred sum of outer products (merged batch by batch, Chan et al.), in
float64, so N is bounded by time, not memory.

Example:

```python
from keras_muse.metrics import fid

model = classifier.feature_model()           # or fid.inception_feature_model()
real = fid.compute_statistics(real_images, model)
fake = fid.compute_statistics(generated_images, model)
fid.frechet_distance(real, fake)
```
"""

import numpy as np


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be loaded (offline, or no such file)."""


def _sqrtm_psd(matrix):
    """Square root of a symmetric positive semi-definite matrix (eigh;
    negative round-off eigenvalues clipped to 0)."""
    matrix = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def trace_sqrt_product(sigma1, sigma2):
    """Tr((S1 S2)^(1/2)) for covariance matrices S1, S2.

    S1 S2 is not symmetric, but it is similar to the symmetric PSD matrix
    M = S1^(1/2) S2 S1^(1/2) (same eigenvalues), so the trace is the sum of
    the square roots of M's eigenvalues: no complex parts, no singular-matrix
    offset needed (scipy's `sqrtm` on S1 S2 needs both).
    """
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(stats1, stats2):
    """Fréchet distance between two Gaussians.

    Args:
        stats1, stats2: `FeatureStatistics`, or `(mean [d], covariance [d, d])`.

    Returns:
        float >= 0 (up to round-off).
    """
    mu1, sigma1 = _as_moments(stats1, "stats1")
    mu2, sigma2 = _as_moments(stats2, "stats2")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"The two feature sets must have the same dimension. Received {mu1.shape[0]} and {mu2.shape[0]}."
        )
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def _as_moments(stats, name):
    if isinstance(stats, FeatureStatistics):
        return stats.mean, stats.covariance
    try:
        mu, sigma = stats
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be FeatureStatistics or (mean, covariance). Received: {type(stats).__name__}"
        ) from None
    mu = np.asarray(mu, np.float64)
    sigma = np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"`{name}`: expected mean [d] and covariance [d, d]. Received {mu.shape} and {sigma.shape}."
        )
    return mu, sigma


class FeatureStatistics:
    """Streaming mean and covariance of feature vectors.

    Example:

    ```python
    stats = FeatureStatistics()
    for batch in batches:
        stats.update(feature_fn(batch))
    stats.mean, stats.covariance
    ```
    """

    def __init__(self):
        self.count = 0
        self._mean = None
        self._scatter = None  # sum of (x - mean)(x - mean)^T

    def update(self, features):
        features = np.asarray(features, np.float64)
        if features.ndim != 2:
            raise ValueError(f"`features` must be [n, d]. Received shape {features.shape}.")
        n = features.shape[0]
        if n == 0:
            return self
        if self._mean is not None and features.shape[1] != self._mean.shape[0]:
            raise ValueError(
                f"`features` must have dimension {self._mean.shape[0]} like the earlier batches. "
                f"Received {features.shape[1]}."
            )
        batch_mean = features.mean(0)
        centred = features - batch_mean
        batch_scatter = centred.T @ centred
        if self._mean is None:
            self.count, self._mean, self._scatter = n, batch_mean, batch_scatter
            return self
        total = self.count + n
        delta = batch_mean - self._mean
        self._scatter = self._scatter + batch_scatter + np.outer(delta, delta) * (self.count * n / total)
        self._mean = self._mean + delta * (n / total)
        self.count = total
        return self

    @property
    def mean(self):
        self._check_count(1)
        return self._mean

    @property
    def covariance(self):
        """Unbiased (n - 1) sample covariance, as in the reference FID code."""
        self._check_count(2)
        return self._scatter / (self.count - 1)

    def _check_count(self, minimum):
        if self.count < minimum:
            raise ValueError(f"FeatureStatistics needs at least {minimum} feature vectors. Has {self.count}.")


def _feature_fn(feature_model):
    """A Keras model (its `predict`) or any callable -> numpy features fn."""
    import keras

    if isinstance(feature_model, keras.Model):
        return lambda images: feature_model.predict(images, verbose=0)
    if callable(feature_model):
        return feature_model
    raise ValueError(
        f"`feature_model` must be a Keras model or a callable images -> [n, d]. Received: {feature_model!r}"
    )


def compute_statistics(images, feature_model, batch_size=64, stats=None, progress=None):
    """Streams `images` (uint8 `[n, H, W, 3]`, or an iterable of such
    batches) through `feature_model` into `FeatureStatistics`."""
    fn = _feature_fn(feature_model)
    stats = stats if stats is not None else FeatureStatistics()
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"`images` must be [n, H, W, C]. Received shape {images.shape}.")
        batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    else:
        batches = images
    for batch in batches:
        features = np.asarray(fn(np.asarray(batch, np.float32)))
        stats.update(features.reshape(len(features), -1))
        if progress is not None:
            progress(len(features))
    return stats


def fid(images1, images2, feature_model, batch_size=64):
    """FID between two image sets (arrays or iterables of batches)."""
    return frechet_distance(
        compute_statistics(images1, feature_model, batch_size),
        compute_statistics(images2, feature_model, batch_size),
    )


def inception_feature_model(resolution=299):
    """Inception-v3 2048-d pool features with ImageNet weights: uint8
    images of any size in, resized to `resolution` inside the model.

    Raises `WeightsUnavailableError` when the weights cannot be downloaded
    (offline) and are not cached in `~/.keras/models`.
    """
    import keras

    try:
        base = keras.applications.InceptionV3(
            weights="imagenet", include_top=False, pooling="avg",
            input_shape=(resolution, resolution, 3),
        )
    except Exception as e:  # keras.utils.get_file raises a bare Exception offline.
        raise WeightsUnavailableError(
            "Could not load the Inception-v3 ImageNet weights for FID "
            f"({type(e).__name__}: {e}). They are downloaded once from "
            "storage.googleapis.com into ~/.keras/models; offline, copy "
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 there, or "
            "pass another `feature_model` (e.g. the shapes judge's "
            "`ShapesAttributeClassifier.feature_model()`)."
        ) from e
    images = keras.Input((None, None, 3), name="images")
    x = keras.layers.Resizing(resolution, resolution, antialias=True)(images)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)  # inception_v3.preprocess_input
    return keras.Model(images, base(x), name="inception_v3_pool_features")
