"""What the rnnflow and plain-Keras benchmark programs share (they import TensorFlow; the TF1
programs and `run.py` do not use this module).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _harness  # noqa: F401  (puts this checkout's rnnflow first on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

import rnnflow._tf  # noqa: E402,F401  (TensorFlow without its start-up chatter)  # isort: skip
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


@contextlib.contextmanager
def temporary_mlflow_store() -> Iterator[str]:
    """Track into a throw-away SQLite store, with the artifacts beside it.

    MLflow puts a SQLite store's artifacts in ./mlruns of the working directory, so the working
    directory moves into the temporary folder too (spec and data paths must be absolute).
    """
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    previous_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="rnnflow-bench-") as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.chdir(folder)
        try:
            import mlflow

            mlflow.set_tracking_uri(uri)
            yield uri
        finally:
            os.chdir(previous_cwd)
            if previous_uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous_uri


class Recorder(keras.callbacks.Callback):
    """Timestamps rnnflow's training loop through its callback hooks.

    rnnflow calls `on_train_batch_end(iteration, logs)` at every logged iteration (logs: the mean
    loss since the previous point, plus `val_*` or `test_*` after an evaluation) and `on_epoch_end` at the
    end of each epoch. Times are seconds since `on_train_begin`, i.e. since just before the first
    call of the compiled training function (its tracing and compilation are included).
    """

    def __init__(self):
        super().__init__()
        self.points: list[tuple[int, float, dict[str, float]]] = []
        self.epochs: list[tuple[int, float, dict[str, float]]] = []
        self.start = 0.0
        self.cpu_start = 0.0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    def on_train_batch_end(self, batch, logs=None):
        self.points.append((int(batch), time.perf_counter() - self.start, dict(logs or {})))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((int(epoch), time.perf_counter() - self.start, dict(logs or {})))

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start

    def time_at(self, iteration: int) -> float:
        """Seconds from the start to the logged point at `iteration` (which must be logged)."""
        for at, seconds, _ in self.points:
            if at == iteration:
                return seconds
        raise ValueError(f"no logged point at iteration {iteration}; logged: {[p[0] for p in self.points][:10]}...")

    def losses(self) -> list[tuple[int, float]]:
        """(iteration, logged loss) at every logged point."""
        return [(at, float(logs["loss"])) for at, _, logs in self.points if "loss" in logs]

    def epoch_rows(self) -> list[dict]:
        """One row per epoch end: its seconds, the elapsed time, test accuracy and loss, and the
        logged training loss."""
        rows, previous = [], 0.0
        for epoch, elapsed, logs in self.epochs:
            rows.append({"epoch": epoch, "seconds": elapsed - previous, "elapsed": elapsed,
                         "test_accuracy": logs.get("test_accuracy"), "test_loss": logs.get("test_loss"),
                         "train_loss": logs.get("loss")})
            previous = elapsed
        return rows


def seed_keras(seed: int) -> None:
    """Seed as rnnflow does (`rnnflow.train.seed_everything`): same initial weights for a seed."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def weights_digest(weights: list[Any]) -> str:
    """A short hash of a list of weight arrays (to show two programs start from the same weights)."""
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(np.asarray(array, dtype=np.float32)).tobytes())
    return digest.hexdigest()[:16]


def rnnflow_initial_digest(spec_path: Path, overrides: list[str]) -> str:
    """The hash of the initial weights rnnflow draws for a spec (built as `rnnflow run` builds it)."""
    from rnnflow.build import build_model
    from rnnflow.data.base import load_data
    from rnnflow.spec import load_spec
    from rnnflow.train import seed_everything

    spec = load_spec(spec_path, overrides)
    seed_everything(spec.seed)
    data = load_data(spec)
    digest = weights_digest(build_model(spec, data).model.get_weights())
    keras.backend.clear_session()
    return digest


def compile_plain(model: keras.Model, loss: Any) -> None:
    """`model.compile` for plain Keras `fit`: Adam 1e-3, no XLA, one step per execution.

    Keras silently ignores `jit_compile=True` while op determinism is on; this baseline asks for
    no XLA and checks that it got what it asked for.
    """
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=False, steps_per_execution=1)
    assert model.jit_compile is False, "plain fit must run without XLA"


def versions() -> dict[str, str]:
    import platform

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__}
