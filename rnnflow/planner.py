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


@dataclasses.dataclass
class DistributionPlan:
    """How one run trains on several devices or workers (what `rnnflow show` reports).

    Attributes:
        strategy: `mirrored` or `multi_worker`.
        devices: mirrored: the devices; multi_worker: this worker's devices.
        workers: the cluster's worker addresses (multi_worker; one, this process, without TF_CONFIG).
        worker_index: this process's place among the workers (0 is the chief).
        chief: whether this process records the run (MLflow, checkpoints, the model).
        replicas: replicas in sync: every device of every worker.
        cpu_devices: logical CPU devices to make before TensorFlow starts (mirrored), or None.
        global_batch: sequences per step over all replicas (`train.batch_size`).
        per_replica_batch: sequences per step on each replica.
        xla: how `train.jit_compile` applies, or None when it is off.
        notes: the reasons, in words.
    """

    strategy: str
    devices: list[str]
    workers: list[str]
    worker_index: int
    chief: bool
    replicas: int
    cpu_devices: int | None
    global_batch: int
    per_replica_batch: int
    xla: str | None
    notes: list[str]

    def lines(self) -> list[str]:
        """The plan as `rnnflow show` prints it."""
        where = ", ".join(self.devices)
        if self.strategy == "mirrored":
            head = f"distribute: mirrored (MirroredStrategy) over {self.replicas} device(s): {where}"
        else:
            head = (f"distribute: multi_worker (MultiWorkerMirroredStrategy) over {len(self.workers)} worker(s) "
                    f"({', '.join(self.workers)}), {self.replicas} replica(s); this process is worker "
                    f"{self.worker_index}{' (the chief: it records the run)' if self.chief else ''}")
        out = [head,
               f"  batch: {self.global_batch} sequences per step in all (train.batch_size, the global batch), "
               f"{self.per_replica_batch} on each of the {self.replicas} replicas",
               "  learning rate: train.learning_rate as given. The gradient is the mean over the global batch, "
               "as on one device, so the same spec learns the same; to keep the per-replica batch when adding "
               "replicas, raise batch_size and, by the linear scaling rule, learning_rate with it"]
        if self.xla is not None:
            out.append("  XLA: " + self.xla)
        out += [f"  {note}" for note in self.notes]
        return out


def cluster_from_environment() -> tuple[list[str], int, bool]:
    """(worker addresses, this process's index, whether it is the chief) from $TF_CONFIG.

    The chief is the `chief` task when the cluster has one, else worker 0. Without TF_CONFIG this
    process is the only worker, and the chief.

    Raises:
        RnnflowError: when TF_CONFIG is not valid JSON of a cluster and a task.
    """
    import json
    import os

    text = os.environ.get("TF_CONFIG")
    if not text:
        return ["this process"], 0, True
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        chiefs = list(cluster.get("chief", []))
        workers = chiefs + list(cluster.get("worker", []))
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise RnnflowError(f"TF_CONFIG is not a cluster and a task ({error}): {text[:200]}") from None
    if kind not in ("chief", "worker"):
        raise RnnflowError(f"TF_CONFIG task type {kind!r}: rnnflow runs chief and worker tasks only")
    position = index if kind == "chief" else len(chiefs) + index
    return workers, position, position == 0


def plan_distribution(spec: Spec, train_size: int | None = None, gpus: int | None = None) -> DistributionPlan | None:
    """How `spec` trains on several devices or workers; None when it does not ask to.

    Args:
        spec: the validated spec.
        train_size: training sequences (the batch is at most that many); None: the spec's batch.
        gpus: GPUs on this machine (default: what TensorFlow sees, without starting it).

    Raises:
        RnnflowError: when the global batch does not split evenly over the replicas.
    """
    train = spec.train
    if train is None or train.distribute is None:
        return None
    distribute = train.distribute
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))  # does not start TensorFlow
    notes: list[str] = []
    cpu_devices = None
    workers, index, chief = ["this process"], 0, True
    if distribute.strategy == "mirrored":
        if distribute.devices is not None:
            devices = [normalize_device(d) for d in distribute.devices]
            cpu_devices = distribute.cpu_devices
        elif gpus:
            devices = [f"GPU:{i}" for i in range(gpus)]
            notes.append(f"devices: every GPU ({gpus}), the default")
        elif distribute.cpu_devices:
            cpu_devices = distribute.cpu_devices
            devices = [f"CPU:{i}" for i in range(cpu_devices)]
            notes.append(f"devices: no GPU; the CPU made into {cpu_devices} logical devices (cpu_devices), which "
                         "share its cores: this tries mirroring, it does not speed training up")
        else:
            devices = ["CPU:0"]
            notes.append("devices: no GPU and no cpu_devices: one device, nothing to mirror "
                         "(cpu_devices: 2 splits the CPU to try it)")
        replicas = len(devices)
    else:
        workers, index, chief = cluster_from_environment()
        devices = [f"GPU:{i}" for i in range(gpus)] if gpus else ["CPU:0"]
        replicas = len(workers) * len(devices)
        notes.append("workers: from $TF_CONFIG" if len(workers) > 1 or workers[0] != "this process" else
                     "workers: no $TF_CONFIG, so this process alone (rnnflow run --workers N starts N on this "
                     "machine)")
        notes.append("only the chief (worker 0) records the run in MLflow and writes checkpoints; every worker "
                     "trains, and all end with the same weights (their digests are compared and recorded)")
    batch = min(train.batch_size, train_size) if train_size else train.batch_size
    if batch % replicas:
        raise RnnflowError(f"a batch of {batch} sequences does not split evenly over {replicas} replicas "
                           "(train.batch_size is the global batch; make it a multiple of the replicas)")
    xla = None
    if train.jit_compile:
        xla = ("on for each replica's forward and backward pass; the optimizer's step (the all-reduce of "
               "the gradients and the update of the variables) runs outside XLA, because the strategy keeps "
               "a copy of every variable on each device and XLA compiles for one device")
    return DistributionPlan(distribute.strategy, devices, workers, index, chief, replicas, cpu_devices, batch,
                            batch // replicas, xla, notes)
