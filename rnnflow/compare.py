"""Looking at runs: a comparison table of runs (`rnnflow compare`)."""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import json
import math
import re
import shutil
from pathlib import PurePosixPath
from typing import Any

from rnnflow.errors import RnnflowError
from rnnflow.store import is_setting


# Metrics where a larger value is better; every other metric (losses, errors, times) is smaller-better.
_HIGHER_IS_BETTER = ("accuracy",)

_SPLITS = ("val", "test", "train")
_OVERRIDE = re.compile(r"(?:^|(?<=\s))([A-Za-z_][A-Za-z0-9_.\[\]-]*)=")
# Columns that are not metrics: what --columns may name besides metrics.
_EXTRA = ("status", "run_id", "stop_reason", "spec")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better."""
    return any(word in metric for word in _HIGHER_IS_BETTER)


def default_metric(known) -> str | None:
    """The metric runs are compared by: val_loss, else test_loss, else train_loss (of those known)."""
    return next((m for m in ("val_loss", "test_loss", "train_loss") if m in known), None)


@dataclasses.dataclass
class Group:
    """Runs on one task, ranked by one metric.

    Attributes:
        label: the task ("sine (sine_mix), mse loss").
        metric: the metric the rows are ranked by (None: nothing to rank by).
        higher: whether a larger value of it is better.
        params: the param columns (full names).
        columns: the other columns (metric names, or keys of _EXTRA).
        rows: one dict per run, values with their real types, best first.
        notes: what a reader should know about this group.
    """

    label: str
    metric: str | None
    higher: bool
    params: list[str]
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Comparison:
    """What `rnnflow compare` shows: which runs, and their groups."""

    title: str
    groups: list[Group]
    notes: list[str] = dataclasses.field(default_factory=list)


def compare_runs(experiment: str | None = None, parent: str | None = None, metric: str | None = None,
                 columns: list[str] | None = None, params: list[str] | None = None) -> Comparison:
    """The runs of an experiment, or the children of a parent run (a pipeline, a search), compared.

    Without `experiment` or `parent`: the children of the latest run's parent when the latest run
    is a child or a parent, else the latest run's experiment. Runs on different tasks (data
    source, series, loss) are grouped apart and each group is ranked on its own.

    Args:
        experiment: an experiment name.
        parent: a parent run id.
        metric: rank by this metric (default: the parent's search metric, else val_loss, test_loss,
            train_loss: the first every run of the group has).
        columns: metric names or patterns (and status, run_id, stop_reason, spec) to show
            instead of the key metrics.
        params: param names or patterns to show instead of those the runs' overrides vary.

    Raises:
        TrackingError: when the tracking server does not answer.
        RnnflowError: when the experiment, run, metric, column or param does not exist.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnflow.store import check_reachable, tracking_uri

    check_reachable(tracking_uri(None))  # else MLflow retries a refused connection for minutes
    client = MlflowClient()
    chosen = ""
    if parent is None and experiment is None:
        parent, experiment, chosen = _latest(client)
        if parent is None and experiment is None:
            return Comparison(f"no runs in {client.tracking_uri}", [])
    parent_run = None
    if parent is not None:
        try:
            parent_run = client.get_run(parent)
        except MlflowException as error:
            raise RnnflowError(f"no run {parent} in {client.tracking_uri} ({error.message})") from None
        experiment_ids = [parent_run.info.experiment_id]
        query = f"tags.mlflow.parentRunId = '{parent}'"
        role = parent_run.data.tags.get("rnnflow.role", "parent")
        title = f"children of {role} run {parent_run.info.run_name} ({parent})"
    else:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise RnnflowError(f"no experiment '{experiment}' in {client.tracking_uri}")
        experiment_ids, query = [found.experiment_id], ""
        title = f"runs of experiment {experiment}"
    runs = [r for r in client.search_runs(experiment_ids, filter_string=query, max_results=5000)
            if "rnnflow.role" not in r.data.tags]  # parents summarize; they did not train
    title += chosen
    if not runs:
        return Comparison(title + ": no runs", [])
    known_metrics = sorted({k for r in runs for k in r.data.metrics})
    if metric is not None and metric not in known_metrics:
        raise RnnflowError(f"no run has the metric '{metric}'; known: {', '.join(known_metrics)}")
    # A search (rnnflow.search.*) ranks its trials by its own metric, in its own direction.
    search = parent_run.data.tags if parent_run is not None else {}
    searched, mode = search.get("rnnflow.search.metric"), search.get("rnnflow.search.mode")
    if metric is None and searched in known_metrics:
        metric = searched
    higher = False
    if metric is not None:
        higher = mode == "max" if metric == searched and mode in ("min", "max") else higher_is_better(metric)
    known_params = sorted({k for r in runs for k in r.data.params})
    chosen_params = _match(params, known_params, "param", normalize=_param_name) if params else None
    chosen_columns = _match(columns, [*known_metrics, *_EXTRA], "column") if columns else None
    groups = [_group(label, members, metric, higher, chosen_params, chosen_columns)
              for label, members in _by_task(runs).items()]
    notes = []
    if len(groups) > 1:
        notes.append(f"{len(runs)} runs on {len(groups)} different tasks (data source, series or loss): "
                     "each group is ranked on its own, their metrics are not comparable")
    return Comparison(title, groups, notes)


