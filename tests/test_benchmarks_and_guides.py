"""Smoke runs of the benchmark scripts (slow) and of every guide with tiny
settings (`GUIDE_STEPS`, `--tiny`; part of the default run, as CI runs them)."""

import argparse
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_vqgan_bench_quick(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "vqgan_bench.py"), "--quick", "--out", str(out)],
        check=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["encode_decode_images_per_s"] > 0 and rows[0]["train_s_per_step"] > 0


def _run_guide(name, tmp_path, *args, backend="jax", steps="2"):
    env = {**os.environ, "KERAS_BACKEND": backend, "GUIDE_STEPS": steps, "GUIDE_OUT": str(tmp_path)}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "guides", name), *args],
                            capture_output=True, text=True, timeout=900, env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _png_shape(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_getting_started_guide_runs(tmp_path):
    stdout = _run_guide("getting_started.py", tmp_path)
    assert "(4, 64, 64, 3) uint8" in stdout
    for name in ("generate", "seeds", "guidance", "negative_prompt", "inpaint", "outpaint", "edit"):
        width, height = _png_shape(tmp_path / f"{name}.png")
        assert width >= 128 and height >= 128, name


def test_training_your_own_guide_runs(tmp_path):
    stdout = _run_guide("training_your_own.py", tmp_path)
    assert "usable pairs; skipped: none" in stdout and "saved and reloaded" in stdout
    _png_shape(tmp_path / "my_model_samples.png")
    assert (tmp_path / "my_muse" / "task.json").exists()


def test_attention_maps_guide_runs_on_tensorflow(tmp_path):
    stdout = _run_guide("attention_maps.py", tmp_path, backend="tensorflow")
    assert "top left: most salient pieces" in stdout and "bottom right: most salient pieces" in stdout
    _png_shape(tmp_path / "attention_per_word.png")
    _png_shape(tmp_path / "saliency_per_word.png")


def test_vqgan_guide_runs(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "GUIDE_STEPS": "4", "GUIDE_OUT": str(tmp_path)}
    subprocess.run([sys.executable, os.path.join(ROOT, "guides", "vqgan_tokenizer.py")], check=True, timeout=900, env=env)
    assert (tmp_path / "guide_reconstructions.png").exists()


@pytest.mark.slow
def test_train_bench_quick(tmp_path):
    out = tmp_path / "train_bench.json"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "train_bench.py"), "--quick", "--out", str(out)],
        check=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    row = json.loads(out.read_text())["train"][0]
    assert row["config"] == "muse_tiny" and row["tokens_per_s"] > 0 and row["peak_rss_MB"] > 0


def test_step_breakdown_tiny(tmp_path):
    out = tmp_path / "breakdown.json"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "step_breakdown.py"), "--config", "tiny",
         "--repeats", "1", "--out", str(out)],
        check=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    rows = {r["part"]: r for r in json.loads(out.read_text())["rows"]}
    # No ordering of the two timings: at this size (about 1 ms, one repeat)
    # it is noise on a loaded machine. The rates must follow from the counts.
    block = rows["block"]
    assert block["fwd_ms"] >= 0 and block["fwd_bwd_ms"] >= 0
    # The JSON rounds ms to 0.1 and GFLOP/s to 0.1: bound the rate by both ends
    # of the rounding interval of the time.
    slowest, fastest = block["fwd_ms"] + 0.05, block["fwd_ms"] - 0.05
    assert block["gflop_fwd"] / slowest * 1e3 - 0.05 <= block["fwd_gflops"]
    if fastest > 0:
        assert block["fwd_gflops"] <= block["gflop_fwd"] / fastest * 1e3 + 0.05
    assert all(r["gflop_fwd"] > 0 for r in rows.values())


@pytest.mark.slow
def test_sample_bench_quick(tmp_path):
    out = tmp_path / "sample_bench.json"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "sample_bench.py"), "--quick", "--out", str(out)],
        check=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    rows = json.loads(out.read_text())["keras_muse"]
    assert {r["cfg_scale"] for r in rows} == {3.0, 0.0} and all(r["seconds_per_batch"] > 0 for r in rows)
    # Each config runs in its own process, so each has its own high-water mark.
    assert {r["config"] for r in rows} == {"muse_tiny", "sr_tiny"}
    assert all(r["peak_rss_MB"] > 50 for r in rows)


