"""The super-resolution training recipe on captioned shapes (paper §2.4).

Used by `examples/train_super_res.py` and `python -m keras_muse train
super-res`. The same scenes are rendered at the base resolution (64²) and at
the high resolution (128²); the base task's tokenizer makes the low-res ids,
a second tokenizer (the shipped `vqgan_shapes_128`: 32x32 ids at 128²) the high-res ids; the base task's text
encoder is reused, frozen, so the two stages read the same text features.
The result is saved as a two-stage `MuseTextToImage` preset (base +
`super_resolution`).
"""

import json
import os
import time

import keras
import numpy as np

from keras_muse.datasets import shapes
from keras_muse.models.muse.muse_super_res_backbone import MuseSuperResBackbone
from keras_muse.models.muse.muse_super_resolution import MuseSuperResolution
from keras_muse.models.muse.muse_text_to_image import MuseTextToImage
from keras_muse.models.vqgan.vqgan import VQGAN
from keras_muse.training.train_muse import fit_for_steps
from keras_muse.training.train_muse import masked_token_accuracy_report
from keras_muse.training.train_muse import object_token_mask
from keras_muse.training.warm_start import warm_start
from keras_muse.utils.image_utils import make_grid
from keras_muse.utils.image_utils import psnr
from keras_muse.utils.image_utils import resize_images
from keras_muse.utils.image_utils import save_png


def upsample_real_scenes(sr_task, low_ids, high_images, captions, seed=0, batch_size=32, **sample_kwargs):
    """Super-res from real scenes' low-res tokens, beside both tokenizers'
    reconstructions of the same scenes: returns `(output, low_res_recon,
    high_res_recon)`. The reconstructions are what the stage is handed
    (low-res) and the best it could give back (high-res)."""
    out = sr_task.upsample(np.asarray(low_ids), list(captions), seed=seed, batch_size=batch_size, **sample_kwargs)
    low_vq, high_vq = sr_task.low_res_vqgan, sr_task.vqgan
    low_recon = low_vq.postprocess_images(low_vq.decode(low_ids))
    high_recon = high_vq.postprocess_images(
        high_vq.decode(high_vq.encode(high_vq.preprocess_images(high_images)))
    )
    return np.asarray(out), np.asarray(low_recon), np.asarray(high_recon)


def upsampling_report(sr_task, low_ids, low_images, high_images, captions, seed=0, batch_size=32,
                      **sample_kwargs):
    """PSNR against the real high-res images of the same scenes: the
    super-res output (from the scenes' low-res tokens, default sampling)
    vs bicubic upsampling of the real low-res image and of the low-res
    tokenizer's reconstruction (what the base stage hands over), and the
    high-res tokenizer's own reconstruction (the ceiling)."""
    out, low_recon, high_recon = upsample_real_scenes(
        sr_task, low_ids, high_images, captions, seed=seed, batch_size=batch_size, **sample_kwargs
    )
    size = high_images.shape[1:3]
    return {
        "super_res_psnr": float(np.mean(psnr(high_images, out))),
        "bicubic_real_low_res_psnr": float(np.mean(psnr(high_images, resize_images(low_images, size)))),
        "bicubic_low_res_tokens_psnr": float(np.mean(psnr(high_images, resize_images(low_recon, size)))),
        "high_res_tokenizer_psnr": float(np.mean(psnr(high_images, high_recon))),
        "num_images": int(len(high_images)),
    }, out, low_recon


def _super_res_preset(preset):
    """A two-stage preset keeps its super-res task in `super_resolution/`."""
    nested = os.path.join(str(preset), "super_resolution")
    return nested if os.path.isdir(nested) else str(preset)


