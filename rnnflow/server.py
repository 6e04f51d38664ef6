"""An MLflow tracking server in a child process group: started quietly, always stopped.

`rnnflow ui` serves the MLflow UI through it, and the tests start real tracking servers with it.
The server runs in a session of its own, so a Ctrl-C in the terminal reaches rnnflow only
(MLflow's workers would each print a KeyboardInterrupt traceback); rnnflow then stops the whole
group with SIGTERM, which uvicorn handles cleanly, and SIGKILLs what is left after a grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from rnnflow.errors import TrackingError

# Environment of the server process: no GenAI job runner (a huey consumer per core, which serve
# nothing rnnflow logs) and no Starlette deprecation warning from each worker.
QUIET_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def healthy(url: str, timeout: float = 1.0) -> bool:
    """Whether an MLflow server answers its health check at `url`."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the server when rnnflow dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _only_leader_left(pgid: int) -> bool:
    """Whether the group's leader is its only live process (Linux /proc; elsewhere: never known)."""
    members = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != b"Z":
            if int(entry) != pgid:
                return False
            members += 1
    return members == 1


class MlflowServer:
    """`mlflow server` on `host:port` for a backend store; a context manager that always stops it.

    Args:
        backend_store_uri: the store (e.g. sqlite:///path/mlflow.db).
        artifacts_destination: where the server keeps artifacts (default: MLflow's ./mlartifacts).
        host: the address to listen on (loopback by default).
        port: the port (default: a free one).
        workers: uvicorn workers.
        log: a file for the server's output (default: discarded).
    """

    def __init__(self, backend_store_uri: str, artifacts_destination: str | Path | None = None, *,
                 host: str = "127.0.0.1", port: int | None = None, workers: int = 1,
                 log: str | Path | None = None):
        self.backend_store_uri = backend_store_uri
        self.artifacts_destination = artifacts_destination
        self.host = host
        self.port = port or free_port(host)
        self.workers = workers
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri,
                   "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        if self.artifacts_destination is not None:
            command += ["--artifacts-destination", str(self.artifacts_destination)]
        return command

    def start(self, timeout: float = 180.0) -> MlflowServer:
        """Start the server and wait until it answers.

        Call it from a thread that outlives the server: Linux sends the server its stop signal
        (see `_die_with_parent`) when the *thread* that started it ends, not only the process.

        Raises:
            TrackingError: when it exits or does not answer within `timeout` seconds.
        """
        output = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.command(), env={**os.environ, **QUIET_ENV}, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise TrackingError(f"the MLflow server for {self.backend_store_uri} exited with code {code} "
                                    f"before answering on {self.url}" + (f" (see {self.log})" if self.log else ""))
            if healthy(self.url):
                return self
            time.sleep(0.25)
        self.stop()
        raise TrackingError(f"the MLflow server for {self.backend_store_uri} did not answer on {self.url} "
                            f"within {timeout:.0f} s")

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, grace: float = 10.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL what is left after `grace` seconds.

        Once the workers have exited, the `mlflow` command that waited for them has nothing left
        to do but its final garbage collection (about 3 s here): it is killed then.
        """
        process, self.process = self.process, None
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                process.poll()
                try:
                    os.killpg(process.pid, 0)  # anyone left in the group?
                except ProcessLookupError:
                    break
                if sig == signal.SIGTERM and _only_leader_left(process.pid):
                    deadline = 0.0  # on to SIGKILL
                time.sleep(0.1)
            else:
                continue
            break
        process.poll()
        if process.returncode is None:
            process.wait(timeout=5)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
