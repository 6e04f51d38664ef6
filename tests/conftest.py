"""Shared fixtures: a temporary MLflow store, a tiny MNIST file, and spec shrinking for tiny runs.

Everything that imports TensorFlow or MLflow does it inside fixtures or tests, so collecting the
tests stays fast and the spec-only tests never pay for TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """A fresh SQLite MLflow store for the whole session, used through MLFLOW_TRACKING_URI."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # Checkpoints a tracking server could not take go here, not into the user's ~/.cache.
    os.environ.setdefault("RNNFLOW_CHECKPOINT_DIR", str(folder / "checkpoints"))
    import mlflow

    mlflow.set_tracking_uri(uri)
    # A SQLite store keeps artifacts in ./mlruns of the working directory: work in the store's
    # folder, so the tests leave nothing in the checkout.
    cwd = os.getcwd()
    os.chdir(folder)
    yield uri
    os.chdir(cwd)
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def mlflow_server_in(folder: Path, port: int | None = None):
    """An (unstarted) MLflow tracking server on loopback with its SQLite store, artifacts and log in `folder`."""
    from rnnflow.server import MlflowServer

    folder.mkdir(parents=True, exist_ok=True)
    return MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", port=port, log=folder / "server.log")


@pytest.fixture
def mlflow_servers(tmp_path):
    """Start real MLflow tracking servers on loopback, on free ports: `start(store_dir=None)`.

    Each has its own SQLite store and artifact folder under tmp_path (or `store_dir`, to restart
    a server on the same store); every one is stopped when the test ends, however it ends.
    """
    started: list = []

    def start(store_dir: Path | None = None, port: int | None = None):
        server = mlflow_server_in(store_dir or tmp_path / f"server{len(started)}", port)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def client(mlflow_store):
    """An MlflowClient on the session store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(mlflow_store)


_LEFT_RUNNING: set[str] = set()  # runs a test has already been failed for


@pytest.fixture(autouse=True)
def no_run_left_running(request):
    """After every test that used the session store: no run in it is RUNNING.

    A run rnnflow leaves RUNNING would be marked FINISHED by MLflow's exit handler: a failed or
    interrupted run would look like a good one. One search of the whole store (every experiment,
    deleted ones and deleted runs included) after the test; each run left RUNNING fails the test
    that left it, and only that one.
    """
    if "mlflow_store" not in request.fixturenames:  # the closure: also through `client`, run fixtures...
        yield
        return
    client = request.getfixturevalue("client")
    yield
    from mlflow.entities import ViewType

    experiments = {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ALL)}
    running = [r for r in client.search_runs(list(experiments), "attributes.status = 'RUNNING'",
                                             run_view_type=ViewType.ALL) if r.info.run_id not in _LEFT_RUNNING]
    if running:
        _LEFT_RUNNING.update(r.info.run_id for r in running)
        names = ", ".join(f"{r.info.run_id} ({r.info.run_name}, experiment {experiments[r.info.experiment_id]})"
                          for r in running)
        pytest.fail(f"runs left RUNNING: {names}", pytrace=False)


def write_tiny_mnist(path: Path, train: int = 300, test: int = 100, seed: int = 0) -> Path:
    """An MNIST-format file whose digits are learnable: each class lights up its own rows."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 4, 4:24] = 255
        return images, labels

    x_train, y_train = make(train)
    x_test, y_test = make(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """A small MNIST-format file, also announced through $RNNFLOW_MNIST for the specs."""
    path = write_tiny_mnist(tmp_path_factory.mktemp("mnist") / "mnist.npz")
    os.environ["RNNFLOW_MNIST"] = str(path)
    return path


def shrink(spec_path: Path) -> list[str]:
    """`--set` overrides that turn a full spec into a run of a few seconds: 3 iterations, small layers."""
    from rnnflow.spec import load_spec

    spec = load_spec(spec_path)
    out: list[str] = []
    for i, cell in enumerate(spec.model.cells):
        out.append(f"model.cells[{i}].units={min(cell.units, 8)}")
        if cell.layers > 2:
            out.append(f"model.cells[{i}].layers=2")
        device = cell.wrapper("device")
        if device is not None:
            j = cell.wrappers.index(device)
            out.append(f"model.cells[{i}].wrappers[{j}].strict=false")
    data = spec.data
    if data.type == "sine":
        if data.sampling == "random":
            out += ["data.train_windows=40", "data.eval_windows=8"]
        else:
            out.append("data.steps=20")
    elif data.type == "mnist":
        out += ["data.train_limit=60", "data.eval_limit=30"]
    elif data.type == "padded" and data.generate is not None:
        out += ["data.generate.count=40", "data.generate.eval_count=10"]
    if spec.train is not None:
        if spec.train.epochs is not None:
            out.append("train.epochs=1")
            out.append(f"train.batch_size={min(spec.train.batch_size, 20)}")
        else:
            out.append("train.iterations=3")
            out.append(f"train.batch_size={min(spec.train.batch_size, 8)}")
        if spec.train.log_every is not None:
            out.append("train.log_every=1")
        validation = spec.train.validation
        if isinstance(validation, int) and not isinstance(validation, bool):
            out.append("train.validation=10")  # a count of the full data set's sequences
    if spec.evaluate.every is not None:
        out.append("evaluate.every=2")
    for i, step in enumerate(spec.evaluate.steps):
        if step.type == "generate":
            out.append(f"evaluate.steps[{i}].length=5")
    return out


# The seed's "two time steps by hand" batch (Hands-On ML ch. 14), as [time][batch][features].
SEED_STEPS = [
    [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]],
    [[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]],
]


def compile_spec(model: dict, data: dict, seed: int = 42):
    """A forward-only spec (`train: null`) built from dicts and built: (BuiltModel, DataBundle)."""
    import yaml

    from rnnflow.build import build_model
    from rnnflow.data.base import LoadContext
    from rnnflow.spec import spec_from_text

    spec = spec_from_text(yaml.safe_dump({"name": "numeric", "seed": seed, "data": data, "model": model,
                                          "train": None}))
    bundle = spec.data.load(LoadContext(seed, Path(".")))
    return build_model(spec, bundle), bundle
