import numpy as np
import pytest

from keras_muse.datasets import shapes
from keras_muse.metrics import alignment


def _canonical(objects, relation_of):
    out = []
    for k, obj in enumerate(objects):
        item = {key: value for key, value in obj.items() if key != "relation"}
        rel = relation_of(k)
        if rel is not None:
            name, j = rel
            item["relation"] = (name, objects[j]["color"], objects[j]["shape"])
        out.append(tuple(sorted((key, str(value)) for key, value in item.items())))
    return sorted(out)


@pytest.mark.parametrize("split", shapes.SPLITS)
def test_parse_reads_exactly_what_dataset_captions_state(split):
    for i in range(400):
        _, caption, attrs = shapes.make_example(i, resolution=16, split=split, seed=3)
        parsed = alignment.parse_prompt(caption)
        stated = attrs["caption_attributes"]
        assert _canonical(parsed["objects"], lambda k: (
            parsed["relation"][1:] if parsed["relation"] and parsed["relation"][0] == k else None
        )) == _canonical(stated, lambda k: stated[k].get("relation")), caption
        assert parsed["count"] == len(attrs["objects"])


def test_parse_examples_and_errors():
    parsed = alignment.parse_prompt("Two small yellow triangles, and a cyan star on the left.")
    assert parsed["count"] == 3 and parsed["relation"] is None
    assert parsed["objects"][0] == {"color": "yellow", "shape": "triangle", "size": "small", "count": 2}
    assert parsed["objects"][2] == {"color": "cyan", "shape": "star", "position": "left"}
    parsed = alignment.parse_prompt("a large red circle to the right of a blue square")
    assert parsed["relation"] == (0, "to the right of", 1) and parsed["objects"][0]["size"] == "large"
    assert alignment.parse_prompt("an orange hexagon in the top left")["objects"][0]["position"] == "top left"
    for bad in ("a purple elephant", "a red circles", "two red circle", "two red circles in the center", ""):
        with pytest.raises(ValueError, match="prompt"):
            alignment.parse_prompt(bad)


def _truth(attrs):
    """A scene as the judge would report it if it were perfect."""
    return {"objects": [dict(o) for o in attrs["objects"]], "count": len(attrs["objects"])}


def test_true_scenes_satisfy_their_captions_and_not_shuffled_ones():
    examples = [shapes.make_example(i, resolution=16, split="heldout", seed=4) for i in range(300)]
    own = {k: [0, 0] for k in ("color", "shape", "size", "position", "count")}
    shuffled = {k: [0, 0] for k in own}
    rng = np.random.default_rng(0)
    order = rng.permutation(len(examples))
    for i, (_, caption, attrs) in enumerate(examples):
        for totals, text in ((own, caption), (shuffled, examples[order[i]][1])):
            tally = alignment.score_prompt(text, _truth(attrs))
            for key in totals:
                totals[key][0] += tally[key][0]
                totals[key][1] += tally[key][1]
    for key in own:
        assert own[key][0] == own[key][1], key  # everything a caption states is true
        assert shuffled[key][0] < 0.7 * shuffled[key][1], key


def test_relation_between_identical_objects_is_matched_in_the_order_that_holds():
    scene = {"objects": [
        {"color": "blue", "shape": "star", "size": "large", "position": "right", "center": (0.8, 0.5)},
        {"color": "blue", "shape": "star", "size": "large", "position": "left", "center": (0.2, 0.5)},
    ]}
    assert alignment.score_prompt("a blue star to the left of a large blue star", scene)["relation"] == (1, 1)
    assert alignment.score_prompt("a blue star above a blue star", scene)["relation"] == (0, 1)


