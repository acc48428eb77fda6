import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_muse.cli import build_parser


def test_parser_knows_the_commands():
    args = build_parser().parse_args(["train", "vqgan", "--steps", "5", "--out", "x.png"])
    assert args.steps == 5 and args.model == "vqgan" and args.out == "x.png"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["frobnicate"])


def test_train_muse_cli_takes_a_dtype_policy():
    args = build_parser().parse_args(["train", "muse", "--vqgan-preset", "v", "--dtype-policy", "mixed_bfloat16"])
    assert args.dtype_policy == "mixed_bfloat16"
    assert build_parser().parse_args(["train", "muse", "--vqgan-preset", "v"]).dtype_policy is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "muse", "--vqgan-preset", "v", "--dtype-policy", "bf17"])


def test_train_super_res_cli_checks_sampling_defaults_before_training(tmp_path):
    from keras_muse.cli import _parse_sampling_defaults

    args = build_parser().parse_args([
        "train", "super-res", "--base-preset", "b", "--vqgan-preset", "v",
        "--sampling-defaults", '{"num_steps": 8, "guidance_scale": 0}',
    ])
    assert _parse_sampling_defaults(args.sampling_defaults) == {"num_steps": 8, "guidance_scale": 0}
    assert _parse_sampling_defaults(None) is None
    for bad, match in (("{num_steps: 8}", "must be a JSON object"), ('{"steps": 8}', "unknown keys"),
                       ('{"num_steps": 0}', "num_steps"), ("[8]", "must be a dict")):
        with pytest.raises(SystemExit, match=match):
            _parse_sampling_defaults(bad)


@pytest.mark.slow
def test_train_vqgan_cli_end_to_end(tmp_path):
    """The README's main job, shrunk: trains, writes the PNG, saves a preset."""
    out = tmp_path / "recon.png"
    report = tmp_path / "report.json"
    preset = tmp_path / "preset"
    cmd = [
        sys.executable, "-m", "keras_muse", "train", "vqgan", "--preset", "vqgan_tiny_f4",
        "--steps", "4", "--batch-size", "4", "--num-train-images", "16",
        "--num-eval-images", "8", "--resolution", "32", "--out", str(out),
        "--report", str(report), "--save-preset", str(preset),
    ]
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    subprocess.run(cmd, check=True, env=env, timeout=600)
    image = np.asarray(Image.open(out))
    assert image.ndim == 3 and image.shape[2] == 3
    result = json.loads(report.read_text())
    assert result["heldout"]["num_images"] == 8 and np.isfinite(result["heldout"]["psnr"])
    judged = result["heldout"]["alignment_of_reconstructions"]
    assert {"color", "shape", "count"} <= set(judged) and all(0 <= v <= 1 for v in judged.values())
    rec = tmp_path / "rec.png"
    Image.fromarray(np.zeros((40, 48, 3), "uint8")).save(tmp_path / "in.png")
    subprocess.run(
        [sys.executable, "-m", "keras_muse", "reconstruct", str(tmp_path / "in.png"),
         "--preset", str(preset), "--resolution", "32", "--out", str(rec)],
        check=True, env=env, timeout=600,
    )
    assert rec.exists()


@pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")
def test_generate_cli_writes_a_captioned_grid(tmp_path):
    from helpers import make_tiny_muse_backbone
    from helpers import make_tiny_preprocessor
    from helpers import make_tiny_text_encoder
    from helpers import make_vqgan
    from keras_muse.cli import main
    from keras_muse.models import MuseTextToImage

    task = MuseTextToImage(
        make_tiny_muse_backbone(), text_encoder=make_tiny_text_encoder(make_tiny_preprocessor()),
        vqgan=make_vqgan(factor=4),
    )
    task.save_to_preset(tmp_path / "preset")
    out = tmp_path / "grid.png"
    assert main(["generate", "a red circle", "two blue squares", "--preset", str(tmp_path / "preset"),
                 "-n", "2", "--steps", "4", "--seed", "0", "--out", str(out),
                 "--save-images", str(tmp_path / "single")]) == 0
    grid = np.asarray(Image.open(out))
    # 4 tiles of 16x16 upscaled 8x to 128 px, captions below.
    assert grid.shape[0] > 128 and grid.shape[1] >= 4 * 128
    singles = sorted(os.listdir(tmp_path / "single"))
    assert singles == ["0000.png", "0001.png", "0002.png", "0003.png"]
    with pytest.raises(SystemExit):
        main(["generate", "x", "--preset", str(tmp_path / "preset"), "-n", "0"])
    # inpaint and edit on image files (any size: centre-cropped and resized).
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["inpaint", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--prompt",
                 "a red circle", "--preset", str(tmp_path / "preset"), "--steps", "3",
                 "--out", str(tmp_path / "inpainted.png")]) == 0
    assert main(["edit", str(tmp_path / "in.png"), "--prompt", "a red circle", "--iterations", "3",
                 "--preset", str(tmp_path / "preset"), "--out", str(tmp_path / "edited.png")]) == 0
    assert (tmp_path / "inpainted.png").exists() and (tmp_path / "edited.png").exists()
