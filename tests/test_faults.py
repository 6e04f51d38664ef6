"""Faults while running: NaN losses, Ctrl-C and resume, bad data files.

That no fault leaves a run RUNNING is checked after every test that uses the store
(`no_run_left_running` in conftest.py).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, shrink, write_tiny_mnist

from rnnflow.cli import main
from rnnflow.errors import DataError, SpecError, TrainingError

GRU = ROOT / "specs" / "gru_forecast.yaml"
MNIST = ROOT / "specs" / "mnist_classifier.yaml"


@pytest.fixture(scope="module")
def runner_api(mlflow_store):
    from rnnflow.runner import run

    return run


def logged_models(client, run_id: str) -> list:
    run = client.get_run(run_id)
    return client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")


def test_nan_loss_fails_the_run_at_its_iteration(runner_api, client):
    overrides = [*shrink(GRU), "train.optimizer=sgd", "train.learning_rate=90", "train.iterations=60",
                 "train.schedule={type: constant}",
                 "train.log_every=1", "tracking.experiment=faults"]
    with pytest.raises(TrainingError, match=r"the loss became (nan|inf) at iteration (\d+)") as info:
        runner_api(GRU, overrides)
    iteration = int(info.value.args[0].split("at iteration ")[1].split(";")[0])
    run_id = info.value.rnnflow_run_id
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert f"at iteration {iteration}" in run.data.tags["rnnflow.error"]
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps and max(steps) < iteration  # nothing logged from the bad step on
    assert logged_models(client, run_id) == []
    assert "test_loss" not in run.data.metrics


class InterruptAt(keras.callbacks.Callback):
    """Sends Ctrl-C (SIGINT) to this process when training reaches `iteration`."""

    def __init__(self, iteration: int):
        super().__init__()
        self.iteration = iteration

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.iteration:
            os.kill(os.getpid(), signal.SIGINT)


RESUMABLE = ["train.iterations=12", "train.log_every=1", "train.steps_per_execution=1",
             "data.train_windows=40", "data.eval_windows=8", "model.cells[0].units=6",
             "train.batch_size=8", "evaluate.steps=[{type: predictions}]", "tracking.experiment=faults"]


def test_ctrl_c_checkpoints_and_resume_reaches_the_same_metrics(runner_api, client, tmp_path):
    from rnnflow.runner import RunInterrupted

    reference = runner_api(GRU, RESUMABLE)
    with pytest.raises(RunInterrupted) as info:
        runner_api(GRU, RESUMABLE, callbacks=[InterruptAt(5)])
    run_id = info.value.run_id
    assert info.value.iteration == 5
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["rnnflow.interrupted_at"] == "5" and "rnnflow.error" not in run.data.tags
    assert {a.path for a in client.list_artifacts(run_id, "checkpoint")} == {"checkpoint/state.npz",
                                                                             "checkpoint/meta.json"}
    result = CliRunner().invoke(main, ["run", "--resume", run_id, "-q"])
    assert result.exit_code == 0, result.output
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["rnnflow.resumed_from"] == "5" and "rnnflow.error" not in resumed.data.tags
    final = {k: v for k, v in resumed.data.metrics.items() if k.startswith(("train_", "val_", "test_"))
             and k != "train_seconds"}
    expected = {k: reference.metrics[k] for k in final}
    assert final == expected
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps == list(range(1, 13))
    # A finished run cannot be resumed again.
    again = CliRunner().invoke(main, ["run", "--resume", run_id])
    assert again.exit_code == 1 and "already FINISHED" in again.output


def test_second_ctrl_c_stops_at_once_and_records_killed(runner_api, client):
    class DoubleInterrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt) as info:
        runner_api(GRU, RESUMABLE, callbacks=[DoubleInterrupt()])
    assert client.get_run(info.value.rnnflow_run_id).info.status == "KILLED"


def test_resume_of_unknown_run_is_a_clear_error(mlflow_store):
    result = CliRunner().invoke(main, ["run", "--resume", "0123456789abcdef0123456789abcdef"])
    assert result.exit_code == 1 and "cannot resume" in result.output


# --- data files ---


def mnist_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "specs" / "m.yaml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text(MNIST.read_text())
    return spec


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: None, "{path}: file not found (data.path in the spec)"),
        (lambda p: p.write_bytes(os.urandom(300)), "{path}: not a readable .npz file"),
        (lambda p: np.savez(p, x_train=np.zeros((5, 28, 27), np.uint8), y_train=np.zeros(5, np.uint8),
                            x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2, np.uint8)),
         "{path}: x_train has shape (5, 28, 27); expected x_train (N, 28, 28) uint8"),
        (lambda p: np.savez(p, x_train=np.zeros((5, 28, 28), np.uint8)), "{path}: missing y_train, x_test, y_test"),
        (lambda p: np.savez(p, x_train=np.zeros((5, 28, 28), np.uint8), y_train=np.full(5, 12, np.uint8),
                            x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2, np.uint8)),
         "{path}: y_train has labels outside 0-9"),
    ],
    ids=["missing", "corrupt", "wrong-shape", "missing-keys", "bad-labels"],
)
def test_bad_data_file_names_the_file_and_what_was_expected(tmp_path, mlflow_store, client, make, expected):
    data = tmp_path / "digits.npz"
    make(data)
    spec = mnist_spec(tmp_path)
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    result = CliRunner().invoke(main, ["run", str(spec), "--set", f"data.path={data}", "--set", "train.epochs=1"])
    assert result.exit_code == 1
    assert expected.format(path=data) in result.output, result.output
    assert "Traceback" not in result.output
    after = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    assert after == before  # nothing recorded for a run that never started


def test_mnist_lookup_order_and_offline_message(tmp_path, monkeypatch):
    from rnnflow.data import mnist

    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    local = write_tiny_mnist(spec_dir / "local.npz")
    from_env = write_tiny_mnist(tmp_path / "env.npz")
    cache = tmp_path / "keras" / "datasets" / "mnist.npz"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv(mnist.ENV_VAR, str(from_env))
    assert mnist.find_mnist("local.npz", spec_dir) == local  # relative to the spec file
    assert mnist.find_mnist(None, spec_dir) == from_env
    monkeypatch.delenv(mnist.ENV_VAR)
    cache.parent.mkdir(parents=True)
    write_tiny_mnist(cache)
    assert mnist.find_mnist(None, spec_dir) == cache
    cache.unlink()
    monkeypatch.setattr(mnist, "_URL", "http://127.0.0.1:9/mnist.npz")  # nothing listens there
    with pytest.raises(DataError) as info:
        mnist.find_mnist(None, spec_dir)
    message = str(info.value)
    assert str(cache) in message and mnist.ENV_VAR in message and "data.path" in message
    assert not cache.exists() and not cache.with_suffix(".npz.part").exists()


# --- security ---


def test_specs_are_data_never_code(tmp_path):
    from rnnflow.spec import spec_from_text

    base = GRU.read_text()
    for bad in ("function: __import__('os').system('x')", "function: np.exp"):
        with pytest.raises(SpecError, match="data.function: must be one of"):
            spec_from_text(base.replace("function: sine_mix", bad))
    with pytest.raises(SpecError, match="model.cells\\[0\\].activation: must be one of"):
        spec_from_text(base.replace("activation: tanh", "activation: os.system"))


def test_artifact_names_cannot_escape(tmp_path):
    from rnnflow.runner import _safe_file_name
    from rnnflow.spec import spec_from_text

    text = GRU.read_text().replace("    - type: predictions\n", "    - type: predictions\n      name: ../../evil\n")
    with pytest.raises(SpecError, match=r"evaluate.steps\[0\].name: '../../evil' is not allowed here"):
        spec_from_text(text)
    assert _safe_file_name("../../etc/passwd") == "passwd"
    assert _safe_file_name("..") == "spec.yaml"
    assert "/" not in _safe_file_name("a/b c.yaml")


def test_strict_device_fails_before_any_run(mlflow_store, client):
    result = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "multi_device.yaml"),
                                       "--set", "model.cells[0].wrappers[0].strict=true",
                                       "--set", "tracking.experiment=faults-strict"])
    assert result.exit_code == 1
    assert "device /gpu:0 for layer rnn_0 does not exist (strict: true)" in result.output
    assert client.get_experiment_by_name("faults-strict") is None


def test_predict_prints_only_its_own_error(tmp_path):
    """TensorFlow's C++ start-up notes (CUDA probing) must not reach the user: `rnnflow predict`
    imported mlflow.keras, and so TensorFlow, before rnnflow's quiet import."""
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = subprocess.run([sys.executable, "-m", "rnnflow", "predict", "--run", "0123456789abcdef0123456789abcdef"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "rnnflow: error: cannot load the model of run 0123456789abcdef0123456789abcdef: "
        "Run with id=0123456789abcdef0123456789abcdef not found"], out.stderr


def test_a_failure_while_logging_the_spec_ends_the_run_failed(runner_api, client, monkeypatch):
    """The store refuses the params after the run has started: the run must end FAILED, not stay
    RUNNING (MLflow's exit handler would later mark it FINISHED)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from rnnflow.tracking import Tracker

    def refuse(self, params):
        raise MlflowException("the store refused a param")

    monkeypatch.setattr(Tracker, "log_params", refuse)
    spec = ROOT / "specs" / "basic_rnn.yaml"
    with pytest.raises(MlflowException) as info:
        runner_api(spec, ["tracking.experiment=faults-params"])
    assert mlflow.active_run() is None
    run = client.get_run(info.value.rnnflow_run_id)
    assert run.info.status == "FAILED"
    assert "the store refused a param" in run.data.tags["rnnflow.error"]


def test_tag_names_mlflow_refuses_are_spec_errors():
    from rnnflow.spec import spec_from_text

    with pytest.raises(SpecError, match=r"tracking.tags.x!: a tag name holds letters"):
        spec_from_text((ROOT / "specs" / "basic_rnn.yaml").read_text(), overrides=['tracking.tags={"x!": "1"}'])


def _run_with(monkeypatch, callback):
    """`rnnflow run` trains with one more Keras callback (what a user's Ctrl-C would hit)."""
    import functools

    import rnnflow.runner

    monkeypatch.setattr(rnnflow.runner, "run", functools.partial(rnnflow.runner.run, callbacks=[callback]))


def _load_spec_raises(monkeypatch, error):
    import rnnflow.runner

    def load_spec(*args, **kwargs):
        raise error

    monkeypatch.setattr(rnnflow.runner, "load_spec", load_spec)


def _sets(overrides: list[str]) -> list[str]:
    return [f"--set={o}" for o in overrides]


NAN = [*shrink(GRU), "train.optimizer=sgd", "train.learning_rate=90", "train.iterations=60",
       "train.schedule={type: constant}", "tracking.experiment=faults"]
EXIT_CASES = {
    # name: (what to arrange with monkeypatch, `rnnflow run` arguments, exit code, message)
    "SpecError": (None, [GRU, "--set", "model.cells[0].units=-3"], 2,
                  "--set model.cells[0].units=-3 model.cells[0].units: must be greater than 0 (got -3)"),
    "UsageError": (None, [], 2, "give a SPEC_FILE, or --resume RUN_ID"),
    "DataError": (None, [MNIST, "--set", "data.path={tmp}/none.npz"], 1, "none.npz: file not found (data.path in the spec)"),
    "TrainingError": (None, [GRU, "-q", *_sets(NAN)], 1, "rnnflow: error: the loss became"),
    "RunInterrupted": (lambda mp: _run_with(mp, InterruptAt(2)), [GRU, "-q", *_sets(RESUMABLE)], 130,
                       "recorded as KILLED with a checkpoint (continue it with: rnnflow run --resume "),
    "KeyboardInterrupt": (lambda mp: _load_spec_raises(mp, KeyboardInterrupt()), [GRU], 130, "rnnflow: interrupted"),
    "internal error": (lambda mp: _load_spec_raises(mp, ZeroDivisionError("a bug")), [GRU], 1,
                       "rnnflow: internal error: ZeroDivisionError: a bug (rerun with rnnflow --debug"),
}


@pytest.mark.parametrize("case", list(EXIT_CASES))
def test_cli_exit_codes(case, mlflow_store, monkeypatch, tmp_path):
    """What `rnnflow run` exits with for each kind of failure, and its one-line message."""
    arrange, args, code, message = EXIT_CASES[case]
    if arrange is not None:
        arrange(monkeypatch)
    result = CliRunner().invoke(main, ["run", *(str(a).replace("{tmp}", str(tmp_path)) for a in args)])
    assert (result.exit_code, message in result.output) == (code, True), result.output
    assert "Traceback" not in result.output


def test_empty_override_value_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(GRU), "--set", "train="])
    assert result.exit_code == 2
    assert "--set train= train: no value after '='; write null to clear a key" in result.output
    assert CliRunner().invoke(main, ["validate", str(GRU), "--set", "train=null"]).exit_code == 0


