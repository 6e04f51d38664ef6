"""`rnnflow run SPEC --workers N`: a multi-worker run on this machine, to try one.

The launcher validates the spec, creates the run in MLflow (so that it always ends, whatever
happens to the workers), picks N free ports on 127.0.0.1 and starts N `rnnflow run` processes,
each with its own TF_CONFIG; worker 0 (the chief) records into the launcher's run, the others
record nothing. When a worker fails the others cannot go on (their next collective would wait
for it), so the launcher stops them all and ends the run FAILED with the worker's last words.
Importing this module imports neither TensorFlow nor MLflow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnnflow.errors import RnnflowError

# How long workers get to stop on their own after Ctrl-C (the chief writes a checkpoint) or
# after another worker failed, before they are killed.
GRACE_SECONDS = 30.0


class LaunchFailed(RnnflowError):
    """A worker of a multi-worker run failed; the run is recorded FAILED."""


class LaunchInterrupted(RnnflowError):
    """Ctrl-C stopped a multi-worker run; it is recorded KILLED."""

    exit_code = 130


def free_ports(count: int) -> list[int]:
    """`count` TCP ports nobody listens on right now, on 127.0.0.1 (held together, so distinct)."""
    import socket

    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def launch(spec_file: Path, overrides: tuple[str, ...], workers: int, *, quiet: bool = True, echo=print):
    """Run `spec_file` on `workers` local processes with MultiWorkerMirroredStrategy.

    Returns:
        The MLflow run (FINISHED).

    Raises:
        SpecError: the spec is invalid, or asks for another strategy.
        TrackingError: the tracking store cannot be used (nothing has run).
        LaunchFailed: a worker failed (the run is FAILED, the other workers stopped).
        LaunchInterrupted: Ctrl-C (the run is KILLED; the chief wrote a checkpoint if it could).
    """
    from rnnflow.spec import load_spec

    overrides = tuple(overrides)
    spec = load_spec(spec_file, overrides)
    if spec.train is None:
        raise RnnflowError("--workers trains a model, and the spec has train: null")
    if spec.train.distribute is None:
        overrides += ("train.distribute={strategy: multi_worker}",)
        spec = load_spec(spec_file, overrides)
    elif spec.train.distribute.strategy != "multi_worker":
        raise RnnflowError(f"--workers starts a multi_worker run, and the spec asks for train.distribute.strategy: "
                           f"{spec.train.distribute.strategy}")
    from rnnflow.planner import plan_distribution

    plan_distribution(spec, gpus=0)  # a batch that does not split over the workers fails here, not in them
    if spec.train.batch_size % workers:
        raise RnnflowError(f"a batch of {spec.train.batch_size} sequences does not split evenly over {workers} "
                           "workers (train.batch_size is the global batch)")
    from rnnflow.store import checked_uri

    uri = checked_uri(spec.tracking.tracking_uri)
    run_id = _create_run(uri, spec, workers)
    return _Launch(spec_file, overrides, workers, uri, run_id, quiet, echo).run()


def _create_run(uri: str, spec, workers: int) -> str:
    from mlflow.tracking import MlflowClient

    from rnnflow.store import RecordedRun

    return RecordedRun.create(MlflowClient(uri), spec.tracking.experiment, spec.tracking.run_name or spec.name,
                              {"rnnflow.launcher": "rnnflow run --workers", "rnnflow.workers": str(workers)},
                              scheduled=True).run_id


class _Launch:
    def __init__(self, spec_file: Path, overrides: tuple[str, ...], workers: int, uri: str, run_id: str,
                 quiet: bool, echo):
        self.spec_file, self.overrides, self.workers = spec_file, overrides, workers
        self.uri, self.run_id, self.quiet, self.echo = uri, run_id, quiet, echo
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def run(self):
        from mlflow.tracking import MlflowClient

        from rnnflow.store import RecordedRun

        client = MlflowClient(self.uri)
        record = RecordedRun(client, self.run_id, "")
        with tempfile.TemporaryDirectory(prefix="rnnflow-workers-") as tmp:
            status, reason = "FAILED", None
            try:
                self._start(Path(tmp))
                failed = self._wait()
                if failed is None:
                    status = "FINISHED"
                else:
                    index, code = failed
                    reason = f"worker {index} exited with code {code}:\n{self._tail(index)}"
            except KeyboardInterrupt:
                status, reason = "KILLED", None
                self._stop(signal.SIGINT)
            finally:
                self._stop(signal.SIGTERM)
                final = record.end(status, reason)
        if status == "KILLED":
            raise LaunchInterrupted(f"interrupted; run {self.run_id} recorded {final}")
        if reason is not None:
            raise LaunchFailed(f"run {self.run_id} recorded {final}: {reason}")
        return client.get_run(self.run_id)

    def _start(self, folder: Path) -> None:
        from rnnflow.runner import RUN_ID_VARIABLE

        cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(self.workers)]}
        package_root = str(Path(__file__).resolve().parent.parent)
        threads = str(max(1, (os.cpu_count() or 1) // self.workers))
        for index in range(self.workers):
            env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   "MLFLOW_TRACKING_URI": self.uri,
                   # This rnnflow, and TensorFlow's threads shared out between the workers.
                   "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
            for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
                env.setdefault(name, threads)
            env.pop(RUN_ID_VARIABLE, None)
            if index == 0:
                env[RUN_ID_VARIABLE] = self.run_id
            command = [sys.executable, "-m", "rnnflow", "run", str(self.spec_file),
                       *[f"--set={o}" for o in self.overrides]]
            if self.quiet or index:
                command.append("--quiet")
            log = folder / f"worker{index}.log"
            self.logs.append(log)
            with open(log, "w") as handle:
                # Each in a session of its own: a terminal's Ctrl-C reaches the launcher, which passes it on.
                self.processes.append(subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                                       start_new_session=True))
        self.echo(f"{self.workers} workers on {', '.join(cluster['worker'])}; run id: {self.run_id}")

    def _wait(self) -> tuple[int, int] | None:
        """Until every worker has exited; (index, exit code) of the first that failed, else None."""
        while True:
            codes = [p.poll() for p in self.processes]
            for index, code in enumerate(codes):
                if code not in (None, 0):
                    return index, code
            if all(code == 0 for code in codes):
                return None
            time.sleep(0.2)

    def _stop(self, how: int) -> None:
        """Signal the workers still running, give them GRACE_SECONDS, then kill them."""
        alive = [p for p in self.processes if p.poll() is None]
        for process in alive:
            try:
                os.killpg(process.pid, how)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        for process in alive:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _tail(self, index: int, lines: int = 15) -> str:
        text = self.logs[index].read_text(errors="replace").splitlines()
        return "\n".join(line for line in text[-lines:])
