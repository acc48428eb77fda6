"""keras-hub presets, made safe: named config presets, clear errors, atomic saves.

keras-hub's `from_preset` resolves Kaggle/HF handles and local directories;
`PresetMixin` adds three things our models need on top of it:

- *config presets*: named architectures (the paper's sizes) that ship without
  weights, built with `from_preset(name, load_weights=False)`, and package
  presets whose files live inside `keras_muse/presets/`;
- a clear `ValueError` for a missing, truncated or foreign preset directory
  (keras-hub fails deep inside JSON or h5 parsing);
- atomic `save_to_preset`: the preset is written to a temporary sibling
  directory and renamed into place, so a crash never leaves a half-written
  preset where a good one was.
"""

import contextlib
import json
import os
import shutil
import uuid

import keras
import numpy as np

from keras_muse.backend.deferred_init import load_with_deferred_init

PACKAGE_PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "presets")
_REMOTE_PREFIXES = ("kaggle://", "hf://", "modelscope://", "gs://")


def _check_local_preset(path, cls):
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(
            f"`preset` directory {path!r} has no config.json: it is not a "
            "keras-hub/keras_muse preset (save one with `save_to_preset`)."
        )
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(
            f"`preset` {path!r}: config.json is unreadable or corrupt ({e})."
        ) from None
    if not isinstance(config, dict) or "registered_name" not in config:
        raise ValueError(
            f"`preset` {path!r}: config.json is not a Keras serialized object "
            "(no 'registered_name')."
        )
    registered = keras.saving.get_registered_object(config["registered_name"])
    if registered is None or not issubclass(registered, cls):
        raise ValueError(
            f"`preset` {path!r} holds a {config['registered_name']!r}, which is "
            f"not a {cls.__name__}."
        )
    return config


def _weights_file(preset):
    single = os.path.join(preset, "model.weights.h5")
    return single if os.path.isfile(single) else os.path.join(preset, "model.weights.json")


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a temporary sibling directory path; on success it replaces
    `path` (renamed into place), on failure it is removed and `path` is
    left as it was. Readers never see half of a directory."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        yield tmp
        if os.path.exists(path):
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _model_config(obj):
    # Keras names objects uniquely ("vqgan", "vqgan_1"), and each task sets
    # its components' `trainable`: neither is part of the saved model.
    config = dict(obj.get_config())
    config.pop("name", None)
    config.pop("trainable", None)
    return config


def same_model(a, b):
    """True when `a` and `b` would save to the same preset: the same object,
    or the same class, config, weights and preprocessor (e.g. one text
    encoder loaded twice from a preset). Lets a multi-model preset save a
    shared component once."""
    if a is b:
        return True
    if type(a) is not type(b) or _model_config(a) != _model_config(b):
        return False
    wa, wb = a.weights, b.weights
    if len(wa) != len(wb):
        return False
    for x, y in zip(wa, wb):
        if tuple(x.shape) != tuple(y.shape) or not np.array_equal(
            keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)
        ):
            return False
    pa, pb = getattr(a, "preprocessor", None), getattr(b, "preprocessor", None)
    if pa is pb:
        return True
    if pa is None or pb is None or type(pa) is not type(pb) or _model_config(pa) != _model_config(pb):
        return False
    # The vocabulary is an asset, outside the config.
    ta, tb = getattr(pa, "tokenizer", None), getattr(pb, "tokenizer", None)
    return getattr(ta, "proto", None) == getattr(tb, "proto", None)


class PresetMixin:
    """Adds config presets, input checks and atomic saving to a keras-hub class.

    Subclasses set `config_presets = {name: {"config": {...}, "description":
    str, "package_dir": optional dir name under keras_muse/presets}}`.
    """

    config_presets = {}

    @classmethod
    def preset_has_weights(cls, preset):
        """True when `from_preset(preset)` would load trained weights: a
        registered name that ships inside the package, or a local preset
        directory with a weights file. Remote handles count as weighted."""
        preset = os.fspath(preset)
        entry = cls.config_presets.get(preset)
        if entry is not None:
            return bool(entry.get("package_dir"))
        if preset.startswith(_REMOTE_PREFIXES):
            return True
        return os.path.isdir(preset) and any(
            os.path.isfile(os.path.join(preset, f)) for f in ("model.weights.h5", "model.weights.json")
        )

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        if not isinstance(preset, (str, os.PathLike)):
            raise ValueError(
                f"`preset` must be a preset name or a path. Received: {preset!r}"
            )
        preset = os.fspath(preset)
        entry = cls.config_presets.get(preset)
        if entry is not None:
            if entry.get("package_dir"):
                preset = os.path.join(PACKAGE_PRESET_DIR, entry["package_dir"])
            elif load_weights:
                raise ValueError(
                    f"Preset {preset!r} is an architecture without published "
                    "weights. Call `from_preset(..., load_weights=False)` for "
                    "randomly initialized weights, or train it and save it "
                    "with `save_to_preset`."
                )
            else:
                config = dict(entry["config"])
                config.update(kwargs)
                return cls(**config)
        if preset.startswith(_REMOTE_PREFIXES):
            return super().from_preset(preset, load_weights=load_weights, **kwargs)
        if not os.path.isdir(preset):
            names = ", ".join(sorted(cls.config_presets)) or "none"
            raise ValueError(
                f"`preset` {preset!r} is neither a known preset name "
                f"(known: {names}) nor an existing preset directory."
            )
        _check_local_preset(preset, cls)
        if load_weights and not any(
            os.path.isfile(os.path.join(preset, f))
            for f in ("model.weights.h5", "model.weights.json")
        ):
            raise ValueError(
                f"`preset` {preset!r} has no model.weights.h5. Pass "
                "`load_weights=False` to build the architecture only."
            )
        try:
            if not load_weights:
                return super().from_preset(preset, load_weights=False, **kwargs)
            return load_with_deferred_init(
                build=lambda: super(PresetMixin, cls).from_preset(preset, load_weights=False, **kwargs),
                load=lambda model: model.load_weights(_weights_file(preset)),
            )
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(
                f"`preset` {preset!r} could not be loaded (truncated or corrupt "
                f"files?): {type(e).__name__}: {e}"
            ) from e

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        """Model weights only while saving a preset (no optimizer state, which
        Keras otherwise adds for a compiled model: 2-3x the size)."""
        if not getattr(self, "_saving_preset", False) or getattr(self, "optimizer", None) is None:
            return super().save_weights(filepath, overwrite=overwrite, max_shard_size=max_shard_size)
        from keras.src.saving import saving_lib

        return saving_lib.save_weights_only(
            self, filepath, max_shard_size=max_shard_size, objects_to_skip=[self.optimizer]
        )

    def save_to_preset(self, preset_dir, **kwargs):
        """Saves config + weights to `preset_dir` atomically."""
        self._saving_preset = True
        try:
            with atomic_directory(preset_dir) as tmp:
                super().save_to_preset(tmp, **kwargs)
        finally:
            self._saving_preset = False