def test_counts_sizes_and_unknown_objects():
    star = {"color": "blue", "shape": "star", "size": "small", "position": "top", "center": (0.5, 0.2)}
    one = {"objects": [star]}
    tally = alignment.score_prompt("two small blue stars", one)
    assert tally["count"] == (0, 1) and tally["color"] == (1, 2) and tally["size"] == (1, 2)
    # A second object the judge found in the same cell has unknown attributes.
    unknown = {"color": None, "shape": None, "size": None, "position": "top", "center": (0.5, 0.2)}
    tally = alignment.score_prompt("two blue stars", {"objects": [star, unknown]})
    assert tally["count"] == (0, 1) and tally["shape"] == (1, 2)
    tally = alignment.score_prompt("a large blue star at the bottom", one)
    assert tally["size"] == (0, 1) and tally["position"] == (0, 1) and tally["color"] == (1, 1)
    assert alignment.score_prompt("a blue star", {"objects": []})["color"] == (0, 1)


def test_score_alignment_checks_its_inputs():
    with pytest.raises(ValueError, match="one prompt each"):
        alignment.score_alignment(np.zeros((2, 16, 16, 3), "uint8"), ["a red circle"], classifier=object())


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_prompts():
    rng = np.random.default_rng(1)

    def tallies(n):
        stated = rng.integers(1, 3, n)
        return np.stack([rng.binomial(stated, 0.7), stated], 1).astype(float)

    small, large = tallies(64), tallies(1024)
    for t in (small, large):
        lo, hi = alignment.bootstrap_ci(t)
        assert lo <= t[:, 0].sum() / t[:, 1].sum() <= hi
    width = lambda t: np.subtract(*alignment.bootstrap_ci(t)[::-1])  # noqa: E731
    assert width(large) < 0.5 * width(small)
    assert alignment.bootstrap_ci(np.array([[2.0, 2.0]] * 10)) == [1.0, 1.0]
    assert alignment.bootstrap_ci(np.zeros((5, 2))) is None


def test_held_out_pair_breakdown_splits_objects_by_their_colour_shape_pair():
    # "red triangle" is a held-out pair, "blue square" is not.
    prompts = [alignment.parse_prompt(p) for p in
               ("a small red triangle above a blue square", "a red triangle", "two blue squares")]
    tri = {"color": "red", "shape": "triangle", "size": "small", "center": (0.5, 0.2)}
    sq = {"color": "blue", "shape": "square", "size": "large", "center": (0.5, 0.8)}
    circle = dict(tri, shape="circle")  # the held-out pair drawn as a seen one
    scenes = [{"objects": [tri, sq]}, {"objects": [circle]}, {"objects": [sq, dict(sq, color="green")]}]
    out = alignment.held_out_pair_breakdown(prompts, scenes)
    assert out["held_out_pair"] == {"color": 1.0, "shape": 0.5, "size": 1.0, "objects": 2}
    assert out["other"] == {"color": 0.6667, "shape": 1.0, "size": None, "objects": 3}
    # Every object of a true scene is right in both groups.
    examples = [shapes.make_example(i, resolution=16, split="heldout", seed=4) for i in range(50)]
    out = alignment.held_out_pair_breakdown([alignment.parse_prompt(c) for _, c, _ in examples],
                                            [_truth(a) for _, _, a in examples])
    assert out["held_out_pair"]["objects"] >= 50 and out["held_out_pair"]["shape"] == out["other"]["shape"] == 1.0


def test_score_alignment_reports_the_held_out_pair_breakdown_of_its_scenes():
    examples = [shapes.make_example(i, resolution=16, split="heldout", seed=6) for i in range(20)]
    images = np.stack([image for image, _, _ in examples])
    captions = [caption for _, caption, _ in examples]
    # Every other scene loses its objects: the judge sees nothing there.
    scenes = [_truth(a) if i % 2 else {"objects": [], "count": 0} for i, (_, _, a) in enumerate(examples)]

    class Judge:
        def predict_scenes(self, images, batch_size=64):
            return scenes

    report = alignment.score_alignment(images, captions, classifier=Judge())
    assert report["held_out_pairs"] == alignment.held_out_pair_breakdown(
        [alignment.parse_prompt(c) for c in captions], scenes)
    assert 0 < report["held_out_pairs"]["held_out_pair"]["shape"] < 1
