"""MuseTextToImage training: `fit` on ids/images + prompts/embeddings (§2.3, §2.6, §2.7).

Tiny models throughout: muse_tiny (4x4 grid, codebook 64, text width 16), a
1-layer T5 of width 16, and a codebook-64 VQGAN mapping 16x16 images to 4x4.
"""

import keras
import numpy as np
import pytest

from keras_muse.datasets import shapes
from keras_muse.layers import sample_condition_dropout
from keras_muse.models import MuseTextToImage
from keras_muse.models.text import TextEmbeddingCache

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_text_encoder
from helpers import make_vqgan

pytestmark = pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")

N = 32


@pytest.fixture(scope="module")
def data():
    _, captions, _ = shapes.make_arrays(N, seed=3)
    # Learnable ids: a per-position pattern plus a per-example offset, so a
    # tiny model's loss falls within a few dozen steps.
    ids = (np.arange(16)[None, :] * 3 + (np.arange(N)[:, None] % 4) * 7) % 64
    return ids.reshape(N, 4, 4).astype("int32"), list(captions)


def _encoder(preprocessor, seed=1):
    return make_tiny_text_encoder(preprocessor, seed)


def _backbone(seed=0):
    return make_tiny_muse_backbone(seed)


def _task(preprocessor=None, with_encoder=True, **kwargs):
    kwargs.setdefault("seed", 0)
    encoder = _encoder(preprocessor) if with_encoder else None
    task = MuseTextToImage(_backbone(), text_encoder=encoder, **kwargs)
    task.compile(optimizer=keras.optimizers.Adam(3e-3))
    return task


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_fit_on_ids_and_prompts_learns_and_reports_metrics(preprocessor, data):
    ids, captions = data
    task = _task(preprocessor, trainable_text_encoder=True)
    history = task.fit((ids, captions), batch_size=8, epochs=12, verbose=0).history
    assert set(history) == {"loss", "masked_accuracy"}
    # Memorizing 32 examples: the loss must clearly fall.
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
    assert history["masked_accuracy"][-1] > history["masked_accuracy"][0]
    result = task.evaluate((ids, captions), batch_size=8, verbose=0, return_dict=True)
    assert np.isfinite(result["loss"]) and 0 <= result["masked_accuracy"] <= 1


def test_same_seed_same_training_different_seed_different(preprocessor, data):
    ids, captions = data

    def losses(seed):
        task = _task(preprocessor, seed=seed)
        return task.fit((ids, captions), batch_size=8, epochs=2, verbose=0).history["loss"]

    a, b, c = losses(0), losses(0), losses(1)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(a, c)


def test_masks_are_fresh_every_step(preprocessor, data):
    # With a zero learning rate the weights never change, so the per-step
    # losses on the same batch differ only through the masks drawn.
    ids, captions = data
    task = _task(preprocessor, condition_dropout=0.0)
    task.compile(optimizer=keras.optimizers.SGD(0.0))
    batch = (ids[:8], captions[:8])
    losses = [
        task.fit(batch, batch_size=8, epochs=1, verbose=0).history["loss"][0] for _ in range(3)
    ]
    assert len(set(np.round(losses, 6))) == 3, losses


def test_frozen_parts_do_not_change(preprocessor, data):
    ids, captions = data
    task = _task(preprocessor)
    assert not task.text_encoder.trainable
    before_text, before_bb = _weights(task.text_encoder), _weights(task.backbone)
    task.fit((ids, captions), batch_size=8, epochs=1, verbose=0)
    for a, b in zip(before_text, _weights(task.text_encoder)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(before_bb, _weights(task.backbone)))


def test_trainable_text_encoder_trains(preprocessor, data):
    ids, captions = data
    task = _task(preprocessor, trainable_text_encoder=True)
    before = _weights(task.text_encoder)
    task.fit((ids, captions), batch_size=8, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(task.text_encoder)))


def test_condition_dropout_rate_holds():
    seed = keras.random.SeedGenerator(0)
    drops = np.concatenate(
        [np.asarray(sample_condition_dropout(1000, 0.1, seed=seed)) for _ in range(10)]
    )
    assert abs(drops.mean() - 0.1) < 0.01  # 10k draws: sd 0.003
    assert not np.asarray(sample_condition_dropout(100, 0.0, seed=1)).any()
    assert np.asarray(sample_condition_dropout(100, 1.0, seed=1)).all()
    with pytest.raises(ValueError, match="rate"):
        sample_condition_dropout(4, 1.5)


