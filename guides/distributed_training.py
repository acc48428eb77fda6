"""
# Training Muse on many devices with `keras.distribution`

Muse-3B does not fit one accelerator with its optimizer state, and the paper
trained it on TPU pods. Keras 3's `keras.distribution` API (on the JAX backend)
spreads a model over a mesh of devices: `DataParallel` copies the weights to
every device and splits the batch; `ModelParallel` also splits the weights,
following a `LayoutMap` from variable paths to mesh axes. `keras_muse`
ships the layout maps for its models (`MuseBackbone.get_layout_map`, ...) and
two helpers, `keras_muse.distribution.data_parallel` and `model_parallel`.

This guide runs anywhere: on a CPU it simulates 8 devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`); on a TPU VM or pod
slice it uses the real chips. Run it as a script:
`KERAS_BACKEND=jax python guides/distributed_training.py` (`GUIDE_STEPS=4`
for a quick look; on a multi-host pod, on every host at once with
`GUIDE_MULTI_HOST=1`, see below).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# 8 virtual devices when there is no accelerator. The flag only shapes the
# host (CPU) platform and must be set before JAX starts.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import keras
import numpy as np

STEPS = int(os.environ.get("GUIDE_STEPS", 20))
OUT = os.environ.get("GUIDE_OUT", "guide_outputs")

"""
## 1. Multi-host start-up (TPU pods)

A TPU pod slice larger than one host (v4-16 and up, v5e-16 and up) runs one
Python process per host, each seeing its 4 or 8 local chips. The processes
must find each other before anything touches a device:

```python
import jax
jax.distributed.initialize()   # on Cloud TPU, the coordinator is found automatically
```

or `keras.distribution.initialize()`, which calls it and also gives every
process the same global random seed, so the "replicated" initial weights
really are the same everywhere. Launch the same script on all hosts, e.g.

```
gcloud compute tpus tpu-vm ssh my-pod --worker=all \\
    --command="GUIDE_MULTI_HOST=1 python guides/distributed_training.py"
```

Afterwards `keras.distribution.list_devices()` lists the chips of *all* hosts
and every process builds the same global mesh. On GPUs, pass the coordinator
address, process count and id (or the `KERAS_DISTRIBUTION_*` variables).
"""

if os.environ.get("GUIDE_MULTI_HOST"):
    keras.distribution.initialize()

import jax  # noqa: E402  (after the distributed start-up)

from keras_muse import distribution as muse_distribution  # noqa: E402
from keras_muse.datasets import shapes  # noqa: E402
from keras_muse.models import MuseTextToImage  # noqa: E402
from keras_muse.utils.image_utils import save_png  # noqa: E402

devices = keras.distribution.list_devices()
print(f"{jax.process_count()} process(es), {len(devices)} devices: {devices[:4]}...")

"""
## 2. The mesh

`ModelParallel` needs a 2-D mesh `(data, model)`: the model axis splits each
weight (tensor parallelism), the data axis splits the batch, and keras-hub's
layouts also split each large kernel's other dimension over it (so weights
and Adam slots are spread over all chips, FSDP-style). Pick the model axis as
small as memory allows (its all-reduces run every layer) and keep it within
a host or a fast ring; the rest is data parallelism.

| model                       | widths that the model axis must divide     | e.g. on v4-64 (32 chips) |
|-----------------------------|--------------------------------------------|--------------------------|
| Muse-3B (`muse_3b`)         | 2048, MLP 8192, 16 heads x 128, text 4096  | (8, 4)                   |
| super-res (`muse_super_res_512`) | 1024, MLP 4096, low-res codebook 8192 | (8, 4) or (16, 2)        |
| T5-XXL encoder              | 4096, MLP 10240, 64 heads x 64             | shares the mesh          |
| `muse_shapes_64` (here)     | 128, MLP 512, text 64                      | (2, 4) on 8 devices      |

The data axis must divide those widths too (the FSDP split) and the global
batch. A size that does not divide raises a `ValueError` naming the variable
(`keras_muse.distribution.check_layout_map` checks a model up front).
"""

n = len(devices)
model_axis = 4 if n % 4 == 0 else (2 if n % 2 == 0 else 1)
mesh_shape = (n // model_axis, model_axis)
print("mesh (batch, model):", mesh_shape)

"""
## 3. The layout and creating the model under it

