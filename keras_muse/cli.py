"""Command line: `python -m keras_muse <command> ...`.

Commands:
    train vqgan   train the image tokenizer (default: captioned shapes, 64x64)
    train muse    train the base masked transformer on a tokenizer's ids + captions
    reconstruct   tokenize and decode images with a trained tokenizer preset
    generate      text -> images with a trained MuseTextToImage preset (PNG grid)
    inpaint       regenerate the masked region of images (mask images: white = regenerate)
    edit          mask-free editing of images toward a prompt
    evaluate      generate for shapes prompts and score them (alignment, FID, CLIP; JSON + PNG)
    export        write a MuseTextToImage preset as a TF Serving SavedModel (OUT/<version>/)

Compiled programs are kept in ~/.cache/keras_muse/xla (JAX backend;
`--no-compile-cache` before the command turns that off), so the second run
of a command with the same shapes starts in seconds.

Example:
    python -m keras_muse train vqgan --steps 300 --out reconstructions.png
"""

import argparse
import json
import os
import sys


def _add_train_vqgan(subparsers):
    p = subparsers.add_parser("vqgan", help="Train the VQGAN tokenizer on captioned shapes.")
    p.add_argument("--preset", default="vqgan_shapes_f4",
                   help="an architecture name (fresh weights), or a trained preset to continue from: "
                        "a directory or a shipped name such as vqgan_shapes_64")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1.5e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--num-train-images", type=int, default=20000)
    p.add_argument("--num-eval-images", type=int, default=512)
    p.add_argument("--perceptual-weight", type=float, default=0.0,
                   help="0 by default: the VGG16 ImageNet weights cannot be downloaded offline")
    p.add_argument("--adversarial-weight", type=float, default=0.1)
    p.add_argument("--discriminator-start", type=int, default=None,
                   help="step at which the GAN losses start (default: 85%% of --steps)")
    p.add_argument("--entropy-weight", type=float, default=0.0,
                   help="codebook entropy regularizer (MaskGIT: 0.1); 0 for flat-background data")
    p.add_argument("--codebook-size", type=int, default=None,
                   help="override the architecture's codebook size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reconstructions.png", help="PNG: originals vs reconstructions")
    p.add_argument("--save-preset", default=None, help="directory to save the trained preset to")
    p.add_argument("--checkpoint-dir", default=None, help="BackupAndRestore dir: a killed run resumes")
    p.add_argument("--report", default=None, help="JSON file for the measurements")
    p.set_defaults(func=_run_train_vqgan)


