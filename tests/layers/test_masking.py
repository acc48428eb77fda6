import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_muse.backend import compile_function
from keras_muse.layers.masking import SCHEDULES
from keras_muse.layers.masking import MaskTokens
from keras_muse.layers.masking import apply_mask
from keras_muse.layers.masking import mask_ratio_schedule
from keras_muse.layers.masking import sample_mask_rates
from keras_muse.layers.masking import sample_token_mask
from keras_muse.layers.masking import scheduled_mask_count

# Closed forms, in float64, that the implementation must reproduce.
REFERENCE = {
    "cosine": lambda t: np.cos(np.pi / 2 * t),
    "linear": lambda t: 1.0 - t,
    "square": lambda t: 1.0 - t**2,
    "arccos": lambda t: 2.0 / np.pi * np.arccos(t),
}
# E[γ(u)], u ~ U(0, 1): the mean training masking rate.
MEAN_RATE = {"cosine": 2 / np.pi, "linear": 0.5, "square": 2 / 3, "arccos": 2 / np.pi}


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _expected_counts(rates, n):
    # Same float32 arithmetic as the implementation: ceil(r·N), clipped.
    return np.clip(np.ceil(rates.astype("float32") * np.float32(n)), 1, n)


def test_cosine_masks_follow_the_truncated_arccos_distribution():
    n, b = 256, 10_000
    mask, rates = sample_token_mask(b, n, seed=0, return_rates=True)
    mask, rates = _np(mask), _np(rates)
    assert mask.shape == (b, n) and mask.dtype == np.bool_
    assert rates.shape == (b,) and rates.dtype == np.float32

    # Paper: mean masking rate 2/π ≈ 0.64.
    assert abs(mask.mean() - 2 / np.pi) < 0.02
    # Exactly ceil(r·N) (>= 1) positions per example.
    counts = mask.sum(axis=1)
    np.testing.assert_array_equal(counts, _expected_counts(rates, n))
    assert counts.min() >= 1
    # The rates' CDF is that of p(r) = (2/π)(1 − r²)^(−1/2):
    # P(r <= x) = 1 − (2/π)·arccos(x) (Kolmogorov–Smirnov distance).
    xs = np.sort(rates.astype("float64"))
    empirical = np.arange(1, b + 1) / b
    ks = np.max(np.abs(empirical - (1 - 2 / np.pi * np.arccos(xs))))
    assert ks < 0.02, ks
    # Positions are chosen uniformly: no position is favoured.
    per_position = mask.mean(axis=0)
    assert np.max(np.abs(per_position - mask.mean())) < 0.03


@pytest.mark.parametrize("schedule", ["linear", "square", "arccos"])
def test_other_schedules_give_their_mean_rate_and_exact_counts(schedule):
    n, b = 64, 4000
    mask, rates = sample_token_mask(b, n, schedule=schedule, seed=3, return_rates=True)
    mask, rates = _np(mask), _np(rates)
    assert abs(rates.mean() - MEAN_RATE[schedule]) < 0.02
    np.testing.assert_array_equal(mask.sum(axis=1), _expected_counts(rates, n))


def test_sample_mask_rates_mean_and_range():
    rates = _np(sample_mask_rates(10_000, seed=keras.random.SeedGenerator(7)))
    assert rates.shape == (10_000,)
    assert rates.min() >= 0.0 and rates.max() <= 1.0
    assert abs(rates.mean() - 2 / np.pi) < 0.01


