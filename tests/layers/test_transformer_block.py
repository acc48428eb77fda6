import numpy as np
import pytest

from keras_muse.layers import MuseTransformerBlock


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    context = rng.normal(size=(2, 5, 16)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    return x, context, mask


def test_shapes_and_cross_attention_is_used():
    x, context, mask = _inputs()
    block = MuseTransformerBlock(16, 4, 32)
    y = np.asarray(block(x, context=context, context_mask=mask))
    assert y.shape == x.shape
    other = context.copy()
    other[:, :2] += 1.0
    y2 = np.asarray(block(x, context=other, context_mask=mask))
    assert np.abs(y - y2).max() > 1e-4


def test_padding_is_ignored_and_cached_key_values_match():
    x, context, mask = _inputs()
    block = MuseTransformerBlock(16, 4, 32)
    y = np.asarray(block(x, context=context, context_mask=mask))
    padded = context.copy()
    padded[0, 3:] = 50.0  # only padded positions change
    np.testing.assert_allclose(
        np.asarray(block(x, context=padded, context_mask=mask)), y, atol=1e-5
    )
    kv = block.cross_key_value(context)
    np.testing.assert_allclose(
        np.asarray(block(x, context_mask=mask, cross_key_value=kv)), y, atol=1e-5
    )


def test_self_attention_only_block_and_config():
    x, _, _ = _inputs()
    block = MuseTransformerBlock(16, 2, 32, cross_attention=False, dropout=0.1)
    assert np.asarray(block(x)).shape == x.shape
    clone = MuseTransformerBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        MuseTransformerBlock(10, 4, 32)
    x, _, _ = _inputs()
    with pytest.raises(ValueError, match="context"):
        MuseTransformerBlock(16, 4, 32)(x)


@pytest.mark.parametrize("partition", ["block", "grid"])
def test_multi_axis_partitions_round_trip_and_group_the_right_tokens(partition):
    from keras_muse.layers.transformer_block import merge_tokens, partition_tokens

    x = np.arange(2 * 8 * 8, dtype="float32").reshape(2, 64, 1)
    groups = np.asarray(partition_tokens(x, (8, 8), 4, partition))
    assert groups.shape == (8, 16, 1)
    np.testing.assert_array_equal(np.asarray(merge_tokens(groups, (8, 8), 4, partition)), x)
    rows, cols = np.divmod(groups[0, :, 0].astype(int), 8)
    if partition == "block":  # one 4x4 tile of neighbours
        assert set(rows) == {0, 1, 2, 3} and set(cols) == {0, 1, 2, 3}
    else:  # the same offset in every tile: stride 2 over the whole grid
        assert set(rows) == {0, 2, 4, 6} and set(cols) == {0, 2, 4, 6}


@pytest.mark.parametrize("partition", ["block", "grid"])
def test_windowed_self_attention_only_mixes_within_a_group(partition):
    block = MuseTransformerBlock(
        16, 2, 32, cross_attention=False, attention_window=4,
        self_attention_partition=partition, grid_size=(8, 8),
    )
    x = np.random.default_rng(0).normal(size=(1, 64, 16)).astype("float32")
    y = np.asarray(block(x))
    # Token 0 is in the group of token 1 (block) or of token 2 (grid), not of
    # token 4 (block: next tile) or of token 1 (grid: other offset).
    inside, outside = (1, 4) if partition == "block" else (2, 1)
    for j, should_change in ((inside, True), (outside, False)):
        changed = x.copy()
        changed[0, j] = -x[0, j]  # (a constant shift would vanish in the pre-norm)
        delta = np.abs(np.asarray(block(changed))[0, 0] - y[0, 0]).max()
        assert (delta > 1e-4) == should_change, (j, delta)
    clone = MuseTransformerBlock.from_config(block.get_config())
    assert (clone.attention_window, clone.self_attention_partition, clone.grid_size) == (4, partition, (8, 8))


def test_windowed_attention_errors():
    with pytest.raises(ValueError, match="grid_size"):
        MuseTransformerBlock(16, 2, 32, attention_window=3, grid_size=(8, 8))
    with pytest.raises(ValueError, match="grid_size"):
        MuseTransformerBlock(16, 2, 32, attention_window=4)
    with pytest.raises(ValueError, match="self_attention_partition"):
        MuseTransformerBlock(16, 2, 32, attention_window=4, grid_size=(8, 8), self_attention_partition="axis")



def test_cross_attention_weights_are_the_ones_the_block_uses():
    import keras

    x, text, mask = _inputs()
    block = MuseTransformerBlock(16, 4, 32)
    expected = np.asarray(block(x, context=text, context_mask=mask))
    weights = np.asarray(block.cross_attention_weights(x, text, mask))
    assert weights.shape == (2, 4, 6, 5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(weights[0, :, :, 3:] < 1e-6)  # padding gets no attention
    # Re-assembling the block's output from these weights reproduces `call`.
    attn = block.cross_attn
    _, v = attn.key_value(text)
    mixed = np.einsum("bhnl,blhd->bnhd", weights, np.asarray(v)).reshape(2, 6, -1)
    y = block._self_attend(x) + attn.output_dense(mixed)
    h = keras.ops.gelu(block.mlp_in(block.mlp_norm(y)), approximate=True)
    y = y + block.mlp_out(h)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-4)
    with pytest.raises(ValueError, match="no cross-attention"):
        MuseTransformerBlock(16, 4, 32, cross_attention=False).cross_attention_weights(x, text, mask)


def test_inference_attention_equals_the_training_form():
    # Outside training the CPU path normalizes after the value product.
    from keras_muse.layers.transformer_block import attention

    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 6, 4, 8)).astype("float32") * 3 for _ in range(3))
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6], bool)[:, None, None, :]
    for m in (None, mask):
        np.testing.assert_allclose(
            np.asarray(attention(q, k, v, mask=m, training=False)),
            np.asarray(attention(q, k, v, mask=m, training=True)), atol=1e-5,
        )
    # Padded keys change nothing.
    k2, v2 = k.copy(), v.copy()
    k2[0, 3:] = 100.0
    v2[0, 3:] = -100.0
    np.testing.assert_allclose(np.asarray(attention(q, k2, v2, mask=mask)),
                               np.asarray(attention(q, k, v, mask=mask)), atol=1e-5)