def _latest(client) -> tuple[str | None, str | None, str]:
    """(parent run id, experiment name, how it was chosen) of the latest run of the store."""
    experiments = client.search_experiments()
    if not experiments:
        return None, None, ""
    by_id = {e.experiment_id: e.name for e in experiments}
    latest = client.search_runs(list(by_id), order_by=["attributes.start_time DESC"], max_results=1)
    if not latest:
        return None, None, ""
    run = latest[0]
    hint = "; choose others with --parent RUN_ID or --experiment NAME"
    if run.data.tags.get("mlflow.parentRunId"):
        return run.data.tags["mlflow.parentRunId"], None, f" (the latest{hint})"
    if "rnnflow.role" in run.data.tags:
        return run.info.run_id, None, f" (the latest{hint})"
    return None, by_id[run.info.experiment_id], f" (the latest run's{hint})"


def _param_name(text: str) -> str:
    """A param name from a key path as written in a spec: model.cells[0].units -> model.cells.0.units."""
    return re.sub(r"\[(\d+)\]", r".\1", text)


def _match(wanted: list[str], known: list[str], what: str, normalize=lambda name: name) -> list[str]:
    """The known names each of `wanted` (names or fnmatch patterns, comma-separated) selects, in order.

    Raises:
        RnnflowError: for a name or pattern that selects nothing.
    """
    import difflib

    chosen: list[str] = []
    for item in (part.strip() for text in wanted for part in text.split(",")):
        if not item:
            continue
        pattern = normalize(item)
        hits = [name for name in known if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            close = difflib.get_close_matches(pattern, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise RnnflowError(f"no run has the {what} '{item}'{hint}")
        chosen += [name for name in hits if name not in chosen]
    return chosen


def _by_task(runs: list) -> dict[str, list]:
    """Runs grouped by what their metrics measure, in order of first appearance.

    A run that failed before recording its settings joins the group of a run of the same spec
    (its siblings in a pipeline), else the first group: it has nothing to rank, only a status.
    """
    groups: dict[str, list] = {}
    for run in runs:
        if run.data.params:
            groups.setdefault(_task_label(run.data.params), []).append(run)
    for run in runs:
        if not run.data.params:
            spec = run.data.tags.get("rnnflow.spec_name")
            home = next((label for label, members in groups.items()
                         if any(m.data.tags.get("rnnflow.spec_name") == spec for m in members)), None)
            groups.setdefault(home or next(iter(groups), "runs that recorded no settings"), []).append(run)
    return groups


def _task_label(params: dict[str, str]) -> str:
    """What a run's metrics measure: runs with other labels are on other tasks, and their losses are
    not comparable (an MNIST cross-entropy against a sine MSE, a CO2 forecast against an airline one)."""
    data = params.get("data.type", "?")
    detail = params.get("data.function") or params.get("data.generate.task")
    if data in ("table", "arrays") and params.get("data.path"):  # one's own file: its name says which
        detail = PurePosixPath(params["data.path"].replace("\\", "/")).name
        if data == "table":
            detail += f": {params.get('data.target', '?')}, horizon {params.get('data.horizon', '?')}"
    loss = params.get("train.loss")
    return f"{data}{f' ({detail})' if detail else ''}" + (f", {loss} loss" if loss else ", no training")


def _group(label: str, runs: list, metric: str | None, higher: bool, params: list[str] | None,
           columns: list[str] | None) -> Group:
    have = {k for r in runs for k in r.data.metrics}
    notes: list[str] = []
    if metric is None:
        complete = [r for r in runs if r.data.metrics]
        metric = next((f"{split}_loss" for split in _SPLITS
                       if complete and all(f"{split}_loss" in r.data.metrics for r in complete)), None)
        higher = False
    sign = -1.0 if higher else 1.0

    def order(run):
        value = run.data.metrics.get(metric) if metric else None
        return (value is None, sign * value if value is not None else 0.0, run.info.start_time or 0)

    ranked = sorted(runs, key=order)
    missing = [r for r in runs if metric and metric not in r.data.metrics]
    if metric and missing:
        notes.append(f"{len(missing)} run(s) without {metric} (failed, or not measured) are listed last")
    shown_params = params if params is not None else _varied_params(runs)
    shown = columns if columns is not None else _key_columns(runs, have, metric)
    rows = []
    for rank, run in enumerate(ranked, 1):
        row: dict[str, Any] = {"run": run.info.run_name, "rank": rank if metric and metric in run.data.metrics
                               else None}
        grid = _grid_params(run)  # a run that failed before logging params still has its grid values
        row.update({k: _typed(run.data.params[k]) if k in run.data.params else grid.get(k) for k in shown_params})
        for column in shown:
            row[column] = _column_value(run, column)
        row.setdefault("status", run.info.status)
        row.setdefault("run_id", run.info.run_id)
        rows.append(row)
    return Group(label, metric, higher, shown_params, shown, rows, notes)


def _param_of(key: str) -> str | None:
    """The param name of a spec key path (model.cells[0].type -> model.cells.0.type), or None."""
    from rnnflow.spec.keypath import param_name

    try:
        return param_name(key)
    except ValueError:
        return None


def _overridden(run) -> set[str]:
    """The param names a run's overrides (--set, a pipeline's set and grid) wrote."""
    keys = [m.group(1) for m in _OVERRIDE.finditer(run.data.tags.get("rnnflow.overrides", ""))]
    keys += [k[len("rnnflow.grid."):] for k in run.data.tags if k.startswith("rnnflow.grid.")]
    return {name for name in map(_param_of, keys) if name}


def _grid_params(run) -> dict[str, Any]:
    """A pipeline child's grid values (tags rnnflow.grid.KEY) by param name."""
    found = {}
    for tag, value in run.data.tags.items():
        name = _param_of(tag[len("rnnflow.grid."):]) if tag.startswith("rnnflow.grid.") else None
        if name:
            found[name] = _typed(value)
    return found


def _varied_params(runs: list) -> list[str]:
    """The params that differ between the runs because an override or a grid set them.

    A key an override named is shown when its values differ (a run without it shows null). A
    param under a section an override replaced (a whole cell) is shown only when every run has
    it: a param one cell type has and another lacks (forget_bias, reset_after) differs only
    because the type differs, and the type itself is shown.
    """
    with_params = [r for r in runs if r.data.params]
    exact = set().union(*(_overridden(r) for r in with_params)) if with_params else set()
    names = sorted(k for k in {k for r in with_params for k in r.data.params} if is_setting(k))
    shown = []
    for name in names:
        values = [r.data.params.get(name) for r in with_params]
        if len(set(values)) < 2:
            continue
        if name in exact or (None not in values and any(name.startswith(key + ".") for key in exact)):
            shown.append(name)
    return shown


def _key_columns(runs: list, have: set[str], metric: str | None) -> list[str]:
    """The handful of metrics shown by default: the ranking metric, the best validation value,
    how training stopped, the steady time per step, then the held-out splits' loss and accuracy
    (train_* are in csv and json with --columns). A narrow table drops from the right."""
    base = [metric] if metric else []
    base += sorted(k for k in have if k.startswith("best_val_"))
    if any("rnnflow.stop_reason" in r.data.tags for r in runs):
        base.append("stop_reason")
    if "ms_per_iteration" in have:
        base.append("ms_per_iteration")
    for name in ("loss", "accuracy"):
        base += [f"{split}_{name}" for split in _SPLITS[:2] if f"{split}_{name}" in have]
    return list(dict.fromkeys(base))


def _column_value(run, column: str) -> Any:
    if column == "status":
        return run.info.status
    if column == "run_id":
        return run.info.run_id
    if column == "stop_reason":
        return run.data.tags.get("rnnflow.stop_reason")
    if column == "spec":
        return run.data.tags.get("rnnflow.spec_name")
    value = run.data.metrics.get(column)
    return None if value is None or math.isnan(value) else value


def _typed(text: str) -> Any:
    """A param (MLflow keeps text) back as the value the spec had: a number, a boolean, null, a list."""
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    if text in ("None", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


# --- output ---


def render(comparison: Comparison, fmt: str, width: int | None = None) -> str:
    """The comparison as tables that fit `width` columns (default: the terminal's), CSV or JSON.

    JSON and CSV hold every selected column with its real type (numbers, booleans, null; an empty
    CSV field is null) and `group`, `rank`, `status` and `run_id`; tables leave out what does not
    fit, and say so.
    """
    if fmt == "json":
        return json.dumps(_records(comparison), indent=2)
    if fmt == "csv":
        records = _records(comparison)
        header = list(dict.fromkeys(k for r in records for k in r))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows([_csv_cell(r.get(k)) for k in header] for r in records)
        return buffer.getvalue().rstrip("\n")
    width = width or shutil.get_terminal_size((100, 24)).columns
    parts = _wrap(comparison.title, width)
    for group in comparison.groups:
        ranked = f", best first by {group.metric}" + (" (higher is better)" if group.higher else "")
        parts += ["", *_wrap(f"{group.label}: {len(group.rows)} run(s){ranked if group.metric else ''}", width),
                  *_fit(group, width), *(line for note in group.notes for line in _wrap(note, width))]
    if comparison.notes:
        parts += ["", *(line for note in comparison.notes for line in _wrap(note, width))]
    return "\n".join(parts)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, break_on_hyphens=False, subsequent_indent="  ") or [""]


def _records(comparison: Comparison) -> list[dict[str, Any]]:
    return [{"group": group.label, **row} for group in comparison.groups for row in group.rows]


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return " ".join(str(value).split())  # one line per row, whatever a value holds


_HEADERS = {"ms_per_iteration": "ms/it", "stop_reason": "stop"}


def _fit(group: Group, width: int) -> list[str]:
    """The group as table lines of at most `width` characters, or as close as it gets: param
    headers shortened (with a legend), run names without the grid values the params show, then
    columns left out from the right (run_id first; never the run or the ranking metric)."""
    from rnnflow.pipeline import format_table
    from rnnflow.spec.keypath import shortest_endings

    columns = ["run", *group.params, *group.columns]
    columns += [] if "run_id" in columns else ["run_id"]
    headers = {c: _HEADERS.get(c, c) for c in columns}
    cells = {c: [_cell(row.get(c)) for row in group.rows] for c in columns}
    # A run that did not finish says so beside its name (a status column would mostly repeat FINISHED).
    status = ["" if row["status"] == "FINISHED" else f" ({row['status']})" for row in group.rows]
    names = [str(row["run"]) for row in group.rows]
    cells["run"] = [n + s for n, s in zip(names, status)]

    def total() -> int:
        return sum(max(len(headers[c]), *(len(v) for v in cells[c])) for c in columns) + 2 * (len(columns) - 1)

    notes = []
    if total() > width and group.params:  # shorter param names, the full ones in a legend
        short = shortest_endings([tuple(int(p) if p.isdigit() else p for p in name.split("."))
                                  for name in group.params])
        for name, ending in zip(group.params, short):
            headers[name] = ".".join(str(p) for p in ending)
        legend = [f"{headers[n]} = {n}" for n in group.params if headers[n] != n]
        if legend:
            notes.append("params: " + ", ".join(legend))
    if total() > width and group.params:  # `name[type=lstm]`: the params show what the brackets add
        names = [re.sub(r"\[.*\]$", "", n) or n for n in names]
        cells["run"] = [n + s for n, s in zip(names, status)]
    limit = 28
    if total() > width:
        names = [n if len(n) <= limit else n[: limit - 1] + "…" for n in names]
        cells["run"] = [n + s for n, s in zip(names, status)]
    dropped = []
    keep = {"run", group.metric}
    for column in ["run_id", *reversed(columns)]:
        if total() <= width:
            break
        if column in keep or column not in columns:
            continue
        columns.remove(column)
        dropped.append(headers[column])
    if dropped:
        notes.append(f"left out to fit {width} columns: {', '.join(dropped)} "
                     "(--columns and --params choose; --format csv or json has everything)")
    table = format_table([headers[c] for c in columns], [[cells[c][i] for c in columns]
                                                         for i in range(len(group.rows))])
    return [line.rstrip() for line in table.splitlines()] + [line for note in notes for line in _wrap(note, width)]
