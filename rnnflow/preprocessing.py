"""Keras layers that carry a forecasting source's preprocessing inside the model.

With `data.level: last` (or `mean`), a table's windows are taken relative to each window's own
level: the model sees and predicts changes from the window's last value (or mean), and the
level is added back to its forecasts. A model that learned changes forecasts a series that
trends beyond the values it was trained on, where a model of levels (even scaled ones) cannot
extrapolate. Keras has no layer for this, hence these two.
"""

from __future__ import annotations

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)
import keras  # noqa: E402
from keras import ops  # noqa: E402


@keras.saving.register_keras_serializable(package="rnnflow")
class WindowLevel(keras.layers.Layer):
    """Takes the first `columns` features of each window relative to their level in the window.

    Called on windows (batch, steps, features), it returns the windows with `level` subtracted
    from the first `columns` features (the targets; the other features are left alone), and the
    level (batch, columns).

    Args:
        columns: how many leading features are taken relative (the target columns).
        level: `last` (the value at the window's last step) or `mean` (the window's mean).
    """

    def __init__(self, columns, level="last", **kwargs):
        super().__init__(**kwargs)
        if level not in ("last", "mean"):
            raise ValueError(f"level must be 'last' or 'mean', got {level!r}")
        self.columns = int(columns)
        self.level = level

    def call(self, windows):
        head = windows[..., : self.columns]
        level = head[:, -1, :] if self.level == "last" else ops.mean(head, axis=1)
        relative = ops.concatenate([head - ops.expand_dims(level, 1), windows[..., self.columns:]], axis=-1)
        return relative, level

    def compute_output_spec(self, windows):
        return (keras.KerasTensor(windows.shape, dtype=self.compute_dtype),
                keras.KerasTensor((windows.shape[0], self.columns), dtype=self.compute_dtype))

    def get_config(self):
        return {**super().get_config(), "columns": self.columns, "level": self.level}


@keras.saving.register_keras_serializable(package="rnnflow")
class AddLevel(keras.layers.Layer):
    """Adds each target's window level back to its forecasts.

    Called on forecasts (batch, horizon * targets), horizon-major, and levels (batch, targets).
    """

    def call(self, forecasts, level):
        repeats = forecasts.shape[-1] // level.shape[-1]
        return forecasts + ops.tile(level, [1, repeats])

    def compute_output_spec(self, forecasts, level):
        return keras.KerasTensor(forecasts.shape, dtype=self.compute_dtype)


__all__ = ["AddLevel", "WindowLevel"]
