"""The VQGAN training recipe on the captioned-shapes dataset (or any images).

Used by `examples/train_vqgan.py`, `python -m keras_muse train vqgan` and the
README's main job, so the three never drift apart.
"""

import json
import math
import time

import keras
import numpy as np

from keras_muse.datasets import shapes
from keras_muse.models.vqgan.vqgan import VQGAN
from keras_muse.utils.image_utils import make_grid
from keras_muse.utils.image_utils import psnr
from keras_muse.utils.image_utils import save_png


def warmup_cosine(learning_rate, steps, warmup_steps):
    """Linear warm-up, then cosine decay to 0 (the paper's schedule shape)."""
    warmup_steps = min(warmup_steps, max(steps - 1, 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(steps - warmup_steps, 1),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


def evaluate_tokenizer(vqgan, images, batch_size=64):
    """PSNR (dB, uint8) of reconstructions and codebook use over `images`."""
    floats = vqgan.preprocess_images(images)
    ids = vqgan.encode(floats, batch_size=batch_size)
    recon = vqgan.postprocess_images(vqgan.decode(ids, batch_size=batch_size))
    counts = np.bincount(ids.reshape(-1), minlength=vqgan.codebook_size)
    p = counts / counts.sum()
    return {
        "psnr": float(np.mean(psnr(images, recon))),
        "codebook_used_fraction": float(np.mean(counts > 0)),
        "codebook_perplexity": float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))),
        "num_images": int(len(images)),
    }, ids, recon


def background_code_stats(vqgan, images, ids):
    """How the tokenizer codes flat regions: the share of tokens whose pixel
    patch is flat, and the mean number of distinct codes those take per
    image (low is good: background should not carry information)."""
    n, h, w, c = images.shape
    gh, gw = ids.shape[1:3]
    ph, pw = h // gh, w // gw
    patches = images.reshape(n, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n, gh, gw, -1).astype(np.int16)
    flat = (patches.max(-1) - patches.min(-1)) <= 2
    distinct = [len(np.unique(ids[i][flat[i]])) for i in range(n) if flat[i].any()]
    return {
        "flat_token_fraction": float(flat.mean()),
        "distinct_flat_codes_per_image": float(np.mean(distinct)) if distinct else 0.0,
        "distinct_codes_on_objects": int(len(np.unique(ids[~flat]))),
    }


def reconstruction_alignment(reconstructions, captions):
    """The shapes judge's prompt alignment on the tokenizer's reconstructions
    of real scenes: the most a transformer over these tokens can reach."""
    from keras_muse.metrics.alignment import score_alignment
    from keras_muse.metrics.evaluation import ALIGNMENT_KEYS

    report = score_alignment(reconstructions, list(captions))
    return {k: report[k] for k in (*ALIGNMENT_KEYS, "all") if report.get(k) is not None}


def comparison_grid(originals, reconstructions, columns=8):
    """Rows alternate originals and their reconstructions."""
    rows = []
    for start in range(0, len(originals), columns):
        rows.append(originals[start : start + columns])
        rows.append(reconstructions[start : start + columns])
    return make_grid(np.concatenate(rows), columns=columns)


def load_tokenizer(preset, codebook_size=None):
    """The tokenizer a run starts from: the trained weights when `preset`
    has them (a directory, or a trained preset shipped in the package such
    as "vqgan_shapes_64": fine-tuning, e.g. at a new resolution), else a
    fresh model of that architecture ("vqgan_shapes_f4"). `codebook_size`
    resizes the codebook, which only a fresh model can take."""
    overrides = {} if codebook_size is None else {"codebook_size": int(codebook_size)}
    if not VQGAN.preset_has_weights(preset):
        return VQGAN.from_preset(preset, load_weights=False, **overrides)
    if overrides:
        built = VQGAN.from_preset(preset, load_weights=False)
        if built.codebook_size != int(codebook_size):
            raise ValueError(
                f"`codebook_size` {codebook_size} differs from the trained preset {preset!r}'s "
                f"{built.codebook_size}: its weights cannot be loaded into another codebook size. "
                "Start from an architecture preset (e.g. 'vqgan_shapes_f4') to change it."
            )
    return VQGAN.from_preset(preset)


