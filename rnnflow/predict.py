"""`rnnflow predict`: a run's logged model on new data (or on the run's own), as a table.

Inputs are read in the format of the run's source:

- `table`: a CSV or Parquet file with the spec's columns (by name). The last `window` rows of
  each series give the next `horizon` values of each target, with their times (continuing the
  time column's frequency) and series ids. Without `--input`, the spec's own file: the forecast
  beyond the end of the data.
- `arrays`: an NPZ file with the spec's keys (the test arrays' names, else the training ones'),
  giving each sequence's class and its probability (or the predicted values).
- any source: `.npy`, `.npz` (key `inputs`, optional `lengths`), `.csv` (one sequence: a row per
  step) or `.json` arrays. Without `--input`: the run's test inputs (validation without a test split).

The predictions are written as a CSV with a header (`--output FILE.csv`; `.npy` and `.json`
hold the raw array), or summarized: the shape and the first rows.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rnnflow.errors import DataError, RnnflowError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

_FORMATS = ".npy, .npz (key 'inputs', optional 'lengths'), .csv (one sequence: a row per step) or .json"
SHOWN_ROWS = 10


@dataclasses.dataclass
class Predictions:
    """Predictions as a table.

    Attributes:
        header: the column names.
        rows: one list of values per row.
        raw: the model's outputs, as an array.
        what: one line saying what was predicted from what.
    """

    header: list[str]
    rows: list[list[Any]]
    raw: np.ndarray
    what: str


def load_run_model(run_id: str):
    """The Keras model logged by a run.

    Raises:
        RnnflowError: when the run logged no model.
    """
    # rnnflow's modules first: they import TensorFlow quietly, and mlflow.keras would import it loudly.
    from rnnflow.mlflow_model import register_custom_objects  # isort: skip

    register_custom_objects()  # custom objects must be registered before loading
    import mlflow.keras  # isort: skip
    from mlflow.exceptions import MlflowException  # isort: skip

    try:
        return mlflow.keras.load_model(f"runs:/{run_id}/model")
    except MlflowException as error:
        raise RnnflowError(f"cannot load the model of run {run_id}: {error.message}") from None
    except OSError as error:
        raise RnnflowError(f"cannot load the model of run {run_id}: {error}") from None


def check_run(run_id: str) -> None:
    """Refuse a run that has no model to predict with: a missing run, or a pipeline's parent run.

    Raises:
        RnnflowError: saying which, and for a pipeline run, listing its children.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise RnnflowError(f"cannot load the model of run {run_id}: {error.message}") from None
    if run.data.tags.get("rnnflow.role") != "pipeline":
        return
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'",
                                  order_by=["attributes.start_time ASC"])
    listed = ", ".join(f"{c.info.run_id} ({c.info.run_name})" for c in children) or "none yet"
    raise RnnflowError(f"run {run_id} is a pipeline run ({run.info.run_name}): it has no model of its own; "
                       f"its children are: {listed}. Predict with one of them: rnnflow predict --run CHILD_ID")


