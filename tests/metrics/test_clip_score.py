import numpy as np
import pytest

from keras_muse.datasets import shapes
from keras_muse.metrics import clip_score
from keras_muse.metrics import CLIPScore
from keras_muse.metrics import WeightsUnavailableError


def test_scores_from_embeddings():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[5.0, 0.0], [1.0, 0.0], [-1.0, -1.0], [6.0, 8.0]])
    np.testing.assert_allclose(clip_score.clip_score_from_embeddings(a, b), [100, 0, 0, 100], atol=1e-4)
    c = np.array([[1.0, 1.0]])
    np.testing.assert_allclose(clip_score.clip_score_from_embeddings(c, [[1.0, 0.0]]), [100 / np.sqrt(2)], rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        clip_score.clip_score_from_embeddings(a, b[:2])


def test_plug_in_embedding_functions_rank_matching_pairs_higher():
    # A toy "CLIP": one-hot of an image's ink colour and of the prompt's first colour word.
    names = list(shapes.COLORS)

    def image_fn(images):
        flat = images.reshape(len(images), -1, 3).astype(np.float32)
        darkest = np.take_along_axis(flat, np.argsort(flat.sum(-1), axis=1)[:, :4, None], axis=1).mean(1)
        palette = np.array([shapes.COLORS[c] for c in names], np.float32)
        return np.eye(len(names))[np.argmin(((darkest[:, None] - palette[None]) ** 2).sum(-1), axis=1)]

    def text_fn(prompts):
        return np.stack([np.eye(len(names))[names.index(next(w for w in p.split() if w in names))]
                         for p in prompts])

    images = np.stack([shapes.render_scene({"background": 250, "objects": [
        {"shape": "square", "color": c, "size": "large", "position": "center", "center": (0.5, 0.5),
         "radius": 0.2}]}, 32) for c in names])
    prompts = [f"a large {c} square" for c in names]
    scorer = CLIPScore(image_fn, text_fn)
    np.testing.assert_allclose(scorer(images, prompts, batch_size=3), 100.0)
    assert scorer.score(images, prompts[1:] + prompts[:1]) == 0.0
    with pytest.raises(ValueError, match="one prompt each"):
        scorer(images, prompts[:2])
    with pytest.raises(ValueError, match="callable"):
        CLIPScore(image_fn, "not a function")


def test_from_preset_offline_error_is_clear(monkeypatch):
    import keras_hub

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com' ([Errno -3] Temporary failure in name resolution)")

    monkeypatch.setattr(keras_hub.models.CLIPBackbone, "from_preset", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        CLIPScore.from_preset("clip_vit_base_patch16")
    message = str(info.value)
    assert "'clip_vit_base_patch16'" in message and "kaggle" in message.lower()
    assert "CLIPScore(image_embedding_fn, text_embedding_fn)" in message


def _tiny_clip():
    """A randomly initialized keras-hub CLIP with a BPE vocabulary of the shapes words."""
    import keras
    import keras_hub

    words = sorted({w for i in range(60) for w in shapes.make_example(i, 16)[1].replace(",", "").split()})
    vocab, merges = {}, []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        for piece in pieces:
            vocab.setdefault(piece, len(vocab))
        joined = pieces[0]
        for piece in pieces[1:]:
            if f"{joined} {piece}" not in merges:
                merges.append(f"{joined} {piece}")
            joined += piece
            vocab.setdefault(joined, len(vocab))
    for token in (",</w>", "<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(token, len(vocab))
    tokenizer = keras_hub.models.CLIPTokenizer(vocabulary=vocab, merges=merges)
    converter = keras_hub.layers.CLIPImageConverter(image_size=(32, 32), scale=1 / 255.0)
    preprocessor = keras_hub.models.CLIPPreprocessor(tokenizer, converter, sequence_length=16)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.CLIPBackbone(
        keras_hub.models.CLIPVisionEncoder(patch_size=8, hidden_dim=16, num_layers=1, num_heads=2,
                                           intermediate_dim=32, image_shape=(32, 32, 3)),
        keras_hub.models.CLIPTextEncoder(vocabulary_size=len(vocab), embedding_dim=16, hidden_dim=16,
                                         num_layers=1, num_heads=2, intermediate_dim=32, max_sequence_length=16),
        projection_dim=8,
    )
    return backbone, preprocessor


@pytest.mark.slow
def test_keras_hub_clip_backbone_scores_match_its_own_head():
    backbone, preprocessor = _tiny_clip()
    scorer = CLIPScore.from_backbone(backbone, preprocessor)
    images, prompts, _ = shapes.make_arrays(6, resolution=64, seed=2)
    scores = scorer(images, prompts, batch_size=4)
    assert scores.shape == (6,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 100))
    # The same cosines as the backbone's own CLIP head (its logits / exp(logit_scale)).
    inputs = preprocessor({"prompts": prompts, "images": images.astype("float32")})
    logits = np.asarray(backbone({"images": inputs["images"], "token_ids": inputs["token_ids"]})["vision_logits"])
    cosine = np.diag(logits) / np.exp(float(np.asarray(backbone.get_layer("clip_head").logit_scale)))
    np.testing.assert_allclose(scores, 100 * np.clip(cosine, 0, None), atol=1e-3)
    # Unclipped too: the scorer's embeddings give the head's cosines, whatever their sign.
    image_emb, text_emb = scorer.image_embedding_fn(images), scorer.text_embedding_fn(prompts)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(np.sum(unit(image_emb) * unit(text_emb), axis=1), cosine, atol=1e-5)