def test_serving_guide_runs(tmp_path):
    # --tiny: an untrained tiny task, exported, inspected with saved_model_cli
    # and served from a fresh TensorFlow-only process.
    env = {**os.environ, "KERAS_BACKEND": "jax", "GUIDE_OUT": str(tmp_path)}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "guides", "serving.py"), "--tiny"],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical to task.generate: True" in result.stdout
    assert "signature_def['serving_default']" in result.stdout
    assert (tmp_path / "served.png").exists() and (tmp_path / "models" / "muse" / "1" / "saved_model.pb").exists()


def test_train_bench_summarizes_rounds_per_setting():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from train_bench import summarize_rounds
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    rows = [
        {"config": "a", "xla_flags": "default", "s_per_step": 2.0},
        {"config": "a", "xla_flags": "--x", "s_per_step": 1.0},
        {"config": "a", "xla_flags": "default", "s_per_step": 4.0},
        {"config": "a", "xla_flags": "--x", "s_per_step": 1.5},
        {"config": "a", "xla_flags": "default", "s_per_step": 3.5},
    ]
    summary = {row["xla_flags"]: row for row in summarize_rounds(rows)}
    assert summary["default"]["rounds"] == 3 and summary["default"]["median_s_per_step"] == 3.5
    assert summary["default"]["min_s_per_step"] == 2.0 and summary["default"]["max_s_per_step"] == 4.0
    assert summary["--x"]["median_s_per_step"] == 1.25


@pytest.mark.slow
def test_eval_super_res_from_real_scenes_reports_the_ceilings(tmp_path):
    out = tmp_path / "eval.json"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "eval_super_res.py"), "--preset", "muse_shapes_128",
         "--source", "real", "-n", "4", "--batch-size", "4", "--report", str(out)],
        check=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    result = json.loads(out.read_text())
    assert result["source"] == "real" and "guidance_scale" not in result
    for name in ("base_vs_super_res", "real_renders", "tokenizer_reconstructions"):
        judged = result[f"classifier_agreement_{name}"]
        assert judged["num_images"] == 4 and all(0 <= judged[k] <= 1 for k in ("color", "shape", "count"))
    # Real renders of one scene at two sizes read the same to the classifier.
    assert result["classifier_agreement_real_renders"]["color"] >= 0.75


def _load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_shipped_presets_records_the_evaluate_report_it_is_given(tmp_path):
    build = _load_example("build_shipped_presets")

    def row(scale, shape):
        scores = {"color": 0.9, "shape": shape, "size": 0.8, "position": 0.7, "count": 0.6, "all": 0.1234567}
        return {"guidance_scale": scale, "alignment": scores, "classifier_fid": 123.456}

    report = {"split": "heldout", "num_prompts": 128, "batch_size": 16, "data_seed": 777, "seed": 0,
              "real": {"classifier_fid_floor": 53.39}, "results": [row(1.0, 0.3), row(3.0, 0.5)]}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(report))
    summary = build._alignment_summary(str(path))
    assert summary["by_guidance"]["3.0"]["shape"] == 0.5 and summary["by_guidance"]["1.0"]["shape"] == 0.3
    assert summary["by_guidance"]["3.0"]["all"] == 0.1235 and summary["by_guidance"]["3.0"]["classifier_fid"] == 123.5
    assert summary["classifier_fid_floor"] == 53.4
    # The command reproduces the report's settings on the shipped preset.
    for flag in ("--preset muse_shapes_64", "-n 128", "--batch-size 16", "--data-seed 777", "--guidance-sweep 1,3"):
        assert flag in summary["command"], summary["command"]
    path.write_text(json.dumps({**report, "split": "train"}))
    with pytest.raises(SystemExit, match="held-out split"):
        build._alignment_summary(str(path))


