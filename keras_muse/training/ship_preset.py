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
    _check_recipe(recipe)
    dest = os.path.join(dest_root or PACKAGE_PRESET_DIR, name)
    with atomic_directory(dest) as tmp:
        shutil.copytree(src, tmp)
        if float16:
            for root, _, files in os.walk(tmp):
                for file in files:
                    if file.endswith(".weights.h5"):
                        weights_to_float16(os.path.join(root, file))
        _write_recipe(os.path.join(tmp, "metadata.json"), os.path.join(tmp, "metadata.json"),
                      {"name": name, "float16_weights": bool(float16), **recipe})
    return dest


def _check_recipe(recipe):
    if not isinstance(recipe, dict):
        raise ValueError(f"`recipe` must be a dict (commands, steps, minutes, seed). Received: {type(recipe)}")


def _write_recipe(src_metadata, dest_metadata, recipe):
    """Writes `src_metadata` (if it exists) to `dest_metadata` with `recipe`
    under RECIPE_KEY."""
    metadata = {}
    if os.path.isfile(src_metadata):
        with open(src_metadata, encoding="utf-8") as f:
            metadata = json.load(f)
    metadata[RECIPE_KEY] = recipe
    with open(dest_metadata, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)


def read_recipe(preset_dir):
    """The recipe `package_preset` stored, or None."""
    path = os.path.join(preset_dir, "metadata.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get(RECIPE_KEY)


def package_two_stage_preset(src, name, base_name, high_res_vqgan_name, recipe, float16=True, dest_root=None):
    """Ships the two-stage preset `src` (base + super-res, from
    `train_super_res`) as `<dest_root>/<name>`, holding only what is new:
    the super-res transformer. Its base task (backbone, text encoder,
    low-res VQGAN) and its high-res VQGAN are read from the shipped presets
    `base_name` and `high_res_vqgan_name` beside it, by reference, so the
    package does not carry a second copy of them. Raises ValueError unless
    `src`'s components are those presets' weights exactly.

    Example:
    ```python
    package_two_stage_preset("outputs/muse_shapes_128", "muse_shapes_128",
                             "muse_shapes_64", "vqgan_shapes_128", recipe={...})
    MuseTextToImage.from_preset("muse_shapes_128")
    ```
    """
    from keras_muse.models.muse.muse_text_to_image import TASK_CONFIG_FILE
    from keras_muse.models.muse.muse_text_to_image import MuseTextToImage
    from keras_muse.models.vqgan.vqgan import VQGAN
    from keras_muse.utils.preset_utils import same_model

    root = dest_root or PACKAGE_PRESET_DIR
    base_dir, vqgan_dir = os.path.join(root, base_name), os.path.join(root, high_res_vqgan_name)
    _check_recipe(recipe)
    task = MuseTextToImage.from_preset(src)
    sr = task.super_resolution
    if sr is None:
        raise ValueError(f"`src` {src!r} has no super-resolution stage.")
    shipped_base = MuseTextToImage.from_preset(base_dir)
    shipped_vqgan = VQGAN.from_preset(vqgan_dir)
    checks = (
        ("base backbone", task.backbone, shipped_base.backbone),
        ("text encoder", task.text_encoder, shipped_base.text_encoder),
        ("super-res text encoder", sr.text_encoder, shipped_base.text_encoder),
        ("low-res VQGAN", task.vqgan, shipped_base.vqgan),
        ("super-res low-res VQGAN", sr.low_res_vqgan, shipped_base.vqgan),
        ("high-res VQGAN", sr.vqgan, shipped_vqgan),
    )
    for what, ours, shipped in checks:
        if not same_model(ours, shipped):
            raise ValueError(
                f"The {what} of `src` {src!r} is not the shipped one in {base_dir!r} / {vqgan_dir!r}: "
                "train the super-res stage on the shipped presets, or ship them too."
            )
    dest = os.path.join(root, name)
    base_rel, vqgan_rel = "../" + base_name, "../" + high_res_vqgan_name
    with open(os.path.join(base_dir, TASK_CONFIG_FILE), encoding="utf-8") as f:
        base_components = json.load(f)["components"]
    with atomic_directory(dest) as tmp:
        sr_tmp = os.path.join(tmp, "super_resolution")
        sr.backbone.save_to_preset(sr_tmp)
        if float16:
            weights_to_float16(os.path.join(sr_tmp, "model.weights.h5"))
        with open(os.path.join(src, TASK_CONFIG_FILE), encoding="utf-8") as f:
            spec = json.load(f)
        with open(os.path.join(src, "super_resolution", TASK_CONFIG_FILE), encoding="utf-8") as f:
            sr_spec = json.load(f)
        sr_spec["components"] = {
            "text_encoder": "../" + base_rel + "/" + base_components["text_encoder"],
            "low_res_vqgan": "../" + base_rel + "/" + base_components["vqgan"],
            "vqgan": "../" + vqgan_rel,
        }
        spec["components"] = {
            "backbone": base_rel,
            "text_encoder": base_rel + "/" + base_components["text_encoder"],
            "vqgan": base_rel + "/" + base_components["vqgan"],
            "super_resolution": "super_resolution",
        }
        for path, content in ((os.path.join(sr_tmp, TASK_CONFIG_FILE), sr_spec),
                              (os.path.join(tmp, TASK_CONFIG_FILE), spec)):
            with open(path, "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)
        _write_recipe(os.path.join(src, "metadata.json"), os.path.join(tmp, "metadata.json"),
                      {"name": name, "float16_weights": bool(float16),
                       "built_on": [base_name, high_res_vqgan_name], **recipe})
    return dest
