"""How each recurrent layer executes, and why: the one home of every layer rule.

For every recurrent layer of a spec the planner decides, from the spec alone (and the devices
TensorFlow sees, when a device wrapper asks for one):

- its execution path: `fused` (Keras' own layer: SimpleRNN, LSTM, GRU, which can use fused
  kernels, cuDNN on a GPU), `cell loop` (Keras' `RNN` layer stepping a cell: needed by cell
  wrappers and by the cells Keras has no layer for) or `scan` (rnnflow's loop with a
  hand-written backward pass, `model.loop: scan`); a bidirectional layer runs both directions
  that way, inside Keras' `Bidirectional`;
- why it cannot scan, when `model.loop: scan` asks for it;
- whether it could use cuDNN on a GPU, and if not why (the rule Keras keeps in `cudnn_ok`);
- its device.

`rnnflow.build` builds what the plans say and `rnnflow show` prints them with their reasons;
nothing else decides any of this. Importing this module never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from rnnflow.errors import RnnflowError

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.spec import Spec
    from rnnflow.spec.model import CellSpec

log = logging.getLogger("rnnflow")

FUSED = "fused"
CELL_LOOP = "cell loop"
SCAN = "scan"


@dataclasses.dataclass
class LayerPlan:
    """How one recurrent layer is built (also what `rnnflow show` reports).

    Attributes:
        name: the layer's name in the model (`gru_0`, ...).
        cell: the cell's spec.
        index: the layer's position in the stack, from the bottom.
        device: where it runs (None: default placement).
        execution: `fused`, `cell loop` or `scan` (see the module docstring).
        why: the reason for `execution`, in words.
        per_step_projection: whether the layer carries the per-step output projection (top only).
        cudnn_blockers: why the layer could not use cuDNN on a GPU (empty when it could).
        scan_blockers: why it does not scan although `model.loop: scan` asks (empty otherwise).
        bidirectional: whether the layer also runs backwards over each sequence (from its last
            valid step) and merges the two directions.
        merge_mode: how the directions merge (concat, sum, ave, mul), for a bidirectional layer.
    """

    name: str
    cell: CellSpec
    index: int
    device: str | None
    execution: str
    why: str
    per_step_projection: bool
    cudnn_blockers: list[str]
    scan_blockers: list[str] = dataclasses.field(default_factory=list)
    bidirectional: bool = False
    merge_mode: str | None = None


def cell_loop_reasons(cell: CellSpec, per_step_projection: bool) -> list[str]:
    """Why a layer must step its cell in Keras' `RNN` loop (wrappers that run inside every step)."""
    reasons = []
    if cell.wrapper("dropout") is not None:
        reasons.append("the dropout wrapper needs Keras' cell loop")
    if per_step_projection:
        reasons.append("the per_step projection needs Keras' cell loop")
    return reasons


def no_fused_layer(cell: CellSpec) -> str | None:
    """Why Keras has no layer of its own (SimpleRNN, LSTM, GRU) computing this cell; None when it has.

    rnnflow's LSTM adds TF1's constant `forget_bias` inside the gate, which Keras' LSTM layer
    cannot: only `forget_bias: 0` is Keras' LSTM.
    """
    if cell.type == "lstm":
        if cell.forget_bias == 0:
            return None
        return f"Keras' LSTM layer has no constant forget_bias ({cell.forget_bias}; 0 would use it)"
    if cell.type in ("rnn", "gru"):
        return None
    return f"Keras has no layer of its own for {cell.type} cells"


# The cell types rnnflow's scan loop has a step for (`rnnflow.scan._cell_parts`).
SCAN_CELLS = ("rnn", "lstm", "peephole_lstm", "gru", "cifg_lstm")


def scan_blockers(cell: CellSpec, per_step_projection: bool) -> list[str]:
    """Why a layer of this cell could not run rnnflow's scan loop (empty when it could)."""
    if cell.type not in SCAN_CELLS:
        return [f"the scan loop has no step for {cell.type} cells"]
    reasons = cell_loop_reasons(cell, per_step_projection)
    if cell.type == "gru" and not cell.reset_after:
        reasons.append("reset_after: false puts a second matmul after the reset gate")
    return reasons


