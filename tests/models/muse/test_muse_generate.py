"""MuseTextToImage.generate: the compiled sampler end to end on tiny models."""

import numpy as np
import pytest

from keras_muse.models import MuseTextToImage

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_text_encoder
from helpers import make_vqgan

pytestmark = pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")

PROMPTS = ["a red circle on the left", "two blue squares"]


@pytest.fixture(scope="module")
def task(preprocessor):
    backbone = make_tiny_muse_backbone()
    # A random tiny model has near-uniform logits that barely listen to the
    # text; amplifying the logits, the text projection and the
    # cross-attention outputs makes prompts (and negative prompts) matter, as
    # in a trained model.
    for variable, factor in [
        (backbone.token_embedding.embeddings, 10.0),
        (backbone.text_projection.kernel, 30.0),
    ] + [(block.cross_attn.output_dense.kernel, 20.0) for block in backbone.transformer_layers]:
        variable.assign(variable * factor)
    return MuseTextToImage(
        backbone, text_encoder=make_tiny_text_encoder(preprocessor), vqgan=make_vqgan(factor=4), seed=0,
    )


def _tokens(task, **kwargs):
    kwargs.setdefault("num_steps", 6)
    kwargs.setdefault("seed", 0)
    return task.generate(PROMPTS, return_tokens=True, **kwargs)["token_ids"]


def test_images_tokens_and_history(task):
    out = task.generate(PROMPTS, num_steps=6, seed=0, return_tokens=True, return_history=True)
    assert out["images"].shape == (2, 16, 16, 3) and out["images"].dtype == np.uint8
    assert out["token_ids"].shape == (2, 4, 4) and out["token_ids"].max() < 64
    history = out["history"]
    assert history.shape == (2, 6, 4, 4)
    masked = (history == 64).reshape(2, 6, 16).sum(-1)
    assert masked.tolist() == [[15, 13, 11, 8, 4, 0]] * 2
    np.testing.assert_array_equal(history[:, -1], out["token_ids"])
    # The images are the VQGAN's decoding of the tokens.
    decoded = task.vqgan.postprocess_images(task.vqgan.decode(out["token_ids"]))
    assert np.abs(decoded.astype(int) - out["images"].astype(int)).max() <= 1
    images = task.generate(PROMPTS, num_steps=6, seed=0)
    assert isinstance(images, np.ndarray) and images.shape == (2, 16, 16, 3)


