"""Looking at runs: a comparison table of runs."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rnnflow.errors import RnnflowError


# Metrics where a larger value is better; every other metric (losses, errors, times) is smaller-better.
_HIGHER_IS_BETTER = ("accuracy",)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better."""
    return any(word in metric for word in _HIGHER_IS_BETTER)


def default_metric(known) -> str | None:
    """The metric runs are compared by: val_loss, else test_loss, else train_loss (of those known)."""
    return next((m for m in ("val_loss", "test_loss", "train_loss") if m in known), None)


def compare_runs(experiment: str | None = None, parent: str | None = None,
                 metric: str | None = None) -> tuple[list[str], list[list[Any]]]:
    """The runs of an experiment (or the children of a pipeline run) as a table.

    Columns: run name, status, the params whose values differ between the runs, the final
    metrics; rows sorted best first by `metric` (default: val_loss, else test_loss).

    Raises:
        TrackingError: when the tracking server does not answer.
        RnnflowError: when the experiment or parent run does not exist, or the metric is unknown.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnflow.store import check_reachable, is_setting, tracking_uri

    check_reachable(tracking_uri(None))  # else MLflow retries a refused connection for minutes
    client = MlflowClient()
    if parent is not None:
        try:
            experiment_id = client.get_run(parent).info.experiment_id
        except MlflowException as error:
            raise RnnflowError(f"no run {parent} in {client.tracking_uri} ({error.message})") from None
        query = f"tags.mlflow.parentRunId = '{parent}'"
    else:
        name = experiment or "rnnflow"
        found = client.get_experiment_by_name(name)
        if found is None:
            raise RnnflowError(f"no experiment '{name}' in {client.tracking_uri}")
        experiment_id, query = found.experiment_id, ""
    runs = [r for r in client.search_runs([experiment_id], filter_string=query, max_results=5000)
            if r.data.tags.get("rnnflow.role") != "pipeline"]
    if not runs:
        return ["run"], []
    known = {k for r in runs for k in r.data.metrics}
    metric = metric or default_metric(known) or "test_loss"
    if metric not in known:
        raise RnnflowError(f"no run has the metric '{metric}'; known: {', '.join(sorted(known))}")
    # Runs that failed before they started have no params; they do not make every param "differ".
    with_params = [r for r in runs if r.data.params]
    all_params = sorted({k for r in with_params for k in r.data.params})
    differing = [k for k in all_params if is_setting(k)
                 and len({r.data.params.get(k) for r in with_params}) > 1]
    metric_names = [metric] + sorted(k for k in known if k != metric and k != "loss")
    sign = -1.0 if higher_is_better(metric) else 1.0

    def order(run):
        value = run.data.metrics.get(metric)
        return (value is None, sign * value if value is not None else 0.0)

    header = ["run", "run_id", "status", *differing, *metric_names]
    rows = [
        [r.info.run_name, r.info.run_id, r.info.status, *[r.data.params.get(k, "") for k in differing],
         *[r.data.metrics.get(m, "") for m in metric_names]]
        for r in sorted(runs, key=order)
    ]
    return header, rows


def render(header: list[str], rows: list[list[Any]], fmt: str) -> str:
    """The comparison as an aligned table, CSV or JSON."""
    if fmt == "json":
        return json.dumps([dict(zip(header, row)) for row in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *rows])
        return buffer.getvalue().rstrip("\n")
    from rnnflow.pipeline import format_table

    return format_table(header, rows)
