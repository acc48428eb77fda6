"""SavedModel export of a `MuseTextToImage` task, for TensorFlow Serving.

`export_saved_model(task, path)` writes `path/<version>/`, a SavedModel with
three signatures:

- `serving_default`: prompts -> images. Inputs `prompts` (string `[B]`),
  `negative_prompts` (string `[1]` or `[B]`; default `[""]`, the empty
  prompt = plain classifier-free guidance), `seed` (int64 scalar, default 0),
  `guidance_scale` (float32 scalar, default the export's `guidance_scale`),
  `temperature` (float32 scalar, default the export's). Outputs `images`
  (uint8 `[B, H, W, 3]`) and `token_ids` (int32 `[B, h, w]`), plus
  `low_res_token_ids` for a task with a super-resolution stage. The batch
  is dynamic. SentencePiece tokenization (tensorflow-text, the keras-hub
  `T5Tokenizer`'s own op), the text encoder, every decoding step and the
  VQGAN decoder run inside the graph.
- `encode`: uint8 images `[B, H, W, 3]` -> `token_ids` int32 `[B, h, w]`.
- `decode`: `token_ids` -> uint8 `images`; `decode(serving_default(...)
  ["token_ids"])` gives the same images.

The defaults are stored in the SignatureDef (`defaults`), so TF Serving
accepts requests that leave them out; a Python `tf.saved_model.load` caller
passes every input of `signatures["serving_default"]`, or calls the
`serving_default` attribute with keyword defaults.

**How the graph is built (and why this route).** The program is traced on
the JAX backend and converted with `jax2tf` (native serialization: one
`XlaCallModule` op holding the StableHLO of the whole generation), the same
conversion `keras.export.ExportArchive` uses, with a batch dimension that
stays symbolic (shape polymorphism). A small `tf.function` around it does
what JAX cannot: string inputs, tokenization, defaults. A task on another
backend (TensorFlow, torch) is saved with `save_to_preset` and exported by a
JAX subprocess from that preset. Chosen over building a `tf.function` on the
TensorFlow backend because:

1. *Same outputs as the Keras model.* The sampler's noise is a stateless
   stream keyed by the seed (`keras_muse.backend.random`); under JAX the
   SavedModel runs the very program `task.generate` compiles, so a seed
   gives identical token ids. TensorFlow's Philox kernels give one stream
   when XLA-compiled (what `generate` does on TensorFlow) and another when
   not, so a plain TF graph would not even match the TF-backend model.
2. *Dynamic batch without touching the sampler.* JAX shape polymorphism
   keeps `B` symbolic through the text encoder, the decoding loop and the
   decoder; the sampler's Python-level `x.shape[0]` would be `None` in a TF
   graph.
3. *Serving-safe state.* Weights are captured as read-only `tf.Variable`s
   passed into the converted function; nothing is assigned per request
   (Keras' generic JAX endpoint writes non-trainable variables back after
   each call, which would copy every frozen T5/VQGAN weight per request).

Consequences: the SavedModel needs XLA where it runs (the `XlaCallModule`
op): `tf.saved_model.load` does that out of the box; `tensorflow_model_server`
needs `--xla_cpu_compilation_enabled=true` (it turns all XLA compilation off
by default). The module is lowered for `platforms` (CPU and CUDA by
default; only CPU is tested here). A TensorFlow-trained task's export
draws JAX's random stream: its images equal what the same preset generates
under `KERAS_BACKEND=jax` with the same seed, while its TensorFlow-backend
`generate` draws other (equally distributed) samples for that seed; with
greedy settings (a tiny `top_p`, `choice_temperature=0`) all agree.

**Why `num_steps` is fixed at export.** The decoding schedule is
Python-level in the sampler: the masking schedule n_k = floor(N·cos(π/2·
(k+1)/T)), the guidance ramp t·(k+1)/T and the confidence-noise anneal all
take T as a Python number, and T is the trip count of the compiled
`fori_loop` (`generate` too compiles one program per `num_steps`). Making it
a request input would mean a dynamic-trip-count loop with tensor-valued
schedules in the shared sampler. Export one model version (or one model
name) per step count instead. `top_p` is static as well; `top_k` is not
exportable (jax 0.10 lowers `lax.top_k` to a `stablehlo.composite` op that
TensorFlow 2.21 cannot deserialize), and a tiny `top_p` gives the greedy
choice. Seed, guidance scale and temperature are request inputs.

A request's images equal
`task.generate(prompts, negative_prompts=..., num_steps=num_steps, top_p=top_p,
guidance_scale=..., temperature=..., seed=seed, batch_size=len(prompts))`:
`generate` splits larger requests into batches of 8 seeded `seed + b`,
while a serving request is one batch seeded `seed`.

Example:
```python
task = keras_muse.models.MuseTextToImage.from_preset("./my_muse")
export_dir = keras_muse.export.export_saved_model(task, "/models/muse", version=1, num_steps=12)

# Anywhere with TensorFlow (no keras_muse needed):
import tensorflow as tf, tensorflow_text  # registers the SentencePiece ops
model = tf.saved_model.load(export_dir)
out = model.signatures["serving_default"](
    prompts=tf.constant(["a red circle on the left"]), negative_prompts=tf.constant([""]),
    seed=tf.constant(0, tf.int64), guidance_scale=tf.constant(3.0), temperature=tf.constant(1.0))
out["images"].shape   # (1, 64, 64, 3), uint8
```
"""

