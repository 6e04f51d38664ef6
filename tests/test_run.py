"""Tiny runs of every shipped spec against a temporary MLflow store, and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, SPECS, shrink

from rnnflow.cli import main


@pytest.fixture(scope="module")
def run_spec(mlflow_store, tiny_mnist):
    from rnnflow.runner import run

    def go(path, extra=(), **kwargs):
        return run(path, [*shrink(path), *extra], **kwargs)

    return go


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_tiny_run_of_every_spec(path, run_spec, client):
    import mlflow.keras

    import rnnflow.cells  # noqa: F401  (custom objects for loading)
    from rnnflow.spec import load_spec

    spec = load_spec(path)
    result = run_spec(path)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["name"] == spec.name and params["data.type"] == spec.data.type
    assert params["model.cells.0.type"] == spec.model.cells[0].type
    assert run.data.tags["rnnflow.spec_sha256"] == spec.sha256()
    import keras
    import mlflow
    import tensorflow as tf

    import rnnflow

    assert {k: run.data.tags[k] for k in ("rnnflow.version", "rnnflow.tensorflow_version", "rnnflow.keras_version",
                                          "rnnflow.mlflow_version")} == {
        "rnnflow.version": rnnflow.__version__, "rnnflow.tensorflow_version": tf.__version__,
        "rnnflow.keras_version": keras.__version__, "rnnflow.mlflow_version": mlflow.__version__}
    if (ROOT / ".git").exists():  # a checkout: the run names the commit of the spec's repository
        import subprocess

        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert run.data.tags["mlflow.source.git.commit"] == head.stdout.strip()
        assert run.data.tags["rnnflow.git_dirty"] in ("true", "false")
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"spec", "model_summary.txt"} <= artifacts
    spec_files = {a.path for a in client.list_artifacts(result.run_id, "spec")}
    assert {f"spec/{path.name}", "spec/resolved.yaml", "spec/overrides.txt"} <= spec_files
    if spec.train is not None:
        assert "loss.png" in artifacts
        for key in ("train_loss", "test_loss", "loss"):
            assert np.isfinite(run.data.metrics[key]), key
        history = client.get_metric_history(result.run_id, "loss")
        assert [m.step for m in history] == sorted(m.step for m in history) and history[-1].step == result.iterations
    for step in spec.evaluate.steps:
        assert any(a.startswith(step.stem) for a in artifacts), (step.stem, artifacts)
    if spec.tracking.log_model:
        model = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
        inputs = result.built.model.inputs
        sample = {t.name: np.zeros((2, *t.shape[1:]), t.dtype) for t in inputs}
        sample = sample if len(inputs) > 1 else next(iter(sample.values()))
        pred = np.asarray(model(sample, training=False))
        expected = np.asarray(result.built.model(sample, training=False))
        np.testing.assert_allclose(pred, expected, rtol=1e-6, atol=1e-6)


def test_same_seed_same_metrics(run_spec):
    path = next(p for p in SPECS if p.stem == "gru_forecast")
    first = run_spec(path, ["train.iterations=5"])
    second = run_spec(path, ["train.iterations=5"])
    keys = [k for k in first.metrics if k.startswith(("train_", "val_", "test_")) and k != "train_seconds"]
    assert keys
    assert {k: first.metrics[k] for k in keys} == {k: second.metrics[k] for k in keys}
    third = run_spec(path, ["train.iterations=5", "seed=7"])
    assert third.metrics["train_loss"] != first.metrics["train_loss"]


def test_run_cli_prints_run_id_and_its_link(mlflow_store, client):
    from rnnflow.spec import load_spec

    path = next(p for p in SPECS if p.stem == "gru_forecast")
    result = CliRunner().invoke(main, ["run", str(path), "-q", *[f"--set={o}" for o in shrink(path)]])
    assert result.exit_code == 0, result.output
    run_id = result.output.split("run id: ")[1].split()[0]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # A local store: the link is where `rnnflow ui` serves, on the run's own page.
    link = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run_id}?workflowType=machine_learning"
    assert f"(start it with: rnnflow ui): {link}" in result.output
    # How the run is recorded is not a param (the compare page would show it as a difference).
    assert not {"description", "tracking.run_name", "tracking.experiment"} & set(run.data.params)
    assert run.data.params["model.cells.0.units"] and run.info.run_name == "gru_forecast"
    assert run.data.tags["mlflow.note.content"] == load_spec(path).description  # the run's Description


def test_run_cli_bad_override_exits_2(mlflow_store):
    path = next(p for p in SPECS if p.stem == "gru_forecast")
    result = CliRunner().invoke(main, ["run", str(path), "--set", "model.cells[0].units=-1"])
    assert result.exit_code == 2
    assert "--set model.cells[0].units=-1 model.cells[0].units: must be greater than 0" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["run"], ["show"], ["pipeline", "run"]])
def test_spec_errors_are_reported_before_tensorflow_is_imported(tmp_path, command):
    """`run` took 5-13 s to report what `validate` reports in 0.3 s: it imported TensorFlow first."""
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata: {type: sine}\nmodel:\n  cells:\n    - {type: gru, units: -1}\n")
    target = bad
    if command[0] == "pipeline":
        target = tmp_path / "p.yaml"
        target.write_text(f"name: p\nruns:\n  - spec: {bad.as_posix()}\n")
    # sys.modules at exit (-X importtime would not do: rnnflow silences stderr while TensorFlow loads).
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('heavy:', sorted({'tensorflow', 'keras', 'mlflow'} & set(sys.modules))))\n"
             "from rnnflow.cli import main\n"
             "main(sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", probe, *command, str(target)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.cells[0].units: must be greater than 0" in done.stderr
    assert "heavy: []" in done.stdout, done.stdout


def test_show_prints_resolved_spec_and_model(mlflow_store):
    path = next(p for p in SPECS if p.stem == "gru_forecast")
    result = CliRunner().invoke(main, ["show", str(path), "--set", "model.cells[0].units=4"])
    assert result.exit_code == 0, result.output
    assert "units: 4" in result.output and "resolution: 0.1" in result.output
    assert "gru_0 (GRU)" in result.output and "parameters: " in result.output
    assert "cuDNN on a GPU: yes" in result.output


@pytest.mark.parametrize("precision, compute", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_precision_computes_in_half_and_keeps_float32_variables(run_spec, precision, compute):
    path = next(p for p in SPECS if p.stem == "gru_forecast")
    result = run_spec(path, [f"model.precision={precision}", "train.iterations=4"])
    layer = result.built.model.get_layer("gru_0")
    assert layer.compute_dtype == compute and layer.variable_dtype == "float32"
    assert result.built.model.output.dtype == "float32"
    assert np.isfinite(result.metrics["train_loss"]) and np.isfinite(result.metrics["test_loss"])


@pytest.mark.parametrize("override, message", [
    ("model.projection.units=3", "model.projection.units: 3 outputs, but the sine targets need 1"),
    ("model.projection=null", "model.projection: null gives the top layer's 4 outputs, but the sine targets need 1"),
])
def test_outputs_that_do_not_match_the_targets_are_refused(override, message):
    """A (N, T, 3) prediction minus a (N, T, 1) target broadcasts: the loss would be silently wrong."""
    from rnnflow.build import build_model
    from rnnflow.errors import SpecError
    from rnnflow.spec import load_spec

    path = next(p for p in SPECS if p.stem == "gru_forecast")
    spec = load_spec(path, [*shrink(path), "model.cells[0].units=4", override])
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(spec)


def test_model_summary_keeps_the_param_column(monkeypatch):
    """Keras draws the summary with rich, whose console is 80 columns when not a terminal: a table
    drawn wider lost its right-hand column (Param #) in model_summary.txt and `rnnflow show`."""
    from rnnflow.build import build_model, model_summary
    from rnnflow.spec import load_spec

    monkeypatch.delenv("COLUMNS", raising=False)
    path = next(p for p in SPECS if p.stem == "gru_forecast")
    model = build_model(load_spec(path, [*shrink(path), "model.cells[0].units=4"])).model
    text = model_summary(model)
    assert "Param #" in text
    gru_row = next(line for line in text.splitlines() if "gru_0 (GRU)" in line)
    assert gru_row.rstrip("│ ").endswith(f"{model.get_layer('gru_0').count_params():,}")


def test_params_and_timing_metrics(run_spec, client):
    from rnnflow.tracking import flatten

    flat = flatten({"data": {"inputs": [[[0, 1], [2, 3]]]}, "model": {"cells": [{"type": "rnn", "units": 3}]}})
    assert flat == {"data.inputs": "[[[0, 1], [2, 3]]]", "model.cells.0.type": "rnn", "model.cells.0.units": "3"}
    path = next(p for p in SPECS if p.stem == "gru_forecast")
    # (no evaluations during training: chunks of 5 steps throughout)
    result = run_spec(path, ["train.iterations=20", "train.steps_per_execution=5", "train.early_stopping=null",
                             "evaluate.every=null"])
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    # Steady-state time per step leaves out the first call, which traces and compiles.
    assert metrics["first_call_seconds"] > 0 and metrics["train_seconds"] > metrics["first_call_seconds"]
    assert metrics["ms_per_iteration"] > 0
    assert metrics["ms_per_iteration"] < 1000 * (metrics["train_seconds"] - metrics["first_call_seconds"]) / 15
    assert "rnnflow.ms_per_iteration" not in run.data.tags


def test_a_run_of_one_compiled_call_has_no_steady_rate(run_spec, client):
    """One call is all tracing and compiling: its time per step (81 ms for a 0.5 ms step) misled."""
    path = next(p for p in SPECS if p.stem == "gru_forecast")
    result = run_spec(path, ["train.iterations=4", "train.early_stopping=null", "evaluate.every=null"])
    run = client.get_run(result.run_id)
    assert "ms_per_iteration" not in run.data.metrics and run.data.metrics["first_call_seconds"] > 0
    assert run.data.tags["rnnflow.ms_per_iteration"].startswith("not measured: every call of the compiled "
                                                                 "training step (4 iterations in all)")


def test_steady_rate_leaves_out_the_first_call_of_each_chunk_length():
    """Chunks of 5, 5 and 2 steps: the first 5 and the 2 trace (a new length); only the second 5 is steady."""
    from rnnflow.build import build_model
    from rnnflow.data.base import load_data
    from rnnflow.spec import load_spec
    from rnnflow.train import Trainer

    path = next(p for p in SPECS if p.stem == "gru_forecast")
    # No evaluations in between, so the chunks are the plain 5, 5, 2.
    controls = ["evaluate.every=null", "train.early_stopping=null"]
    spec = load_spec(path, [*shrink(path), *controls, "train.iterations=12", "train.steps_per_execution=5"])
    data = load_data(spec)
    result = Trainer(spec, build_model(spec, data), data).run()
    assert (result.first_call_steps, result.steady_steps) == (5, 5)
    assert 0 < result.steady_seconds < result.seconds - result.first_call_seconds
    assert result.ms_per_iteration == pytest.approx(1000 * result.steady_seconds / 5)
