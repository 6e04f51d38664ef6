"""MLflow tracking: a Keras callback for metrics plus a few explicit log calls.

MLflow is imported here only, and only when a run is tracked. A run that rnnflow starts is
ended by rnnflow, with FINISHED, FAILED (and the error) or KILLED; a run the caller started is
logged into and left open.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras

from rnnflow.errors import TrackingError
from rnnflow.store import check_reachable, tracking_uri  # noqa: F401  (part of this module's API)

PARAM_VALUE_LIMIT = 500
MODEL_ARTIFACT = "model"


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested data into MLflow params: {'model.cells.0.units': '100', ...}."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        # Lists of sections (cells, wrappers, steps) get a param per key; arrays of numbers
        # (inline data) stay one param.
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}.{i}"))
    else:
        text = json.dumps(data) if isinstance(data, (list, dict)) else ("null" if data is None else str(data))
        if len(text) > PARAM_VALUE_LIMIT:
            text = text[: PARAM_VALUE_LIMIT - 3] + "..."
        out[prefix] = text
    return out


def any_length(signature: Any, model: keras.Model) -> Any:
    """The signature with any number of steps when the model takes sequences of any length."""
    from mlflow.types.schema import Schema, TensorSpec

    steps = next(t for t in model.inputs if t.name.startswith("inputs")).shape[1]
    if steps is not None or signature is None:
        return signature
    specs = [TensorSpec(spec.type, (-1, -1, *spec.shape[2:]), spec.name) if len(spec.shape) == 3 else spec
             for spec in signature.inputs.inputs]
    signature.inputs = Schema(specs)
    return signature


def digest(*arrays: Any) -> str:
    """A short digest of the arrays' contents (sha256; MNIST's 60,000 images take about 0.2 s)."""
    import hashlib

    import numpy as np

    value = hashlib.sha256()
    for array in arrays:
        if array is None:
            continue
        array = np.ascontiguousarray(array)
        value.update(f"{array.dtype}{array.shape}".encode())
        value.update(memoryview(array).cast("B") if array.dtype != object else repr(array.tolist()).encode())
    return value.hexdigest()[:12]


def datasets(spec: Any, data: Any) -> dict[str, Any]:
    """The MLflow dataset of each split: the file it came from (or the generator's settings), a
    digest of what the split holds, its schema and its size.

    Tables are recorded as the rows of each part; other sources as their arrays. A generated
    source is named after its settings, e.g. `sine(function=sine_mix, ..., seed=42)`.
    """
    import warnings

    import mlflow.data
    import pandas as pd
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    source = None
    if data.source_file is not None:
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice (for "" and "file:" URIs) and warns that
            # a path matches both; either is the same source.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(data.source_file))
    name = data.source_file.stem if data.source_file is not None else _generator_name(spec)
    out = {}
    for split_name, split in data.splits().items():
        if data.forecast is not None:
            frame = data.forecast.parts[split_name]
            targets = data.forecast.targets
            out[split_name] = mlflow.data.from_pandas(
                frame, source=source, name=name, targets=targets[0] if len(targets) == 1 else None,
                digest=digest(pd.util.hash_pandas_object(frame, index=False).to_numpy()))
            continue
        features = split.x if split.lengths is None else {"inputs": split.x, "lengths": split.lengths}
        out[split_name] = mlflow.data.from_numpy(
            features, targets=split.y, source=source, name=name,
            digest=digest(split.x, split.lengths, split.y, split.weights))
    return out


def _generator_name(spec: Any) -> str:
    """`type(key=value, ...)` of a generated source's settings (arrays written in the spec are left
    to the digest), and the seed."""
    settings = flatten(spec.data.model_dump(mode="json", exclude={"type"}))
    shown = [f"{k}={v}" for k, v in settings.items() if not v.startswith("[")]
    return f"{spec.data.type}({', '.join([*shown, f'seed={spec.seed}'])})"[:500]


class MetricsLogger(keras.callbacks.Callback):
    """Logs the loss (and any evaluation during training) at each logged iteration.

    Points are sent in batches (at most every `flush_seconds`) to keep tracking off the hot path.
    """

    def __init__(self, run_id: str, flush_seconds: float = 2.0):
        super().__init__()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), stamp, int(batch)) for k, v in (logs or {}).items())
        if time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def on_train_end(self, logs=None):
        self.flush()

    def close(self) -> None:
        """Send what is pending (also when training stopped early)."""
        self.flush()

    def flush(self) -> None:
        """Send the pending points."""
        for start in range(0, len(self._pending), 1000):
            self.client.log_batch(self.run_id, metrics=self._pending[start : start + 1000])
        self._pending = []
        self._last_flush = time.monotonic()


class Tracker:
    """One tracked run: starting, logging and ending it.

    Args:
        experiment: the experiment name.
        run_name: the run name.
        tags: tags set at the start.
        parent_run_id: make the run a child of this run.
        resume_run_id: reopen this run instead of starting a new one.
    """

    def __init__(self, experiment: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None,
                 resume_run_id: str | None = None):
        import mlflow

        self.mlflow = mlflow
        try:
            if resume_run_id is None:
                mlflow.set_experiment(experiment)
        except Exception as error:  # the store refuses: report it, nothing has run yet
            raise TrackingError(f"cannot use the tracking store {mlflow.get_tracking_uri()}: {error}") from None
        active = mlflow.active_run()
        self.owned = True
        if resume_run_id is not None:
            self.run = mlflow.start_run(run_id=resume_run_id)
        elif active is not None and parent_run_id is None:
            # Called inside a run the caller started: log into it, leave it open.
            self.run = active
            self.owned = False
        else:
            self.run = mlflow.start_run(run_name=run_name, nested=parent_run_id is not None,
                                        parent_run_id=parent_run_id, tags=tags)
        if not self.owned and tags:
            mlflow.set_tags(tags)
        self.run_id = self.run.info.run_id
        self.experiment_id = self.run.info.experiment_id

    def log_params(self, params: dict[str, str]) -> None:
        self.mlflow.log_params(params, run_id=self.run_id)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics(metrics, step=step, run_id=self.run_id)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.mlflow.set_tag(key, value)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=folder, run_id=self.run_id)

    def log_text(self, text: str, name: str) -> None:
        self.mlflow.log_text(text, name, run_id=self.run_id)

    def log_model(self, model: keras.Model, example: Any) -> None:
        """Log the Keras model (explicit requirements: inferring them takes seconds).

        It is logged with rnnflow's pyfunc loader (`rnnflow.serving`), so that
        `mlflow.pyfunc.load_model` and `mlflow models serve` load rnnflow's layers too.
        """
        import tensorflow as tf
        from mlflow.models import Model

        from rnnflow import __version__, serving

        signature = None
        try:
            from mlflow.models import infer_signature

            signature = any_length(infer_signature(example, model(example, training=False).numpy()), model)
        except Exception:  # noqa: BLE001 - a signature is a nicety; the model matters
            signature = None
        Model.log(
            artifact_path=None,
            name=MODEL_ARTIFACT,
            flavor=serving,
            model=model,
            signature=signature,
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}",
                              f"rnnflow=={__version__}"],
        )

    def log_datasets(self, spec: Any, data: Any) -> None:
        """Record every split as an MLflow dataset input (see `datasets`)."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.tracking import MlflowClient

        inputs = [DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", split)])
                  for split, dataset in datasets(spec, data).items()]
        MlflowClient().log_inputs(self.run_id, datasets=inputs)

    def end(self, status: str, error: str | None = None) -> None:
        """End the run with a status; record the error when there is one."""
        if error:
            try:
                self.mlflow.set_tag("rnnflow.error", error[:5000])
                self.mlflow.log_text(error, "error.txt", run_id=self.run_id)
            except Exception:  # noqa: BLE001 - ending the run matters more than the note
                pass
        if self.owned:
            self.mlflow.end_run(status=status)
