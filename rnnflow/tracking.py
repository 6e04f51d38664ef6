"""MLflow tracking: a Keras callback for metrics plus a few explicit log calls.

MLflow is imported here only, and only when a run is tracked. A run that rnnflow starts is
ended by rnnflow, with FINISHED, FAILED (and the error) or KILLED; a run the caller started is
logged into and left open.

A tracking server may go away while a run trains. Training goes on: the metric points wait in
memory (MetricsLogger) and are sent when the server answers again. Every other call (params,
artifacts, the model, the run's end) waits for a server that went away, for at most
$RNNFLOW_TRACKING_WAIT seconds (default 300) per outage, then raises TrackingUnavailable; the
runner then keeps a local checkpoint with the unsent points, from which `--resume` continues.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras

from rnnflow.errors import TrackingError
from rnnflow.server import healthy
from rnnflow.store import check_reachable, flatten, tracking_uri  # noqa: F401  (part of this module's API)

MODEL_ARTIFACT = "model"
WAIT_ENV = "RNNFLOW_TRACKING_WAIT"
DEFAULT_WAIT_SECONDS = 300.0
# log_model links every metric point whose step equals its own: a step no metric uses keeps that
# implicit link empty, and the final metrics are linked explicitly by model_id instead.
MODEL_STEP = -1


class TrackingUnavailable(TrackingError):
    """The tracking server went away and did not come back within the bounded wait."""


def wait_seconds() -> float:
    """How long to wait for a tracking server that went away ($RNNFLOW_TRACKING_WAIT, default 300 s)."""
    text = os.environ.get(WAIT_ENV, "").strip()
    try:
        return max(float(text), 0.0) if text else DEFAULT_WAIT_SECONDS
    except ValueError:
        raise TrackingError(f"{WAIT_ENV}={text!r} is not a number of seconds") from None


@contextlib.contextmanager
def bounded_http(timeout: int):
    """One MLflow HTTP call that fails at once on a refused connection and within `timeout`
    seconds on a server that hangs.

    MLflow's defaults retry a refused connection 7 times with growing sleeps (about 4 minutes)
    and wait 120 s for each answer. MLflow reads these settings at every call, and offers no
    per-call argument, so they are set around the call. They are process-wide: rnnflow sends
    from one thread.
    """
    with scoped_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                     "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))}):
        yield


@contextlib.contextmanager
def scoped_env(keys: dict[str, str]):
    """Environment variables set for the duration of a block (MLflow reads its settings there)."""
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _connection_failed(error: BaseException) -> bool:
    """Whether an error (or one it arose from) is a failed connection or a timeout, not a refusal."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                                ConnectionError, TimeoutError)):
            return True
        if "Max retries exceeded" in str(current):  # urllib3's words, kept in MLflow's message
            return True
        current = current.__cause__ or current.__context__
    return False


class Delivery:
    """Sends to a tracking store, riding out a tracking server that goes away.

    Local stores (sqlite, files) are called directly. For a server, a call that fails because the
    server does not answer is retried once it answers /health again, for at most `wait` seconds
    per outage; any other failure (the server refused the request) is raised at once.

    Args:
        uri: the tracking URI.
        wait: seconds to wait for the server per outage (default: `wait_seconds()`).
        retry_seconds: while the server is away, how often `attempt` tries again.
    """

    def __init__(self, uri: str, wait: float | None = None, retry_seconds: float = 10.0):
        self.uri = uri
        self.remote = uri.startswith(("http://", "https://"))
        self.wait = wait_seconds() if wait is None else wait
        self.retry_seconds = retry_seconds
        self.away_since: float | None = None
        self._next_try = 0.0

    def attempt(self, send: Callable[[], Any], timeout: int = 5) -> bool:
        """One bounded try of `send` (never long: for the training loop); False when the server
        is away, so the caller keeps what it meant to send. While away, tries at most every
        `retry_seconds`."""
        if not self.remote:
            send()
            return True
        if self.away_since is not None and time.monotonic() < self._next_try:
            return False
        if not healthy(self.uri):  # 0 s when refused, 1 s when hung: cheaper than a timed-out call
            return self._away()
        try:
            with bounded_http(timeout):
                send()
        except Exception as error:  # noqa: BLE001 - MLflow wraps the connection error in MlflowException
            if healthy(self.uri) and not _connection_failed(error):
                raise
            return self._away()
        self.away_since = None
        return True

    def call(self, what: str, send: Callable[..., Any], *args: Any, timeout: int = 60, **kwargs: Any) -> Any:
        """`send(*args, **kwargs)`, waiting for a server that went away.

        Raises:
            TrackingUnavailable: when the server did not answer again within `wait` seconds.
        """
        if not self.remote:
            return send(*args, **kwargs)
        deadline: float | None = None
        while True:
            try:
                with bounded_http(timeout):
                    result = send(*args, **kwargs)
                self.away_since = None
                return result
            except Exception as error:  # noqa: BLE001 - see attempt
                if healthy(self.uri) and not _connection_failed(error):
                    raise
                self._away()
            deadline = deadline if deadline is not None else time.monotonic() + self.wait
            while True:  # also bounded when /health answers but the call keeps timing out
                if time.monotonic() >= deadline:
                    raise TrackingUnavailable(
                        f"the tracking server {self.uri} went away and did not come back within "
                        f"{self.wait:g} s (${WAIT_ENV}) while {what}")
                if healthy(self.uri):
                    break
                time.sleep(1.0)

    def _away(self) -> bool:
        if self.away_since is None:
            self.away_since = time.monotonic()
        self._next_try = time.monotonic() + self.retry_seconds
        return False


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