def train_super_res(
    base_preset,
    vqgan_preset,
    hidden_dim=128,
    num_layers=4,
    low_res_num_layers=2,
    num_heads=4,
    mlp_dim=512,
    dropout=0.0,
    attention_window=8,
    aligned_low_res=True,
    steps=600,
    batch_size=32,
    learning_rate=2e-3,
    warmup_steps=50,
    weight_decay=0.045,
    label_smoothing=0.1,
    condition_dropout=0.1,
    object_token_weight=1.0,
    num_train_images=20000,
    num_eval_images=256,
    resolution=128,
    seed=0,
    save_preset=None,
    checkpoint_dir=None,
    init_from=None,
    sampling_defaults=None,
    report=None,
    out=None,
    verbose=1,
):
    """Trains a super-res transformer for a trained base task; returns measurements.

    Args:
        base_preset: a trained `MuseTextToImage` preset directory (its VQGAN
            and text encoder are reused, frozen).
        vqgan_preset: a trained high-res VQGAN preset directory.
        resolution: the high resolution (a multiple of the base one).
        attention_window: multi-axis self-attention window over the high-res
            grid (None: global attention; 8 on the 32x32 grid was 2.4x
            cheaper per step, see the backbone).
        aligned_low_res: add the low-res features to the high-res tokens
            they cover (see `MuseSuperResBackbone`).
        save_preset: directory for the two-stage task preset.
        init_from: a super-res preset directory (or a two-stage preset
            holding one) whose backbone weights start this run, for training
            longer than one sitting allows; its backbone config must match.
        sampling_defaults: dict or None, the super-res task's own sampling
            settings (see `MuseTextToImage`), saved with the preset; the
            held-out upsampling report samples with them, so it measures
            what ships.
        object_token_weight: the masked-token loss weight of the high-res
            tokens that show part of an object (`object_token_mask`), against
            1 on background. At 128² ~90 % of the tokens are flat background,
            which the low-res tokens already pin down; the shape of an
            object's edge is what the stage has to add.
        out: PNG: rows of bicubic-upsampled low-res / super-res / real.
    """
    if not (np.isfinite(object_token_weight) and object_token_weight > 0):
        raise ValueError(f"`object_token_weight` must be a positive number. Received: {object_token_weight}")
    keras.utils.set_random_seed(seed)
    started = time.time()
    base = MuseTextToImage.from_preset(base_preset)
    low_vqgan, encoder = base.vqgan, base.text_encoder
    high_vqgan = VQGAN.from_preset(vqgan_preset)
    low_resolution = base.backbone.grid_size[0] * low_vqgan.factor
    if resolution % low_resolution:
        raise ValueError(
            f"`resolution` ({resolution}) must be a multiple of the base resolution ({low_resolution})."
        )

    def arrays(n, split, data_seed):
        high, captions, _ = shapes.make_arrays(n, resolution=resolution, split=split, seed=data_seed)
        low, _, _ = shapes.make_arrays(n, resolution=low_resolution, split=split, seed=data_seed)
        low_ids = low_vqgan.encode(low_vqgan.preprocess_images(low), batch_size=128)
        high_ids = high_vqgan.encode(high_vqgan.preprocess_images(high), batch_size=128)
        return low, high, np.asarray(low_ids), np.asarray(high_ids), captions

    _, train_images, train_low, train_high, train_captions = arrays(num_train_images, "train", seed)
    eval_low_images, eval_images, eval_low, eval_high, eval_captions = arrays(num_eval_images, "heldout", seed + 1)
    data_seconds = time.time() - started

    backbone = MuseSuperResBackbone(
        codebook_size=high_vqgan.codebook_size, grid_size=tuple(train_high.shape[1:3]),
        low_res_codebook_size=low_vqgan.codebook_size, low_res_grid_size=tuple(train_low.shape[1:3]),
        hidden_dim=hidden_dim, num_layers=num_layers, low_res_num_layers=low_res_num_layers,
        num_heads=num_heads, mlp_dim=mlp_dim, text_dim=encoder.hidden_dim, dropout=dropout,
        attention_window=attention_window, aligned_low_res=aligned_low_res,
    )
    task = MuseSuperResolution(
        backbone, text_encoder=encoder, vqgan=high_vqgan, low_res_vqgan=low_vqgan,
        condition_dropout=condition_dropout, label_smoothing=label_smoothing, seed=seed,
        sampling_defaults=sampling_defaults,
    )
    if init_from:
        warm_start(backbone, _super_res_preset(init_from))
    data = ((train_low, train_high), np.asarray(train_captions))
    if object_token_weight != 1.0:
        objects = np.concatenate([
            object_token_mask(train_images[i:i + 4096], high_vqgan.factor)
            for i in range(0, len(train_images), 4096)
        ])
        data = data + (np.where(objects, object_token_weight, 1.0).astype("float32"),)
    del train_images
    history, steps_done, train_seconds = fit_for_steps(
        task, data, steps, batch_size, learning_rate,
        warmup_steps, weight_decay, seed, checkpoint_dir, verbose,
    )

    n = len(eval_low)
    accuracy = masked_token_accuracy_report(
        task, eval_high, eval_captions, seed=seed + 2,
        object_mask=object_token_mask(eval_images, high_vqgan.factor),
        extra_inputs={"low_res_token_ids": eval_low.reshape(n, -1)},
    )
    sample_started = time.time()
    upsampling, sr_images, low_recon = upsampling_report(
        task, eval_low, eval_low_images, eval_images, eval_captions, seed=seed + 3
    )
    sample_seconds = time.time() - sample_started
    result = {
        "base_preset": str(base_preset),
        "vqgan_preset": str(vqgan_preset),
        "resolution": [low_resolution, resolution],
        "backbone": {k: v for k, v in backbone.get_config().items() if k not in ("name", "trainable", "dtype")},
        "parameters": int(backbone.count_params()),
        "steps": steps_done,
        "init_from": str(init_from) if init_from else None,
        "sampling_defaults": dict(task.sampling_defaults),
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "condition_dropout": condition_dropout,
        "object_token_weight": object_token_weight,
        "seed": seed,
        "num_train_images": num_train_images,
        "heldout_masked_token_accuracy": accuracy,
        "heldout_upsampling": upsampling,
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(steps_done, 1), 3),
        "sampling_seconds_per_image": round(sample_seconds / n, 4),
        "final_train_logs": {k: float(v[-1]) for k, v in history.history.items()},
        "backend": keras.config.backend(),
    }
    if out:
        k = min(8, n)
        rows = [resize_images(low_recon[:k], eval_images.shape[1:3]), sr_images[:k], eval_images[:k]]
        save_png(make_grid(np.concatenate(rows), columns=k), out)
        result["png"] = str(out)
    if save_preset:
        two_stage = MuseTextToImage(
            base.backbone, text_encoder=encoder, vqgan=low_vqgan, super_resolution=task,
            **base._task_settings(),
        )
        two_stage.save_to_preset(save_preset)
        result["saved_preset"] = str(save_preset)
    if report:
        with open(report, "w") as f:
            json.dump(result, f, indent=2)
    if verbose:
        u = upsampling
        print(
            f"held-out PSNR at {resolution}^2: super-res {u['super_res_psnr']:.2f} dB vs bicubic "
            f"{u['bicubic_low_res_tokens_psnr']:.2f} dB (from the low-res tokens) / "
            f"{u['bicubic_real_low_res_psnr']:.2f} dB (from the real {low_resolution}^2 image); "
            f"high-res tokenizer {u['high_res_tokenizer_psnr']:.2f} dB"
        )
        row = accuracy["schedule"]
        print(f"held-out masked high-res token accuracy: {row['conditional']:.1%}; trained {train_seconds / 60:.1f} min")
    return result

