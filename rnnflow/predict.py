"""`rnnflow predict`: reload a run's logged model and predict, with dropout off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rnnflow.errors import DataError, RnnflowError

_FORMATS = ".npy, .npz (key 'inputs', optional 'lengths'), .csv (one sequence: a row per step) or .json"


def load_run_model(run_id: str):
    """The Keras model logged by a run.

    Raises:
        RnnflowError: when the run does not exist or logged no model.
    """
    # rnnflow's modules first: they import TensorFlow quietly, and mlflow.keras would import it loudly.
    import rnnflow.cells  # noqa: F401  (custom objects must be registered before loading)
    import rnnflow.scan  # noqa: F401  # isort: skip
    import rnnflow.wrappers  # noqa: F401  # isort: skip

    import mlflow.keras  # isort: skip
    from mlflow.exceptions import MlflowException  # isort: skip

    try:
        return mlflow.keras.load_model(f"runs:/{run_id}/model")
    except MlflowException as error:
        raise RnnflowError(f"cannot load the model of run {run_id}: {error.message}") from None
    except OSError as error:
        raise RnnflowError(f"cannot load the model of run {run_id}: {error}") from None


def run_test_inputs(run_id: str) -> Any:
    """The test inputs of a run (its validation inputs without a test split), rebuilt from its spec."""
    from rnnflow.data.base import load_data
    from rnnflow.steps import pick_split
    from rnnflow.store import spec_of_run

    return pick_split(load_data(spec_of_run(run_id)), None).inputs()


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
    x = np.asarray(x, dtype=np.float32)
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
                        f"(sequences, {steps}, {features})")
    needs_lengths = len(model.inputs) > 1
    if needs_lengths and not isinstance(inputs, dict):
        return {"inputs": x, "lengths": np.full((x.shape[0],), x.shape[1], np.int32)}
    if not needs_lengths and isinstance(inputs, dict):
        return x
    return inputs


def predict_run(run_id: str, input_file: Path | None, output_file: Path | None) -> None:
    """Predict with a run's model and print the predictions (or write them to `output_file`)."""
    import numpy as np

    from rnnflow.store import check_reachable, tracking_uri

    check_reachable(tracking_uri(None))  # else MLflow retries a refused connection for minutes
    model = load_run_model(run_id)
    if input_file is None:
        inputs, source = run_test_inputs(run_id), f"run {run_id} test data"
    else:
        inputs, source = read_inputs(input_file), str(input_file)
    inputs = check_inputs(model, inputs, source)
    pred = np.asarray(model(inputs, training=False))
    if output_file is None:
        click.echo(json.dumps(pred.tolist()))
        return
    suffix = output_file.suffix.lower()
    if suffix == ".npy":
        np.save(output_file, pred)
    elif suffix == ".csv":
        np.savetxt(output_file, pred.reshape(pred.shape[0], -1), delimiter=",")
    else:
        output_file.write_text(json.dumps(pred.tolist()))
    click.echo(f"wrote {pred.shape} predictions to {output_file}")
