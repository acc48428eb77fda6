"""export_saved_model: a TF Serving SavedModel checked the way TF Serving loads it.

One tiny task is exported once per module; a fresh Python process that
imports only `tensorflow` and `tensorflow_text` loads it and calls every
signature, and `saved_model_cli show --all` lists it. The outputs must equal
the Keras model's (`generate`, the VQGAN's encode/decode) exactly: the
export runs the JAX program `generate` compiles, random stream included.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_muse.export import export_saved_model
from keras_muse.export import saved_model as saved_model_lib
from keras_muse.models import MuseTextToImage
from keras_muse.utils.image_utils import float_to_uint8
from keras_muse.utils.image_utils import uint8_to_float

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_preprocessor
from helpers import make_tiny_text_encoder
from helpers import make_vqgan

pytestmark = pytest.mark.filterwarnings("ignore::keras_muse.models.text.PromptTruncationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
STEPS = 4
PROMPTS = ["a red circle on the left", "two blue squares"]
PROMPTS_3 = ["a large green star", "a small yellow triangle at the top", "a purple hexagon"]
NEGATIVE_3 = ["a black star", "", "an orange diamond"]


def make_task(seed=0):
    backbone = make_tiny_muse_backbone(seed=seed)
    # As in test_muse_generate: amplified text paths make prompts (and
    # negative prompts) change the samples, as in a trained model.
    for variable, factor in [
        (backbone.token_embedding.embeddings, 10.0),
        (backbone.text_projection.kernel, 30.0),
    ] + [(block.cross_attn.output_dense.kernel, 20.0) for block in backbone.transformer_layers]:
        variable.assign(variable * factor)
    preprocessor = make_tiny_preprocessor()
    # No discriminator: a training aid the export leaves out (and fewer
    # variables to initialize: this fixture is most of the module's time).
    return MuseTextToImage(backbone, text_encoder=make_tiny_text_encoder(preprocessor),
                           vqgan=make_vqgan(factor=4, discriminator_channels=0), seed=0)


# The loader: what a serving host runs. Only TensorFlow and tensorflow-text.
_LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # registers the SentencePiece ops

    export_dir, requests_file, out_file = sys.argv[1:4]
    model = tf.saved_model.load(export_dir)
    serve = model.signatures["serving_default"]
    results, errors = {}, {}
    with open(requests_file) as f:
        requests = json.load(f)
    for name, req in requests["generate"].items():
        out = serve(prompts=tf.constant(req["prompts"]), negative_prompts=tf.constant(req["negative_prompts"]),
                    seed=tf.constant(req["seed"], tf.int64), guidance_scale=tf.constant(req["guidance_scale"]),
                    temperature=tf.constant(req["temperature"]))
        for key, value in out.items():
            results[f"{name}/{key}"] = value.numpy()
    # Defaults (what TF Serving fills in for missing inputs) via the tf.function.
    out = model.serving_default(tf.constant(requests["defaults_prompts"]))
    results["defaults/images"], results["defaults/token_ids"] = out["images"].numpy(), out["token_ids"].numpy()
    images = np.asarray(requests["encode_images"], np.uint8)
    results["encode/token_ids"] = model.signatures["encode"](images=tf.constant(images))["token_ids"].numpy()
    ids = np.asarray(requests["decode_token_ids"], np.int32)
    results["decode/images"] = model.signatures["decode"](token_ids=tf.constant(ids))["images"].numpy()
    served = results["a/token_ids"]
    results["decode_served/images"] = model.signatures["decode"](token_ids=tf.constant(served))["images"].numpy()
    bad = {
        "mismatched_negative": dict(prompts=["a", "b", "c"], negative_prompts=["x", "y"]),
        "empty_batch": dict(prompts=np.zeros((0,), object), negative_prompts=[""]),
        "negative_guidance": dict(prompts=["a"], negative_prompts=[""], guidance_scale=-1.0),
    }
    for name, kwargs in bad.items():
        call = dict(seed=tf.constant(0, tf.int64), guidance_scale=tf.constant(3.0), temperature=tf.constant(1.0))
        call.update({k: tf.constant(v, tf.string if "prompts" in k else tf.float32) for k, v in kwargs.items()})
        try:
            serve(**call)
            errors[name] = None
        except tf.errors.InvalidArgumentError as e:
            errors[name] = str(e).splitlines()[0] + " " + " ".join(str(e).split())[:400]
    np.savez(out_file, **results)
    print(json.dumps({"errors": errors, "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                      ("keras_muse", "keras_hub"))}))
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export, one fresh-process load, one `saved_model_cli` run."""
    work = tmp_path_factory.mktemp("export")
    task = make_task()
    base = work / "muse"
    export_dir = export_saved_model(task, base, version=1, num_steps=STEPS)
    rng = np.random.default_rng(0)
    encode_images = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    decode_ids = rng.integers(0, 64, (2, 4, 4)).astype(np.int32)
    requests = {
        "generate": {
            "a": dict(prompts=PROMPTS, negative_prompts=[""], seed=3, guidance_scale=3.0, temperature=1.0),
            "b": dict(prompts=PROMPTS_3, negative_prompts=NEGATIVE_3, seed=7, guidance_scale=5.0, temperature=0.7),
            "b_no_negative": dict(prompts=PROMPTS_3, negative_prompts=[""], seed=7, guidance_scale=5.0,
                                  temperature=0.7),
            "one_negative": dict(prompts=PROMPTS, negative_prompts=["a black star"], seed=3, guidance_scale=3.0,
                                 temperature=1.0),
            "big_seed": dict(prompts=PROMPTS, negative_prompts=[""], seed=2**31 + 3, guidance_scale=3.0,
                             temperature=1.0),
        },
        "defaults_prompts": PROMPTS,
        "encode_images": encode_images.tolist(),
        "decode_token_ids": decode_ids.tolist(),
    }
    requests_file, out_file = work / "requests.json", work / "served.npz"
    requests_file.write_text(json.dumps(requests))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    # Both processes at once: they mostly wait on TensorFlow's import.
    cli = subprocess.Popen([SAVED_MODEL_CLI, "show", "--all", "--dir", export_dir], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loader = subprocess.run([sys.executable, "-c", _LOADER, export_dir, str(requests_file), str(out_file)],
                            env=env, capture_output=True, text=True, timeout=600)
    cli_out, cli_err = cli.communicate(timeout=600)
    assert loader.returncode == 0, loader.stderr[-4000:]
    assert cli.returncode == 0, cli_err[-3000:]
    served = dict(np.load(out_file))
    return dict(task=task, base=base, export_dir=export_dir, requests=requests, served=served,
                loader=json.loads(loader.stdout.strip().splitlines()[-1]), cli=cli_out)


def _keras_generate(task, req):
    negative = req["negative_prompts"]
    if negative == [""]:
        negative = None  # the empty prompt is the unconditional one
    elif len(negative) == 1:
        negative = negative[0]
    return task.generate(
        req["prompts"], negative_prompts=negative, num_steps=STEPS,
        guidance_scale=req["guidance_scale"], temperature=req["temperature"], seed=req["seed"],
        batch_size=len(req["prompts"]), return_tokens=True,
    )


def test_layout_is_a_versioned_saved_model(exported):
    assert exported["export_dir"] == str(exported["base"] / "1")
    assert sorted(os.listdir(exported["base"])) == ["1"]  # no temporary directory left
    files = set(os.listdir(exported["export_dir"]))
    assert {"saved_model.pb", "variables", "assets.extra"} <= files
    info = json.loads((exported["base"] / "1" / "assets.extra" / "keras_muse_export.json").read_text())
    assert info["options"]["num_steps"] == STEPS and info["signatures"] == ["serving_default", "encode", "decode"]


@pytest.mark.parametrize("name", ["a", "b", "one_negative", "big_seed"])
def test_serving_default_equals_keras_generate(exported, name):
    req = exported["requests"]["generate"][name]
    expected = _keras_generate(exported["task"], req)
    served = exported["served"]
    assert served[f"{name}/images"].dtype == np.uint8
    assert served[f"{name}/images"].shape == (len(req["prompts"]), 16, 16, 3)
    np.testing.assert_array_equal(served[f"{name}/token_ids"], expected["token_ids"])
    np.testing.assert_array_equal(served[f"{name}/images"], expected["images"])


def test_request_inputs_change_the_output(exported):
    served = exported["served"]
    # Negative prompts are used, and one negative prompt is broadcast.
    assert not np.array_equal(served["b/token_ids"], served["b_no_negative/token_ids"])
    assert not np.array_equal(served["a/token_ids"], served["one_negative/token_ids"])


def test_defaults_are_in_the_signature(exported):
    # TF Serving fills missing inputs from SignatureDef.defaults.
    import tensorflow as tf

    signature_def = saved_model_lib.read_signature_defs(exported["export_dir"])["serving_default"]
    defaults = {k: tf.make_ndarray(v) for k, v in signature_def.defaults.items()}
    assert set(defaults) == {"negative_prompts", "seed", "guidance_scale", "temperature"}
    assert defaults["negative_prompts"].tolist() == [b""] and int(defaults["seed"]) == 0
    assert float(defaults["guidance_scale"]) == 3.0 and float(defaults["temperature"]) == 1.0
    # ... and they mean the same as the Keras defaults with seed 0.
    expected = exported["task"].generate(PROMPTS, num_steps=STEPS, seed=0, return_tokens=True)
    np.testing.assert_array_equal(exported["served"]["defaults/token_ids"], expected["token_ids"])


def test_loader_needs_only_tensorflow_and_tensorflow_text(exported):
    assert exported["loader"]["modules"] == []


def test_bad_requests_fail_with_clear_errors(exported):
    errors = exported["loader"]["errors"]
    assert "negative_prompts" in errors["mismatched_negative"]
    assert "at least one prompt" in errors["empty_batch"]
    assert "guidance_scale" in errors["negative_guidance"]


def test_encode_and_decode_match_the_vqgan(exported):
    task, served, req = exported["task"], exported["served"], exported["requests"]
    images = np.asarray(req["encode_images"], np.uint8)
    np.testing.assert_array_equal(served["encode/token_ids"], task.vqgan.encode(uint8_to_float(images)))
    ids = np.asarray(req["decode_token_ids"], np.int32)
    np.testing.assert_array_equal(served["decode/images"], float_to_uint8(task.vqgan.decode(ids)))
    # decode(serving_default(...)["token_ids"]) is the served image.
    np.testing.assert_array_equal(served["decode_served/images"], served["a/images"])


def test_saved_model_cli_lists_the_signatures(exported):
    out = exported["cli"]
    sections = {}
    for block in out.split("signature_def['")[1:]:
        name, body = block.split("']", 1)
        sections[name] = body
    assert {"serving_default", "encode", "decode"} <= set(sections)

    def tensor(body, kind, name):
        part = body.split(f"{kind}['{name}'] tensor_info:")[1]
        lines = [line.strip() for line in part.strip().splitlines()[:2]]
        return lines[0].replace("dtype: ", ""), lines[1].replace("shape: ", "")

    serving = sections["serving_default"]
    assert tensor(serving, "inputs", "prompts") == ("DT_STRING", "(-1)")
    assert tensor(serving, "inputs", "negative_prompts") == ("DT_STRING", "(-1)")
    assert tensor(serving, "inputs", "seed") == ("DT_INT64", "()")
    assert tensor(serving, "inputs", "guidance_scale") == ("DT_FLOAT", "()")
    assert tensor(serving, "inputs", "temperature") == ("DT_FLOAT", "()")
    assert tensor(serving, "outputs", "images") == ("DT_UINT8", "(-1, 16, 16, 3)")
    assert tensor(serving, "outputs", "token_ids") == ("DT_INT32", "(-1, 4, 4)")
    assert "Method name is: tensorflow/serving/predict" in serving
    assert tensor(sections["encode"], "inputs", "images") == ("DT_UINT8", "(-1, 16, 16, 3)")
    assert tensor(sections["encode"], "outputs", "token_ids") == ("DT_INT32", "(-1, 4, 4)")
    assert tensor(sections["decode"], "inputs", "token_ids") == ("DT_INT32", "(-1, 4, 4)")
    assert tensor(sections["decode"], "outputs", "images") == ("DT_UINT8", "(-1, 16, 16, 3)")
    # The program and the tokenizer are in the graph.
    assert "XlaCallModule" in out and "SentencepieceTokenizeOp" in out


def test_describe_signatures_lists_defaults(exported):
    text = saved_model_lib.describe_signatures(exported["export_dir"])
    assert "input prompts: string [-1]" in text and "input seed: int64 [] (has default)" in text
    assert "output images: uint8 [-1, 16, 16, 3]" in text


# ------------------------------------------------------------ bad arguments
def test_existing_version_is_refused_and_left_alone(exported):
    pb = os.path.join(exported["export_dir"], "saved_model.pb")
    before = os.stat(pb).st_mtime_ns
    with pytest.raises(ValueError, match="`version` 1 already exists"):
        export_saved_model(exported["task"], exported["base"], version=1)
    assert os.stat(pb).st_mtime_ns == before


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(version=0), "`version` must be an int >= 1"),
        (dict(version="2"), "`version` must be an int >= 1"),
        (dict(num_steps=0), "`num_steps` must be an int >= 1"),
        (dict(guidance_scale=-1.0), "`guidance_scale` must be a finite number >= 0"),
        (dict(temperature=0.0), "`temperature` must be a finite number > 0"),
        (dict(top_k=3), "`top_k` cannot be exported"),
        (dict(top_p=1.5), r"`top_p` must be a number in \(0, 1\]"),
        (dict(guidance_schedule="cubic"), "`guidance_schedule` must be one of"),
        (dict(platforms="cpu"), "`platforms` must be a non-empty list"),
        (dict(platforms=("cpu", "gpu")), "`platforms` must be a non-empty list"),
    ],
)
def test_bad_arguments_raise_value_errors(exported, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_saved_model(exported["task"], tmp_path / "m", **kwargs)
    assert not (tmp_path / "m").exists() or os.listdir(tmp_path / "m") == []


def test_non_tasks_are_refused(exported, tmp_path):
    task = exported["task"]
    for bad in (task.backbone, task.vqgan, "preset_dir", None):
        with pytest.raises(ValueError, match="`task` must be a MuseTextToImage"):
            export_saved_model(bad, tmp_path / "m")
    no_vqgan = MuseTextToImage(task.backbone, text_encoder=task.text_encoder)
    with pytest.raises(ValueError, match="`task` must have a `vqgan`"):
        export_saved_model(no_vqgan, tmp_path / "m")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="`path` must be a directory"):
        export_saved_model(task, tmp_path / "file")


