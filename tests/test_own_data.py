"""Own data: the `table` source (CSV / Parquet forecasting) and the `arrays` source (NPZ sequences).

Tiny runs of both, the chronological splits and the scaler that sees only training rows, the
forecast metrics against a naive baseline computed here by hand, the MLflow datasets, and the
model round trips (rnnflow predict, mlflow.pyfunc) in the data's own units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from rnnflow.cli import main
from rnnflow.data.base import load_data
from rnnflow.spec import load_spec

DAYS = 120


def daily_series(level: float = 50.0, days: int = DAYS, seed: int = 0, empty: tuple[int, ...] = (10, 40)) -> pd.DataFrame:
    """A daily series: a trend, a weekly season and noise, with a few empty values."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    values = level + 0.05 * t + 3 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 0.3, days)
    values[list(empty)] = np.nan
    return pd.DataFrame({"day": pd.date_range("2020-01-01", periods=days, freq="D").strftime("%Y-%m-%d"),
                         "value": values})


def write_spec(folder: Path, data: dict, model: dict | None = None, train: dict | None = None, **extra) -> Path:
    spec = {"name": "own", "seed": 3, "data": data,
            "model": model or {"cells": [{"type": "gru", "units": 6}], "output": "last"},
            "train": {"iterations": 8, "batch_size": 16, "learning_rate": 0.01, **(train or {})},
            "tracking": {"experiment": "own-data"}, **extra}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


TABLE = {"type": "table", "path": "series.csv", "time": "day", "target": "value", "window": 14, "horizon": 3,
         "season": 7, "split": {"validation": 0.2, "test": 0.2}}


@pytest.fixture(scope="module")
def table_run(mlflow_store, tmp_path_factory):
    """A tiny run of a single daily series (CSV, empty values interpolated)."""
    from rnnflow.runner import run

    folder = tmp_path_factory.mktemp("table")
    daily_series().to_csv(folder / "series.csv", index=False)
    spec = write_spec(folder, TABLE)
    return run(spec), folder


def test_a_table_run_logs_every_split_with_its_naive_baseline(table_run, client):
    result, folder = table_run
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for split in ("train", "val", "test"):
        for name in ("loss", "mae", "rmse", "mase", "naive_mae"):
            assert np.isfinite(metrics[f"{split}_{name}"]), f"{split}_{name}"
        assert metrics[f"{split}_mase"] == pytest.approx(metrics[f"{split}_mae"] / metrics[f"{split}_naive_mae"])
    # The seasonal naive forecast, by hand: the value a week before each test target (120 rows:
    # 24 test rows, 3 steps ahead -> the 22 windows whose 3 targets are all test rows).
    values = daily_series()["value"].to_numpy()
    test_rows = np.arange(DAYS - 24, DAYS)
    errors = [abs(values[t] - values[t - 7]) for first in test_rows[:-2] for t in range(first, first + 3)]
    assert metrics["test_naive_mae"] == pytest.approx(np.mean(errors), rel=1e-5)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"predictions.csv", "predictions.png", "loss.png"} <= artifacts
    frame = pd.read_csv(client.download_artifacts(result.run_id, "predictions.csv", str(folder)))
    assert list(frame.columns) == ["sequence", "horizon", "day", "value", "value_forecast", "value_naive"]
    assert frame["day"].iloc[0] == "2020-04-06" and frame["horizon"].iloc[:3].tolist() == [1, 2, 3]


def test_a_table_run_records_each_part_as_an_mlflow_dataset(table_run, client):
    import json

    result, folder = table_run
    inputs = client.get_run(result.run_id).inputs.dataset_inputs
    contexts = {[t.value for t in i.tags if t.key == "mlflow.data.context"][0]: i.dataset for i in inputs}
    assert set(contexts) == {"train", "val", "test"}
    rows = {split: json.loads(d.profile)["num_rows"] for split, d in contexts.items()}
    assert rows == {"train": 72, "val": 24, "test": 24}
    for dataset in contexts.values():
        assert dataset.name == "series" and dataset.source_type == "local"
        assert json.loads(dataset.source)["uri"] == str(folder / "series.csv")
        assert [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]] == ["day", "value"]
    assert len({d.digest for d in contexts.values()}) == 3


