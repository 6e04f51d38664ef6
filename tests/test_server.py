"""The MLflow server rnnflow starts (for `rnnflow ui` and the tests): it answers, and it stops whole."""

from __future__ import annotations

import os

import pytest

from rnnflow.server import MlflowServer, healthy


def test_a_server_answers_and_leaves_no_process_behind(mlflow_servers):
    server = mlflow_servers()
    assert healthy(server.url)
    pid = server.process.pid
    server.stop()
    assert not healthy(server.url)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group is gone: no uvicorn worker left serving


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path):
    from rnnflow.errors import TrackingError

    with pytest.raises(TrackingError, match="exited with code"):
        MlflowServer("notascheme://nothing", port=None, log=tmp_path / "log").start(timeout=120)
