import os

import numpy as np
import pytest

from keras_muse.models.text import MuseTextEncoder
from keras_muse.models.text import PromptTruncationWarning
from keras_muse.models.text import StaleTextEmbeddingCacheError
from keras_muse.models.text import TextEmbeddingCache


@pytest.fixture(scope="module")
def cache_captions(captions):
    # Repeats on purpose: identical captions share one stored row.
    return list(captions[:20]) + list(captions[:4])


# With the 64-piece test vocabulary some captions exceed 15 tokens; `build`
# reports them once (checked in test_round_trip_is_exact).
pytestmark = pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")


@pytest.fixture(scope="module")
def built(encoder, cache_captions, tmp_path_factory):
    path = tmp_path_factory.mktemp("caches") / "cache"
    return TextEmbeddingCache.build(path, cache_captions, encoder, batch_size=2)


def test_build_reports_truncation_once(encoder, captions, tmp_path):
    # 40 captions at batch_size=1 are encoded in 3 chunks of <= 16.
    with pytest.warns(PromptTruncationWarning) as record:
        TextEmbeddingCache.build(tmp_path / "c", captions[:40], encoder, batch_size=1)
    assert len(record) == 1
    assert "distinct captions were truncated to sequence_length=16" in str(record[0].message)


def test_round_trip_is_exact(built, encoder, cache_captions):
    # 20 distinct captions + the empty prompt, always stored.
    assert len(built) == 24 and built.meta["num_unique"] == 21
    assert not [p for p in os.listdir(os.path.dirname(built.path)) if p.startswith(".")]
    loaded = TextEmbeddingCache.load(built.path, cache_captions, encoder)
    assert loaded.captions == cache_captions
    embeddings, mask = encoder.encode_text(cache_captions, batch_size=2)
    out = loaded.get(np.arange(24))
    np.testing.assert_array_equal(out["text_embeddings"], embeddings)
    np.testing.assert_array_equal(out["text_padding_mask"], mask)
    assert out["text_embeddings"].dtype == np.float32 and out["text_padding_mask"].dtype == bool
    np.testing.assert_array_equal(loaded[21]["text_embeddings"], embeddings[1])


def test_unconditional_embeddings_are_the_empty_prompts(built, encoder):
    emb, mask = built.unconditional()
    expected_emb, expected_mask = encoder.encode_text([""])
    np.testing.assert_allclose(emb, expected_emb[0], atol=1e-6)
    np.testing.assert_array_equal(mask, expected_mask[0])
    assert mask.sum() == 1  # the end token only


def test_stale_captions_are_detected(built, cache_captions):
    changed = list(cache_captions)
    changed[3] = "a purple star"
    with pytest.raises(StaleTextEmbeddingCacheError, match="other captions"):
        TextEmbeddingCache.load(built.path, changed)
    with pytest.raises(StaleTextEmbeddingCacheError, match="other captions"):
        TextEmbeddingCache.load(built.path, cache_captions[::-1])


def test_stale_encoder_is_detected(built, encoder, cache_captions, tokenizer):
    from keras_muse.models.text import MuseTextPreprocessor

    config = encoder.get_config()
    # Same configuration, other weights: caught by re-encoding stored captions.
    other = MuseTextEncoder.from_config(config)
    other.set_weights(encoder.get_weights())
    other.preprocessor = encoder.preprocessor
    TextEmbeddingCache.load(built.path, cache_captions, other)  # identical: fresh
    weight = other.weights[-1]
    weight.assign(np.asarray(weight) * 1.5)
    with pytest.raises(StaleTextEmbeddingCacheError, match="current weights"):
        TextEmbeddingCache.load(built.path, cache_captions, other)
    # Another packing: caught by the fingerprint, without running anything.
    other.preprocessor = MuseTextPreprocessor(tokenizer, sequence_length=32)
    with pytest.raises(StaleTextEmbeddingCacheError, match="configuration"):
        TextEmbeddingCache.load(built.path, cache_captions, other)


