import json
import os

import numpy as np
import pytest

from keras_muse.datasets import shapes
from keras_muse.metrics import alignment
from keras_muse.metrics import attribute_classifier as ac


def _one_hot(labels, classes):
    out = np.zeros(labels.shape + (classes,), "float32")
    valid = labels >= 0
    out[valid, labels[valid]] = 1
    out[~valid, 0] = 1
    return out


def _perfect_predictions(targets):
    return {
        "occupancy": _one_hot(targets["occupancy"], ac.MAX_PER_CELL + 1),
        "color": _one_hot(targets["color"], 8),
        "shape": _one_hot(targets["shape"], 6),
        "size": _one_hot(targets["size"], 2),
        "offset": np.clip(targets["offset"], 0, 1),
    }


def test_targets_decode_back_to_the_scene():
    _, _, attrs = shapes.make_arrays(200, resolution=16, split="heldout", seed=9)
    targets = ac.scene_targets(attrs)
    assert targets["occupancy"].shape == (200, 9)
    assert (targets["occupancy"].sum(1) == [len(a["objects"]) for a in attrs]).all()
    scenes = ac.decode_predictions(_perfect_predictions(targets))
    for scene, attr in zip(scenes, attrs):
        assert scene["count"] == len(attr["objects"])
        cells = [o["position"] for o in attr["objects"]]
        for obj in attr["objects"]:
            if cells.count(obj["position"]) == 1:
                (found,) = [o for o in scene["objects"] if o["position"] == obj["position"]]
                assert (found["color"], found["shape"], found["size"]) == (obj["color"], obj["shape"], obj["size"])
                np.testing.assert_allclose(found["center"], obj["center"], atol=1e-6)
    report = ac.score_predictions(_perfect_predictions(targets), targets)
    assert all(report[k] == 1.0 for k in ("color", "shape", "size", "position", "count", "scene"))


@pytest.mark.slow
def test_tiny_classifier_shapes_and_preset_round_trip(tmp_path):
    model = ac.ShapesAttributeClassifier(widths=(4, 4, 4, 4))
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3)).astype("float32")
    out = model.predict(images, verbose=0)
    assert out["occupancy"].shape == (2, 9, 4) and out["color"].shape == (2, 9, 8)
    assert out["offset"].shape == (2, 9, 2)
    np.testing.assert_allclose(out["shape"].sum(-1), 1, rtol=1e-5)
    # Any multiple-of-16 input is resized to the classifier's own resolution.
    big = model.predict(np.repeat(np.repeat(images, 2, 1), 2, 2), verbose=0)
    assert big["occupancy"].shape == (2, 9, 4)
    assert model.feature_model().output.shape[-1] == 2 * 4
    assert model.feature_model("flatten").output.shape[-1] == 9 * 4
    model.save_to_preset(tmp_path / "judge")
    restored = ac.ShapesAttributeClassifier.from_preset(str(tmp_path / "judge"))
    np.testing.assert_allclose(restored.predict(images, verbose=0)["color"], out["color"], atol=1e-6)
    with pytest.raises(ValueError, match="images"):
        model.predict_scenes(np.zeros((64, 64, 3)))


def test_degradation_is_training_only_and_stays_in_range():
    layer = ac.RandomDegradation(1.0, seed=0)
    x = np.linspace(-1, 1, 2 * 24 * 24 * 3, dtype="float32").reshape(2, 24, 24, 3)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not np.allclose(y, x)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="resolution"):
        ac.ShapesAttributeClassifier(resolution=64)
    with pytest.raises(ValueError, match="widths"):
        ac.ShapesAttributeClassifier(widths=(8, 8))


def test_packaged_judge_reads_real_renders_and_scores_captions(judge):
    """The shipped preset: small, with its recipe, and right on fresh renders."""
    directory = os.path.join(os.path.dirname(ac.__file__), "..", "presets", "shapes_attribute_classifier")
    size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
    assert size < 2 * 1024 * 1024
    with open(os.path.join(directory, "metadata.json")) as f:
        recipe = json.load(f)["keras_muse_recipe"]
    assert "train_attribute_classifier.py" in recipe["command"] and recipe["seed"] != recipe["test_seed"]
    images, captions, attrs = shapes.make_arrays(48, split="heldout", seed=31)
    scores = judge.evaluate_scenes(images, attrs)
    assert min(scores[k] for k in ("color", "shape", "size", "position", "count")) >= 0.95, scores
    own = alignment.score_alignment(images, captions, classifier=judge)
    shuffled = alignment.score_alignment(images, captions[1:] + captions[:1], classifier=judge)
    for key in ("color", "shape", "count"):
        assert own[key] >= 0.95, own
        assert shuffled[key] < own[key] - 0.3, (key, own[key], shuffled[key])
    assert own["all"] >= 0.9 and shuffled["all"] < 0.2
    for key in ("color", "shape", "count", "all"):
        lo, hi = own["ci95"][key]
        assert lo <= own[key] <= hi and shuffled["ci95"][key][1] < lo


@pytest.mark.slow
def test_packaged_judge_accuracy_on_fresh_real_renders(judge):
    """>= 98 % per attribute at 64x64 (both splits) and 128x128."""
    report = ac.evaluate_judge(judge, num_test=400, seed=99)
    for name, scores in report.items():
        for key in ("color", "shape", "size", "position", "count"):
            assert scores[key] >= 0.98, (name, key, scores[key])


@pytest.mark.slow
def test_classifier_fid_separates_scene_distributions(judge):
    real, _, _ = shapes.make_arrays(300, split="heldout", seed=5)
    other, _, _ = shapes.make_arrays(300, split="heldout", seed=5, start=300)
    floor = alignment.classifier_fid(real, other, classifier=judge)
    assert alignment.classifier_fid(real, real, classifier=judge) == pytest.approx(0, abs=1e-3)
    # Scenes of another distribution (one object each) are far beyond the
    # finite-sample floor of two independent real sets.
    train, _, attrs = shapes.make_arrays(900, split="train", seed=5)
    singles = train[[len(a["objects"]) == 1 for a in attrs]][:300]
    assert 0 < 4 * floor < alignment.classifier_fid(real, singles, classifier=judge)


@pytest.mark.slow
def test_training_example_writes_a_preset_with_its_recipe(tmp_path):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "train_attribute_classifier.py")
    spec = importlib.util.spec_from_file_location("train_attribute_classifier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "judge"
    assert module.main(["--epochs", "1", "--num-train", "128", "--num-heldout", "64", "--num-high-res", "64",
                        "--num-test", "8", "--out", str(out)]) == 0
    with open(out / "metadata.json") as f:
        recipe = json.load(f)["keras_muse_recipe"]
    assert recipe["epochs"] == 1 and "--num-train 128" in recipe["command"]
    assert set(recipe["test_accuracy"]) == {"train_64", "heldout_64", "heldout_128"}
    ac.ShapesAttributeClassifier.from_preset(str(out))