def test_same_seed_same_tokens_different_seed_different(task):
    a, b, c = _tokens(task), _tokens(task), _tokens(task, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_guidance_scale_zero_equals_unguided_sampling(task):
    # A negative prompt forces the doubled (guided) batch; with scale 0 the
    # guided logits are the conditional ones, so the samples must agree.
    unguided = _tokens(task, guidance_scale=0)
    guided_zero = _tokens(task, guidance_scale=0, negative_prompts="a black star")
    np.testing.assert_array_equal(unguided, guided_zero)


def test_negative_prompt_and_guidance_change_the_output(task):
    base = _tokens(task, guidance_scale=5.0)
    negative = _tokens(task, guidance_scale=5.0, negative_prompts=["a green star", "a yellow hexagon"])
    assert not np.array_equal(base, negative)
    assert not np.array_equal(base, _tokens(task, guidance_scale=0))


def test_compiled_once_per_shape(task):
    _tokens(task, guidance_scale=2.0)
    traces = task._generate_traces
    for seed in range(3):
        _tokens(task, guidance_scale=1.0 + seed, seed=seed, temperature=0.5 + seed)
    assert task._generate_traces == traces  # seeds, scales, temperatures are inputs
    _tokens(task, num_steps=5)
    assert task._generate_traces == traces + 1  # a new step count is a new program


def test_batches_and_padding(task):
    prompts = PROMPTS * 3  # 6 prompts in batches of 4: the last is padded
    out = task.generate(prompts, num_steps=4, seed=0, batch_size=4, return_tokens=True, verbose=0)
    assert out["token_ids"].shape == (6, 4, 4) and out["images"].shape == (6, 16, 16, 3)


def test_bad_arguments(task):
    with pytest.raises(ValueError, match="prompts"):
        task.generate([])
    with pytest.raises(ValueError, match="negative_prompts"):
        task.generate(PROMPTS, negative_prompts=["x"] * 3)
    with pytest.raises(ValueError, match="temperature"):
        task.generate(PROMPTS, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        task.generate(PROMPTS, top_k=65)
    with pytest.raises(ValueError, match="top_p"):
        task.generate(PROMPTS, top_p=1.5)
    with pytest.raises(ValueError, match="num_steps"):
        task.generate(PROMPTS, num_steps=0)
    with pytest.raises(ValueError, match="guidance_schedule"):
        task.generate(PROMPTS, guidance_schedule="cubic")
    with pytest.raises(ValueError, match="batch_size"):
        task.generate(PROMPTS, batch_size=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        task.generate(PROMPTS, guidance_scale=-2.0)
    no_text = MuseTextToImage(make_tiny_muse_backbone())
    with pytest.raises(ValueError, match="text_encoder"):
        no_text.generate(PROMPTS)


def test_precomputed_text_embeddings_give_the_same_images(task):
    emb, mask = task.text_encoder.encode_text(PROMPTS)
    from_prompts = _tokens(task, guidance_scale=2.0)
    from_embeddings = task.generate(
        {"text_embeddings": emb, "text_padding_mask": mask}, num_steps=6, seed=0,
        guidance_scale=2.0, return_tokens=True,
    )["token_ids"]
    np.testing.assert_array_equal(from_prompts, from_embeddings)
    with pytest.raises(ValueError, match="text_embeddings"):
        task.generate({"text_embeddings": emb[..., :3], "text_padding_mask": mask})
    with pytest.raises(ValueError, match="negative_text_embeddings"):
        task.generate({"text_embeddings": emb, "text_padding_mask": mask}, negative_prompts="x")


def _images(task, n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3)).astype("uint8")


def test_inpainting_keeps_the_unmasked_tokens(task):
    images = _images(task)
    original = task.vqgan.encode(task.vqgan.preprocess_images(images))
    mask = np.zeros((2, 16, 16), bool)
    mask[0, :, 8:] = True       # right half of image 0: token columns 2-3
    mask[1, 5, 5] = True        # one pixel of image 1: token (1, 1)
    out = task.inpaint(images, mask, PROMPTS, num_steps=4, seed=0, return_tokens=True)
    ids = out["token_ids"]
    keep = np.ones((2, 4, 4), bool)
    keep[0, :, 2:] = False
    keep[1, 1, 1] = False
    np.testing.assert_array_equal(ids[keep], original[keep])
    assert out["images"].shape == (2, 16, 16, 3)
    # Same seed, same result; a different seed changes the masked region.
    again = task.inpaint(images, mask, PROMPTS, num_steps=4, seed=0, return_tokens=True)["token_ids"]
    np.testing.assert_array_equal(ids, again)
    other = task.inpaint(images, mask, PROMPTS, num_steps=4, seed=3, return_tokens=True)["token_ids"]
    assert not np.array_equal(ids[~keep], other[~keep])


def test_outpainting_shifts_and_fills_the_strip(task):
    images = _images(task)
    original = task.vqgan.encode(task.vqgan.preprocess_images(images))
    out = task.outpaint(images, PROMPTS, direction="right", extent=0.25, num_steps=4, seed=0,
                        return_tokens=True)["token_ids"]
    # The image moved one token column left; the new last column is generated.
    np.testing.assert_array_equal(out[:, :, :3], original[:, :, 1:])
    top = task.outpaint(images, PROMPTS, direction="top", extent=8, num_steps=4, seed=0,
                        return_tokens=True)["token_ids"]
    np.testing.assert_array_equal(top[:, 2:], original[:, :2])
    with pytest.raises(ValueError, match="direction"):
        task.outpaint(images, PROMPTS, direction="up")
    with pytest.raises(ValueError, match="extent"):
        task.outpaint(images, PROMPTS, extent=1.5)


def test_mask_free_editing(task):
    images = _images(task)
    original = task.vqgan.encode(task.vqgan.preprocess_images(images))
    edited = task.edit(images, PROMPTS, iterations=6, fraction=0.25, seed=0, return_tokens=True)["token_ids"]
    changed = (edited != original).mean()
    assert 0 < changed <= 1
    again = task.edit(images, PROMPTS, iterations=6, fraction=0.25, seed=0, return_tokens=True)["token_ids"]
    np.testing.assert_array_equal(edited, again)
    # A mask restricts the edit: only token column 0 may change.
    mask = np.zeros((16, 16), bool)
    mask[:, :4] = True
    local = task.edit(images, PROMPTS, iterations=6, fraction=0.25, seed=0, masks=mask,
                      return_tokens=True)["token_ids"]
    np.testing.assert_array_equal(local[:, :, 1:], original[:, :, 1:])


def test_editing_bad_inputs(task):
    images = _images(task)
    with pytest.raises(ValueError, match="images"):
        task.inpaint(images[:, :8], np.ones((2, 8, 16), bool), PROMPTS)
    with pytest.raises(ValueError, match="masks"):
        task.inpaint(images, np.ones((2, 8, 8), bool), PROMPTS)
    with pytest.raises(ValueError, match="at least one pixel"):
        task.inpaint(images, np.zeros((2, 16, 16), bool), PROMPTS)
    with pytest.raises(ValueError, match="NaN"):
        task.inpaint(images, np.full((16, 16), np.nan), PROMPTS)
    with pytest.raises(ValueError, match="binary"):
        task.inpaint(images, np.full((16, 16), 0.7), PROMPTS)
    with pytest.raises(ValueError, match="guidance_scale"):
        task.inpaint(images, np.ones((16, 16), "uint8"), PROMPTS, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="one per image"):
        task.inpaint(images, np.ones((16, 16), bool), PROMPTS * 2)
    with pytest.raises(ValueError, match="fraction"):
        task.edit(images, PROMPTS, fraction=0)
    with pytest.raises(ValueError, match="iterations"):
        task.edit(images, PROMPTS, iterations=0)
    no_vqgan = MuseTextToImage(make_tiny_muse_backbone(), text_encoder=task.text_encoder)
    with pytest.raises(ValueError, match="vqgan"):
        no_vqgan.inpaint(images, np.ones((16, 16), bool), PROMPTS)


def test_single_position_unconditional_half_is_exact(task, monkeypatch):
    # The empty prompt has one real position, so the guided batch's second
    # half takes a constant cross-attention output; sampling must not change.
    _, null_mask = task.text_encoder.encode_text([""])
    assert int(np.sum(null_mask)) == 1
    fast = _tokens(task, guidance_scale=3.0)
    logits_fast = _guided_logits(task)
    monkeypatch.setattr(type(task.backbone), "single_position_guidance", False)
    task.__dict__.pop("_generate_functions", None)
    np.testing.assert_array_equal(_tokens(task, guidance_scale=3.0), fast)
    np.testing.assert_allclose(_guided_logits(task), logits_fast, atol=1e-4)


def _guided_logits(task):
    """The first decoding step's guided logits, as the compiled sampler forms them."""
    import keras

    backbone = task.backbone
    emb, mask = task.text_encoder.encode_text(PROMPTS)
    null, null_mask = task.text_encoder.encode_text(["", ""])
    both, both_mask = np.concatenate([emb, null]), np.concatenate([mask, null_mask])
    single = {"single_position_rows": 2} if backbone.single_position_guidance else {}
    kv, context_mask = backbone.conditioning_key_values(both, both_mask, **single)
    ids = np.full((4, 16), 64, "int32")
    features = keras.ops.convert_to_numpy(backbone.features_step(ids, kv, context_mask))
    return keras.ops.convert_to_numpy(backbone.token_logits(4 * features[:2] - 3 * features[2:]))
