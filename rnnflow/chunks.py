"""How many iterations a spec trains, in which chunks of compiled steps, and when Python looks in
between (log points, evaluations, epoch ends).

Pure arithmetic on the spec, shared by the trainer and `rnnflow show` (which must not guess). The
learning rate over training is another matter: `train.schedule`, in `rnnflow.controls`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.spec import Spec

# Gradient steps per compiled call when the spec does not say: enough to make the per-call
# overhead vanish (measured: 100 steps per call ran the sine forecast 2x faster than 1 under XLA).
MAX_STEPS_PER_EXECUTION = 100


@dataclasses.dataclass(frozen=True)
class IterationPlan:
    """The iterations of a spec on a training set of a given size, and how they are chunked.

    Attributes:
        batch_size: sequences per step (the spec's, or the whole set when it is smaller).
        steps_per_epoch: steps in one pass over the training set.
        total: gradient steps in all.
        log_every: steps between logged loss points.
        steps_per_execution: steps per call of the compiled training function.
        eval_every: evaluate the held-out split every this many steps (None: not by count).
        eval_every_epoch: evaluate it at every epoch end.
    """

    batch_size: int
    steps_per_epoch: int
    total: int
    log_every: int
    steps_per_execution: int
    eval_every: int | None
    eval_every_epoch: bool

    def next_stop(self, done: int) -> int:
        """The iteration where the chunk starting at `done` ends."""
        marks = [self.total, done + self.steps_per_execution]
        if self.eval_every:
            marks.append((done // self.eval_every + 1) * self.eval_every)
        if self.eval_every_epoch:
            marks.append((done // self.steps_per_epoch + 1) * self.steps_per_epoch)
        return min(marks)

    @property
    def evaluates(self) -> bool:
        """Whether the held-out split is evaluated during training at all."""
        return bool(self.eval_every) or self.eval_every_epoch

    def evaluates_at(self, iteration: int) -> bool:
        """Whether the held-out split is evaluated after `iteration`: every `eval_every` iterations,
        at epoch ends (`eval_every_epoch`), and at the end of the run when either is set."""
        return bool(self.eval_every and iteration % self.eval_every == 0) or (
            self.eval_every_epoch and iteration % self.steps_per_epoch == 0
        ) or (self.evaluates and iteration == self.total)


def default_steps_per_execution(total: int, periods: list[int]) -> int:
    """The largest chunk of at most MAX_STEPS_PER_EXECUTION steps that divides the run and every
    evaluation period, so every chunk has the same length (XLA compiles once per length)."""
    whole = math.gcd(total, *periods) if periods else total
    divisor = max(d for d in range(1, min(MAX_STEPS_PER_EXECUTION, whole) + 1) if whole % d == 0)
    if divisor >= 20 or whole <= MAX_STEPS_PER_EXECUTION:
        return divisor
    return min(MAX_STEPS_PER_EXECUTION, total)  # an awkward length: one more compile for the rest


def plan_iterations(spec: Spec, train_size: int) -> IterationPlan:
    """The iteration plan of `spec` (whose `train` section must not be null) on `train_size` sequences."""
    train = spec.train
    assert train is not None
    batch = min(train.batch_size, train_size)
    per_epoch = math.ceil(train_size / batch)
    kind, count = train.budget
    total = count * per_epoch if kind == "epochs" else count
    log_every = train.log_every or max(1, total // 100)
    every, every_epoch = spec.evaluate.every, spec.evaluate.every_epoch
    periods = [p for p in (every, per_epoch if every_epoch else None) if p]
    per_call = train.steps_per_execution or default_steps_per_execution(total, periods)
    return IterationPlan(batch, per_epoch, total, log_every, per_call, every, every_epoch)
