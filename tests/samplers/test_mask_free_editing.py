"""The mask-free editing loop on synthetic logits."""

import numpy as np
import pytest
from keras import ops

from keras_muse.backend.random import make_seed
from keras_muse.samplers import resample_random_tokens

V, MASK = 16, 16


def _recorder(seen):
    def fn(ids, step):
        seen.append(ids)
        # Always predicts token 7 (top_k=1 makes the sample exact).
        return ops.one_hot(ops.full(ops.shape(ids), 7), V) * 50.0

    return fn


def test_each_round_resamples_exactly_the_fraction():
    ids = np.zeros((2, 100), "int32")
    out = np.asarray(resample_random_tokens(_recorder([]), ids, make_seed(0), 1, 0.08, MASK, top_k=1))
    assert ((out == 7).sum(axis=1) == 8).all()  # ceil(0.08 * 100)
    out = np.asarray(resample_random_tokens(_recorder([]), ids, make_seed(0), 30, 0.08, MASK, top_k=1))
    assert ((out == 7).sum(axis=1) > 8).all()  # later rounds pick other positions


def test_editable_mask_and_seeds():
    ids = np.zeros((1, 64), "int32")
    editable = np.zeros((1, 64), bool)
    editable[0, :10] = True
    out = np.asarray(resample_random_tokens(_recorder([]), ids, make_seed(1), 20, 0.25, MASK,
                                            top_k=1, editable_mask=editable))
    assert (out[0, 10:] == 0).all() and (out[0, :10] == 7).all()
    a = np.asarray(resample_random_tokens(_recorder([]), ids, make_seed(2), 3, 0.1, MASK, top_k=1))
    b = np.asarray(resample_random_tokens(_recorder([]), ids, make_seed(2), 3, 0.1, MASK, top_k=1))
    c = np.asarray(resample_random_tokens(_recorder([]), ids, make_seed(3), 3, 0.1, MASK, top_k=1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_arguments():
    with pytest.raises(ValueError, match="iterations"):
        resample_random_tokens(_recorder([]), np.zeros((1, 4), "int32"), make_seed(0), 0, 0.1, MASK)
    with pytest.raises(ValueError, match="fraction"):
        resample_random_tokens(_recorder([]), np.zeros((1, 4), "int32"), make_seed(0), 1, 0.0, MASK)