def test_a_table_run_stops_early_on_its_own_validation_part_and_keeps_the_best_mase(mlflow_store, client, tmp_path):
    """The table's validation part (data.split) is what early stopping and restore-best watch,
    here on a forecast metric the task logs (val_mase), not one of train.metrics."""
    from rnnflow.runner import run

    daily_series().to_csv(tmp_path / "series.csv", index=False)
    spec = write_spec(tmp_path, TABLE, train={"iterations": 12, "learning_rate": 0.05,
                                              "early_stopping": {"monitor": "val_mase", "patience": None,
                                                                 "restore_best": True}},
                      evaluate={"every": 3, "steps": []})
    result = run(spec)
    finished = client.get_run(result.run_id)
    metrics, tags = finished.data.metrics, finished.data.tags
    history = [m.value for m in client.get_metric_history(result.run_id, "val_mase")]
    assert len(history) >= 4  # every 3 iterations (and the restored weights' value when they are not the last)
    assert metrics["best_val_mase"] == pytest.approx(min(history))
    assert metrics["val_mase"] == pytest.approx(metrics["best_val_mase"], rel=1e-5)  # the best weights
    assert tags["rnnflow.weights"] == f"best@iteration {int(metrics['best_iteration'])}"


def test_predict_continues_the_series_in_its_own_units(table_run, tmp_path):
    """rnnflow predict reads the same columns, forecasts past the end, dates continuing daily; the
    numbers are the logged model's on the raw window, as mlflow.pyfunc gives them too."""
    import mlflow.pyfunc

    result, folder = table_run
    newer = daily_series(level=80.0, days=30, seed=5, empty=(3,))
    newer["day"] = pd.date_range("2021-03-01", periods=30, freq="D").strftime("%Y-%m-%d")
    newer.to_csv(tmp_path / "newer.csv", index=False)
    out = CliRunner().invoke(main, ["predict", "--run", result.run_id, "--input", str(tmp_path / "newer.csv"),
                                    "--output", str(tmp_path / "out.csv")])
    assert out.exit_code == 0, out.output
    written = pd.read_csv(tmp_path / "out.csv")
    assert list(written.columns) == ["day", "horizon", "value"]
    assert written["day"].tolist() == ["2021-03-31", "2021-04-01", "2021-04-02"]
    window = newer["value"].interpolate().to_numpy(np.float32)[-14:].reshape(1, 14, 1)
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    served = np.asarray(model.predict(window))[0]
    np.testing.assert_allclose(written["value"].to_numpy(), served, rtol=1e-5)
    np.testing.assert_allclose(served, np.asarray(result.built.model(window))[0], rtol=1e-5)
    # In the data's units (the series trained on runs from 50 to 56), not scaled ones (around 0).
    assert np.all((served > 40) & (served < 100))
    summary = CliRunner().invoke(main, ["predict", "--run", result.run_id])
    assert summary.exit_code == 0, summary.output
    lines = summary.output.splitlines()
    assert lines[0].startswith("forecasts of value for 3 step(s) after the end of the series in series.csv")
    assert lines[1].split() == ["day", "horizon", "value"] and lines[2].split()[:2] == ["2020-04-30", "1"]


def panel(folder: Path) -> Path:
    """Two series in one Parquet file, rows interleaved and shuffled: 'low' near 10, 'high' near 1000."""
    frames = []
    for name, level in (("low", 10.0), ("high", 1000.0)):
        frame = daily_series(level=level, days=60, empty=())
        frame.insert(0, "store", name)
        frame["price"] = level / 10 + np.arange(60) % 3
        frames.append(frame)
    table = pd.concat(frames).sample(frac=1.0, random_state=0)
    table["day"] = pd.to_datetime(table["day"])
    table.to_parquet(folder / "panel.parquet")
    return folder / "panel.parquet"


