"""The MLflow UI for rnnflow's runs: the links rnnflow prints, saved views, and `rnnflow ui`.

MLflow 3.17's UI opens an experiment on its GenAI "Overview" page; the training runs table is what
rnnflow's runs need, and the URL parameter `workflowType=machine_learning` lands on it directly.
A pipeline's children show side by side through a saved view, an experiment tag
`mlflow.sharedViewState.<key>` (filter: the parent's children; sort: the comparison metric;
columns: the settings that vary and the final metrics) that the runs page opens with
`viewStateShareKey=<key>`. The compare page takes the run ids in its URL, `runs` first.
Checked in a real browser by tests/test_ui_browser.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from rnnflow.errors import RnnflowError, TrackingError

# Where `rnnflow ui` serves by default: the links printed for runs in a local store point there.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
_TRAINING = "workflowType=machine_learning"
VIEW_TAG = "mlflow.sharedViewState."
# The compare page gets slow with many runs, and a terminal line with hundreds of ids helps nobody.
COMPARE_LIMIT = 30


def is_server(uri: str) -> bool:
    """Whether a tracking URI is an MLflow server (which has its own UI)."""
    return uri.startswith(("http://", "https://"))


def base_url(uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """The UI's address for runs recorded at `uri`: the server itself, or where `rnnflow ui` serves."""
    return uri.rstrip("/") if is_server(uri) else f"http://{host}:{port}"


def where(uri: str) -> str:
    """How to say where the UI is: 'in the MLflow UI' (a server), or after starting `rnnflow ui`."""
    return "in the MLflow UI" if is_server(uri) else "in the MLflow UI (start it with: rnnflow ui)"


def _query(**params: Any) -> str:
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote, safe="")


def experiments_url(base: str) -> str:
    """The list of experiments, on the training side of the UI."""
    return f"{base}/#/experiments?{_TRAINING}"


def experiment_url(base: str, experiment_id: str) -> str:
    """An experiment's training runs table."""
    return f"{base}/#/experiments/{experiment_id}/runs?{_TRAINING}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page (its params, metrics, and the Artifacts tab)."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{_TRAINING}"


def view_key(parent_run_id: str) -> str:
    """The saved view of a pipeline run's children."""
    return f"rnnflow-{parent_run_id}"


def children_filter(parent_run_id: str) -> str:
    return f"tags.`mlflow.parentRunId` = '{parent_run_id}'"


def pipeline_url(base: str, experiment_id: str, parent_run_id: str, *, saved_view: bool = True,
                 sort_metric: str | None = None, ascending: bool = True, chart: bool = False) -> str:
    """A pipeline's children side by side in the runs table (or as charts: one loss curve per child).

    With `saved_view`, the saved view of the parent (its columns are the varying settings and the
    final metrics); without, the same children by URL alone (MLflow's default columns).
    """
    if saved_view:
        params: dict[str, Any] = {"viewStateShareKey": view_key(parent_run_id)}
    else:
        params = {"searchFilter": children_filter(parent_run_id)}
        if sort_metric:
            params.update(orderByKey=f"metrics.`{sort_metric}`", orderByAsc=str(ascending).lower())
    if chart:
        params["compareRunsMode"] = "CHART"
    return f"{base}/#/experiments/{experiment_id}/runs?{_TRAINING}&{_query(**params)}"


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's compare page of runs (parallel coordinates of the params that differ, then tables)."""
    def array(items: list[str]) -> str:
        return urllib.parse.quote(json.dumps(items, separators=(",", ":")), safe="")

    # The page reads `runs` only as the first parameter.
    return f"{base}/#/compare-runs?runs={array(run_ids)}&experiments={array([experiment_id])}&{_TRAINING}"


