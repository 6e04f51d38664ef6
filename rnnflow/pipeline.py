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
class Summary:
    """How the children compare (what the parent run records about them).

    Attributes:
        metric: the metric they are compared by (None when no child has one).
        ascending: whether smaller values of it are better.
        ranked: the run ids of the finished children, best first.
        view: the key of the saved view of the children, None when it could not be written.
    """

    metric: str | None
    ascending: bool
    ranked: list[str]
    view: str | None = None


@dataclasses.dataclass
class PipelineResult:
    """What a pipeline run produced."""

    parent_run_id: str
    experiment_id: str
    children: list[ChildOutcome]
    tracking_uri: str = ""
    summary: Summary | None = None

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
    pipeline, children = load_pipeline(path, overrides)  # spec errors before TensorFlow is imported
    from rnnflow import tracking
    from rnnflow.provenance import git_tags, version_tags
    from rnnflow.runner import RunInterrupted, run

    uri = tracking.tracking_uri(pipeline.tracking_uri)
    tracking.check_reachable(uri)
    parent = tracking.Tracker(pipeline.experiment, pipeline.name,
                              {**version_tags(), **git_tags(Path(path)), "rnnflow.role": "pipeline",
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
        summary = _summarize(parent, pipeline, children, outcomes, echo)
    except BaseException as error:
        parent.end("KILLED" if isinstance(error, (KeyboardInterrupt, RunInterrupted)) else "FAILED", str(error))
        raise
    failed = [o for o in outcomes if o.status != "FINISHED"]
    parent.end("FAILED" if failed else "FINISHED",
               f"{len(failed)} of {len(outcomes)} runs failed" if failed else None)
    return PipelineResult(parent.run_id, parent.experiment_id, outcomes, uri, summary)


def _record_failure(pipeline: Pipeline, parent_run_id: str, child: Child, tags: dict[str, str],
                    error: BaseException) -> str:
    from rnnflow.tracking import Tracker

    tracker = Tracker(pipeline.experiment, child.name, {**tags, "rnnflow.spec_name": child.spec.name},
                      parent_run_id=parent_run_id)
    tracker.end("FAILED", f"{type(error).__name__}: {error}")
    return tracker.run_id


def varying_settings(children: list[Child]) -> dict[str, dict[str, str]]:
    """The settings that define each child: {child name: {param key: value}}.

    The params (flattened keys, as logged) set by the pipeline's grids and overrides whose values
    differ between the children, grid keys first. Params that differ only
    as a consequence (a cell type's own defaults, e.g. forget_bias of an lstm) are left out.
    """
    from rnnflow.spec.keypath import parse_path
    from rnnflow.store import is_setting
    from rnnflow.tracking import flatten

    params = [{k: v for k, v in flatten(c.spec.resolved()).items() if is_setting(k)} for c in children]
    keys = list(dict.fromkeys(k for p in params for k in p))
    differing = {k for k in keys if len({p.get(k) for p in params}) > 1}
    chosen: list[str] = []
    grids = [k for c in children for k in c.varied]  # a grid's keys first: they are what it compares
    for text in dict.fromkeys([*grids, *(o.split("=", 1)[0] for c in children for o in c.overrides)]):
        try:
            prefix = ".".join(str(part) for part in parse_path(text))
        except ValueError:
            continue
        chosen += [k for k in keys if k in differing and k not in chosen
                   and (k == prefix or k.startswith(prefix + "."))]
    return {c.name: {k: p.get(k, "") for k in chosen} for c, p in zip(children, params)}


def _setting_keys(settings: dict[str, dict[str, str]]) -> list[str]:
    return list(next(iter(settings.values()), {}))  # every child has the same keys


def summary_rows(outcomes: list[ChildOutcome], settings: dict[str, dict[str, str]] | None = None
                 ) -> tuple[list[str], list[list[Any]]]:
    """The summary table: one row per child with the settings that vary, its final metrics, its
    best validation metric and why its training stopped."""
    settings = settings or {}
    varying = _setting_keys(settings)
    metric_names = sorted({k for o in outcomes for k in o.metrics if k.startswith(("train_", "val_", "test_"))
                           and k != "train_seconds"})
    best = sorted({k for o in outcomes for k in o.metrics if k.startswith("best_val_")})
    header = ["run", "status", *varying, *metric_names, *best, "best_iteration", "stop_reason",
              "ms_per_iteration", "run_id"]
    rows = [[o.name, o.status, *[settings.get(o.name, {}).get(k, "") for k in varying],
             *[o.metrics.get(m, "") for m in metric_names], *[o.metrics.get(m, "") for m in best],
             o.metrics.get("best_iteration", ""), o.stop_reason or "", o.metrics.get("ms_per_iteration", ""),
             o.run_id or ""] for o in outcomes]
    return header, rows


def _cell(value: Any) -> str:
    # One line per row: a value with line breaks (a folded `description: >`) would break the table.
    return f"{value:.5g}" if isinstance(value, float) else " ".join(str(value).split())


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """Rows as an aligned text table."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# The saved view's columns: at most this many settings, and this many metrics.
_VIEW_SETTINGS = 8
_VIEW_METRICS = 6


def _summarize(parent, pipeline: Pipeline, children: list[Child], outcomes: list[ChildOutcome], echo) -> Summary:
    """Record on the parent run how the children compare, so MLflow's own views show it.

    The parent gets: summary.csv and summary.json (a table in the UI's Artifacts tab); the best
    child's final metrics as `best_<metric>` and its name as the tag rnnflow.best_child; a Markdown
    summary as its Description; the overlay plots as artifacts and as image charts (shown in the
    runs page's chart view without expanding the parent). The experiment gets a saved view of the
    children (see rnnflow.ui). Every executor of a pipeline ends with this.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnflow import plots
    from rnnflow.compare import compare_runs, default_metric, higher_is_better, render

    echo(render(compare_runs(parent=parent.run_id), "table"))  # the table `rnnflow compare` shows
    settings = varying_settings(children)
    varying = _setting_keys(settings)
    header, rows = summary_rows(outcomes, settings)
    client = MlflowClient()
    finished = [o for o in outcomes if o.status == "FINISHED" and o.run_id]
    metric = default_metric({k for o in finished for k in o.metrics})
    ascending = metric is None or not higher_is_better(metric)
    sign = 1.0 if ascending else -1.0
    ranked = sorted(finished, key=lambda o: (metric not in o.metrics, sign * o.metrics.get(metric or "", 0.0)))
    best = ranked[0] if ranked and metric in ranked[0].metrics else None
    metrics = {"runs_finished": float(len(finished)), "runs_failed": float(len(outcomes) - len(finished))}
    tags = {"mlflow.note.content": _note(pipeline, header, rows, metric, best)}
    if best is not None:
        metrics.update({f"best_{k}": v for k, v in best.metrics.items() if k.startswith(("val_", "test_"))})
        tags.update({"rnnflow.best_child": best.name, "rnnflow.best_run_id": best.run_id or "",
                     "rnnflow.compared_by": metric or ""})
    with tempfile.TemporaryDirectory(prefix="rnnflow-pipeline-") as tmp:
        folder = Path(tmp)
        with open(folder / "summary.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
        parent.log_artifact(folder / "summary.csv")
        client.log_table(parent.run_id, {h: [None if row[i] == "" else row[i] for row in rows]
                                         for i, h in enumerate(header)}, "summary.json")
        curves = {o.name: [(m.step, m.value) for m in client.get_metric_history(o.run_id, "loss")]
                  for o in finished}
        figures = []
        if any(curves.values()):
            figures.append(plots.loss_curve(curves, folder / "loss_curves.png", title="training loss of each run"))
        overlay = _forecast_overlay(client, finished, folder)
        if overlay is not None:
            figures.append(plots.overlay_forecasts(*overlay, folder / "forecasts.png"))
        for figure in figures:
            parent.log_artifact(figure)
            _log_image(client, parent.run_id, figure)
    parent.log_metrics(metrics)
    for key, value in tags.items():
        client.set_tag(parent.run_id, key, value)
    _log_varied(client, finished, settings)
    view_metrics = [metric] if metric else []
    view_metrics += sorted({k for o in finished for k in o.metrics if k.startswith(("val_", "test_"))} - {metric})
    view = None
    try:
        from rnnflow import ui

        view = ui.save_pipeline_view(
            client, parent.experiment_id, parent.run_id, f"{pipeline.name} ({parent.run_id[:8]})",
            varying[:_VIEW_SETTINGS], view_metrics[:_VIEW_METRICS], metric, ascending)
    except MlflowException as error:  # e.g. no permission to tag the experiment: the links say the rest
        log.warning("could not save the view of the children on the experiment: %s", error.message)
    return Summary(metric, ascending, [o.run_id for o in ranked], view)


def _log_varied(client, finished: list[ChildOutcome], settings: dict[str, dict[str, str]]) -> None:
    """Log the settings that define each finished child again, under VARIED_PREFIX (see there)."""
    from mlflow.entities import Param

    from rnnflow.store import VARIED_PREFIX

    for outcome in finished:
        params = [Param(VARIED_PREFIX + k, v) for k, v in settings.get(outcome.name, {}).items()
                  if v != "" and len(VARIED_PREFIX + k) <= _MAX_KEY]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            client.log_batch(outcome.run_id, params=params[start : start + 100])


# MLflow's limits: a param key, and a tag value (the Description).
_MAX_KEY = 250
_MAX_NOTE = 8000


def _note(pipeline: Pipeline, header: list[str], rows: list[list[Any]], metric: str | None,
          best: ChildOutcome | None) -> str:
    """The parent run's Description: the pipeline, then the summary as a Markdown table."""
    def line(values: list[Any]) -> str:
        return "| " + " | ".join(_cell(values[i]).replace("|", "\\|") for i in keep) + " |"

    keep = [i for i, h in enumerate(header) if h != "run_id"]
    about = _cell(pipeline.description)
    about = about if len(about) <= 1000 else about[:997] + "..."
    lines = [f"**{pipeline.name}**" + (f": {about}" if about else ""), ""]
    if best is not None:
        lines += [f"Best by {metric}: **{_cell(best.name)}** ({best.metrics[metric]:.5g}).", ""]
    lines += [line(header), "|" + "---|" * len(keep)]
    for shown, row in enumerate(rows):
        text = line(row)
        if sum(len(x) + 1 for x in lines) + len(text) > _MAX_NOTE - 100:
            lines += ["", f"... and {len(rows) - shown} more runs: see summary.json in Artifacts."]
            break
        lines.append(text)
    return "\n".join(lines)


def _log_image(client, run_id: str, path: Path) -> None:
    """A figure as an MLflow image (keyed by its name): the runs page charts it beside the metrics."""
    from PIL import Image

    with Image.open(path) as image:
        client.log_image(run_id, image.convert("RGB"), key=path.stem, step=0)


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
