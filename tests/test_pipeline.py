"""Pipelines: validation up front, parent/child runs, a failing child, overlays, compare, a real server."""

from __future__ import annotations

import json
import os
import socket
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT

from rnnflow.cli import main
from rnnflow.errors import SpecError
from rnnflow.spec.pipeline import load_pipeline

GRU = (ROOT / "specs" / "gru_forecast.yaml").as_posix()
TINY = {"train.iterations": 3, "data.train_windows": 20, "data.eval_windows": 4, "model.cells[0].units": 4,
        "evaluate.steps": [{"type": "predictions"}]}


def write_pipeline(tmp_path: Path, body: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def dump_pipeline(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_grid_expands_to_validated_children(tmp_path):
    path = dump_pipeline(tmp_path, {
        "name": "grid", "experiment": "exp-grid", "set": TINY,
        "runs": [{"spec": GRU, "grid": {"model.cells[0].type": ["rnn", "lstm"],
                                        "train.learning_rate": [0.001, 0.0001]}},
                 {"spec": GRU, "name": "single", "set": {"seed": 3}}]})
    pipeline, children = load_pipeline(path)
    assert len(children) == 5
    assert [c.spec.model.cells[0].type for c in children[:4]] == ["rnn", "rnn", "lstm", "lstm"]
    assert children[1].spec.train.learning_rate == 0.0001
    assert children[0].name == "gru_forecast[type=rnn,learning_rate=0.001]"
    assert children[4].name == "single" and children[4].spec.seed == 3
    assert all(c.spec.tracking.experiment == "exp-grid" for c in children)
    assert all(c.spec.train.iterations == 3 for c in children)
    assert "model.cells[0].type=rnn" in children[0].overrides


def test_children_varying_keys_with_the_same_last_part_get_distinct_names(tmp_path):
    path = dump_pipeline(tmp_path, {"name": "units", "set": TINY, "runs": [{"spec": GRU, "grid": {
        "model.cells[0].units": [4], "model.projection.units": [1], "train.learning_rate": [0.01]}}]})
    _, [child] = load_pipeline(path)
    assert child.name == "gru_forecast[cells[0].units=4,projection.units=1,learning_rate=0.01]"


def test_progress_bar_shows_the_child_run_name(capsys):
    """rich read the '[type=lstm]' of a child's name as markup: every bar of a pipeline said 'forecast'."""
    from rnnflow.progress import ProgressBar

    bar = ProgressBar("forecast[type=lstm]")
    bar.on_train_begin({"total": 10})
    bar.on_train_batch_end(5, {"loss": 0.5})
    bar.on_train_end()
    assert "forecast[type=lstm]" in capsys.readouterr().err


def test_bad_override_points_at_the_pipeline_line(tmp_path):
    path = write_pipeline(tmp_path, f"""\
        name: bad
        runs:
          - spec: {GRU}
            grid:
              model.cells[0].units: [8, -2]
          - spec: missing.yaml
        """)
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    messages = [str(i) for i in info.value.issues]
    assert any(m.startswith(f"{path}:5:") and "model.cells[0].units: must be greater than 0 (got -2)" in m
               and "run gru_forecast[units=-2]" in m for m in messages), messages
    assert any(str(tmp_path / "missing.yaml") in m and "file not found" in m for m in messages), messages


def test_epochs_on_an_iterations_spec_says_how_to_clear_iterations(tmp_path):
    path = write_pipeline(tmp_path, f"""\
        name: by_epochs
        runs:
          - spec: {GRU}
            set:
              train.epochs: 2
        """)
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    [issue] = info.value.issues
    assert (issue.source, issue.line, issue.path) == (str(path), 5, "train.epochs")
    line = next(i for i, text in enumerate(Path(GRU).read_text().splitlines(), 1) if "iterations:" in text)
    assert f"gru_forecast.yaml sets train.iterations (line {line}); to train by epochs instead, add " \
           "train.iterations: null beside it" in issue.message


def test_pipeline_schema_errors_are_located(tmp_path):
    path = write_pipeline(tmp_path, f"""\
        name: bad
        experimnt: x
        runs:
          - spec: {GRU}
            grid:
              model.cells[0].units: 8
        """)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:1 experimnt: unknown key 'experimnt' (did you mean 'experiment'?)" in result.output
    assert f"{path}:6:29 runs[0].grid['model.cells[0].units']: must be a list" in result.output


def test_dry_run_trains_nothing(tmp_path, mlflow_store, client):
    path = write_pipeline(tmp_path, f"""\
        name: dry
        experiment: exp-dry
        runs:
          - spec: {GRU}
            grid:
              model.cells[0].type: [rnn, gru]
        """)
    result = CliRunner().invoke(main, ["pipeline", "run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 run(s)" in result.output and "gru_forecast[type=rnn]" in result.output
    assert client.get_experiment_by_name("exp-dry") is None


def run_two_children_and_a_failure(tmp_path: Path, experiment: str):
    mnist = (ROOT / "specs" / "mnist_classifier.yaml").as_posix()
    path = dump_pipeline(tmp_path, {
        "name": "two", "experiment": experiment, "set": {"seed": 5},
        "runs": [{"spec": GRU, "set": TINY, "grid": {"model.cells[0].type": ["rnn", "gru"]}},
                 {"spec": GRU, "name": "broken",
                  "set": {**TINY, "evaluate.steps": [{"type": "generate", "seed": "instance", "instance": 9999,
                                                      "length": 3}]}},
                 {"spec": mnist, "name": "nodata",
                  "set": {"data.path": f"{tmp_path.as_posix()}/no-such-mnist.npz",
                          "model.cells[0].units": 4, "train.epochs": 1}}]})
    return CliRunner().invoke(main, ["pipeline", "run", str(path), "-q"])


def check_pipeline_runs(client, output: str, experiment: str, base: str = "http://127.0.0.1:5000") -> None:
    parent_id = output.split("parent run id: ")[1].split()[0]
    parent = client.get_run(parent_id)
    eid = parent.info.experiment_id
    assert parent.info.status == "FAILED"  # one child failed
    children = client.search_runs([eid], f"tags.mlflow.parentRunId = '{parent_id}'")
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == {"gru_forecast[type=rnn]", "gru_forecast[type=gru]", "broken", "nodata"}
    for name in ("gru_forecast[type=rnn]", "gru_forecast[type=gru]"):
        child = by_name[name]
        assert child.info.status == "FINISHED"
        cell = name.split("=")[1].rstrip("]")
        assert child.data.params["model.cells.0.type"] == cell
        # What defines the child, under a name MLflow's compare page sorts first.
        assert child.data.params["Varied/model.cells.0.type"] == cell
        assert not {"description", "tracking.run_name", "tracking.experiment"} & set(child.data.params)
        assert "model.cells[0].type=" in child.data.tags["rnnflow.overrides"]
        assert child.data.tags["rnnflow.grid.model.cells[0].type"] in ("rnn", "gru")
        assert "test_loss" in child.data.metrics
        assert {"predictions.csv", "loss.png"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
    assert by_name["broken"].info.status == "FAILED"
    assert "instance 9999 does not exist" in by_name["broken"].data.tags["rnnflow.error"]
    assert by_name["nodata"].info.status == "FAILED"
    assert "no-such-mnist.npz" in by_name["nodata"].data.tags["rnnflow.error"]
    parent_artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"summary.csv", "summary.json", "loss_curves.png", "forecasts.png", "pipeline", "images"} <= parent_artifacts
    images = {a.path.split("/")[1].split("+")[0] for a in client.list_artifacts(parent_id, "images")}
    assert images == {"loss_curves", "forecasts"}  # image charts of the parent in the runs page
    assert parent.data.metrics["runs_failed"] == 2 and parent.data.metrics["runs_finished"] == 2
    assert client.get_experiment_by_name(experiment) is not None

    # The parent says which child is best (by val_loss: gru_forecast holds out a validation split; never by test).
    finished = [by_name[n] for n in ("gru_forecast[type=rnn]", "gru_forecast[type=gru]")]
    best = min(finished, key=lambda r: r.data.metrics["val_loss"])
    assert parent.data.tags["rnnflow.best_child"] == best.info.run_name
    assert parent.data.tags["rnnflow.best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_val_loss"] == best.data.metrics["val_loss"]
    assert not any(k.startswith("best_train") for k in parent.data.metrics)
    note = parent.data.tags["mlflow.note.content"]  # the parent's Description: a Markdown table
    assert f"Best by val_loss: **{best.info.run_name}**" in note
    assert "| run | status | model.cells.0.type |" in note
    assert all(f"| {name} |" in note for name in by_name)
    table = json.loads(Path(client.download_artifacts(parent_id, "summary.json")).read_text())
    assert table["columns"][:3] == ["run", "status", "model.cells.0.type"]
    assert sorted(row[0] for row in table["data"]) == sorted(by_name)

    # The saved view of the children: sorted by val_loss, the varying settings and metrics as columns.
    view = json.loads(client.get_experiment(eid).tags[f"mlflow.sharedViewState.rnnflow-{parent_id}"])
    state = json.loads(view["state"])
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent_id}'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val_loss`", True)
    assert state["selectedColumns"][0] == "params.`model.cells.0.type`"
    assert "metrics.`val_loss`" in state["selectedColumns"]
    assert not any("tracking" in c or "description" in c for c in state["selectedColumns"])
    # The links printed: the saved view, its charts, and the compare page of the finished children.
    ranked = [r.info.run_id for r in sorted(finished, key=lambda r: r.data.metrics["val_loss"])]
    runs = f"{base}/#/experiments/{eid}/runs?workflowType=machine_learning&viewStateShareKey=rnnflow-{parent_id}"
    assert f"  side by side:  {runs}\n" in output
    assert f"  loss curves:   {runs}&compareRunsMode=CHART\n" in output
    compare = (f"{base}/#/compare-runs?runs=%5B%22{ranked[0]}%22%2C%22{ranked[1]}%22%5D"
               f"&experiments=%5B%22{eid}%22%5D&workflowType=machine_learning")
    assert f"  compare page:  {compare}\n" in output


def test_pipeline_run_records_parent_children_and_failures(tmp_path, mlflow_store, client):
    result = run_two_children_and_a_failure(tmp_path, "exp-two")
    assert result.exit_code == 1, result.output
    assert "2 of 4 run(s) failed" in result.output
    assert "FAILED: " in result.output
    assert "best first by val_loss" in result.output and "nodata (FAILED)" in result.output  # compare's table
    check_pipeline_runs(client, result.output, "exp-two")
    assert "see them in the MLflow UI (start it with: rnnflow ui):\n" in result.output

    parent_id = result.output.split("parent run id: ")[1].split()[0]
    table = CliRunner().invoke(main, ["compare", "--parent", parent_id], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    header = next(line for line in lines if line.startswith("run "))
    assert "model.cells.0.type" in header.split() and "test_loss" in header.split(), header
    assert "forget_bias" not in header and "reset_after" not in header
    as_json = json.loads(CliRunner().invoke(main, ["compare", "--parent", parent_id, "--format", "json"]).output)
    finished = [r for r in as_json if r["status"] == "FINISHED"]
    assert [r["val_loss"] for r in finished] == sorted(r["val_loss"] for r in finished)  # the default: val
    assert "model.cells.0.type" in as_json[0]  # the grid varies it
    assert not any(k.startswith("Varied/") for k in as_json[0])  # the same setting, logged again for MLflow
    assert "seed" not in as_json[0] and "description" not in as_json[0]  # the same, or not a setting
    assert "train.learning_rate" not in as_json[0]  # equal everywhere: not a differing param
    # The MNIST child failed before training: it joins the table with its status, not a task of its own.
    assert {r["run"]: r["status"] for r in as_json}["nodata"] == "FAILED"
    csv_out = CliRunner().invoke(main, ["compare", "--parent", parent_id, "--format", "csv"]).output
    header = csv_out.splitlines()[0].split(",")
    assert header[:3] == ["group", "run", "rank"] and header[-2:] == ["status", "run_id"]
    # What the overrides vary: the cell type (grid) and the broken child's step; nothing else.
    assert [h for h in header if "." in h] == ["evaluate.steps.0.type", "model.cells.0.type"]
    bad = CliRunner().invoke(main, ["compare", "--parent", parent_id, "--metric", "nope"])
    assert bad.exit_code == 1 and "no run has the metric 'nope'" in bad.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(mlflow_servers, tmp_path):
    """A real `mlflow server` on 127.0.0.1 (artifacts in tmp_path/server0/artifacts), the tracking URI meanwhile."""
    import mlflow

    url = mlflow_servers(tmp_path / "server0").url
    previous = mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = url
    mlflow.set_tracking_uri(url)
    try:
        yield url
    finally:
        mlflow.set_tracking_uri(previous)
        os.environ["MLFLOW_TRACKING_URI"] = previous


def test_pipeline_against_a_real_mlflow_server(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    result = run_two_children_and_a_failure(tmp_path, "exp-server")
    assert result.exit_code == 1, result.output
    client = MlflowClient(mlflow_server)
    check_pipeline_runs(client, result.output, "exp-server", base=mlflow_server)
    assert "see them in the MLflow UI:\n" in result.output  # a server has its UI: nothing to start
    # The artifacts really went through the server into its artifact folder.
    stored = list((tmp_path / "server0" / "artifacts").rglob("predictions.csv"))
    assert len(stored) >= 2


def test_unreachable_server_fails_fast_before_training(tmp_path, mlflow_store):
    import mlflow

    url = f"http://127.0.0.1:{free_port()}"
    previous = mlflow.get_tracking_uri()
    try:
        started = time.time()
        result = CliRunner().invoke(main, ["run", GRU, "--set", f"tracking.tracking_uri={url}"])
        assert result.exit_code == 1
        assert f"cannot reach the MLflow tracking server at {url}" in result.output
        assert time.time() - started < 15
        assert "Traceback" not in result.output
    finally:
        mlflow.set_tracking_uri(previous)


def test_ctrl_c_stops_the_whole_pipeline(tmp_path, mlflow_store, client, monkeypatch):
    """Ctrl-C in a child stops the pipeline (the other children do not run) and records the parent KILLED."""
    import rnnflow.runner
    from rnnflow.pipeline import run_pipeline

    path = dump_pipeline(tmp_path, {"name": "stopped", "experiment": "exp-stopped", "set": TINY,
                                    "runs": [{"spec": GRU, "grid": {"model.cells[0].type": ["rnn", "gru"]}}]})
    started = []

    def interrupted_run(spec, overrides, **kwargs):
        started.append(spec.tracking.run_name)
        raise rnnflow.runner.RunInterrupted("0" * 32, 7)

    monkeypatch.setattr(rnnflow.runner, "run", interrupted_run)
    with pytest.raises(rnnflow.runner.RunInterrupted):
        run_pipeline(path, echo=lambda line: None)
    assert started == ["gru_forecast[type=rnn]"]
    parents = client.search_runs([client.get_experiment_by_name("exp-stopped").experiment_id],
                                 "tags.`rnnflow.role` = 'pipeline'")
    assert [p.info.status for p in parents] == ["KILLED"]


def test_children_on_different_tasks_have_no_best(tmp_path, mlflow_store, client):
    """A sin forecast and a cos forecast: their losses do not compare, so the parent names no best
    child (one task would; see check_pipeline_runs) and says why."""
    from rnnflow.pipeline import run_pipeline

    path = dump_pipeline(tmp_path, {"name": "tasks", "experiment": "exp-tasks", "set": TINY,
                                    "runs": [{"spec": GRU, "grid": {"data.function": ["sin", "cos"]}}]})
    result = run_pipeline(path, echo=lambda line: None)
    assert [o.status for o in result.children] == ["FINISHED", "FINISHED"]
    parent = client.get_run(result.parent_run_id)
    assert "rnnflow.best_child" not in parent.data.tags
    assert not any(k.startswith("best_") for k in parent.data.metrics)
    note = parent.data.tags["mlflow.note.content"]
    assert "The runs are on 2 tasks (sine (cos), mse loss; sine (sin), mse loss)" in note or \
        "The runs are on 2 tasks (sine (sin), mse loss; sine (cos), mse loss)" in note, note

    # A search names its measure, whatever its space varies: the same children then have a best.
    from rnnflow.pipeline import _summarize
    from rnnflow.store import RecordedRun

    pipeline, children = load_pipeline(path)
    recorded = RecordedRun(client, result.parent_run_id, result.experiment_id)
    _summarize(recorded, pipeline, children, result.children, lambda line: None, ("val_loss", True))
    parent = client.get_run(result.parent_run_id)
    best = min(result.children, key=lambda o: o.metrics["val_loss"])
    assert parent.data.tags["rnnflow.best_child"] == best.name
    assert parent.data.metrics["best_val_loss"] == best.metrics["val_loss"]


def test_the_best_trial_values_are_logged_under_mlflow_param_names(mlflow_store, client):
    """A search over a cell's units: the parent's params name it as its runs do
    (model.cells.0.units); MLflow refuses brackets in a param name."""
    from rnnflow.pipeline import ChildOutcome, _record_search
    from rnnflow.spec.search import SearchSpec
    from rnnflow.store import RecordedRun

    parent = RecordedRun.create(client, "exp-best-trial", "search", {})
    search = SearchSpec(space={"model.cells[0].units": {"type": "int", "low": 16, "high": 64}},
                        metric="val_loss", mode="min", num_samples=2)
    trials = [ChildOutcome(f"trial={i}", f"{i}" * 32, "FINISHED", {"val_loss": loss},
                           varied={"model.cells[0].units": units, "train.learning_rate": 0.01}, trial=i)
              for i, (units, loss) in enumerate([(16, 0.5), (48, 0.25)])]
    _record_search(parent, search, trials, lambda line: None)
    params = client.get_run(parent.run_id).data.params
    assert params["best.model.cells.0.units"] == "48" and params["best.train.learning_rate"] == "0.01"
    parent.end("FINISHED")


def test_table_rows_stay_on_one_line_each():
    """A folded `description: >` ends with a line break; in a compared param it broke the table."""
    from rnnflow.compare import Group, _fit

    group = Group("sine, mse loss", "test_loss", False, ["description"], ["test_loss"],
                  [{"run": "a", "description": "One layer.\nTrained on a window.\n", "test_loss": 0.5,
                    "status": "FINISHED", "run_id": "1"},
                   {"run": "b", "description": "", "test_loss": 0.25, "status": "FINISHED", "run_id": "2"}])
    lines = _fit(group, 200)
    assert len(lines) == 3
    assert lines[1].split() == ["a", "One", "layer.", "Trained", "on", "a", "window.", "0.5", "1"]
    assert [line.index("test_loss") for line in lines[:1]] == [lines[2].index("0.25")]


@pytest.mark.parametrize("command", [["compare"], ["predict", "--run", "0123456789abcdef0123456789abcdef"]])
def test_unreachable_server_fails_fast_when_looking_at_runs(mlflow_store, command):
    """MLflow retries a refused connection for minutes, then rnnflow called it an internal error."""
    import mlflow

    url = f"http://127.0.0.1:{free_port()}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    try:
        started = time.time()
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1
        assert f"cannot reach the MLflow tracking server at {url}" in result.output
        assert time.time() - started < 30
    finally:
        mlflow.set_tracking_uri(previous)


def test_summary_shows_the_best_validation_metric_and_why_training_stopped():
    from rnnflow.pipeline import ChildOutcome, format_table, summary_rows

    outcomes = [ChildOutcome("a", "id1", "FINISHED", {"val_loss": 0.5, "best_val_loss": 0.4, "best_iteration": 300.0,
                                                      "test_loss": 0.6, "ms_per_iteration": 2.0},
                             stop_reason="early_stopping"),
                ChildOutcome("b", None, "FAILED", {}, "boom")]
    header, rows = summary_rows(outcomes)
    assert header == ["run", "status", "test_loss", "val_loss", "best_val_loss", "best_iteration", "stop_reason",
                      "ms_per_iteration", "run_id"]
    lines = format_table(header, rows).splitlines()
    assert lines[1].split() == ["a", "FINISHED", "0.6", "0.5", "0.4", "300", "early_stopping", "2", "id1"]
    assert lines[2].split() == ["b", "FAILED"]
