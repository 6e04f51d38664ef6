"""The `model:` section: the cell stack, its wrappers and the output projection.

Each cell and wrapper type is a pydantic class registered under its YAML `type:` name. The classes
only describe: how a layer executes is decided in `rnnflow.planner`, and the Keras objects are
made in `rnnflow.cells.factory`.
"""

import re
from typing import Any, Literal

import pydantic
from pydantic import Field

from rnnflow.spec.registry import CELLS, WRAPPERS
from rnnflow.spec.base import Activation, Initializer, Section, at

_DEVICE = re.compile(r"^(/job:[\w-]+(/replica:\d+)?(/task:\d+)?)?/?(device:)?(cpu|gpu|tpu):\d+$", re.I)


# ----------------------------------------------------------------------------------------- wrappers


@WRAPPERS.register
class DropoutWrapperSpec(Section):
    """Dropout around a cell, active only while training (TF1 `DropoutWrapper`).

    A fresh mask is drawn at every time step, as in TF1. Give each probability either as a keep
    probability (`keep_prob`, TF1 style) or as a drop rate (`rate`, Keras style), not both.
    """

    type: Literal["dropout"] = "dropout"
    keep_prob: float | None = Field(None, gt=0, le=1, description="Input keep probability.")
    rate: float | None = Field(None, ge=0, lt=1, description="Input drop rate (1 - keep_prob).")
    state_keep_prob: float | None = Field(None, gt=0, le=1, description="State keep probability.")
    state_rate: float | None = Field(None, ge=0, lt=1, description="State drop rate.")
    output_keep_prob: float | None = Field(None, gt=0, le=1, description="Output keep probability.")
    output_rate: float | None = Field(None, ge=0, lt=1, description="Output drop rate.")
    seed: int | None = Field(None, ge=0, description="Seed of the masks; default: derived from the spec seed.")

    @pydantic.model_validator(mode="after")
    def _one_form_each(self) -> "DropoutWrapperSpec":
        for prefix, keep_key, rate_key in (
            ("input", "keep_prob", "rate"),
            ("state", "state_keep_prob", "state_rate"),
            ("output", "output_keep_prob", "output_rate"),
        ):
            if getattr(self, keep_key) is not None and getattr(self, rate_key) is not None:
                raise at(rate_key, f"give the {prefix} dropout as {keep_key} or {rate_key}, not both")
        return self

    @staticmethod
    def _rate(keep: float | None, rate: float | None) -> float:
        if rate is not None:
            return rate
        return 0.0 if keep is None else 1.0 - keep

    @property
    def input_rate(self) -> float:
        """Drop rate of the cell's input at each step."""
        return self._rate(self.keep_prob, self.rate)

    @property
    def state_drop_rate(self) -> float:
        """Drop rate of the new state at each step."""
        return self._rate(self.state_keep_prob, self.state_rate)

    @property
    def output_drop_rate(self) -> float:
        """Drop rate of the cell's output at each step."""
        return self._rate(self.output_keep_prob, self.output_rate)