def test_panel_windows_never_cross_series_and_parts_follow_time(tmp_path):
    panel(tmp_path)
    spec = load_spec(write_spec(tmp_path, {**TABLE, "path": "panel.parquet", "series": "store",
                                           "features": ["price"], "horizon": 2, "season": None}))
    data = load_data(spec)
    for split in data.splits().values():
        for name, low, high in (("low", 0, 100), ("high", 900, 1100)):
            rows = split.series == name
            assert rows.any()
            assert ((split.x[rows, :, 0] > low) & (split.x[rows, :, 0] < high)).all()  # only its own values
            assert ((split.y[rows] > low) & (split.y[rows] < high)).all()
    assert data.train.x.shape[2] == 2  # the target, then the feature
    for name in ("low", "high"):
        times = {k: s.time[s.series == name] for k, s in data.splits().items()}
        assert times["train"].max() < times["val"].min() and times["val"].max() < times["test"].min()
        # 60 rows: 12 test, 12 validation, 36 training; a sample's 2 targets lie in one part.
        counts = {k: int((s.series == name).sum()) for k, s in data.splits().items()}
        assert counts == {"train": 36 - 14 - 1, "val": 11, "test": 11}
    # A validation sample may read training rows: its window reaches back before its part.
    first_val = data.val.time[data.val.series == "low"][0, 0]
    assert first_val == data.forecast.parts["val"]["day"][data.forecast.parts["val"]["store"] == "low"].min()


def test_a_panel_parquet_run_trains_and_predicts_each_series(mlflow_store, tmp_path):
    from rnnflow.runner import run

    panel(tmp_path)
    spec = write_spec(tmp_path, {**TABLE, "path": "panel.parquet", "series": "store", "features": ["price"],
                                 "level": "last"})
    result = run(spec)
    assert np.isfinite(result.metrics["test_mase"])
    out = CliRunner().invoke(main, ["predict", "--run", result.run_id, "--output", str(tmp_path / "f.csv")])
    assert out.exit_code == 0, out.output
    forecasts = pd.read_csv(tmp_path / "f.csv")
    assert list(forecasts.columns) == ["store", "day", "horizon", "value"]
    assert forecasts["store"].tolist() == ["high"] * 3 + ["low"] * 3 or \
        forecasts["store"].tolist() == ["low"] * 3 + ["high"] * 3
    assert set(forecasts["day"]) == {"2020-03-01", "2020-03-02", "2020-03-03"}
    high = forecasts[forecasts["store"] == "high"]["value"]
    assert (high > 900).all()  # the level of its own series, in its own units


@pytest.mark.parametrize("level", ["none", "last"])
def test_the_scaler_sees_only_training_rows(tmp_path, level):
    """Huge values only in the validation and test rows must not move the fitted statistics."""
    frame = daily_series(empty=())
    frame.loc[DAYS - 48:, "value"] = 1e6 + np.arange(48)
    frame.to_csv(tmp_path / "series.csv", index=False)
    spec = load_spec(write_spec(tmp_path, {**TABLE, "level": level}))
    data = load_data(spec)
    scaling = data.scaling
    if level == "none":
        training_rows = frame["value"].to_numpy()[: DAYS - 48]
        assert scaling.input_mean[0] == pytest.approx(training_rows.mean())
        assert scaling.input_variance[0] == pytest.approx(training_rows.var())
        assert scaling.output_mean.tolist() == pytest.approx([training_rows.mean()] * 3)
    else:
        # Relative to each window's last value, over the training windows only.
        x = data.train.x[..., 0].astype(np.float64)
        relative = x - x[:, -1:]
        assert scaling.input_mean[0] == pytest.approx(relative.mean())
        changes = data.train.y - data.train.x[:, -1:, 0]
        assert scaling.output_variance == pytest.approx(changes.var(axis=0), rel=1e-5)
    assert scaling.input_mean[0] < 1e3 and scaling.output_variance.max() < 1e3


