"""The bad-data corpus: files that a valid spec points at, and the one-line error each must give.

Every case writes its file(s) into a temporary folder, loads a spec of the `table` or `arrays`
source that reads them, and expects a DataError naming the file and, where there is one, the
row and column or the array key. `rnnflow validate` never reads the files (those specs are
valid); `rnnflow show` and `rnnflow run` report the error in one line, exit 1, and leave no run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from rnnflow.cli import main
from rnnflow.data.base import load_data
from rnnflow.errors import DataError
from rnnflow.spec import load_spec

CSV = "date,co2\n" + "".join(f"2000-01-{d:02d},{300 + d}\n" for d in range(1, 29))


@dataclasses.dataclass
class Case:
    """A bad file: what to write, the data section that reads it, and the error it must give."""

    name: str
    files: Callable[[Path], None]
    data: dict
    message: str
    classify: bool = False


def text(name: str, content: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(content)


def npz(name: str, **arrays) -> Callable[[Path], None]:
    return lambda folder: np.savez(folder / name, **arrays)


def table(**data) -> dict:
    return {"type": "table", "path": "t.csv", "time": "date", "target": "co2", "window": 4,
            "split": {"validation": 0.2, "test": 0.2}, **data}


def arrays(**data) -> dict:
    return {"type": "arrays", "path": "a.npz", **data}


X = np.zeros((4, 5, 2), np.float32)
Y = np.array([0, 1, 0, 1])

CASES = [
    # --- tables
    Case("table_missing_file", lambda folder: None, table(path="nowhere.csv"),
         "nowhere.csv: file not found (data.path in the spec)"),
    Case("table_unknown_target_column", text("t.csv", CSV), table(target="co3"),
         "t.csv: no column 'co3' (data.target) (did you mean 'co2'?); the columns are: date, co2"),
    Case("table_unknown_time_column", text("t.csv", CSV), table(time="data"),
         "t.csv: no column 'data' (data.time) (did you mean 'date'?)"),
    Case("table_unknown_feature_no_suggestion", text("t.csv", CSV), table(features=["humidity"]),
         "t.csv: no column 'humidity' (data.features); the columns are: date, co2"),
    Case("table_text_in_a_value", text("t.csv", CSV.replace("2000-01-04,304", "2000-01-04,12 ppm")), table(),
         "t.csv: line 5, column 'co2': '12 ppm' is not a number"),
    Case("table_infinite_value", text("t.csv", CSV.replace("2000-01-04,304", "2000-01-04,inf")), table(),
         "t.csv: line 5, column 'co2': inf is not a finite number"),
    Case("table_bad_date", text("t.csv", CSV.replace("2000-01-03", "2000-13-45")), table(),
         "t.csv: line 4, column 'date': '2000-13-45' is not a date"),
    Case("table_empty_value_with_missing_error", text("t.csv", CSV.replace("2000-01-02,302", "2000-01-02,")),
         table(missing="error"), "t.csv: line 3, column 'co2': empty value (data.missing: error"),
    Case("table_time_twice", text("t.csv", CSV.replace("2000-01-05", "2000-01-04")), table(),
         "t.csv: line 6, column 'date': the time 2000-01-04 00:00:00 appears twice"),
    Case("table_too_few_rows", text("t.csv", CSV), table(window=20),
         "t.csv: the series has 28 rows, too few for window 20, horizon 1 and the split (validation 0.2, "
         "test 0.2): the training part (16 rows) needs at least 21"),
    Case("table_too_few_rows_for_the_horizon", text("t.csv", CSV), table(horizon=7),
         "the validation part (6 rows) needs at least 7; the test part (6 rows) needs at least 7"),
    Case("table_nothing_to_interpolate", text("t.csv", CSV.replace(",327\n", ",\n").replace(",328\n", ",\n")),
         table(split={"validation": 0.2, "test": 2}),
         "t.csv: column 'co2' has no value in the test part; nothing to interpolate from"),
    Case("table_header_only", text("t.csv", "date,co2\n"), table(), "t.csv: no rows"),
    Case("table_not_a_parquet_file", text("t.parquet", "this is no parquet file"), table(path="t.parquet"),
         "t.parquet: not a readable Parquet file ("),
    Case("table_panel_without_series_id", text("t.csv", "id,date,co2\na,2000-01-01,1\n,2000-01-02,2\n"),
         table(series="id"), "t.csv: line 3, column 'id': no series id"),
    Case("table_panel_series_too_short",
         text("t.csv", "id,date,co2\n" + "".join(f"a,2000-01-{d:02d},{d}\n" for d in range(1, 29)) + "b,2000-01-01,1\n"),
         table(series="id"), "t.csv: series 'b' has 1 rows, too few for window 4"),
    # --- arrays
    Case("arrays_missing_file", lambda folder: None, arrays(path="none.npz"), "none.npz: file not found"),
    Case("arrays_not_an_npz_file", text("a.npz", "no zip here"), arrays(), "a.npz: not a readable .npz file"),
    Case("arrays_misspelt_key", npz("a.npz", x_train=X, y_train=Y), arrays(train={"x": "x_trian", "y": "y_train"}),
         "a.npz: no array 'x_trian' (data.train.x) (did you mean 'x_train'?); the arrays are: x_train, y_train"),
    Case("arrays_ragged",
         lambda folder: np.savez(folder / "a.npz", x_train=np.array([np.zeros(3), np.zeros(5)], dtype=object),
                                 y_train=Y[:2]),
         arrays(), "a.npz: array 'x_train' holds Python objects (a ragged list of sequences?); store the "
                   "sequences zero-padded to one length, with their lengths in another array"),
    Case("arrays_lengths_out_of_range", npz("a.npz", x_train=X, y_train=Y, l=np.array([5, 9, 1, 2])),
         arrays(train={"x": "x_train", "y": "y_train", "lengths": "l"}),
         "a.npz: l[1] is 9, out of range 1-5 (the steps of 'x_train')"),
    Case("arrays_zero_length", npz("a.npz", x_train=X, y_train=Y, l=np.array([5, 0, 1, 2])),
         arrays(train={"x": "x_train", "y": "y_train", "lengths": "l"}), "a.npz: l[1] is 0, out of range 1-5"),
    Case("arrays_lengths_not_integers", npz("a.npz", x_train=X, y_train=Y, l=np.array([5.0, 1, 1, 2])),
         arrays(train={"x": "x_train", "y": "y_train", "lengths": "l"}),
         "a.npz: array 'l' is shaped (4,) of float64; expected 4 integer lengths"),
    Case("arrays_labels_not_integers", npz("a.npz", x_train=X, y_train=np.array([0, 1, 0.5, 1])), arrays(),
         "a.npz: y_train[2] is 0.5; class labels are integers from 0"),
    Case("arrays_negative_label", npz("a.npz", x_train=X, y_train=np.array([0, 1, -1, 1])), arrays(),
         "a.npz: y_train[2] is -1; class labels are integers from 0"),
    Case("arrays_labels_as_text", npz("a.npz", x_train=X, y_train=np.array(["a", "b", "a", "b"])), arrays(),
         "a.npz: array 'y_train' is shaped (4,) of <U1; class labels are integers from 0"),
    Case("arrays_too_few_labels", npz("a.npz", x_train=X, y_train=Y[:3]), arrays(),
         "a.npz: array 'y_train' is shaped (3,) of int64 for 4 sequences in 'x_train'"),
    Case("arrays_nan_input", npz("a.npz", x_train=np.where(np.arange(40).reshape(4, 5, 2) == 13, np.nan, X),
                                 y_train=Y), arrays(), "a.npz: x_train[1, 1, 1] is nan, not a finite number"),
    Case("arrays_inputs_one_dimensional", npz("a.npz", x_train=np.zeros(4), y_train=Y), arrays(),
         "a.npz: array 'x_train' is shaped (4,) of float64; expected numbers shaped (sequences, steps, features)"),
    Case("arrays_test_with_other_features", npz("a.npz", x_train=X, y_train=Y, x_test=np.zeros((2, 5, 3)),
                                                y_test=Y[:2]),
         arrays(test={"x": "x_test", "y": "y_test"}), "a.npz: x_test has 3 features per step, x_train has 2"),
    Case("arrays_label_without_a_name", npz("a.npz", x_train=X, y_train=np.array([0, 1, 2, 1])),
         arrays(class_names=["a", "b"]), "a.npz: y_train[2] is class 2, but data.class_names names 2 classes (0-1)"),
    Case("arrays_regression_targets_with_nan", npz("a.npz", x_train=X, y_train=np.array([0.5, np.nan, 1, 2])),
         arrays(target_type="regression"), "a.npz: y_train[1] is nan, not a finite number"),
]


def spec_file(folder: Path, case: Case) -> Path:
    regression = case.data["type"] == "table" or case.data.get("target_type") == "regression"
    spec = {"name": case.name, "data": case.data,
            "model": {"cells": [{"type": "gru", "units": 2}], "output": "last"},
            "train": {"iterations": 1, "loss": "mse" if regression else "sparse_categorical_crossentropy"},
            "tracking": {"experiment": "bad-data"}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def bad(tmp_path):
    def make(case: Case) -> Path:
        case.files(tmp_path)
        return spec_file(tmp_path, case)

    return make


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_data_gives_one_located_line(case, bad, tmp_path):
    spec = load_spec(bad(case))  # a valid spec: validation reads no file
    with pytest.raises(DataError) as caught:
        load_data(spec)
    message = str(caught.value)
    assert case.message in message, message
    assert str(tmp_path) in message and "\n" not in message  # names the file, on one line


def test_the_corpus_covers_both_sources():
    kinds = [c.data["type"] for c in CASES]
    assert kinds.count("table") >= 12 and kinds.count("arrays") >= 12


@pytest.mark.parametrize("name", ["table_unknown_target_column", "arrays_lengths_out_of_range"])
def test_validate_passes_show_and_run_fail_in_one_line_and_leave_no_run(name, bad, mlflow_store, client):
    case = next(c for c in CASES if c.name == name)
    spec = bad(case)
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(spec)]).exit_code == 0
    for command in (["show", str(spec)], ["run", str(spec), "-q"]):
        result = runner.invoke(main, command)
        assert result.exit_code == 1, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rnnflow: error: ") and case.message in lines[0], lines
        assert "Traceback" not in result.output
    assert client.get_experiment_by_name("bad-data") is None


def test_a_table_in_parquet_reads_like_its_csv(tmp_path):
    """Same rows, same samples: the format is the file's extension, nothing else."""
    import pandas as pd

    (tmp_path / "t.csv").write_text(CSV)
    pd.read_csv(tmp_path / "t.csv", parse_dates=["date"]).to_parquet(tmp_path / "t.parquet")
    loaded = {}
    for path in ("t.csv", "t.parquet"):
        spec = load_spec(spec_file(tmp_path, Case("p", lambda folder: None, table(path=path), "")))
        loaded[path] = load_data(spec)
    for split in ("train", "val", "test"):
        a, b = getattr(loaded["t.csv"], split), getattr(loaded["t.parquet"], split)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.time, b.time)
