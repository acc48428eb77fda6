import numpy as np

from keras_muse.training.train_muse import masked_token_accuracy_report
from keras_muse.training.train_muse import object_token_mask
from keras_muse.training.train_muse import paired_bootstrap_ci


def test_paired_bootstrap_ci_brackets_the_gain():
    rng = np.random.default_rng(0)
    counts = rng.integers(5, 20, 300)
    a = rng.binomial(counts, 0.6)
    b = rng.binomial(counts, 0.4)
    lo, hi = paired_bootstrap_ci(a, b, counts)
    gain = (a.sum() - b.sum()) / counts.sum()
    assert lo < gain < hi and 0.1 < lo and hi < 0.3
    lo, hi = paired_bootstrap_ci(a, a, counts)
    assert lo == hi == 0.0


def test_report_scores_the_same_masks_with_and_without_text(preprocessor):
    from helpers import make_tiny_muse_backbone
    from helpers import make_tiny_text_encoder
    from keras_muse.models import MuseTextToImage

    task = MuseTextToImage(make_tiny_muse_backbone(), text_encoder=make_tiny_text_encoder(preprocessor))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 64, (6, 16)).astype("int32")
    captions = ["a red circle", "two blue squares", "a green star on the left"] * 2
    objects = rng.random((6, 16)) < 0.5
    report = masked_token_accuracy_report(task, ids, captions, rates=("schedule", 1.0), object_mask=objects)
    assert set(report) == {"schedule", "1.0"}
    for row in report.values():
        for key in ("conditional", "unconditional", "conditional_objects", "unconditional_objects"):
            assert 0.0 <= row[key] <= 1.0
        lo, hi = row["objects_gain_ci95"]
        assert lo <= hi
    # Deterministic for a seed: the masks are drawn once from it.
    again = masked_token_accuracy_report(task, ids, captions, rates=("schedule",), object_mask=objects)
    assert again["schedule"] == report["schedule"]


def test_object_token_mask_finds_the_objects():
    images = np.full((1, 16, 16, 3), 240, "uint8")
    images[0, 4:8, 8:12] = (220, 40, 40)
    mask = object_token_mask(images, factor=4).reshape(4, 4)
    expected = np.zeros((4, 4), bool)
    expected[1, 2] = True
    np.testing.assert_array_equal(mask, expected)
