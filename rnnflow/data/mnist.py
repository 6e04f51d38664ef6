"""MNIST digits read row by row: 28 rows of 28 pixels become 28 time steps of 28 inputs."""

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from rnnflow.data.base import DataBundle, LoadContext, SourceSpec, Split, Task
from rnnflow.errors import DataError
from rnnflow.spec.registry import SOURCES

ENV_VAR = "RNNFLOW_MNIST"
_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
_EXPECTED = "x_train (N, 28, 28) uint8, y_train (N,), x_test (M, 28, 28) uint8, y_test (M,) with labels 0-9"


def keras_cache_path() -> Path:
    """Where Keras keeps downloaded data sets (`$KERAS_HOME/datasets`, default ~/.keras/datasets)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets" / "mnist.npz"


def _where_to_put_it(cache: Path) -> str:
    return (
        f"put the Keras-format mnist.npz at {cache}, or set {ENV_VAR}=/path/to/mnist.npz, "
        "or give data.path in the spec"
    )


def find_mnist(path: str | None, base_dir: Path) -> Path:
    """Find mnist.npz: the spec's path, then $RNNFLOW_MNIST, then Keras' cache, then a download.

    Raises:
        DataError: when a given path does not exist, or nothing is found and the download fails.
    """
    if path:
        candidate = Path(path).expanduser()
        candidate = candidate if candidate.is_absolute() else base_dir / candidate
        if candidate.is_dir():
            raise DataError(f"{candidate} is a directory; data.path must name the mnist.npz file in it")
        if not candidate.is_file():
            raise DataError(f"MNIST file not found: {candidate} (data.path in the spec)")
        return candidate
    found = local_mnist()
    return found if found is not None else _download(keras_cache_path())


def local_mnist() -> Path | None:
    """The mnist.npz already on this machine: $RNNFLOW_MNIST, then Keras' cache; None when neither.

    Raises:
        DataError: when $RNNFLOW_MNIST names a file that does not exist.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        candidate = Path(env).expanduser()
        if not candidate.is_file():
            raise DataError(f"MNIST file not found: {candidate} (from ${ENV_VAR})")
        return candidate
    cache = keras_cache_path()
    return cache if cache.is_file() else None


def _download(cache: Path) -> Path:
    import urllib.request

    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".npz.part")
    try:
        with urllib.request.urlopen(_URL, timeout=20) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        partial.replace(cache)
    except OSError as error:  # includes timeouts and refused connections
        partial.unlink(missing_ok=True)
        raise DataError(
            f"MNIST is not available and could not be downloaded ({error}); {_where_to_put_it(cache)}"
        ) from None
    return cache


def read_mnist(path: Path):
    """Read and check a Keras-format mnist.npz.

    Returns:
        (x_train, y_train, x_test, y_test) as NumPy arrays.

    Raises:
        DataError: naming the file and what was expected when it is corrupt or wrongly shaped.
    """
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive.files]
            if missing:
                raise DataError(f"{path}: missing {', '.join(missing)}; expected {_EXPECTED}")
            arrays = [archive[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error}); expected {_EXPECTED}") from None
    x_train, y_train, x_test, y_test = arrays
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{path}: x_{name} has shape {x.shape}; expected {_EXPECTED}")
        if y.shape != (x.shape[0],):
            raise DataError(f"{path}: y_{name} has shape {y.shape} for {x.shape[0]} images; expected {_EXPECTED}")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{path}: y_{name} has labels outside 0-9; expected {_EXPECTED}")
    return x_train, y_train, x_test, y_test


@SOURCES.register
class MnistSource(SourceSpec):
    """MNIST as sequences: each image's 28 rows are 28 time steps of 28 pixel values.

    The file is looked for at `path` (relative to the spec), then `$RNNFLOW_MNIST`, then Keras'
    cache (~/.keras/datasets/mnist.npz); only then is it downloaded.
    """

    type: Literal["mnist"] = "mnist"
    path: str | None = Field(
        None, min_length=1, description="A Keras-format mnist.npz; default: $RNNFLOW_MNIST or Keras' cache."
    )
    train_limit: int | None = Field(None, gt=0, description="Use only the first N training images.")
    eval_limit: int | None = Field(None, gt=0, description="Use only the first N test images.")
    scale: bool = Field(True, description="Scale pixels from 0-255 to 0-1.")

    @property
    def task(self) -> Task:
        return "classification"

    @property
    def sequence_targets(self) -> bool | None:
        return False

    def load(self, context: LoadContext) -> DataBundle:
        import numpy as np

        path = find_mnist(self.path, context.base_dir)
        x_train, y_train, x_test, y_test = read_mnist(path)
        x_train, y_train = x_train[: self.train_limit], y_train[: self.train_limit]
        x_test, y_test = x_test[: self.eval_limit], y_test[: self.eval_limit]
        factor = 1 / 255.0 if self.scale else 1.0

        def split(x, y) -> Split:
            return Split(x=(x.astype(np.float32) * factor), y=y.astype(np.int32))

        return DataBundle(
            train=split(x_train, y_train),
            test=split(x_test, y_test),
            task="classification",
            output_size=10,
            sequence_targets=False,
            info={"file": str(path), "train_images": len(x_train), "test_images": len(x_test)},
        )