def test_seeds_make_masks_reproducible():
    a = _np(sample_token_mask(4, 64, seed=1))
    b = _np(sample_token_mask(4, 64, seed=1))
    c = _np(sample_token_mask(4, 64, seed=2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # A SeedGenerator reproduces from its seed and advances between calls.
    g1, g2 = keras.random.SeedGenerator(5), keras.random.SeedGenerator(5)
    first = _np(sample_token_mask(4, 64, seed=g1))
    np.testing.assert_array_equal(first, _np(sample_token_mask(4, 64, seed=g2)))
    assert not np.array_equal(first, _np(sample_token_mask(4, 64, seed=g1)))


def test_fixed_rates_mask_exact_counts():
    mask = _np(sample_token_mask(4, 64, seed=0, rates=0.125))
    np.testing.assert_array_equal(mask.sum(axis=1), [8, 8, 8, 8])
    rates = ops.convert_to_tensor([0.0, 0.5, 1.0, 0.01])
    mask = _np(sample_token_mask(4, 64, seed=0, rates=rates))
    # Rate 0 still masks one token: every example has a target.
    np.testing.assert_array_equal(mask.sum(axis=1), [1, 32, 64, 1])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_endpoints_monotone_and_match_closed_form(schedule):
    gamma = mask_ratio_schedule(schedule)
    assert gamma(0.0) == 1.0 and gamma(0) == 1.0
    assert gamma(1.0) == 0.0
    ts = np.linspace(0.0, 1.0, 101)
    tensor_values = _np(gamma(ops.convert_to_tensor(ts.astype("float32"))))
    python_values = np.array([gamma(float(t)) for t in ts])
    assert tensor_values[0] == 1.0 and tensor_values[-1] == 0.0
    assert np.all(np.diff(python_values) < 0)
    assert np.all(np.diff(tensor_values) <= 0)
    np.testing.assert_allclose(python_values, REFERENCE[schedule](ts), atol=1e-12)
    np.testing.assert_allclose(tensor_values, REFERENCE[schedule](ts), atol=1e-5)
    # Outside [0, 1] is clipped, not NaN.
    assert gamma(-0.5) == 1.0 and gamma(1.5) == 0.0


def test_scheduled_counts_cosine_t12_n256():
    expected = [math.floor(256 * math.cos(math.pi / 2 * (k + 1) / 12)) for k in range(12)]
    got = [scheduled_mask_count(k, 12, 256, "cosine") for k in range(12)]
    assert got == expected
    assert all(isinstance(c, int) for c in got)
    assert got[-1] == 0
    # NumPy scalars count as static ints.
    assert scheduled_mask_count(np.int64(6), np.int32(12), 256) == expected[6]
    tensor_got = scheduled_mask_count(ops.arange(12, dtype="int32"), 12, 256)
    assert _np(tensor_got).tolist() == expected


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_scheduled_counts_tensor_and_python_agree(schedule):
    # Includes exact products (e.g. 256·cos(π/3) = 128, linear/square at
    # simple fractions) that naive float32 floor() gets wrong by one.
    configs = [(3, 256), (8, 4096), (24, 256), (10, 100)]
    steps, totals, sizes, exact = [], [], [], []
    for total, n in configs:
        python_counts = [scheduled_mask_count(k, total, n, schedule) for k in range(total)]
        reference = [
            math.floor(n * REFERENCE[schedule](np.float64(k + 1) / total) + 1e-9)
            for k in range(total)
        ]
        assert python_counts == reference
        assert np.all(np.diff(python_counts) <= 0) and python_counts[-1] == 0
        steps += range(total)
        totals += [total] * total
        sizes += [n] * total
        exact += python_counts
    # One call with tensor steps, step counts and token counts.
    tensor_counts = scheduled_mask_count(
        ops.convert_to_tensor(np.array(steps, "int32")),
        ops.convert_to_tensor(np.array(totals, "int32")),
        ops.convert_to_tensor(np.array(sizes, "int32")),
        schedule,
    )
    np.testing.assert_array_equal(_np(tensor_counts), exact)


def test_bad_arguments_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="schedule"):
        mask_ratio_schedule("cubic")
    with pytest.raises(ValueError, match="num_tokens"):
        sample_token_mask(2, 0)
    with pytest.raises(ValueError, match="batch_size"):
        sample_token_mask(0, 8)
    with pytest.raises(ValueError, match="batch_size"):
        sample_mask_rates(0)
    with pytest.raises(ValueError, match="rates"):
        sample_token_mask(2, 8, rates=1.5)
    with pytest.raises(ValueError, match="step"):
        scheduled_mask_count(12, 12, 256)
    with pytest.raises(ValueError, match="step"):
        scheduled_mask_count(-1, 12, 256)
    with pytest.raises(ValueError, match="step"):
        scheduled_mask_count(1.0, 12, 256)
    with pytest.raises(ValueError, match="num_tokens"):
        sample_token_mask(2, ops.convert_to_tensor(8))
    with pytest.raises(ValueError, match="total_steps"):
        scheduled_mask_count(0, 0, 256)
    with pytest.raises(ValueError, match="num_tokens"):
        scheduled_mask_count(0, 12, 0)
    with pytest.raises(ValueError, match="mask_token_id"):
        MaskTokens(-1)
    with pytest.raises(ValueError, match="schedule"):
        MaskTokens(8, schedule="nope")


def test_apply_mask_replaces_only_masked_ids():
    ids = ops.convert_to_tensor(np.array([[3, 4, 5], [6, 7, 0]], "int32"))
    mask = ops.convert_to_tensor(np.array([[True, False, True], [False, False, True]]))
    out = apply_mask(ids, mask, 8)
    np.testing.assert_array_equal(_np(out), [[8, 4, 8], [6, 7, 8]])
    assert _np(out).dtype == np.int32


def test_mask_tokens_layer_samples_applies_and_serializes():
    ids = np.random.default_rng(0).integers(0, 16, size=(4, 8, 8)).astype("int32")
    layer = MaskTokens(16, seed=11)
    masked, mask = layer(ids)
    masked, mask = _np(masked), _np(mask)
    assert mask.shape == (4, 8, 8) and mask.dtype == np.bool_
    np.testing.assert_array_equal(masked, np.where(mask, 16, ids))
    assert mask.reshape(4, -1).sum(axis=1).min() >= 1
    # The layer's seed generator advances; a fresh layer with the seed repeats.
    _, again = layer(ids)
    assert not np.array_equal(mask, _np(again))
    clone = MaskTokens.from_config(layer.get_config())
    assert clone.get_config()["mask_token_id"] == 16
    np.testing.assert_array_equal(_np(clone(ids)[1]), mask)
    # A given mask is applied as is.
    given = np.zeros((4, 8, 8), bool)
    given[0, 0, 0] = True
    masked, mask = layer(ids, token_mask=given)
    np.testing.assert_array_equal(_np(mask), given)
    np.testing.assert_array_equal(_np(masked), np.where(given, 16, ids))


def test_masking_runs_compiled():
    layer = MaskTokens(32, seed=4)

    def fn(ids, step):
        masked, mask = layer(ids)
        fixed = sample_token_mask(2, 16, seed=9, return_rates=True)
        return masked, mask, fixed, scheduled_mask_count(step, 12, 256)

    ids = np.arange(32, dtype="int32").reshape(2, 16)
    masked, mask, (fixed, rates), count = compile_function(layer, fn)(
        ids, ops.convert_to_tensor(4)
    )
    masked, mask = _np(masked), _np(mask)
    np.testing.assert_array_equal(masked, np.where(mask, 32, ids))
    np.testing.assert_array_equal(
        _np(fixed).sum(axis=1), _expected_counts(_np(rates), 16)
    )
    assert int(_np(count)) == math.floor(256 * math.cos(math.pi / 2 * 5 / 12))
