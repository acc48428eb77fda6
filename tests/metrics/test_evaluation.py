import json

import numpy as np
import pytest
from PIL import Image

from keras_muse.cli import build_parser
from keras_muse.metrics import evaluation


def _report():
    alignment = {"color": 0.9, "shape": 0.8, "size": 0.7, "position": 0.6, "count": 0.95, "all": 0.4}
    rows = [{"guidance_scale": g, "alignment": {k: v - 0.1 * (g == 0) for k, v in alignment.items()},
             "classifier_fid": 30.0 - 4 * g, "generation_seconds": 1.0} for g in (0.0, 1.0, 3.0)]
    for row in rows:
        row["mean_alignment"] = evaluation.mean_alignment(row["alignment"])
    return {"preset": "p", "split": "heldout", "num_prompts": 8, "results": rows,
            "real": {"alignment": {k: 1.0 for k in alignment}, "classifier_fid_floor": 5.0}}


def test_table_and_plot(tmp_path):
    report = _report()
    table = evaluation.format_table(report["results"])
    lines = table.splitlines()
    assert len(lines) == 4 and "clf_FID" in lines[0] and "30.000" in lines[1]
    path = evaluation.save_png_plot(report, tmp_path / "sweep.png")
    image = np.asarray(Image.open(path))
    assert image.shape == (440, 640, 3)
    assert ((image[..., 0] > 200) & (image[..., 1] < 80)).sum() > 50  # the red points were drawn


def test_parser_knows_evaluate():
    args = build_parser().parse_args(
        ["evaluate", "--preset", "p", "-n", "8", "--guidance-sweep", "0,1,2", "--out", "r.json"])
    assert args.num_prompts == 8 and args.guidance_sweep == "0,1,2" and args.split == "heldout"
    assert all(getattr(args, k) is None for k in evaluation.SAMPLING_OPTIONS)
    args = build_parser().parse_args(
        ["evaluate", "--preset", "p", "--temperature", "0.7", "--choice-temperature", "2",
         "--guidance-schedule", "constant", "--top-k", "5"])
    assert (args.temperature, args.choice_temperature, args.guidance_schedule, args.top_k) == (0.7, 2.0, "constant", 5)


def test_evaluate_passes_sampling_settings_to_generate_and_reports_them(monkeypatch):
    class Judge:
        def feature_model(self):
            return lambda images: np.asarray(images, "float32").reshape(len(images), -1)[:, :4]

    class Task:
        sampling_defaults = {"choice_temperature": 2.0}
        resolution = (16, 16)
        calls = []

        def sampling_setting(self, name, value=None):
            from keras_muse.models.muse.muse_generation import BUILTIN_SAMPLING

            return value if value is not None else self.sampling_defaults.get(name, BUILTIN_SAMPLING[name])

        def generate(self, prompts, **kwargs):
            self.calls.append(kwargs)
            return np.zeros((len(prompts), 16, 16, 3), "uint8")

    from keras_muse.metrics import alignment

    task = Task()
    monkeypatch.setattr(alignment, "score_alignment", lambda images, prompts, classifier=None: {"color": 1.0})
    report = evaluation.evaluate(task, num_prompts=2, guidance_scales=[1.0], judge=Judge(), inception=False,
                                 clip=False, verbose=False, sampling={"temperature": 0.5, "top_k": None})
    with pytest.raises(ValueError, match="unknown keys"):
        evaluation.evaluate(task, num_prompts=2, judge=Judge(), sampling={"temprature": 0.5})
    assert task.calls[0]["temperature"] == 0.5 and "top_k" not in task.calls[0]
    assert "choice_temperature" not in task.calls[0]  # left to the task's default
    assert report["sampling"] == {"temperature": 0.5, "choice_temperature": 2.0, "guidance_schedule": "linear",
                                  "top_k": None}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")
def test_evaluate_cli_end_to_end_offline(tmp_path, monkeypatch, capsys):
    import keras
    import keras_hub

    from helpers import make_tiny_muse_backbone
    from helpers import make_tiny_preprocessor
    from helpers import make_tiny_text_encoder
    from helpers import make_vqgan
    from keras_muse.cli import main
    from keras_muse.metrics import ShapesAttributeClassifier
    from keras_muse.models import MuseTextToImage

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "InceptionV3", offline)
    monkeypatch.setattr(keras_hub.models.CLIPBackbone, "from_preset", offline)
    task = MuseTextToImage(
        make_tiny_muse_backbone(), text_encoder=make_tiny_text_encoder(make_tiny_preprocessor()),
        vqgan=make_vqgan(factor=4),
    )
    task.save_to_preset(tmp_path / "preset")
    keras.utils.set_random_seed(0)
    ShapesAttributeClassifier(widths=(4, 4, 4, 4)).save_to_preset(tmp_path / "judge")
    out, grid = tmp_path / "report.json", tmp_path / "grid.png"
    assert main(["evaluate", "--preset", str(tmp_path / "preset"), "--judge", str(tmp_path / "judge"),
                 "-n", "4", "--guidance-sweep", "0,2", "--steps", "3", "--out", str(out),
                 "--grid", str(grid)]) == 0
    report = json.loads(out.read_text())
    assert [r["guidance_scale"] for r in report["results"]] == [0.0, 2.0]
    for row in report["results"]:
        assert set(evaluation.ALIGNMENT_KEYS) <= set(row["alignment"])
        assert np.isfinite(row["classifier_fid"]) and row["classifier_fid"] >= 0
    assert report["real"]["classifier_fid_floor"] >= 0 and report["resolution"] == 16
    assert "name resolution" in report["skipped"]["inception_fid"]
    assert "name resolution" in report["skipped"]["clip_score"]
    assert "skipping inception_fid" in capsys.readouterr().out
    assert Image.open(grid).size[0] > 4 * 16
    assert Image.open(tmp_path / "report_sweep.png").size == (640, 440)


def test_cli_guidance_schedules_are_the_samplers():
    from keras_muse.samplers.guidance import GUIDANCE_SCHEDULES

    parser = build_parser()
    for schedule in GUIDANCE_SCHEDULES:
        assert parser.parse_args(["evaluate", "--preset", "p", "--guidance-schedule", schedule]).guidance_schedule
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--preset", "p", "--guidance-schedule", "cosine"])
