"""rnnflow's MLflow model flavor: the Keras flavor, loaded through rnnflow for every pyfunc consumer.

A logged model keeps MLflow's `keras` flavor (`mlflow.keras.load_model` and `rnnflow predict`
read it), and its `python_function` flavor names this module as the loader. So
`mlflow.pyfunc.load_model`, `mlflow models serve` and Spark UDFs import rnnflow's custom Keras
objects (the peephole and CIFG cells, the scan loop, the wrappers) before Keras deserializes the
model; with the stock loader a custom-cell model fails with "Could not locate class". The model
then needs only rnnflow installed where it loads, no code copied into it and no pickle.

Log with `mlflow.models.Model.log(None, name=..., flavor=rnnflow.mlflow_model, keras_model=model, ...)`
(what `mlflow.keras.log_model` does inside, so the LoggedModel and its metrics are the same).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import, before mlflow.keras imports it)  # isort: skip
import mlflow.keras  # isort: skip
from mlflow.models.model import MLMODEL_FILE_NAME  # isort: skip

FLAVOR = "rnnflow"


def register_custom_objects() -> None:
    """Import the modules that register rnnflow's Keras objects (needed before loading a model)."""
    import rnnflow.cells  # noqa: F401
    import rnnflow.scan  # noqa: F401
    import rnnflow.wrappers  # noqa: F401


def save_model(keras_model: Any, path: str, mlflow_model: Any = None, **kwargs: Any) -> None:
    """Save like `mlflow.keras.save_model`, with this module as the pyfunc loader (called by `Model.log`)."""
    mlflow.keras.save_model(keras_model, path, mlflow_model=mlflow_model, **kwargs)
    if mlflow_model is None:  # save_model called directly: read back what was written
        from mlflow.models import Model

        mlflow_model = Model.load(os.path.join(path, MLMODEL_FILE_NAME))
    mlflow_model.flavors["python_function"]["loader_module"] = __name__
    from rnnflow import __version__

    mlflow_model.flavors[FLAVOR] = {"rnnflow_version": __version__}
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


class Predictor:
    """The pyfunc face of a logged rnnflow model.

    Accepts an array (sequences, steps, features), a dict {"inputs": ..., "lengths": ...} for
    padded models, or a DataFrame holding one sequence (a row per step), as `rnnflow predict
    --input x.csv` does. Calls the model directly: `model.predict` would draw a progress bar in
    the server's log for every request.
    """

    def __init__(self, model: Any):
        self.model = model

    def predict(self, data: Any, params: dict | None = None) -> Any:
        import numpy as np
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            data = data.to_numpy(dtype="float32")[None]
        elif isinstance(data, dict):
            data = {k: np.asarray(v, "int32" if k == "lengths" else "float32") for k, v in data.items()}
        else:
            data = np.asarray(data, "float32")
        return np.asarray(self.model(data, training=False))


def _load_pyfunc(path: str) -> Predictor:
    """pyfunc's entry point; `path` is the model's data folder (its MLmodel file is one level up)."""
    register_custom_objects()
    folder = path if os.path.isfile(os.path.join(path, MLMODEL_FILE_NAME)) else os.path.dirname(path)
    return Predictor(mlflow.keras.load_model(folder))


def requirements() -> tuple[list[str], str]:
    """The pip requirements of a logged model, and how rnnflow itself is named in them.

    TensorFlow and Keras are pinned to the versions that trained the model. rnnflow is named by
    where it was installed from (PEP 610: `rnnflow @ file:///checkout` or `rnnflow @ git+...@commit`),
    never by its bare name: no index serves this rnnflow, and an unrelated project of the same
    name is on PyPI. When the installation does not say where it came from (or is not the rnnflow
    imported here, e.g. a checkout on PYTHONPATH), rnnflow is left out: serve such a model with
    `--env-manager local` in an environment that has rnnflow.
    """
    import keras
    import tensorflow as tf

    pins = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
    reference = _direct_reference()
    if reference is None:
        return pins, "left out: this rnnflow was not installed from a known place (serve with --env-manager local)"
    return pins + [reference], reference


def _direct_reference() -> str | None:
    from importlib import metadata

    import rnnflow

    try:
        dist = metadata.distribution("rnnflow")
        origin = json.loads(dist.read_text("direct_url.json") or "null")
    except (metadata.PackageNotFoundError, ValueError):
        return None
    if not isinstance(origin, dict) or not isinstance(origin.get("url"), str):
        return None
    url, imported = origin["url"], Path(rnnflow.__file__).resolve()
    dir_info = origin.get("dir_info")
    if isinstance(dir_info, dict) and dir_info.get("editable"):  # a checkout, imported from where it is
        from urllib.parse import unquote, urlsplit

        same = imported.is_relative_to(Path(unquote(urlsplit(url).path)).resolve())
    else:  # a copy in site-packages, from a directory, a VCS or an archive
        same = Path(str(dist.locate_file("rnnflow/__init__.py"))).resolve() == imported
    if not same:
        return None
    vcs = origin.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs") and vcs.get("commit_id"):
        return f"rnnflow @ {vcs['vcs']}+{url}@{vcs['commit_id']}"
    return f"rnnflow @ {url}"
