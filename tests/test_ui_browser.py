"""What a user sees of a pipeline in the MLflow UI, checked in a real (headless) browser.

One real `mlflow server` on loopback with a temporary store, one tiny pipeline run by rnnflow
(two cells on the sine forecast), then the pages at the links rnnflow printed are rendered by
headless Chromium (`--dump-dom` after a virtual-time budget) and searched for the run names,
the varying setting and a metric. Without Chromium the module is skipped, saying why
(`.ci/run` installs it where it can).
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, mlflow_server_in

from rnnflow import ui
from rnnflow.cli import main

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome",
                                                "google-chrome-stable"))), None)
if CHROMIUM is None:
    pytest.skip("no Chromium on PATH (chromium, chromium-browser or google-chrome): the MLflow UI is not "
                "checked in a browser; install it with apt-get install -y chromium", allow_module_level=True)

FLAGS = [
    "--headless", "--no-sandbox",  # --no-sandbox: Chromium refuses to run as root without it
    "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--mute-audio", "--hide-scrollbars", "--window-size=1600,1000",
    # MLflow draws a chart once an IntersectionObserver sees it; under virtual time that fires
    # late or never unless every compositor stage runs before drawing.
    "--run-all-compositor-stages-before-draw",
    # Virtual time waits for pending fetches, so the budget costs little wall time; without one,
    # the DOM is the empty page shell.
    "--virtual-time-budget=10000",
]
CELLS = ["rnn", "gru"]


def render(url: str) -> str:
    """The DOM of `url` once the page has rendered; Chromium's whole process group is always killed."""
    profile = tempfile.mkdtemp(prefix="rnnflow-chromium-")  # a fresh profile: no remembered UI state
    process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=180)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # renderer and zygote processes outlive the browser
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def text_of(dom: str) -> str:
    """The text a user reads: the DOM's text nodes (no scripts or styles), joined by ' | '."""
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", "", dom, flags=re.S | re.I)
    return " | ".join(t for t in (html.unescape(p).strip() for p in re.split(r"<[^>]+>", dom)) if t)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny pipeline run by rnnflow on a real MLflow server: what `pipeline run` printed, and the runs."""
    import mlflow
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("ui-browser")
    path = folder / "cells.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cells", "description": "Two cells on a tiny sine forecast.", "experiment": "ui-cells",
        "set": {"train.iterations": 3, "data.train_windows": 20, "data.eval_windows": 4, "model.cells[0].units": 4,
                "train.batch_size": 10, "evaluate.steps": [{"type": "predictions"}], "tracking.log_model": False},
        "runs": [{"spec": (ROOT / "specs" / "gru_forecast.yaml").as_posix(), "name": "forecast",
                  "grid": {"model.cells[0].type": CELLS}}]}))
    previous, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    with mlflow_server_in(folder / "server") as server:
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        mlflow.set_tracking_uri(server.url)
        try:
            result = CliRunner().invoke(main, ["pipeline", "run", str(path), "-q"])
            assert result.exit_code == 0, result.output
            client = MlflowClient(server.url)
            parent_id = result.output.split("parent run id: ")[1].split()[0]
            parent = client.get_run(parent_id)
            children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
            links = dict(re.findall(r"^  (side by side|loss curves|compare page): +(\S+)$", result.output, re.M))
            yield {"url": server.url, "output": result.output, "links": links, "parent": parent,
                   "children": {r.info.run_name: r for r in children}}
        finally:
            if previous_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env
            mlflow.set_tracking_uri(previous)


def test_the_printed_links_are_on_the_server(pipeline):
    assert set(pipeline["links"]) == {"side by side", "loss curves", "compare page"}, pipeline["output"]
    assert all(url.startswith(pipeline["url"] + "/#/") for url in pipeline["links"].values())
    assert set(pipeline["children"]) == {f"forecast[type={cell}]" for cell in CELLS}


def test_side_by_side_lists_the_children_with_the_varying_setting_and_metrics(pipeline):
    text = text_of(render(pipeline["links"]["side by side"]))
    for name in pipeline["children"]:
        assert name in text
    assert f"{len(CELLS)} | matching runs" in text  # the children only, not the parent
    # gru_forecast holds out a validation split: the children are compared on it, never on test.
    assert "model.cells.0.type" in text and "val_loss" in text
    best = min(pipeline["children"].values(), key=lambda r: r.data.metrics["val_loss"])
    # Sorted by val_loss, best first: its name, then (after the other names) its loss in full.
    assert text.index(best.info.run_name) < min(text.index(n) for n in pipeline["children"] if n != best.info.run_name)
    assert f"| {best.data.metrics['val_loss']!r} |" in text
    for cell in CELLS:
        assert f"| {cell} |" in text


def test_loss_curves_show_one_curve_per_child(pipeline):
    dom = render(pipeline["links"]["loss curves"])
    for name in pipeline["children"]:
        assert f"{name} (loss)" in dom  # the legend of the loss chart


def test_compare_page_plots_the_varying_setting_first(pipeline):
    text = text_of(render(pipeline["links"]["compare page"]))
    assert f"Comparing {len(CELLS)} Runs from 1 Experiment" in text
    for name in pipeline["children"]:
        assert name in text
    # The parallel-coordinates plot starts with the setting that defines each child.
    assert "Parameters: | Varied/model.cells.0.type |" in text
    assert "test_loss" in text


def test_ui_and_run_links_land_on_runs_and_the_parent_summary(pipeline):
    parent = pipeline["parent"]
    # Where `rnnflow ui` points: the experiment's training runs (the pipeline, collapsed).
    landing = text_of(render(ui.experiment_url(pipeline["url"], parent.info.experiment_id)))
    assert "| cells |" in landing and f"{len(CELLS) + 1} | matching runs" in landing
    # A run's link (what `rnnflow run` prints), here the parent's: its Description is the summary.
    page = text_of(render(ui.run_url(pipeline["url"], parent.info.experiment_id, parent.info.run_id)))
    assert "Best by val_loss:" in page and parent.data.tags["rnnflow.best_child"] in page
    for name in pipeline["children"]:
        assert name in page
