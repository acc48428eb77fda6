"""The captioned-shapes judge: a small CNN that reads the attributes of a scene.

DESIGN.md §6 scores generated images against their prompts with a classifier
trained on real renders only. It predicts, for each cell of the 3x3 position
grid, how many objects have their centre there (0-3) and, for an occupied
cell, the object's colour (8), shape (6), size (2) and centre offset inside
the cell. The per-cell layout is order-free (a scene is a set of objects),
gives the object count as the number of objects over the cells, and makes
the grid cell (the "position" of captions) a direct output.

Two objects never overlap, but two small ones can have their centres in one
cell (about 0.8% of scenes): the occupancy head still counts them, and the
colour/shape/size of such a cell are not trained (they would be ambiguous)
and read as unknown for the second object.

The network resizes any input (uint8 values, any multiple of 16) to its own
`resolution` (72: a multiple of 9, so that after its stride of 8 each grid cell
is exactly 3x3 feature positions and one stride-3 convolution reads the cell;
the boundary decision is then the same in every cell). The per-cell
features before the heads are the "penultimate layer" that
`feature_model()` exposes (pooled over the cells) for FID in the
classifier's feature space.

Example:

```python
from keras_muse.datasets import shapes
from keras_muse.metrics import ShapesAttributeClassifier

classifier = ShapesAttributeClassifier.from_preset("shapes_attribute_classifier")
images, captions, attrs = shapes.make_arrays(8, seed=123)
scenes = classifier.predict_scenes(images)
scenes[0]["objects"]  # [{"position": "top left", "color": "red", ...}, ...]
classifier.evaluate_scenes(images, attrs)  # {"color": 1.0, "shape": 1.0, ...}
```
"""

import json
import os
import time

import keras
import numpy as np
from keras import layers
from keras import ops
from keras_hub.models import Backbone

from keras_muse.datasets import shapes
from keras_muse.utils.preset_utils import PresetMixin

COLOR_NAMES = tuple(shapes.COLORS)
SHAPE_NAMES = tuple(shapes.SHAPES)
SIZE_NAMES = tuple(shapes.SIZES)
CELL_NAMES = tuple(shapes.POSITIONS)
MAX_PER_CELL = 3
_HEADS = {
    "occupancy": MAX_PER_CELL + 1,
    "color": len(COLOR_NAMES),
    "shape": len(SHAPE_NAMES),
    "size": len(SIZE_NAMES),
}
# Label for "not trained here" (empty cells, cells holding two objects).
IGNORE = -1

SHAPES_ATTRIBUTE_CLASSIFIER_PRESETS = {
    "shapes_attribute_classifier": {
        "description": "The captioned-shapes judge trained on real renders (64x64 and 128x128).",
        "config": {},
        "package_dir": "shapes_attribute_classifier",
    },
}


