"""Text-image alignment for the captioned-shapes domain (DESIGN.md §6).

`parse_prompt` reads a shapes prompt (the dataset's caption grammar,
`keras_muse.datasets.shapes`) into the objects and relation it states;
`score_alignment` asks the judge (`ShapesAttributeClassifier`, trained on
real renders only) what each image shows and reports, per attribute, the
fraction of statements that hold, each attribute counted only where the
prompt states it:

- "color", "shape": every object the prompt names;
- "size": objects whose size is stated ("a small red circle");
- "position": grid cells ("... in the top left") and relations ("a red
  circle above a blue square"), also reported apart as "grid_cell" and
  "relation";
- "count": one statement per prompt (captions name every object, so the
  number of objects is always implied; "two yellow triangles" also needs
  exactly two of them).

Prompt objects are matched to the objects found in the image by an optimal
assignment on their stated attributes, so the order of the prompt does not
matter. "all" is the fraction of prompts with every statement right.

Example:

```python
from keras_muse.datasets import shapes
from keras_muse.metrics import alignment

images, captions, _ = shapes.make_arrays(64, split="heldout", seed=5)
alignment.parse_prompt("two small yellow triangles and a cyan star on the left")
report = alignment.score_alignment(images, captions)
report["color"], report["position"], report["all"]
```
"""

import re

import numpy as np

from keras_muse.datasets import shapes

ATTRIBUTES = ("color", "shape", "size", "position", "count")
_RELATIONS = ("above", "below", "to the left of", "to the right of")
_NUMBERS = {"a": 1, "an": 1, "two": 2, "three": 3}
_PHRASE_TO_POSITION = {phrase: name for name, phrase in shapes._POSITION_PHRASES.items()}


def _alternatives(words):
    # Longest first, so "top left" is tried before "top".
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _noun_phrase_pattern(tag):
    return (
        rf"(?P<det{tag}>{_alternatives(_NUMBERS)}) "
        rf"(?:(?P<size{tag}>{_alternatives(shapes.SIZES)}) )?"
        rf"(?P<color{tag}>{_alternatives(shapes.COLORS)}) "
        rf"(?P<shape{tag}>{_alternatives(shapes.SHAPES)})(?P<plural{tag}>s?)"
    )


_PHRASE = re.compile(
    _noun_phrase_pattern("") + rf"(?: (?P<position>{_alternatives(_PHRASE_TO_POSITION)}))?"
)
_RELATION = re.compile(
    _noun_phrase_pattern("1") + rf" (?P<relation>{_alternatives(_RELATIONS)}) " + _noun_phrase_pattern("2")
)


def _normalize(prompt):
    if not isinstance(prompt, str):
        raise ValueError(f"`prompt` must be a str. Received: {prompt!r}")
    return " ".join(prompt.lower().replace(",", " , ").split()).replace(" ,", ",").rstrip(".").strip()


def _objects_from(match, tag, prompt):
    det, plural = match.group(f"det{tag}"), match.group(f"plural{tag}")
    count = _NUMBERS[det]
    if (count > 1) != bool(plural):
        raise ValueError(f"`prompt` {prompt!r}: {det!r} does not agree with {match.group(0)!r}.")
    obj = {"color": match.group(f"color{tag}"), "shape": match.group(f"shape{tag}")}
    if match.group(f"size{tag}"):
        obj["size"] = match.group(f"size{tag}")
    if count > 1:
        obj["count"] = count
    return [dict(obj) for _ in range(count)]


def parse_prompt(prompt):
    """Reads what a shapes prompt states.

    Returns:
        `{"objects": [...], "relation": None or (i, relation, j),
        "count": total objects}`; each object is a dict with "color" and
        "shape", and "size", "position" (grid cell name) and "count" (the
        size of its counted group) where stated; the relation says object
        `i` is `relation` ("above", "below", "to the left of", "to the
        right of") object `j`.

    Raises:
        ValueError: the prompt is not in the shapes grammar.
    """
    text = _normalize(prompt)
    match = _RELATION.fullmatch(text)
    if match:
        first, second = _objects_from(match, "1", prompt), _objects_from(match, "2", prompt)
        if len(first) != 1 or len(second) != 1:
            raise ValueError(f"`prompt` {prompt!r}: a relation must hold between two single objects.")
        return {"objects": first + second, "relation": (0, match.group("relation"), 1), "count": 2}
    objects = []
    for part in re.split(r",? and |, ", text):
        match = _PHRASE.fullmatch(part)
        if not match:
            raise ValueError(
                f"`prompt` {prompt!r} is not in the shapes caption grammar (could not read {part!r}); "
                "expected phrases like 'a small red circle in the top left', 'two blue stars' or "
                "'a red circle above a blue square'."
            )
        group = _objects_from(match, "", prompt)
        if match.group("position"):
            if len(group) > 1:
                raise ValueError(f"`prompt` {prompt!r}: a counted group has no single position.")
            group[0]["position"] = _PHRASE_TO_POSITION[match.group("position")]
        objects.extend(group)
    return {"objects": objects, "relation": None, "count": len(objects)}


