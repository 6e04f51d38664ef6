"""The `rnnflow` command. Commands only parse their arguments and delegate.

Heavy modules (TensorFlow, MLflow) are imported inside the commands that need them, so
`rnnflow --help` and `rnnflow validate` start fast.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
from pathlib import Path

import click

from rnnflow import __version__
from rnnflow.errors import RnnflowError, SpecError

SET_HELP = "Override a spec value, e.g. --set model.cells[0].units=64 (repeatable)."


# Commands that never log: they leave the logging module unimported (it is a few ms of each start).
_SILENT_COMMANDS = {"validate", "schema"}


def _setup_logging() -> None:
    # TensorFlow's C++ start-up notes (no GPU found, CPU features) are noise for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's own INFO notes about its database
    # MLflow draws a progress bar on stdout for every artifact download (predict, resume): it
    # would mix with what rnnflow prints there.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if click.get_current_context().invoked_subcommand in _SILENT_COMMANDS:
        return
    import logging

    logger = logging.getLogger("rnnflow")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rnnflow: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _report(error: RnnflowError) -> None:
    if isinstance(error, SpecError):
        for issue in error.issues:
            click.echo(str(issue), err=True)
        count = len(error.issues)
        click.echo(f"rnnflow: {count} error{'s' if count != 1 else ''}", err=True)
    else:
        click.echo(f"rnnflow: error: {error}", err=True)


def _leave_objects_to_the_os_at_exit() -> None:
    """Spare the interpreter's last garbage collection at exit, about 35 ms of `rnnflow validate`.

    What validate loads (pydantic, the spec models and their validators) lives until the process
    ends; the final collection would walk and free all of it. Frozen objects are left for the
    operating system to reclaim. It runs at exit, so a caller that invokes the command in its own
    process (tests with CliRunner) keeps a normal collector until then; registered once.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def user_errors(command):
    """Turn rnnflow errors into located messages and exit codes instead of tracebacks."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return command(*args, **kwargs)
        except RnnflowError as error:
            if debug:
                raise
            _report(error)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("rnnflow: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as error:  # noqa: BLE001 - a bug: say so briefly, keep the traceback for --debug
            if debug:
                raise
            click.echo(f"rnnflow: internal error: {type(error).__name__}: {error} "
                       "(rerun with rnnflow --debug ... for the traceback)", err=True)
            ctx.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnflow")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def main(debug: bool) -> None:
    """rnnflow: declarative YAML pipelines for recurrent networks, tracked with MLflow.

    \b
    rnnflow validate specs/*.yaml       check specs and pipelines
    rnnflow show specs/gru_forecast.yaml   the resolved spec and the model
    rnnflow run specs/gru_forecast.yaml    train, evaluate, record in MLflow
    rnnflow ui                          browse the runs
    """
    _setup_logging()


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--quiet", "-q", is_flag=True, help="Print only errors.")
@user_errors
def validate(files: tuple[Path, ...], overrides: tuple[str, ...], quiet: bool) -> None:
    """Check spec and pipeline FILES; list every error with file:line:column.

    Exits 0 when all files are valid, 2 otherwise. Never imports TensorFlow.
    """
    _leave_objects_to_the_os_at_exit()
    from rnnflow.spec.pipeline import check_file

    failed = 0
    for path in files:
        try:
            kind = check_file(path, overrides)
        except SpecError as error:
            failed += 1
            _report(error)
            continue
        if not quiet:
            click.echo(f"{path}: valid {kind}")
    if failed:
        click.echo(f"rnnflow: {failed} of {len(files)} file(s) invalid", err=True)
        sys.exit(2)


@main.command()
@click.option("--pipeline", is_flag=True, help="The schema of pipeline files instead of specs.")
def schema(pipeline: bool) -> None:
    """Print the JSON Schema of specs (for editors and language servers)."""
    import json

    if pipeline:
        from rnnflow.spec.pipeline import pipeline_schema

        click.echo(json.dumps(pipeline_schema(), indent=2))
    else:
        from rnnflow.spec import spec_schema

        click.echo(json.dumps(spec_schema(), indent=2))


@main.command()
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@user_errors
def show(spec_file: Path, overrides: tuple[str, ...]) -> None:
    """Show SPEC_FILE resolved with its defaults, the compiled model and how it will run."""
    import yaml

    from rnnflow.spec import load_spec

    spec = load_spec(spec_file, overrides)
    click.echo("# resolved spec")
    click.echo(yaml.safe_dump(spec.resolved(), sort_keys=False).rstrip())
    from rnnflow.show import describe

    click.echo(describe(spec))


@main.command()
@click.argument("spec_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--resume", metavar="RUN_ID", help="Continue an interrupted run from its checkpoint.")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train on N processes of this machine (train.distribute: multi_worker), one MLflow run.")
@user_errors
def run(spec_file: Path | None, overrides: tuple[str, ...], quiet: bool, resume: str | None,
        workers: int | None) -> None:
    """Train and evaluate SPEC_FILE and record the run in MLflow; print the run id."""
    if (spec_file is None) == (resume is None):
        raise click.UsageError("give a SPEC_FILE, or --resume RUN_ID (not both)")
    if resume and overrides:
        raise click.UsageError("--set cannot change a resumed run")
    if workers is not None:
        if resume:
            raise click.UsageError("--workers starts a new run; it cannot resume one")
        from rnnflow.launch import launch

        recorded = launch(spec_file, overrides, workers, quiet=quiet, echo=click.echo)
        click.echo(f"run id: {recorded.info.run_id}")
        _print_metrics(recorded.data.metrics)
        from mlflow.tracking import MlflowClient

        _print_where(MlflowClient().tracking_uri, recorded.info.experiment_id, recorded.info.run_id)
        return
    from rnnflow.runner import run as run_spec

    result = run_spec(spec_file, overrides, quiet=quiet, resume=resume)
    if not result.run_id:
        return  # a worker of a multi-worker run other than the chief: the chief reports
    _print_result(result)


def _print_result(result) -> None:
    click.echo(f"run id: {result.run_id}")
    _print_metrics(result.metrics)
    if result.stop_reason is not None:
        click.echo(f"training stopped: {result.stop_reason} at iteration {result.iterations}; "
                   f"the model has the {result.weights.replace('@', ' weights, from ')}")
    _print_where(result.tracking_uri, result.experiment_id, result.run_id)


def _print_where(tracking_uri: str, experiment_id: str, run_id: str) -> None:
    from rnnflow import ui

    click.echo(f"recorded in {tracking_uri} (experiment id {experiment_id})")
    url = ui.run_url(ui.base_url(tracking_uri), experiment_id, run_id)
    click.echo(f"see it {ui.where(tracking_uri)}: {url}")


def _print_metrics(metrics: dict[str, float]) -> None:
    shown = {k: v for k, v in metrics.items() if k.startswith(("train_", "val_", "test_")) and k != "train_seconds"}
    if shown:
        click.echo("metrics: " + "  ".join(f"{k} {v:.5g}" for k, v in sorted(shown.items())))


@main.command()
@click.option("--run", "run_id", required=True, metavar="RUN_ID", help="The run whose model predicts.")
@click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Inputs in the format of the run's source: for a table source a .csv/.parquet "
                   "file with its columns, for an arrays source a .npz with its keys; for any "
                   "source .npy, .npz (key 'inputs', optional 'lengths'), .csv or .json arrays. "
                   "Default: the table's own file (forecasting past its end), else the run's test inputs.")
@click.option("--output", "output_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every prediction here: .csv (a table with a header; .npy or .json: the raw "
                   "outputs). Default: print a summary.")
@user_errors
def predict(run_id: str, input_file: Path | None, output_file: Path | None) -> None:
    """Predict with the model logged by run RUN_ID (dropout is off at inference).

    Forecasts come with their times and series, classes with their names and probabilities,
    in the data's own units.
    """
    from rnnflow.predict import predict_run

    predict_run(run_id, input_file, output_file)


@main.group()
def pipeline() -> None:
    """Run many specs (with overrides and grids) as one comparison."""


@pipeline.command("run")
@click.argument("pipeline_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value in every run's spec (repeatable).")
@click.option("--dry-run", is_flag=True, help="Validate every run and list them; train nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--executor", type=click.Choice(["serial", "ray"]), default="serial", show_default=True,
              help="serial: one run after another in this process; ray: in parallel as Ray tasks.")
@click.option("--address", default=None, metavar="ADDR",
              help="With --executor ray: the Ray cluster to run on (default: a local one for this pipeline).")
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --executor ray: at most N runs at once (default: as many as the cluster's CPUs hold).")
@user_errors
def pipeline_run(pipeline_file: Path, overrides: tuple[str, ...], dry_run: bool, quiet: bool, executor: str,
                 address: str | None, max_parallel: int | None) -> None:
    """Run every entry of PIPELINE_FILE as a child of one parent MLflow run.

    Every resolved spec is validated first. A failing run is recorded FAILED and the others
    still run; the command then exits 1. The parent run gets a summary and overlay plots; for a
    search, also the best trial and its values.
    """
    from rnnflow.spec.pipeline import load_plan

    plan = load_plan(pipeline_file, overrides)
    spec_pipeline, children = plan.pipeline, plan.children
    if dry_run:
        click.echo(f"{spec_pipeline.name}: {plan.total} run(s) in experiment '{spec_pipeline.experiment}'")
        for child in children:
            click.echo(f"  {child.name}: " + (" ".join(child.overrides) or "(no overrides)"))
        if plan.search is not None:
            search = plan.search.search
            scheduler = f", stopped early by {search.scheduler.type}" if search.scheduler else ""
            click.echo(f"  {plan.search.trial_name(0)} ... {plan.search.trial_name(search.num_samples - 1)}: "
                       f"{search.num_samples} trials of {search.algorithm} over {', '.join(search.space)}, "
                       f"{search.mode} {search.metric}{scheduler}")
        return
    if (address is not None or max_parallel is not None) and executor != "ray":
        raise click.UsageError("--address and --max-parallel need --executor ray")
    from rnnflow.pipeline import run_pipeline

    result = run_pipeline(pipeline_file, overrides, quiet=quiet, echo=click.echo, executor=executor,
                          address=address, max_parallel=max_parallel)
    click.echo(f"parent run id: {result.parent_run_id}")
    from rnnflow import ui

    click.echo("\n".join(ui.pipeline_lines(result)))
    click.echo(f"compare them with: rnnflow compare --parent {result.parent_run_id}")
    if result.failed:
        click.echo(f"rnnflow: {len(result.failed)} of {len(result.children)} run(s) failed", err=True)
        sys.exit(1)


@main.command()
@click.option("--experiment", default=None, help="Compare the runs of this experiment.")
@click.option("--parent", default=None, metavar="RUN_ID", help="Compare the children of this run (a pipeline, a search).")
@click.option("--metric", default=None,
              help="Rank by this metric (default: a search's own metric, else val_loss, test_loss, train_loss).")
@click.option("--columns", multiple=True, metavar="NAMES",
              help="Metrics to show, comma-separated, patterns allowed (test_*); also status, run_id, "
                   "stop_reason, spec. Default: a handful of key metrics.")
@click.option("--params", multiple=True, metavar="NAMES",
              help="Params to show, comma-separated, patterns allowed (model.cells.0.*). Default: those "
                   "the runs' overrides and grids vary.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@user_errors
def compare(experiment: str | None, parent: str | None, metric: str | None, columns: tuple[str, ...],
            params: tuple[str, ...], fmt: str) -> None:
    """Compare runs side by side, best first: by default the children of the latest pipeline (or
    the latest run's experiment).

    Runs on different tasks (data source, series, loss) are grouped apart and ranked each on its
    own. Tables fit the terminal; csv and json keep every selected column with its real type.
    """
    from rnnflow.compare import compare_runs, render

    if experiment and parent:
        raise click.UsageError("give --experiment or --parent, not both")
    comparison = compare_runs(experiment, parent, metric, list(columns) or None, list(params) or None)
    if not comparison.groups and fmt == "table":
        click.echo(comparison.title)
        return
    click.echo(render(comparison, fmt))


@main.command()
@click.option("--experiment", default=None, help="Open this experiment (default: the one of the latest run).")
@click.option("--open", "open_browser", is_flag=True, help="Also open it in a web browser.")
@click.option("--port", default=5000, show_default=True, help="Port of the UI.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--tracking-uri", default=None, help="Tracking store (default: the one rnnflow logs to).")
@user_errors
def ui(experiment: str | None, open_browser: bool, port: int, host: str, tracking_uri: str | None) -> None:
    """Serve the MLflow UI on the tracking store rnnflow logs to; print the address of the runs.

    The one line printed is the experiment's training runs table. Ctrl-C (or SIGTERM) stops the
    UI and exits 0. On a tracking server (http/https), print its address and start nothing.
    """
    _leave_objects_to_the_os_at_exit()  # MLflow's heap: seconds of garbage collection at exit otherwise
    from rnnflow.ui import serve

    serve(host, port, tracking_uri, experiment, open_browser, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