def test_a_failed_export_leaves_nothing(exported, tmp_path, monkeypatch):
    def broken(task, export_dir, options):
        os.makedirs(export_dir)
        open(os.path.join(export_dir, "saved_model.pb"), "w").close()
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(saved_model_lib, "_write_saved_model", broken)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        export_saved_model(exported["task"], tmp_path / "m", version=3)
    assert os.listdir(tmp_path / "m") == []


# --------------------------------------------------------------------- slow
@pytest.mark.slow
def test_overwrite_replaces_the_version(exported, tmp_path):
    base = tmp_path / "m"
    first = export_saved_model(exported["task"], base, version=2, num_steps=2, platforms=("cpu",))
    second = export_saved_model(exported["task"], base, version=2, num_steps=3, overwrite=True,
                                platforms=("cpu",))
    assert first == second and sorted(os.listdir(base)) == ["2"]
    info = json.loads((base / "2" / "assets.extra" / "keras_muse_export.json").read_text())
    assert info["options"]["num_steps"] == 3


_TF_BACKEND_EXPORT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import keras
    import numpy as np
    import tensorflow as tf
    from keras_muse.export import export_saved_model
    from keras_muse.models import MuseTextToImage

    preset, base = sys.argv[1:3]
    assert keras.backend.backend() == "tensorflow"
    task = MuseTextToImage.from_preset(preset)
    prompts = ["a red circle on the left", "two blue squares"]
    sampled = export_saved_model(task, base, version=1, num_steps=4, platforms=("cpu",))
    # Greedy: the nucleus of a tiny top_p is the most likely token alone.
    greedy = export_saved_model(task, base, version=2, num_steps=4, top_p=1e-6, choice_temperature=0.0,
                                platforms=("cpu",))
    call = dict(prompts=tf.constant(prompts), negative_prompts=tf.constant([""]), seed=tf.constant(3, tf.int64),
                guidance_scale=tf.constant(3.0), temperature=tf.constant(1.0))
    served = tf.saved_model.load(sampled).signatures["serving_default"](**call)["token_ids"].numpy()
    served_greedy = tf.saved_model.load(greedy).signatures["serving_default"](**call)["token_ids"].numpy()
    tf_greedy = task.generate(prompts, num_steps=4, seed=3, top_p=1e-6, choice_temperature=0.0,
                              return_tokens=True)["token_ids"]
    print(json.dumps({"served": served.tolist(), "served_greedy": served_greedy.tolist(),
                      "tf_greedy": tf_greedy.tolist()}))
    """
)


@pytest.mark.slow
def test_a_tensorflow_backend_task_exports_the_same_program(exported, tmp_path):
    # On TensorFlow the task is saved as a preset and exported by a JAX
    # subprocess: the SavedModel equals the JAX-backend model (checked in
    # process here); with greedy settings it equals the TF-backend generate
    # too (with noise, the backends' random streams differ).
    task = exported["task"]
    task.save_to_preset(tmp_path / "preset")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _TF_BACKEND_EXPORT, str(tmp_path / "preset"), str(tmp_path / "m")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    jax_sampled = task.generate(PROMPTS, num_steps=STEPS, seed=3, return_tokens=True)["token_ids"]
    jax_greedy = task.generate(PROMPTS, num_steps=STEPS, seed=3, top_p=1e-6, choice_temperature=0.0,
                               return_tokens=True)["token_ids"]
    np.testing.assert_array_equal(out["served"], jax_sampled)
    np.testing.assert_array_equal(out["served_greedy"], jax_greedy)
    np.testing.assert_array_equal(out["served_greedy"], out["tf_greedy"])
    assert len(np.unique(out["served_greedy"])) > 1


@pytest.mark.slow
def test_cli_export(exported, tmp_path):
    exported["task"].save_to_preset(tmp_path / "preset")
    cmd = [sys.executable, "-m", "keras_muse", "export", "--preset", str(tmp_path / "preset"),
           "--out", str(tmp_path / "m"), "--version", "4", "--steps", "2"]
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "signature 'serving_default'" in result.stdout and (tmp_path / "m" / "4" / "saved_model.pb").exists()
    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode != 0 and "already exists" in again.stderr


@pytest.mark.slow
def test_a_two_stage_task_exports_base_then_super_res(exported, tmp_path):
    import tensorflow as tf

    from keras_muse.models import MuseSuperResBackbone
    from keras_muse.models import MuseSuperResolution

    task = exported["task"]
    keras.utils.set_random_seed(1)
    sr_backbone = MuseSuperResBackbone.from_preset("muse_super_res_tiny", load_weights=False)
    sr_backbone.token_embedding.embeddings.assign(sr_backbone.token_embedding.embeddings * 10.0)
    sr = MuseSuperResolution(sr_backbone, text_encoder=task.text_encoder,
                             vqgan=make_vqgan(factor=4, discriminator_channels=0))
    pipeline = MuseTextToImage(task.backbone, text_encoder=task.text_encoder, vqgan=task.vqgan,
                               super_resolution=sr)
    export_dir = export_saved_model(pipeline, tmp_path / "m", num_steps=STEPS, super_resolution_steps=3,
                                    platforms=("cpu",))
    model = tf.saved_model.load(export_dir)
    out = model.signatures["serving_default"](
        prompts=tf.constant(PROMPTS), negative_prompts=tf.constant([""]), seed=tf.constant(3, tf.int64),
        guidance_scale=tf.constant(3.0), temperature=tf.constant(1.0))
    expected = pipeline.generate(PROMPTS, num_steps=STEPS, super_resolution_steps=3, seed=3, batch_size=2,
                                 return_tokens=True)
    assert out["images"].shape == (2, 32, 32, 3) and out["token_ids"].shape == (2, 8, 8)
    np.testing.assert_array_equal(out["low_res_token_ids"].numpy(), expected["low_res_token_ids"])
    np.testing.assert_array_equal(out["token_ids"].numpy(), expected["token_ids"])
    np.testing.assert_array_equal(out["images"].numpy(), expected["images"])
    # encode/decode are the high-res tokenizer's: decode(token_ids) == images.
    decoded = model.signatures["decode"](token_ids=out["token_ids"])["images"].numpy()
    np.testing.assert_array_equal(decoded, out["images"].numpy())
    base_only = export_saved_model(pipeline, tmp_path / "m", version=2, num_steps=STEPS,
                                   super_resolution_steps=0, platforms=("cpu",))
    low = tf.saved_model.load(base_only).signatures["serving_default"](
        prompts=tf.constant(PROMPTS), negative_prompts=tf.constant([""]), seed=tf.constant(3, tf.int64),
        guidance_scale=tf.constant(3.0), temperature=tf.constant(1.0))
    np.testing.assert_array_equal(low["token_ids"].numpy(), expected["low_res_token_ids"])
