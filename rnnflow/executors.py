"""Where a pipeline's child runs execute: one after another in this process, or as Ray tasks.

The pipeline's driver (`rnnflow.pipeline`) owns every MLflow run: it creates each child's run
before the child starts and ends whatever a child leaves open. An executor only runs `Job`s and
says how each ended (`Outcome`), so a worker that dies, a task that is cancelled and a trial
that a scheduler stops are all recorded by the driver, never left RUNNING.

Ray (an optional dependency) does the scheduling: tasks ask for the run's CPUs and GPUs and Ray
places them on the cluster's nodes. Importing this module imports neither Ray nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnflow.errors import RnnflowError

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.spec import Spec

log = logging.getLogger("rnnflow")

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


@dataclasses.dataclass
class Job:
    """One child run to execute; plain data, since it travels to Ray workers.

    Attributes:
        index: the child's position in the pipeline (0-based).
        name: the child run's name.
        spec: the validated spec.
        overrides: its overrides as `key.path=value` texts.
        run_id: the MLflow run the driver created for it.
        tracking_uri: where that run is recorded (absolute).
        cpus: CPU cores; TensorFlow's threads are pinned to them (None: TensorFlow's default).
        gpus: GPUs (Ray places the task on a node that has them).
        trial: a search trial's link to the scheduler (None for other children).
    """

    index: int
    name: str
    spec: Spec
    overrides: list[str]
    run_id: str
    tracking_uri: str
    cpus: int | None = None
    gpus: float = 0.0
    trial: Any = None


@dataclasses.dataclass
class Outcome:
    """How a job ended.

    Attributes:
        status: FINISHED, FAILED or KILLED.
        metrics: the run's final metrics (when FINISHED).
        error: why it failed, or was killed.
        stopped_by: who stopped it early (`scheduler`), when a search's scheduler did.
        stop_reason: why its training stopped (completed, early_stopping, max_minutes), when FINISHED.
    """

    status: str
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None
    stopped_by: str | None = None
    stop_reason: str | None = None


def execute(job: Job, executor: str) -> Outcome:
    """Run one child into its driver-created MLflow run (in this process, or in a Ray worker).

    A failing run is an Outcome, not an exception; Ctrl-C (KeyboardInterrupt, RunInterrupted)
    propagates so that the driver stops the whole pipeline.
    """
    import mlflow

    from rnnflow.runner import RunInterrupted, RunStopped, run

    mlflow.set_tracking_uri(job.tracking_uri)
    tags = {"rnnflow.executor": executor, "rnnflow.host": socket.gethostname(), "rnnflow.pid": str(os.getpid()),
            "rnnflow.tf_threads": str(job.cpus) if job.cpus else "default"}
    if executor == "ray":
        import ray

        tags["rnnflow.ray.node_id"] = ray.get_runtime_context().get_node_id()
    callbacks = [job.trial.callback()] if job.trial is not None else []
    try:
        result = run(job.spec, job.overrides, quiet=True, run_id=job.run_id, tags=tags, callbacks=callbacks)
    except RunStopped as stop:
        return Outcome("KILLED", error=str(stop), stopped_by=stop.by)
    except RunInterrupted:
        raise
    except Exception as error:  # noqa: BLE001 - a failing child is recorded, the others go on
        return Outcome("FAILED", error=describe_error(error))
    return Outcome("FINISHED", dict(result.metrics), stop_reason=result.stop_reason)


def describe_error(error: BaseException) -> str:
    """An error as one line for a run's record: rnnflow's own messages as they are."""
    return str(error) if isinstance(error, RnnflowError) else f"{type(error).__name__}: {error}"


def pin_threads(cpus: int) -> None:
    """Pin TensorFlow's thread pools in this process to `cpus` threads, before it runs any op.

    Warns when TensorFlow already runs with other settings (they cannot change any more).
    """
    for name in THREAD_VARIABLES:
        os.environ[name] = str(cpus)
    import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:
        log.warning("TensorFlow is already running in this process: its threads stay as they are, not %d "
                    "(resources.cpus)", cpus)


class SerialExecutor:
    """Runs jobs one after another in this process (the default)."""

    name = "serial"

    def __init__(self, cpus: int | None = None):
        self.cpus = cpus
        self._queue: list[tuple[int, Job]] = []
        self._next = 0

    def __enter__(self) -> SerialExecutor:
        if self.cpus is not None:
            pin_threads(self.cpus)
        return self

    def __exit__(self, *exc) -> None:
        return None

    def release(self) -> None:
        """Nothing to stop: the jobs ran in this process."""

    def slots(self, cpus: int, gpus: float) -> int:
        """How many jobs may be in flight at once."""
        return 1

    def warm_up(self, count: int) -> None:
        """Nothing to warm: the jobs run in this process."""

    def submit(self, job: Job) -> int:
        self._next += 1
        self._queue.append((self._next, job))
        return self._next

    def wait(self, handles) -> tuple[Any, Outcome]:
        """Run the oldest submitted job to its end."""
        handle, job = self._queue.pop(0)
        return handle, execute(job, self.name)

    def cancel(self, handles) -> None:
        """Nothing runs in the background: an interrupted job has already ended."""
        self._queue.clear()

    def study(self, search):
        """The search's study, in this process."""
        from rnnflow.search import Study

        return Study(search)


