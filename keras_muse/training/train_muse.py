"""The base-transformer training recipe on the captioned-shapes dataset.

Used by `examples/train_muse.py` and `python -m keras_muse train muse`, so the
two never drift apart. The trained tokenizer turns shapes images into 16x16
ids once; the tiny T5-architecture text encoder (shapes vocabulary) trains
jointly with the transformer (`trainable_text_encoder=True`: no pre-trained
T5 can be downloaded here); `fit` does the masking and condition dropout.
"""

import json
import math
import os
import time

import keras
import numpy as np

from keras_muse.datasets import shapes
from keras_muse.layers.masking import apply_mask
from keras_muse.layers.masking import sample_token_mask
from keras_muse.models.muse.muse_backbone import MuseBackbone
from keras_muse.models.muse.muse_text_to_image import MuseTextToImage
from keras_muse.models.text.t5_text_encoder import MuseTextEncoder
from keras_muse.models.text.text_preprocessor import UNCONDITIONAL_PROMPT
from keras_muse.models.vqgan.vqgan import VQGAN
from keras_muse.training.train_vqgan import warmup_cosine
from keras_muse.training.warm_start import warm_start


def object_token_mask(images, factor, threshold=40):
    """True for the token positions whose f x f patch shows part of an object.

    The shapes background is one flat light colour per image; a patch with a
    pixel far from the image's median colour holds (part of) an object. Most
    tokens are background, which the text cannot help predict, so accuracy
    on object tokens shows the text's contribution more plainly.
    """
    images = np.asarray(images, "int32")
    n, hh, ww, _ = images.shape
    background = np.median(images.reshape(n, -1, 3), axis=1)[:, None, None, :]
    deviation = np.abs(images - background).max(-1)
    patches = deviation.reshape(n, hh // factor, factor, ww // factor, factor).max(axis=(2, 4))
    return (patches > threshold).reshape(n, -1)


def paired_bootstrap_ci(hits_a, hits_b, counts, num_samples=2000, seed=0):
    """95 % bootstrap interval (resampling images) of accuracy(a) - accuracy(b).

    `hits_a`, `hits_b`, `counts`: per-image correct predictions under two
    conditions on the same masked tokens, and the number of those tokens.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), (num_samples, len(counts)))
    total = np.maximum(counts[idx].sum(1), 1)
    gain = (hits_a[idx].sum(1) - hits_b[idx].sum(1)) / total
    return [float(np.percentile(gain, 2.5)), float(np.percentile(gain, 97.5))]


def masked_token_accuracy_report(task, token_ids, captions, rates=("schedule", 0.5, 0.9, 1.0), seed=0,
                                 batch_size=64, object_mask=None, extra_inputs=None):
    """Masked-token accuracy with the real captions vs the empty prompt.

    Both conditions see exactly the same masks (drawn once from `seed`), so
    the difference is what the text contributes. `rates`: "schedule" draws
    one rate per example from the task's training schedule; a float masks
    that fraction of every example. With `object_mask` (bool `[n, N]`, see
    `object_token_mask`) the accuracy on masked object tokens is reported too,
    with a 95 % bootstrap interval of its gain from the captions
    ("objects_gain_ci95", images resampled).

    `extra_inputs`: the backbone's other inputs, per example (the
    super-res model's `{"low_res_token_ids": [n, n_low]}`).

    Returns `{rate: {"conditional": acc, "unconditional": acc, ...}}`.
    """
    extra_inputs = {k: np.asarray(v) for k, v in (extra_inputs or {}).items()}
    backbone = task.backbone
    ids = np.asarray(token_ids).reshape(len(token_ids), -1).astype("int32")
    n, num_tokens = ids.shape
    text_emb, text_mask = task.text_encoder.encode_text(list(captions), batch_size=batch_size)
    null_emb, null_mask = task.text_encoder.encode_text([UNCONDITIONAL_PROMPT])
    null_emb = np.repeat(null_emb, n, 0)
    null_mask = np.repeat(null_mask, n, 0)
    report = {}
    for rate in rates:
        mask = np.asarray(
            sample_token_mask(
                n, num_tokens, schedule=task.mask_schedule, seed=seed,
                rates=None if rate == "schedule" else float(rate),
            )
        )
        masked = np.asarray(apply_mask(ids, mask, backbone.mask_token_id))
        row, hits = {}, {}
        for name, (emb, tmask) in (("conditional", (text_emb, text_mask)), ("unconditional", (null_emb, null_mask))):
            pred = np.concatenate([
                np.argmax(backbone.predict_on_batch({
                    "token_ids": masked[s:s + batch_size], "text_embeddings": emb[s:s + batch_size],
                    "text_padding_mask": tmask[s:s + batch_size],
                    **{k: v[s:s + batch_size] for k, v in extra_inputs.items()},
                }), -1)
                for s in range(0, n, batch_size)
            ])
            hit = pred == ids
            row[name] = float(hit[mask].mean())
            if object_mask is not None:
                row[f"{name}_objects"] = float(hit[mask & object_mask].mean())
                hits[name] = (hit & mask & object_mask).sum(1)
        if object_mask is not None:
            row["objects_gain_ci95"] = paired_bootstrap_ci(
                hits["conditional"], hits["unconditional"], (mask & object_mask).sum(1), seed=seed
            )
        report[str(rate)] = row
    return report


def fit_for_steps(task, data, steps, batch_size, learning_rate, warmup_steps, weight_decay, seed,
                  checkpoint_dir=None, verbose=1):
    """The transformers' shared training loop: AdamW (App. A.1 betas) with
    warm-up + cosine decay, a shuffled repeating tf.data pipeline over the
    in-memory `data`, `fit` in epochs of 100 steps, `BackupAndRestore` when
    `checkpoint_dir` is given (a killed run resumes from the last epoch).

    Returns `(history, steps_run, train_seconds)`.
    """
    import tensorflow as tf  # tf.data: Keras' backend-independent input pipeline

    task.compile(
        optimizer=keras.optimizers.AdamW(
            warmup_cosine(learning_rate, steps, warmup_steps), beta_1=0.9, beta_2=0.96,
            weight_decay=weight_decay, clipnorm=1.0,
        )
    )
    size = len(keras.tree.flatten(data)[0])
    dataset = (
        tf.data.Dataset.from_tensor_slices(data)
        .shuffle(size, seed=seed)
        .repeat()
        .batch(batch_size, drop_remainder=True)
    )
    steps_per_epoch = min(100, steps)
    epochs = math.ceil(steps / steps_per_epoch)
    callbacks = [keras.callbacks.BackupAndRestore(checkpoint_dir)] if checkpoint_dir else []
    started = time.time()
    history = task.fit(
        dataset, steps_per_epoch=steps_per_epoch, epochs=epochs, callbacks=callbacks, verbose=verbose
    )
    return history, steps_per_epoch * epochs, time.time() - started


def train_muse(
    vqgan_preset,
    text_encoder="muse_text_tiny",
    hidden_dim=256,
    num_layers=4,
    num_heads=4,
    mlp_dim=1024,
    dropout=0.1,
    steps=1000,
    batch_size=32,
    learning_rate=1e-3,
    warmup_steps=100,
    weight_decay=0.045,
    label_smoothing=0.1,
    condition_dropout=0.1,
    object_token_weight=1.0,
    num_train_images=20000,
    num_eval_images=512,
    resolution=64,
    seed=0,
    save_preset=None,
    checkpoint_dir=None,
    init_from=None,
    freeze_text_encoder=False,
    dtype_policy=None,
    report=None,
    verbose=1,
):
    """Trains the base transformer on captioned shapes; returns measurements.

    The held-out split's (colour, shape) pairs never appear in training; the
    report gives masked-token accuracy there with and without the captions.

    `init_from` (a `MuseTextToImage` preset directory) starts the run from
    its backbone weights and, unless `text_encoder` is a preset directory,
    from the text encoder trained with them: runs longer than one sitting,
    or on a fine-tuned tokenizer whose codes kept their meaning.

    `freeze_text_encoder` keeps the text encoder's weights as loaded (the
    paper's setting with a pre-trained T5). Continuing a base that a
    super-res stage was trained on needs it: the super-res model reads the
    same text encoder's outputs, so they must not move.

    `object_token_weight` weights the masked-token loss on the tokens that
    show part of an object (`object_token_mask`) against 1 on background:
    ~87 % of a shapes image's tokens are flat background, which the text
    does not help predict, so at 1.0 they dominate the gradient.

    `dtype_policy` (e.g. "mixed_bfloat16") sets the transformer's compute
    dtype; its weights and the optimizer stay float32. On the TensorFlow
    backend bf16 matmuls run on oneDNN's AMX kernels where the CPU has them
    (`benchmarks/train_bench.py --dtype mixed_bfloat16` measures the gain).
    The saved preset records the policy.
    """
    if not (np.isfinite(object_token_weight) and object_token_weight > 0):
        raise ValueError(f"`object_token_weight` must be a positive number. Received: {object_token_weight}")
    if dtype_policy is not None:
        # Fails here, naming the argument, rather than deep inside the build.
        try:
            keras.dtype_policies.get(dtype_policy)
        except (ValueError, TypeError) as e:
            raise ValueError(f"dtype_policy={dtype_policy!r} is not a Keras dtype policy ({e})") from None
    keras.utils.set_random_seed(seed)
    started = time.time()
    vqgan = VQGAN.from_preset(vqgan_preset)
    train_images, train_captions, _ = shapes.make_arrays(
        num_train_images, resolution=resolution, split="train", seed=seed
    )
    eval_images, eval_captions, _ = shapes.make_arrays(
        num_eval_images, resolution=resolution, split="heldout", seed=seed + 1
    )
    # The tokenizer is frozen: tokenize every image once (paper: the same).
    train_ids = vqgan.encode(vqgan.preprocess_images(train_images), batch_size=128)
    eval_ids = vqgan.encode(vqgan.preprocess_images(eval_images), batch_size=128)
    data_seconds = time.time() - started
    grid = tuple(int(s) for s in train_ids.shape[1:])

    if init_from and not os.path.isdir(str(text_encoder)):
        # The saved backbone was trained with that preset's text encoder.
        text_encoder = os.path.join(str(init_from), "text_encoder")
    if os.path.isdir(str(text_encoder)):
        encoder = MuseTextEncoder.from_preset(text_encoder)
    else:
        encoder = MuseTextEncoder.from_preset(text_encoder, load_weights=False)
    backbone = MuseBackbone(
        codebook_size=vqgan.codebook_size, grid_size=grid, hidden_dim=hidden_dim,
        num_layers=num_layers, num_heads=num_heads, mlp_dim=mlp_dim,
        text_dim=encoder.hidden_dim, dropout=dropout, dtype=dtype_policy,
    )
    if init_from:
        warm_start(backbone, init_from)
    task = MuseTextToImage(
        backbone, text_encoder=encoder, vqgan=vqgan, trainable_text_encoder=not freeze_text_encoder,
        condition_dropout=condition_dropout, label_smoothing=label_smoothing, seed=seed,
    )
    data = (train_ids, np.asarray(train_captions))
    if object_token_weight != 1.0:
        objects = np.concatenate([
            object_token_mask(train_images[i:i + 4096], vqgan.factor)
            for i in range(0, len(train_images), 4096)
        ])
        data = data + (np.where(objects, object_token_weight, 1.0).astype("float32"),)
    history, steps_done, train_seconds = fit_for_steps(
        task, data, steps, batch_size, learning_rate,
        warmup_steps, weight_decay, seed, checkpoint_dir, verbose,
    )

    accuracy = masked_token_accuracy_report(
        task, eval_ids, eval_captions, seed=seed + 2,
        object_mask=object_token_mask(eval_images, vqgan.factor),
    )
    result = {
        "vqgan_preset": str(vqgan_preset),
        "backbone": {k: v for k, v in backbone.get_config().items() if k not in ("name", "trainable", "dtype")},
        "parameters": int(backbone.count_params()),
        "text_encoder_parameters": int(encoder.count_params()),
        "steps": steps_done,
        "init_from": str(init_from) if init_from else None,
        "freeze_text_encoder": bool(freeze_text_encoder),
        "dtype_policy": backbone.dtype_policy.name,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "condition_dropout": condition_dropout,
        "object_token_weight": object_token_weight,
        "label_smoothing": label_smoothing,
        "seed": seed,
        "num_train_images": num_train_images,
        "heldout_masked_token_accuracy": accuracy,
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(steps_done, 1), 3),
        "final_train_logs": {k: float(v[-1]) for k, v in history.history.items()},
        "backend": keras.config.backend(),
    }
    if save_preset:
        task.save_to_preset(save_preset)
        result["saved_preset"] = str(save_preset)
    if report:
        with open(report, "w") as f:
            json.dump(result, f, indent=2)
    if verbose:
        for rate, row in accuracy.items():
            print(
                f"held-out masked-token accuracy (mask rate {rate}): "
                f"{row['conditional']:.1%} with captions, {row['unconditional']:.1%} without; "
                f"object tokens {row['conditional_objects']:.1%} vs {row['unconditional_objects']:.1%} "
                f"(gain 95% CI {row['objects_gain_ci95'][0]:+.1%} to {row['objects_gain_ci95'][1]:+.1%})"
            )
        print(f"trained {train_seconds / 60:.1f} min")
    return result
