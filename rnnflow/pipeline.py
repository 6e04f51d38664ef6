"""Running a pipeline: one parent MLflow run, a nested child run per entry, then a comparison.

A child that fails is recorded FAILED and the others still run. At the end the parent run gets
a summary table and overlay plots (every child's loss curve; every child's forecast of the
same evaluation sequence against the truth).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from rnnflow.errors import RnnflowError
from rnnflow.spec.pipeline import Child, Pipeline, load_pipeline

log = logging.getLogger("rnnflow")


@dataclasses.dataclass
class ChildOutcome:
    """How one child went."""

    name: str
    run_id: str | None
    status: str
    metrics: dict[str, float]
    error: str | None = None
    stop_reason: str | None = None


@dataclasses.dataclass
class PipelineResult:
    """What a pipeline run produced."""

    parent_run_id: str
    experiment_id: str
    children: list[ChildOutcome]

    @property
    def failed(self) -> list[ChildOutcome]:
        return [c for c in self.children if c.status != "FINISHED"]


def plan(path: str | Path, overrides: tuple[str, ...] = ()) -> tuple[Pipeline, list[Child]]:
    """Validate a pipeline and every resolved spec (what --dry-run shows)."""
    return load_pipeline(path, overrides)


def run_pipeline(path: str | Path, overrides: tuple[str, ...] = (), *, quiet: bool = True,
                 echo=print) -> PipelineResult:
    """Run every child of a pipeline under one parent MLflow run.

    Args:
        path: the pipeline file.
        overrides: `--set` overrides for every child.
        quiet: no progress bars.
        echo: where progress lines go.

    Returns:
        The PipelineResult (children that failed have status FAILED).

    Raises:
        SpecError: the pipeline or a resolved spec is invalid (nothing has run).
        TrackingError: the tracking store cannot be reached (nothing has run).
        RunInterrupted: Ctrl-C stopped a child (recorded KILLED with a checkpoint); the parent
            is recorded KILLED and the remaining children do not run.
    """
    from rnnflow import __version__, tracking
    from rnnflow.runner import RunInterrupted, run

    pipeline, children = load_pipeline(path, overrides)
    uri = tracking.tracking_uri(pipeline.tracking_uri)
    tracking.check_reachable(uri)
    parent = tracking.Tracker(pipeline.experiment, pipeline.name,
                              {"rnnflow.version": __version__, "rnnflow.role": "pipeline",
                               "rnnflow.pipeline": pipeline.name})
    outcomes: list[ChildOutcome] = []
    try:
        parent.log_params({"pipeline.name": pipeline.name, "pipeline.children": str(len(children))})
        parent.log_artifact(Path(path), "pipeline")
        for index, child in enumerate(children, 1):
            echo(f"[{index}/{len(children)}] {child.name}")
            tags = {"rnnflow.pipeline": pipeline.name, "rnnflow.child": child.name,
                    **{f"rnnflow.grid.{k}": str(v) for k, v in child.varied.items()}}
            try:
                result = run(child.spec, child.overrides, quiet=quiet, parent_run_id=parent.run_id, tags=tags)
                outcomes.append(ChildOutcome(child.name, result.run_id, "FINISHED", result.metrics,
                                             stop_reason=result.stop_reason))
            except (KeyboardInterrupt, RunInterrupted):
                raise  # Ctrl-C stops the pipeline, not just the child that was training
            except Exception as error:  # noqa: BLE001 - a failing child must not stop the others
                run_id = getattr(error, "rnnflow_run_id", None)
                if run_id is None:  # failed before its run existed: record it anyway
                    run_id = _record_failure(pipeline, parent.run_id, child, tags, error)
                message = str(error) if isinstance(error, RnnflowError) else f"{type(error).__name__}: {error}"
                outcomes.append(ChildOutcome(child.name, run_id, "FAILED", {}, message))
                echo(f"  FAILED: {message}")
        _summarize(parent, outcomes, echo)
    except BaseException as error:
        parent.end("KILLED" if isinstance(error, (KeyboardInterrupt, RunInterrupted)) else "FAILED", str(error))
        raise
    failed = [o for o in outcomes if o.status != "FINISHED"]
    parent.end("FAILED" if failed else "FINISHED",
               f"{len(failed)} of {len(outcomes)} runs failed" if failed else None)
    return PipelineResult(parent.run_id, parent.experiment_id, outcomes)


def _record_failure(pipeline: Pipeline, parent_run_id: str, child: Child, tags: dict[str, str],
                    error: BaseException) -> str:
    from rnnflow.tracking import Tracker

    tracker = Tracker(pipeline.experiment, child.name, {**tags, "rnnflow.spec_name": child.spec.name},
                      parent_run_id=parent_run_id)
    tracker.end("FAILED", f"{type(error).__name__}: {error}")
    return tracker.run_id


def summary_rows(outcomes: list[ChildOutcome]) -> tuple[list[str], list[list[Any]]]:
    """The summary table: one row per child with its final metrics, its best validation metric and
    why its training stopped."""
    metric_names = sorted({k for o in outcomes for k in o.metrics if k.startswith(("train_", "val_", "test_"))
                           and k != "train_seconds"})
    best = sorted({k for o in outcomes for k in o.metrics if k.startswith("best_val_")})
    header = ["run", "status", *metric_names, *best, "best_iteration", "stop_reason", "ms_per_iteration", "run_id"]
    rows = [[o.name, o.status, *[o.metrics.get(m, "") for m in metric_names], *[o.metrics.get(m, "") for m in best],
             o.metrics.get("best_iteration", ""), o.stop_reason or "", o.metrics.get("ms_per_iteration", ""),
             o.run_id or ""] for o in outcomes]
    return header, rows


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """Rows as an aligned text table."""
    def cell(value: Any) -> str:
        # One line per row: a value with line breaks (a folded `description: >`) would break the table.
        return f"{value:.5g}" if isinstance(value, float) else " ".join(str(value).split())

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _summarize(parent, outcomes: list[ChildOutcome], echo) -> None:
    from mlflow.tracking import MlflowClient

    from rnnflow import plots

    header, rows = summary_rows(outcomes)
    echo(format_table(header, rows))
    client = MlflowClient()
    with tempfile.TemporaryDirectory(prefix="rnnflow-pipeline-") as tmp:
        folder = Path(tmp)
        with open(folder / "summary.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
        parent.log_artifact(folder / "summary.csv")
        finished = [o for o in outcomes if o.status == "FINISHED" and o.run_id]
        curves = {o.name: [(m.step, m.value) for m in client.get_metric_history(o.run_id, "loss")]
                  for o in finished}
        if any(curves.values()):
            parent.log_artifact(plots.loss_curve(curves, folder / "loss_curves.png", title="training loss of each run"))
        overlay = _forecast_overlay(client, finished, folder)
        if overlay is not None:
            parent.log_artifact(plots.overlay_forecasts(*overlay, folder / "forecasts.png"))
        metrics = {"runs_finished": float(len(finished)), "runs_failed": float(len(outcomes) - len(finished))}
        parent.log_metrics(metrics)


def _forecast_overlay(client, finished: list[ChildOutcome], folder: Path):
    """(time, truth, {run: prediction}) of evaluation sequence 0, when every child forecasts one."""
    import numpy as np

    predictions: dict[str, Any] = {}
    time = truth = None
    for outcome in finished:
        try:
            path = client.download_artifacts(outcome.run_id, "predictions.csv", str(folder / outcome.run_id))
        except Exception:  # noqa: BLE001 - a child without predictions is left out of the overlay
            continue
        with open(path) as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("sequence") == "0" and "time" in r]
        if not rows or "prediction" not in rows[0]:
            continue
        t = np.array([float(r["time"]) for r in rows])
        if time is not None and (len(t) != len(time) or not np.allclose(t, time)):
            continue  # a different evaluation sequence cannot share the plot
        time, truth = t, np.array([float(r["target"]) for r in rows])
        predictions[outcome.name] = np.array([float(r["prediction"]) for r in rows])
    if not predictions:
        return None
    return time, truth, predictions