# How long the driver waits, after Ctrl-C, for cancelled Ray tasks to end (their runs are already
# recorded KILLED; a task still going after this is killed with the cluster, or by its node).
CANCEL_SECONDS = 10.0

# Settings of the process that rnnflow changes to start a local Ray cluster, restored at the end.
_SESSION_VARIABLES = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PYTHONPATH",
                      "TF_CPP_MIN_LOG_LEVEL", *THREAD_VARIABLES)


def _warm() -> None:
    """Import what a run needs (TensorFlow above all), so that the first job finds it imported."""
    import rnnflow.runner  # noqa: F401
    import rnnflow.train  # noqa: F401


def _stop_local_cluster() -> None:
    """Stop the local Ray cluster this process started.

    Ray (2.60) stops the GCS before the autoscaler's monitor, whose SIGTERM handler then waits on
    the stopped GCS until Ray kills it a second later (measured: shutdown 1.4 s, 0.3 s without).
    A local cluster of one node has nothing to autoscale, so its monitor is killed first. Ray keeps
    its processes in private attributes: if they move, the shutdown just takes that second.
    """
    import ray

    try:
        from ray._private import ray_constants
        from ray._private.worker import _global_node

        monitors = _global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
    except (ImportError, AttributeError):
        monitors = []
    for info in monitors:
        try:
            info.process.kill()
            info.process.wait(timeout=1)
        except (OSError, AttributeError, subprocess.TimeoutExpired):
            pass
    ray.shutdown()