def test_single_position_rows_take_the_constant_cross_attention_output():
    # Rows whose context has one real position: cross-attention returns that
    # position's projected value for every query, so the block's shortcut
    # (`cross_key_value(context, single_position=...)`) must equal attending.
    x, context, mask = _inputs()
    rng = np.random.default_rng(5)
    x = np.concatenate([x, rng.normal(size=x.shape).astype("float32")])
    null = rng.normal(size=(2, 5, 16)).astype("float32")
    null_mask = np.zeros((2, 5), bool)
    null_mask[0, 0] = null_mask[1, 3] = True
    block = MuseTransformerBlock(16, 4, 32)
    full = np.asarray(
        block(x, context=np.concatenate([context, null]), context_mask=np.concatenate([mask, null_mask]))
    )
    single = np.stack([null[0, 0], null[1, 3]])[:, None]
    kv = block.cross_key_value(context, single_position=single)
    short = np.asarray(block(x, context_mask=mask, cross_key_value=kv))
    np.testing.assert_allclose(short, full, atol=1e-5)
    # The constant is what the rows get: another single position changes them.
    kv2 = block.cross_key_value(context, single_position=single + 1.0)
    other = np.asarray(block(x, context_mask=mask, cross_key_value=kv2))
    np.testing.assert_allclose(other[:2], short[:2], atol=1e-6)
    assert np.abs(other[2:] - short[2:]).max() > 1e-3


@pytest.mark.parametrize("parts", [2, 4])
def test_batch_split_cpu_attention_matches_one_piece(monkeypatch, parts):
    # The CPU attention core may run in batch pieces (ATTENTION_BATCH_PARTS):
    # outputs and gradients must not change, with a per-example and a
    # broadcast mask, and a batch the parts do not divide falls back to one piece.
    import jax
    import keras

    from keras_muse.layers import transformer_block as tb

    if keras.backend.backend() != "jax":
        pytest.skip("gradients taken with jax.grad")
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(4, 6, 2, 8)).astype("float32") for _ in range(3))
    masks = [None, rng.random((4, 1, 1, 6)) > 0.3, rng.random((1, 1, 6, 6)) > 0.3]
    masks[1][:, ..., 0] = True

    def loss(q, k, v, mask):
        return keras.ops.sum(tb.attention(q, k, v, mask) ** 2)

    for mask in masks:
        monkeypatch.setattr(tb, "ATTENTION_BATCH_PARTS", 1)
        ref = tb.attention(q, k, v, mask)
        ref_grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, mask)
        monkeypatch.setattr(tb, "ATTENTION_BATCH_PARTS", parts)
        np.testing.assert_allclose(tb.attention(q, k, v, mask), ref, atol=1e-5)
        for got, want in zip(jax.grad(loss, argnums=(0, 1, 2))(q, k, v, mask), ref_grads):
            np.testing.assert_allclose(got, want, atol=1e-4)
    assert tb._batch_parts(4) == parts and tb._batch_parts(3) == 1 and tb._batch_parts(None) == 1


def test_km_attn_split_is_read_and_checked(monkeypatch):
    from keras_muse.layers import transformer_block as tb

    monkeypatch.delenv("KM_ATTN_SPLIT", raising=False)
    assert tb._parts_from_env() == 1
    monkeypatch.setenv("KM_ATTN_SPLIT", "4")
    assert tb._parts_from_env() == 4
    for bad in ("0", "-1", "two", ""):
        monkeypatch.setenv("KM_ATTN_SPLIT", bad)
        with pytest.raises(ValueError, match="KM_ATTN_SPLIT"):
            tb._parts_from_env()
