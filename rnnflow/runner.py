"""One run of a spec: load data, build, train, evaluate, run the steps, and record it all in MLflow.

Everything that can fail on bad input (data files, devices, the tracking store) is checked
before the MLflow run starts, so a user mistake never leaves a run behind. Once the run exists,
it always ends: FINISHED, FAILED with the error, or KILLED after a checkpoint on Ctrl-C. A
tracking server that goes away and does not come back in time cannot be told anything: the run
then keeps a local checkpoint with the metric points the server did not get, from which
`rnnflow run --resume` continues and ends the run once the server is back.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any

import yaml

from rnnflow.errors import RnnflowError
from rnnflow.spec import Spec, load_spec

log = logging.getLogger("rnnflow")

CHECKPOINT_DIR = "checkpoint"
# The run a multi-worker run's chief records into, when a launcher created it (rnnflow run --workers).
RUN_ID_VARIABLE = "RNNFLOW_RUN_ID"
CHECKPOINT_HOME_ENV = "RNNFLOW_CHECKPOINT_DIR"


def checkpoint_home() -> Path:
    """Where runs keep checkpoints the tracking server could not take: $RNNFLOW_CHECKPOINT_DIR,
    else rnnflow/checkpoints in the user's cache folder ($XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get(CHECKPOINT_HOME_ENV):
        return Path(os.environ[CHECKPOINT_HOME_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rnnflow" / "checkpoints"


def local_checkpoint(run_id: str) -> Path:
    """The local checkpoint folder of a run (it exists only while the run waits to be resumed)."""
    return checkpoint_home() / run_id


class RunInterrupted(RnnflowError):
    """The run was stopped with Ctrl-C; it is recorded KILLED with a checkpoint to resume from."""

    exit_code = 130

    def __init__(self, run_id: str, iteration: int):
        super().__init__(
            f"interrupted at iteration {iteration}; run {run_id} recorded as KILLED with a checkpoint "
            f"(continue it with: rnnflow run --resume {run_id})"
        )
        self.run_id = run_id
        self.iteration = iteration


class RunStopped(RnnflowError):
    """Training was stopped on purpose before its end by someone other than the user (a search's
    scheduler); the run is recorded KILLED with tags `rnnflow.stopped_by` and `rnnflow.stopped_at`."""

    def __init__(self, by: str, iteration: int, reason: str = ""):
        super().__init__(f"stopped by the {by} at iteration {iteration}" + (f": {reason}" if reason else ""))
        self.by = by
        self.iteration = iteration


@dataclasses.dataclass
class RunResult:
    """What a finished run produced.

    Attributes:
        run_id: the MLflow run id.
        experiment_id: the MLflow experiment id.
        tracking_uri: where the run is recorded.
        status: the run's final status (FINISHED).
        metrics: the final metrics.
        iterations: gradient steps done.
        seconds: training wall time.
        built: the trained model.
        stop_reason: why training stopped: completed, early_stopping or max_minutes (None
            without training).
        weights: which weights the model ends with, e.g. `best@iteration 1200` or `last@iteration 2500`.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    status: str
    metrics: dict[str, float]
    iterations: int
    seconds: float
    built: Any = None
    stop_reason: str | None = None
    weights: str | None = None


def run(
    spec: Spec | str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    quiet: bool = True,
    resume: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list[Any] | tuple[Any, ...] = (),
    run_id: str | None = None,
) -> RunResult:
    """Run a spec end to end and record it in MLflow.

    Args:
        spec: a Spec, or the path of a spec file.
        overrides: `key.path=value` assignments (with a path).
        quiet: no progress bar.
        resume: continue this KILLED run from its checkpoint instead of starting a new one.
        parent_run_id: record the run as a child of this MLflow run.
        tags: extra tags for the run.
        callbacks: extra Keras callbacks for training (called at logged iterations).
        run_id: record into this run, which the caller created (a pipeline's driver creates its
            children's runs); it is ended here like a run started here.

    Returns:
        The RunResult.

    Raises:
        SpecError: the spec is invalid.
        DataError, TrackingError: a data file or the tracking store cannot be used (no run is created).
        TrainingError: training failed (the run is recorded FAILED).
        RunInterrupted: Ctrl-C (the run is recorded KILLED with a checkpoint).
        RunStopped: a callback stopped training (the run is recorded KILLED).
    """
    # The spec first: a spec error is reported before TensorFlow (seconds to import) is loaded.
    from rnnflow.store import check_reachable, tracking_uri

    resume_state = None
    if resume is not None:
        if not isinstance(spec, (str, Path)) and spec is not None:
            raise RnnflowError("resume takes the spec from the run; do not pass one")
        meta = local_checkpoint(resume) / "meta.json"
        kept = json.loads(meta.read_text()) if meta.is_file() else {}
        uri = tracking_uri(kept.get("tracking_uri"))  # a local checkpoint names the run's store
        check_reachable(uri)
        spec, resume_state = _load_checkpoint(resume)
    else:
        if isinstance(spec, (str, Path)):
            spec = load_spec(spec, overrides)
            overrides = tuple(overrides)
        uri = tracking_uri(spec.tracking.tracking_uri)
        check_reachable(uri)
    return _Run(spec, tuple(overrides), uri, quiet, resume, resume_state, parent_run_id, tags or {},
                list(callbacks), run_id).execute()


def _load_checkpoint(run_id: str) -> tuple[Spec, dict[str, Any]]:
    """The spec and the checkpoint of a run to resume: the local one when the tracking server
    could not take it, else the run's `checkpoint/` artifacts (a Ctrl-C)."""
    import numpy as np
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnflow.spec import spec_from_text
    from rnnflow.store import spec_of_run

    client = MlflowClient()
    try:
        run_info = client.get_run(run_id)
    except MlflowException as error:
        raise RnnflowError(f"cannot resume: no run {run_id} in {client.tracking_uri} ({error.message})") from None
    if run_info.info.status == "FINISHED":
        raise RnnflowError(f"cannot resume run {run_id}: it already FINISHED")
    local = local_checkpoint(run_id)
    if (local / "state.npz").is_file():
        with np.load(local / "state.npz") as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads((local / "meta.json").read_text())
        unsent = json.loads((local / "unsent.json").read_text()) if (local / "unsent.json").is_file() else []
        spec = spec_from_text(meta["spec"], source=f"{local}/meta.json: spec",
                              base_dir=Path(meta["spec_dir"])) if "spec" in meta else spec_of_run(run_id, client)
        return spec, {"arrays": arrays, "meta": meta, "unsent": unsent, "local": local}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(client.download_artifacts(run_id, CHECKPOINT_DIR, tmp))
            with np.load(folder / "state.npz") as archive:
                arrays = {k: archive[k] for k in archive.files}
            meta = json.loads((folder / "meta.json").read_text())
        except (MlflowException, OSError):
            raise RnnflowError(f"cannot resume run {run_id}: it has no checkpoint (only interrupted runs, and "
                               f"runs whose tracking server went away, have one; looked in {local} too)") from None
    return spec_of_run(run_id, client), {"arrays": arrays, "meta": meta}


class _Run:
    """The state of one run while it executes (see `run`)."""

    def __init__(self, spec: Spec, overrides: tuple[str, ...], uri: str, quiet: bool, resume: str | None,
                 resume_state: dict | None, parent_run_id: str | None, tags: dict[str, str], callbacks: list,
                 run_id: str | None = None):
        self.spec = spec
        self.overrides = overrides
        self.uri = uri
        self.quiet = quiet
        self.resume = resume
        self.resume_state = resume_state
        self.parent_run_id = parent_run_id
        self.tags = tags
        self.callbacks = callbacks
        self.run_id = run_id
        self.distribution = None
        self.strategy = None
        self.chief = True
        self.tracker = None
        self.trainer = None
        self.metrics_logger = None
        self.timing: dict[str, float] = {}
        self.logged_spec = resume is not None and (resume_state or {}).get("meta", {}).get("logged_spec", True)

    def execute(self) -> RunResult:
        from rnnflow.build import build_model
        from rnnflow.data.base import load_data
        from rnnflow.train import Trainer, seed_everything

        spec = self.spec
        # Everything that can fail on bad input happens before the MLflow run exists. A strategy
        # comes first: logical devices and a multi-worker cluster must be set up before TensorFlow
        # runs anything.
        self._distribute()
        seed_everything(spec.seed)
        data = load_data(spec)
        from rnnflow.distribute import scope

        with scope(self.strategy):  # variables made here are mirrored on every replica
            built = build_model(spec, data)
            if spec.train is not None:
                self.trainer = Trainer(spec, built, data, strategy=self.strategy)
                if self.resume_state is not None:
                    self.trainer.load_state(self.resume_state["arrays"], self.resume_state["meta"])
        if not self.chief:
            return self._worker(built)
        self.tracker = self._start()
        with tempfile.TemporaryDirectory(prefix="rnnflow-") as tmp:
            try:
                if self.resume is not None:
                    self.tracker.set_tags({"rnnflow.resumed_from": str(self.resume_state["meta"]["iteration"])})
                if not self.logged_spec:
                    self._log_spec(self.tracker, built)
                    self.tracker.log_datasets(spec, data)
                result = self._body(built, data, Path(tmp))
            except BaseException as error:
                replacement = self._fail(error)
                error.rnnflow_run_id = self.tracker.run_id  # lets a pipeline find the recorded run
                if replacement is not None:
                    replacement.rnnflow_run_id = self.tracker.run_id
                    raise replacement from None
                raise
        if self.resume_state is not None and "local" in self.resume_state:
            shutil.rmtree(self.resume_state["local"], ignore_errors=True)  # the server has it all now
        return result

    # --- phases ---

    def _distribute(self) -> None:
        """Make the strategy `train.distribute` asks for (None: one device)."""
        from rnnflow.planner import plan_distribution

        self.distribution = plan_distribution(self.spec)
        if self.distribution is None:
            return
        from rnnflow.distribute import make_strategy

        self.strategy = make_strategy(self.distribution)
        self.chief = self.distribution.chief
        if self.distribution.strategy == "multi_worker" and self.run_id is None:
            # A launcher (rnnflow run --workers N) created the run for the chief to record into.
            self.run_id = os.environ.get(RUN_ID_VARIABLE) or None

    def _worker(self, built) -> RunResult:
        """A worker other than the chief: it trains in step with the others and records nothing."""
        from rnnflow.train import Interrupted

        self.trainer.callbacks = []
        try:
            result = self.trainer.run()
        except Interrupted as stop:
            raise KeyboardInterrupt(f"interrupted at iteration {stop.iteration}") from None
        self._check_replicas(built)
        return RunResult("", "", self.uri, "FINISHED", {}, result.iterations, result.seconds, built)

    def _check_replicas(self, built) -> dict[str, str]:
        """Every replica's weights digest (all workers call this at the same point); tags for the chief."""
        if self.strategy is None:
            return {}
        from rnnflow.distribute import weight_digests

        digests = weight_digests(self.strategy, built.model)
        same = len(set(digests)) == 1
        if not same:
            log.warning("the replicas ended with different weights: %s", ", ".join(digests))
        plan = self.distribution
        return {"rnnflow.distribute.strategy": plan.strategy, "rnnflow.distribute.replicas": str(plan.replicas),
                "rnnflow.distribute.weights_in_sync": "true" if same else "false",
                "rnnflow.distribute.weight_digests": ",".join(digests)}

    def _start(self):
        from rnnflow.provenance import git_tags, version_tags
        from rnnflow.store import SPEC_DIR_TAG
        from rnnflow.tracking import Tracker

        spec = self.spec
        tags = {
            **version_tags(),
            "rnnflow.spec_sha256": spec.sha256(),
            "rnnflow.spec_name": spec.name,
            "rnnflow.data": spec.data.type,
            "rnnflow.cells": "+".join(f"{c.type}x{c.layers}" for c in spec.model.cells),
            **spec.tracking.tags,
            **self.tags,
        }
        if spec.document is not None and spec.document.path is not None:
            tags["rnnflow.spec_file"] = str(spec.document.path.resolve())
            tags.update(git_tags(spec.document.path))
        tags[SPEC_DIR_TAG] = str(spec.base_dir)  # relative paths of a resumed run resolve the same way
        if self.overrides:
            tags["rnnflow.overrides"] = " ".join(self.overrides)
        return Tracker(spec.tracking.experiment, spec.tracking.run_name or spec.name, tags,
                       parent_run_id=self.parent_run_id, resume_run_id=self.resume, run_id=self.run_id)

    def _log_spec(self, tracker, built) -> None:
        from rnnflow.build import model_summary
        from rnnflow.store import is_setting
        from rnnflow.tracking import flatten

        spec = self.spec
        resolved = spec.resolved()
        params = {k: v for k, v in flatten(resolved).items() if is_setting(k)}
        tracker.log_params({**params, "model.parameters": str(built.model.count_params())})
        if spec.description.strip():
            # The run's Description in the UI (a tag: at most 8000 characters).
            tracker.set_tags({"mlflow.note.content": spec.description[:8000]})
        if spec.document is not None and spec.document.text:
            name = spec.document.path.name if spec.document.path is not None else "spec.yaml"
            tracker.log_text(spec.document.text, f"spec/{_safe_file_name(name)}")
        tracker.log_text(yaml.safe_dump(resolved, sort_keys=False), "spec/resolved.yaml")
        if self.overrides:
            tracker.log_text("\n".join(self.overrides) + "\n", "spec/overrides.txt")
        tracker.log_text(model_summary(built.model) + "\n", "model_summary.txt")
        self.logged_spec = True

    def _body(self, built, data, tmp: Path) -> RunResult:
        from rnnflow import plots
        from rnnflow.steps import StepContext
        from rnnflow.tracking import MetricsLogger
        from rnnflow.train import evaluate

        spec, tracker = self.spec, self.tracker
        metrics: dict[str, float] = {}
        iterations, seconds = 0, 0.0
        result = None
        self.metrics_logger = MetricsLogger(tracker.run_id, tracker.delivery)
        if self.resume_state is not None:  # points the server did not get before
            from mlflow.entities import Metric

            self.metrics_logger.add([Metric(*point) for point in self.resume_state.get("unsent", [])])
        if self.trainer is not None:
            callbacks = [self.metrics_logger, *self.callbacks]
            if not self.quiet:
                from rnnflow.progress import ProgressBar

                callbacks.append(ProgressBar(spec.tracking.run_name or spec.name))
            self.trainer.callbacks = callbacks
            from rnnflow.train import Interrupted

            try:
                result = self.trainer.run()
            except Interrupted as stop:
                self._checkpoint(tmp, stop.iteration)
                raise RunInterrupted(tracker.run_id, stop.iteration) from None
            finally:
                # Also after a stop: the points logged so far are real, and the terminal needs its
                # progress bar closed.
                for callback in callbacks:
                    getattr(callback, "close", lambda: None)()
            self.metrics_logger.deliver()  # every training point lands before the run can end
            iterations = result.iterations
            metrics.update(self._timing(result))
            metrics.update(self._stopping_metrics(result))
            seconds = metrics["train_seconds"]
            replicas = self._check_replicas(built)
            if replicas:
                tracker.set_tags(replicas)
            curve = self._full_curve(result.curve)
            tracker.log_artifact(plots.loss_curve({"loss": curve}, tmp / "loss.png"))
            for which, split in data.splits().items():
                metrics.update({f"{which}_{k}": v for k, v in evaluate(built, split, spec.train).items()})
        stamp = None
        if result is not None and result.restored_from not in (None, iterations):
            # An earlier evaluation's weights, not the last step's: every final value is logged, later
            # than the last evaluation at the same step, so that MLflow shows it as the run's value.
            already: dict[str, Any] = {}
            stamp = self.metrics_logger.last_timestamp + 1
        else:
            # A metric the trainer already logged at the last step (an evaluation there) is not
            # logged twice: the same weights give the same numbers.
            already = {k: p for k, p in self.metrics_logger.latest.items() if p.step == iterations and k in metrics}
            if self.resume is not None:  # or an earlier session of the run logged it
                already = {**tracker.points_at([k for k in metrics if k not in already], iterations), **already}
        final = tracker.log_metrics({k: v for k, v in metrics.items() if k not in already}, step=iterations,
                                    timestamp=stamp)
        self.metrics_logger.deliver()
        weights = None
        if result is not None:
            weights = (f"best@iteration {result.restored_from}" if result.restored_from is not None
                       else f"last@iteration {iterations}")
            tracker.set_tags({"rnnflow.stop_reason": result.stop_reason, "rnnflow.weights": weights})
        context = StepContext(built=built, data=data, out_dir=tmp, seed=spec.seed,
                              predict=built.predict, metrics=metrics, source=spec.data)
        for step in spec.evaluate.steps:
            for path in step.run(context):
                tracker.log_artifact(path)
        if spec.tracking.log_model:
            info = tracker.log_model(built.model, data.held_out.inputs(slice(0, 1)))
            tracker.link_metrics(info.model_id, [*final, *already.values()])
        tracker.end("FINISHED")
        return RunResult(tracker.run_id, tracker.experiment_id, self.uri, "FINISHED", metrics, iterations,
                         seconds, built, result.stop_reason if result is not None else None, weights)

    def _stopping_metrics(self, result) -> dict[str, float]:
        """Where training stopped and the best evaluation (`best_val_loss`, `best_iteration`, ...)."""
        plan = self.trainer.plan
        by_epoch = self.spec.train.epochs is not None
        metrics = {"stopped_iteration": float(result.iterations)}
        if by_epoch:
            metrics["stopped_epoch"] = result.iterations / plan.steps_per_epoch
        if result.best is not None:
            monitor, value, at = result.best
            metrics[f"best_{monitor}"] = value
            metrics["best_iteration"] = float(at)
            if by_epoch:
                metrics["best_epoch"] = at / plan.steps_per_epoch
        return metrics

    def _timing(self, result) -> dict[str, float]:
        """train_seconds over every session of the run; the steady rate of this session (or of an
        earlier one, when this one trained nothing: a resume after the last iteration)."""
        before = self.resume_state["meta"].get("timing", {}) if self.resume_state is not None else {}
        timing = {"train_seconds": before.get("train_seconds", 0.0) + result.seconds}
        trained = result.iterations - (int(self.resume_state["meta"]["iteration"]) if self.resume_state else 0)
        if trained:
            # Steady state apart from the first call, which also traces and (with XLA) compiles.
            timing["first_call_seconds"] = result.first_call_seconds
            if result.ms_per_iteration is not None:
                timing["ms_per_iteration"] = result.ms_per_iteration
            else:
                self.tracker.set_tags({"rnnflow.ms_per_iteration": (
                    f"not measured: every call of the compiled training step ({trained} iterations in "
                    "all) was the first of its length, whose time is mostly tracing and compiling "
                    "(first_call_seconds); a lower train.steps_per_execution or more iterations "
                    "give a steady-state rate")})
        else:
            timing.update({k: v for k, v in before.items() if k in ("first_call_seconds", "ms_per_iteration")})
        self.timing = timing
        return timing

    def _full_curve(self, curve: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """The loss curve including points logged before a resume."""
        if self.resume is None:
            return curve
        from mlflow.tracking import MlflowClient

        history = MlflowClient().get_metric_history(self.tracker.run_id, "loss")
        points = {m.step: m.value for m in history}
        points.update(dict(curve))
        return sorted(points.items())

    # --- checkpoints ---

    def _keep_locally(self, iteration: int) -> Path:
        """Write the run's checkpoint, with the metric points the server has not acknowledged,
        into the local checkpoint folder (what `--resume` reads first)."""
        import numpy as np

        folder = local_checkpoint(self.tracker.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "state.npz", **self.trainer.state())
        meta = {"iteration": iteration, "spec_sha256": self.spec.sha256(), **self.trainer.state_meta(),
                "logged_spec": self.logged_spec, "tracking_uri": self.uri,
                "spec": yaml.safe_dump(self.spec.resolved(), sort_keys=False), "spec_dir": str(self.spec.base_dir),
                "timing": self.timing}
        (folder / "meta.json").write_text(json.dumps(meta))
        unsent = [[p.key, p.value, p.timestamp, p.step] for p in (self.metrics_logger.pending if self.metrics_logger
                                                                   else [])]
        (folder / "unsent.json").write_text(json.dumps(unsent))
        return folder

    def _checkpoint(self, tmp: Path, iteration: int) -> None:
        """Ctrl-C: a checkpoint in the run's artifacts (resumable from anywhere); kept locally
        until the server has it."""
        folder = self._keep_locally(iteration)
        self.metrics_logger.deliver()
        for name in ("state.npz", "meta.json"):
            self.tracker.log_artifact(folder / name, CHECKPOINT_DIR)
        shutil.rmtree(folder, ignore_errors=True)

    def _fail(self, error: BaseException) -> BaseException | None:
        """Record how the run ended; return an error to raise instead of `error`, if any."""
        from rnnflow.tracking import TrackingUnavailable

        if self.tracker is None:
            return None
        from rnnflow.controls import INTERRUPTED, NAN
        from rnnflow.errors import LossNotFinite

        if isinstance(error, TrackingUnavailable):
            return self._server_gone(error)
        try:
            if isinstance(error, RunInterrupted):
                # Stopped on request, not failed: no error is recorded, only where it stopped.
                self.tracker.set_tags({"rnnflow.interrupted_at": str(error.iteration),
                                       "rnnflow.stop_reason": INTERRUPTED})
                self.tracker.end("KILLED")
            elif isinstance(error, RunStopped):
                self.tracker.set_tags({"rnnflow.stopped_by": error.by, "rnnflow.stopped_at": str(error.iteration)})
                self.tracker.end("KILLED")
            elif isinstance(error, KeyboardInterrupt):
                self.tracker.delivery.wait = min(self.tracker.delivery.wait, 5.0)  # asked to stop: no long wait
                self.tracker.set_tags({"rnnflow.interrupted_at": "no checkpoint (stopped at once, or outside training)",
                                       "rnnflow.stop_reason": INTERRUPTED})
                self.tracker.end("KILLED")
            else:
                if isinstance(error, LossNotFinite):
                    self.tracker.set_tags({"rnnflow.stop_reason": NAN})
                    self.tracker.log_metrics({"stopped_iteration": float(error.iteration)}, step=error.iteration)
                buffer = io.StringIO()
                if not isinstance(error, RnnflowError):
                    traceback.print_exception(error, file=buffer)
                if self.metrics_logger is not None:
                    self.metrics_logger.deliver()  # the points up to the failure are real
                self.tracker.end("FAILED", f"{type(error).__name__}: {error}\n{buffer.getvalue()}")
        except TrackingUnavailable as gone:
            return self._server_gone(gone, after=error)
        return None

    def _server_gone(self, error: BaseException, after: BaseException | None = None) -> RnnflowError:
        """The tracking server went away for good: keep what it did not get, say how to go on."""
        from rnnflow.errors import TrackingError

        self.tracker.forget("FAILED")
        run_id = self.tracker.run_id
        # The trainer's state is consistent unless a second Ctrl-C (KeyboardInterrupt) cut it short,
        # and a failed run (NaN) has nothing to continue.
        resumable = self.trainer is not None and (after is None or isinstance(after, RunInterrupted))
        kept = self._keep_locally(int(self.trainer.iteration.numpy())) if resumable else None
        what = f" after: {after}" if after is not None else ""
        if kept is not None:
            return TrackingError(
                f"{error}{what}. Run {run_id} stays RUNNING on the server (it cannot be told); training state "
                f"and the metric points it did not get are kept in {kept}. Once the server is back, continue "
                f"the run with: rnnflow run --resume {run_id}")
        unsent = len(self.metrics_logger.pending) if self.metrics_logger is not None else 0
        return TrackingError(f"{error}{what}. Run {run_id} could not be recorded as ended "
                             f"({unsent} metric points not sent); run the spec again once the server is back")


def _safe_file_name(name: str) -> str:
    """A file name that stays inside the artifact folder."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
    return cleaned.lstrip(".") or "spec.yaml"
