"""Training controls: the learning rate over training, early stopping, the best weights, a time budget.

Keras does the work. The learning rate is a Keras `LearningRateSchedule` (ExponentialDecay,
PiecewiseConstantDecay, CosineDecay) that the optimizer evaluates at its own iteration counter
inside the compiled training function, so the schedule's position is part of the optimizer's
variables. At each evaluation during training rnnflow calls Keras' own `EarlyStopping` and
`ReduceLROnPlateau` callbacks with the evaluation's metrics (as `fit` would at an epoch end,
the iteration standing in for the epoch). rnnflow adds only what Keras lacks: a linear warm-up
around any schedule (`Warmup`, the warm-up formula of Keras' CosineDecay) and 1cycle
(`OneCycle`), and the callbacks' counters and best weights in checkpoints.
"""

from __future__ import annotations

import math
import types
from typing import TYPE_CHECKING, Any

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402
from keras.optimizers.schedules import LearningRateSchedule  # noqa: E402

from rnnflow.spec.controls import direction  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.chunks import IterationPlan
    from rnnflow.spec.spec import TrainSpec

# Why training stopped (the run's `rnnflow.stop_reason` tag).
COMPLETED, EARLY_STOPPING, MAX_MINUTES, NAN, INTERRUPTED = (
    "completed", "early_stopping", "max_minutes", "nan", "interrupted")


def _rate(schedule: Any, step):
    """A schedule's rate at `step`; a fixed rate or a variable as it is."""
    if isinstance(schedule, LearningRateSchedule):
        return schedule(step)
    return ops.cast(ops.convert_to_tensor(schedule), "float32")


@keras.saving.register_keras_serializable(package="rnnflow")
class Warmup(LearningRateSchedule):
    """A linear warm-up from 0 over `steps` iterations to the first rate of `after`, then `after`
    with its clock starting at the end of the warm-up.

    The same warm-up as Keras' `CosineDecay(0.0, ..., warmup_target=..., warmup_steps=...)`, for
    any schedule (Keras' other schedules have none).

    Args:
        after: the rate after the warm-up: a number, a Keras variable, or a LearningRateSchedule.
        steps: iterations of warm-up (> 0).
    """

    def __init__(self, after, steps: int, name: str = "Warmup"):
        super().__init__()
        if isinstance(after, dict):
            after = keras.optimizers.schedules.deserialize(after)
        self.after = after
        self.steps = int(steps)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        steps = float(self.steps)
        target = ops.cast(_rate(self.after, ops.zeros((), "float32")), "float32")
        later = ops.cast(_rate(self.after, ops.maximum(step - steps, 0.0)), "float32")
        return ops.where(step < steps, target * step / steps, later)

    def get_config(self):
        after = self.after
        if isinstance(after, LearningRateSchedule):
            after = keras.optimizers.schedules.serialize(after)
        elif not isinstance(after, (int, float)):
            after = float(np.asarray(keras.ops.convert_to_numpy(after)))
        return {"after": after, "steps": self.steps, "name": self.name}


@keras.saving.register_keras_serializable(package="rnnflow")
class OneCycle(LearningRateSchedule):
    """Smith's 1cycle policy, as PyTorch's `OneCycleLR` computes it (cosine annealing, two phases).

    From max_rate / div_factor up to max_rate over the first `pct_start` of `total_steps`, then
    down to max_rate / (div_factor * final_div_factor) at the last step. Keras has no such schedule.

    Args:
        max_rate: the peak rate.
        total_steps: iterations of the cycle.
        pct_start: the fraction of the cycle spent rising.
        div_factor: the first rate is max_rate / div_factor.
        final_div_factor: the last rate is the first rate / final_div_factor.
    """

    def __init__(self, max_rate: float, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, name: str = "OneCycle"):
        super().__init__()
        self.max_rate = float(max_rate)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name

    def __call__(self, step):
        first = self.max_rate / self.div_factor
        last = first / self.final_div_factor
        peak_at = self.pct_start * self.total_steps - 1.0  # PyTorch's end of the first phase
        end = float(self.total_steps - 1)
        step = ops.clip(ops.cast(step, "float32"), 0.0, end)

        def anneal(start, stop, fraction):
            return stop + (start - stop) / 2.0 * (ops.cos(math.pi * fraction) + 1.0)

        # A first phase shorter than one step starts at the peak.
        rising = anneal(first, self.max_rate, step / max(peak_at, 1e-12))
        falling = anneal(self.max_rate, last, (step - peak_at) / max(end - peak_at, 1e-12))
        return ops.where(step <= peak_at, rising, falling)

    def get_config(self):
        return {"max_rate": self.max_rate, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor, "name": self.name}