def test_minmax_scaling_is_fitted_on_training_rows_too(tmp_path):
    frame = daily_series(empty=())
    frame.loc[DAYS - 10:, "value"] = -1e6
    frame.to_csv(tmp_path / "series.csv", index=False)
    data = load_data(load_spec(write_spec(tmp_path, {**TABLE, "scale": "minmax"})))
    training_rows = frame["value"].to_numpy()[: DAYS - 48]
    assert data.scaling.input_mean[0] == pytest.approx(training_rows.min())
    assert data.scaling.input_variance[0] == pytest.approx(np.ptp(training_rows) ** 2)


# ------------------------------------------------------------------------------------------ arrays


def sequences(n: int, steps: int, seed: int, min_length: int = 3):
    """Class 1 sequences rise, class 0 fall; zero-padded past random lengths (junk in test files)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    lengths = rng.integers(min_length, steps + 1, n)
    ramp = np.linspace(0, 1, steps)[None, :] * np.where(y == 1, 1.0, -1.0)[:, None]
    x = np.stack([ramp + rng.normal(0, 0.1, (n, steps)), rng.normal(5, 2, (n, steps))], axis=-1)
    x[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    return x.astype(np.float32), y, lengths


@pytest.fixture(scope="module")
def arrays_run(mlflow_store, tmp_path_factory):
    """Variable-length sequences; test sequences (20 steps) longer than every training one (12)."""
    from rnnflow.runner import run

    folder = tmp_path_factory.mktemp("arrays")
    x, y, lengths = sequences(40, 12, seed=0)
    x_test, y_test, lengths_test = sequences(10, 20, seed=1, min_length=13)
    np.savez(folder / "seq.npz", x_train=x, y_train=y, len_train=lengths, x_test=x_test, y_test=y_test,
             len_test=lengths_test)
    spec = write_spec(folder, {"type": "arrays", "path": "seq.npz",
                               "train": {"x": "x_train", "y": "y_train", "lengths": "len_train"},
                               "test": {"x": "x_test", "y": "y_test", "lengths": "len_test"},
                               "split": {"validation": 0.25}, "class_names": ["falls", "rises"]},
                      train={"loss": "sparse_categorical_crossentropy"})
    return run(spec), folder


def test_an_arrays_run_with_longer_test_sequences(arrays_run, client):
    result, folder = arrays_run
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for split in ("train", "val", "test"):
        assert 0 <= run.data.metrics[f"{split}_accuracy"] <= 1
    matrix = pd.read_csv(client.download_artifacts(result.run_id, "confusion_matrix.csv", str(folder)))
    assert list(matrix.columns) == ["true\\predicted", "falls", "rises"] and matrix.iloc[:, 1:].to_numpy().sum() == 10
    assert "confusion_matrix.png" in {a.path for a in client.list_artifacts(result.run_id)}
    assert result.built.model.get_layer("inputs").output.shape[1] is None
    inputs = client.get_run(result.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["seq"] * 3


def test_arrays_keep_tf1_variable_length_semantics(arrays_run):
    """Steps past a length change nothing: the final state is the last valid step's."""
    result, _ = arrays_run
    x, _, lengths = sequences(6, 20, seed=7, min_length=4)
    junk = x.copy()
    junk[np.arange(20)[None, :] >= lengths[:, None]] = 99.0
    model = result.built.model
    clean = np.asarray(model({"inputs": x, "lengths": lengths}))
    np.testing.assert_allclose(np.asarray(model({"inputs": junk, "lengths": lengths})), clean, rtol=1e-5)
    cut = np.asarray(model({"inputs": x[:1, : lengths[0]], "lengths": lengths[:1]}))
    np.testing.assert_allclose(cut, clean[:1], rtol=1e-5, atol=1e-6)


