"""MuseSuperResolution: training with `fit`, sampling, editing and presets (§2.4).

Tiny models: muse_super_res_tiny (4x4 low-res -> 8x8 high-res tokens,
codebooks 64), a 1-layer width-16 T5, and two codebook-64 f4 VQGANs (16x16
images -> 4x4 ids, 32x32 -> 8x8).
"""

from unittest import mock

import keras
import numpy as np
import pytest

from keras_muse.datasets import shapes
from keras_muse.models import MuseSuperResBackbone
from keras_muse.models import MuseSuperResolution
from keras_muse.models import MuseTextToImage

from helpers import make_tiny_text_encoder
from helpers import make_vqgan

pytestmark = pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")

N = 32


@pytest.fixture(scope="module")
def data():
    _, captions, _ = shapes.make_arrays(N, seed=5)
    low = (np.arange(16)[None, :] * 5 + (np.arange(N)[:, None] % 4) * 7) % 64
    # High-res ids a function of the low-res ones (each low-res token
    # becomes a 2x2 block), so the model can learn them from the condition.
    high = np.repeat(np.repeat(low.reshape(N, 4, 4), 2, 1), 2, 2)
    high = (high + np.array([[0, 1], [2, 3]] * 4 * 4).reshape(1, 8, 8)) % 64
    return low.reshape(N, 4, 4).astype("int32"), high.astype("int32"), list(captions)


def _backbone(seed=0):
    keras.utils.set_random_seed(seed)
    return MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False)


def _task(preprocessor, vqgans=True, **kwargs):
    kwargs.setdefault("seed", 0)
    extra = dict(vqgan=make_vqgan(factor=4), low_res_vqgan=make_vqgan(factor=4)) if vqgans else {}
    task = MuseSuperResolution(
        _backbone(), text_encoder=make_tiny_text_encoder(preprocessor), **extra, **kwargs
    )
    task.compile(optimizer=keras.optimizers.Adam(3e-3))
    return task


def _spy_backbone_inputs(task, x, training=True):
    """Runs one masked forward pass and returns what the backbone received."""
    seen = {}
    task._prepare_unconditional()  # as `fit` does
    original = MuseSuperResBackbone.hidden_states

    def spy(self, inputs, *args, **kwargs):
        seen.update({k: np.asarray(v) for k, v in inputs.items()})
        return original(self, inputs, *args, **kwargs)

    with mock.patch.object(MuseSuperResBackbone, "hidden_states", spy):
        loss, _ = task._masked_forward(x, training=training)()
    return seen, float(loss)


def _tokenized(task, low, high, captions):
    tokens = task.preprocessor(captions)
    return {
        "low_res_token_ids": low,
        "token_ids": high,
        "text_token_ids": np.asarray(tokens["token_ids"]),
        "text_padding_mask": np.asarray(tokens["padding_mask"]),
    }


def test_fit_learns_from_low_res_tokens(preprocessor, data):
    low, high, captions = data
    task = _task(preprocessor)
    history = task.fit(((low, high), captions), batch_size=8, epochs=15, verbose=0).history
    assert set(history) == {"loss", "masked_accuracy"}
    assert history["loss"][-1] < 0.7 * history["loss"][0], history["loss"]
    # Dict form and precomputed-free images form go through the same step.
    task.fit({"low_res_token_ids": low, "token_ids": high.reshape(N, -1), "prompts": captions},
             batch_size=8, verbose=0)