@WRAPPERS.register
class DeviceWrapperSpec(Section):
    """Place layers on devices (TF1 `DeviceWrapper`): one device for all, or a list spread over them.

    A list of n devices over m layers gives each device a contiguous block of layers. A device that
    does not exist falls back to the default placement with one warning, or fails when `strict`.
    """

    type: Literal["device"] = "device"
    device: str | list[str] = Field(..., description="A device like /gpu:0, or a list of them.")
    strict: bool = Field(False, description="Fail instead of falling back when a device is missing.")

    @pydantic.field_validator("device")
    @classmethod
    def _check_devices(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("give at least one device")
        for name in names:
            if not _DEVICE.match(name):
                raise ValueError(f"'{name}' is not a device name like /cpu:0 or /gpu:1")
        return value

    @property
    def devices(self) -> list[str]:
        """The devices as a list."""
        return [self.device] if isinstance(self.device, str) else list(self.device)

    def device_for(self, layer: int, layers: int) -> str:
        """The device of layer `layer` (0-based) in a stack of `layers` layers."""
        devices = self.devices
        return devices[min(layer * len(devices) // layers, len(devices) - 1)]


WrapperSpec = WRAPPERS.union()


# -------------------------------------------------------------------------------------------- cells


class CellSpec(Section):
    """Settings every cell type has."""

    type: str
    units: int = Field(100, gt=0, le=100_000, description="Units (neurons) in each layer.")
    activation: Activation = Field("tanh", description="Activation of the cell's output/candidate.")
    layers: int = Field(1, ge=1, le=1000, description="How many identical layers of this cell to stack.")
    use_bias: bool = Field(True, description="Whether the cell has bias terms.")
    kernel_initializer: Initializer = Field("glorot_uniform", description="Initializer of input weights.")
    recurrent_initializer: Initializer = Field("orthogonal", description="Initializer of recurrent weights.")
    wrappers: list[WrapperSpec] = Field(default_factory=list, description="Dropout/device wrappers.")
    bidirectional: bool = Field(
        False, description="Run each layer over the sequence both ways (Keras Bidirectional); with lengths "
        "the backward direction starts at each sequence's last valid step, as TF1's bidirectional_dynamic_rnn."
    )
    merge_mode: Literal["concat", "sum", "ave", "mul"] = Field(
        "concat", description="How a bidirectional layer merges its two directions (concat doubles the units)."
    )

    @pydantic.model_validator(mode="after")
    def _check_wrappers(self) -> "CellSpec":
        seen: set[str] = set()
        for i, wrapper in enumerate(self.wrappers):
            if wrapper.type in seen:
                raise at(f"wrappers[{i}].type", f"a second '{wrapper.type}' wrapper on the same cell")
            seen.add(wrapper.type)
            if isinstance(wrapper, DeviceWrapperSpec) and wrapper.strict:
                if len(wrapper.devices) > self.layers:
                    raise at(
                        f"wrappers[{i}].device",
                        f"{len(wrapper.devices)} devices for {self.layers} layer(s); "
                        "give at most one device per layer (or set strict: false)",
                    )
        return self

    def wrapper(self, kind: str) -> Any:
        """The wrapper of type `kind`, or None."""
        return next((w for w in self.wrappers if w.type == kind), None)


class GatedCellSpec(CellSpec):
    """Settings of gated cells."""

    recurrent_activation: Activation = Field("sigmoid", description="Activation of the gates.")


@CELLS.register
class RNNCellSpec(CellSpec):
    """A simple (Elman) RNN cell: h(t) = act(W x(t) + U h(t-1) + b). TF1 `BasicRNNCell`."""

    type: Literal["rnn"] = "rnn"


@CELLS.register
class LSTMCellSpec(GatedCellSpec):
    """An LSTM cell with TF1 `BasicLSTMCell` math: `forget_bias` is added inside the forget gate.

    With `forget_bias: 0` the cell is Keras' own LSTM (and can use cuDNN on a GPU).
    """

    type: Literal["lstm"] = "lstm"
    forget_bias: float = Field(1.0, ge=-100, le=100, description="Added to the forget gate (TF1: 1.0).")
    unit_forget_bias: bool = Field(
        False, description="Initialize the forget-gate bias to 1 (Keras' way); keeps cuDNN eligible."
    )


@CELLS.register
class PeepholeLSTMCellSpec(GatedCellSpec):
    """An LSTM with peephole connections (Gers & Schmidhuber 2000; TF1 `LSTMCell(use_peepholes=True)`).

    c(t-1) feeds the input and forget gates, c(t) the output gate, through diagonal weights.
    """

    type: Literal["peephole_lstm"] = "peephole_lstm"
    forget_bias: float = Field(1.0, ge=-100, le=100, description="Added to the forget gate (TF1: 1.0).")


@CELLS.register
class GRUCellSpec(GatedCellSpec):
    """A GRU cell. `reset_after: false` applies the reset gate before the matmul, as TF1 `GRUCell`."""

    type: Literal["gru"] = "gru"
    reset_after: bool = Field(True, description="Reset gate after the recurrent matmul (Keras/cuDNN).")


@CELLS.register
class CIFGLSTMCellSpec(GatedCellSpec):
    """A coupled input/forget-gate LSTM (CIFG): the forget gate is 1 - the input gate."""

    type: Literal["cifg_lstm"] = "cifg_lstm"


AnyCellSpec = CELLS.union()


# --------------------------------------------------------------------------------------- the model


class ProjectionSpec(Section):
    """A dense projection of the top layer's output to the target size (TF1 output projection).

    `stacked` reshapes all steps into one batch and applies one dense layer (the fast trick);
    `per_step` wraps the top cell so each step projects its own output (`OutputProjectionWrapper`).
    Both compute the same function on every valid step (past a padded sequence's length the
    per-step projection of a zero output is 0, the stacked one is the bias, as in TF1).
    """

    units: int | None = Field(None, gt=0, le=100_000, description="Output size; default: the data's target size.")
    mode: Literal["stacked", "per_step"] = Field("stacked", description="How the projection is applied.")
    activation: Activation = Field("linear", description="Activation after the projection.")


class ModelSpec(Section):
    """The recurrent network: a stack of cells, then an optional projection."""

    cells: list[AnyCellSpec] = Field(..., min_length=1, description="The cell stack, bottom first.")
    unroll: bool = Field(False, description="Static unrolling (TF1 static_rnn) instead of a dynamic loop.")
    loop: Literal["keras", "scan"] = Field(
        "keras",
        description="The dynamic time loop: Keras' (automatic differentiation inside the loop) or "
        "scan (rnnflow's loop with a hand-written backward pass, the weight gradients one matrix "
        "product after it: same math, float rounding differs; faster where per-step overhead "
        "dominates, e.g. long sequences in small batches). Layers scan cannot run use Keras' loop "
        "(rnnflow show says why).",
    )
    output: Literal["sequence", "last", "mean"] = Field(
        "sequence",
        description="Predict at every step (sequence), from the final output (last: the last valid "
        "step's), or from the mean of the outputs over the valid steps (mean).",
    )
    projection: ProjectionSpec | None = Field(
        default_factory=ProjectionSpec, description="Output projection; null for the raw cell outputs."
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32",
        description="Compute in half precision with float32 variables (mixed_*; faster on GPUs, "
        "changes numerics; float16 trains with loss scaling). Outputs stay float32.",
    )

    @pydantic.model_validator(mode="after")
    def _check_loop(self) -> "ModelSpec":
        if self.loop == "scan" and self.unroll:
            raise at("loop", "scan is a dynamic loop; it cannot be combined with unroll: true")
        if self.projection is not None and self.projection.mode == "per_step" and self.cells[-1].bidirectional:
            raise at("projection.mode", "a per_step projection runs inside one direction's loop; the top "
                     "layer is bidirectional, so project its merged outputs with mode: stacked")
        return self

    @property
    def layer_count(self) -> int:
        """Total number of recurrent layers."""
        return sum(c.layers for c in self.cells)