def test_load_or_build_rebuilds_stale(encoder, cache_captions, tmp_path):
    path = tmp_path / "cache"
    # batch_size=2 throughout: one compiled shape for the whole module.
    first = TextEmbeddingCache.load_or_build(path, cache_captions[:6], encoder, batch_size=2)
    assert len(first) == 6
    with pytest.warns(UserWarning, match="Rebuilding"):
        second = TextEmbeddingCache.load_or_build(path, cache_captions[:8], encoder, batch_size=2)
    assert len(second) == 8 and second.captions == cache_captions[:8]
    assert sorted(os.listdir(tmp_path)) == ["cache"]


def test_float16_storage(encoder, cache_captions, tmp_path):
    cache = TextEmbeddingCache.build(
        tmp_path / "c16", cache_captions[:4], encoder, batch_size=2, dtype="float16"
    )
    assert cache.text_embeddings.dtype == np.float16
    TextEmbeddingCache.load(cache.path, cache_captions[:4], encoder)


def test_tf_dataset_zips_extra_arrays_by_index(built, cache_captions):
    images = np.arange(24, dtype="int32")  # stands in for images: row i -> i
    ds = built.as_tf_dataset(
        batch_size=5, shuffle=True, seed=3, extra={"images": images}, include_captions=True
    )
    batches = list(ds)
    assert [len(b["images"]) for b in batches] == [5, 5, 5, 5, 4]
    seen = np.concatenate([b["images"].numpy() for b in batches])
    assert sorted(seen.tolist()) == list(range(24))
    assert seen.tolist() != list(range(24))  # shuffled
    batch = batches[0]
    assert batch["text_embeddings"].shape == (5, 16, 64)
    assert batch["text_padding_mask"].dtype.name == "bool"
    expected = built.get(batch["images"].numpy())
    np.testing.assert_array_equal(batch["text_embeddings"].numpy(), expected["text_embeddings"])
    assert [c.decode() for c in batch["captions"].numpy()] == [
        cache_captions[i] for i in batch["images"].numpy()
    ]
    single = next(iter(built.as_tf_dataset()))
    assert single["text_embeddings"].shape == (16, 64)
    repeated = built.as_tf_dataset(batch_size=10, repeat=True)
    assert repeated.element_spec["text_embeddings"].shape == (10, 16, 64)


def test_bad_inputs(built, encoder, bare_encoder, tmp_path):
    with pytest.raises(ValueError, match="rows"):
        built.as_tf_dataset(extra={"images": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="reserved"):
        built.as_tf_dataset(extra={"text_embeddings": np.zeros((24,))})
    with pytest.raises(ValueError, match="batch_size"):
        built.as_tf_dataset(batch_size=0)
    with pytest.raises(ValueError, match="at least one caption"):
        TextEmbeddingCache.build(tmp_path / "x", [], encoder)
    with pytest.raises(ValueError, match="only strings"):
        TextEmbeddingCache.build(tmp_path / "x", ["a", 1], encoder)
    with pytest.raises(ValueError, match="dtype"):
        TextEmbeddingCache.build(tmp_path / "x", ["a"], encoder, dtype="bfloat16")
    with pytest.raises(ValueError, match="preprocessor"):
        TextEmbeddingCache.build(tmp_path / "x", ["a"], bare_encoder)
    with pytest.raises(ValueError, match="not a text embedding cache"):
        TextEmbeddingCache(tmp_path)


def test_corrupt_cache_is_reported(encoder, cache_captions, tmp_path):
    cache = TextEmbeddingCache.build(tmp_path / "c", cache_captions[:3], encoder, batch_size=2)
    os.remove(os.path.join(cache.path, "text_padding_mask.npy"))
    with pytest.raises(ValueError, match="corrupt"):
        TextEmbeddingCache.load(cache.path)