def _add_train_muse(subparsers):
    p = subparsers.add_parser("muse", help="Train the base masked transformer on captioned shapes.")
    p.add_argument("--vqgan-preset", required=True, help="a trained VQGAN preset directory")
    p.add_argument("--text-encoder", default="muse_text_tiny",
                   help="text encoder preset name or directory (trained jointly)")
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--mlp-dim", type=int, default=1024)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--condition-dropout", type=float, default=0.1)
    p.add_argument("--object-token-weight", type=float, default=1.0,
                   help="loss weight of the tokens showing an object (background: 1)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--num-train-images", type=int, default=20000)
    p.add_argument("--num-eval-images", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-preset", default=None, help="directory to save the trained task preset to")
    p.add_argument("--checkpoint-dir", default=None, help="BackupAndRestore dir: a killed run resumes")
    p.add_argument("--init-from", default=None,
                   help="MuseTextToImage preset whose backbone (and text encoder) weights start this run")
    p.add_argument("--freeze-text-encoder", action="store_true",
                   help="keep the text encoder's weights as loaded (e.g. continuing a base that a super-res "
                        "stage reads the text embeddings of)")
    p.add_argument("--dtype-policy", default=None, choices=["float32", "mixed_bfloat16"],
                   help="the transformer's Keras dtype policy (mixed_bfloat16: bf16 compute, float32 weights; "
                        "faster on CPUs with AMX under the TensorFlow backend; float16 would need loss scaling)")
    p.add_argument("--report", default=None, help="JSON file for the measurements")
    p.set_defaults(func=_run_train_muse)


def _run_train_muse(args):
    from keras_muse.training.train_muse import train_muse

    for name in ("steps", "batch_size", "num_train_images", "num_eval_images", "hidden_dim", "num_layers"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0")
    if args.init_from and not os.path.isdir(args.init_from):
        raise SystemExit(f"--init-from {args.init_from!r} is not a preset directory")
    if not os.path.isdir(args.vqgan_preset):
        raise SystemExit(f"--vqgan-preset {args.vqgan_preset!r} is not a preset directory "
                         "(train one with `python -m keras_muse train vqgan --save-preset DIR`)")
    result = train_muse(
        vqgan_preset=args.vqgan_preset,
        text_encoder=args.text_encoder,
        hidden_dim=args.hidden_dim,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        mlp_dim=args.mlp_dim,
        dropout=args.dropout,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        condition_dropout=args.condition_dropout,
        object_token_weight=args.object_token_weight,
        label_smoothing=args.label_smoothing,
        num_train_images=args.num_train_images,
        num_eval_images=args.num_eval_images,
        seed=args.seed,
        save_preset=args.save_preset,
        checkpoint_dir=args.checkpoint_dir,
        init_from=args.init_from,
        freeze_text_encoder=args.freeze_text_encoder,
        dtype_policy=args.dtype_policy,
        report=args.report,
    )
    print(json.dumps(result["heldout_masked_token_accuracy"]))
    return 0


def _add_train_super_res(subparsers):
    p = subparsers.add_parser(
        "super-res", help="Train the super-resolution transformer for a trained base model."
    )
    p.add_argument("--base-preset", required=True, help="a trained MuseTextToImage preset directory")
    p.add_argument("--vqgan-preset", required=True, help="a trained high-res VQGAN preset directory")
    p.add_argument("--resolution", type=int, default=128, help="the high resolution")
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--low-res-num-layers", type=int, default=2)
    p.add_argument("--attention-window", type=int, default=8,
                   help="multi-axis self-attention window over the high-res grid (0: global attention)")
    p.add_argument("--aligned-low-res", type=int, default=1, choices=(0, 1),
                   help="1: also add each low-res token's features to the high-res tokens it covers")
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--mlp-dim", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--condition-dropout", type=float, default=0.1)
    p.add_argument("--object-token-weight", type=float, default=1.0,
                   help="loss weight of the high-res tokens that show an object (background: 1)")
    p.add_argument("--num-train-images", type=int, default=20000)
    p.add_argument("--num-eval-images", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG: bicubic / super-res / real rows")
    p.add_argument("--save-preset", default=None, help="directory for the two-stage task preset")
    p.add_argument("--checkpoint-dir", default=None, help="BackupAndRestore dir: a killed run resumes")
    p.add_argument("--init-from", default=None,
                   help="super-res (or two-stage) preset whose backbone weights start this run")
    p.add_argument("--sampling-defaults", default=None, metavar="JSON",
                   help='the super-res stage\'s saved sampling settings, e.g. \'{"num_steps": 8, '
                        '"temperature": 0.05, "guidance_scale": 0}\'')
    p.add_argument("--report", default=None, help="JSON file for the measurements")
    p.set_defaults(func=_run_train_super_res)


def _parse_sampling_defaults(text):
    """`--sampling-defaults` JSON, checked before any training starts."""
    if text is None:
        return None
    from keras_muse.models.muse.muse_generation import check_sampling_defaults

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--sampling-defaults must be a JSON object, e.g. '{{\"num_steps\": 8}}'. "
                         f"Received {text!r} ({e.msg})")
    try:
        return check_sampling_defaults(value)
    except ValueError as e:
        raise SystemExit(f"--sampling-defaults: {e}")


def _run_train_super_res(args):
    from keras_muse.training.train_super_res import train_super_res

    for name in ("steps", "batch_size", "num_train_images", "num_eval_images", "hidden_dim", "num_layers",
                 "resolution"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0")
    for flag in ("base_preset", "vqgan_preset") + (("init_from",) if args.init_from else ()):
        if not os.path.isdir(getattr(args, flag)):
            raise SystemExit(f"--{flag.replace('_', '-')} {getattr(args, flag)!r} is not a preset directory")
    sampling_defaults = _parse_sampling_defaults(args.sampling_defaults)
    result = train_super_res(
        base_preset=args.base_preset, vqgan_preset=args.vqgan_preset, resolution=args.resolution,
        hidden_dim=args.hidden_dim, num_layers=args.num_layers, low_res_num_layers=args.low_res_num_layers,
        num_heads=args.num_heads, mlp_dim=args.mlp_dim, dropout=args.dropout, steps=args.steps,
        attention_window=args.attention_window or None, aligned_low_res=bool(args.aligned_low_res),
        batch_size=args.batch_size, learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
        condition_dropout=args.condition_dropout, object_token_weight=args.object_token_weight,
        num_train_images=args.num_train_images,
        num_eval_images=args.num_eval_images, seed=args.seed, save_preset=args.save_preset,
        checkpoint_dir=args.checkpoint_dir, init_from=args.init_from, report=args.report, out=args.out,
        sampling_defaults=sampling_defaults,
    )
    print(json.dumps(result["heldout_upsampling"]))
    return 0


def _run_train_vqgan(args):
    from keras_muse.training.train_vqgan import train_vqgan

    for name in ("steps", "batch_size", "num_train_images", "num_eval_images"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0")
    result = train_vqgan(
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        resolution=args.resolution,
        num_train_images=args.num_train_images,
        num_eval_images=args.num_eval_images,
        perceptual_weight=args.perceptual_weight,
        adversarial_weight=args.adversarial_weight,
        discriminator_start=args.discriminator_start,
        entropy_weight=args.entropy_weight,
        codebook_size=args.codebook_size,
        seed=args.seed,
        out=args.out,
        save_preset=args.save_preset,
        checkpoint_dir=args.checkpoint_dir,
        report=args.report,
    )
    print(json.dumps(result["heldout"]))
    return 0


def _load_images(paths, resolution, mode="RGB"):
    """Image files -> uint8 [n, r, r, C], centre-cropped and resized."""
    import numpy as np
    from PIL import Image

    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                resample = Image.NEAREST if mode == "L" else Image.BICUBIC
                im = im.crop((left, top, left + side, top + side)).resize((resolution, resolution), resample)
                images.append(np.asarray(im))
        except OSError as e:
            raise SystemExit(f"cannot read image {path!r}: {e}")
    return np.stack(images)


def _run_reconstruct(args):
    from keras_muse.models import VQGAN
    from keras_muse.training.train_vqgan import comparison_grid
    from keras_muse.utils.image_utils import save_png

    vqgan = VQGAN.from_preset(args.preset)
    images = _load_images(args.images, args.resolution)
    recon = vqgan.reconstruct(images)
    save_png(comparison_grid(images, recon, columns=min(8, len(images))), args.out)
    print(f"wrote {args.out}")
    return 0


def _run_edit_command(args):
    """`inpaint` and `edit`: originals next to the results, with captions."""
    import numpy as np

    from keras_muse.models import MuseTextToImage
    from keras_muse.utils.image_utils import make_captioned_grid
    from keras_muse.utils.image_utils import save_png

    task = MuseTextToImage.from_preset(args.preset)
    resolution = task.resolution[0]
    images = _load_images(args.images, resolution)
    if args.command == "inpaint":
        masks = _load_images(args.mask, resolution, mode="L") > 127
        if len(masks) == 1:
            masks = np.repeat(masks, len(images), 0)
        if len(masks) != len(images):
            raise SystemExit("--mask: give one mask, or one per image")
        results = task.inpaint(images, masks, args.prompt, num_steps=args.steps,
                               guidance_scale=args.guidance_scale, seed=args.seed)
    else:
        results = task.edit(images, args.prompt, iterations=args.iterations, fraction=args.fraction,
                            guidance_scale=args.guidance_scale, seed=args.seed)
    tiles = np.stack([t for pair in zip(images, results) for t in pair])
    captions = [c for _ in images for c in ("original", args.prompt)]
    save_png(make_captioned_grid(tiles, captions, columns=2), args.out)
    print(f"wrote {args.out}")
    return 0


def _run_generate(args):
    import numpy as np

    from keras_muse.models import MuseTextToImage
    from keras_muse.utils.image_utils import make_captioned_grid
    from keras_muse.utils.image_utils import save_png

    if args.num_images < 1:
        raise SystemExit("-n/--num-images must be >= 1")
    task = MuseTextToImage.from_preset(args.preset)
    prompts = [p for p in args.prompts for _ in range(args.num_images)]
    negative = args.negative_prompt
    images = task.generate(
        prompts,
        negative_prompts=negative,
        num_steps=args.steps,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        batch_size=args.batch_size,
        super_resolution_steps=args.super_res_steps,
        verbose=1,
    )
    save_png(make_captioned_grid(images, prompts, columns=min(args.num_images * len(args.prompts), args.columns)), args.out)
    if args.save_images:
        os.makedirs(args.save_images, exist_ok=True)
        for i, image in enumerate(images):
            save_png(np.asarray(image), os.path.join(args.save_images, f"{i:04d}.png"))
    print(f"wrote {args.out} ({len(images)} images)")
    return 0


def _run_export(args):
    from keras_muse.export import export_saved_model
    from keras_muse.models import MuseTextToImage

    if not os.path.isdir(args.preset):
        raise SystemExit(f"--preset {args.preset!r} is not a preset directory")
    task = MuseTextToImage.from_preset(args.preset)
    try:
        export_dir = export_saved_model(
            task, args.out, version=args.version, num_steps=args.steps, guidance_scale=args.guidance_scale,
            super_resolution_steps=args.super_res_steps, overwrite=args.overwrite, verbose=True,
        )
    except ValueError as e:
        raise SystemExit(str(e))
    print(f"wrote {export_dir}")
    return 0


def _add_evaluate_arguments(parser):
    from keras_muse.metrics.evaluation import add_arguments

    add_arguments(parser)


def _run_evaluate(args):
    from keras_muse.metrics.evaluation import run

    return run(args)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m keras_muse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--no-compile-cache", dest="compile_cache", action="store_false",
        help="do not keep compiled programs in ~/.cache/keras_muse/xla (or $KERAS_MUSE_CACHE_DIR); "
             "with the cache, a second `generate` with the same preset and shapes skips XLA compilation",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="Train a model.")
    models = train.add_subparsers(dest="model", required=True)
    _add_train_vqgan(models)
    _add_train_muse(models)
    _add_train_super_res(models)
    rec = commands.add_parser("reconstruct", help="Tokenize + decode image files.")
    rec.add_argument("images", nargs="+")
    rec.add_argument("--preset", required=True, help="a trained VQGAN preset directory")
    rec.add_argument("--resolution", type=int, default=64)
    rec.add_argument("--out", default="reconstructions.png")
    rec.set_defaults(func=_run_reconstruct)
    gen = commands.add_parser("generate", help="Generate images from prompts with a trained preset.")
    gen.add_argument("prompts", nargs="+", help="one or more prompts")
    gen.add_argument("--preset", default="muse_shapes_64",
                     help="a shipped preset name (default: muse_shapes_64) or a MuseTextToImage preset directory")
    gen.add_argument("-n", "--num-images", type=int, default=4, help="images per prompt")
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--steps", type=int, default=None, help="decoding steps (default: the preset's, else 24)")
    gen.add_argument("--guidance-scale", type=float, default=None, help="default: the preset's, else 3.0")
    gen.add_argument("--temperature", type=float, default=None, help="default: the preset's, else 1.0")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--super-res-steps", type=int, default=None,
                     help="steps of the super-res stage when the preset has one (default: the preset's, "
                          "else 8; 0: base resolution only)")
    gen.add_argument("--columns", type=int, default=8)
    gen.add_argument("--out", default="samples.png", help="PNG grid with captions")
    gen.add_argument("--save-images", default=None, help="directory for the single images as PNG")
    gen.set_defaults(func=_run_generate)
    inp = commands.add_parser("inpaint", help="Regenerate the masked region of images.")
    inp.add_argument("images", nargs="+")
    inp.add_argument("--mask", nargs="+", required=True, help="mask image(s): white = regenerate")
    inp.add_argument("--prompt", required=True)
    inp.add_argument("--preset", default="muse_shapes_64",
                     help="a shipped preset name (default: muse_shapes_64) or a MuseTextToImage preset directory")
    inp.add_argument("--steps", type=int, default=12)
    inp.add_argument("--guidance-scale", type=float, default=3.0)
    inp.add_argument("--seed", type=int, default=0)
    inp.add_argument("--out", default="inpainted.png")
    inp.set_defaults(func=_run_edit_command)
    edit = commands.add_parser("edit", help="Mask-free editing of images toward a prompt.")
    edit.add_argument("images", nargs="+")
    edit.add_argument("--prompt", required=True)
    edit.add_argument("--preset", default="muse_shapes_64",
                     help="a shipped preset name (default: muse_shapes_64) or a MuseTextToImage preset directory")
    edit.add_argument("--iterations", type=int, default=100)
    edit.add_argument("--fraction", type=float, default=0.08)
    edit.add_argument("--guidance-scale", type=float, default=4.0)
    edit.add_argument("--seed", type=int, default=0)
    edit.add_argument("--out", default="edited.png")
    edit.set_defaults(func=_run_edit_command)
    exp = commands.add_parser("export", help="Export a MuseTextToImage preset for TF Serving.")
    exp.add_argument("--preset", required=True, help="a MuseTextToImage preset directory")
    exp.add_argument("--out", required=True, help="the model base path; the SavedModel goes to OUT/<version>/")
    exp.add_argument("--version", type=int, default=1)
    exp.add_argument("--steps", type=int, default=None,
                     help="decoding steps, fixed in the SavedModel (default: the preset's, else 24)")
    exp.add_argument("--guidance-scale", type=float, default=None,
                     help="default of the guidance_scale input (default: the preset's, else 3.0)")
    exp.add_argument("--super-res-steps", type=int, default=None,
                     help="steps of the super-res stage when the preset has one (default: the preset's, "
                          "else 8; 0: base resolution only)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing OUT/<version>/")
    exp.set_defaults(func=_run_export)
    ev = commands.add_parser("evaluate", help="Score a preset on shapes prompts: alignment, FID, CLIP score.")
    _add_evaluate_arguments(ev)
    ev.set_defaults(func=_run_evaluate)
    return parser


def main(argv=None):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    args = build_parser().parse_args(argv)
    if args.compile_cache:
        from keras_muse.backend import enable_compilation_cache

        enable_compilation_cache()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