# ---------------------------------------------------------------- matching
def _agreement(stated, found):
    score = 0.0
    for key, weight in (("color", 2.0), ("shape", 2.0), ("size", 1.0), ("position", 1.0)):
        if key in stated and found.get(key) == stated[key]:
            score += weight
    return score


def _match(objects, found, relation=None):
    """prompt object index -> found object index (or None), maximizing
    agreement; for a relation prompt (two objects), ties go to the
    assignment under which the relation holds (two identical objects
    would otherwise be matched in an arbitrary order)."""
    from scipy.optimize import linear_sum_assignment

    if not objects or not found:
        return [None] * len(objects)
    gain = np.array([[_agreement(o, f) for f in found] for o in objects])
    if relation is not None and len(found) >= 2:
        i, name, j = relation
        best, assignment = None, None
        for a in range(len(found)):
            for b in range(len(found)):
                if a != b:
                    # 0.5 < the smallest attribute weight: only breaks ties.
                    value = gain[i, a] + gain[j, b] + 0.5 * _relation_holds(name, found[a], found[b])
                    if best is None or value > best:
                        best, assignment = value, {i: a, j: b}
        return [assignment[k] for k in range(len(objects))]
    rows, cols = linear_sum_assignment(-gain)
    assignment = [None] * len(objects)
    for r, c in zip(rows, cols):
        assignment[r] = int(c)
    return assignment


def _matched(found, assignment):
    """The found object matched to each prompt object ({} where none)."""
    return [found[index] if index is not None else {} for index in assignment]


def held_out_pair_breakdown(parsed_prompts, scenes):
    """Colour / shape / size accuracy over the prompt objects whose (colour,
    shape) pair is held out of training (`shapes.HELD_OUT_PAIRS`) against
    the other objects of the same prompts: a model that composes well scores
    them alike, so a gap says composition, and no gap says the drawing.

    Returns `{"held_out_pair": {...}, "other": {...}}`, each attribute's
    accuracy (None where unstated) and "objects", the count."""
    return _held_out_pair_tally(
        (obj, match) for parsed, scene in zip(parsed_prompts, scenes)
        for obj, match in zip(parsed["objects"], _score_prompt(parsed, scene)[1]))


def _held_out_pair_tally(objects_and_matches):
    tallies = {group: {key: [0, 0] for key in ("color", "shape", "size")} for group in ("held_out_pair", "other")}
    counts = {"held_out_pair": 0, "other": 0}
    for obj, match in objects_and_matches:
        group = "held_out_pair" if (obj["color"], obj["shape"]) in shapes.HELD_OUT_PAIRS else "other"
        counts[group] += 1
        for key in ("color", "shape", "size"):
            if key in obj:
                tallies[group][key][0] += int(match.get(key) == obj[key])
                tallies[group][key][1] += 1
    return {
        group: {**{key: (round(c / n, 4) if n else None) for key, (c, n) in tally.items()}, "objects": counts[group]}
        for group, tally in tallies.items()
    }


def _relation_holds(relation, subject, other):
    (xs, ys), (xo, yo) = subject["center"], other["center"]
    return {
        "above": ys < yo,
        "below": ys > yo,
        "to the left of": xs < xo,
        "to the right of": xs > xo,
    }[relation]


def score_prompt(parsed, scene):
    """One prompt (`parse_prompt`'s dict, or a str) against one judged
    scene (`ShapesAttributeClassifier.predict_scenes` item).

    Returns `{attribute: (correct, stated)}` for "color", "shape", "size",
    "grid_cell", "relation", "position" (grid cells + relations) and
    "count"."""
    if isinstance(parsed, str):
        parsed = parse_prompt(parsed)
    return _score_prompt(parsed, scene)[0]