Keras lays a variable out when it is *created*, so set the distribution first
and then build or load the model. `model_parallel(MuseTextToImage, ...)` uses
one layout map for the whole task: both transformers, the T5 encoder and the
VQGAN (replicated: its weights are small and its activations large).
"""

distribution = muse_distribution.model_parallel(MuseTextToImage, mesh_shape=mesh_shape)
for pattern in distribution._layout_map:
    print(f"  {pattern.removeprefix('(?:.*/)?'):84s} {distribution._layout_map[pattern].axes}")
keras.distribution.set_distribution(distribution)

# The shipped tiny model, trained on the captioned-shapes domain. Its
# weights load straight into the sharded variables.
task = MuseTextToImage.from_preset("muse_shapes_64", seed=0)

for v in task.backbone.weights:
    if v.path.startswith(("token_embedding", "head_dense", "transformer_layer_0/")):
        shard = v.value.addressable_shards[0].data.shape
        print(f"{v.path:48s} {str(v.shape):12s} {str(v.value.sharding.spec):24s} per device {shard}")

"""
Each device holds a quarter of the attention and MLP kernels' columns (or
rows) and half of the other dimension: `transformer_layer_0/mlp_in/kernel`
`(128, 512)` is `P('batch', 'model')`, `(64, 128)` per device. Norms and
biases are replicated. The token table `(513, 128)` is split on its width:
the [MASK] token makes 513 rows, which no even axis divides.

## 4. Per-host batches

`fit` takes the *global* batch. With several processes, Keras shards a
`tf.data` pipeline for you (`auto_shard_dataset=True`): it re-batches to the
per-host batch and gives each process its own shard, and the per-host arrays
are assembled into one global array split over the data axis. Two rules
follow:

- the global batch must divide by the data axis size and by the process
  count: here 16 examples over a data axis of 2, i.e. 8 per replica;
- every host must see the same shuffle, so give the task a `seed` (the
  in-memory shuffle is seeded by it) — or build the per-host input yourself
  and pass `auto_shard_dataset=False` to the distribution.
"""

GLOBAL_BATCH = 16
per_host = GLOBAL_BATCH // jax.process_count()
print(f"global batch {GLOBAL_BATCH}, per host {per_host}, per data replica {GLOBAL_BATCH // mesh_shape[0]}")

images, captions, _ = shapes.make_arrays(GLOBAL_BATCH * max(STEPS // 4, 1), resolution=64, seed=1)

"""
## 5. Training

Nothing else changes: the masking, condition dropout and the VQGAN
tokenization all run inside the sharded train step. The masks come from the
task's seed; JAX's random bits do not depend on how an array is sharded, so
a run on one device and on the mesh draw the same masks and the losses agree
to float rounding (`tests/distribution/` checks this against one device:
DataParallel and ModelParallel, max |difference| below 1e-6).
"""

task.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.045, clipnorm=1.0))
history = task.fit(
    (images, list(captions)), batch_size=GLOBAL_BATCH, epochs=4, steps_per_epoch=max(STEPS // 4, 1), verbose=2
)
print("loss per epoch:", [round(x, 4) for x in history.history["loss"]])

"""
## 6. Sampling under the distribution

`generate` compiles one program for the sharded weights; with the same seed it
picks the same tokens as a single device.
"""

prompts = ["a large red circle in the top left", "two blue squares", "a small green star at the bottom",
           "a yellow hexagon on the right"]
out = task.generate(prompts, num_steps=8, seed=0, return_tokens=True)
print("tokens:", out["token_ids"].shape, "images:", out["images"].shape)
if jax.process_index() == 0:
    os.makedirs(OUT, exist_ok=True)
    save_png(np.concatenate(list(out["images"]), axis=1), os.path.join(OUT, "guide_distributed_samples.png"))

"""
## 7. Saving, and data parallelism

`task.save_to_preset(path)` gathers the shards and writes ordinary preset
files that load on any number of devices. (On a multi-host pod, where no
process holds every shard, gather first or use `keras.callbacks.OrbaxCheckpoint`
for sharded checkpoints; this guide's checks ran on one host.)

For a model that fits one chip, plain data parallelism is simpler:

```python
keras.distribution.set_distribution(muse_distribution.data_parallel())
task = MuseTextToImage.from_preset("muse_shapes_64", seed=0)
```
"""

if jax.process_count() == 1:
    task.save_to_preset(os.path.join(OUT, "distributed_preset"))
    keras.distribution.set_distribution(None)
    reloaded = MuseTextToImage.from_preset(os.path.join(OUT, "distributed_preset"))
    same = all(np.array_equal(a, b) for a, b in zip(task.get_weights(), reloaded.get_weights()))
    print("preset written and reloaded on one device, weights equal:", same)
