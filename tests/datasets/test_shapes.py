import collections
import fractions
import math
import re
import time

import numpy as np
import pytest

from keras_muse.datasets import shapes

# A caption grammar written independently of the module, so the tests check
# the text itself and not just the module's own account of it.
_POSITION_WORDS = {
    "in the top left": "top left",
    "at the top": "top",
    "in the top right": "top right",
    "on the left": "left",
    "in the center": "center",
    "on the right": "right",
    "in the bottom left": "bottom left",
    "at the bottom": "bottom",
    "in the bottom right": "bottom right",
}
_COUNTS = {"a": 1, "an": 1, "two": 2, "three": 3}
_RELATIONS = ("above", "below", "to the left of", "to the right of")
_MENTION = (
    r"(a|an|two|three) (?:(small|large) )?({colors}) ({shapes})(s?)(?: ({positions}))?"
).format(
    colors="|".join(shapes.COLORS),
    shapes="|".join(shapes.SHAPES),
    positions="|".join(sorted(_POSITION_WORDS, key=len, reverse=True)),
)
_MENTION_RE = re.compile(_MENTION)
_LIST_RE = re.compile(rf"{_MENTION}(?:(?:, | and ){_MENTION})*")
_RELATION_RE = re.compile(rf"(.+) ({'|'.join(_RELATIONS)}) (.+)")


def _parse_mentions(text):
    mentions = []
    for m in _MENTION_RE.finditer(text):
        article, size, color, shape, plural, position = m.groups()
        count = _COUNTS[article]
        assert (count > 1) == (plural == "s"), text
        if count == 1:
            expected = "an" if (size or color)[0] in "aeiou" else "a"
            assert article == expected, f"wrong article in {text!r}"
        mentions.append(
            {
                "count": count,
                "size": size,
                "color": color,
                "shape": shape,
                "position": _POSITION_WORDS.get(position),
            }
        )
    return mentions


def _matches(obj, mention):
    return all(
        mention[k] is None or obj[k] == mention[k]
        for k in ("size", "color", "shape", "position")
    )


def _relation_holds(a, relation, b):
    (ax, ay), (bx, by) = a["center"], b["center"]
    margin = 0.1  # "clearly", not just by a pixel
    return {
        "above": ay <= by - margin,
        "below": ay >= by + margin,
        "to the left of": ax <= bx - margin,
        "to the right of": ax >= bx + margin,
    }[relation]


def _examples(n, split="train", resolution=64, seed=0):
    return [shapes.make_example(i, resolution, split, seed) for i in range(n)]


def _train_scenes_and_captions(n, split="train"):
    split_id = shapes.SPLITS.index(split)
    out = []
    for i in range(n):
        rng = np.random.default_rng([0, split_id, i])
        scene = shapes.sample_scene(rng, split)
        out.append((scene, shapes.caption_scene(scene, rng)))
    return out


def test_constants():
    assert list(shapes.COLORS) == [
        "red", "green", "blue", "yellow", "purple", "orange", "black", "cyan"
    ]
    assert shapes.COLORS["orange"] == (240, 130, 30)
    assert shapes.SHAPES == (
        "circle", "square", "triangle", "diamond", "star", "hexagon"
    )
    assert shapes.SIZES == ("small", "large")
    assert shapes.POSITIONS[0] == "top left" and shapes.POSITIONS[-1] == "bottom right"
    assert len(shapes.POSITIONS) == 9 and shapes.POSITIONS[4] == "center"
    assert shapes.SPLITS == ("train", "heldout")
    assert len(shapes.HELD_OUT_PAIRS) == 6
    assert ("blue", "star") in shapes.HELD_OUT_PAIRS


def test_deterministic_and_order_independent():
    image, caption, attrs = shapes.make_example(7, seed=3)
    again = shapes.make_example(7, seed=3)
    np.testing.assert_array_equal(image, again[0])
    assert caption == again[1] and attrs == again[2]

    # Reaching index 7 through a batch that starts elsewhere changes nothing.
    images, captions, _ = shapes.make_arrays(5, seed=3, start=4)
    np.testing.assert_array_equal(images[3], image)
    assert captions[3] == caption
    streamed = list(shapes.generate(3, seed=3, start=6))
    np.testing.assert_array_equal(streamed[1][0], image)


def test_different_indices_seeds_and_splits_differ():
    images, captions, _ = shapes.make_arrays(50)
    assert len({im.tobytes() for im in images}) == 50
    assert len(set(captions)) > 25
    other_seed = shapes.make_example(0, seed=1)[0]
    other_split = shapes.make_example(0, split="heldout")[0]
    assert not np.array_equal(images[0], other_seed)
    assert not np.array_equal(images[0], other_split)


