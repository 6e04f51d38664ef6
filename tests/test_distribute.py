"""One run on several devices or workers: MirroredStrategy on two logical CPUs, a two-process
multi-worker run, a worker that dies, and the combinations refused up front.

Logical devices and a multi-worker cluster must be set up before TensorFlow starts, so those
runs go through the CLI in processes of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import ROOT

from rnnflow.cli import main
from rnnflow.errors import SpecError

GRU = ROOT / "specs" / "gru_forecast.yaml"
TINY = ["train.iterations=40", "data.train_windows=40", "data.eval_windows=8", "model.cells[0].units=4",
        "train.batch_size=10", "evaluate.steps=[{type: predictions}]", "tracking.log_model=false",
        "train.validation=0.25", "evaluate.every=20",
        # Plain SGD: Adam would not notice gradients scaled wrongly (it divides by their size).
        "train.optimizer=sgd", "train.learning_rate=0.02"]
# What multi_worker refuses (each worker would decide alone when to stop); XLA stays on, as the spec has it.
NO_STOPPING = ["train.early_stopping=null"]
COMPARED = ("train_loss", "train_mae", "val_loss", "val_mae", "test_loss", "test_mae")


def cli(args: list[str], store: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": store}
    return subprocess.run([sys.executable, "-m", "rnnflow", *args], env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


def run_id_of(output: str) -> str:
    return output.split("run id: ")[-1].split()[0]


@pytest.fixture(scope="module")
def one_device(mlflow_store):
    """The reference: the same specs on one device: as the spec has it (XLA, early stopping with
    the best weights restored), and as multi_worker takes it (no early stopping)."""
    from rnnflow.runner import run

    return {"spec": run(GRU, [*TINY, "tracking.experiment=one-device"]).metrics,
            "no_stopping": run(GRU, [*TINY, *NO_STOPPING, "tracking.experiment=one-device"]).metrics}


def assert_learns_like_one_device(metrics: dict, reference: dict) -> None:
    for name in COMPARED:
        assert metrics[name] == pytest.approx(reference[name], rel=1e-4), name


def test_mirrored_on_two_logical_cpus_with_xla(one_device, mlflow_store, client):
    """XLA compiles each replica's forward and backward pass; the update runs outside it. The
    spec's controls (validation, one-cycle schedule, early stopping restoring the best weights)
    train as on one device."""
    done = cli(["run", str(GRU), "-q", *[f"--set={o}" for o in TINY], "--set=tracking.experiment=mirrored",
                "--set=train.distribute={strategy: mirrored, cpu_devices: 2}"], mlflow_store)
    assert done.returncode == 0, done.stderr
    run = client.get_run(run_id_of(done.stdout))
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert (tags["rnnflow.distribute.strategy"], tags["rnnflow.distribute.replicas"]) == ("mirrored", "2")
    digests = tags["rnnflow.distribute.weight_digests"].split(",")
    assert len(digests) == 2 and digests[0] == digests[1] and tags["rnnflow.distribute.weights_in_sync"] == "true"
    assert run.data.params["train.jit_compile"] == "True"
    assert run.data.params["train.early_stopping.restore_best"] == "True"
    assert run.data.params["train.schedule.type"] == "one_cycle"
    assert tags["rnnflow.stop_reason"] == "completed" and "best_val_loss" in run.data.metrics
    assert_learns_like_one_device(run.data.metrics, one_device["spec"])


def test_two_workers_end_with_the_same_weights_and_one_run(one_device, mlflow_store, client):
    """Under XLA too: each worker compiles its replica's pass on its own device (MultiWorkerMirrored's
    replica context cannot name it on the second worker)."""
    done = cli(["run", str(GRU), "-q", "--workers", "2", *[f"--set={o}" for o in TINY],
                *[f"--set={o}" for o in NO_STOPPING], "--set=tracking.experiment=two-workers"], mlflow_store)
    assert done.returncode == 0, done.stdout + done.stderr
    experiment = client.get_experiment_by_name("two-workers")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == run_id_of(done.stdout) and run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["rnnflow.distribute.strategy"], tags["rnnflow.distribute.replicas"]) == ("multi_worker", "2")
    digests = tags["rnnflow.distribute.weight_digests"].split(",")
    assert len(digests) == 2 and digests[0] == digests[1] and tags["rnnflow.distribute.weights_in_sync"] == "true"
    assert "predictions.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.params["train.jit_compile"] == "True"
    assert_learns_like_one_device(run.data.metrics, one_device["no_stopping"])


def test_a_dead_worker_stops_the_others_and_fails_the_run(mlflow_store, client, tmp_path):
    import psutil

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    launcher = subprocess.Popen([sys.executable, "-m", "rnnflow", "run", str(GRU), "-q", "--workers", "2",
                                 *[f"--set={o}" for o in [*TINY, *NO_STOPPING]], "--set=train.iterations=1000000",
                                 "--set=tracking.experiment=dead-worker"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        first = launcher.stdout.readline()
        assert "2 workers on 127.0.0.1:" in first, first + launcher.stdout.read()
        workers = psutil.Process(launcher.pid).children()
        assert len(workers) == 2
        second = next(w for w in workers if '"index": 1' in w.environ().get("TF_CONFIG", ""))
        second.kill()
        output = launcher.communicate(timeout=120)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 1, output
    assert "worker 1 exited with code -9" in output and "Traceback" not in output
    deadline = time.time() + 10
    while time.time() < deadline and any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
        time.sleep(0.2)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    (run,) = client.search_runs([client.get_experiment_by_name("dead-worker").experiment_id])
    assert run.info.status == "FAILED" and "worker 1 exited with code -9" in run.data.tags["rnnflow.error"]


@pytest.mark.parametrize("distribute, extra, message", [
    ("{strategy: mirrored, cpu_devices: 3}", [], "10 sequences do not split evenly over the 3 replicas"),
    ("{strategy: multi_worker, devices: [/gpu:0]}", [], "devices: only for strategy: mirrored"),
    ("{strategy: mirrored}", ["model.precision=mixed_float16"], "mixed_float16 needs Keras' loss-scaling optimizer"),
    ("{strategy: mirrored}", ["model.cells[0].wrappers=[{type: device, device: /cpu:0}]"],
     "places its layers with a device wrapper"),
    ("{strategy: multi_worker}", [], "train.early_stopping: early stopping is not available under strategy "
     r"multi_worker: every worker would decide alone.*leave it out \(--set train.early_stopping=null\)"),
    ("{strategy: multi_worker}", ["train.early_stopping=null", "train.max_minutes=5"],
     "train.max_minutes: the time budget is not available under strategy multi_worker"),
    ("{strategy: multi_worker}", ["train.early_stopping=null", "train.schedule={type: plateau}"],
     "train.schedule.type: plateau is not available under strategy multi_worker"),
])
def test_combinations_that_cannot_work_are_spec_errors(distribute, extra, message):
    from rnnflow.spec import load_spec

    with pytest.raises(SpecError, match=message):
        load_spec(GRU, [*TINY, f"train.distribute={distribute}", *extra])


def test_show_states_the_batches_and_the_learning_rate_rule():
    result = CliRunner().invoke(main, ["show", str(GRU), *[f"--set={o}" for o in TINY],
                                       "--set=train.distribute={strategy: mirrored, cpu_devices: 2}"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "distribute: mirrored (MirroredStrategy) over 2 device(s): CPU:0, CPU:1" in out
    assert "batch: 10 sequences per step in all (train.batch_size, the global batch), 5 on each of the 2 replicas" in out
    assert "learning rate: train.learning_rate as given" in out
    assert "XLA: on for each replica's forward and backward pass; the optimizer's step" in out


def test_workers_refuse_a_mirrored_spec(mlflow_store):
    result = CliRunner().invoke(main, ["run", str(GRU), "--workers", "2",
                                       "--set=train.distribute={strategy: mirrored}"])
    assert result.exit_code == 1
    assert "--workers starts a multi_worker run, and the spec asks for train.distribute.strategy: mirrored" in \
        result.output

