"""Keras objects for cell specs: the cell a layer steps, or Keras' own fused layer.

Keyed by the spec's `type:`; which of the two a layer uses is the planner's decision
(`rnnflow.planner`), not this module's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras  # noqa: E402

from rnnflow.cells import CIFGLSTMCell, ForgetBiasLSTMCell, PeepholeLSTMCell  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.spec.model import CellSpec


def _common(spec: CellSpec) -> dict[str, Any]:
    """The arguments every cell takes, from the settings every cell spec has."""
    args = {
        "units": spec.units,
        "activation": spec.activation,
        "use_bias": spec.use_bias,
        "kernel_initializer": spec.kernel_initializer,
        "recurrent_initializer": spec.recurrent_initializer,
    }
    if hasattr(spec, "recurrent_activation"):  # gated cells
        args["recurrent_activation"] = spec.recurrent_activation
    return args


def keras_cell(spec: CellSpec, name: str) -> keras.layers.Layer:
    """The Keras cell for one layer of a cell spec."""
    common = _common(spec)
    if spec.type == "rnn":
        return keras.layers.SimpleRNNCell(name=name, **common)
    if spec.type == "lstm":
        return ForgetBiasLSTMCell(name=name, forget_bias=spec.forget_bias, unit_forget_bias=spec.unit_forget_bias,
                                  **common)
    if spec.type == "peephole_lstm":
        return PeepholeLSTMCell(name=name, forget_bias=spec.forget_bias, **common)
    if spec.type == "gru":
        return keras.layers.GRUCell(name=name, reset_after=spec.reset_after, **common)
    if spec.type == "cifg_lstm":
        return CIFGLSTMCell(name=name, **common)
    raise ValueError(f"no Keras cell for '{spec.type}' cells")


def fused_layer(spec: CellSpec, name: str, **rnn_args: Any) -> keras.layers.Layer:
    """Keras' own layer for a cell spec (see `rnnflow.planner.has_fused_layer`)."""
    common = _common(spec)
    if spec.type == "rnn":
        return keras.layers.SimpleRNN(name=name, **common, **rnn_args)
    if spec.type == "lstm":
        return keras.layers.LSTM(name=name, unit_forget_bias=spec.unit_forget_bias, **common, **rnn_args)
    if spec.type == "gru":
        return keras.layers.GRU(name=name, reset_after=spec.reset_after, **common, **rnn_args)
    raise ValueError(f"Keras has no layer of its own for '{spec.type}' cells")