def test_arrays_predict_and_pyfunc_take_sequences_of_any_length(arrays_run, tmp_path):
    import mlflow.pyfunc

    result, folder = arrays_run
    x, _, lengths = sequences(3, 30, seed=9, min_length=25)
    np.savez(tmp_path / "new.npz", x_test=x, len_test=lengths)
    out = CliRunner().invoke(main, ["predict", "--run", result.run_id, "--input", str(tmp_path / "new.npz"),
                                    "--output", str(tmp_path / "classes.csv")])
    assert out.exit_code == 0, out.output
    written = pd.read_csv(tmp_path / "classes.csv")
    assert list(written.columns) == ["sequence", "class", "probability", "p_falls", "p_rises"]
    logits = np.asarray(mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model").predict(
        {"inputs": x, "lengths": lengths.astype(np.int32)}))
    assert logits.shape == (3, 2)
    assert written["class"].tolist() == [["falls", "rises"][i] for i in logits.argmax(axis=1)]
    np.testing.assert_allclose(written[["p_falls", "p_rises"]].sum(axis=1), 1.0, rtol=1e-5)
    summary = CliRunner().invoke(main, ["predict", "--run", result.run_id])
    assert summary.exit_code == 0
    assert summary.output.splitlines()[:2] == [
        "the class of 10 sequence(s) from the run's test inputs; outputs (10, 2)",
        summary.output.splitlines()[1]]
    assert summary.output.splitlines()[1].split() == ["sequence", "class", "probability", "p_falls", "p_rises"]


def test_a_fresh_process_loads_the_model_through_rnnflows_pyfunc_loader(arrays_run, tmp_path):
    """mlflow.pyfunc (and so `mlflow models serve`) in a process that never imported rnnflow: the
    model's sequence mask is rnnflow's own layer, and so is a forecast's window level (a model
    saved here with `level: mean`'s layers); Keras loads them only once they are registered."""
    import json
    import os
    import subprocess
    import sys

    import keras

    from conftest import ROOT
    from rnnflow import mlflow_model
    from rnnflow.preprocessing import AddLevel, WindowLevel

    result, _ = arrays_run
    x, _, lengths = sequences(2, 25, seed=4, min_length=20)
    np.savez(tmp_path / "in.npz", x=x, lengths=lengths.astype(np.int32))
    windows = keras.Input((None, 1))
    relative, level = WindowLevel(1, "mean")(windows)
    leveled = keras.Model(windows, AddLevel()(keras.layers.Dense(2)(keras.layers.GRU(3)(relative)), level))
    mlflow_model.save_model(leveled, str(tmp_path / "leveled"))
    window = (50 + np.arange(12, dtype=np.float32)).reshape(1, 12, 1)
    code = ("import json, sys, numpy as np, mlflow.pyfunc\n"
            "a = np.load(sys.argv[2])\n"
            "out = mlflow.pyfunc.load_model(sys.argv[1]).predict({'inputs': a['x'], 'lengths': a['lengths']})\n"
            "level = mlflow.pyfunc.load_model(sys.argv[3]).predict(np.asarray(json.loads(sys.argv[4]), 'float32'))\n"
            "print(json.dumps([sorted(m for m in sys.modules if m.startswith('rnnflow.')), np.asarray(out).tolist(),"
            " np.asarray(level).tolist()]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, f"runs:/{result.run_id}/model", str(tmp_path / "in.npz"),
                           str(tmp_path / "leveled"), json.dumps(window.tolist())],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    modules, served, leveled_served = json.loads(done.stdout.strip().splitlines()[-1])
    assert "rnnflow.mlflow_model" in modules and "rnnflow.wrappers" in modules
    expected = np.asarray(result.built.model({"inputs": x, "lengths": lengths}))
    np.testing.assert_allclose(np.asarray(served), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(leveled_served), np.asarray(leveled(window)), rtol=1e-5, atol=1e-5)