def cudnn_blockers(cell: CellSpec, unroll: bool) -> list[str]:
    """Why a layer of this cell could not use the cuDNN kernel on a GPU (empty when it could).

    Keras' rule (`keras/src/backend/tensorflow/rnn.py`, `cudnn_ok`): LSTM and GRU layers only,
    tanh and sigmoid, no unrolling, biases, nothing stepping the cell; GRU with reset_after.
    A bidirectional layer follows the same rule in both directions: Keras' cuDNN path runs a
    layer backwards over right-padded sequences too (it reverses each sequence within its length).
    """
    if cell.type not in ("lstm", "gru"):
        return [f"there is no cuDNN kernel for '{cell.type}' cells"]
    reasons = []
    if cell.activation != "tanh":
        reasons.append(f"activation is {cell.activation} (cuDNN needs tanh)")
    if cell.recurrent_activation != "sigmoid":
        reasons.append(f"recurrent_activation is {cell.recurrent_activation} (cuDNN needs sigmoid)")
    if unroll:
        reasons.append("model.unroll is true (cuDNN needs the dynamic loop)")
    if not cell.use_bias:
        reasons.append("use_bias is false")
    if cell.wrapper("dropout") is not None:
        reasons.append("a dropout wrapper runs the cell step by step")
    if cell.type == "lstm" and cell.forget_bias != 0:
        reasons.append(f"forget_bias is {cell.forget_bias} (cuDNN has no constant forget bias; "
                       "forget_bias: 0 with unit_forget_bias: true learns the same way)")
    if cell.type == "gru" and not cell.reset_after:
        reasons.append("reset_after is false (cuDNN needs reset_after: true)")
    return reasons


def execution(cell: CellSpec, per_step_projection: bool, loop: str) -> tuple[str, str, list[str]]:
    """(execution path, why, why not scan) of one layer; see the module docstring."""
    blockers = scan_blockers(cell, per_step_projection) if loop == "scan" else []
    if loop == "scan" and not blockers:
        return SCAN, "model.loop: scan", []
    reasons = cell_loop_reasons(cell, per_step_projection)
    missing = no_fused_layer(cell)
    if missing is None and not reasons:
        return FUSED, "Keras' own layer", blockers
    return CELL_LOOP, "; ".join(reasons or [missing]), blockers


def available_devices() -> set[str]:
    """The logical devices TensorFlow sees, as normalized names like 'GPU:0'."""
    import tensorflow as tf

    return {d.name.split("device:")[-1].upper() for d in tf.config.list_logical_devices()}


def normalize_device(device: str) -> str:
    """'/job:localhost/replica:0/task:0/cpu:0', '/device:CPU:0', 'cpu:0' ... -> 'CPU:0'."""
    return device.rstrip("/").split("/")[-1].split("device:")[-1].upper()


def plan_layers(spec: Spec, devices: set[str] | None = None) -> list[LayerPlan]:
    """Decide, for every recurrent layer, its name, device and execution path, with reasons.

    Args:
        spec: the validated spec.
        devices: available devices (default: what TensorFlow sees, asked only when a device
            wrapper names one).

    Raises:
        RnnflowError: when a device wrapper is strict and a device is missing.
    """
    plans: list[LayerPlan] = []
    missing: dict[str, list[str]] = {}
    total = spec.model.layer_count
    projection = spec.model.projection
    index = 0
    for cell in spec.model.cells:
        device_wrapper = cell.wrapper("device")
        for j in range(cell.layers):
            name = f"{cell.type}_{index}"
            device = device_wrapper.device_for(j, cell.layers) if device_wrapper else None
            if device is not None:
                devices = available_devices() if devices is None else devices
                if normalize_device(device) not in devices:
                    missing.setdefault(device, []).append(name)
                    if device_wrapper.strict:
                        raise RnnflowError(
                            f"device {device} for layer {name} does not exist (strict: true); "
                            f"available: {', '.join(sorted(devices))}"
                        )
                    device = None
            per_step = index == total - 1 and projection is not None and projection.mode == "per_step"
            path, why, blockers = execution(cell, per_step, spec.model.loop)
            plans.append(LayerPlan(name, cell, index, device, path, why, per_step,
                                   cudnn_blockers(cell, spec.model.unroll), blockers, cell.bidirectional,
                                   cell.merge_mode if cell.bidirectional else None))
            index += 1
    if missing:
        where = "; ".join(f"{d} (layers {', '.join(n)})" for d, n in missing.items())
        log.warning("devices not found, using default placement instead: %s", where)
    return plans
