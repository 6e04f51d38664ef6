"""One run of a spec: load data, build, train, evaluate, run the steps, and record it all in MLflow.

Everything that can fail on bad input (data files, devices, the tracking store) is checked
before the MLflow run starts, so a user mistake never leaves a run behind. Once the run exists,
it always ends: FINISHED, FAILED with the error, or KILLED after a checkpoint on Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
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
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    status: str
    metrics: dict[str, float]
    iterations: int
    seconds: float
    built: Any = None


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
    from rnnflow import tracking

    resume_state = None
    if resume is not None:
        if not isinstance(spec, (str, Path)) and spec is not None:
            raise RnnflowError("resume takes the spec from the run; do not pass one")
        uri = tracking.tracking_uri(None)
        tracking.check_reachable(uri)
        spec, resume_state = _load_checkpoint(resume)
    elif isinstance(spec, (str, Path)):
        spec = load_spec(spec, overrides)
        overrides = tuple(overrides)
        uri = tracking.tracking_uri(spec.tracking.tracking_uri)
        tracking.check_reachable(uri)
    else:
        uri = tracking.tracking_uri(spec.tracking.tracking_uri)
        tracking.check_reachable(uri)
    return _Run(spec, tuple(overrides), uri, quiet, resume, resume_state, parent_run_id, tags or {},
                list(callbacks), run_id).execute()


def _load_checkpoint(run_id: str) -> tuple[Spec, dict[str, Any]]:
    import numpy as np
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnflow.store import spec_of_run

    client = MlflowClient()
    try:
        run_info = client.get_run(run_id)
    except MlflowException as error:
        raise RnnflowError(f"cannot resume: no run {run_id} in {client.tracking_uri} ({error.message})") from None
    if run_info.info.status == "FINISHED":
        raise RnnflowError(f"cannot resume run {run_id}: it already FINISHED")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(client.download_artifacts(run_id, CHECKPOINT_DIR, tmp))
            with np.load(folder / "state.npz") as archive:
                arrays = {k: archive[k] for k in archive.files}
            meta = json.loads((folder / "meta.json").read_text())
        except (MlflowException, OSError):
            raise RnnflowError(f"cannot resume run {run_id}: it has no checkpoint (only interrupted runs do)") from None
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
                    self.trainer.load_state(self.resume_state["arrays"])
                    self.trainer.pending = list(self.resume_state["meta"].get("pending_losses", []))
        if not self.chief:
            return self._worker(built)
        self.tracker = self._start()
        with tempfile.TemporaryDirectory(prefix="rnnflow-") as tmp:
            try:
                if self.resume is None:
                    self._log_spec(self.tracker)
                else:
                    self.tracker.set_tags({"rnnflow.resumed_from": str(self.resume_state["meta"]["iteration"])})
                result = self._body(built, data, Path(tmp))
            except BaseException as error:
                self._fail(error)
                error.rnnflow_run_id = self.tracker.run_id  # lets a pipeline find the recorded run
                raise
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
        from rnnflow import __version__
        from rnnflow.store import SPEC_DIR_TAG
        from rnnflow.tracking import Tracker

        spec = self.spec
        tags = {
            "rnnflow.version": __version__,
            "rnnflow.spec_sha256": spec.sha256(),
            "rnnflow.spec_name": spec.name,
            "rnnflow.data": spec.data.type,
            "rnnflow.cells": "+".join(f"{c.type}x{c.layers}" for c in spec.model.cells),
            **spec.tracking.tags,
            **self.tags,
        }
        if spec.document is not None and spec.document.path is not None:
            tags["rnnflow.spec_file"] = str(spec.document.path.resolve())
        tags[SPEC_DIR_TAG] = str(spec.base_dir)  # relative paths of a resumed run resolve the same way
        if self.overrides:
            tags["rnnflow.overrides"] = " ".join(self.overrides)
        return Tracker(spec.tracking.experiment, spec.tracking.run_name or spec.name, tags,
                       parent_run_id=self.parent_run_id, resume_run_id=self.resume, run_id=self.run_id)

    def _log_spec(self, tracker) -> None:
        from rnnflow.store import is_setting
        from rnnflow.tracking import flatten

        spec = self.spec
        resolved = spec.resolved()
        tracker.log_params({k: v for k, v in flatten(resolved).items() if is_setting(k)})
        if spec.description.strip():
            # The run's Description in the UI (a tag: at most 8000 characters).
            tracker.set_tags({"mlflow.note.content": spec.description[:8000]})
        if spec.document is not None and spec.document.text:
            name = spec.document.path.name if spec.document.path is not None else "spec.yaml"
            tracker.log_text(spec.document.text, f"spec/{_safe_file_name(name)}")
        tracker.log_text(yaml.safe_dump(resolved, sort_keys=False), "spec/resolved.yaml")
        if self.overrides:
            tracker.log_text("\n".join(self.overrides) + "\n", "spec/overrides.txt")

    def _body(self, built, data, tmp: Path) -> RunResult:
        from rnnflow import plots
        from rnnflow.build import model_summary
        from rnnflow.steps import StepContext
        from rnnflow.tracking import MetricsLogger
        from rnnflow.train import evaluate

        spec, tracker = self.spec, self.tracker
        if self.resume is None:
            tracker.log_text(model_summary(built.model) + "\n", "model_summary.txt")
            tracker.log_params({"model.parameters": str(built.model.count_params())})
        metrics: dict[str, float] = {}
        iterations, seconds = 0, 0.0
        if self.trainer is not None:
            metrics_logger = MetricsLogger(tracker.run_id)
            callbacks = [metrics_logger, *self.callbacks]
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
            iterations, seconds = result.iterations, result.seconds
            replicas = self._check_replicas(built)
            if replicas:
                tracker.set_tags(replicas)
            trained = result.iterations - (int(self.resume_state["meta"]["iteration"]) if self.resume_state else 0)
            metrics["train_seconds"] = seconds
            if trained and seconds > 0:
                # Steady state: the first call also traces and (with XLA) compiles, reported apart.
                metrics["ms_per_iteration"] = result.ms_per_iteration(trained)
                metrics["first_call_seconds"] = result.first_call_seconds
            curve = self._full_curve(result.curve)
            tracker.log_artifact(plots.loss_curve({"loss": curve}, tmp / "loss.png"))
            for which, split in data.splits().items():
                metrics.update({f"{which}_{k}": v for k, v in evaluate(built, split, spec.train).items()})
        logged = metrics
        if self.trainer is not None and self.trainer.schedule.evaluates_at(iterations):
            # The trainer already logged this evaluation at the last step.
            logged = {k: v for k, v in metrics.items() if not k.startswith(self.trainer.held_out_name + "_")}
        tracker.log_metrics(logged, step=iterations)
        context = StepContext(built=built, data=data, out_dir=tmp, seed=spec.seed,
                              predict=built.predict, metrics=metrics)
        for step in spec.evaluate.steps:
            for path in step.run(context):
                tracker.log_artifact(path)
        if spec.tracking.log_model:
            tracker.log_model(built.model, data.held_out.inputs(slice(0, 1)))
        tracker.end("FINISHED")
        return RunResult(tracker.run_id, tracker.experiment_id, self.uri, "FINISHED", metrics, iterations,
                         seconds, built)

    def _full_curve(self, curve: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """The loss curve including points logged before a resume."""
        if self.resume is None:
            return curve
        from mlflow.tracking import MlflowClient

        history = MlflowClient().get_metric_history(self.tracker.run_id, "loss")
        points = {m.step: m.value for m in history}
        points.update(dict(curve))
        return sorted(points.items())

    def _checkpoint(self, tmp: Path, iteration: int) -> None:
        import numpy as np

        folder = tmp / CHECKPOINT_DIR
        folder.mkdir(exist_ok=True)
        np.savez(folder / "state.npz", **self.trainer.state())
        meta = {"iteration": iteration, "spec_sha256": self.spec.sha256(),
                # Losses since the last logged point: the first point after a resume averages them too.
                "pending_losses": self.trainer.pending}
        (folder / "meta.json").write_text(json.dumps(meta))
        self.tracker.log_artifact(folder / "state.npz", CHECKPOINT_DIR)
        self.tracker.log_artifact(folder / "meta.json", CHECKPOINT_DIR)

    def _fail(self, error: BaseException) -> None:
        if self.tracker is None:
            return
        if isinstance(error, RunInterrupted):
            # Stopped on request, not failed: no error is recorded, only where it stopped.
            self.tracker.set_tags({"rnnflow.interrupted_at": str(error.iteration)})
            self.tracker.end("KILLED")
            return
        if isinstance(error, RunStopped):
            self.tracker.set_tags({"rnnflow.stopped_by": error.by, "rnnflow.stopped_at": str(error.iteration)})
            self.tracker.end("KILLED")
            return
        if isinstance(error, KeyboardInterrupt):
            self.tracker.set_tags({"rnnflow.interrupted_at": "no checkpoint (stopped at once, or outside training)"})
            self.tracker.end("KILLED")
            return
        buffer = io.StringIO()
        if not isinstance(error, RnnflowError):
            traceback.print_exception(error, file=buffer)
        message = f"{type(error).__name__}: {error}\n{buffer.getvalue()}"
        self.tracker.end("FAILED", message)


def _safe_file_name(name: str) -> str:
    """A file name that stays inside the artifact folder."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
    return cleaned.lstrip(".") or "spec.yaml"