def test_masks_only_high_res_tokens_and_drops_only_text(preprocessor, data):
    low, high, captions = data
    task = _task(preprocessor, condition_dropout=1.0)
    x = _tokenized(task, low.reshape(N, -1), high.reshape(N, -1), captions)
    seen, loss = _spy_backbone_inputs(task, x)
    assert np.isfinite(loss)
    mask_id = task.backbone.mask_token_id
    # High-res tokens are masked (at least one per example), low-res never.
    assert ((seen["token_ids"] == mask_id).sum(axis=1) >= 1).all()
    kept = seen["token_ids"] != mask_id
    np.testing.assert_array_equal(seen["token_ids"][kept], x["token_ids"][kept])
    np.testing.assert_array_equal(seen["low_res_token_ids"], x["low_res_token_ids"])
    # Condition dropout 1.0: every example gets the empty prompt's
    # embeddings, while the low-res condition stays.
    empty = task.text_encoder.encode_text([""])[0][0]
    np.testing.assert_allclose(seen["text_embeddings"], np.broadcast_to(empty, seen["text_embeddings"].shape),
                               atol=1e-5)


def test_fit_on_images_at_two_resolutions(preprocessor):
    images, captions, _ = shapes.make_arrays(8, resolution=32, seed=1)
    low_images, _, _ = shapes.make_arrays(8, resolution=16, seed=1)
    task = _task(preprocessor)
    history = task.fit({"low_res_images": low_images, "images": images, "prompts": captions},
                       batch_size=4, verbose=0).history
    assert np.isfinite(history["loss"][-1])


def test_per_token_sample_weight_is_over_the_high_res_grid(preprocessor, data):
    low, high, captions = data
    task = _task(preprocessor)
    before = [np.array(w) for w in task.backbone.get_weights()]
    # Weight 0 on every token: no gradient, so Adam leaves the weights alone.
    history = task.fit(((low, high), captions), sample_weight=np.zeros((N, 8, 8), "float32"),
                       batch_size=8, verbose=0).history
    assert history["loss"][-1] == 0.0
    for a, b in zip(before, task.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    weights = np.where(np.arange(64).reshape(1, 8, 8) < 32, 4.0, 1.0) * np.ones((N, 1, 1))
    history = task.fit(((low, high), captions), sample_weight=weights, batch_size=8, verbose=0).history
    assert history["loss"][-1] > 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, task.backbone.get_weights()))
    # The low-res grid's shape is not the loss's.
    with pytest.raises(ValueError, match=r"sample_weight.*\[batch, 64\]"):
        task.fit(((low, high), captions), sample_weight=np.ones((N, 4, 4)), verbose=0)


def test_bad_training_data(preprocessor, data):
    low, high, captions = data
    task = _task(preprocessor, vqgans=False)
    with pytest.raises(ValueError, match="low_res_token_ids.*16 tokens"):
        task.fit(((low.reshape(N, -1)[:, :9], high), captions), verbose=0)
    with pytest.raises(ValueError, match=r"low_res_token_ids.*\[0, 63\]"):
        task.fit(((low + 64, high), captions), verbose=0)
    with pytest.raises(ValueError, match="exactly one of"):
        task.fit({"token_ids": high, "prompts": captions}, verbose=0)
    with pytest.raises(ValueError, match="low_res_vqgan"):
        task.fit(((np.zeros((N, 16, 16, 3), "uint8"), high), captions), verbose=0)
    with pytest.raises(ValueError, match="text batch must equal the image batch"):
        task.fit(((low[:-1], high), captions), verbose=0)
    with pytest.raises(ValueError, match="low-res"):
        MuseSuperResolution(_backbone(), low_res_vqgan=make_vqgan(factor=4, codebook_size=32))
    with pytest.raises(ValueError, match="MuseSuperResBackbone"):
        MuseSuperResolution(MuseTextToImage.backbone_cls.from_preset("muse_tiny", load_weights=False))


