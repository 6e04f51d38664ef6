"""Pipelines and searches on Ray: a two-node local cluster, failing and crashing children, the
scheduler stopping a trial, Ctrl-C, and the same metrics as a run alone.

One Ray session serves the module (a `ray.cluster_utils.Cluster` of two one-CPU nodes on
127.0.0.1); it is always shut down. Ctrl-C runs the CLI in a process of its own, with the local
cluster rnnflow starts itself.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT

from rnnflow.cli import main

GRU = (ROOT / "specs" / "gru_forecast.yaml").as_posix()
# A few seconds per run once TensorFlow is imported: 60 steps, evaluated every 10 on a validation split.
TINY = {"train.iterations": 60, "data.train_windows": 40, "data.eval_windows": 8, "model.cells[0].units": 4,
        "train.batch_size": 10, "train.jit_compile": False, "train.validation": 0.25, "evaluate.every": 10,
        "evaluate.steps": [{"type": "predictions"}], "tracking.log_model": False}
BROKEN = {"evaluate.steps": [{"type": "generate", "seed": "instance", "instance": 9999, "length": 3}]}
GOOD_RATE, BAD_RATE = 0.01, 1e-9  # a rate that learns, and one that leaves the weights where they started


def dump(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def children_of(client, parent_id: str) -> dict:
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def parent_id_of(output: str) -> str:
    return output.split("parent run id: ")[1].split()[0]


def listening_addresses(pids: set[int]) -> set[str]:
    """The addresses the given processes listen on (TCP)."""
    import psutil

    return {c.laddr.ip for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def descendants(pid: int) -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process(pid).children(recursive=True)}


@pytest.fixture(scope="module")
def cluster(mlflow_store):
    """Two one-CPU Ray nodes on 127.0.0.1 and this process connected to them; yields the address."""
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                             "RAY_TMPDIR")}
    # Short: Ray's socket paths under it must stay below 107 characters.
    temp = tempfile.mkdtemp(prefix="rr", dir="/tmp")
    os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                       "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_TMPDIR": temp})
    from ray.cluster_utils import Cluster

    from rnnflow.executors import RayExecutor

    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    # Connected the way `--address` connects, once for the module: the workers stay warm between tests.
    session = RayExecutor(head.address)
    try:
        head.add_node(num_cpus=1)
        head.wait_for_nodes()
        session.__enter__()
        yield head.address
    finally:
        session.__exit__()
        head.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_pipeline(cluster, tmp_path_factory, client):
    """A pipeline of two good children and a failing one, run on the cluster through the CLI."""
    tmp = tmp_path_factory.mktemp("ray-pipeline")
    path = dump(tmp, {"name": "on-ray", "experiment": "exp-ray", "set": {**TINY, "seed": 5},
                      "resources": {"cpus": 1},
                      "runs": [{"spec": GRU, "grid": {"model.cells[0].type": ["rnn", "gru"]}},
                               {"spec": GRU, "name": "broken", "set": BROKEN}]})
    result = CliRunner().invoke(main, ["pipeline", "run", str(path), "-q", "--executor", "ray",
                                       "--address", cluster])
    return result, children_of(client, parent_id_of(result.output)), path


def test_ray_pipeline_records_a_failing_child_and_goes_on(ray_pipeline, client):
    result, children, _ = ray_pipeline
    assert result.exit_code == 1, result.output
    assert "1 of 3 run(s) failed" in result.output
    assert {name: run.info.status for name, run in children.items()} == {
        "gru_forecast[type=rnn]": "FINISHED", "gru_forecast[type=gru]": "FINISHED", "broken": "FAILED"}
    assert "instance 9999 does not exist" in children["broken"].data.tags["rnnflow.error"]
    for run in children.values():
        assert run.data.tags["rnnflow.executor"] == "ray" and run.data.tags["rnnflow.tf_threads"] == "1"
    parent = client.get_run(parent_id_of(result.output))
    assert parent.info.status == "FAILED" and parent.data.tags["rnnflow.executor"] == "ray"
    # The same summary and overlays as a serial pipeline.
    assert {"summary.csv", "loss_curves.png", "forecasts.png", "pipeline"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.metrics["runs_finished"] == 2 and parent.data.metrics["runs_failed"] == 1


def test_children_land_on_both_nodes(ray_pipeline):
    import ray

    _, children, _ = ray_pipeline
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    used = {run.data.tags["rnnflow.ray.node_id"] for run in children.values()}
    assert len(nodes) == 2 and used == nodes


def test_the_cluster_listens_on_loopback_only(cluster):
    addresses = listening_addresses(descendants(os.getpid()))
    assert addresses and all(loopback(a) for a in addresses), addresses


def test_a_child_on_ray_has_the_metrics_of_the_spec_run_alone(ray_pipeline, mlflow_store, client, tmp_path):
    """The same spec, run alone by `rnnflow run` with TensorFlow on one thread as on Ray."""
    _, children, _ = ray_pipeline
    child = children["gru_forecast[type=gru]"]
    overrides = Path(client.download_artifacts(child.info.run_id, "spec/overrides.txt", str(tmp_path))).read_text()
    sets = [f"--set={o}" for o in overrides.splitlines()]
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    done = subprocess.run([sys.executable, "-m", "rnnflow", "run", GRU, "-q", *sets,
                           "--set=tracking.experiment=exp-alone"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    alone = client.get_run(done.stdout.split("run id: ")[1].split()[0]).data.metrics
    compared = [k for k in child.data.metrics if k.startswith(("train_", "val_", "test_")) and k != "train_seconds"]
    assert len(compared) >= 9
    assert {k: child.data.metrics[k] for k in compared} == {k: alone[k] for k in compared}


def search_pipeline(tmp_path: Path, name: str, seed: int) -> Path:
    """A search of four trials over a good and a useless learning rate; `seed` makes the useless
    one come exactly once, third or fourth (after a good trial has reported at every evaluation)."""
    return dump(tmp_path, {"name": name, "experiment": f"exp-{name}", "set": {**TINY, "seed": 3},
                           "runs": [{"spec": GRU, "name": "trial", "search": {
                               "space": {"train.learning_rate": {"type": "choice", "values": [GOOD_RATE, BAD_RATE]}},
                               "metric": "val_loss", "mode": "min", "num_samples": 4, "algorithm": "random",
                               "seed": seed, "scheduler": {"type": "asha", "min_resource": 1,
                                                           "reduction_factor": 2}}}]})


def one_useless_trial_late() -> int:
    """A search seed whose four random trials are good, good, then one good and one useless."""
    from rnnflow.search import Study
    from rnnflow.spec.search import SearchSpec

    for seed in range(200):
        study = Study(SearchSpec(space={"train.learning_rate": {"type": "choice", "values": [GOOD_RATE, BAD_RATE]}},
                                 metric="val_loss", mode="min", num_samples=4, algorithm="random", seed=seed))
        rates = [study.ask()[1]["train.learning_rate"] for _ in range(4)]
        if rates[:2] == [GOOD_RATE] * 2 and sorted(rates[2:]) == [BAD_RATE, GOOD_RATE]:
            return seed
    raise AssertionError("no seed gives that order")


def check_search(client, output: str, bad_trial_stops: bool = True) -> dict:
    parent_id = parent_id_of(output)
    parent = client.get_run(parent_id)
    trials = children_of(client, parent_id)
    assert len(trials) == 4
    stopped = {n for n, r in trials.items() if r.info.status == "KILLED"}
    assert len(stopped) == 1, {n: r.info.status for n, r in trials.items()}
    (name,) = stopped
    run = trials[name]
    assert run.data.tags["rnnflow.stopped_by"] == "scheduler"
    assert run.data.tags["rnnflow.search.param.train.learning_rate"] == json.dumps(BAD_RATE)
    assert int(run.data.tags["rnnflow.stopped_at"]) < 60 and "test_loss" not in run.data.metrics
    finished = {n: r for n, r in trials.items() if n not in stopped}
    assert all(r.info.status == "FINISHED" for r in finished.values())
    lowest = min(r.data.metrics["val_loss"] for r in finished.values())
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert (tags["rnnflow.search.metric"], tags["rnnflow.search.mode"]) == ("val_loss", "min")
    (best,) = [r for r in finished.values() if r.info.run_id == tags["rnnflow.search.best_run_id"]]
    assert best.data.metrics["val_loss"] == lowest == parent.data.metrics["best_val_loss"]
    assert tags["rnnflow.search.best_trial"] == best.info.run_name
    assert parent.data.params["best.train.learning_rate"] == json.dumps(GOOD_RATE)
    assert parent.data.metrics["trials_stopped"] == 1 and parent.data.metrics["runs_failed"] == 0
    return trials


def test_search_on_ray_stops_the_useless_trial(cluster, tmp_path, client):
    path = search_pipeline(tmp_path, "search-ray", one_useless_trial_late())
    result = CliRunner().invoke(main, ["pipeline", "run", str(path), "-q", "--executor", "ray", "--address", cluster])
    assert result.exit_code == 0, result.output
    trials = check_search(client, result.output)
    assert {r.data.tags["rnnflow.executor"] for r in trials.values()} == {"ray"}


def test_search_serially_stops_the_useless_trial(tmp_path, mlflow_store, client):
    import mlflow

    # Another experiment active in this process (an earlier run's) must not stop the children's runs.
    mlflow.set_experiment("elsewhere")
    path = search_pipeline(tmp_path, "search-serial", one_useless_trial_late())
    result = CliRunner().invoke(main, ["pipeline", "run", str(path), "-q"])
    assert result.exit_code == 0, result.output
    assert "best trial: trial[trial=" in result.output
    check_search(client, result.output)


def test_a_crashed_worker_is_recorded_failed(cluster, tmp_path, client):
    """A child whose Ray worker dies (killed here) is ended FAILED by the driver, with the reason."""
    from rnnflow.pipeline import run_pipeline

    path = dump(tmp_path, {"name": "crash", "experiment": "exp-crash",
                           "set": {**TINY, "train.iterations": 1_000_000, "evaluate.every": None,
                                   "train.early_stopping": None},
                           "runs": [{"spec": GRU}]})
    outcome: dict = {}
    driver = threading.Thread(target=lambda: outcome.update(result=run_pipeline(
        path, echo=lambda line: None, executor="ray", address=cluster)))
    driver.start()
    experiment = None
    deadline = time.time() + 180
    while time.time() < deadline and driver.is_alive():  # a driver that ended already fails below
        experiment = experiment or client.get_experiment_by_name("exp-crash")
        running = [r for r in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
                   if "rnnflow.pid" in r.data.tags] if experiment else []
        if running:
            os.kill(int(running[0].data.tags["rnnflow.pid"]), signal.SIGKILL)
            break
        time.sleep(0.5)
    driver.join(timeout=120)
    assert not driver.is_alive() and running
    (child,) = outcome["result"].children
    run = client.get_run(child.run_id)
    assert run.info.status == "FAILED" and child.status == "FAILED"
    assert "WorkerCrashedError" in run.data.tags["rnnflow.error"]
    assert client.get_run(outcome["result"].parent_run_id).info.status == "FAILED"


def test_ctrl_c_kills_running_and_queued_children(tmp_path, mlflow_store, client):
    """SIGINT to the CLI's process group (as a terminal sends): no run stays RUNNING or SCHEDULED,
    nothing of Ray is left, and nothing was written to ~/.ray."""
    path = dump(tmp_path, {"name": "interrupted", "experiment": "exp-ctrl-c",
                           "set": {**TINY, "train.iterations": 1_000_000, "evaluate.every": None,
                                   "train.early_stopping": None},
                           "runs": [{"spec": GRU, "grid": {"seed": [1, 2, 3]}}]})
    env, home, ray_tmp = _own_cluster_env(tmp_path, mlflow_store)
    process = subprocess.Popen([sys.executable, "-m", "rnnflow", "pipeline", "run", str(path), "-q",
                                "--executor", "ray"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        running = []
        while time.time() < deadline and process.poll() is None:
            experiment = client.get_experiment_by_name("exp-ctrl-c")
            running = [r for r in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
                       if "rnnflow.pid" in r.data.tags] if experiment else []
            if running:
                break
            time.sleep(0.5)
        assert running, process.communicate(timeout=60)[0]
        addresses = listening_addresses(descendants(process.pid))
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, output
    assert "interrupted: 3 child runs and the parent run" in output and "Traceback" not in output
    assert addresses and all(loopback(a) for a in addresses), addresses
    experiment = client.get_experiment_by_name("exp-ctrl-c")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"KILLED"}
    assert not (home / ".ray").exists()
    deadline = time.time() + 30
    while time.time() < deadline and _processes_using(ray_tmp):
        time.sleep(0.5)
    assert not _processes_using(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_local_cluster_is_gone_when_the_pipeline_ends(tmp_path, mlflow_store, client):
    """The cluster rnnflow starts for a pipeline stops with it (its autoscaler monitor, which rnnflow
    kills itself, included): when the command has returned, no process of that Ray session is left."""
    path = dump(tmp_path, {"name": "own-cluster", "experiment": "exp-own-cluster", "set": TINY,
                           "runs": [{"spec": GRU, "grid": {"seed": [1, 2]}}]})
    env, home, ray_tmp = _own_cluster_env(tmp_path, mlflow_store)
    done = subprocess.run([sys.executable, "-m", "rnnflow", "pipeline", "run", str(path), "-q", "--executor", "ray"],
                          env=env, capture_output=True, text=True, timeout=300)
    left = _processes_using(ray_tmp, kill=True)  # killed: never left to the rest of the session
    assert done.returncode == 0, done.stdout + done.stderr
    runs = client.search_runs([client.get_experiment_by_name("exp-own-cluster").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert not left
    assert not (home / ".ray").exists()
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _own_cluster_env(tmp_path: Path, mlflow_store: str) -> tuple[dict[str, str], Path, str]:
    """The environment of a CLI process that starts its own local Ray cluster: no RAY_ settings of
    this session, a HOME of its own and a short RAY_TMPDIR (whose name its Ray processes carry)."""
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"HOME": str(home), "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store})
    return env, home, ray_tmp


def _processes_using(folder: str, kill: bool = False) -> list[str]:
    """Processes whose command line names `folder` (Ray's session processes do); `kill`: kill them too."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(folder in part for part in process.info["cmdline"] or []):
                found.append(" ".join(process.info["cmdline"]))
                if kill:
                    process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_search_on_test_metrics_is_refused(tmp_path):
    path = dump(tmp_path, {"name": "peeking", "runs": [{"spec": GRU, "set": TINY, "search": {
        "space": {"train.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        "metric": "test_loss", "mode": "min", "num_samples": 2}}]})
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "runs[0].search.metric: the test split is only ever reported, it never chooses anything" in result.output


def test_the_space_types_and_tpe_draw_within_the_space():
    """uniform, loguniform, int (with step) and choice under TPE: values in their space, the same
    values for the same seed, and TPE (after its random start-up trials) drawing near the best."""
    from rnnflow.search import Study
    from rnnflow.spec.search import SearchSpec

    space = {"train.dropout": {"type": "uniform", "low": 0.1, "high": 0.5},
             "train.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
             "model.cells[0].units": {"type": "int", "low": 16, "high": 128, "step": 16},
             "model.cells[0].type": {"type": "choice", "values": ["gru", "lstm", [1, 2]]}}

    def draws(seed: int) -> list[dict]:
        import math

        study = Study(SearchSpec(space=space, metric="val_loss", mode="min", num_samples=30, algorithm="tpe",
                                 seed=seed))
        seen = []
        for _ in range(30):
            number, values = study.ask()
            seen.append(values)
            study.tell(number, "complete", abs(math.log10(values["train.learning_rate"]) + 2))  # best at 0.01
        return seen

    seen = draws(7)
    for values in seen:
        assert 0.1 <= values["train.dropout"] <= 0.5 and 1e-4 <= values["train.learning_rate"] <= 1e-1
        assert values["model.cells[0].units"] in range(16, 129, 16)
        assert values["model.cells[0].type"] in ("gru", "lstm", [1, 2])
    assert draws(7) == seen
    import math

    distance = [abs(math.log10(v["train.learning_rate"]) + 2) for v in seen]
    assert sum(distance[-10:]) < sum(distance[:10]) / 2  # the first 10 are TPE's random start-up


def test_a_space_the_spec_refuses_is_a_spec_error(tmp_path):
    path = dump(tmp_path, {"name": "too-small", "runs": [{"spec": GRU, "set": TINY, "search": {
        "space": {"model.cells[0].units": {"type": "int", "low": 0, "high": 16}},
        "metric": "val_loss", "mode": "min", "num_samples": 2}}]})
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "model.cells[0].units: must be greater than 0 (got 0) (run gru_forecast[units=0]" in result.output


def test_resources_per_entry_and_for_all(tmp_path, mlflow_store):
    """An entry's resources replace the pipeline's; one process (serial) cannot pin two thread settings."""
    from rnnflow.spec.pipeline import load_plan

    body = {"name": "sizes", "experiment": "exp-sizes", "set": TINY, "resources": {"cpus": 1},
            "runs": [{"spec": GRU}, {"spec": GRU, "name": "wide", "resources": {"cpus": 2, "gpus": 0}}]}
    plan = load_plan(dump(tmp_path, body))
    assert [(c.name, c.resources.cpus) for c in plan.children] == [("gru_forecast", 1), ("wide", 2)]
    result = CliRunner().invoke(main, ["pipeline", "run", str(dump(tmp_path, body)), "-q"])
    assert result.exit_code == 1
    assert "the runs ask for 1 and 2 CPUs (resources.cpus): make them the same, or use --executor ray" in \
        result.output
