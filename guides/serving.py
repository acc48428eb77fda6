"""
# Serving Muse with TensorFlow Serving

A trained `MuseTextToImage` task becomes a SavedModel that TF Serving can load
as it is: prompt strings in, uint8 images out. Tokenization (SentencePiece,
through tensorflow-text), the text encoder, every parallel-decoding step and
the VQGAN decoder all run inside the graph, so clients need nothing of
keras_muse, and the server needs nothing beyond TF Serving.

This guide exports a task, inspects the SavedModel with `saved_model_cli`,
loads it the way a serving host does (a fresh process with TensorFlow and
tensorflow-text only), and shows the `tensorflow_model_server` command with a
REST request and a gRPC `PredictRequest`.

Run it as a script:

```
KERAS_BACKEND=jax python guides/serving.py                  # the shipped shapes preset
KERAS_BACKEND=jax python guides/serving.py --preset ./my_muse
KERAS_BACKEND=jax python guides/serving.py --tiny            # untrained tiny task, < 1 minute
```

(`GUIDE_TINY=1` does the same as `--tiny`; `GUIDE_OUT` sets the output folder.)
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import keras_muse
from keras_muse.models import MuseTextToImage
from keras_muse.utils.image_utils import make_captioned_grid
from keras_muse.utils.image_utils import save_png
from keras_muse.utils.preset_utils import PACKAGE_PRESET_DIR

parser = argparse.ArgumentParser(description="Export a Muse task for TF Serving.")
parser.add_argument("--preset", default=os.path.join(PACKAGE_PRESET_DIR, "muse_shapes_64"),
                    help="a MuseTextToImage preset directory (default: the shipped shapes preset)")
parser.add_argument("--tiny", action="store_true", default=os.environ.get("GUIDE_TINY") == "1",
                    help="an untrained tiny task instead of a preset (a quick end-to-end run)")
parser.add_argument("--steps", type=int, default=None, help="decoding steps (default: 12, or 4 with --tiny)")
args = parser.parse_args()
OUT = os.environ.get("GUIDE_OUT", "guide_outputs")
os.makedirs(OUT, exist_ok=True)

"""
## The task

Any `MuseTextToImage` with a text encoder, its preprocessor and a VQGAN can be
exported, on any backend. `--tiny` builds an untrained one in a few seconds
(16x16 images, 4x4 tokens); otherwise a trained preset is loaded.
"""


def tiny_task():
    import keras
    import keras_hub

    from keras_muse.models import VQGAN
    from keras_muse.models import MuseBackbone
    from keras_muse.models import MuseTextEncoder
    from keras_muse.models import MuseTextPreprocessor
    from keras_muse.models.text import sentencepiece_utils

    keras.utils.set_random_seed(0)
    proto = sentencepiece_utils.train_sentencepiece(sentencepiece_utils.shapes_captions(500), vocab_size=48)
    preprocessor = MuseTextPreprocessor(keras_hub.models.T5Tokenizer(proto=proto), sequence_length=16)
    text_encoder = MuseTextEncoder(vocabulary_size=48, num_layers=1, num_heads=2, hidden_dim=16,
                                   intermediate_dim=32, dropout=0.0, preprocessor=preprocessor)
    backbone = MuseBackbone.from_preset("muse_tiny", load_weights=False)  # 4x4 tokens, 64 codes
    vqgan = VQGAN(base_channels=8, channel_multipliers=(1, 2, 2), num_res_blocks=1, latent_dim=16,
                  codebook_size=64, code_dim=8, discriminator_channels=0)  # f4: 16x16 images
    return MuseTextToImage(backbone, text_encoder=text_encoder, vqgan=vqgan)


if args.tiny:
    task = tiny_task()
elif os.path.isdir(args.preset):
    task = MuseTextToImage.from_preset(args.preset)
else:
    raise SystemExit(f"--preset {args.preset!r} is not a preset directory (or pass --tiny)")
steps = args.steps or (4 if args.tiny else 12)
print(f"task: {task.resolution} images, {task.backbone.grid_size} tokens, {task.count_params():,} parameters")

"""
## Exporting

