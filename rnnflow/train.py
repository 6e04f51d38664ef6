"""Training and evaluation. Knows nothing of MLflow: tracking listens through Keras callbacks.

The training loop runs several gradient steps per call of one compiled TensorFlow function (the
step count, the weights and the optimizer state all live in TensorFlow variables, so the state is
consistent whenever the loop stops). Batches come from a deterministic stream of shuffled
indexes that depends only on the seed and the iteration, which is what makes an interrupted run
resumable to the same final numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rnnflow import controls as ctl  # noqa: E402
from rnnflow.chunks import plan_iterations  # noqa: E402
from rnnflow.errors import LossNotFinite, TrainingError  # noqa: E402
from rnnflow.metrics import accuracy, task_metrics, weighted_mean  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.build import BuiltModel
    from rnnflow.data.base import DataBundle, Split
    from rnnflow.spec import Spec
    from rnnflow.spec.spec import TrainSpec

log = logging.getLogger("rnnflow")

# Keras callback hooks the trainer calls: on_train_begin, on_train_batch_end(iteration, logs) at
# every logged point, on_epoch_end(epoch, logs) and on_train_end(logs).


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras, and ask TensorFlow for deterministic kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_optimizer(train: TrainSpec, learning_rate: Any = None) -> keras.optimizers.Optimizer:
    """The Keras optimizer a train section asks for.

    Args:
        train: the train section.
        learning_rate: a float or a Keras LearningRateSchedule (default: `train.learning_rate`).
    """
    common: dict[str, Any] = {"learning_rate": train.learning_rate if learning_rate is None else learning_rate}
    if train.clip_norm is not None:
        common["clipnorm"] = train.clip_norm
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=train.momentum, **common)
    if train.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=train.momentum, **common)
    return {
        "adam": keras.optimizers.Adam,
        "adagrad": keras.optimizers.Adagrad,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
    }[train.optimizer](**common)


def loss_value(loss: str, y, pred, weights=None, scale=None):
    """The mean loss over all target elements (weighted by `weights` when given), as a tensor.

    With `scale` (per output unit), errors are divided by it: the loss of scaled targets when the
    model un-scales its outputs (`rnnflow.build`), so every target weighs alike whatever its units.
    """
    y = tf.convert_to_tensor(y)
    pred = tf.convert_to_tensor(pred)
    if loss == "sparse_categorical_crossentropy":
        per = keras.losses.sparse_categorical_crossentropy(tf.cast(y, "int32"), pred, from_logits=True)
    else:
        diff = pred - tf.cast(y, pred.dtype)
        if scale is not None:
            diff = diff / tf.cast(scale, diff.dtype)
        per = tf.square(diff) if loss == "mse" else tf.abs(diff)
        per = tf.reduce_mean(per, axis=-1)
    if weights is None:
        return tf.reduce_mean(per)
    weights = tf.cast(weights, per.dtype)
    return tf.reduce_sum(per * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def metric_values(names: list[str], loss: str, split: Split, pred: np.ndarray, top_k: int,
                  scale: np.ndarray | None = None) -> dict[str, float]:
    """The loss and the named metrics of predictions on a split (NumPy, weighted like the loss).

    The loss is what training minimises (of scaled targets, with `scale`); the metrics are in the
    data's units.
    """
    results = {"loss": float(loss_value(loss, split.y, pred, split.weights, scale))}
    weights = split.weights
    for name in names:
        if name in ("mse", "mae", "rmse"):
            diff = pred - split.y
            per = np.mean(diff**2 if name != "mae" else np.abs(diff), axis=-1)
            value = weighted_mean(per, weights)
            results[name] = math.sqrt(value) if name == "rmse" else value
        elif name == "accuracy":
            results[name] = accuracy(split.y, pred, weights)
        elif name == "top_k_accuracy":
            k = min(top_k, pred.shape[-1])
            target_score = np.take_along_axis(pred, split.y[..., None].astype(np.int64), axis=-1)[..., 0]
            # in_top_k: the target is among the k largest (counting how many scores beat it).
            better = (pred > target_score[..., None]).sum(axis=-1)
            results[f"top_{top_k}_accuracy"] = weighted_mean((better < k).astype(np.float64), weights)
    return results


def batch_indices(seed: int, n: int, batch: int, start: int, count: int, shuffle: bool) -> np.ndarray:
    """Indexes of the training batches for iterations [start, start + count), shape (count, batch).

    The stream is the concatenation of one permutation of range(n) per pass, each drawn from
    its own seed, so any stretch of it can be computed without the ones before.
    """
    first = start * batch
    last = (start + count) * batch
    parts = []
    for epoch in range(first // n, (last - 1) // n + 1):
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        lo = max(first - epoch * n, 0)
        hi = min(last - epoch * n, n)
        parts.append(order[lo:hi])
    return np.concatenate(parts).astype(np.int32).reshape(count, batch)


@dataclasses.dataclass
class TrainResult:
    """What training did.

    Attributes:
        iterations: gradient steps done in total (including before a resume).
        curve: (iteration, mean loss since the previous point) at each logged point.
        seconds: wall time of this training session.
        steps_per_execution: gradient steps per compiled call.
        first_call_seconds: wall time of the first call, tracing and XLA compilation included.
        first_call_steps: steps done in that call.
        steady_seconds: time spent in calls of a chunk length that was already compiled (the
            first call of each length traces, and with XLA compiles, so it is left out).
        steady_steps: steps done in those calls.
        stop_reason: why training stopped: completed, early_stopping or max_minutes.
        best: (monitored metric, its best value, the iteration of that evaluation), when a
            validation split was evaluated during training.
        restored_from: the iteration whose weights the model ends with when they are the best
            evaluation's (restore_best); None when it ends with the last weights.
    """

    iterations: int
    curve: list[tuple[int, float]]
    seconds: float
    steps_per_execution: int
    first_call_seconds: float = 0.0
    first_call_steps: int = 0
    steady_seconds: float = 0.0
    steady_steps: int = 0
    stop_reason: str = ctl.COMPLETED
    best: tuple[str, float, int] | None = None
    restored_from: int | None = None

    @property
    def ms_per_iteration(self) -> float | None:
        """Steady-state time per gradient step in ms, or None when no call was steady (a run of
        one compiled call is all tracing and compiling: its rate would mislead)."""
        if self.steady_steps <= 0:
            return None
        return 1000.0 * self.steady_seconds / self.steady_steps


class Interrupted(Exception):
    """Training stopped on Ctrl-C; the state is consistent at `iteration`."""

    def __init__(self, iteration: int):
        super().__init__(f"interrupted at iteration {iteration}")
        self.iteration = iteration


class Trainer:
    """Trains a compiled model on a data bundle as a spec's `train` section says.

    Args:
        spec: the validated spec (its `train` section must not be null).
        built: the model.
        data: the data.
        callbacks: Keras callbacks (progress bar, tracking, ...).
        strategy: a tf.distribute strategy to train under (`train.distribute`); the model must
            have been built in its scope, and the trainer must be made in it too.
    """

    def __init__(self, spec: Spec, built: BuiltModel, data: DataBundle, callbacks=(), strategy=None):
        assert spec.train is not None
        self.strategy = strategy
        self.spec = spec
        self.train_spec = spec.train
        self.built = built
        self.model = built.model
        self.data = data
        self.callbacks = list(callbacks)
        n = len(data.train)
        self.plan = plan_iterations(spec, n)
        if self.plan.batch_size < spec.train.batch_size:
            log.warning("batch_size %d is larger than the %d training sequences; using %d",
                        spec.train.batch_size, n, self.plan.batch_size)
        self.total = self.plan.total
        warmup = spec.train.schedule.warmup
        if warmup >= self.total:
            raise TrainingError(f"train.schedule.warmup: {warmup} iterations of warm-up leave nothing of the "
                                f"{self.total} iterations of the run")
        self.controls = ctl.Controls(spec.train, self.plan, self.model,
                                     watch_validation=data.val is not None and self.plan.evaluates)
        self.optimizer = make_optimizer(spec.train, self.controls.rate)
        if spec.model.precision == "mixed_float16":
            # float16 gradients underflow without loss scaling.
            self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
        self.optimizer.build(self.model.trainable_variables)
        self.controls.attach(self.optimizer)
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.elapsed_before = 0.0  # training seconds of earlier sessions of a resumed run
        self.elapsed = 0.0  # training seconds so far, all sessions
        self.last_evaluated: int | None = None  # the iteration of the latest held-out evaluation
        split = data.train
        self._x = tf.constant(split.x)
        self._y = tf.constant(split.y)
        self._w = tf.constant(split.weights) if split.weights is not None else None
        self._l = tf.constant(split.lengths) if split.lengths is not None else None
        if strategy is not None and self.plan.batch_size % strategy.num_replicas_in_sync:
            raise TrainingError(f"a batch of {self.plan.batch_size} sequences does not split evenly over "
                                f"{strategy.num_replicas_in_sync} replicas (train.batch_size is the global batch)")
        self._step_fn = self._make_step_fn() if strategy is None else self._make_distributed_step_fn()
        self._stop_requested = False
        self.pending: list[float] = []  # losses since the last logged point

    # --- the compiled loop ---

    def _make_step_fn(self):
        model, optimizer, loss_name = self.model, self.optimizer, self.train_spec.loss
        variables = model.trainable_variables
        has_w, has_l = self._w is not None, self._l is not None
        iteration = self.iteration
        scale = None if self.built.target_scale is None else tf.constant(self.built.target_scale, tf.float32)

        def run_steps(x, y, w, lengths, indexes):
            count = tf.shape(indexes)[0]
            losses = tf.fill([count], tf.constant(float("nan"), tf.float32))
            for k in tf.range(count):
                rows = indexes[k]
                xb = tf.gather(x, rows)
                inputs = {"inputs": xb, "lengths": tf.gather(lengths, rows)} if has_l else xb
                with tf.GradientTape() as tape:
                    pred = model(inputs, training=True)
                    loss = loss_value(loss_name, tf.gather(y, rows), pred, tf.gather(w, rows) if has_w else None, scale)
                    scaled = optimizer.scale_loss(loss)  # the loss itself unless float16 needs scaling
                losses = tf.tensor_scatter_nd_update(losses, [[k]], [tf.cast(loss, tf.float32)])
                if not tf.math.is_finite(loss):
                    break  # leave the weights as they were before the bad step
                grads = tape.gradient(scaled, variables)
                optimizer.apply(grads, variables)
                iteration.assign_add(1)
            return losses

        return tf.function(run_steps, jit_compile=self.train_spec.jit_compile, reduce_retracing=True)

    def _make_distributed_step_fn(self):
        """The same steps under a tf.distribute strategy: each replica takes its share of the
        global batch, its loss is scaled by that share (so the all-reduced SUM of the gradients
        is the gradient of the global batch's mean, as on one device), and the optimizer's
        `apply` all-reduces and updates. As on one device, a step whose loss is not finite leaves
        the weights alone: the gradients are applied after the global loss is known.

        With `train.jit_compile`, XLA compiles each replica's forward and backward pass only: the
        update touches every device's copy of the variables, which one XLA program cannot.
        """
        from rnnflow.distribute import replica_device

        strategy, model, optimizer, loss_name = self.strategy, self.model, self.optimizer, self.train_spec.loss
        variables = model.trainable_variables
        has_w, has_l = self._w is not None, self._l is not None
        iteration = self.iteration
        replicas = strategy.num_replicas_in_sync

        def replica_grads(xb, yb, wb, lb):
            index = tf.distribute.get_replica_context().replica_id_in_sync_group
            per = tf.shape(xb)[0] // replicas
            part = tf.range(index * per, (index + 1) * per)
            x, y = tf.gather(xb, part), tf.gather(yb, part)
            inputs = {"inputs": x, "lengths": tf.gather(lb, part)} if has_l else x
            w = tf.gather(wb, part) if has_w else None
            with tf.GradientTape() as tape:
                pred = model(inputs, training=True)
                loss = loss_value(loss_name, y, pred, w)
                # This replica's share of the global batch (of its weights, when sequences are weighted).
                if has_w:
                    share = tf.reduce_sum(tf.cast(w, loss.dtype)) / tf.maximum(tf.reduce_sum(tf.cast(wb, loss.dtype)),
                                                                               1.0)
                else:
                    share = tf.cast(per, loss.dtype) / tf.cast(tf.shape(xb)[0], loss.dtype)
                part_loss = loss * share
                scaled = optimizer.scale_loss(part_loss)
            return tf.cast(part_loss, tf.float32), tape.gradient(scaled, variables)

        if self.train_spec.jit_compile:
            compiled = tf.function(replica_grads, jit_compile=True, reduce_retracing=True)

            def replica_grads(xb, yb, wb, lb):  # noqa: F811 - the compiled pass, placed on the replica's device
                with tf.device(replica_device()):
                    return compiled(xb, yb, wb, lb)

        def replica_apply(grads):
            optimizer.apply(grads, variables)

        def run_steps(x, y, w, lengths, indexes):
            count = tf.shape(indexes)[0]
            losses = tf.fill([count], tf.constant(float("nan"), tf.float32))
            for k in tf.range(count):
                rows = indexes[k]
                # The global batch is gathered once here; each replica takes its part of it.
                batch = (tf.gather(x, rows), tf.gather(y, rows), tf.gather(w, rows) if has_w else tf.zeros([0]),
                         tf.gather(lengths, rows) if has_l else tf.zeros([0], tf.int32))
                parts, grads = strategy.run(replica_grads, args=batch)
                loss = strategy.reduce(tf.distribute.ReduceOp.SUM, parts, axis=None)
                losses = tf.tensor_scatter_nd_update(losses, [[k]], [loss])
                if not tf.math.is_finite(loss):
                    break  # leave the weights as they were before the bad step
                strategy.run(replica_apply, args=(grads,))
                iteration.assign_add(1)
            return losses

        return tf.function(run_steps, reduce_retracing=True)

    # --- the Python loop ---

    def _handle_sigint(self, signum, frame):
        if self._stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_requested = True

    def run(self) -> TrainResult:
        """Train until the planned number of iterations (continuing from `self.iteration`), or until
        early stopping or `train.max_minutes` stops it; with restore_best the model ends with the
        best evaluation's weights.

        Raises:
            LossNotFinite: when the loss becomes NaN or infinite (names the iteration).
            Interrupted: on Ctrl-C, once the current chunk of steps has finished.
        """
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._handle_sigint)
        try:
            return self._loop()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _loop(self) -> TrainResult:
        plan, controls = self.plan, self.controls
        for cb in self.callbacks:
            if hasattr(cb, "set_model"):
                cb.set_model(self.model)  # as Keras' fit does: a callback may look at the model
            cb.on_train_begin({"total": plan.total, "start": int(self.iteration.numpy())})
        seed = self.spec.seed
        n = len(self.data.train)
        curve: list[tuple[int, float]] = []
        pending = self.pending
        started = time.perf_counter()
        first_call: tuple[float, int] | None = None
        compiled: set[int] = set()  # chunk lengths already traced (each new one traces again)
        steady_seconds, steady_steps = 0.0, 0
        done = int(self.iteration.numpy())
        first = done
        reason = ctl.COMPLETED
        while done < plan.total:
            self.elapsed = self.elapsed_before + time.perf_counter() - started
            if self._stop_requested:
                raise Interrupted(done)
            stop = plan.next_stop(done)
            indexes = batch_indices(seed, n, plan.batch_size, done, stop - done, self.train_spec.shuffle)
            call_started = time.perf_counter()
            losses = self._step_fn(self._x, self._y, self._w, self._l, tf.constant(indexes)).numpy()
            if first_call is None:  # tracing and compiling happen in the first call
                first_call = (time.perf_counter() - started, stop - done)
            if stop - done in compiled:
                steady_seconds += time.perf_counter() - call_started
                steady_steps += stop - done
            compiled.add(stop - done)
            bad = np.flatnonzero(~np.isfinite(losses))
            valid = losses[: bad[0]] if bad.size else losses
            halt = None
            # The chunk returns every step's loss: log points fall where the spec says, not only
            # where chunks end.
            for offset, value in enumerate(valid.tolist(), start=done + 1):
                pending.append(value)
                logs: dict[str, float] = {}
                if offset == stop:
                    out_of_time = self._out_of_time(started)
                    # Also evaluate where time runs out: the last weights are a candidate for the best.
                    if plan.evaluates_at(offset) or (out_of_time and plan.evaluates):
                        logs.update(self.evaluate_held_out())
                        if controls.after_evaluation(offset, logs):
                            halt = ctl.EARLY_STOPPING
                    if halt is None and out_of_time and offset < plan.total:
                        halt = ctl.MAX_MINUTES
                if offset % plan.log_every == 0 or offset == plan.total or halt:
                    logs["loss"] = float(np.mean(pending))
                    curve.append((offset, logs["loss"]))
                    pending.clear()
                if logs:
                    logs["learning_rate"] = controls.rate_at(offset)
                    for cb in self.callbacks:
                        cb.on_train_batch_end(offset, logs)
                if offset % plan.steps_per_epoch == 0:
                    for cb in self.callbacks:
                        cb.on_epoch_end(offset // plan.steps_per_epoch, logs)
            if bad.size:
                at = done + int(bad[0]) + 1
                raise LossNotFinite(f"the loss became {losses[bad[0]]} at iteration {at}; training stopped there "
                                    "(try a lower train.learning_rate or train.clip_norm)", at)
            done = int(self.iteration.numpy())
            if halt is not None:
                reason = halt
                break
        seconds = time.perf_counter() - started
        self.elapsed = self.elapsed_before + seconds
        restored = controls.restore_best()
        for cb in self.callbacks:
            cb.on_train_end({"iterations": done, "seconds": seconds, "trained": done - first})
        return TrainResult(done, curve, seconds, plan.steps_per_execution, *(first_call or (0.0, 0)),
                           steady_seconds, steady_steps, stop_reason=reason, best=controls.best,
                           restored_from=restored)

    def _out_of_time(self, started: float) -> bool:
        """Whether `train.max_minutes` of training (over all sessions of the run) have passed."""
        limit = self.train_spec.max_minutes
        return limit is not None and self.elapsed_before + time.perf_counter() - started >= 60.0 * limit

    @property
    def held_out_name(self) -> str:
        """The split evaluated during training: `val` when there is one, else `test` (only reported)."""
        return "val" if self.data.val is not None else "test"

    def evaluate_held_out(self) -> dict[str, float]:
        """Loss and metrics on the split evaluated during training, named `val_*` or `test_*`."""
        split = self.data.val if self.data.val is not None else self.data.test
        if split is None:
            return {}
        self.last_evaluated = int(self.iteration.numpy())
        return {f"{self.held_out_name}_{k}": v for k, v in evaluate(self.built, split, self.train_spec).items()}

    # --- checkpoints ---

    def state(self) -> dict[str, np.ndarray]:
        """The arrays needed to continue: model variables (with RNG states), optimizer (with the
        schedule's position), iteration, and the controls' arrays (the best weights)."""
        arrays = {f"model/{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.variables)}
        arrays.update({f"optimizer/{i}": np.asarray(v.numpy()) for i, v in enumerate(self.optimizer.variables)})
        arrays["iteration"] = np.asarray(self.iteration.numpy())
        arrays.update(self.controls.state()[1])
        return arrays

    def state_meta(self) -> dict[str, Any]:
        """The rest of the state, as JSON-ready data: losses since the last logged point (the first
        point after a resume averages them too), training seconds so far, the controls' counters."""
        return {"pending_losses": list(self.pending), "elapsed_seconds": self.elapsed,
                "controls": self.controls.state()[0]}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        """Restore a `state()` (and its `state_meta()`).

        Raises:
            TrainingError: when the checkpoint does not fit this model.
        """
        model_vars, opt_vars = self.model.variables, self.optimizer.variables
        expected = len(model_vars) + len(opt_vars) + 1
        found = sum(1 for k in arrays if k.startswith(("model/", "optimizer/")) or k == "iteration")
        if found != expected:
            raise TrainingError(f"the checkpoint holds {found} arrays, this model needs {expected}")
        for prefix, variables in (("model", model_vars), ("optimizer", opt_vars)):
            for i, var in enumerate(variables):
                value = arrays[f"{prefix}/{i}"]
                if tuple(value.shape) != tuple(var.shape):
                    raise TrainingError(f"checkpoint {prefix} variable {i} has shape {value.shape}, "
                                        f"the model's {var.path} has {tuple(var.shape)}")
                var.assign(value)
        self.iteration.assign(int(arrays["iteration"]))
        meta = meta or {}
        self.pending = list(meta.get("pending_losses", []))
        self.elapsed_before = self.elapsed = float(meta.get("elapsed_seconds", 0.0))
        self.controls.load_state(meta.get("controls", {}), arrays)


def evaluate(built: BuiltModel, split: Split, train: TrainSpec) -> dict[str, float]:
    """Loss and metrics of the model on a split: the spec's, and those of its task (`rnnflow.metrics`)."""
    pred = built.predict(split)
    results = metric_values(list(train.metrics), train.loss, split, pred, train.top_k, built.target_scale)
    results.update(task_metrics(train.loss, split, pred))
    return results