def train_vqgan(
    preset="vqgan_shapes_f4",
    steps=1000,
    batch_size=16,
    learning_rate=1.5e-3,
    warmup_steps=100,
    resolution=64,
    num_train_images=20000,
    num_eval_images=512,
    perceptual_weight=0.0,
    adversarial_weight=0.1,
    discriminator_start=None,
    r1_weight=10.0,
    entropy_weight=0.0,
    codebook_size=None,
    seed=0,
    out="reconstructions.png",
    save_preset=None,
    checkpoint_dir=None,
    report=None,
    verbose=1,
):
    """Trains a VQGAN on captioned shapes and writes a reconstruction grid.

    `entropy_weight` is 0 here, not MaskGIT's 0.1: the regularizer's target is
    uniform code use, and ~88 % of shapes tokens are flat background, so it
    pushed the background onto most of the codebook (measured: 163 distinct
    codes in the ~224 background tokens of one image, with weight 0.1). The
    transformer then has to predict noise. Without it, a flat background
    gets a handful of codes, and the codes carry the objects.

    Returns a dict of measurements (held-out PSNR, codebook use, timings).
    """
    keras.utils.set_random_seed(seed)
    started = time.time()
    train_images, _, _ = shapes.make_arrays(
        num_train_images, resolution=resolution, split="train", seed=seed
    )
    eval_images, eval_captions, _ = shapes.make_arrays(
        num_eval_images, resolution=resolution, split="heldout", seed=seed + 1
    )
    data_seconds = time.time() - started

    vqgan = load_tokenizer(preset, codebook_size)
    # A tokenizer saved inside a task preset is frozen (`trainable: false` in
    # its config); continuing from it must train it, or `fit` silently leaves
    # the weights as they were.
    vqgan.trainable = True
    vqgan.encoder.trainable = vqgan.trainable_encoder
    vqgan.quantizer.trainable = vqgan.trainable_encoder
    if discriminator_start is None:
        # The GAN terms sharpen detail once reconstructions are close;
        # switching them on from step 0 slows early progress (taming-transformers),
        # and each GAN step costs ~1.6x a plain one on CPU.
        discriminator_start = int(steps * 0.85)
    use_gan = adversarial_weight > 0 and vqgan.discriminator is not None
    vqgan.compile(
        optimizer=keras.optimizers.Adam(
            warmup_cosine(learning_rate, steps, warmup_steps), beta_1=0.9, beta_2=0.99
        ),
        reconstruction_loss="l1+l2",
        perceptual_weight=perceptual_weight,
        adversarial_weight=adversarial_weight if use_gan else 0.0,
        discriminator_start=discriminator_start,
        r1_weight=r1_weight,
        entropy_weight=entropy_weight,
    )

    import tensorflow as tf  # tf.data is Keras' backend-independent input pipeline

    dataset = (
        tf.data.Dataset.from_tensor_slices(train_images)
        .shuffle(min(len(train_images), 20000), seed=seed)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    steps_per_epoch = min(100, steps)
    epochs = math.ceil(steps / steps_per_epoch)
    callbacks = []
    if checkpoint_dir:
        # A killed run resumes from the last finished epoch.
        callbacks.append(keras.callbacks.BackupAndRestore(checkpoint_dir))
    fit_started = time.time()
    history = vqgan.fit(
        dataset,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    train_seconds = time.time() - fit_started

    metrics, eval_ids, recon = evaluate_tokenizer(vqgan, eval_images)
    metrics.update(background_code_stats(vqgan, eval_images, eval_ids))
    metrics["alignment_of_reconstructions"] = reconstruction_alignment(recon, eval_captions)
    result = {
        "preset": preset,
        "steps": steps_per_epoch * epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "resolution": resolution,
        "token_grid": [resolution // vqgan.factor] * 2,
        "codebook_size": vqgan.codebook_size,
        "entropy_weight": entropy_weight,
        "adversarial": bool(use_gan),
        "discriminator_start": int(discriminator_start),
        "seed": seed,
        "heldout": metrics,
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "final_train_logs": {k: float(v[-1]) for k, v in history.history.items()},
    }
    if out:
        save_png(comparison_grid(eval_images[:32], recon[:32]), out)
        result["png"] = out
    if save_preset:
        vqgan.save_to_preset(save_preset)
        result["saved_preset"] = save_preset
    if report:
        with open(report, "w") as f:
            json.dump(result, f, indent=2)
    if verbose:
        print(
            f"held-out PSNR {metrics['psnr']:.2f} dB, codebook used "
            f"{metrics['codebook_used_fraction']:.1%} of {vqgan.codebook_size}, "
            f"trained {train_seconds / 60:.1f} min; judge on reconstructions "
            + ", ".join(f"{k} {v:.2f}" for k, v in metrics["alignment_of_reconstructions"].items())
            + (f"; wrote {out}" if out else "")
        )
    return result