def test_a_recorded_run_resolves_relative_paths_from_its_spec_file(tmp_path, client, monkeypatch):
    """predict (and resume) rebuild the spec from the run: data.path stays relative to the spec file."""
    spec_dir = tmp_path / "experiment"
    spec_dir.mkdir()
    write_tiny_mnist(spec_dir / "digits.npz")
    spec = spec_dir / "m.yaml"
    spec.write_text(MNIST.read_text().replace("  type: mnist\n", "  type: mnist\n  path: digits.npz\n"))
    overrides = ["train.epochs=1", "data.train_limit=60", "data.eval_limit=20", "train.validation=10",
                 "model.cells[0].units=4",
                 "tracking.experiment=faults"]
    result = CliRunner().invoke(main, ["run", str(spec), "-q", *[f"--set={o}" for o in overrides]])
    assert result.exit_code == 0, result.output
    run_id = result.output.split("run id: ")[1].split()[0]
    assert client.get_run(run_id).info.status == "FINISHED"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    predicted = CliRunner().invoke(main, ["predict", "--run", run_id])
    assert predicted.exit_code == 0, predicted.output
    # A short summary of classes and probabilities, not a dump of logits.
    lines = predicted.output.splitlines()
    assert lines[0] == "the class of 20 sequence(s) from the run's test inputs; outputs (20, 10)"
    assert lines[1].split()[:3] == ["sequence", "class", "probability"] and len(lines) == 13
    assert len(predicted.output) < 2000