def test_upsample_is_seeded_and_compiled_once(preprocessor, data):
    low, _, captions = data
    task = _task(preprocessor)
    out = task.upsample(low[:2], captions[:2], seed=0, return_tokens=True)
    assert out["images"].shape == (2, 32, 32, 3) and out["images"].dtype == np.uint8
    assert out["token_ids"].shape == (2, 8, 8)
    again = task.upsample(low[:2], captions[:2], seed=0, return_tokens=True)
    np.testing.assert_array_equal(again["token_ids"], out["token_ids"])
    other = task.upsample(low[:2], captions[:2], seed=1, return_tokens=True)
    assert (other["token_ids"] != out["token_ids"]).any()
    assert task._generate_traces == 1
    # Low-res images are tokenized by the low-res VQGAN.
    low_images, _, _ = shapes.make_arrays(2, resolution=16, seed=2)
    ids = task.low_res_vqgan.encode(task.low_res_vqgan.preprocess_images(low_images))
    a = task.upsample(low_images, captions[:2], seed=3, return_tokens=True)["token_ids"]
    b = task.upsample(np.asarray(ids), captions[:2], seed=3, return_tokens=True)["token_ids"]
    np.testing.assert_array_equal(a, b)


def test_high_res_inpainting_keeps_the_rest(preprocessor, data):
    low, _, captions = data
    task = _task(preprocessor)
    images, _, _ = shapes.make_arrays(2, resolution=32, seed=4)
    mask = np.zeros((32, 32), bool)
    mask[:, 16:] = True
    out = task.inpaint(images, mask, captions[:2], seed=0, return_tokens=True, low_res=low[:2])
    original = task.vqgan.encode(task.vqgan.preprocess_images(images))
    np.testing.assert_array_equal(out["token_ids"][:, :, :4], np.asarray(original)[:, :, :4])
    # Without `low_res`, the image's own low-res copy is the condition.
    assert task.inpaint(images, mask, captions[:2], seed=0).shape == (2, 32, 32, 3)
    edited = task.edit(images, captions[:2], iterations=3, seed=0)
    assert edited.shape == (2, 32, 32, 3)


def test_sampling_bad_input(preprocessor, data):
    low, _, captions = data
    task = _task(preprocessor)
    with pytest.raises(ValueError, match="low_res"):
        task.generate(captions[:2])
    with pytest.raises(ValueError, match="16 tokens"):
        task.upsample(low.reshape(N, -1)[:2, :9], captions[:2])
    with pytest.raises(ValueError, match=r"\[0, 63\]"):
        task.upsample(low[:2] + 64, captions[:2])
    with pytest.raises(ValueError, match="one entry per"):
        images, _, _ = shapes.make_arrays(2, resolution=32, seed=4)
        task.inpaint(images, np.ones((32, 32), bool), captions[:2], low_res=low[:3])
    with pytest.raises(ValueError, match="Low-res images must be"):
        task.upsample(np.zeros((2, 20, 20, 3), "uint8"), captions[:2])
    with pytest.raises(ValueError, match="outpaint with the base model first"):
        task.outpaint(shapes.make_arrays(1, resolution=32)[0], captions[:1], direction="right")


def test_preset_round_trip(preprocessor, data, tmp_path):
    low, high, captions = data
    task = _task(preprocessor)
    task.fit(((low, high), captions), batch_size=8, verbose=0)
    task.save_to_preset(tmp_path / "sr")
    loaded = MuseSuperResolution.from_preset(tmp_path / "sr")
    assert isinstance(loaded.low_res_vqgan, type(task.low_res_vqgan))
    x = _tokenized(task, low.reshape(N, -1)[:4], high.reshape(N, -1)[:4], captions[:4])
    embeddings = task.text_encoder({"token_ids": x["text_token_ids"], "padding_mask": x["text_padding_mask"]})
    inputs = {"token_ids": x["token_ids"], "low_res_token_ids": x["low_res_token_ids"],
              "text_embeddings": np.asarray(embeddings), "text_padding_mask": x["text_padding_mask"].astype(bool)}
    np.testing.assert_array_equal(np.asarray(loaded.backbone(inputs)), np.asarray(task.backbone(inputs)))
    a = task.upsample(low[:2], captions[:2], seed=0, return_tokens=True)["token_ids"]
    b = loaded.upsample(low[:2], captions[:2], seed=0, return_tokens=True)["token_ids"]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not a MuseTextToImage"):
        MuseTextToImage.from_preset(tmp_path / "sr")