@pytest.mark.parametrize("resolution", [16, 64, 128])
def test_shapes_and_dtypes(resolution):
    images, captions, attrs = shapes.make_arrays(4, resolution=resolution)
    assert images.shape == (4, resolution, resolution, 3)
    assert images.dtype == np.uint8
    assert all(isinstance(c, str) and c for c in captions)
    image, caption, attributes = shapes.make_example(0, resolution)
    assert image.flags.writeable
    # The scene does not depend on the resolution: 64 and 128 renders match.
    assert caption == shapes.make_example(0, 64)[1]
    assert attributes["objects"] == shapes.make_example(0, 64)[2]["objects"]


def test_render_scene_and_background():
    scene = shapes.sample_scene(np.random.default_rng(0))
    image = shapes.render_scene(scene, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert 235 <= scene["background"] <= 255
    assert isinstance(scene["background"], int)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: shapes.make_example(0, resolution=60), "resolution"),
        (lambda: shapes.make_example(0, resolution=0), "resolution"),
        (lambda: shapes.make_example(0, resolution=-16), "resolution"),
        (lambda: shapes.make_example(0, resolution=64.0), "resolution"),
        (lambda: shapes.render_scene({"objects": []}, 8), "resolution"),
        (lambda: shapes.make_example(0, split="test"), "split"),
        (lambda: shapes.sample_scene(np.random.default_rng(0), split="val"), "split"),
        (lambda: shapes.make_example(-1), "index"),
        (lambda: shapes.make_example(0, seed=-1), "seed"),
        (lambda: shapes.make_arrays(-1), "num_examples"),
        (lambda: shapes.generate(-5), "num_examples"),
        (lambda: shapes.generate(5, start=-1), "start"),
        (lambda: shapes.ShapesSource(10, resolution=100), "resolution"),
        (lambda: shapes.as_tf_dataset(10, batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments(call, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        call()


def test_held_out_pairs_never_in_train():
    for scene, caption in _train_scenes_and_captions(2000, "train"):
        for obj in scene["objects"]:
            assert (obj["color"], obj["shape"]) not in shapes.HELD_OUT_PAIRS
        for color, shape in shapes.HELD_OUT_PAIRS:
            assert f"{color} {shape}" not in caption


def test_every_heldout_scene_contains_a_held_out_pair():
    seen = set()
    for scene, _ in _train_scenes_and_captions(500, "heldout"):
        pairs = {(o["color"], o["shape"]) for o in scene["objects"]}
        assert pairs & shapes.HELD_OUT_PAIRS
        seen |= pairs & shapes.HELD_OUT_PAIRS
    assert seen == shapes.HELD_OUT_PAIRS


@pytest.mark.parametrize("split", shapes.SPLITS)
def test_scene_geometry(split):
    for scene, _ in _train_scenes_and_captions(1000, split):
        objects = scene["objects"]
        assert 1 <= len(objects) <= 3
        for obj in objects:
            (x, y), r = obj["center"], obj["radius"]
            assert r <= x <= 1 - r and r <= y <= 1 - r  # fully inside the canvas
            assert shapes.POSITIONS[3 * int(y * 3) + int(x * 3)] == obj["position"]
            nominal = {"small": 1 / 6, "large": 1 / 3}[obj["size"]]
            assert 0.85 * nominal <= 2 * r <= 1.15 * nominal
        for a in range(len(objects)):
            for b in range(a + 1, len(objects)):
                oa, ob = objects[a], objects[b]
                distance = math.dist(oa["center"], ob["center"])
                assert distance >= oa["radius"] + ob["radius"]


def test_captions_are_truthful():
    styles = collections.Counter()
    for image, caption, attrs in _examples(600):
        objects, stated = attrs["objects"], attrs["caption_attributes"]
        assert len(stated) == len(objects)

        # 1. What caption_attributes claims is true of the objects.
        for obj, claims in zip(objects, stated):
            assert claims["color"] == obj["color"] and claims["shape"] == obj["shape"]
            for key in ("size", "position"):
                assert claims.get(key, obj[key]) == obj[key]
            if "count" in claims:
                same = [
                    o for o in objects
                    if (o["color"], o["shape"]) == (obj["color"], obj["shape"])
                ]
                assert claims["count"] == len(same) > 1
            if "relation" in claims:
                relation, other = claims["relation"]
                assert _relation_holds(obj, relation, objects[other])

        # 2. The text says exactly what caption_attributes claims.
        mentions = _parse_mentions(caption)
        relation = _RELATION_RE.fullmatch(caption)
        if relation and not _LIST_RE.fullmatch(caption):
            styles["relation"] += 1
            assert len(objects) == 2 and len(mentions) == 2
        else:
            assert _LIST_RE.fullmatch(caption), caption
        styles["count" if any(m["count"] > 1 for m in mentions) else "list"] += 1
        # Every object is described, so the number of objects is implied.
        assert sum(m["count"] for m in mentions) == len(objects), caption
        expected = collections.Counter()
        for claims in stated:
            count = claims.get("count", 1)
            key = (count, claims.get("size"), claims["color"], claims["shape"],
                   claims.get("position"))
            expected[key] += fractions.Fraction(1, count)
        parsed = collections.Counter(
            (m["count"], m["size"], m["color"], m["shape"], m["position"])
            for m in mentions
        )
        assert parsed == expected, caption

        # 3. The text is true of the objects on its own.
        for m in mentions:
            matching = [o for o in objects if _matches(o, m)]
            assert len(matching) >= m["count"], caption
            if m["count"] > 1:  # counting only objects that share colour+shape
                same = [
                    o for o in objects
                    if (o["color"], o["shape"]) == (m["color"], m["shape"])
                ]
                assert len(same) == m["count"], caption
        if relation and len(mentions) == 2 and " and " not in caption:
            m1, m2 = mentions
            assert any(
                _relation_holds(a, relation.group(2), b)
                for a in objects for b in objects
                if a is not b and _matches(a, m1) and _matches(b, m2)
            ), caption

    # All phrasings, and omitted attributes, actually occur.
    assert styles["relation"] > 10 and styles["count"] > 10 and styles["list"] > 100
    captions = [c for _, c, _ in _examples(100)]
    assert any(not re.search("small|large", c) for c in captions)
    assert any(not any(p in c for p in _POSITION_WORDS) for c in captions)


def test_pixels_match_the_scene():
    for image, _, attrs in _examples(120):
        res = image.shape[0]
        bg = attrs["background"]
        yy, xx = np.mgrid[0:res, 0:res]
        far_from_all = np.ones((res, res), bool)
        for obj in attrs["objects"]:
            cx, cy = obj["center"]
            # Every shape contains its centre (stars and triangles included).
            pixel = image[int(cy * res), int(cx * res)].astype(int)
            assert np.abs(pixel - shapes.COLORS[obj["color"]]).max() <= 8, obj
            distance = np.hypot(xx + 0.5 - cx * res, yy + 0.5 - cy * res)
            far_from_all &= distance > obj["radius"] * res + 1
        # Outside all bounding circles the canvas is untouched background.
        assert (image[far_from_all] == bg).all()
        # Anti-aliased: edge pixels blend object and background.
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > len(attrs["objects"]) + 2


def test_relations_are_true():
    found = 0
    for _, caption, attrs in _examples(300):
        for obj, claims in zip(attrs["objects"], attrs["caption_attributes"]):
            if "relation" in claims:
                relation, other = claims["relation"]
                assert f" {relation} " in caption
                assert _relation_holds(obj, relation, attrs["objects"][other])
                found += 1
    assert found > 10


def test_shapes_source():
    source = shapes.ShapesSource(20, resolution=32, split="heldout", seed=2)
    assert len(source) == 20
    item = source[5]
    image, caption, _ = shapes.make_example(5, 32, "heldout", 2)
    np.testing.assert_array_equal(item["images"], image)
    assert item["captions"] == caption
    assert item["images"].dtype == np.uint8 and item["images"].shape == (32, 32, 3)
    assert source[-1]["captions"] == source[19]["captions"]
    assert source[np.int64(3)]["captions"] == source[3]["captions"]
    for bad in (20, 100, -21):
        with pytest.raises(IndexError):
            source[bad]
    assert "ShapesSource" in repr(source)


def test_as_tf_dataset_batched():
    ds = shapes.as_tf_dataset(10, resolution=32, batch_size=4)
    batches = list(ds)
    assert [b["images"].shape[0] for b in batches] == [4, 4, 2]
    first = batches[0]
    assert first["images"].dtype.name == "uint8"
    assert tuple(first["images"].shape) == (4, 32, 32, 3)
    assert first["captions"].dtype.name == "string"
    expected = [shapes.make_example(i, 32)[1] for i in range(4)]
    assert [c.decode() for c in first["captions"].numpy()] == expected

    repeated = shapes.as_tf_dataset(10, batch_size=4, shuffle=True, repeat=True)
    assert tuple(repeated.element_spec["images"].shape) == (4, 64, 64, 3)
    captions = set()
    for batch in repeated.take(5):  # two epochs' worth
        captions.update(c.decode() for c in batch["captions"].numpy())
    assert captions <= {shapes.make_example(i)[1] for i in range(10)}

    single = next(iter(shapes.as_tf_dataset(3)))
    assert tuple(single["images"].shape) == (64, 64, 3)
    assert single["captions"].shape == ()


def test_make_arrays_speed(capsys):
    start = time.perf_counter()
    images, captions, _ = shapes.make_arrays(10_000, resolution=64)
    elapsed = time.perf_counter() - start
    assert images.shape == (10_000, 64, 64, 3) and len(captions) == 10_000
    with capsys.disabled():
        print(f"\nshapes.make_arrays: 10k images at 64x64 in {elapsed:.2f} s")
