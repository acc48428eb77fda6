"""Starting a training run from a saved backbone's weights."""

import json


def warm_start(backbone, preset):
    """Copies into `backbone` the weights of the backbone saved in `preset`.

    For runs longer than one sitting, or a finer stage on top of a coarser
    run: the recipes' `init_from`. The saved backbone must have the same
    config (name and dtype aside); a mismatch names every differing field.

    Example:
    ```python
    backbone = MuseBackbone(**config)
    warm_start(backbone, "outputs/muse_shapes_64")
    ```
    """
    source = type(backbone).from_preset(str(preset))
    ignore = ("name", "trainable", "dtype")
    # Through JSON so that tuples and the saved lists compare equal.
    want = json.loads(json.dumps({k: v for k, v in backbone.get_config().items() if k not in ignore}))
    have = json.loads(json.dumps({k: v for k, v in source.get_config().items() if k not in ignore}))
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if diff:
        raise ValueError(
            f"`init_from` ({preset}) holds a {type(backbone).__name__} with another config: "
            + ", ".join(f"{k}={have.get(k)!r} (wanted {want.get(k)!r})" for k in diff)
        )
    backbone.set_weights(source.get_weights())