class RayExecutor:
    """Runs jobs as Ray tasks: on a local Ray cluster started for the pipeline, or on the cluster
    at `address`. When this process is already connected to Ray, that connection is used and left
    open (its workers must be able to import this rnnflow: connect with `RayExecutor.job_env()`).

    Args:
        address: a Ray cluster's address (`ray start --head` prints it), or None for a local one.
        max_parallel: at most this many children at once (default: as many as the cluster's
            CPUs and GPUs hold).
        cpus: the CPUs the pipeline's runs ask for (each value once).
    """

    name = "ray"

    def __init__(self, address: str | None = None, max_parallel: int | None = None,
                 cpus: set[int] | frozenset[int] = frozenset({1})):
        self.address = address
        self.max_parallel = max_parallel
        self.cpus = set(cpus) or {1}
        self._owned = False
        self._stopping: threading.Thread | None = None
        self._saved: dict[str, str | None] = {}
        self._task = None
        # A local cluster whose runs all take the same CPUs gets their settings in the environment
        # it starts with: its workers (started with the cluster) serve the tasks directly, where a
        # task's own runtime_env would need workers started for it (measured: ~4 s more).
        self._inherited_threads: int | None = None

    def __enter__(self) -> RayExecutor:
        self._saved = {name: os.environ.get(name) for name in _SESSION_VARIABLES}
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        local = self.address is None
        if "ray" not in sys.modules and local:
            # Ray reads these when it is imported. A cluster of one machine for one pipeline: every
            # Ray port on 127.0.0.1 only (how Ray runs on macOS and Windows).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            if not any(os.environ.get(v) for v in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
                # Ray turns token authentication on for a new local cluster and writes the token to
                # ~/.ray; a token of this session's own keeps it on without writing anything.
                os.environ["RAY_AUTH_MODE"] = "token"
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        try:
            import ray
        except ImportError:
            raise RnnflowError('the ray executor needs Ray: pip install "rnnflow[ray]"') from None
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if local:
            # The workers inherit this process's environment: this rnnflow first on their path.
            package_root = str(Path(__file__).resolve().parent.parent)
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            if len(self.cpus) == 1:
                self._inherited_threads = next(iter(self.cpus))
                for name in THREAD_VARIABLES:
                    os.environ[name] = str(self._inherited_threads)
            kwargs["include_dashboard"] = False
        else:
            kwargs["runtime_env"] = self.job_env()
        try:
            ray.init(address=self.address or "local", **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray cluster"
            raise RnnflowError(f"cannot start or reach {where}: {error}") from None
        self._owned = True

    def release(self) -> None:
        """Every job has ended: the local cluster stops in the background (waiting for its processes
        to exit) while the driver writes the summary; leaving the executor waits for it."""
        if self._owned:
            # Not a daemon: the interpreter must not exit (and run Ray's own exit hook) mid-shutdown.
            self._stopping = threading.Thread(target=_stop_local_cluster, name="rnnflow-ray-shutdown")
            self._stopping.start()
            self._owned = False

    def __exit__(self, *exc) -> None:
        try:
            if self._owned:
                _stop_local_cluster()
                self._owned = False
        finally:
            self._join_shutdown()
            for name, value in self._saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def _join_shutdown(self) -> None:
        """Wait for a released cluster to stop (a Ctrl-C meanwhile does not cut it short: leaving
        while Ray shuts down is what would leave its processes behind)."""
        stopping, self._stopping = self._stopping, None
        while stopping is not None and stopping.is_alive():
            try:
                stopping.join()
            except KeyboardInterrupt:
                log.warning("stopping the local Ray cluster; a moment")

    def warm_up(self, count: int) -> None:
        """Start `count` workers importing TensorFlow now, while the driver records the runs; the
        first jobs then run in those workers (Ray reuses a job's idle workers)."""
        import ray

        cpus = min(self.cpus)
        warm = ray.remote(_warm).options(num_cpus=cpus, max_retries=0, runtime_env=self.runtime_env(cpus))
        self._warming = [warm.remote() for _ in range(count)]

    def slots(self, cpus: int, gpus: float) -> int:
        """How many jobs of `cpus` CPUs and `gpus` GPUs may be in flight at once."""
        if self.max_parallel is not None:
            return self.max_parallel
        import ray

        total = ray.cluster_resources()
        fits = int(total.get("CPU", 1) // cpus)
        if gpus:
            fits = min(fits, int(total.get("GPU", 0) // gpus))
        return max(1, fits)

    @staticmethod
    def job_env() -> dict[str, Any]:
        """The environment of every worker of a pipeline on a cluster: this rnnflow, shipped to it
        (a node may have another version installed, or none), and TensorFlow's log level."""
        package = Path(__file__).resolve().parent
        return {"py_modules": [str(package)],
                "env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}}

    def runtime_env(self, cpus: int | None) -> dict[str, Any] | None:
        """A task's environment on top of the job's: TensorFlow's threads, read when it starts (None
        when the local cluster's workers inherited them).

        Workers with different environments are different processes, so a reused worker never
        carries another run's thread settings (TensorFlow cannot change them once started).
        """
        if self._inherited_threads is not None and (cpus or 1) == self._inherited_threads:
            return None
        return {"env_vars": {name: str(cpus or 1) for name in THREAD_VARIABLES}}

    def submit(self, job: Job):
        import ray

        if self._task is None:
            self._task = ray.remote(max_retries=0)(execute)  # a retry would rerun into the same MLflow run
        return self._task.options(num_cpus=job.cpus or 1, num_gpus=job.gpus,
                                  runtime_env=self.runtime_env(job.cpus)).remote(job, self.name)

    def wait(self, handles) -> tuple[Any, Outcome]:
        """Wait until one of the jobs ends; a job whose worker died or that Ray could not run is FAILED."""
        import ray

        from rnnflow.runner import RunInterrupted

        done, _ = ray.wait(list(handles), num_returns=1)
        handle = done[0]
        try:
            return handle, ray.get(handle)
        except ray.exceptions.RayTaskError as error:  # the task raised (an interrupt on its node)
            cause = error.cause
            if isinstance(cause, (KeyboardInterrupt, RunInterrupted)):
                return handle, Outcome("KILLED", error="interrupted on its node")
            return handle, Outcome("FAILED", error=describe_error(cause if cause is not None else error))
        except ray.exceptions.RayError as error:  # the worker died, ran out of memory, lost its node...
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return handle, Outcome("FAILED", error=f"Ray could not finish it ({type(error).__name__}): {first}")

    def cancel(self, handles) -> None:
        """Stop the running jobs at once (their worker processes are killed) and drop the queued ones."""
        import ray

        handles = list(handles)
        for handle in handles:
            try:
                ray.cancel(handle, force=True)
            except ray.exceptions.RayError:  # already ended, or its node is gone
                pass
        if handles:  # one deadline for all of them: the driver must get on with ending
            ray.wait(handles, num_returns=len(handles), timeout=CANCEL_SECONDS)

    def study(self, search):
        """The search's study in a Ray actor, so that trials on any node can report to it."""
        import ray

        from rnnflow.search import RemoteStudy, Study

        actor = ray.remote(num_cpus=0, max_restarts=0)(Study)
        return RemoteStudy(actor.remote(search))


def make_executor(name: str, *, address: str | None = None, max_parallel: int | None = None,
                  cpus: int | None = None, ray_cpus: set[int] | None = None) -> SerialExecutor | RayExecutor:
    """The executor called `name` (serial or ray).

    Args:
        name: serial or ray.
        address: the Ray cluster (ray only).
        max_parallel: children at once (ray only).
        cpus: pin TensorFlow's threads to this many (serial only; Ray pins each task's).
        ray_cpus: the CPUs the runs ask for, each value once (ray only).
    """
    if name == "ray":
        return RayExecutor(address, max_parallel, ray_cpus or {1})
    if address is not None or max_parallel is not None:
        raise RnnflowError("--address and --max-parallel are for --executor ray")
    return SerialExecutor(cpus)
