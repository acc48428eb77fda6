"""The parallel-decoding loop on synthetic logits: schedule, fixed tokens, seeds."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_muse.backend.random import make_seed
from keras_muse.layers import scheduled_mask_count
from keras_muse.samplers import filter_logits
from keras_muse.samplers import guidance_weight
from keras_muse.samplers import guide_logits
from keras_muse.samplers import keep_masked_counts
from keras_muse.samplers import parallel_decode
from keras_muse.samplers import sample_tokens

V = 32
MASK = V


def _logits_fn(table):
    """Logits that depend on the position and the step (a fixed table)."""
    table = ops.convert_to_tensor(table)

    def fn(ids, step):
        return table[None] + 0.1 * ops.cast(step, "float32") * ops.ones_like(table)[None]

    return fn


def _decode(batch=2, n=256, steps=12, mask=None, ids=None, seed=0, **kwargs):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(n, V)).astype("float32") * 2
    ids = np.zeros((batch, n), "int32") if ids is None else ids
    mask = np.ones((batch, n), bool) if mask is None else mask
    return parallel_decode(_logits_fn(table), ids, mask, make_seed(seed), steps, MASK, **kwargs)


def test_schedule_counts_per_step_are_exact():
    ids, history = _decode(return_history=True)
    history = np.asarray(history)
    masked = (history == MASK).sum(-1)  # [T, B]
    expected = [scheduled_mask_count(k, 12, 256) for k in range(12)]
    assert expected == [253, 247, 236, 221, 203, 181, 155, 128, 97, 66, 33, 0]
    for b in range(2):
        assert masked[:, b].tolist() == expected
    assert (np.asarray(ids) < V).all() and (np.asarray(ids) >= 0).all()


def test_decided_tokens_never_change():
    _, history = _decode(return_history=True, temperature=3.0)
    history = np.asarray(history)
    for k in range(1, history.shape[0]):
        decided = history[k - 1] != MASK
        np.testing.assert_array_equal(history[k][decided], history[k - 1][decided])


def test_inpainting_keeps_fixed_tokens_and_schedules_the_rest():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, V, (2, 256)).astype("int32")
    mask = np.zeros((2, 256), bool)
    mask[0, :100] = True
    mask[1, 50:60] = True
    out, history = _decode(ids=ids, mask=mask, steps=8, return_history=True)
    out, history = np.asarray(out), np.asarray(history)
    np.testing.assert_array_equal(out[~mask], ids[~mask])
    for k in range(8):
        np.testing.assert_array_equal(history[k][~mask], ids[~mask])
    # The schedule runs over the M initially masked positions.
    for b, m in ((0, 100), (1, 10)):
        counts = (history[:, b] == MASK).sum(-1)
        expected = [min(math.floor(m * math.cos(math.pi / 2 * (k + 1) / 8) + 1e-6), m) for k in range(8)]
        still = m
        for k in range(8):
            n = 0 if k == 7 else max(min(expected[k], still - 1), min(1, still))
            assert counts[k] == n, (b, k, counts.tolist())
            still = n


def test_nothing_to_fill_is_a_no_op():
    ids = np.arange(512, dtype="int32").reshape(2, 256) % V
    out = np.asarray(_decode(ids=ids, mask=np.zeros((2, 256), bool), steps=4))
    np.testing.assert_array_equal(out, ids)


def test_seeds():
    a, b, c = (np.asarray(_decode(seed=s)) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3


def test_top_k_1_and_no_choice_noise_is_greedy():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(256, V)).astype("float32") * 2
    out = parallel_decode(_logits_fn(table), np.zeros((1, 256), "int32"), np.ones((1, 256), bool),
                          make_seed(3), 12, MASK, top_k=1, choice_temperature=0.0)
    np.testing.assert_array_equal(np.asarray(out)[0], table.argmax(-1))


def test_filter_logits():
    logits = ops.convert_to_tensor(np.log(np.array([[0.5, 0.3, 0.15, 0.05]], "float32")))
    k2 = np.asarray(filter_logits(logits, top_k=2))
    assert np.isfinite(k2[0, :2]).all() and (k2[0, 2:] < -1e29).all()
    p = np.asarray(filter_logits(logits, top_p=0.7))   # 0.5 + 0.3 reach 0.7
    assert (p[0, :2] > -1e29).all() and (p[0, 2:] < -1e29).all()
    p = np.asarray(filter_logits(logits, top_p=0.4))   # the top token alone
    assert p[0, 0] > -1e29 and (p[0, 1:] < -1e29).all()


def test_keep_masked_counts_clipping():
    still = ops.convert_to_tensor(np.array([256, 2, 1, 0], "int32"))
    initial = ops.convert_to_tensor(np.array([256, 256, 256, 0], "int32"))
    n = np.asarray(keep_masked_counts(0, 12, initial, still))
    assert n.tolist() == [253, 1, 1, 0]
    n = np.asarray(keep_masked_counts(11, 12, initial, still))
    assert n.tolist() == [0, 0, 0, 0]


def test_guidance():
    assert float(guidance_weight(4.0, 0, 4)) == 1.0
    assert float(guidance_weight(4.0, 3, 4)) == 4.0
    assert float(guidance_weight(4.0, 0, 4, "constant")) == 4.0
    c, u = np.float32([1.0, 2.0]), np.float32([0.5, 3.0])
    np.testing.assert_allclose(np.asarray(guide_logits(c, u, 2.0)), 3 * c - 2 * u)
    with pytest.raises(ValueError, match="guidance_schedule"):
        guidance_weight(1.0, 0, 4, "cubic")


def test_runs_compiled():
    from keras_muse.backend import compile_function

    rng = np.random.default_rng(0)
    table = rng.normal(size=(16, V)).astype("float32") * 2
    holder = keras.Model()
    fn = compile_function(holder, lambda ids, mask, seed: parallel_decode(_logits_fn(table), ids, mask, seed, 4, MASK))
    args = (np.zeros((2, 16), "int32"), np.ones((2, 16), bool), make_seed(0))
    out = np.asarray(fn(*args))
    np.testing.assert_array_equal(out, np.asarray(fn(*args)))
    if keras.config.backend() == "jax":
        # JAX's random stream is the same compiled or not (TF's XLA kernels
        # differ from its eager ones).
        np.testing.assert_array_equal(out, np.asarray(_decode(n=16, steps=4)))


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.5, None), (1.0, 3)])
def test_sampling_frequencies_match_the_distribution(temperature, top_k):
    # One decoding step over 8192 positions with the same logits: the token
    # frequencies must follow softmax(logits / temperature) (renormalized
    # over the top-k). Run on every backend: their RNG streams differ, their
    # distributions must not.
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0] + [-30.0] * (V - 6), "float32")
    n = 8192
    table = np.tile(logits, (n, 1))
    out = np.asarray(parallel_decode(_logits_fn(table), np.zeros((1, n), "int32"), np.ones((1, n), bool),
                                     make_seed(7), 1, MASK, temperature=temperature, top_k=top_k))[0]
    p = np.exp(logits / temperature)
    if top_k is not None:
        p[np.argsort(-logits)[top_k:]] = 0.0
    p /= p.sum()
    freq = np.bincount(out, minlength=V) / n
    np.testing.assert_allclose(freq, p, atol=0.015)


@pytest.mark.parametrize("vocab,top_p", [(1000, None), (1000, 0.6), (8192, None), (7, None)])
def test_two_level_sampling_follows_the_distribution_and_reports_its_log_prob(vocab, top_p):
    # Many positions sharing one row of logits spread over several blocks of
    # the vocabulary (1000 and 7 are not powers of two: the padded tail must
    # never be drawn). Frequencies must follow softmax(logits / T), filtered
    # tokens must never appear, and the returned log-probability must be the
    # full log-softmax at the drawn id.
    rng = np.random.default_rng(vocab)
    row = (rng.normal(size=vocab) * 1.5).astype("float32")
    n, temperature = 20000, 0.7
    ids, logp = sample_tokens(np.tile(row, (n, 1))[None], make_seed(3), 0, temperature=temperature, top_p=top_p)
    ids, logp = np.asarray(ids)[0], np.asarray(logp)[0]
    z = row / temperature
    if top_p is not None:
        kept = np.asarray(filter_logits(ops.convert_to_tensor(z[None]), top_p=top_p))[0] > -1e29
        z = np.where(kept, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    assert ids.min() >= 0 and ids.max() < vocab
    assert np.all(p[ids] > 0), "a filtered token was drawn"
    np.testing.assert_allclose(logp, np.log(p[ids]), atol=1e-4)
    top = np.argsort(-p)[:20]
    freq = np.bincount(ids, minlength=vocab) / n
    np.testing.assert_allclose(freq[top], p[top], atol=0.012)
    # The mass of contiguous id ranges (what the first level picks from).
    edges = np.linspace(0, vocab, min(vocab, 16) + 1).astype(int)
    np.testing.assert_allclose(np.add.reduceat(freq, edges[:-1]), np.add.reduceat(p, edges[:-1]), atol=0.012)