`export_saved_model(task, path, version=...)` writes `path/<version>/`, the
layout TF Serving polls: it serves the highest version and picks up a new one
when its directory appears. The directory is written under a temporary name
and renamed, so the server never sees half a model; an existing version is
only replaced with `overwrite=True`.

The number of decoding steps is fixed at export (the sampler's schedule and
loop length are compiled in); seed, guidance scale, temperature and negative
prompts are request inputs with defaults. On JAX the program is converted
with jax2tf (Keras' export path): the SavedModel computes exactly what
`task.generate` computes for the same seed. From the command line:
`python -m keras_muse export --preset DIR --out /models/muse --version 1`.
"""

base_path = os.path.abspath(os.path.join(OUT, "models", "muse"))
version = 1
while os.path.exists(os.path.join(base_path, str(version))):
    version += 1  # a new version per run, as a deployment would
export_dir = keras_muse.export.export_saved_model(task, base_path, version=version, num_steps=steps)
print(keras_muse.export.saved_model.describe_signatures(export_dir))

"""
## Inspecting it with `saved_model_cli`

`saved_model_cli` comes with TensorFlow. `show --all` lists every signature:
`serving_default` (prompts -> images), `encode` (uint8 images -> token ids)
and `decode` (token ids -> images). Dimensions of -1 are dynamic: any batch
size works. (It cannot list the concrete functions, because it does not load
tensorflow-text's custom ops; the signatures are what TF Serving uses.)
"""

cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
shown = subprocess.run([cli, "show", "--all", "--dir", export_dir], capture_output=True, text=True)
print(shown.stdout.split("Concrete Functions")[0] if shown.returncode == 0 else shown.stderr[-2000:])

"""
## A request, as TF Serving sees it

TF Serving's REST API takes the "columnar" format for a signature whose
inputs have different batch shapes (a batch of prompts, a scalar seed):

```
POST http://localhost:8501/v1/models/muse:predict
```
"""

request_body = {
    "signature_name": "serving_default",
    "inputs": {
        "prompts": ["a red circle on the left", "two blue squares", "a large yellow star"],
        "negative_prompts": [""],  # one for all, or one per prompt; "" = plain guidance
        "seed": 0,
        "guidance_scale": 3.0,
    },
}
print(json.dumps(request_body, indent=2))

"""
Inputs left out (here `temperature`) take the defaults stored in the
SignatureDef, as TF Serving does. The answer is
`{"outputs": {"images": [[[[r, g, b], ...]]], "token_ids": [...]}}`.

Below, a fresh Python process with only `tensorflow` and `tensorflow_text`
(the `import tensorflow_text` registers the SentencePiece ops) loads the
SavedModel and answers that request body the way the server would: it reads
the signature's inputs and defaults from the SavedModel, converts each JSON
value to the input's dtype, and calls the signature.
"""

SERVE_LIKE_TF_SERVING = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401, registers the SentencePiece ops
    from tensorflow.core.protobuf import saved_model_pb2

    export_dir, body, out_file = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    with open(export_dir + "/saved_model.pb", "rb") as f:
        meta_graph = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0]
    signature_def = meta_graph.signature_def[body["signature_name"]]
    signature = tf.saved_model.load(export_dir).signatures[body["signature_name"]]
    inputs = {}
    for name, info in signature_def.inputs.items():
        if name in body["inputs"]:
            inputs[name] = tf.constant(body["inputs"][name], tf.dtypes.as_dtype(info.dtype))
        else:
            inputs[name] = tf.constant(tf.make_ndarray(signature_def.defaults[name]))
    outputs = signature(**inputs)
    np.savez(out_file, **{k: v.numpy() for k, v in outputs.items()})
    print({k: (v.dtype.name, tuple(v.shape)) for k, v in outputs.items()})
    """
)
served_file = os.path.join(OUT, "served.npz")
env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
result = subprocess.run([sys.executable, "-c", SERVE_LIKE_TF_SERVING, export_dir, json.dumps(request_body),
                         served_file], capture_output=True, text=True, env=env)
if result.returncode != 0:
    raise SystemExit(result.stderr[-3000:])
print(result.stdout.strip())
served = np.load(served_file)

"""
The served images are the Keras model's images for the same seed (one batch:
`generate` splits more than 8 prompts into batches seeded `seed + b`):
"""

prompts = request_body["inputs"]["prompts"]
expected = task.generate(prompts, num_steps=steps, seed=0, guidance_scale=3.0, batch_size=len(prompts))
print("identical to task.generate:", np.array_equal(served["images"], expected))
save_png(make_captioned_grid(served["images"], prompts, columns=len(prompts)), os.path.join(OUT, "served.png"))

"""
## Running the server

With the `tensorflow_model_server` binary (apt package
`tensorflow-model-server`) or the `tensorflow/serving` Docker image; both
include tensorflow-text's ops. The generation program is one XLA module
(`XlaCallModule`), and the model server disables XLA unless asked, hence the
last flag:

```
tensorflow_model_server --rest_api_port=8501 --port=8500 \\
    --model_name=muse --model_base_path=/models/muse \\
    --xla_cpu_compilation_enabled=true

docker run -p 8501:8501 -p 8500:8500 -v /models/muse:/models/muse -e MODEL_NAME=muse \\
    tensorflow/serving --xla_cpu_compilation_enabled=true
```

`/models/muse` is the `path` given to `export_saved_model` (it holds `1/`,
`2/`, ...). Then, over REST:

```
curl -d @request.json http://localhost:8501/v1/models/muse:predict
```

## gRPC

The `tensorflow-serving-api` package has the protos. A `PredictRequest`
carries the same inputs as tensors; leave out an input to take its default.
The snippet runs only where the package is installed (it is not a keras_muse
dependency), and only builds the request here: sending it needs a server.
"""

GRPC_SNIPPET = '''
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

request = predict_pb2.PredictRequest()
request.model_spec.name = "muse"
request.model_spec.signature_name = "serving_default"
request.inputs["prompts"].CopyFrom(tf.make_tensor_proto(["a red circle on the left", "two blue squares"]))
request.inputs["negative_prompts"].CopyFrom(tf.make_tensor_proto([""]))
request.inputs["seed"].CopyFrom(tf.make_tensor_proto(0, dtype=tf.int64))
request.inputs["guidance_scale"].CopyFrom(tf.make_tensor_proto(3.0, dtype=tf.float32))

def send(request, target="localhost:8500"):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    response = stub.Predict(request, timeout=120.0)
    return tf.make_ndarray(response.outputs["images"])  # uint8 [B, H, W, 3]
'''
print(GRPC_SNIPPET)
try:
    import tensorflow_serving.apis  # noqa: F401
except ImportError:
    print("(tensorflow-serving-api is not installed: `pip install tensorflow-serving-api` to build the request)")
else:
    scope = {}
    exec(GRPC_SNIPPET, scope)
    print(f"PredictRequest built: {scope['request'].ByteSize()} bytes")

"""
## What else to know

- **One step count per export.** Export another version (or model name) to
  serve another `num_steps`; TF Serving can serve several models from one
  `--model_config_file`.
- **Batching.** Any batch size works; TF Serving's `--enable_batching` merges
  concurrent requests, which fills the doubled (guided) batch better.
- **Platforms.** The program is lowered for CPU and CUDA by default
  (`platforms=` to change it).
- **Other backends.** A task on TensorFlow (or torch) is exported through a
  preset and a JAX subprocess; the SavedModel then draws JAX's random stream,
  the same samples as the preset under `KERAS_BACKEND=jax`.
"""
print(f"wrote {export_dir} and {os.path.join(OUT, 'served.png')}")
