"""The metrics every run of a task logs, whatever `train.metrics` lists (NumPy, no TensorFlow).

- Forecasts (splits with naive forecasts, e.g. from a table): `mae` and `rmse` in the data's
  units; `naive_mae`, the MAE of the naive forecast (last value, or seasonal naive) of the same
  targets; and `mase` = mae / naive_mae: below 1, the model beats that trivial forecaster.
- Classification: `accuracy`.

`rnnflow.train.evaluate` adds them to the spec's metrics on every split (`train_*`, `val_*`, `test_*`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.data.base import Split


def weighted_mean(values: np.ndarray, weights: np.ndarray | None) -> float:
    """The mean of `values`, weighted when `weights` are given (shaped alike)."""
    if weights is None:
        return float(np.mean(values))
    return float(np.sum(values * weights) / max(float(np.sum(weights)), 1.0))


def accuracy(labels: np.ndarray, logits: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The share of targets whose class has the largest logit (weighted like the loss)."""
    return weighted_mean((np.argmax(logits, axis=-1) == labels).astype(np.float64), weights)


def forecast_metrics(y: np.ndarray, pred: np.ndarray, naive: np.ndarray) -> dict[str, float]:
    """mae, rmse, naive_mae and mase of forecasts, all over the same targets."""
    error = np.asarray(pred, np.float64) - y
    mae = float(np.mean(np.abs(error)))
    naive_mae = float(np.mean(np.abs(np.asarray(naive, np.float64) - y)))
    return {
        "mae": mae,
        "rmse": math.sqrt(float(np.mean(error**2))),
        "naive_mae": naive_mae,
        "mase": mae / naive_mae if naive_mae > 0 else float("nan"),
    }


def task_metrics(loss: str, split: Split, pred: np.ndarray) -> dict[str, float]:
    """The metrics of the split's task (see the module docstring); {} when it has none or no targets."""
    if split.y is None:
        return {}
    if split.naive is not None:
        return forecast_metrics(split.y, pred, split.naive)
    if loss == "sparse_categorical_crossentropy":
        return {"accuracy": accuracy(split.y, pred, split.weights)}
    return {}