def learning_rate(train: TrainSpec, total: int, plateau_rate=None):
    """What the optimizer gets as its learning rate for `train.schedule` over `total` iterations: a
    float (constant, or plateau without warm-up: Keras keeps it in a variable) or a schedule.

    Args:
        train: the train section.
        total: the iterations of the run.
        plateau_rate: for `plateau` with a warm-up, the variable ReduceLROnPlateau lowers.
    """
    schedule = train.schedule
    rate = float(train.learning_rate)
    warmup = schedule.warmup
    span = max(total - warmup, 1)  # the schedule's own clock runs after the warm-up
    kind = schedule.type
    if kind == "cosine":
        decay = schedule.decay_steps or span
        if warmup:
            return keras.optimizers.schedules.CosineDecay(0.0, decay, alpha=schedule.alpha, warmup_target=rate,
                                                          warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(rate, decay, alpha=schedule.alpha)
    if kind == "exponential":
        after: Any = keras.optimizers.schedules.ExponentialDecay(rate, schedule.decay_steps or span,
                                                                 schedule.decay_rate, staircase=schedule.staircase)
    elif kind == "step":
        boundaries = step_boundaries(schedule, span)
        values = [rate * schedule.factor**i for i in range(len(boundaries) + 1)]
        after = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values) if boundaries else rate
    elif kind == "one_cycle":
        after = OneCycle(rate, span, schedule.pct_start, schedule.div_factor, schedule.final_div_factor)
    elif kind == "plateau":
        after = plateau_rate if warmup else rate
    else:
        assert kind == "constant", kind
        after = rate
    return Warmup(after, warmup) if warmup else after