import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np

SIGNATURES = ("serving_default", "encode", "decode")
EXPORT_INFO_FILE = "keras_muse_export.json"
GENERATE_INPUTS = ("prompts", "negative_prompts", "seed", "guidance_scale", "temperature")
DEFAULT_PLATFORMS = ("cpu", "cuda")
_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


# ----------------------------------------------------------------- checks
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _check_number(name, value, minimum, strict=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"`{name}` must be a finite number {bound}. Received: {name}={value!r}")
    return float(value)


def _check_task(task):
    from keras_muse.models import MuseSuperResolution
    from keras_muse.models import MuseTextToImage

    if not isinstance(task, MuseTextToImage) or isinstance(task, MuseSuperResolution):
        raise ValueError(
            "`task` must be a MuseTextToImage (a super-resolution stage is exported through the "
            f"MuseTextToImage that holds it). Received: {type(task).__name__}"
        )
    for name in ("text_encoder", "preprocessor", "vqgan"):
        if getattr(task, name) is None:
            raise ValueError(
                f"`task` must have a `{name}`: the SavedModel takes prompt strings and returns "
                f"images. Received a MuseTextToImage with {name}=None."
            )
    return task


def _export_options(task, num_steps, guidance_scale, guidance_schedule, temperature, choice_temperature,
                    top_k, top_p, super_resolution_steps, platforms):
    from keras_muse.samplers.guidance import GUIDANCE_SCHEDULES

    if guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(
            f"`guidance_schedule` must be one of {GUIDANCE_SCHEDULES}. Received: {guidance_schedule!r}"
        )
    if top_k is not None:
        # jax 0.10 lowers `lax.top_k` to a `stablehlo.composite` that
        # TensorFlow 2.21's XlaCallModule cannot deserialize (measured: the
        # SavedModel saves, then fails at its first call). top-p sorts instead.
        raise ValueError(
            "`top_k` cannot be exported with this JAX/TensorFlow pair (TF 2.21 cannot read jax "
            "0.10's top-k op); use `top_p` (a tiny top_p is greedy). Received: "
            f"top_k={top_k!r}"
        )
    if top_p is not None and not (isinstance(top_p, (int, float)) and not isinstance(top_p, bool)
                                  and 0 < top_p <= 1):
        raise ValueError(f"`top_p` must be a number in (0, 1] or None. Received: top_p={top_p!r}")
    if isinstance(platforms, str) or not isinstance(platforms, (list, tuple)) or not platforms or any(
        p not in _PLATFORMS for p in platforms
    ) or len(set(platforms)) != len(platforms):
        raise ValueError(
            f"`platforms` must be a non-empty list of distinct names from {_PLATFORMS}. "
            f"Received: platforms={platforms!r}"
        )
    return {
        "num_steps": _check_int("num_steps", num_steps, 1),
        "guidance_scale": _check_number("guidance_scale", guidance_scale, 0.0),
        "guidance_schedule": guidance_schedule,
        "temperature": _check_number("temperature", temperature, 0.0, strict=True),
        "choice_temperature": _check_number("choice_temperature", choice_temperature, 0.0),
        "top_k": None,
        "top_p": None if top_p is None else float(top_p),
        "super_resolution_steps": (
            _check_int("super_resolution_steps", super_resolution_steps, 0)
            if task.super_resolution is not None else 0
        ),
        "platforms": list(platforms),
    }


