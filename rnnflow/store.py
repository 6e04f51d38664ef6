"""Which MLflow tracking store rnnflow uses, and whether it answers.

Kept apart from `rnnflow.tracking` (which imports Keras for its callback) so that commands that
only look at runs (`compare`, `ui`) check the store without importing TensorFlow.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from rnnflow.errors import TrackingError


def tracking_uri(spec_uri: str | None) -> str:
    """The tracking URI a run will use: the spec's, else MLflow's default (which honours
    $MLFLOW_TRACKING_URI and is otherwise sqlite:///mlflow.db in the working directory)."""
    import mlflow

    if spec_uri:
        mlflow.set_tracking_uri(spec_uri)
    return mlflow.get_tracking_uri()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when the tracking store cannot be used.

    Raises:
        TrackingError: for an HTTP server that does not answer, a local store that cannot be written,
            or a folder store MLflow will not open.
    """
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                response.read(64)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {uri} ({reason}); start it, or point "
                "tracking.tracking_uri / MLFLOW_TRACKING_URI at a reachable store"
            ) from None
        return
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        local: Path | None = Path(uri[len("sqlite:///"):]).parent
    elif parsed.scheme in ("file", "") and not uri.startswith("databricks"):
        _check_folder_store_allowed(uri)
        local = Path(parsed.path)
    else:
        local = None
    if local is not None:
        probe = local if local.exists() else next((p for p in local.absolute().parents if p.exists()), Path("."))
        if not os.access(probe, os.W_OK):
            raise TrackingError(f"the tracking store {uri} is not writable ({probe})")


def _check_folder_store_allowed(uri: str) -> None:
    """MLflow 3 refuses a folder store (its "filesystem backend") unless its own switch says
    otherwise; the switch is read as MLflow reads it."""
    from mlflow import environment_variables

    switch = getattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)
    if switch is None:  # an MLflow that still opens folders
        return
    try:
        allowed = switch.get()
    except ValueError as error:  # MLflow refuses values other than true/false/1/0
        raise TrackingError(f"the tracking store {uri} is a folder, and {error}") from None
    if not allowed:
        raise TrackingError(
            f"the tracking store {uri} is a folder, which MLflow 3 no longer opens by default; "
            "use a database store (tracking.tracking_uri: sqlite:///mlflow.db), or set "
            "MLFLOW_ALLOW_FILE_STORE=true to keep the folder"
        )


def checked_uri(spec_uri: str | None) -> str:
    """The tracking store a run of a spec (or pipeline) naming `spec_uri` uses, as an absolute URI
    that other processes can use too, checked.

    Raises:
        TrackingError: when the store cannot be used (see `check_reachable`).
    """
    uri = absolute_uri(tracking_uri(spec_uri))
    check_reachable(uri)
    return uri


def absolute_uri(uri: str) -> str:
    """The same store with a relative local path made absolute (other processes, such as Ray
    workers, need not share the working directory)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite" and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            return "sqlite:///" + str(Path(path).absolute())
    if parsed.scheme == "" and uri and not Path(uri).is_absolute():
        return str(Path(uri).absolute())
    return uri


PARAM_VALUE_LIMIT = 500


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


class RecordedRun:
    """A run created and ended through MLflow's client (never the active run), for records
    whose work happens elsewhere: a pipeline's parent and its children's runs (created before the
    children start, ended by the driver if a child cannot end its own), a multi-worker launch.

    Args:
        client: an MlflowClient on the store.
        run_id: the run.
        experiment_id: its experiment.
    """

    TERMINAL = ("FINISHED", "FAILED", "KILLED")

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id

    @classmethod
    def create(cls, client, experiment: str, name: str, tags: dict[str, str], *,
               scheduled: bool = False) -> "RecordedRun":
        """A new run of `experiment` (created if needed); SCHEDULED until something starts it.

        Raises:
            TrackingError: when the store refuses.
        """
        try:
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else client.create_experiment(experiment)
            run = client.create_run(experiment_id, run_name=name, tags=tags)
        except Exception as error:  # noqa: BLE001 - the store refuses: nothing has run yet
            raise TrackingError(f"cannot use the tracking store {client.tracking_uri}: {error}") from None
        if scheduled:
            client.update_run(run.info.run_id, status="SCHEDULED")
        return cls(client, run.info.run_id, experiment_id)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), stamp, step or 0) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def status(self) -> str:
        return self.client.get_run(self.run_id).info.status

    def end(self, status: str, error: str | None = None) -> str:
        """End the run with `status` (and the error as the tag rnnflow.error) unless it has ended
        already, as a child that ran does; returns its final status."""
        current = self.status()
        if current in self.TERMINAL:
            return current
        if error:
            self.client.set_tag(self.run_id, "rnnflow.error", error[:5000])
        self.client.set_terminated(self.run_id, status)
        return status


SPEC_DIR_TAG = "rnnflow.spec_dir"

# Keys of a resolved spec that say how a run is recorded, not what it computes. They are the run's
# own name, Description (`mlflow.note.content`), experiment, store and tags, not params: as params
# they would differ between the runs of every comparison and take the places MLflow's compare page
# gives to the params that differ.
RECORD_KEYS = ("description", "tracking.run_name", "tracking.experiment", "tracking.tracking_uri",
               "tracking.tags")


# MLflow's compare page plots the first three params that differ between the runs, in sorted
# order; a cell type's own defaults (forget_bias, reset_after...) come before `model.cells.0.type`.
# The settings that define each child of a pipeline are therefore also logged under this prefix,
# which sorts before every spec key (upper case).
VARIED_PREFIX = "Varied/"


def is_setting(param: str) -> bool:
    """Whether a param is a setting of the experiment under its spec key (`model.cells.0.units`)."""
    return not param.startswith(VARIED_PREFIX) and not any(
        param == key or param.startswith(key + ".") for key in RECORD_KEYS)


def spec_of_run(run_id: str, client=None):
    """The resolved spec a run was recorded with, its relative paths resolving as they did then.

    Raises:
        RnnflowError: when the run does not exist or has no resolved spec.
    """
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnflow.errors import RnnflowError
    from rnnflow.spec import spec_from_text

    client = client or MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise RnnflowError(f"no run {run_id} in {client.tracking_uri} ({error.message})") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            text = Path(client.download_artifacts(run_id, "spec/resolved.yaml", tmp)).read_text()
        except (MlflowException, OSError) as error:
            raise RnnflowError(f"run {run_id} has no spec/resolved.yaml artifact ({error})") from None
    spec_dir = run.data.tags.get(SPEC_DIR_TAG)
    return spec_from_text(text, source=f"run {run_id}: spec/resolved.yaml",
                          base_dir=Path(spec_dir) if spec_dir else None)
