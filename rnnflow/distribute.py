"""One run on several devices or workers: the tf.distribute strategy a plan asks for.

`rnnflow.planner.plan_distribution` decides (devices, replicas, batches, what XLA covers); this
module makes the strategy, before TensorFlow starts (logical CPU devices and a multi-worker
strategy must come first), and checks at the end that every replica holds the same weights.
The training step under a strategy is the trainer's (`rnnflow.train`).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rnnflow.errors import RnnflowError, TrainingError  # noqa: E402
from rnnflow.planner import DistributionPlan, available_devices  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    import keras


def make_strategy(plan: DistributionPlan) -> tf.distribute.Strategy:
    """The strategy of a plan. Call it before TensorFlow runs anything else in this process.

    Raises:
        RnnflowError: when TensorFlow already runs with other devices, or a device is missing.
    """
    if plan.cpu_devices:
        _split_cpu(plan.cpu_devices)
    if plan.strategy == "multi_worker":
        # No collective timeout: with one, TensorFlow 2.21 starts a thread per collective and never
        # ends it (measured: 16,000 threads after a minute of steps, then an abort). A worker that
        # dies breaks its peers' next collective at once; the launcher stops the others.
        return tf.distribute.MultiWorkerMirroredStrategy()
    present = available_devices()
    missing = [d for d in plan.devices if d not in present]
    if missing:
        raise RnnflowError(f"train.distribute: no device {', '.join(missing)} here (there are: "
                           f"{', '.join(sorted(present))}); cpu_devices: N makes N logical CPU devices")
    return tf.distribute.MirroredStrategy([f"/{d}" for d in plan.devices])


def _split_cpu(count: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return  # already so (an earlier run in this process)
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise RnnflowError(f"train.distribute.cpu_devices: {count} logical CPU devices must be made before "
                           "TensorFlow starts, and it already runs in this process with "
                           f"{len(current or [cpu])}: run the spec in a process of its own (rnnflow run)") from None


def scope(strategy: tf.distribute.Strategy | None):
    """The strategy's scope (variables made inside are mirrored), or no scope at all."""
    import contextlib

    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def replica_device() -> str:
    """The device of the replica whose step is being traced (inside `strategy.run`).

    MirroredStrategy's replica context names it. MultiWorkerMirroredStrategy's fails to on every
    worker but the first (it looks the replica's global number up among this worker's devices):
    there the worker's own device is the replica's.
    """
    context = tf.distribute.get_replica_context()
    try:
        return tf.nest.flatten(context.devices)[0]
    except IndexError:
        pass
    # Worker k holds replicas k*n .. k*n + n - 1 of its n devices.
    local = context.strategy.extended.worker_devices
    number = tf.get_static_value(context.replica_id_in_sync_group)
    if number is None:
        raise TrainingError(f"cannot tell which of this worker's devices {list(local)} the replica runs on; "
                            "set train.jit_compile: false")
    return local[int(number) % len(local)]


def weight_digests(strategy: tf.distribute.Strategy, model: keras.Model) -> list[str]:
    """A digest of the model's weights as each replica holds them, in replica order.

    Each replica's copy is digested where it lives; the digests meet in one all-reduce (a SUM of
    vectors that hold each replica's digest at its own place), so every worker of a multi-worker
    run must call this at the same point.
    """
    variables = [v.value if hasattr(v, "value") else v for v in model.variables]
    copies = [strategy.experimental_local_results(v) for v in variables]
    local = [_digest([np.asarray(c[i].numpy()) for c in copies]) for i in range(len(copies[0]))]
    replicas = strategy.num_replicas_in_sync

    def placed(context):
        vector = np.zeros(replicas * 4, np.float64)  # float64 holds the 32-bit words exactly
        index = context.replica_id_in_sync_group
        words = np.frombuffer(bytes.fromhex(local[index % len(local)]), dtype=np.int32)
        vector[index * 4:(index + 1) * 4] = words
        return tf.constant(vector)

    total = strategy.reduce(tf.distribute.ReduceOp.SUM,
                            strategy.experimental_distribute_values_from_function(placed), axis=None)
    words = np.asarray(total).astype(np.int32)
    return [words[i:i + 4].tobytes().hex() for i in range(0, len(words), 4)]


def _digest(arrays: list[np.ndarray]) -> str:
    """md5 of the arrays' bytes (16 bytes, as hex): equal digests, equal weights."""
    md5 = hashlib.md5()
    for array in arrays:
        md5.update(np.ascontiguousarray(array).tobytes())
    return md5.hexdigest()


def describe(strategy: Any) -> str:
    """The strategy's class name, for the record."""
    return type(strategy).__name__
