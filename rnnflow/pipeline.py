"""Running a pipeline: one parent MLflow run, a nested child run per entry, then a comparison.

A child that fails is recorded FAILED and the others still run. The children run one after
another in this process, or in parallel as Ray tasks (`rnnflow.executors`); a search asks Optuna
for each trial (`rnnflow.search`). At the end the parent run gets a summary table and overlay
plots (every child's loss curve; every child's forecast of the same evaluation sequence against
the truth), the same whichever executor ran the children.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from rnnflow.errors import RnnflowError, SpecError
from rnnflow.spec.pipeline import Child, Pipeline, PipelinePlan, load_pipeline, load_plan

log = logging.getLogger("rnnflow")


@dataclasses.dataclass
class ChildOutcome:
    """How one child went.

    Attributes:
        name: the child run's name.
        run_id: its MLflow run.
        status: FINISHED, FAILED or KILLED.
        metrics: its final metrics (when FINISHED).
        error: why it failed or was stopped.
        stopped_by: `scheduler` when a search's scheduler stopped it early (KILLED, not failed).
        varied: its grid values or trial values (key path -> value).
        trial: its trial number, for a search trial.
        stop_reason: why its training stopped (completed, early_stopping, max_minutes), when FINISHED.
    """

    name: str
    run_id: str | None
    status: str
    metrics: dict[str, float]
    error: str | None = None
    stopped_by: str | None = None
    varied: dict[str, Any] = dataclasses.field(default_factory=dict)
    trial: int | None = None
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
        """The children that FAILED (a trial stopped by a scheduler did not fail)."""
        return [c for c in self.children if c.status == "FAILED"]


class PipelineInterrupted(RnnflowError):
    """Ctrl-C stopped a pipeline whose children ran on Ray: the running and queued children and the
    parent are recorded KILLED."""

    exit_code = 130

    def __init__(self, parent_run_id: str, killed: int):
        super().__init__(f"interrupted: {killed} child run{'s' if killed != 1 else ''} and the parent run "
                         f"{parent_run_id} recorded KILLED")
        self.parent_run_id = parent_run_id


def plan(path: str | Path, overrides: tuple[str, ...] = ()) -> tuple[Pipeline, list[Child]]:
    """Validate a pipeline and every resolved spec (what --dry-run shows)."""
    return load_pipeline(path, overrides)


def run_pipeline(path: str | Path, overrides: tuple[str, ...] = (), *, quiet: bool = True,
                 echo=print, executor: str = "serial", address: str | None = None,
                 max_parallel: int | None = None) -> PipelineResult:
    """Run every child of a pipeline (and every trial of its search) under one parent MLflow run.

    The driver validates every child, then creates the parent run and each child's run before the
    child starts; whatever a child leaves open (it failed before starting, its Ray worker died, it
    was cancelled) the driver ends, so no run is left RUNNING.

    Args:
        path: the pipeline file.
        overrides: `--set` overrides for every child.
        quiet: no progress bars.
        echo: where progress lines go.
        executor: `serial` (one child after another, in this process) or `ray` (Ray tasks).
        address: the Ray cluster to use (default: a local one started for the pipeline).
        max_parallel: at most this many children at once on Ray (default: as many as fit).

    Returns:
        The PipelineResult (children that failed have status FAILED).

    Raises:
        SpecError: the pipeline or a resolved spec is invalid (nothing has run).
        TrackingError: the tracking store cannot be reached (nothing has run).
        RnnflowError: Ray or Optuna is missing, or the Ray cluster cannot be reached (nothing has run).
        RunInterrupted: Ctrl-C stopped a serial child (recorded KILLED with a checkpoint); the
            parent and the children that did not run are recorded KILLED.
        PipelineInterrupted: Ctrl-C stopped a pipeline on Ray; the children that were running or
            waiting, and the parent, are recorded KILLED.
    """
    # The driver itself never imports TensorFlow (only serial children do): on Ray that is seconds
    # and a gigabyte saved.
    from rnnflow import search as searching
    from rnnflow.executors import make_executor
    from rnnflow.store import checked_uri

    pipeline_plan = load_plan(path, overrides)
    if pipeline_plan.search is not None:
        searching.check_available()
    cpus = _serial_cpus(pipeline_plan) if executor == "serial" else None
    ray_cpus = {c for c, _ in _sizes(pipeline_plan)}

    # Opening the store (importing MLflow: ~1 s; a new SQLite store runs its migrations: ~2 s) and
    # starting the executor (a local Ray cluster: ~3 s, mostly waiting on its processes; a serial
    # one imports TensorFlow) wait on different things: the store opens in a thread meanwhile. A
    # serial executor first waits for the store to be found reachable (TensorFlow's import is long).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rnnflow-store") as pool:
        checking = pool.submit(checked_uri, pipeline_plan.pipeline.tracking_uri)
        opening = pool.submit(_client, checking)  # the same thread: after the check
        if executor == "serial":
            checking.result()
        with make_executor(executor, address=address, max_parallel=max_parallel, cpus=cpus,
                           ray_cpus=ray_cpus) as runner:
            return _Driver(pipeline_plan, Path(path), checking.result(), runner, echo, quiet,
                           opening.result()).run()


def _client(checking: concurrent.futures.Future):
    from mlflow.tracking import MlflowClient

    return MlflowClient(checking.result())


def _serial_cpus(pipeline_plan: PipelinePlan) -> int | None:
    """The TensorFlow threads of a serial pipeline: the resources it gives (one process, one setting)."""
    given = {c.resources.cpus for c in pipeline_plan.children if c.resources is not None}
    search = pipeline_plan.search
    if search is not None:
        entry = pipeline_plan.pipeline.runs[search.entry]
        resources = entry.resources or pipeline_plan.pipeline.resources
        if resources is not None:
            given.add(resources.cpus)
    if len(given) > 1:
        raise RnnflowError(f"the serial executor runs every child in this one process, which has one thread "
                           f"setting, but the runs ask for {' and '.join(map(str, sorted(given)))} CPUs "
                           "(resources.cpus): make them the same, or use --executor ray")
    return given.pop() if given else None


def _sizes(pipeline_plan: PipelinePlan) -> list[tuple[int, float]]:
    """(cpus, gpus) of every entry's runs (children and trials) on Ray."""
    sizes = [_resources(c) for c in pipeline_plan.children]
    if pipeline_plan.search is not None:
        pipeline = pipeline_plan.pipeline
        resources = pipeline.runs[pipeline_plan.search.entry].resources or pipeline.resources
        sizes.append((resources.cpus, float(resources.gpus)) if resources else (1, 0.0))
    return sizes