def test_full_condition_dropout_makes_text_irrelevant(preprocessor, data):
    # condition_dropout=1: every example trains on the empty prompt, so the
    # captions cannot change anything; with 0 they do.
    ids, captions = data
    other = list(reversed(captions))

    def final_weights(caps, rate):
        task = _task(preprocessor, condition_dropout=rate)
        task.fit((ids, caps), batch_size=8, epochs=1, verbose=0)
        return _weights(task.backbone)

    for a, b in zip(final_weights(captions, 1.0), final_weights(other, 1.0)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(
        not np.allclose(a, b, atol=1e-6)
        for a, b in zip(final_weights(captions, 0.0), final_weights(other, 0.0))
    )


def test_fit_on_precomputed_embeddings_from_a_cache(preprocessor, data, tmp_path):
    ids, captions = data
    encoder = _encoder(preprocessor)
    cache = TextEmbeddingCache.build(tmp_path / "cache", captions, encoder)
    emb, mask = cache.get(np.arange(N)).values()
    task = MuseTextToImage(_backbone(), seed=0)
    task.compile(optimizer=keras.optimizers.Adam(3e-3))
    with pytest.raises(ValueError, match="unconditional"):
        task.fit((ids, (emb, mask)), batch_size=8, epochs=1, verbose=0)
    task.compile(
        optimizer=keras.optimizers.Adam(3e-3), unconditional_text_embeddings=cache.unconditional()
    )
    history = task.fit((ids, (emb, mask)), batch_size=8, epochs=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    # The same data as a dict, through tf.data.
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        {"token_ids": ids, "text_embeddings": emb, "text_padding_mask": mask}
    ).batch(8)
    task.fit(ds, epochs=1, verbose=0)


def test_fit_on_images_with_an_attached_vqgan(preprocessor, data):
    _, captions = data
    vqgan = make_vqgan(factor=4)
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3)).astype("uint8")
    task = MuseTextToImage(_backbone(), text_encoder=_encoder(preprocessor), vqgan=vqgan, seed=0)
    task.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = _weights(vqgan)
    history = task.fit((images, captions[:16]), batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    for a, b in zip(before, _weights(vqgan)):
        np.testing.assert_array_equal(a, b)


def test_tf_data_of_ids_and_prompts(preprocessor, data):
    import tensorflow as tf

    ids, captions = data
    task = _task(preprocessor)
    ds = tf.data.Dataset.from_tensor_slices((ids, captions)).shuffle(N, seed=0).batch(8)
    history = task.fit(ds, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_bad_inputs(preprocessor, data):
    ids, captions = data
    task = _task(preprocessor)
    with pytest.raises(ValueError, match="token_ids.*lie in"):
        task.fit((np.full_like(ids, 64), captions), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="token_ids.*-1"):
        task.fit((ids - 1, captions), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="16 tokens per example"):
        task.fit((ids.reshape(N, 16)[:, :9], captions), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="text batch must equal the image batch"):
        task.fit((ids, captions[:-1]), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        task.fit((ids[:0], []), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="integers"):
        task.fit((ids.astype("float32"), captions), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="needs a `vqgan`"):
        task.fit((np.zeros((N, 16, 16, 3), "uint8"), captions), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="text_embeddings"):
        task.fit((ids, (np.zeros((N, 5, 7), "float32"), np.ones((N, 5), bool))), verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        bad = np.full((N, 5, 16), np.nan, "float32")
        task.fit((ids, (bad, np.ones((N, 5), bool))), verbose=0)
    with pytest.raises(ValueError, match="Training data must be"):
        task.fit({"token_ids": ids}, verbose=0)
    with pytest.raises(ValueError, match="loss"):
        task.compile(loss="mse")
    with pytest.raises(ValueError, match="condition_dropout"):
        MuseTextToImage(_backbone(), condition_dropout=1.5)
    with pytest.raises(ValueError, match="codebook"):
        MuseTextToImage(_backbone(), vqgan=make_vqgan(factor=4, codebook_size=32))
    with pytest.raises(ValueError, match="text_dim"):
        MuseTextToImage(_backbone(), text_encoder=_encoder(preprocessor).__class__(
            vocabulary_size=48, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16))


def test_batch_mismatch_in_a_dataset_is_caught_at_trace(preprocessor, data):
    import tensorflow as tf

    ids, captions = data
    task = _task(preprocessor, with_encoder=False, condition_dropout=0.0)
    emb = np.zeros((8, 5, 16), "float32")
    ds = tf.data.Dataset.from_tensors(
        {"token_ids": ids[:4], "text_embeddings": emb, "text_padding_mask": np.ones((8, 5), bool)}
    )
    with pytest.raises(ValueError, match="text batch"):
        task.fit(ds, epochs=1, verbose=0)


def test_preset_round_trip_gives_identical_logits(preprocessor, data, tmp_path):
    ids, captions = data
    vqgan = make_vqgan(factor=4)
    task = MuseTextToImage(
        _backbone(), text_encoder=_encoder(preprocessor), vqgan=vqgan,
        trainable_text_encoder=True, condition_dropout=0.2, seed=0,
    )
    task.compile(optimizer=keras.optimizers.Adam(3e-3))
    task.fit((ids, captions), batch_size=8, epochs=1, verbose=0)
    task.save_to_preset(tmp_path / "muse")
    assert sorted(p for p in (tmp_path).iterdir() if p.name.startswith(".")) == []
    loaded = MuseTextToImage.from_preset(tmp_path / "muse")
    assert loaded.condition_dropout == 0.2 and loaded.trainable_text_encoder
    emb, mask = task.text_encoder.encode_text(captions[:4])
    emb2, mask2 = loaded.text_encoder.encode_text(captions[:4])
    np.testing.assert_array_equal(emb, emb2)
    x = {"token_ids": ids[:4].reshape(4, 16), "text_embeddings": emb, "text_padding_mask": mask}
    np.testing.assert_array_equal(np.asarray(task.backbone(x)), np.asarray(loaded.backbone(x)))
    images = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(task.vqgan.encode(images), loaded.vqgan.encode(images))
    # Saving again over it replaces it atomically; a foreign task.json is refused.
    task.save_to_preset(tmp_path / "muse")
    (tmp_path / "muse" / "task.json").write_text('{"registered_name": "x>Y", "config": {}}')
    with pytest.raises(ValueError, match="not a MuseTextToImage"):
        MuseTextToImage.from_preset(tmp_path / "muse")
    (tmp_path / "muse" / "task.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        MuseTextToImage.from_preset(tmp_path / "muse")


def test_config_round_trip(preprocessor):
    task = _task(preprocessor, condition_dropout=0.3, mask_schedule="linear")
    clone = MuseTextToImage.from_config(task.get_config())
    assert clone.condition_dropout == 0.3 and clone.mask_schedule == "linear"
    assert clone.text_encoder is not None and clone.vqgan is None


def test_backup_and_restore_resumes_a_killed_run(preprocessor, data, tmp_path):
    ids, captions = data
    backup = str(tmp_path / "backup")

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.weights_at_kill = [np.array(w) for w in self.model.get_weights()]
                raise KeyboardInterrupt

    task = _task(preprocessor, trainable_text_encoder=True)
    with pytest.raises(KeyboardInterrupt):
        task.fit((ids, captions), batch_size=8, epochs=4, verbose=0,
                 callbacks=[keras.callbacks.BackupAndRestore(backup), Kill()])
    resumed = _task(preprocessor, trainable_text_encoder=True, seed=5)
    epochs = []
    marker = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs.append(e))
    restore = keras.callbacks.BackupAndRestore(backup)
    probe = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: epochs.append(
            all(np.array_equal(a, b) for a, b in zip(task.weights_at_kill, resumed.get_weights()))
        )
    )
    resumed.fit((ids, captions), batch_size=8, epochs=4, verbose=0, callbacks=[restore, probe, marker])
    # Restored to the weights at the end of epoch 1, then ran epochs 2 and 3 only.
    assert epochs == [True, 2, 3]


def test_in_memory_data_is_shuffled_every_epoch(preprocessor, data):
    ids, captions = data
    task = _task(preprocessor)
    seen = []
    original = task._train_body

    if keras.backend.backend() == "jax":
        import jax

        # A host callback inside the compiled step: eager JAX would compile
        # every op on its own (40 s for two steps).
        def spy(batch):
            jax.debug.callback(lambda ids: seen.append(np.asarray(ids)), batch["token_ids"], ordered=True)
            return original(batch)
    else:
        def spy(batch):
            seen.append(batch["token_ids"])
            return original(batch)

        task.run_eagerly = True
    task._train_body = spy
    task.fit((ids, captions), batch_size=N, epochs=2, verbose=0)
    first, second = (np.asarray(b) for b in seen)
    # All 32 examples each epoch, in two different orders.
    assert sorted(map(bytes, first)) == sorted(map(bytes, second))
    assert not np.array_equal(first, second)


def _losses_at_lr0(preprocessor, data, **fit_kwargs):
    ids, captions = data
    task = _task(preprocessor, condition_dropout=0.0)
    # Trained a little first (deterministically), so per-token losses differ.
    task.fit((ids, captions), batch_size=8, epochs=6, shuffle=False, verbose=0)
    task.compile(optimizer=keras.optimizers.SGD(0.0))
    return task.fit((ids, captions), batch_size=8, epochs=2, shuffle=False, verbose=0, **fit_kwargs).history["loss"]


def test_token_sample_weights_weight_the_masked_loss(preprocessor, data):
    # Same seed, zero learning rate: the same masks in every run, so only
    # the weights can move the loss. A uniform weight leaves the weighted
    # mean unchanged; uneven per-token weights change it.
    ids, _ = data
    plain = _losses_at_lr0(preprocessor, data)
    uniform = _losses_at_lr0(preprocessor, data, sample_weight=np.full(ids.shape, 2.0, "float32"))
    np.testing.assert_allclose(plain, uniform, rtol=1e-5)
    rng = np.random.default_rng(0)
    uneven = _losses_at_lr0(preprocessor, data, sample_weight=rng.uniform(0, 5, (N, 16)).astype("float32"))
    assert not np.allclose(plain, uneven, rtol=1e-3), (plain, uneven)
    zero = _losses_at_lr0(preprocessor, data, sample_weight=np.zeros(ids.shape, "float32"))
    np.testing.assert_array_equal(zero, 0.0)


def test_zero_weight_examples_never_reach_the_gradient(preprocessor, data):
    # Examples weighted 0 may hold anything: the trained weights must be
    # the same as with other ids there. Without the weights they differ.
    ids, captions = data
    other = ids.copy()
    other[:8] = (other[:8] + 5) % 64
    weights = np.ones(N, "float32")
    weights[:8] = 0.0

    def trained(token_ids, sample_weight):
        task = _task(preprocessor)
        task.fit((token_ids, captions), batch_size=8, epochs=1, shuffle=False, verbose=0,
                 sample_weight=sample_weight)
        return _weights(task.backbone)

    for a, b in zip(trained(ids, weights), trained(other, weights)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    unweighted = zip(trained(ids, None), trained(other, None))
    assert any(not np.allclose(a, b) for a, b in unweighted)


def test_sample_weights_in_a_dataset_and_bad_weights(preprocessor, data):
    import tensorflow as tf

    ids, captions = data
    task = _task(preprocessor)
    weights = np.ones((N, 4, 4), "float32")
    ds = tf.data.Dataset.from_tensor_slices((ids, captions, weights)).batch(8)
    assert np.isfinite(task.fit(ds, epochs=1, verbose=0).history["loss"][0])
    with pytest.raises(ValueError, match="sample_weight.*16"):
        task.fit((ids, captions), sample_weight=np.ones((N, 5)), verbose=0)
    with pytest.raises(ValueError, match="sample_weight.*batch 32"):
        task.fit((ids, captions), sample_weight=np.ones(N - 1), verbose=0)
    with pytest.raises(ValueError, match="sample_weight.*finite"):
        task.fit((ids, captions), sample_weight=np.full(N, np.nan), verbose=0)
    with pytest.raises(ValueError, match="sample_weight.*>= 0"):
        task.fit((ids, captions), sample_weight=-np.ones(N), verbose=0)
    with pytest.raises(ValueError, match="sample_weight.*in-memory"):
        task.fit(ds, sample_weight=np.ones(N), verbose=0)
