"""`rnnflow compare` on runs recorded as rnnflow records them (made directly in a store of their own)."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from click.testing import CliRunner

from rnnflow.cli import main

SINE = {"data.type": "sine", "data.function": "sine_mix", "train.loss": "mse", "train.learning_rate": "0.003",
        "train.shuffle": "True", "model.cells.0.units": "64", "description": "A forecast.\nOn two lines.",
        "evaluate.steps.0.type": "predictions"}
MNIST = {"data.type": "mnist", "train.loss": "sparse_categorical_crossentropy", "train.shuffle": "True",
         "model.cells.0.type": "rnn", "model.cells.0.units": "150"}
CELL_PARAMS = {"rnn": {}, "lstm": {"model.cells.0.forget_bias": "1.0", "model.cells.0.unit_forget_bias": "False"},
               "gru": {"model.cells.0.reset_after": "True"}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of its own: `compare` without arguments looks at the latest run of the whole store."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'mlflow.db'}"
    previous_env, previous = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    clock = iter(range(1_000_000, 2_000_000, 1000))

    def record(experiment: str, name: str, params=None, metrics=None, tags=None, status="FINISHED", parent=None):
        from mlflow.entities import Metric, Param

        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        tags = dict(tags or {})
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run = client.create_run(experiment_id, start_time=next(clock), tags=tags, run_name=name)
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in (params or {}).items()],
                         metrics=[Metric(k, v, 0, 3) for k, v in (metrics or {}).items()])
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    # A single MNIST run and a sine run in one experiment: different tasks.
    record("mixed", "sine", SINE, {"test_loss": 0.5, "train_loss": 0.4})
    for shuffle, loss in (("True", 0.3), ("False", 0.2)):
        record("mixed", "mnist", {**MNIST, "train.shuffle": shuffle}, {"test_loss": loss, "test_accuracy": 1 - loss},
               {"rnnflow.overrides": f"train.shuffle={shuffle.lower()}"})
    # Forecasts of one's own files: other files, targets or horizons are other tasks.
    table = {"data.type": "table", "data.path": "data/co2_weekly.csv", "data.target": "co2", "data.horizon": "1",
             "train.loss": "mse"}
    for name, changed in (("co2", {}), ("co2-wider", {"data.window": "104"}), ("co2-12", {"data.horizon": "12"}),
                          ("airline", {"data.path": "data/airline_monthly.csv", "data.target": "passengers"})):
        record("tables", name, {**table, **changed}, {"val_loss": 0.1, "test_loss": 0.2})
    # A search ranks by its own metric and direction.
    search = record("searches", "search", {}, {}, {"rnnflow.role": "search", "rnnflow.search.metric": "val_accuracy",
                                                  "rnnflow.search.mode": "max"})
    for rate, accuracy in (("0.1", 0.7), ("0.01", 0.9), ("0.001", 0.8)):
        record("searches", f"trial[{rate}]", {**MNIST, "train.learning_rate": rate},
               {"val_accuracy": accuracy, "val_loss": 1 - accuracy / 2}, {"rnnflow.grid.train.learning_rate": rate},
               parent=search)
    # The latest: a pipeline over the cell type, one child failed before training.
    pipeline = record("cells", "cell_comparison", {}, {}, {"rnnflow.role": "pipeline"})
    for cell, val_loss, stop, ms in (("rnn", 0.9, "completed", 0.61), ("lstm", 0.3, "early_stopping", None),
                                     ("gru", 0.5, "completed", 0.73)):
        metrics = {"val_loss": val_loss, "test_loss": val_loss + 0.1, "train_loss": val_loss - 0.1,
                   "best_val_loss": val_loss - 0.05, "test_mse": val_loss + 0.1, "train_seconds": 12.0}
        if ms is not None:
            metrics["ms_per_iteration"] = ms
        record("cells", f"gru_forecast[type={cell}]", {**SINE, "model.cells.0.type": cell, **CELL_PARAMS[cell]},
               metrics, {"rnnflow.overrides": f"model.cells[0].type={cell} evaluate.steps=[{{type: predictions}}]",
                         "rnnflow.grid.model.cells[0].type": cell, "rnnflow.stop_reason": stop}, parent=pipeline)
    record("cells", "nodata", {}, {}, {"rnnflow.grid.model.cells[0].type": "peephole_lstm"}, status="FAILED",
           parent=pipeline)
    yield {"pipeline": pipeline, "search": search}
    mlflow.set_tracking_uri(previous)
    if previous_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous_env


def compare(*args: str, columns: int = 80):
    result = CliRunner().invoke(main, ["compare", *args], env={"COLUMNS": str(columns)})
    return result


def test_the_latest_pipeline_by_default_fitting_the_terminal(store):
    """It compared the fixed experiment 'rnnflow' in a 2,331-character-wide table of ~100 columns."""
    result = compare()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert " ".join(result.output.split()).startswith(
        f"children of pipeline run cell_comparison ({store['pipeline']}) (the latest;")
    assert max(len(line) for line in lines) <= 80, result.output
    header = next(line for line in lines if line.startswith("run "))
    # The grid's key varies; cell-type defaults (forget_bias, reset_after) only follow the type.
    assert "type" in header.split() and "forget_bias" not in result.output and "reset_after" not in result.output
    assert "learning_rate" not in result.output and "units" not in header and "description" not in header
    assert header.split() == ["run", "type", "val_loss", "best_val_loss", "stop", "ms/it"]
    table = [line.split() for line in lines[lines.index(header) + 1:][:4]]
    # Best first by val_loss; the names lose the grid values the type column shows; the failed run
    # says so, and keeps its grid value.
    assert table == [["gru_forecast", "lstm", "0.3", "0.25", "early_stopping", "-"],
                     ["gru_forecast", "gru", "0.5", "0.45", "completed", "0.73"],
                     ["gru_forecast", "rnn", "0.9", "0.85", "completed", "0.61"],
                     ["nodata", "(FAILED)", "peephole_lstm", "-", "-", "-", "-"]]
    text = " ".join(result.output.split())
    assert "best first by val_loss" in text and "params: type = model.cells.0.type" in text
    assert "left out to fit 80 columns: run_id, test_loss" in text
    assert "1 run(s) without val_loss" in text and "different tasks" not in text


def test_wide_terminals_show_more_and_narrow_ones_say_what_was_left_out(store):
    wide = compare(columns=220)
    assert "run_id" in wide.output and store["pipeline"] not in wide.output.splitlines()[3]
    assert "model.cells.0.type" in wide.output and "left out" not in wide.output
    narrow = compare(columns=60)
    assert max(len(line) for line in narrow.output.splitlines() if not line.startswith(("left out", "children",
                                                                                          "params:"))) <= 60
    assert "left out to fit 60 columns:" in narrow.output and "val_loss" in narrow.output


def test_forecasts_of_other_files_targets_or_horizons_are_grouped_apart(store):
    """A CO2 and an airline forecast were ranked together by their (scaled) losses."""
    out = compare("--experiment", "tables").output
    assert "table (co2_weekly.csv: co2, horizon 1), mse loss: 2 run(s)" in out  # co2 and co2-wider
    assert "table (co2_weekly.csv: co2, horizon 12), mse loss: 1 run(s)" in out
    assert "table (airline_monthly.csv: passengers, horizon 1), mse loss: 1 run(s)" in out
    assert "4 runs on 3 different tasks" in out


def test_runs_on_different_tasks_are_grouped_and_ranked_apart(store):
    """MNIST and sine runs were ranked together by one loss."""
    result = compare("--experiment", "mixed")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "runs of experiment mixed" in out
    assert "mnist, sparse_categorical_crossentropy loss: 2 run(s), best first by test_loss" in out
    assert "sine (sine_mix), mse loss: 1 run(s), best first by test_loss" in out
    assert "3 runs on 2 different tasks" in out
    records = json.loads(compare("--experiment", "mixed", "--format", "json").output)
    mnist = [r for r in records if r["group"].startswith("mnist")]
    assert [r["test_loss"] for r in mnist] == [0.2, 0.3] and [r["rank"] for r in mnist] == [1, 2]
    assert {r["group"] for r in records if r["run"] == "sine"} == {"sine (sine_mix), mse loss"}


def test_json_and_csv_keep_real_types(store):
    records = json.loads(compare("--experiment", "mixed", "--format", "json").output)
    mnist = [r for r in records if r["group"].startswith("mnist")]
    assert [r["train.shuffle"] for r in mnist] == [False, True]  # booleans, not "False"
    assert isinstance(mnist[0]["test_accuracy"], float) and isinstance(mnist[0]["rank"], int)
    cells = json.loads(compare("--format", "json").output)
    lstm = next(r for r in cells if r["run"] == "gru_forecast[type=lstm]")
    assert lstm["ms_per_iteration"] is None and lstm["stop_reason"] == "early_stopping"
    failed = next(r for r in cells if r["run"] == "nodata")
    assert failed["val_loss"] is None and failed["status"] == "FAILED" and failed["rank"] is None
    rows = list(csv.DictReader(io.StringIO(compare("--format", "csv").output)))
    lstm_row = next(r for r in rows if r["run"] == "gru_forecast[type=lstm]")
    assert lstm_row["ms_per_iteration"] == "" and float(lstm_row["val_loss"]) == 0.3
    mixed = list(csv.DictReader(io.StringIO(compare("--experiment", "mixed", "--format", "csv").output)))
    assert [r["train.shuffle"] for r in mixed if r["run"] == "mnist"] == ["false", "true"]


def test_columns_and_params_choose(store):
    result = compare("--params", "model.cells[0].*", "--columns", "test_*,status", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    lstm = next(r for r in rows if r["run"] == "gru_forecast[type=lstm]")
    assert lstm["model.cells.0.forget_bias"] == 1.0 and lstm["model.cells.0.units"] == 64
    assert next(r for r in rows if r["run"] == "gru_forecast[type=gru]")["model.cells.0.forget_bias"] is None
    assert {"test_loss", "test_mse"} <= set(lstm) and "val_loss" not in lstm and "train_loss" not in lstm
    bad = compare("--params", "model.cels.0.type")
    assert bad.exit_code == 1 and "no run has the param 'model.cels.0.type' (did you mean model.cells.0.type" \
        in bad.output
    assert "no run has the column 'nope'" in compare("--columns", "nope").output
    assert "no run has the metric 'nope'" in compare("--metric", "nope").output


def test_a_search_is_ranked_by_its_own_metric_and_direction(store):
    rows = json.loads(compare("--parent", store["search"], "--format", "json").output)
    assert [r["val_accuracy"] for r in rows] == [0.9, 0.8, 0.7]
    assert [r["train.learning_rate"] for r in rows] == [0.01, 0.001, 0.1]
    table = " ".join(compare("--parent", store["search"]).output.split())
    assert "best first by val_accuracy (higher is better)" in table
