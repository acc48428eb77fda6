"""Named text-encoder configurations.

Pre-trained T5 checkpoints come from keras-hub by their own names
(`"t5_1.1_xxl"`, also spelt `"t5_1_1_xxl"`, `"t5_small_multi"`, ...) and need a
download. The entries below are built locally: the tiny one (with the shapes
vocabulary, trained in process) serves tests and the shapes domain; the T5-XXL
entry is the paper's architecture without weights (benchmarks, sharding).

Each entry: "description", "config" (`MuseTextEncoder` arguments) and, where a
tokenizer can be built offline, "preprocessor" (`vocabulary`: "shapes", and
`sequence_length`).
"""

from keras_muse.models.text import sentencepiece_utils

MUSE_TEXT_ENCODER_PRESETS = {
    "muse_text_tiny": {
        "description": (
            "Tiny T5 encoder (2 layers, width 64) with the 128-piece shapes "
            "vocabulary, 32 tokens: tests and the captioned-shapes domain."
        ),
        "config": dict(
            vocabulary_size=sentencepiece_utils.SHAPES_VOCAB_SIZE,
            num_layers=2,
            num_heads=4,
            hidden_dim=64,
            intermediate_dim=128,
            dropout=0.0,
            activation="gelu",
            use_gated_activation=True,
            tie_embedding_weights=True,
        ),
        "preprocessor": dict(vocabulary="shapes", sequence_length=32),
    },
    "t5_1_1_xxl_encoder": {
        "description": (
            "The paper's text encoder architecture: T5 v1.1 XXL encoder (4.7B "
            "parameters, 4096-d outputs), random weights. For the pre-trained "
            "model use `from_preset('t5_1.1_xxl')`. Building it allocates the "
            "decoder too (keras-hub's T5Backbone) before releasing it on JAX."
        ),
        "config": dict(
            vocabulary_size=32128,
            num_layers=24,
            num_heads=64,
            hidden_dim=4096,
            intermediate_dim=10240,
            key_value_dim=64,
            dropout=0.1,
            activation="gelu",
            use_gated_activation=True,
            layer_norm_epsilon=1e-6,
            tie_embedding_weights=False,
        ),
    },
}


class PresetDownloadError(ConnectionError, ValueError):
    """A remote preset (keras-hub name, `kaggle://`, `hf://`) could not be fetched.

    A `ConnectionError` because that is what happened, and a `ValueError`
    because that is how the package reports a preset that cannot be loaded, so
    code catching either sees it.
    """


_DOWNLOAD_ERROR_MODULES = ("kagglehub", "huggingface_hub", "requests", "urllib3", "modelscope")


def _is_download_error(error):
    if isinstance(error, OSError):
        return True
    return type(error).__module__.split(".")[0] in _DOWNLOAD_ERROR_MODULES


def keras_hub_t5_preset(preset):
    """The keras-hub T5 preset name `preset` refers to, or None.

    Accepts keras-hub's names ("t5_1.1_xxl", "flan_small_multi") and the same
    names with "_" for "." ("t5_1_1_xxl"), which survive file names and CLI
    flags unquoted.
    """
    if not isinstance(preset, str):
        return None
    from keras_hub.models import T5Backbone

    names = T5Backbone.presets
    if preset in names:
        return preset
    dotted = preset.replace("t5_1_1_", "t5_1.1_")
    return dotted if dotted in names else None


def download_error(preset, error):
    """A `PresetDownloadError` saying what failed and how to work offline."""
    hub_name = keras_hub_t5_preset(preset)
    alias = f" (keras-hub's {hub_name!r})" if hub_name not in (None, preset) else ""
    return PresetDownloadError(
        f"Preset {preset!r}{alias} could not be downloaded ({type(error).__name__}: "
        f"{str(error)[:300]}). keras-hub fetches T5 checkpoints from Kaggle, which "
        "needs network access (and, for some models, Kaggle credentials). To work "
        "offline, download the preset on a connected machine, e.g. "
        f"`keras_hub.models.T5Backbone.from_preset({hub_name or preset!r}).save_to_preset(dir)` "
        f"and `keras_hub.models.T5Tokenizer.from_preset({hub_name or preset!r}).save_to_preset(dir)` "
        "(or `kagglehub.model_download(...)`), copy the directory, and pass its "
        "path: `MuseTextEncoder.from_preset('/path/to/dir')`. Presets built "
        "locally (random weights, `load_weights=False`): "
        + ", ".join(sorted(MUSE_TEXT_ENCODER_PRESETS)) + "."
    )


def fetch(preset, fn, *args, **kwargs):
    """Runs a keras-hub loader, turning network failures into a clear error."""
    try:
        return fn(*args, **kwargs)
    except PresetDownloadError:
        raise
    except Exception as e:
        if _is_download_error(e):
            raise download_error(preset, e) from e
        raise