def save_pipeline_view(client, experiment_id: str, parent_run_id: str, name: str, params: list[str],
                       metrics: list[str], sort_metric: str | None, ascending: bool) -> str:
    """Write the saved view of a pipeline run's children on its experiment; returns its key.

    One view per pipeline run, so a printed link always shows the runs it was printed for; the
    runs page lists them under "Views" by name.
    """
    state: dict[str, Any] = {
        "searchFilter": children_filter(parent_run_id),
        "selectedColumns": [f"params.`{p}`" for p in params] + [f"metrics.`{m}`" for m in metrics],
    }
    if sort_metric:
        state.update(orderByKey=f"metrics.`{sort_metric}`", orderByAsc=ascending)
    key = view_key(parent_run_id)
    envelope = {"name": name, "createdAt": int(time.time() * 1000), "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, VIEW_TAG + key, json.dumps(envelope))
    return key


def pipeline_lines(result) -> list[str]:
    """What `rnnflow pipeline run` prints about a PipelineResult: where to see its children."""
    base = base_url(result.tracking_uri)
    summary = result.summary
    eid, pid = result.experiment_id, result.parent_run_id
    lines = [f"see them {where(result.tracking_uri)}:"]
    if summary is None:
        lines.append(f"  the pipeline run: {run_url(base, eid, pid)}")
        return lines
    side = dict(saved_view=summary.view is not None, sort_metric=summary.metric, ascending=summary.ascending)
    lines.append(f"  side by side:  {pipeline_url(base, eid, pid, **side)}")
    lines.append(f"  loss curves:   {pipeline_url(base, eid, pid, chart=True, **side)}")
    if len(summary.ranked) > 1:
        shown = summary.ranked[:COMPARE_LIMIT]
        label = f"compare page{f' (best {len(shown)})' if len(shown) < len(summary.ranked) else ''}:"
        lines.append(f"  {label:<14} {compare_url(base, eid, shown)}")
    return lines


# --- rnnflow ui ---


class _Stop(BaseException):
    """A signal asked `rnnflow ui` to stop.

    A BaseException, as KeyboardInterrupt is: a library's `except Exception` around the call the
    signal lands in (MLflow's REST client wraps every error of a request) must not turn it into
    that library's error.
    """


def _stop(signum, frame):
    raise _Stop(signum)


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, tracking_uri: str | None = None,
          experiment: str | None = None, open_browser: bool = False, echo: Callable[[str], Any] = print) -> None:
    """Serve the MLflow UI on rnnflow's tracking store until Ctrl-C or SIGTERM; print its one URL line.

    The URL is the training runs of `experiment`, else of the experiment of the latest run, else
    the list of experiments. A tracking server already has a UI: its URL is printed, nothing is
    started. The server runs in a process group of its own; a signal to rnnflow (Ctrl-C, SIGTERM,
    SIGHUP) stops the whole group and rnnflow returns quietly.

    Raises:
        RnnflowError: the port is taken, or there is no such experiment.
        TrackingError: the store cannot be served or reached.
    """
    handlers = {sig: signal.signal(sig, _stop) for sig in _STOP_SIGNALS}
    try:
        _serve(host, port, tracking_uri, experiment, open_browser, echo)
    except _Stop:
        pass  # stopping is how the UI ends: no message, exit code 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _serve(host: str, port: int, tracking_uri: str | None, experiment: str | None, open_browser: bool,
           echo: Callable[[str], Any]) -> None:
    from mlflow.tracking import MlflowClient

    from rnnflow.server import MlflowServer
    from rnnflow.store import check_reachable
    from rnnflow.store import tracking_uri as resolve

    uri = resolve(tracking_uri)
    if is_server(uri):
        check_reachable(uri)
        url, what = landing(MlflowClient(uri), uri, experiment)
        echo(f"{what} on the tracking server: {url}")
        if open_browser:
            _open(url)
        return
    _check_port(host, port)
    log = Path(tempfile.mkstemp(prefix="rnnflow-ui-", suffix=".log")[1])
    server = MlflowServer(uri, host=host, port=port, log=log)
    status = _Status(f"rnnflow: starting the MLflow UI on {uri} ...")
    try:
        try:
            server.start()
        except TrackingError as error:
            raise TrackingError(f"{error}; its last output:\n{_tail(log)}") from None
        finally:
            status.clear()
        url, what = landing(MlflowClient(server.url), server.url, experiment)
        echo(f"{what}: {url}  (Ctrl-C to stop)")
        if open_browser:
            threading.Thread(target=_open, args=(url,), daemon=True).start()
        code = server.wait()
        raise TrackingError(f"the MLflow UI server stopped by itself (exit code {code}); its last output:\n"
                            f"{_tail(log)}")
    finally:
        # A second Ctrl-C must not leave the server behind half-stopped.
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        server.stop(grace=5.0)
        log.unlink(missing_ok=True)


def landing(client, base: str, experiment: str | None = None) -> tuple[str, str]:
    """The URL `rnnflow ui` points at (on `base`), and what it shows.

    Raises:
        RnnflowError: there is no experiment of that name.
    """
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            known = sorted(e.name for e in client.search_experiments(max_results=1000))
            raise RnnflowError(f"no experiment '{experiment}' in the tracking store; known: "
                               + (", ".join(known) or "none"))
        return experiment_url(base, found.experiment_id), f"experiment '{found.name}'"
    ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    latest = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1) if ids else []
    if not latest:
        return experiments_url(base), "no runs yet, the experiments"
    experiment_id = latest[0].info.experiment_id
    name = client.get_experiment(experiment_id).name
    return experiment_url(base, experiment_id), f"experiment '{name}' (latest run)"


def _check_port(host: str, port: int) -> None:
    with socket.socket() as sock:
        # As the server binds: a port whose last connections are closing (TIME_WAIT) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise RnnflowError(f"cannot serve on {host}:{port} ({error.strerror}); is another UI running? "
                               "choose another port with --port") from None


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _open(url: str) -> None:
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except Exception:  # noqa: BLE001 - opening a browser is a convenience
        opened = False
    if not opened:
        print("rnnflow: no browser to open here; open the address above", file=sys.stderr)


class _Status:
    """A note on a terminal's stderr while the server starts, erased once it answers (the URL line
    stays the only line)."""

    def __init__(self, text: str):
        self.shown = sys.stderr.isatty()
        if self.shown:
            sys.stderr.write(text)
            sys.stderr.flush()

    def clear(self) -> None:
        if self.shown:
            self.shown = False
            with contextlib.suppress(OSError):
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()