def _conv_block(x, filters, stride, name):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _gaussian_kernel(sigma, radius=4):
    x = np.arange(-radius, radius + 1, dtype="float32")
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@keras.saving.register_keras_serializable(package="keras_muse")
class RandomDegradation(layers.Layer):
    """Training-only, label-preserving damage that real renders lack and
    generated images have: blur of random strength, sharpening (rounded but
    crisp corners), low-frequency and token-scale colour texture, pixel
    noise and a colour gain. Inputs and outputs are in [-1, 1]; identity at
    inference. The judge never sees a generated image: this only keeps it
    from keying on the renderer's perfect edges.
    """

    def __init__(self, strength=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.strength = float(strength)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._kernels = [_gaussian_kernel(s) for s in (0.6, 1.0, 1.5)]

    def _blur(self, x, kernel):
        radius = len(kernel) // 2
        channels = x.shape[-1]
        x = ops.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="reflect")
        k = ops.convert_to_tensor(kernel, x.dtype)
        kx = ops.tile(ops.reshape(k, (1, -1, 1, 1)), (1, 1, channels, 1))
        ky = ops.tile(ops.reshape(k, (-1, 1, 1, 1)), (1, 1, channels, 1))
        x = ops.depthwise_conv(x, kx, padding="valid")
        return ops.depthwise_conv(x, ky, padding="valid")

    def _uniform(self, shape, low, high):
        return keras.random.uniform(shape, low, high, seed=self.seed_generator, dtype=self.compute_dtype)

    def call(self, x, training=False):
        if not training or self.strength <= 0:
            return x
        n, h, w, c = ops.shape(x)
        s = self.strength
        # Blur: a continuous level t in [0, 3] interpolates x, b1, b2, b3.
        levels = [x] + [self._blur(x, k) for k in self._kernels]
        t = self._uniform((n, 1, 1, 1), 0.0, 3.0 * s) * ops.cast(self._uniform((n, 1, 1, 1), 0, 1) < 0.7, x.dtype)
        blurred = ops.zeros_like(x)
        for i, level in enumerate(levels):
            blurred = blurred + level * ops.maximum(0.0, 1.0 - ops.abs(t - i))
        x = blurred
        sharpen = self._uniform((n, 1, 1, 1), 0.0, 1.5 * s) * ops.cast(self._uniform((n, 1, 1, 1), 0, 1) < 0.4, x.dtype)
        x = x + sharpen * (x - self._blur(x, self._kernels[0]))
        # Texture mostly on the objects ("ink" is 0 on a white background).
        ink = ops.clip((1.0 - x) / 2.0, 0.0, 1.0)
        texture = 0.0
        for cells in (h // 8, h // 4):
            amp = self._uniform((n, 1, 1, 1), 0.0, 0.15 * s)
            noise = keras.random.normal((n, cells, cells, c), seed=self.seed_generator, dtype=x.dtype)
            texture = texture + amp * ops.image.resize(noise, (h, w), interpolation="bilinear")
        x = x + texture * (0.1 + ink)
        x = x + keras.random.normal(ops.shape(x), seed=self.seed_generator, dtype=x.dtype) * self._uniform(
            (n, 1, 1, 1), 0.0, 0.04 * s)
        gain = self._uniform((n, 1, 1, c), 1.0 - 0.05 * s, 1.0 + 0.05 * s)
        return ops.clip((x + 1.0) * gain - 1.0, -1.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"strength": self.strength, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="keras_muse")
class ShapesAttributeClassifier(PresetMixin, Backbone):
    """Per-grid-cell attribute classifier for the captioned-shapes domain.

    Args:
        resolution: int, a multiple of 72 (72, 144): the size inputs are
            resized to (the network's stride of 8 then leaves 3x3
            feature positions per grid cell, or 6x6).
        widths: 4 ints, the channels at strides 2, 4, 8 and of the cell
            features.
        augmentation: strength of the training-only `RandomDegradation`
            (0 turns it off).

    Call: uint8-valued images `[n, H, W, 3]` (any square size) -> dict of
    per-cell probabilities `[n, 9, k]` ("occupancy", "color", "shape",
    "size") and "offset" `[n, 9, 2]` (the centre inside its cell, (x, y)
    in [0, 1]).

    Example:

    ```python
    model = ShapesAttributeClassifier()          # random weights
    out = model.predict(np.zeros((2, 64, 64, 3), "uint8"), verbose=0)
    out["occupancy"].shape                       # (2, 9, 4)
    ```
    """

    config_presets = SHAPES_ATTRIBUTE_CLASSIFIER_PRESETS

    def __init__(self, resolution=72, widths=(32, 64, 96, 64), augmentation=1.0, dtype=None, **kwargs):
        if not isinstance(resolution, int) or resolution <= 0 or resolution % 72:
            raise ValueError(
                "`resolution` must be a positive multiple of 72 (stride 8 x 3x3 cells x 3). "
                f"Received: resolution={resolution!r}"
            )
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"`widths` must be 4 positive ints. Received: widths={widths!r}")

        # === Functional model ===
        images = keras.Input(shape=(None, None, 3), name="images")
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(images)
        x = layers.Resizing(resolution, resolution, antialias=True, name="resize")(x)
        x = RandomDegradation(augmentation, name="augmentation")(x)
        x = _conv_block(x, widths[0], 2, "stem")
        x = _conv_block(x, widths[0], 1, "block1")
        x = _conv_block(x, widths[1], 2, "down2")
        x = _conv_block(x, widths[1], 1, "block2")
        x = _conv_block(x, widths[2], 2, "down3")
        x = _conv_block(x, widths[2], 1, "block3a")
        x = _conv_block(x, widths[2], 1, "block3b")
        # One stride-3 window per grid cell (the map is 9x9 at stride 8).
        cell_stride = resolution // 24
        x = layers.Conv2D(widths[3] * 2, cell_stride, strides=cell_stride, activation="relu", name="cell_conv")(x)
        cells = layers.Conv2D(widths[3], 1, activation="relu", name="cell_features")(x)
        outputs = {}
        for head, classes in _HEADS.items():
            logits = layers.Conv2D(classes, 1, name=f"{head}_logits")(cells)
            logits = layers.Reshape((9, classes), name=f"{head}_reshape")(logits)
            outputs[head] = layers.Softmax(name=head, dtype="float32")(logits)
        offset = layers.Conv2D(2, 1, activation="sigmoid", name="offset_logits")(cells)
        outputs["offset"] = layers.Reshape((9, 2), name="offset", dtype="float32")(offset)
        super().__init__(inputs=images, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.resolution = resolution
        self.widths = widths
        self.augmentation = augmentation

    def get_config(self):
        config = super().get_config()
        config.update({"resolution": self.resolution, "widths": list(self.widths),
                       "augmentation": self.augmentation})
        return config

    # ------------------------------------------------------------- features
    def feature_model(self, pooling="avgmax"):
        """A Keras model: images -> the per-cell features before the heads
        (the penultimate layer), for FID in the judge's feature space.

        `pooling`: "avgmax" (default: mean and max over the 9 cells, 2x64
        dims, like Inception's pooled features), "avg", or "flatten" (all
        9x64, layout-aware). Measured on 300 vs 300 real held-out scenes,
        "avgmax" puts one-object scenes 9.6x and train-split scenes 3.7x
        above the real-vs-real floor; "flatten" only 1.9x and 1.2x: with
        576 dimensions the finite-sample noise of the covariances dominates.
        """
        cells = self.get_layer("cell_features").output
        if pooling == "avgmax":
            features = layers.Concatenate(name="avg_max_cells")([
                layers.GlobalAveragePooling2D(name="avg_cells")(cells),
                layers.GlobalMaxPooling2D(name="max_cells")(cells),
            ])
        elif pooling == "avg":
            features = layers.GlobalAveragePooling2D(name="avg_cells")(cells)
        elif pooling == "flatten":
            features = layers.Flatten(name="flatten_cells")(cells)
        else:
            raise ValueError(
                f"`pooling` must be one of 'avgmax', 'avg', 'flatten'. Received: pooling={pooling!r}"
            )
        return keras.Model(self.input, features, name="shapes_attribute_features")

    # ------------------------------------------------------------- decoding
    def predict_scenes(self, images, batch_size=64):
        """uint8 images `[n, H, W, 3]` -> one dict per image:
        `{"objects": [{"position", "cell", "color", "shape", "size",
        "center"}, ...], "count": int}`. Objects beyond the first in a cell
        that holds several have `None` colour, shape and size."""
        return decode_predictions(self._predict(images, batch_size))

    def _predict(self, images, batch_size):
        images = _check_images(images)
        return self.predict(images.astype("float32"), batch_size=batch_size, verbose=0)

    def evaluate_scenes(self, images, attributes, batch_size=64):
        """Judge accuracy against the true scenes (`shapes.make_arrays`'s
        attributes): per-object colour/shape/size (objects alone in their
        cell), position (the object's cell holds the right number of
        objects), per-image count, and "scene" (everything in the image
        right)."""
        predictions = self._predict(images, batch_size)
        return score_predictions(predictions, scene_targets(attributes))


def _check_images(images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be [n, H, W, 3]. Received shape {images.shape}.")
    return images


# ---------------------------------------------------------------- targets
def scene_targets(attributes):
    """Scenes (each with "objects") -> per-cell int labels `[n, 9]` for the
    four class heads (IGNORE where not trained) and "offset" `[n, 9, 2]`
    (-1 where not trained)."""
    n = len(attributes)
    targets = {head: np.full((n, 9), IGNORE, "int32") for head in _HEADS}
    targets["occupancy"][:] = 0
    targets["offset"] = np.full((n, 9, 2), -1.0, "float32")
    for i, scene in enumerate(attributes):
        by_cell = {}
        for obj in scene["objects"]:
            by_cell.setdefault(CELL_NAMES.index(obj["position"]), []).append(obj)
        for cell, objs in by_cell.items():
            targets["occupancy"][i, cell] = min(len(objs), MAX_PER_CELL)
            if len(objs) == 1:
                obj = objs[0]
                targets["color"][i, cell] = COLOR_NAMES.index(obj["color"])
                targets["shape"][i, cell] = SHAPE_NAMES.index(obj["shape"])
                targets["size"][i, cell] = SIZE_NAMES.index(obj["size"])
                row, col = divmod(cell, 3)
                x, y = obj["center"]
                targets["offset"][i, cell] = (3 * x - col, 3 * y - row)
    return targets


def decode_predictions(predictions):
    """The model's output dict (numpy) -> scene dicts (see `predict_scenes`)."""
    occupancy = np.argmax(predictions["occupancy"], -1)
    labels = {head: np.argmax(predictions[head], -1) for head in ("color", "shape", "size")}
    offsets = np.asarray(predictions["offset"])
    scenes = []
    for i in range(len(occupancy)):
        objects = []
        for cell in range(9):
            row, col = divmod(cell, 3)
            center = ((col + float(offsets[i, cell, 0])) / 3, (row + float(offsets[i, cell, 1])) / 3)
            for k in range(int(occupancy[i, cell])):
                known = k == 0
                objects.append({
                    "position": CELL_NAMES[cell],
                    "cell": cell,
                    "color": COLOR_NAMES[labels["color"][i, cell]] if known else None,
                    "shape": SHAPE_NAMES[labels["shape"][i, cell]] if known else None,
                    "size": SIZE_NAMES[labels["size"][i, cell]] if known else None,
                    "center": center,
                })
        scenes.append({"objects": objects, "count": len(objects)})
    return scenes


def score_predictions(predictions, targets):
    """Judge accuracy of raw predictions against `scene_targets` labels."""
    occupancy = np.argmax(predictions["occupancy"], -1)
    true_occ = targets["occupancy"]
    occupied = true_occ > 0
    single = targets["color"] != IGNORE
    result = {}
    all_right = np.all(occupancy == true_occ, axis=1)
    for head in ("color", "shape", "size"):
        pred = np.argmax(predictions[head], -1)
        right = (pred == targets[head]) & (occupancy >= 1)
        result[head] = float(right[single].mean())
        all_right &= np.all(right | ~single, axis=1)
    # An object's position is right when its cell holds the right number of
    # objects; false positives elsewhere show in "count" and "scene".
    objects_per_cell = np.where(occupied, true_occ, 0)
    result["position"] = float(((occupancy == true_occ) * objects_per_cell).sum() / objects_per_cell.sum())
    result["count"] = float((occupancy.sum(1) == true_occ.sum(1)).mean())
    result["scene"] = float(all_right.mean())
    error = np.abs(np.asarray(predictions["offset"]) - targets["offset"])[single]
    result["offset_mean_abs_error"] = float(error.mean())
    result["num_images"] = int(len(true_occ))
    result["num_objects"] = int(objects_per_cell.sum())
    return result


# ---------------------------------------------------------------- training
def _masked_sparse_crossentropy(y_true, y_pred):
    y_true = ops.cast(y_true, "int32")
    valid = ops.cast(ops.not_equal(y_true, IGNORE), "float32")
    safe = ops.maximum(y_true, 0)
    losses = keras.losses.sparse_categorical_crossentropy(safe, y_pred)
    return ops.sum(losses * valid) / ops.maximum(ops.sum(valid), 1.0)


def _masked_offset_loss(y_true, y_pred):
    valid = ops.cast(ops.greater_equal(y_true[..., :1], 0.0), "float32")
    squared = ops.square(y_pred - y_true) * valid
    return ops.sum(squared) / ops.maximum(ops.sum(valid), 1.0)


class _ShapesBatches(keras.utils.PyDataset):
    """Batches from pre-rendered real scenes at one or more resolutions."""

    def __init__(self, sets, batch_size, seed, workers=1):
        super().__init__(workers=workers)
        self.sets = sets  # [(images, targets)]
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        sizes = [len(images) for images, _ in sets]
        self.batches = [(s, b) for s, size in enumerate(sizes) for b in range(size // batch_size)]
        self.order = self.rng.permutation(len(self.batches))
        self.perms = [self.rng.permutation(size) for size in sizes]

    def __len__(self):
        return len(self.batches)

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.batches))
        self.perms = [self.rng.permutation(len(images)) for images, _ in self.sets]

    def __getitem__(self, index):
        s, b = self.batches[self.order[index]]
        images, targets = self.sets[s]
        idx = np.sort(self.perms[s][b * self.batch_size:(b + 1) * self.batch_size])
        y = {head: value[idx] for head, value in targets.items()}
        return images[idx].astype("float32"), y


def render_training_data(num_train=24000, num_heldout=12000, num_high_res=6000, seed=1, verbose=True):
    """Real renders for the judge: the train split (all train pairs) and the
    held-out split (scenes with the held-out pairs), at 64x64, plus some at
    128x128. Returns `[(images, targets)]` per resolution."""
    start = time.time()
    sets = []
    for resolution, parts in ((64, (("train", num_train), ("heldout", num_heldout))),
                              (128, (("train", num_high_res // 2), ("heldout", num_high_res - num_high_res // 2)))):
        images, attrs = [], []
        for split, n in parts:
            if n:
                im, _, at = shapes.make_arrays(n, resolution=resolution, split=split, seed=seed)
                images.append(im)
                attrs.extend(at)
        if images:
            sets.append((np.concatenate(images), scene_targets(attrs)))
    if verbose:
        print(f"rendered {sum(len(s[0]) for s in sets)} real scenes in {time.time() - start:.0f} s")
    return sets


def train_attribute_classifier(epochs=6, batch_size=64, learning_rate=3e-3, num_train=24000,
                               num_heldout=12000, num_high_res=6000, seed=1, widths=(32, 64, 96, 64),
                               augmentation=1.0,
                               workers=1, callbacks=None, verbose=1):
    """Trains a `ShapesAttributeClassifier` on real renders only.

    Returns `(classifier, history_dict)`. The data seed must differ from the
    seeds used to measure the judge (`evaluate_scenes` on fresh scenes).
    """
    keras.utils.set_random_seed(seed)
    sets = render_training_data(num_train, num_heldout, num_high_res, seed=seed, verbose=bool(verbose))
    data = _ShapesBatches(sets, batch_size, seed, workers=workers)
    model = ShapesAttributeClassifier(widths=widths, augmentation=augmentation)
    steps = epochs * len(data)
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-4, steps - min(200, steps // 10), warmup_target=learning_rate, warmup_steps=min(200, steps // 10)
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        loss={
            **{head: _masked_sparse_crossentropy for head in _HEADS},
            "offset": _masked_offset_loss,
        },
        loss_weights={"occupancy": 1.0, "color": 1.0, "shape": 1.0, "size": 1.0, "offset": 10.0},
    )
    history = model.fit(data, epochs=epochs, callbacks=callbacks, verbose=verbose)
    return model, history.history


def save_classifier_preset(model, preset_dir, training=None):
    """`save_to_preset` plus the training recipe in metadata.json ("keras_muse_recipe")."""
    model.save_to_preset(preset_dir)
    if training:
        path = os.path.join(preset_dir, "metadata.json")
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
        metadata["keras_muse_recipe"] = training
        with open(path, "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=4)


def evaluate_judge(classifier, num_test=2000, seed=2024, batch_size=64):
    """The judge's accuracy on fresh real renders (never trained on: use a
    `seed` other than the training one): 64x64 train and held-out splits,
    and 128x128 held-out scenes (a quarter as many)."""
    report = {}
    for resolution, split, n in ((64, "train", num_test), (64, "heldout", num_test),
                                 (128, "heldout", max(num_test // 4, 1))):
        images, _, attrs = shapes.make_arrays(n, resolution=resolution, split=split, seed=seed)
        report[f"{split}_{resolution}"] = classifier.evaluate_scenes(images, attrs, batch_size=batch_size)
    return report