def read_inputs(path: Path) -> Any:
    """Read model inputs from a file (see `_FORMATS`).

    Raises:
        DataError: naming the file and what was expected.
    """
    import numpy as np

    suffix = path.suffix.lower()
    lengths = None
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "inputs" not in archive.files:
                    raise DataError(f"{path}: no 'inputs' array (found {', '.join(archive.files) or 'nothing'})")
                x = archive["inputs"]
                lengths = archive["lengths"] if "lengths" in archive.files else None
        elif suffix == ".csv":
            x = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32)
        elif suffix == ".json":
            content = json.loads(path.read_text())
            if isinstance(content, dict):
                x, lengths = content.get("inputs"), content.get("lengths")
            else:
                x = content
            x = np.asarray(x, dtype=np.float32)
        else:
            raise DataError(f"{path}: unknown input format '{suffix}'; use {_FORMATS}")
    except DataError:
        raise
    except (OSError, ValueError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read inputs ({error}); expected {_FORMATS}") from None
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{path}: the inputs are not an array of numbers; expected {_FORMATS}") from None
    if x.ndim == 2:  # one sequence
        x = x[None]
    if x.ndim != 3:
        raise DataError(f"{path}: inputs have shape {x.shape}; expected (sequences, steps, features)")
    if lengths is not None:
        return {"inputs": x, "lengths": np.asarray(lengths, dtype=np.int32)}
    return x


def check_inputs(model, inputs: Any, source: str) -> Any:
    """Check inputs against the model's input shape (and add lengths when the model needs them)."""
    import numpy as np

    x = inputs["inputs"] if isinstance(inputs, dict) else inputs
    expected = next(t for t in model.inputs if t.name.startswith("inputs")).shape
    steps, features = expected[1], expected[2]
    if x.shape[2] != features or (steps is not None and x.shape[1] != steps):
        raise DataError(f"{source}: inputs have shape {tuple(x.shape)}; this model reads "
                        f"(sequences, {steps if steps is not None else 'any number of steps'}, {features})")
    if not np.isfinite(x).all():
        raise DataError(f"{source}: the inputs hold NaN or infinite values")
    needs_lengths = len(model.inputs) > 1
    if needs_lengths and not isinstance(inputs, dict):
        return {"inputs": x, "lengths": np.full((x.shape[0],), x.shape[1], np.int32)}
    if not needs_lengths and isinstance(inputs, dict):
        return x
    if needs_lengths:
        lengths = inputs["lengths"]
        if lengths.shape != (x.shape[0],) or (lengths < 1).any() or (lengths > x.shape[1]).any():
            raise DataError(f"{source}: lengths must be one per sequence, from 1 to {x.shape[1]}")
    return inputs


def forward(model, inputs: Any, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs at inference (no dropout), in batches."""
    import numpy as np

    x = inputs["inputs"] if isinstance(inputs, dict) else inputs
    parts = []
    for start in range(0, max(len(x), 1), batch_size):
        rows = slice(start, start + batch_size)
        batch = {k: v[rows] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[rows]
        parts.append(np.asarray(model(batch, training=False)))
    return np.concatenate(parts, axis=0)


def predict_run(run_id: str, input_file: Path | None, output_file: Path | None, echo=click.echo) -> Predictions:
    """Predict with a run's model; write the table to `output_file`, or print a summary.

    Raises:
        RnnflowError: the run has no model (or is a pipeline run); DataError: unreadable inputs.
    """
    from rnnflow.store import check_reachable, spec_of_run, tracking_uri

    check_reachable(tracking_uri(None))  # else MLflow retries a refused connection for minutes
    check_run(run_id)
    spec = spec_of_run(run_id)
    model = load_run_model(run_id)
    if spec.data.type == "table":
        result = _forecast(spec, model, input_file)
    else:
        inputs, source = _inputs(spec, input_file)
        result = _table(spec, forward(model, check_inputs(model, inputs, source)), source)
    if output_file is None:
        echo(summary(result))
    else:
        write(result, output_file)
        echo(f"wrote {len(result.rows)} rows ({result.what}) to {output_file}")
    return result


def _inputs(spec, input_file: Path | None) -> tuple[Any, str]:
    """The inputs to predict from and where they came from."""
    if input_file is None:
        from rnnflow.data.base import load_data
        from rnnflow.steps import pick_split

        split = pick_split(load_data(spec), None)
        name = "test" if spec.data.has_test else "validation"
        return split.inputs(), f"the run's {name} inputs"
    if spec.data.type == "arrays" and input_file.suffix.lower() == ".npz":
        return _arrays_inputs(spec.data, input_file), str(input_file)
    return read_inputs(input_file), str(input_file)


def _arrays_inputs(source, path: Path) -> Any:
    """Inputs from an NPZ file under the names the spec gives its arrays (test names first)."""
    from rnnflow.data.arrays import read_npz

    arrays = read_npz(path)
    for keys in (source.test, source.train):
        if keys is not None and keys.x in arrays and not isinstance(arrays[keys.x], str):
            x = arrays[keys.x]
            if x.ndim == 2:
                x = x[:, :, None]
            if keys.lengths is not None and keys.lengths in arrays:
                return {"inputs": x.astype("float32"), "lengths": arrays[keys.lengths].astype("int32")}
            return x.astype("float32")
    if "inputs" in arrays:
        return read_inputs(path)
    names = [k.x for k in (source.test, source.train) if k is not None]
    raise DataError(f"{path}: no array named {' or '.join(repr(n) for n in names)} (as in the spec) or 'inputs'; "
                    f"the arrays are: {', '.join(arrays) or 'none'}")


def _forecast(spec, model, input_file: Path | None) -> Predictions:
    """The next `horizon` values of each series after the end of a table."""
    from rnnflow.data.table import resolve_file
    from rnnflow.steps import _time_text

    source = spec.data
    path = input_file if input_file is not None else resolve_file(source.path, spec.base_dir)
    latest = source.latest(path)
    raw = forward(model, check_inputs(model, latest.x, str(path)))
    horizon, targets = source.horizon, source.targets
    values = raw.reshape(len(raw), horizon, len(targets))
    header = [*([source.series] if source.series else []), source.time or "step", "horizon", *targets]
    rows = []
    for i in range(len(raw)):
        for h in range(horizon):
            when = _time_text(latest.times[i, h])
            rows.append([*([latest.series[i]] if source.series else []), when, h + 1,
                         *(float(v) for v in values[i, h])])
    count = f"{len(raw)} series" if source.series else "the series"
    what = f"forecasts of {', '.join(targets)} for {horizon} step(s) after the end of {count} in {path.name}"
    return Predictions(header, rows, raw, what)


def _table(spec, raw: np.ndarray, source: str) -> Predictions:
    """Outputs as rows: class and probability for classifiers, values for regression."""
    import numpy as np

    per_step = raw.ndim == 3
    index = ["sequence", "step"] if per_step else ["sequence"]
    positions = list(np.ndindex(raw.shape[:-1]))
    if spec.data.task == "classification":
        shifted = raw - raw.max(axis=-1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
        classes = probabilities.argmax(axis=-1)
        names = _class_names(spec, raw.shape[-1])
        columns = [f"p_{name}" for name in names] if raw.shape[-1] <= 20 else []
        header = [*index, "class", "probability", *columns]
        rows = [[*at, names[classes[at]], float(probabilities[at][classes[at]]),
                 *(map(float, probabilities[at]) if columns else [])] for at in positions]
        what = f"the class of {raw.shape[0]} sequence(s){' at every step' if per_step else ''} from {source}"
    else:
        header = [*index, *(["prediction"] if raw.shape[-1] == 1 else
                            [f"prediction_{j}" for j in range(raw.shape[-1])])]
        rows = [[*at, *map(float, raw[at])] for at in positions]
        what = f"predictions for {raw.shape[0]} sequence(s) from {source}"
    return Predictions(header, rows, raw, what)


def _class_names(spec, classes: int) -> list[str]:
    names = getattr(spec.data, "class_names", None)
    if isinstance(names, list) and len(names) == classes:
        return names
    return [str(i) for i in range(classes)]


def write(result: Predictions, path: Path) -> None:
    """Write the table as CSV with a header (`.npy` / `.json`: the raw outputs)."""
    import numpy as np

    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            np.save(path, result.raw)
        elif suffix == ".json":
            path.write_text(json.dumps(result.raw.tolist()))
        else:
            from rnnflow.steps import write_csv

            write_csv(path, result.header, result.rows)
    except OSError as error:
        raise RnnflowError(f"cannot write {path}: {error.strerror or error}") from None


def summary(result: Predictions) -> str:
    """What was predicted, the raw output shape, and the first rows as an aligned table."""
    def cell(value: Any) -> str:
        return f"{value:.5g}" if isinstance(value, float) else str(value)

    shown = [[cell(v) for v in row] for row in result.rows[:SHOWN_ROWS]]
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(result.header)]
    lines = [f"{result.what}; outputs {tuple(result.raw.shape)}",
             "  ".join(h.ljust(w) for h, w in zip(result.header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in shown]
    if len(result.rows) > SHOWN_ROWS:
        lines.append(f"... {len(result.rows) - SHOWN_ROWS} more row(s); --output FILE.csv writes them all")
    return "\n".join(lines)
