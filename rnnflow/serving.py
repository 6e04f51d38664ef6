"""How rnnflow logs models to MLflow: Keras' own flavor, with a pyfunc loader that knows rnnflow.

A logged model may hold rnnflow's own Keras layers (sequence masks, custom cells, the window
level of forecasts), which Keras can load only once rnnflow has registered them. MLflow's pyfunc
loader for Keras (`mlflow.keras`) does not import rnnflow, so `mlflow.pyfunc.load_model` and
`mlflow models serve` in a fresh process could not load such a model. The models rnnflow logs
name this module as their pyfunc loader instead: it registers rnnflow's layers, then loads the
model as `mlflow.keras` does. The `keras` flavor itself is MLflow's, unchanged
(`mlflow.keras.load_model` works as for any Keras model, once rnnflow is imported).
"""

from __future__ import annotations

import os
from typing import Any


def save_model(model: Any, path: str, mlflow_model: Any = None, **kwargs: Any) -> None:
    """Save as `mlflow.keras.save_model` does, with this module as the pyfunc loader.

    `mlflow.models.Model.log(flavor=rnnflow.serving, ...)` calls it.
    """
    import mlflow.keras
    from mlflow.models import Model
    from mlflow.pyfunc import FLAVOR_NAME as PYFUNC

    if mlflow_model is None:
        mlflow_model = Model()
    mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
    mlflow_model.flavors[PYFUNC]["loader_module"] = __name__
    mlflow_model.save(os.path.join(path, "MLmodel"))


def register_layers() -> None:
    """Register rnnflow's Keras objects (custom cells, wrappers, scan, preprocessing) for loading."""
    import rnnflow.cells  # noqa: F401  # isort: skip
    import rnnflow.preprocessing  # noqa: F401
    import rnnflow.scan  # noqa: F401
    import rnnflow.wrappers  # noqa: F401


def _load_pyfunc(path: str) -> Any:
    """MLflow's pyfunc entry point: the Keras model, with rnnflow's layers registered first."""
    register_layers()
    from mlflow.keras.load import _load_pyfunc as load_keras_pyfunc

    return load_keras_pyfunc(path)
