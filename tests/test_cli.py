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
    rec = tmp_path / "rec.png"
    Image.fromarray(np.zeros((40, 48, 3), "uint8")).save(tmp_path / "in.png")
    subprocess.run(
        [sys.executable, "-m", "keras_muse", "reconstruct", str(tmp_path / "in.png"),
         "--preset", str(preset), "--resolution", "32", "--out", str(rec)],
        check=True, env=env, timeout=600,
    )
    assert rec.exists()
