"""MLflow tracking: a Keras callback for metrics plus a few explicit log calls.

MLflow is imported here only, and only when a run is tracked. A run that rnnflow starts is
ended by rnnflow, with FINISHED, FAILED (and the error) or KILLED; a run the caller started is
logged into and left open.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras

from rnnflow.errors import TrackingError
from rnnflow.store import check_reachable, flatten, tracking_uri  # noqa: F401  (part of this module's API)

MODEL_ARTIFACT = "model"


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
        run_id: record into this run, created by the caller but not yet started (it gets the tags).
    """

    def __init__(self, experiment: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None,
                 resume_run_id: str | None = None, run_id: str | None = None):
        import mlflow

        self.mlflow = mlflow
        try:
            if run_id is not None:
                # The caller's run decides the experiment (an earlier set_experiment in this
                # process would make MLflow refuse to start a run of another one).
                from mlflow.tracking import MlflowClient

                mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
            elif resume_run_id is None:
                mlflow.set_experiment(experiment)
        except Exception as error:  # the store refuses: report it, nothing has run yet
            raise TrackingError(f"cannot use the tracking store {mlflow.get_tracking_uri()}: {error}") from None
        active = mlflow.active_run()
        self.owned = True
        if run_id is not None:
            # A pipeline's driver created it; in a serial pipeline the parent is active here.
            self.run = mlflow.start_run(run_id=run_id, nested=active is not None, tags=tags)
        elif resume_run_id is not None:
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
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        # This run's, also while a child run is the active one (a serial pipeline's parent).
        MlflowClient().log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=folder, run_id=self.run_id)

    def log_text(self, text: str, name: str) -> None:
        self.mlflow.log_text(text, name, run_id=self.run_id)

    def log_model(self, model: keras.Model, example: Any) -> None:
        """Log the Keras model (explicit requirements: inferring them takes seconds)."""
        import mlflow.keras
        import tensorflow as tf

        from rnnflow import __version__

        signature = None
        try:
            from mlflow.models import infer_signature

            signature = infer_signature(example, model(example, training=False).numpy())
        except Exception:  # noqa: BLE001 - a signature is a nicety; the model matters
            signature = None
        mlflow.keras.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}",
                              f"rnnflow=={__version__}"],
        )

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
