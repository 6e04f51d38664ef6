"""What a run records about itself in MLflow: provenance tags, metrics linked to the model, a
model that serves, and a tracking server that goes away mid-run."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from rnnflow.provenance import git_tags, without_credentials


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_git_tags_of_the_spec_repository(tmp_path):
    repo = tmp_path / "project"
    (repo / "specs").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://someone:secret@example.com/team/project.git")
    spec = repo / "specs" / "a.yaml"
    spec.write_text("name: a\n")
    assert git_tags(spec) == {}  # a repository without a commit: nothing to point at
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")
    assert git_tags(spec) == {"mlflow.source.git.commit": head, "mlflow.source.git.branch": "main",
                              "mlflow.source.git.repoURL": "https://example.com/team/project.git",
                              "rnnflow.git_dirty": "false"}
    spec.write_text("name: b\n")  # the spec differs from the commit
    assert git_tags(spec)["rnnflow.git_dirty"] == "true"
    git(repo, "commit", "-q", "-am", "second")
    new = repo / "specs" / "new.yaml"  # never committed: the commit does not hold it
    new.write_text("name: n\n")
    assert git_tags(new)["rnnflow.git_dirty"] == "true" and git_tags(spec)["rnnflow.git_dirty"] == "false"
    (repo / "notes.txt").write_text("x")  # an untracked file elsewhere changes nothing the run used
    assert git_tags(spec)["rnnflow.git_dirty"] == "false"
    outside = tmp_path / "loose.yaml"
    outside.write_text("name: c\n")
    assert git_tags(outside) == {}


def test_git_tags_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable
    assert git_tags(Path(__file__)) == {}


def test_credentials_are_left_out_of_the_repository_url():
    assert without_credentials("https://u:p@github.com/a/b.git") == "https://github.com/a/b.git"
    assert without_credentials("git@github.com:a/b.git") == "git@github.com:a/b.git"


# --- the final metrics of a run are the logged model's metrics ---

GRU = Path(__file__).resolve().parent.parent / "specs" / "gru_forecast.yaml"
TINY_GRU = ["train.iterations=6", "train.steps_per_execution=3", "train.batch_size=8", "data.train_windows=40",
            "data.eval_windows=8", "model.cells[0].units=4", "evaluate.steps=[{type: predictions}]"]


def test_final_metrics_are_linked_to_the_logged_model(mlflow_store, client):
    """search_logged_models showed metrics: [] for every model."""
    from rnnflow.runner import run

    # The trainer evaluates the held-out split at the last step itself (evaluate.every): those
    # points are linked as logged, not logged again.
    result = run(GRU, [*TINY_GRU, "evaluate.every=3", "tracking.experiment=linked"])
    recorded = client.get_run(result.run_id)
    [model] = client.search_logged_models([recorded.info.experiment_id],
                                          filter_string=f"source_run_id = '{result.run_id}'")
    linked = {m.key: m.value for m in model.metrics}
    final = {k: v for k, v in recorded.data.metrics.items() if k not in ("loss", "learning_rate")}  # curves
    assert set(final) >= {"train_loss", "train_mse", "test_loss", "test_mae", "train_seconds", "ms_per_iteration"}
    assert linked == final
    assert {m.step for m in model.metrics} == {6}
    for key in ("val_loss", "train_loss"):  # linking logged no second point at the last step
        history = client.get_metric_history(result.run_id, key)
        assert [m.value for m in history if m.step == 6] == [final[key]]
    assert [m.step for m in client.get_metric_history(result.run_id, "val_loss")] == [3, 6]


def test_a_dataset_another_run_just_recorded_is_linked_not_fatal(monkeypatch, mlflow_store, client):
    """Two children of a Ray pipeline recorded the same dataset at once: MLflow looked it up, found
    nothing, and the slower insert failed on the unique key (seen in a CI run)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnflow.runner import run

    real, calls = MlflowClient.log_inputs, []

    def raced(self, run_id, datasets=None, models=None):
        calls.append(run_id)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return real(self, run_id, datasets=datasets, models=models)

    monkeypatch.setattr(MlflowClient, "log_inputs", raced)
    result = run(GRU, [*TINY_GRU, "tracking.experiment=raced"])
    recorded = client.get_run(result.run_id)
    assert recorded.info.status == "FINISHED" and len(calls) == 2
    contexts = {t.value for i in recorded.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"train", "val", "test"}


# --- a logged model serves ---