def _resources(child: Child) -> tuple[int, float]:
    """(cpus, gpus) of a child on Ray: its resources, else one CPU."""
    if child.resources is None:
        return 1, 0.0
    return child.resources.cpus, float(child.resources.gpus)


class _Driver:
    """One pipeline run: the parent run, a run per child, the executor's loop, the summary."""

    def __init__(self, pipeline_plan: PipelinePlan, path: Path, uri: str, executor, echo, quiet: bool, client):
        self.plan = pipeline_plan
        self.pipeline = pipeline_plan.pipeline
        self.path = path
        self.uri = uri
        self.executor = executor
        self.echo = echo
        self.quiet = quiet
        self.client = client
        self.parent = None
        self.outcomes: dict[int, ChildOutcome] = {}
        self.open_runs: dict[str, Any] = {}  # run id -> the RecordedRun of a child that may not have ended
        self.inflight: dict[Any, Any] = {}
        self.queue: list[Any] = []
        self.study = None
        self.asked = 0
        self.varied: dict[int, dict[str, Any]] = {}  # child index -> its grid or trial values
        self.children: dict[int, Child] = {}  # child index -> the child (the trials the spec accepted too)

    # --- the run ---

    def run(self) -> PipelineResult:
        from rnnflow.provenance import git_tags, version_tags
        from rnnflow.runner import RunInterrupted
        from rnnflow.store import RecordedRun

        pipeline, search = self.pipeline, self.plan.search
        tags = {**version_tags(), **git_tags(self.path), "rnnflow.role": "pipeline",
                "rnnflow.pipeline": pipeline.name, "rnnflow.executor": self.executor.name}
        if search is not None:
            spec = search.search
            tags.update({"rnnflow.search.metric": spec.metric, "rnnflow.search.mode": spec.mode,
                         "rnnflow.search.algorithm": spec.algorithm,
                         "rnnflow.search.scheduler": spec.scheduler.type if spec.scheduler else "none"})
        # Ray's workers start importing TensorFlow (~10 s) now, while the driver records the runs.
        sizes = _sizes(self.plan)
        slots = self.executor.slots(min(c for c, _ in sizes), min(g for _, g in sizes)) if sizes else 1
        self.executor.warm_up(min(slots, self.plan.total))
        self.parent = parent = RecordedRun.create(self.client, pipeline.experiment, pipeline.name, tags)
        try:
            parent.log_params({"pipeline.name": pipeline.name, "pipeline.children": str(self.plan.total)})
            if search is not None:
                parent.log_params({"search.num_samples": str(search.search.num_samples),
                                   "search.seed": str(search.search.seed)})
            parent.log_artifact(self.path, "pipeline")
            # Every run of the pipeline is in MLflow from the start: SCHEDULED until it starts.
            self.queue = [self._job(i, child) for i, child in enumerate(self.plan.children)]
            if search is not None:
                self.study = self.executor.study(search.search)
            self._loop(slots)
            self._close_study()
            self.executor.release()  # nothing runs any more: a local Ray cluster stops meanwhile
            outcomes = [self.outcomes[i] for i in sorted(self.outcomes)]
            children = [self.children[i] for i in sorted(self.children)]
            compared = (search.search.metric, search.search.mode == "min") if search is not None else None
            summary = _summarize(parent, pipeline, children, outcomes, self.echo, compared)
            if search is not None:
                _record_search(parent, search.search, outcomes, self.echo)
        except BaseException as error:
            interrupted = isinstance(error, (KeyboardInterrupt, RunInterrupted))
            killed = self._stop_children(interrupted, error)
            parent.end("KILLED" if interrupted else "FAILED", None if interrupted else str(error))
            if isinstance(error, KeyboardInterrupt):
                raise PipelineInterrupted(parent.run_id, killed) from None
            raise
        finally:
            self._close_study()
        failed = [o for o in outcomes if o.status == "FAILED"]
        parent.end("FAILED" if failed else "FINISHED",
                   f"{len(failed)} of {len(outcomes)} runs failed" if failed else None)
        return PipelineResult(parent.run_id, parent.experiment_id, outcomes, self.uri, summary)

    def _close_study(self) -> None:
        if self.study is not None:
            study, self.study = self.study, None
            try:
                study.close()
            except Exception as problem:  # noqa: BLE001 - the pipeline's record matters more
                log.warning("could not stop the search's study: %s", problem)

    def _loop(self, slots: int) -> None:
        """Keep the executor busy: submit jobs while there are free slots, then take what ends."""
        while True:
            while len(self.inflight) < slots:
                job = self._next_job()
                if job is None:
                    break
                self.echo(f"[{job.index + 1}/{self.plan.total}] {job.name}")
                self.inflight[self.executor.submit(job)] = job
            if not self.inflight:
                return
            handle, outcome = self.executor.wait(self.inflight)
            self._finish(self.inflight.pop(handle), outcome)

    # --- jobs ---

    def _next_job(self):
        if self.queue:
            return self.queue.pop(0)
        search = self.plan.search
        while self.study is not None and self.asked < search.search.num_samples:
            from rnnflow.search import TrialLink

            number, values = self.study.ask()
            index = len(self.plan.children) + self.asked
            self.asked += 1
            try:
                child = search.trial(number, values)
            except SpecError as error:  # values the spec refuses: a failed trial, the search goes on
                self._refused(index, number, values, error)
                continue
            spec = search.search
            link = TrialLink(self.study, number, spec.metric, spec.scheduler is not None)
            return self._job(index, child, link)
        return None

    def _child_tags(self, name: str, spec_name: str, varied: dict[str, Any], trial: int | None) -> dict[str, str]:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = {MLFLOW_PARENT_RUN_ID: self.parent.run_id, "rnnflow.pipeline": self.pipeline.name,
                "rnnflow.child": name, "rnnflow.spec_name": spec_name}
        if trial is None:
            tags.update({f"rnnflow.grid.{k}": str(v) for k, v in varied.items()})
        else:
            tags["rnnflow.search.trial"] = str(trial)
            tags.update({f"rnnflow.search.param.{k}": _value_text(v) for k, v in varied.items()})
        return tags

    def _create_run(self, name: str, tags: dict[str, str]) -> str:
        from rnnflow.store import RecordedRun

        run = RecordedRun.create(self.client, self.pipeline.experiment, name, tags, scheduled=True)
        self.open_runs[run.run_id] = run
        return run.run_id

    def _job(self, index: int, child: Child, trial=None):
        from rnnflow.executors import Job

        run_id = self._create_run(child.name, self._child_tags(child.name, child.spec.name, child.varied, child.trial))
        if child.spec.tracking.tracking_uri is not None:
            child.spec.tracking.tracking_uri = self.uri  # the same store, wherever the child runs
        cpus, gpus = _resources(child)
        if self.executor.name == "serial":
            cpus = self.executor.cpus
        self.varied[index] = dict(child.varied)
        self.children[index] = child
        return Job(index, child.name, child.spec, list(child.overrides), run_id, self.uri, cpus, gpus, trial)

    def _refused(self, index: int, number: int, values: dict[str, Any], error: SpecError) -> None:
        name = self.plan.search.trial_name(number)
        run_id = self._create_run(name, self._child_tags(name, "", values, number))
        self._end_run(run_id, "FAILED", f"the spec refuses the trial's values:\n{error}")
        self.study.tell(number, "fail")
        self.outcomes[index] = ChildOutcome(name, run_id, "FAILED", {}, str(error), varied=values, trial=number)
        self.echo(f"  {name}: FAILED: {' '.join(str(error).split())}")

    def _end_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """End a child's run unless the child ended it itself."""
        self.open_runs.pop(run_id).end(status, error)

    def _finish(self, job, outcome) -> None:
        """Record how a job ended: its run, its outcome, and its trial's result."""
        self._end_run(job.run_id, outcome.status, outcome.error)
        self.outcomes[job.index] = ChildOutcome(job.name, job.run_id, outcome.status, outcome.metrics, outcome.error,
                                                outcome.stopped_by, self.varied.pop(job.index),
                                                job.trial.number if job.trial is not None else None,
                                                outcome.stop_reason)
        if job.trial is not None:
            metric = job.trial.metric
            if outcome.status == "FINISHED" and metric in outcome.metrics:
                self.study.tell(job.trial.number, "complete", float(outcome.metrics[metric]))
            elif outcome.stopped_by == "scheduler":
                self.study.tell(job.trial.number, "pruned")
            else:
                self.study.tell(job.trial.number, "fail")
        line = f"  {job.name}: {outcome.status}"
        if outcome.stopped_by:
            line += f" ({outcome.error})"
        elif outcome.status != "FINISHED" and outcome.error:
            line += f": {' '.join(outcome.error.split())}"
        self.echo(line)

    def _stop_children(self, interrupted: bool, error: BaseException) -> int:
        """After Ctrl-C (or a failure of the driver): stop what runs, end every open run; returns how many."""
        from rnnflow.executors import describe_error

        # The records first: stopping the executor's work may take long (a loaded machine, a Ray
        # cluster that is itself shutting down on the same Ctrl-C), and must not leave runs RUNNING.
        status = "KILLED" if interrupted else "FAILED"
        reason = None if interrupted else f"the pipeline stopped: {describe_error(error)}"
        ended = 0
        for run_id in list(self.open_runs):
            if interrupted:
                self.client.set_tag(run_id, "rnnflow.interrupted_at", "no checkpoint (the pipeline was interrupted)")
            self._end_run(run_id, status, reason)
            ended += 1
        try:
            self.executor.cancel(list(self.inflight))
        except Exception as problem:  # noqa: BLE001 - the runs are recorded; the rest is clean-up
            log.warning("could not cancel the running children: %s", problem)
        return ended