def _duplicate_key(error: Exception) -> bool:
    """Whether a store refused a write because another process just wrote the same key (SQLite,
    PostgreSQL and MySQL say it in their own words)."""
    text = str(error)
    return any(s in text for s in ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry"))


class MetricsLogger(keras.callbacks.Callback):
    """Logs the loss (and any evaluation during training) at each logged iteration.

    Points are sent in batches (at most every `flush_seconds`) to keep tracking off the hot path.
    When the tracking server is away they wait in `pending` and training goes on; only batches
    the server acknowledged leave it (a resent point is stored once: the store ignores a point
    it already has). `deliver` sends what is left, waiting for the server.

    Args:
        run_id: the run.
        delivery: how to reach the store (default: the current tracking URI).
        flush_seconds: the least time between two sends.
    """

    def __init__(self, run_id: str, delivery: Delivery | None = None, flush_seconds: float = 2.0):
        super().__init__()
        import mlflow
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.run_id = run_id
        self.delivery = delivery or Delivery(mlflow.get_tracking_uri())
        self.flush_seconds = flush_seconds
        self.pending: list[Any] = []
        self.latest: dict[str, Any] = {}  # the last point of each metric (to link final ones to the model)
        self._last_flush = time.monotonic()
        self.last_timestamp = 0  # ms of the latest point

    def add(self, points: list[Any]) -> None:
        """Queue points to send (e.g. those a checkpoint kept while the server was away)."""
        self.pending.extend(points)

    def on_train_batch_end(self, batch, logs=None):
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.last_timestamp = stamp
        for key, value in (logs or {}).items():
            point = Metric(key, float(value), stamp, int(batch))
            self.pending.append(point)
            self.latest[key] = point
        if time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def on_train_end(self, logs=None):
        self.flush()

    def close(self) -> None:
        """Try to send what is pending (also when training stopped early); never waits long."""
        self.flush()

    def flush(self) -> bool:
        """One bounded try to send the pending points; True when none is left."""
        self._last_flush = time.monotonic()
        return not self.pending or self.delivery.attempt(self._send)

    def deliver(self) -> None:
        """Send every pending point, waiting for a server that went away.

        Raises:
            TrackingUnavailable: when it did not come back in time (the points stay pending).
        """
        if self.pending:
            self.delivery.call(f"sending {len(self.pending)} metric points", self._send, timeout=30)

    def _send(self) -> None:
        while self.pending:
            chunk = self.pending[:1000]  # MLflow's limit per request
            self.client.log_batch(self.run_id, metrics=chunk)
            del self.pending[: len(chunk)]  # only what the server acknowledged


class Tracker:
    """One tracked run: starting, logging and ending it.

    Every call goes through a `Delivery`: it waits (bounded) for a tracking server that went away.

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
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self.client = MlflowClient()
        self.delivery = Delivery(mlflow.get_tracking_uri())
        try:
            if run_id is not None:
                # The caller's run decides the experiment (an earlier set_experiment in this
                # process would make MLflow refuse to start a run of another one).
                mlflow.set_experiment(experiment_id=self.client.get_run(run_id).info.experiment_id)
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
        self.run_id = self.run.info.run_id
        self.experiment_id = self.run.info.experiment_id
        if not self.owned and tags:
            self.set_tags(tags)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self.delivery.call("logging the params", self.client.log_batch, self.run_id,
                           params=[Param(k, v) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None,
                    timestamp: int | None = None) -> list[Any]:
        """Log metrics at `step`; return the points sent (to link them to a model later).

        At `timestamp` (ms) when it is later than now: a value logged at the same step before
        (an evaluation of other weights) is then replaced as the run's final value.
        """
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        if timestamp is not None:
            stamp = max(timestamp, stamp)
        points = [Metric(k, float(v), stamp, step or 0) for k, v in metrics.items()]
        if points:
            self.delivery.call("logging metrics", self.client.log_batch, self.run_id, metrics=points)
        return points

    def points_at(self, keys: list[str], step: int) -> dict[str, Any]:
        """The points of metrics `keys` already logged at `step` (the last of each)."""
        found = {}
        for key in keys:
            history = self.delivery.call("reading the metrics", self.client.get_metric_history, self.run_id, key)
            at_step = [point for point in history if point.step == step]
            if at_step:
                found[key] = at_step[-1]
        return found

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        # This run's, also while a child run is the active one (a serial pipeline's parent).
        self.delivery.call("setting tags", self.client.log_batch, self.run_id,
                           tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.delivery.call(f"uploading {Path(path).name}", self.client.log_artifact, self.run_id, str(path),
                           folder, timeout=120)

    def log_text(self, text: str, name: str) -> None:
        self.delivery.call(f"uploading {name}", self.client.log_text, self.run_id, text, name, timeout=120)

    def log_model(self, model: keras.Model, example: Any) -> Any:
        """Log the Keras model with rnnflow's loader (see `rnnflow.mlflow_model`); its ModelInfo.

        Requirements are given explicitly (inferring them takes seconds).
        """
        from mlflow.models import Model

        from rnnflow import mlflow_model

        signature = None
        try:
            from mlflow.models import infer_signature

            signature = any_length(infer_signature(example, model(example, training=False).numpy()), model)
        except Exception:  # noqa: BLE001 - a signature is a nicety; the model matters
            signature = None
        requirements, rnnflow_requirement = mlflow_model.requirements()
        info = self.delivery.call("uploading the model", Model.log, None, name=MODEL_ARTIFACT, flavor=mlflow_model,
                                  keras_model=model, signature=signature, pip_requirements=requirements,
                                  run_id=self.run_id, step=MODEL_STEP, timeout=300)
        self.set_tags({"rnnflow.model_requirement": rnnflow_requirement})
        return info

    def link_metrics(self, model_id: str, points: list[Any]) -> None:
        """Link final metric points to a logged model (search_logged_models shows them).

        The points are sent again as they were (same value, step and time), now with the model's
        id: the run keeps one point each, and the model gets them.
        """
        from mlflow.entities import Metric

        linked = [Metric(p.key, p.value, p.timestamp, p.step, model_id=model_id) for p in points]
        if linked:
            self.delivery.call("linking the final metrics to the model", self.client.log_batch, self.run_id,
                               metrics=linked)

    def log_datasets(self, spec: Any, data: Any) -> None:
        """Record every split as an MLflow dataset input (see `datasets`)."""
        from mlflow.entities import DatasetInput, InputTag

        inputs = [DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", split)])
                  for split, dataset in datasets(spec, data).items()]
        for attempt in range(3):
            try:
                self.delivery.call("recording the datasets", self.client.log_inputs, self.run_id, datasets=inputs)
                return
            except Exception as error:
                # Runs in parallel (a pipeline on Ray) record the same dataset: MLflow looks it up,
                # then inserts it, and the slower of two runs hits the unique key the other just
                # wrote. Its transaction is rolled back; again, it finds the dataset and links it.
                if attempt == 2 or not _duplicate_key(error):
                    raise

    def end(self, status: str, error: str | None = None) -> None:
        """End the run with a status; record the error when there is one.

        Raises:
            TrackingUnavailable: the server went away and did not come back in time: the run
                stays as the server last knew it (RUNNING).
        """
        if error:
            try:
                self.set_tags({"rnnflow.error": error[:5000]})
                self.log_text(error, "error.txt")
            except TrackingUnavailable:
                raise
            except Exception:  # noqa: BLE001 - ending the run matters more than the note
                pass
        if not self.owned:
            return
        # MlflowClient, not mlflow.end_run: end_run forgets the run before it tells the server,
        # so a failed end_run cannot be retried and the run would stay RUNNING.
        self.delivery.call(f"recording the run {status}", self.client.set_terminated, self.run_id, status)
        self.forget(status)

    def forget(self, status: str) -> None:
        """Leave MLflow's active run (ended, or its server is away) so that later runs of this
        process do not start nested in it. `mlflow.end_run` forgets it first, then sends `status`:
        after `end` that is the status already recorded; with the server away the call fails at once."""
        active = self.mlflow.active_run()
        if self.owned and active is not None and active.info.run_id == self.run_id:
            try:  # quietly: MLflow would print the run's URL a second time
                with bounded_http(timeout=2), scoped_env({"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}):
                    self.mlflow.end_run(status)
            except Exception:  # noqa: BLE001 - the run is forgotten before MLflow calls the server
                pass
