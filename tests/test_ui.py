"""`rnnflow ui` as a user runs it: one line with the address, signals stop it whole and quietly.

The command runs as a real process (`python -m rnnflow ui`) on a temporary store; each test
stops it the way a user would (SIGTERM, SIGINT to rnnflow alone, Ctrl-C on the terminal's
process group) and checks that no process of MLflow's server is left, the port is closed and
nothing but the address was printed.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT

from rnnflow.cli import main
from rnnflow.errors import RnnflowError
from rnnflow.server import free_port


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory):
    """A store with two experiments; the second holds the latest run (what `rnnflow ui` opens)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    first = client.create_experiment("older", artifact_location=(folder / "a1").as_uri())
    client.set_terminated(client.create_run(first).info.run_id)
    latest = client.create_experiment("latest", artifact_location=(folder / "a2").as_uri())
    client.set_terminated(client.create_run(latest, run_name="newest").info.run_id)
    return {"uri": uri, "folder": folder, "older": first, "latest": latest}


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid and fields[0] != b"Z":
                found.append(int(entry))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_ui(ui_store, *args: str, env: dict | None = None):
    """`python -m rnnflow ui --port <free>` in a session of its own (as a shell starts a command)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnflow", "ui", "--port", str(port), *args], cwd=ui_store["folder"],
        env={**os.environ, "MLFLOW_TRACKING_URI": ui_store["uri"], "PYTHONPATH": str(ROOT), **(env or {})},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    ready, _, _ = select.select([process.stdout], [], [], 240)
    line = process.stdout.readline() if ready else ""
    if not line:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"`rnnflow ui` printed no line: {out}{err}")
    return process, port, line


def check_while_serving(ui_store, port: int) -> None:
    """What other `rnnflow ui` commands do while one serves on `port`."""
    # A tracking server has its own UI: `rnnflow ui` prints the address there and starts nothing.
    remote = CliRunner().invoke(main, ["ui", "--tracking-uri", f"http://127.0.0.1:{port}", "--experiment", "older"])
    assert remote.exit_code == 0, remote.output
    assert remote.output == (f"experiment 'older' on the tracking server: http://127.0.0.1:{port}"
                             f"/#/experiments/{ui_store['older']}/runs?workflowType=machine_learning\n")
    missing = CliRunner().invoke(main, ["ui", "--tracking-uri", f"http://127.0.0.1:{port}", "--experiment", "x"])
    assert missing.exit_code == 1
    assert "no experiment 'x' in the tracking store; known: Default, latest, older" in missing.output
    # The port is taken: a clear error instead of MLflow's traceback.
    taken = CliRunner().invoke(main, ["ui", "--tracking-uri", ui_store["uri"], "--port", str(port)])
    assert taken.exit_code == 1
    assert taken.output.startswith(f"rnnflow: error: cannot serve on 127.0.0.1:{port} (Address already in use)")


@pytest.mark.parametrize("how", ["SIGTERM to rnnflow", "SIGINT to rnnflow", "Ctrl-C on the process group"])
def test_ui_prints_one_line_and_stops_whole_and_quietly(ui_store, how, tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"  # webbrowser runs $BROWSER with the address
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    process, port, line = start_ui(ui_store, "--open", env={"BROWSER": str(browser)})
    try:
        url = f"http://127.0.0.1:{port}/#/experiments/{ui_store['latest']}/runs?workflowType=machine_learning"
        assert line == f"experiment 'latest' (latest run): {url}  (Ctrl-C to stop)\n"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200 and b"<html" in response.read(2000).lower()
        servers = children_of(process.pid)
        assert len(servers) == 1 and os.getpgid(servers[0]) == servers[0]  # MLflow's server, in its own group
        deadline = time.monotonic() + 30
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert opened.read_text().strip() == url
        if how == "SIGTERM to rnnflow":
            check_while_serving(ui_store, port)

        started = time.monotonic()
        if how == "SIGTERM to rnnflow":
            process.send_signal(signal.SIGTERM)
        elif how == "SIGINT to rnnflow":
            process.send_signal(signal.SIGINT)
        else:  # what a terminal does on Ctrl-C: SIGINT to every process of the foreground group
            os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    # Stopping is how the UI ends: exit code 0, whatever the signal.
    assert process.returncode == 0, (out, err)
    assert took < 8, f"took {took:.1f} s to stop"
    # Nothing after the address line: no KeyboardInterrupt traceback, no StarletteDeprecationWarning.
    assert out == "" and err == "", (out, err)
    assert not group_alive(servers[0]), "a process of MLflow's server outlived rnnflow"
    assert not port_open(port)


def test_ui_landing_without_runs_and_for_an_unknown_experiment(tmp_path):
    from mlflow.tracking import MlflowClient

    from rnnflow.ui import landing

    client = MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}")
    assert landing(client, "http://h:1") == ("http://h:1/#/experiments?workflowType=machine_learning",
                                             "no runs yet, the experiments")
    with pytest.raises(RnnflowError, match="no experiment 'nope' in the tracking store; known: Default"):
        landing(client, "http://h:1", "nope")