def test_build_shipped_presets_carries_over_the_stages_of_the_preset_a_run_continued(tmp_path):
    build = _load_example("build_shipped_presets")
    earlier = tmp_path / "shipped"
    earlier.mkdir()
    stages = {"super_res_first_run": {"steps": 1400}, "super_res": {"steps": 1500, "heldout_upsampling": {}}}
    (earlier / "metadata.json").write_text(json.dumps({"keras_muse_recipe": {"stages": stages}}))
    report = tmp_path / "train_super_res.json"
    report.write_text(json.dumps({"init_from": str(earlier), "steps": 1000}))
    carried = build._earlier_stages(str(report), "super_res")
    assert carried == {"super_res_first_run": {"steps": 1400},
                       "super_res_second_run": {"steps": 1500, "heldout_upsampling": {}}}
    # A run from scratch, or one whose report is missing, continues nothing.
    report.write_text(json.dumps({"init_from": None, "steps": 1000}))
    assert build._earlier_stages(str(report), "super_res") == {}
    assert build._earlier_stages(str(tmp_path / "missing.json"), "super_res") == {}
    # A preset with another chain of stages is not guessed at.
    (earlier / "metadata.json").write_text(json.dumps({"keras_muse_recipe": {"stages": {"base": {}}}}))
    report.write_text(json.dumps({"init_from": str(earlier)}))
    with pytest.raises(SystemExit, match="super_res_first_run"):
        build._earlier_stages(str(report), "super_res")


def _package_preset():
    from keras_muse.training.ship_preset import package_preset

    return package_preset


def test_build_shipped_presets_continues_a_base_chain_of_any_length(tmp_path):
    build = _load_example("build_shipped_presets")
    earlier = tmp_path / "shipped"
    earlier.mkdir()
    stages = {"vqgan": {"steps": 4000}, "base_first_run": {"steps": 6500}, "base": {"steps": 3000}}
    (earlier / "metadata.json").write_text(json.dumps({"keras_muse_recipe": {"stages": stages}}))
    report = tmp_path / "train_muse.json"
    report.write_text(json.dumps({"init_from": str(earlier), "steps": 3500}))
    # The packaged preset's last run becomes the second; the tokenizer's stage stays.
    assert build._earlier_stages(str(report), "base") == {
        "vqgan": {"steps": 4000}, "base_first_run": {"steps": 6500}, "base_second_run": {"steps": 3000}}
    # A gap in the chain is not guessed at.
    stages = {"base_second_run": {"steps": 3000}, "base": {"steps": 3500}}
    (earlier / "metadata.json").write_text(json.dumps({"keras_muse_recipe": {"stages": stages}}))
    with pytest.raises(SystemExit, match="base_first_run"):
        build._earlier_stages(str(report), "base")
    # Packaging the continued run records the whole chain, and the commands rebuild it run by run.
    stages = {"vqgan": {"steps": 4000}, "base_first_run": {"steps": 6500}, "base": {"steps": 3000}}
    (earlier / "metadata.json").write_text(json.dumps({"keras_muse_recipe": {"stages": stages}}))
    src = tmp_path / "run"
    src.mkdir()
    (src / "config.json").write_text("{}")
    args = argparse.Namespace(base_preset=str(src), package_only=True, train_minutes_note=None,
                              alignment_report=None, dest_root=str(tmp_path / "dest"))
    commands = ["python examples/train_muse.py ..."]
    build._package_base(args, str(tmp_path), None, str(tmp_path / "no_vqgan.json"), str(report), commands,
                        _package_preset())
    recipe = json.loads((tmp_path / "dest" / "muse_shapes_64" / "metadata.json").read_text())["keras_muse_recipe"]
    assert list(recipe["stages"]) == ["vqgan", "base_first_run", "base_second_run", "base"]
    assert recipe["stages"]["base"]["steps"] == 3500 and recipe["commands"] == commands
    reports = build._base_run_reports("r.json")
    assert reports[-1] == "r.json" and len(reports) == len(build.BASE_RUNS)
    assert all(r.startswith("r.json.") for r in reports[:-1])