def step_boundaries(schedule, span: int) -> list[int]:
    """The iterations (after the warm-up) where a `step` schedule drops, within `span`."""
    if schedule.boundaries is not None:
        return list(schedule.boundaries)
    every = schedule.every or max(span // 3, 1)
    return list(range(every, span, every))[: 1000]


class _RateHandle:
    """What ReduceLROnPlateau reads and sets as `model.optimizer.learning_rate`: the plateau's rate
    (a variable that a warm-up schedule reads)."""

    def __init__(self, variable):
        self.variable = variable

    @property
    def learning_rate(self):
        return self.variable

    @learning_rate.setter
    def learning_rate(self, value):
        self.variable.assign(value)


class Controls:
    """The controls of one training run: the learning rate, the best evaluation (and early
    stopping on it), plateau reductions and the time budget.

    Args:
        train: the train section.
        plan: the iteration plan.
        model: the Keras model (whose weights the best evaluation keeps).
        watch_validation: whether evaluations during training are of a validation split (only
            then does anything choose: early stopping, plateau, the best weights).
    """

    def __init__(self, train: TrainSpec, plan: IterationPlan, model: keras.Model, watch_validation: bool):
        self.train = train
        self.plan = plan
        self.model = model
        schedule = train.schedule
        self.plateau_variable = None
        if schedule.type == "plateau" and schedule.warmup:
            self.plateau_variable = keras.Variable(float(train.learning_rate), dtype="float32", trainable=False,
                                                   name="plateau_learning_rate")
        self.rate = learning_rate(train, plan.total, self.plateau_variable)
        self.optimizer = None
        self.plateau = None
        stopping = train.early_stopping
        self.tracker = None
        if watch_validation:
            # Keras' EarlyStopping also when nothing stops early: it keeps the best evaluation.
            monitor = stopping.monitor if stopping is not None else "val_loss"
            mode = direction(monitor, stopping.mode if stopping is not None else "auto")
            patience = stopping.patience if stopping is not None and stopping.patience is not None else math.inf
            self.tracker = keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=patience,
                min_delta=stopping.min_delta if stopping is not None else 0.0,
                restore_best_weights=bool(stopping is not None and stopping.restore_best))
            self.tracker.set_model(model)
            self.tracker.on_train_begin()

    @property
    def restores_best(self) -> bool:
        return self.tracker is not None and self.tracker.restore_best_weights

    def attach(self, optimizer: keras.optimizers.Optimizer) -> None:
        """Connect the optimizer built with `self.rate` (plateau lowers its rate)."""
        self.optimizer = optimizer
        schedule = self.train.schedule
        if schedule.type == "plateau":
            self.plateau = keras.callbacks.ReduceLROnPlateau(
                monitor=schedule.monitor, mode=direction(schedule.monitor, schedule.mode), factor=schedule.factor,
                patience=schedule.patience, min_delta=schedule.min_delta, cooldown=schedule.cooldown,
                min_lr=schedule.min_lr)
            target = optimizer if self.plateau_variable is None else _RateHandle(self.plateau_variable)
            self.plateau.set_model(types.SimpleNamespace(optimizer=target))
            self.plateau.on_train_begin()

    def rate_at(self, iteration: int) -> float:
        """The learning rate after `iteration` steps: the rate of the next step."""
        if isinstance(self.rate, LearningRateSchedule):
            return float(np.asarray(ops.convert_to_numpy(self.rate(iteration))))
        return float(np.asarray(ops.convert_to_numpy(self.optimizer.learning_rate)))

    def after_evaluation(self, iteration: int, logs: dict[str, float]) -> bool:
        """Let plateau and early stopping see an evaluation; True when training should stop."""
        if self.plateau is not None:
            self.plateau.on_epoch_end(iteration, dict(logs))
        if self.tracker is None:
            return False
        self.model.stop_training = False
        self.tracker.on_epoch_end(iteration, dict(logs))
        return bool(self.model.stop_training)

    @property
    def best(self) -> tuple[str, float, int] | None:
        """(monitor, best value, iteration of the best evaluation), once there was an evaluation."""
        tracker = self.tracker
        if tracker is None or tracker.best is None:
            return None
        return tracker.monitor, float(tracker.best), int(tracker.best_epoch)

    def restore_best(self) -> int | None:
        """Put the best evaluation's weights back (with restore_best); the iteration they are from."""
        if not self.restores_best or self.tracker.best_weights is None:
            return None
        self.tracker.on_train_end()  # Keras' EarlyStopping sets the best weights
        return int(self.tracker.best_epoch)

    # --- checkpoints ---

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(counters as JSON-ready data, arrays): what a resumed run needs to decide the same way."""
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        if self.tracker is not None:
            t = self.tracker
            meta["early_stopping"] = {"wait": t.wait, "stopped_epoch": t.stopped_epoch, "best_epoch": t.best_epoch,
                                      "best": None if t.best is None else float(t.best)}
            for i, value in enumerate(t.best_weights or []):
                arrays[f"controls/best/{i}"] = np.asarray(value)
        if self.plateau is not None:
            p = self.plateau
            meta["plateau"] = {"wait": p.wait, "cooldown_counter": p.cooldown_counter,
                               "best": None if p.best is None else float(p.best)}
        if self.plateau_variable is not None:
            arrays["controls/plateau_rate"] = np.asarray(self.plateau_variable.numpy())
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore a `state()`."""
        if self.tracker is not None and "early_stopping" in meta:
            for key, value in meta["early_stopping"].items():
                setattr(self.tracker, key, value)
            best: list[np.ndarray] = []
            while f"controls/best/{len(best)}" in arrays:
                best.append(arrays[f"controls/best/{len(best)}"])
            self.tracker.best_weights = best or None
        if self.plateau is not None and "plateau" in meta:
            for key, value in meta["plateau"].items():
                setattr(self.plateau, key, value)
        if self.plateau_variable is not None and "controls/plateau_rate" in arrays:
            self.plateau_variable.assign(arrays["controls/plateau_rate"])