def test_requirements_name_rnnflow_by_where_it_was_installed(monkeypatch, tmp_path):
    """`rnnflow==0.1.0` resolved to nothing, or to an unrelated project of that name on PyPI."""
    import json
    from importlib import metadata

    import rnnflow
    from rnnflow import mlflow_model

    checkout = Path(rnnflow.__file__).resolve().parent.parent

    class Installed:
        def __init__(self, origin, location=None):
            self.origin, self.location = origin, location

        def read_text(self, name):
            return json.dumps(self.origin) if self.origin is not None else None

        def locate_file(self, name):
            return self.location or tmp_path / name

    def installed(origin, location=None):
        monkeypatch.setattr(metadata, "distribution", lambda name: Installed(origin, location))
        return mlflow_model.requirements()

    pins, how = installed({"url": checkout.as_uri(), "dir_info": {"editable": True}})
    assert pins[-1] == how == f"rnnflow @ {checkout.as_uri()}" and pins[0].startswith("tensorflow==")
    here = Path(rnnflow.__file__)
    pins, how = installed({"url": "https://example.com/team/rnnflow.git",
                           "vcs_info": {"vcs": "git", "commit_id": "abc123"}}, here)
    assert how == "rnnflow @ git+https://example.com/team/rnnflow.git@abc123"
    for origin in (None, {"url": (tmp_path / "other").as_uri(), "dir_info": {"editable": True}}):
        pins, how = installed(origin)  # from an index, or another checkout than the one imported
        assert not any(p.startswith("rnnflow") for p in pins) and how.startswith("left out")


def test_a_custom_cell_model_loads_and_serves_in_a_fresh_process(mlflow_store, client, tmp_path):
    """`mlflow models serve` of a peephole model: rnnflow's loader registers the custom cells."""
    import json
    import signal
    import sys
    import time
    import urllib.request

    import numpy as np
    import yaml

    from rnnflow.runner import run
    from rnnflow.server import free_port

    peephole = GRU.parent / "peephole_lstm.yaml"
    result = run(peephole, ["model.cells[0].units=4", "model.cells[0].layers=1", "train.iterations=2",
                            "data.train_windows=20", "data.eval_windows=4", "tracking.experiment=serve"])
    uri = f"runs:/{result.run_id}/model"
    x = np.random.default_rng(0).normal(size=(3, 20, 1)).astype("float32")
    expected = np.asarray(result.built.model(x, training=False))
    model_dir = Path(client.download_artifacts(result.run_id, "model", str(tmp_path)))
    described = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert described["flavors"]["python_function"]["loader_module"] == "rnnflow.mlflow_model"
    assert "keras" in described["flavors"]  # mlflow.keras.load_model and rnnflow predict still read it
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert not [r for r in requirements if r.startswith("rnnflow==")]

    root = str(GRU.parent.parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PYTHONPATH": root,
           # MLflow starts the scoring server as `uvicorn`, found on PATH: the environment's bin/.
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    np.save(tmp_path / "x.npy", x)
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, json, numpy as np, mlflow.pyfunc\n"
         f"m = mlflow.pyfunc.load_model({uri!r})\n"
         f"print(json.dumps(np.asarray(m.predict(np.load({str(tmp_path / 'x.npy')!r}))).tolist()))"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    np.testing.assert_allclose(np.array(json.loads(loaded.stdout.splitlines()[-1])), expected, rtol=1e-5, atol=1e-6)

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1",
                               "-p", str(port)], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": x.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=120).read())
        np.testing.assert_allclose(np.array(answer["predictions"]), expected, rtol=1e-5, atol=1e-6)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=20)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


# --- the tracking server goes away mid-run ---

done = threading.Event()  # set when a test ends: threads that started servers may end too


def stop_server_at(servers: list, iteration: int, then=None):
    """A training callback: stop the tracking server (the last of `servers`) at `iteration`; then
    run `then` in a thread (that lives until the test ends: Linux stops a server when the thread
    that started it ends)."""
    import keras

    def then_wait():
        then()
        done.wait()

    class StopServer(keras.callbacks.Callback):
        stopped_at = None

        def on_train_batch_end(self, batch, logs=None):
            if batch == iteration and self.stopped_at is None:
                servers[-1].stop()
                self.stopped_at = batch
                if then is not None:
                    threading.Thread(target=then_wait, daemon=True).start()

    return StopServer()


OUTAGE = ["train.iterations=30", "train.steps_per_execution=1", "train.log_every=1", "train.batch_size=8",
          "data.train_windows=40", "data.eval_windows=8", "model.cells[0].units=4", "evaluate.every=10",
          "evaluate.steps=[{type: predictions}]", "tracking.experiment=outage"]