def test_the_arrays_scaler_sees_only_valid_training_steps(tmp_path):
    x, y, lengths = sequences(40, 12, seed=0)
    x[np.arange(12)[None, :] >= lengths[:, None]] = 1e6  # junk past each length
    x_test, y_test, lengths_test = sequences(10, 12, seed=1)
    np.savez(tmp_path / "seq.npz", x_train=x, y_train=y, len_train=lengths, x_test=x_test * 1e6, y_test=y_test,
             len_test=lengths_test)
    spec = load_spec(write_spec(tmp_path, {"type": "arrays", "path": "seq.npz",
                                           "train": {"x": "x_train", "y": "y_train", "lengths": "len_train"},
                                           "test": {"x": "x_test", "y": "y_test", "lengths": "len_test"}},
                                train={"loss": "sparse_categorical_crossentropy", "validation": 10}))
    data = load_data(spec)
    assert len(data.val) == 10 and len(data.train) == 30
    valid = data.train.x[np.arange(12)[None, :] < data.train.lengths[:, None]]  # after the validation carve
    np.testing.assert_allclose(data.scaling.input_mean, valid.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(data.scaling.input_variance, valid.var(axis=0), rtol=1e-5)


def test_equal_length_regression_arrays_answer_in_their_units(mlflow_store, tmp_path):
    from rnnflow.runner import run

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 8)).astype(np.float32)  # (sequences, steps): one feature
    y = np.stack([1000 + 10 * x.sum(axis=1), 5 + x[:, -1]], axis=1)
    np.savez(tmp_path / "r.npz", x=x, y=y)
    spec = write_spec(tmp_path, {"type": "arrays", "path": "r.npz", "train": {"x": "x", "y": "y"},
                                 "split": {"test": 12}, "target_type": "regression"},
                      train={"metrics": ["mae"]})
    result = run(spec)
    assert result.built.masked is False and result.metrics["test_mae"] > 0
    pred = np.asarray(result.built.model(x[:, :, None]))
    assert pred.shape == (60, 2) and abs(pred[:, 0].mean() - 1000) < 20 and abs(pred[:, 1].mean() - 5) < 3


# ----------------------------------------------------------------------------------------- predict


def test_predict_on_a_pipeline_run_lists_its_children(mlflow_store, client):
    import mlflow

    experiment = mlflow.set_experiment("own-data-pipeline")
    with mlflow.start_run(run_name="cells", tags={"rnnflow.role": "pipeline"}) as parent:
        with mlflow.start_run(run_name="forecast-gru", nested=True) as child:
            pass
    assert experiment.experiment_id
    out = CliRunner().invoke(main, ["predict", "--run", parent.info.run_id])
    assert out.exit_code == 1
    assert out.stderr.strip() == (
        f"rnnflow: error: run {parent.info.run_id} is a pipeline run (cells): it has no model of its own; its "
        f"children are: {child.info.run_id} (forecast-gru). Predict with one of them: rnnflow predict --run CHILD_ID")


def test_the_time_of_forecasts_continues_the_frequency():
    from rnnflow.data.table import _continue

    monthly = pd.date_range("1959-01-01", periods=24, freq="MS").to_numpy()
    assert [str(t)[:10] for t in _continue(monthly, 2)] == ["1961-01-01", "1961-02-01"]
    weekly = pd.date_range("2001-12-01", periods=5, freq="W-SAT").to_numpy()
    assert [str(t)[:10] for t in _continue(weekly, 1)] == ["2002-01-05"]
    assert _continue(np.array([1.0, 3.0, 5.0]), 2).tolist() == [7.0, 9.0]
    gaps = pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-04", "2020-01-05"]).to_numpy()  # irregular
    assert [str(t)[:10] for t in _continue(gaps, 1)] == ["2020-01-06"]