def _value_text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _record_search(parent, search, outcomes: list[ChildOutcome], echo) -> None:
    """The search's result on the parent run: the best trial and its values, and how many trials
    finished, stopped early or failed (the best child's metrics are `_summarize`'s `best_*`)."""
    from rnnflow.spec.keypath import param_name

    trials = [o for o in outcomes if o.trial is not None]
    finished = [o for o in trials if o.status == "FINISHED" and search.metric in o.metrics]
    metrics = {"trials_finished": float(len(finished)),
               "trials_stopped": float(sum(o.stopped_by == "scheduler" for o in trials)),
               "trials_failed": float(sum(o.status == "FAILED" for o in trials))}
    if finished:
        sign = 1.0 if search.mode == "min" else -1.0
        best = min(finished, key=lambda o: sign * o.metrics[search.metric])
        parent.set_tags({"rnnflow.search.best_run_id": best.run_id, "rnnflow.search.best_trial": best.name})
        parent.log_params({f"best.{param_name(key)}": _value_text(value) for key, value in best.varied.items()})
        values = ", ".join(f"{k}={_value_text(v)}" for k, v in best.varied.items())
        echo(f"best trial: {best.name}, {search.metric} {best.metrics[search.metric]:.5g} ({values})")
    else:
        echo("no trial finished: there is no best trial")
    parent.log_metrics(metrics)


