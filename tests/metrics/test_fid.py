import keras
import numpy as np
import pytest
import scipy.linalg

from keras_muse.metrics import fid


def _random_covariance(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1) * np.eye(d)


def test_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    value = fid.frechet_distance((mu1, np.diag(a)), (mu2, np.diag(b)))
    assert value == pytest.approx(expected, rel=1e-10)  # 5 + (1 + 1 + 4) = 11


def test_matches_the_reference_formula_for_full_covariances():
    rng = np.random.default_rng(0)
    s1, s2 = _random_covariance(rng, 12), _random_covariance(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert fid.frechet_distance((mu1, s1), (mu2, s2)) == pytest.approx(expected, rel=1e-8)


def test_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16))
    y = rng.normal(size=(400, 16)) * 1.5 + 0.3
    sx = fid.FeatureStatistics().update(x)
    sy = fid.FeatureStatistics().update(y)
    assert fid.frechet_distance(sx, sx) == pytest.approx(0.0, abs=1e-8)
    assert fid.frechet_distance(sx, sy) == pytest.approx(fid.frechet_distance(sy, sx), rel=1e-10)
    assert fid.frechet_distance(sx, sy) > 1.0


def test_rank_deficient_covariances_stay_finite():
    # Fewer samples than dimensions (small-N evaluations): singular S1 S2.
    rng = np.random.default_rng(2)
    s1, s2 = _random_covariance(rng, 64, rank=10), _random_covariance(rng, 64, rank=10)
    value = fid.frechet_distance((np.zeros(64), s1), (np.zeros(64), s2))
    assert np.isfinite(value) and value > 0
    assert fid.frechet_distance((np.zeros(64), s1), (np.zeros(64), s1)) == pytest.approx(0, abs=1e-6)


def test_sampled_statistics_approach_the_closed_form():
    rng = np.random.default_rng(3)
    s1, s2 = np.diag([1.0, 2.0, 0.5]), np.array([[2.0, 0.5, 0], [0.5, 1.0, 0], [0, 0, 1.0]])
    mu1, mu2 = np.zeros(3), np.array([1.0, -1.0, 0.5])
    x = rng.multivariate_normal(mu1, s1, size=40000)
    y = rng.multivariate_normal(mu2, s2, size=40000)
    exact = fid.frechet_distance((mu1, s1), (mu2, s2))
    assert fid.frechet_distance(fid.FeatureStatistics().update(x), fid.FeatureStatistics().update(y)) == (
        pytest.approx(exact, rel=0.03))


def test_streaming_statistics_equal_the_batch_ones():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(301, 7)) * np.arange(1, 8) + 1000.0  # large offset: a naive sum would lose digits
    stats = fid.FeatureStatistics()
    for i in range(0, 301, 37):
        stats.update(x[i:i + 37])
    assert stats.count == 301
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-9)


def test_compute_statistics_with_a_keras_model_a_callable_and_batches():
    images = np.random.default_rng(5).integers(0, 255, (10, 8, 8, 3)).astype("uint8")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    from_model = fid.compute_statistics(images, model, batch_size=4)
    from_fn = fid.compute_statistics(images, lambda x: x.mean(axis=(1, 2)), batch_size=3)
    from_batches = fid.compute_statistics((images[i:i + 5] for i in (0, 5)), lambda x: x.mean(axis=(1, 2)))
    np.testing.assert_allclose(from_model.mean, from_fn.mean, rtol=1e-5)
    np.testing.assert_allclose(from_fn.covariance, from_batches.covariance, rtol=1e-9)
    assert fid.fid(images, images, lambda x: x.mean(axis=(1, 2))) == pytest.approx(0, abs=1e-6)


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="same dimension"):
        fid.frechet_distance((np.zeros(3), np.eye(3)), (np.zeros(4), np.eye(4)))
    with pytest.raises(ValueError, match="covariance"):
        fid.frechet_distance((np.zeros(3), np.eye(2)), (np.zeros(3), np.eye(3)))
    with pytest.raises(ValueError, match="at least 2"):
        fid.FeatureStatistics().update(np.ones((1, 3))).covariance
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        fid.FeatureStatistics().update(np.ones(3))
    with pytest.raises(ValueError, match="feature_model"):
        fid.compute_statistics(np.zeros((2, 4, 4, 3)), "inception")


def test_inception_offline_error_is_clear(monkeypatch):
    def offline(**kwargs):
        # What keras.utils.get_file raises without a network.
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
            "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- "
            "[Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr(keras.applications, "InceptionV3", offline)
    with pytest.raises(fid.WeightsUnavailableError) as info:
        fid.inception_feature_model()
    message = str(info.value)
    assert "Inception-v3 ImageNet weights" in message
    assert "name resolution" in message  # the cause is kept
    assert "~/.keras/models" in message and "feature_model" in message  # and the way out


@pytest.mark.slow
def test_inception_offline_error_through_the_real_download_path(monkeypatch):
    """The real keras.applications code path, with the download failing."""
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- offline")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(fid.WeightsUnavailableError, match="Inception-v3"):
        fid.inception_feature_model()