def _version_dir(path, version, overwrite):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"`path` must be a directory path. Received: {path!r}")
    version = _check_int("version", version, 1)
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`path` must be a directory (TF Serving's model base path). Received a file: {path!r}")
    target = os.path.join(path, str(version))
    if os.path.exists(target) and not overwrite:
        raise ValueError(
            f"`version` {version} already exists at {target!r}. Pass a new `version` (TF Serving "
            "serves the highest one) or `overwrite=True`."
        )
    return target


# ------------------------------------------------------------- public API
def export_saved_model(task, path, version=1, num_steps=None, guidance_scale=None, guidance_schedule=None,
                       temperature=None, choice_temperature=None, top_k=None, top_p=None,
                       super_resolution_steps=None, platforms=DEFAULT_PLATFORMS, overwrite=False, verbose=False):
    """Writes `task` as a TF Serving SavedModel under `path/<version>/`.

    The version directory is written to a temporary sibling and renamed
    into place, so TF Serving (which polls `path` for new numeric
    directories) never loads a half-written model, and a failed export
    leaves nothing behind.

    Args:
        task: a `MuseTextToImage` with a text encoder, preprocessor and VQGAN
            (and optionally a super-resolution stage), on any backend.
        path: the model base path (`--model_base_path` of TF Serving).
        version: int >= 1, the version directory name.
        num_steps: decoding steps T of the base model (static: see the
            module docstring). This and the next four, left as None, take
            the task's `sampling_defaults` or `generate`'s defaults (24,
            3.0, "linear", 1.0, 4.5).
        guidance_scale: default of the `guidance_scale` input.
        guidance_schedule: "linear" (the paper's ramp) or "constant".
        temperature: default of the `temperature` input.
        choice_temperature: τ of the confidence noise (static).
        top_k: must be None (jax 0.10's top-k op does not load in TF 2.21).
        top_p: optional nucleus filter of the base stage (static).
        super_resolution_steps: steps of the super-res stage when the task
            holds one (0 exports the base stage only; None: the super-res
            task's default, 8).
        platforms: platforms the program is lowered for ("cpu", "cuda",
            "rocm", "tpu").
        overwrite: replace an existing `path/<version>`.
        verbose: print the signatures.

    Returns:
        str, the version directory.

    Example:
    ```python
    export_dir = export_saved_model(task, "/models/muse", version=2, num_steps=12)
    ```
    """
    _check_task(task)
    target = _version_dir(path, version, overwrite)
    setting = task.sampling_setting
    num_steps, guidance_scale = setting("num_steps", num_steps), setting("guidance_scale", guidance_scale)
    guidance_schedule = setting("guidance_schedule", guidance_schedule)
    temperature = setting("temperature", temperature)
    choice_temperature = setting("choice_temperature", choice_temperature)
    if super_resolution_steps is None and task.super_resolution is not None:
        super_resolution_steps = task.super_resolution.sampling_setting("num_steps")
    options = _export_options(task, num_steps, guidance_scale, guidance_schedule, temperature,
                              choice_temperature, top_k, top_p, super_resolution_steps, platforms)
    from keras_muse.utils.preset_utils import atomic_directory

    with atomic_directory(target) as tmp:
        if keras.backend.backend() == "jax":
            _write_saved_model(task, tmp, options)
        else:
            _write_from_jax_subprocess(task, tmp, options)
    if verbose:
        print(describe_signatures(target))
    return target


def read_signature_defs(export_dir):
    """The SavedModel's `SignatureDef` protos by name (inputs, outputs and the
    `defaults` TF Serving fills in), read from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(os.fspath(export_dir), "saved_model.pb"), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    return dict(saved_model.meta_graphs[0].signature_def)


def describe_signatures(export_dir):
    """A text listing of the SavedModel's signatures (inputs, outputs, defaults)."""
    signature_defs = read_signature_defs(export_dir)
    lines = [f"SavedModel at {export_dir}"]
    for key in sorted(k for k in signature_defs if not k.startswith("__")):
        sig = signature_defs[key]
        lines.append(f"  signature {key!r}:")
        for kind, entries in (("input", sig.inputs), ("output", sig.outputs)):
            for name in sorted(entries):
                info = entries[name]
                dims = [d.size for d in info.tensor_shape.dim]
                default = " (has default)" if kind == "input" and name in sig.defaults else ""
                lines.append(f"    {kind} {name}: {_dtype_name(info.dtype)} {dims}{default}")
    return "\n".join(lines)


def _dtype_name(enum):
    import tensorflow as tf

    return tf.dtypes.as_dtype(enum).name


# ------------------------------------------------- building the SavedModel
def _write_from_jax_subprocess(task, export_dir, options):
    """Saves `task` as a preset and exports it from a JAX process."""
    with tempfile.TemporaryDirectory(prefix="keras_muse_export_") as tmp:
        preset = os.path.join(tmp, "preset")
        task.save_to_preset(preset)
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        code = "from keras_muse.export.saved_model import _worker_main; _worker_main()"
        result = subprocess.run(
            [sys.executable, "-c", code, preset, export_dir, json.dumps(options)],
            env=env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                "Exporting from the JAX backend (in a subprocess, from a preset of the task) failed:\n"
                + result.stderr[-4000:]
            )


def _worker_main():
    """`python -c ... PRESET EXPORT_DIR OPTIONS_JSON` under KERAS_BACKEND=jax."""
    from keras_muse.models import MuseTextToImage

    preset, export_dir, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if keras.backend.backend() != "jax":
        raise SystemExit(f"the export worker must run on JAX, not {keras.backend.backend()!r}")
    _write_saved_model(MuseTextToImage.from_preset(preset), export_dir, options)


def _tokenizer_resource(preprocessor):
    """The tensorflow-text SentencePiece module of a keras-hub T5Tokenizer:
    the SavedModel must track it so the vocabulary is saved with the graph."""
    module = getattr(preprocessor.tokenizer, "_sentence_piece", None)
    if module is None:
        raise ValueError(
            "The task's preprocessor has no tensorflow-text SentencePiece tokenizer "
            f"(`{type(preprocessor.tokenizer).__name__}` without a `proto`), so tokenization "
            "cannot live in the SavedModel."
        )
    return module


def _write_saved_model(task, export_dir, options):
    """Traces, converts and saves (JAX backend). `export_dir` must not exist."""
    import tensorflow as tf

    from keras_muse.export.jax_conversion import ConvertedWeights

    stages = [(task, options["num_steps"], options["top_k"], options["top_p"])]
    if options["super_resolution_steps"]:
        # `SuperResolutionPipelineMixin.generate` drops top-k/top-p for the
        # second stage; so does the export.
        stages.append((task.super_resolution, options["super_resolution_steps"], None, None))
    final = stages[-1][0]
    preprocessors = []
    for stage, *_ in stages:
        if not any(stage.preprocessor is p for p in preprocessors):
            preprocessors.append(stage.preprocessor)
    which = [next(i for i, p in enumerate(preprocessors) if p is stage.preprocessor) for stage, *_ in stages]

    layers = []
    for stage, *_ in stages:
        layers += [stage.backbone, stage.text_encoder]
    layers += [final.vqgan.encoder, final.vqgan.quantizer, final.vqgan.decoder]
    if final is not task:
        layers += [task.vqgan.quantizer, task.vqgan.decoder]
    weights = ConvertedWeights(layers)
    platforms = tuple(options["platforms"])

    # ---- the generation program (JAX -> XlaCallModule)
    def generate_program(*args):
        from keras import ops

        texts = [args[4 * i : 4 * i + 4] for i in range(len(preprocessors))]
        seed, guidance_scale, temperature = args[4 * len(preprocessors) :]
        choice = ops.convert_to_tensor(options["choice_temperature"], "float32")
        batch = ops.shape(texts[0][0])[0]
        conditions, out = [], {}
        for (stage, steps, top_k, top_p), i in zip(stages, which):
            n = stage.backbone.num_tokens
            result = stage.generation_step(
                *texts[i], ops.zeros((batch, n), "int32"), ops.ones((batch, n), "bool"), seed,
                guidance_scale, temperature, choice, *conditions, mode="decode", num_steps=steps,
                use_guidance=True, guidance_schedule=options["guidance_schedule"], top_k=top_k,
                top_p=top_p, return_history=False, from_embeddings=False,
            )
            ids = ops.cast(result["token_ids"], "int32")
            if stage is not final:
                out["low_res_token_ids"] = ops.reshape(ids, (batch, *stage.backbone.grid_size))
                conditions = [ids]
        out["token_ids"] = ops.reshape(ids, (batch, *final.backbone.grid_size))
        out["images"] = _to_uint8(result["images"])
        return out

    length_specs = []
    for p in preprocessors:
        length = p.sequence_length
        length_specs += [tf.TensorSpec((None, length), tf.int32), tf.TensorSpec((None, length), tf.bool)] * 2
    core = weights.convert(
        generate_program,
        length_specs + [tf.TensorSpec((2,), tf.int32), tf.TensorSpec((), tf.float32),
                        tf.TensorSpec((), tf.float32)],
        platforms,
    )

    # ---- encode / decode (JAX -> XlaCallModule)
    vqgan = final.vqgan
    resolution = tuple(g * vqgan.factor for g in final.backbone.grid_size)
    grid = tuple(final.backbone.grid_size)

    def encode(images):
        from keras import ops

        floats = ops.cast(images, "float32") / 127.5 - 1.0
        return {"token_ids": ops.cast(vqgan.encode_step(floats), "int32")}

    def decode(token_ids):
        from keras import ops

        return {"images": _to_uint8(vqgan.decode_step(ops.cast(token_ids, "int32")))}

    encode_fn = weights.convert(encode, [tf.TensorSpec((None, *resolution, 3), tf.uint8, name="images")],
                                platforms, names=["images"])
    decode_fn = weights.convert(decode, [tf.TensorSpec((None, *grid), tf.int32, name="token_ids")],
                                platforms, names=["token_ids"])

    # ---- the string-facing serving function (TensorFlow)
    defaults = {
        "negative_prompts": tf.constant([""]),
        "seed": tf.constant(0, tf.int64),
        "guidance_scale": tf.constant(options["guidance_scale"], tf.float32),
        "temperature": tf.constant(options["temperature"], tf.float32),
    }

    def serve(prompts, negative_prompts=defaults["negative_prompts"], seed=defaults["seed"],
              guidance_scale=defaults["guidance_scale"], temperature=defaults["temperature"]):
        batch = tf.shape(prompts)[0]
        num_negative = tf.shape(negative_prompts)[0]
        checks = [
            tf.debugging.assert_positive(batch, message="`prompts` must hold at least one prompt"),
            tf.debugging.Assert(
                tf.logical_or(tf.equal(num_negative, 1), tf.equal(num_negative, batch)),
                ["`negative_prompts` must hold one prompt or one per prompt; prompts:", batch,
                 "negative_prompts:", num_negative],
            ),
            tf.debugging.assert_non_negative(guidance_scale, message="`guidance_scale` must be >= 0"),
            tf.debugging.assert_positive(temperature, message="`temperature` must be > 0"),
        ]
        with tf.control_dependencies(checks):
            negative_prompts = tf.cond(
                tf.equal(num_negative, 1), lambda: tf.repeat(negative_prompts, batch), lambda: negative_prompts
            )
            # `generate` seeds with `int(seed) & 0x7FFFFFFF` as [seed, 0].
            seed31 = tf.cast(tf.bitwise.bitwise_and(seed, tf.constant(0x7FFFFFFF, tf.int64)), tf.int32)
            seed_pair = tf.stack([seed31, tf.constant(0, tf.int32)])
        args = []
        for p in preprocessors:
            for texts in (prompts, negative_prompts):
                tokens = p(texts)
                args += [tf.cast(tokens["token_ids"], tf.int32), tf.cast(tokens["padding_mask"], tf.bool)]
        return core(*args, seed_pair, guidance_scale, temperature)

    serving_fn = tf.function(
        serve,
        input_signature=[
            tf.TensorSpec((None,), tf.string, name="prompts"),
            tf.TensorSpec((None,), tf.string, name="negative_prompts"),
            tf.TensorSpec((), tf.int64, name="seed"),
            tf.TensorSpec((), tf.float32, name="guidance_scale"),
            tf.TensorSpec((), tf.float32, name="temperature"),
        ],
        autograph=False,
    )
    serving_fn.get_concrete_function()

    root = tf.Module()
    root.weights = weights.tf_variables
    # Taken after tracing: tracing may re-create a SentencePiece resource
    # that `keras.utils.set_random_seed` deleted (see MuseTextPreprocessor).
    root.tokenizers = [_tokenizer_resource(p) for p in preprocessors]
    root.serving_default = serving_fn
    root.encode = encode_fn
    root.decode = decode_fn
    tf.saved_model.save(
        root, export_dir, signatures={"serving_default": serving_fn, "encode": encode_fn, "decode": decode_fn}
    )
    # Provenance for people (TF Serving ignores assets.extra).
    from keras_muse.version import __version__

    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with open(os.path.join(export_dir, "assets.extra", EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
        json.dump({"keras_muse_version": __version__, "options": options,
                   "signatures": list(SIGNATURES), "generate_inputs": list(GENERATE_INPUTS)}, f, indent=2)


def _to_uint8(images):
    """float [-1, 1] -> uint8 [0, 255], as `VQGAN.postprocess_images`."""
    from keras import ops

    return ops.cast(ops.clip(ops.round((ops.cast(images, "float32") + 1.0) * 127.5), 0, 255), "uint8")