def varying_settings(children: list[Child]) -> dict[str, dict[str, str]]:
    """The settings that define each child: {child name: {param key: value}}.

    The params (flattened keys, as logged) set by the pipeline's grids and overrides whose values
    differ between the children, grid keys first. Params that differ only
    as a consequence (a cell type's own defaults, e.g. forget_bias of an lstm) are left out.
    """
    from rnnflow.spec.keypath import param_name
    from rnnflow.store import flatten, is_setting

    params = [{k: v for k, v in flatten(c.spec.resolved()).items() if is_setting(k)} for c in children]
    keys = list(dict.fromkeys(k for p in params for k in p))
    differing = {k for k in keys if len({p.get(k) for p in params}) > 1}
    chosen: list[str] = []
    grids = [k for c in children for k in c.varied]  # a grid's keys first: they are what it compares
    for text in dict.fromkeys([*grids, *(o.split("=", 1)[0] for c in children for o in c.overrides)]):
        try:
            prefix = param_name(text)
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


def _summarize(parent, pipeline: Pipeline, children: list[Child], outcomes: list[ChildOutcome], echo,
               compared: tuple[str, bool] | None = None) -> Summary:
    """Record on the parent run how the children compare, so MLflow's own views show it.

    The parent gets: summary.csv and summary.json (a table in the UI's Artifacts tab); the best
    child's final metrics as `best_<metric>` and its name as the tag rnnflow.best_child; a Markdown
    summary as its Description; the overlay plots as artifacts and as image charts (shown in the
    runs page's chart view without expanding the parent). The experiment gets a saved view of the
    children (see rnnflow.ui). Every executor of a pipeline ends with this. `compared` is (metric,
    whether smaller is better) when a search says how to compare; by default val_loss, else test_loss.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnflow import plots
    from rnnflow.compare import compare_runs, default_metric, higher_is_better, render

    comparison = compare_runs(parent=parent.run_id)
    echo(render(comparison, "table"))  # the table `rnnflow compare` shows
    settings = varying_settings(children)
    varying = _setting_keys(settings)
    header, rows = summary_rows(outcomes, settings)
    client = MlflowClient()
    finished = [o for o in outcomes if o.status == "FINISHED" and o.run_id]
    if compared is not None:
        metric, ascending = compared
    else:
        metric = default_metric({k for o in finished for k in o.metrics})
        ascending = metric is None or not higher_is_better(metric)
    sign = 1.0 if ascending else -1.0
    ranked = sorted(finished, key=lambda o: (metric not in o.metrics, sign * o.metrics.get(metric or "", 0.0)))
    # Children on different tasks (a CO2 and an airline forecast, MNIST and sine) have no common
    # measure: no one of them is the best, and compare ranks each task on its own. A search names
    # its measure, whatever its space varies (a loss, a horizon).
    ids = {o.run_id for o in finished}
    tasks = [] if compared is not None else \
        [g.label for g in comparison.groups if any(row.get("run_id") in ids for row in g.rows)]
    best = ranked[0] if ranked and metric in ranked[0].metrics and len(tasks) <= 1 else None
    metrics = {"runs_finished": float(len(finished)),
               "runs_failed": float(sum(o.status == "FAILED" for o in outcomes)),
               "runs_stopped": float(sum(o.stopped_by is not None for o in outcomes))}
    tags = {"mlflow.note.content": _note(pipeline, header, rows, metric, best, tasks)}
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
          best: ChildOutcome | None, tasks: list[str]) -> str:
    """The parent run's Description: the pipeline, then the summary as a Markdown table."""
    def line(values: list[Any]) -> str:
        return "| " + " | ".join(_cell(values[i]).replace("|", "\\|") for i in keep) + " |"

    keep = [i for i, h in enumerate(header) if h != "run_id"]
    about = _cell(pipeline.description)
    about = about if len(about) <= 1000 else about[:997] + "..."
    lines = [f"**{pipeline.name}**" + (f": {about}" if about else ""), ""]
    if best is not None:
        lines += [f"Best by {metric}: **{_cell(best.name)}** ({best.metrics[metric]:.5g}).", ""]
    elif len(tasks) > 1:
        lines += [f"The runs are on {len(tasks)} tasks ({'; '.join(tasks)}), whose metrics do not compare: "
                  "no best run. `rnnflow compare --parent` ranks each task on its own.", ""]
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
