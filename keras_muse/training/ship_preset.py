"""Package a trained preset inside keras_muse (the presets that ship).

`package_preset(src, "muse_shapes_64", recipe)` copies a `save_to_preset`
directory to `keras_muse/presets/muse_shapes_64/`, atomically, with:

- float weights stored as float16 (half the size; Keras casts them back to
  the variables' float32 on load), except the VQGAN codebook and tiny
  tensors, kept exact so tokenization does not move;
- the training recipe (commands, steps, minutes, seeds, measured results)
  in the top-level `metadata.json` under "keras_muse_recipe", so anyone can
  rebuild the preset.

Example:
```python
package_preset("outputs/muse_shapes_64", "muse_shapes_64",
               recipe={"commands": ["python examples/train_vqgan.py ..."], "minutes": 29})
task = MuseTextToImage.from_preset("muse_shapes_64")
```
"""

import json
import os
import shutil

import numpy as np

from keras_muse.utils.preset_utils import PACKAGE_PRESET_DIR
from keras_muse.utils.preset_utils import atomic_directory

KEEP_FLOAT32 = ("vector_quantizer",)
RECIPE_KEY = "keras_muse_recipe"


def weights_to_float16(path, keep=KEEP_FLOAT32, min_size=1024):
    """Rewrites the float32 datasets of a Keras `.weights.h5` as float16.

    Datasets whose path contains one of `keep`, or with fewer than
    `min_size` elements, stay float32. Returns (bytes before, bytes after).
    """
    import h5py

    before = os.path.getsize(path)
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:
            ds = f[name]
            if ds.dtype != np.float32 or ds.size < min_size or any(k in name for k in keep):
                continue
            data, attrs, parent, key = ds[()], dict(ds.attrs), ds.parent, name.split("/")[-1]
            del parent[key]
            new = parent.create_dataset(key, data=data.astype(np.float16))
            for k, v in attrs.items():
                new.attrs[k] = v
    # h5py does not reclaim freed space in place: copy into a fresh file.
    tmp = path + ".repack"
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for key in src:
            src.copy(src[key], dst, name=key)
        for k, v in src.attrs.items():
            dst.attrs[k] = v
    os.replace(tmp, path)
    return before, os.path.getsize(path)


def package_preset(src, name, recipe, float16=True, dest_root=None):
    """Copies the preset directory `src` to `<dest_root>/<name>` (default:
    the package's `keras_muse/presets/`), float16 weights, recipe in the
    metadata. Returns the destination path."""
    if not os.path.isfile(os.path.join(src, "config.json")):
        raise ValueError(f"`src` {src!r} is not a preset directory (no config.json).")
    if not isinstance(recipe, dict):
        raise ValueError(f"`recipe` must be a dict (commands, steps, minutes, seed). Received: {type(recipe)}")
    dest = os.path.join(dest_root or PACKAGE_PRESET_DIR, name)
    with atomic_directory(dest) as tmp:
        shutil.copytree(src, tmp)
        if float16:
            for root, _, files in os.walk(tmp):
                for file in files:
                    if file.endswith(".weights.h5"):
                        weights_to_float16(os.path.join(root, file))
        meta_path = os.path.join(tmp, "metadata.json")
        metadata = {}
        if os.path.isfile(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                metadata = json.load(f)
        metadata[RECIPE_KEY] = {"name": name, "float16_weights": bool(float16), **recipe}
        with open(meta_path, "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
    return dest


def read_recipe(preset_dir):
    """The recipe `package_preset` stored, or None."""
    path = os.path.join(preset_dir, "metadata.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get(RECIPE_KEY)