def _score_prompt(parsed, scene):
    """`score_prompt`'s tally, and the found object matched to each prompt object."""
    objects, found = parsed["objects"], scene["objects"]
    assignment = _match(objects, found, parsed["relation"])
    matched = _matched(found, assignment)
    tally = {key: [0, 0] for key in ("color", "shape", "size", "grid_cell", "relation", "count")}
    for obj, match in zip(objects, matched):
        for key, tally_key in (("color", "color"), ("shape", "shape"), ("size", "size"), ("position", "grid_cell")):
            if key in obj:
                tally[tally_key][0] += int(match.get(key) == obj[key])
                tally[tally_key][1] += 1
    if parsed["relation"] is not None:
        i, relation, j = parsed["relation"]
        holds = assignment[i] is not None and assignment[j] is not None and _relation_holds(
            relation, found[assignment[i]], found[assignment[j]]
        )
        tally["relation"] = [int(holds), 1]
    count_right = len(found) == parsed["count"]
    for obj in objects:
        if "count" in obj:
            same = sum(f.get("color") == obj["color"] and f.get("shape") == obj["shape"] for f in found)
            count_right &= same == obj["count"]
    tally["count"] = [int(count_right), 1]
    tally["position"] = [tally["grid_cell"][0] + tally["relation"][0], tally["grid_cell"][1] + tally["relation"][1]]
    return {key: tuple(value) for key, value in tally.items()}, matched


def _default_classifier(classifier):
    if classifier is not None:
        return classifier
    from keras_muse.metrics.attribute_classifier import ShapesAttributeClassifier

    return ShapesAttributeClassifier.from_preset("shapes_attribute_classifier")


def bootstrap_ci(tallies, num_samples=2000, seed=0):
    """95 % bootstrap interval of sum(correct) / sum(stated) over rows of
    `tallies` `[n, 2]` (correct, stated), resampling the rows (prompts).
    None when nothing is stated."""
    if tallies.size == 0 or tallies[:, 1].sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(tallies), (num_samples, len(tallies)))
    stated = tallies[idx, 1].sum(1)
    keep = stated > 0
    ratio = tallies[idx, 0].sum(1)[keep] / stated[keep]
    return [round(float(np.percentile(ratio, 2.5)), 4), round(float(np.percentile(ratio, 97.5)), 4)]


def score_alignment(images, prompts, classifier=None, batch_size=64, return_per_prompt=False):
    """Scores uint8 images `[n, H, W, 3]` against their n prompts.

    Args:
        images: the images, one per prompt.
        prompts: n shapes prompts.
        classifier: a `ShapesAttributeClassifier` (default: the packaged
            "shapes_attribute_classifier" preset).
        return_per_prompt: also return "per_prompt": each prompt's tallies
            and the judged scene.

    Returns:
        dict: accuracy per attribute ("color", "shape", "size", "position",
        "grid_cell", "relation", "count"; None where no prompt states it),
        "all" (prompts with every statement right), "stated" (how many
        statements each accuracy is over), "num_prompts", "ci95": each
        accuracy's 95 % bootstrap interval over prompts (64 prompts leave
        about ±0.1: say how many a figure is over), and "held_out_pairs"
        (`held_out_pair_breakdown`: the objects of held-out colour/shape
        pairs against the rest).
    """
    images = np.asarray(images)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if images.ndim != 4 or len(images) != len(prompts):
        raise ValueError(
            "`images` must be [n, H, W, 3] with one prompt each. "
            f"Received images {images.shape} and {len(prompts)} prompts."
        )
    parsed = [parse_prompt(p) for p in prompts]
    scenes = _default_classifier(classifier).predict_scenes(images, batch_size=batch_size)
    totals = {}
    all_right = []
    tallies = []
    per_prompt = []
    objects_and_matches = []
    for prompt, p, scene in zip(prompts, parsed, scenes):
        tally, matched = _score_prompt(p, scene)
        objects_and_matches.extend(zip(p["objects"], matched))
        right = True
        for key, (correct, stated) in tally.items():
            total = totals.setdefault(key, [0, 0])
            total[0] += correct
            total[1] += stated
            right &= correct == stated
        all_right.append(int(right))
        tallies.append(tally)
        if return_per_prompt:
            per_prompt.append({"prompt": prompt, "tally": tally, "scene": scene, "all": right})
    report = {key: (c / s if s else None) for key, (c, s) in totals.items()}
    report["all"] = sum(all_right) / len(prompts) if prompts else None
    report["stated"] = {key: s for key, (_, s) in totals.items()}
    report["num_prompts"] = len(prompts)
    columns = {key: [t.get(key, (0, 0)) for t in tallies] for key in totals}
    columns["all"] = [(r, 1) for r in all_right]
    report["ci95"] = {key: bootstrap_ci(np.asarray(c, float)) for key, c in columns.items() if prompts}
    report["held_out_pairs"] = _held_out_pair_tally(objects_and_matches)
    if return_per_prompt:
        report["per_prompt"] = per_prompt
    return report


def classifier_fid(images1, images2, classifier=None, batch_size=64, pooling="avgmax"):
    """FID in the judge's feature space (its per-cell features before the
    heads, pooled over the cells: see `feature_model`) between two uint8
    image sets."""
    from keras_muse.metrics import fid

    model = _default_classifier(classifier).feature_model(pooling)
    return fid.fid(np.asarray(images1), np.asarray(images2), model, batch_size=batch_size)