@pytest.fixture
def on_server(monkeypatch, tmp_path, mlflow_servers):
    """A real tracking server (its store in tmp_path/store) that runs log to, and its restart."""
    import mlflow

    store = tmp_path / "store"
    server = mlflow_servers(store_dir=store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("RNNFLOW_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.url)
    servers = [server]  # the one running now last

    def restart():
        servers.append(mlflow_servers(store_dir=store, port=server.port))

    yield servers, restart
    mlflow.set_tracking_uri(previous)
    done.set()


def check_complete(client, run_id: str, total: int, reference: dict | None = None) -> dict:
    """The run FINISHED with every loss point once, its final metrics, artifacts and model."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, total + 1))
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [10, 20, 30]
    final = {k: v for k, v in run.data.metrics.items()
             if k.startswith(("train_", "val_", "test_")) and k != "train_seconds"}
    if reference is not None:
        assert final == reference
    assert {"predictions.csv", "loss.png", "spec"} <= {a.path for a in client.list_artifacts(run_id)}
    [model] = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert {m.key for m in model.metrics} >= set(final)
    return final


def test_training_goes_on_while_the_tracking_server_is_away(on_server, monkeypatch, tmp_path):
    """Killed at iteration 5 and restarted: nothing waits for it, every point lands once it is back.
    Killed and not back in time: a clear error, a local checkpoint, and --resume finishes the run."""
    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient

    from rnnflow.cli import main
    from rnnflow.errors import TrackingError
    from rnnflow.runner import run

    servers, restart = on_server
    url = servers[0].url
    monkeypatch.setenv("RNNFLOW_TRACKING_WAIT", "240")
    came_back = stop_server_at(servers, 5, then=restart)
    result = run(GRU, OUTAGE, callbacks=[came_back])
    assert came_back.stopped_at == 5
    client = MlflowClient(url)
    reference = check_complete(client, result.run_id, 30)

    monkeypatch.setenv("RNNFLOW_TRACKING_WAIT", "2")
    gone = stop_server_at(servers, 5)
    with pytest.raises(TrackingError) as info:
        run(GRU, OUTAGE, callbacks=[gone])
    run_id = info.value.rnnflow_run_id
    kept = tmp_path / "checkpoints" / run_id
    message = str(info.value)
    assert "went away and did not come back within 2 s" in message
    assert f"kept in {kept}" in message and f"rnnflow run --resume {run_id}" in message
    assert {"state.npz", "meta.json", "unsent.json"} <= {p.name for p in kept.iterdir()}
    restart()
    assert client.get_run(run_id).info.status == "RUNNING"  # the server could not be told otherwise
    resumed = CliRunner().invoke(main, ["run", "--resume", run_id, "-q"])
    assert resumed.exit_code == 0, resumed.output
    check_complete(client, run_id, 30, reference)
    assert not kept.exists()


@pytest.fixture
def health_server():
    """A stand-in for a tracking server's /health on a free loopback port (answers 200)."""
    import http.server

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_delivery_waits_a_bounded_time_and_never_for_a_refusal(health_server):
    import time

    import requests
    from mlflow.exceptions import MlflowException

    from rnnflow.server import free_port
    from rnnflow.tracking import Delivery, TrackingUnavailable

    gone = Delivery(f"http://127.0.0.1:{free_port()}", wait=1.5, retry_seconds=60)
    sent = []
    started = time.monotonic()
    assert gone.attempt(lambda: sent.append(1)) is False and sent == []  # nobody answers /health
    assert gone.attempt(lambda: sent.append(1)) is False  # within the retry window: no new try
    with pytest.raises(TrackingUnavailable, match="did not come back within 1.5 s .* while sending x"):
        gone.call("sending x", lambda: (_ for _ in ()).throw(requests.exceptions.ConnectionError("refused")))
    assert time.monotonic() - started < 10

    up = Delivery(health_server, wait=30)
    failures = [requests.exceptions.ConnectionError("reset"), requests.exceptions.ReadTimeout("slow")]

    def flaky():
        if failures:
            raise MlflowException("API request failed") from failures.pop(0)
        return "sent"

    assert up.call("sending y", flaky) == "sent" and failures == []  # connection trouble: tried again
    started = time.monotonic()
    with pytest.raises(MlflowException, match="refused the param"):  # a refusal is an answer: no wait
        up.call("sending z", lambda: (_ for _ in ()).throw(MlflowException("refused the param")))
    assert time.monotonic() - started < 5
    stuck = Delivery(health_server, wait=1)
    with pytest.raises(TrackingUnavailable):  # /health answers, the call keeps timing out: still bounded
        stuck.call("sending w", lambda: (_ for _ in ()).throw(requests.exceptions.ReadTimeout("slow")))


def test_a_folder_store_is_a_clear_error_unless_allowed(tmp_path, monkeypatch):
    """MLflow 3 refuses a folder ("file:") store by default: rnnflow says so, and how to go on,
    before anything trains; with MLFLOW_ALLOW_FILE_STORE=true the folder is accepted."""
    import mlflow
    from click.testing import CliRunner

    from rnnflow.cli import main
    from rnnflow.errors import TrackingError
    from rnnflow.store import check_reachable

    folder = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    previous = mlflow.get_tracking_uri()
    try:
        result = CliRunner().invoke(main, ["run", str(GRU), "-q", "--set", f"tracking.tracking_uri={folder}"])
    finally:
        mlflow.set_tracking_uri(previous)  # a spec's tracking_uri becomes MLflow's, for the whole process
    assert result.exit_code == 1
    assert "Traceback" not in result.output + result.stderr
    assert result.stderr.startswith(f"rnnflow: error: the tracking store {folder} is a folder")
    assert "MLFLOW_ALLOW_FILE_STORE=true" in result.stderr
    assert not (tmp_path / "mlruns").exists()
    with pytest.raises(TrackingError, match="is a folder"):
        check_reachable(str(tmp_path / "mlruns"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "yes")  # MLflow reads only true/false/1/0
    with pytest.raises(TrackingError, match="is a folder, and .*MLFLOW_ALLOW_FILE_STORE"):
        check_reachable(folder)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_reachable(folder)
