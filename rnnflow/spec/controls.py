"""The training controls of the `train:` section: the learning-rate schedule and early stopping.

The classes only describe; `rnnflow.controls` makes the Keras objects (learning-rate schedules,
EarlyStopping, ReduceLROnPlateau) that the trainer drives. Durations are counted in iterations
(gradient steps); patience in evaluations (`evaluate.every` / `every_epoch`).
"""

from typing import Literal

import pydantic
from pydantic import Field

from rnnflow.spec.base import Section, at, pattern
from rnnflow.spec.registry import SCHEDULES

MONITOR = pattern(r"^val_[a-z0-9_]+$",
                  "a validation metric such as val_loss or val_accuracy (the test split never chooses anything)")

Mode = Literal["min", "max", "auto"]


def direction(monitor: str, mode: str) -> str:
    """`min` or `max`: the mode as given, or for `auto` max for accuracy-like metrics, else min."""
    if mode != "auto":
        return mode
    return "max" if monitor.endswith("accuracy") else "min"


# --------------------------------------------------------------------------------------- schedules


class ScheduleSpec(Section):
    """Settings every learning-rate schedule has."""

    type: str
    warmup: int = Field(
        0, ge=0, le=1_000_000_000,
        description="Iterations of linear warm-up from 0 to the schedule's first rate; the schedule's "
        "own clock starts after them (as Keras' CosineDecay warms up).",
    )


@SCHEDULES.register
class ConstantSchedule(ScheduleSpec):
    """`train.learning_rate` throughout."""

    type: Literal["constant"] = "constant"


class DecayingSchedule(ScheduleSpec):
    """A schedule that decays over a number of iterations."""

    decay_steps: int | None = Field(
        None, gt=0, le=1_000_000_000, description="Iterations of the decay; default: the whole run after the warm-up."
    )


@SCHEDULES.register
class ExponentialSchedule(DecayingSchedule):
    """learning_rate * decay_rate ** (iteration / decay_steps) (Keras `ExponentialDecay`)."""

    type: Literal["exponential"] = "exponential"
    decay_rate: float = Field(0.1, gt=0, lt=1, description="The factor over decay_steps iterations.")
    staircase: bool = Field(False, description="Decay in whole steps of decay_steps iterations.")


@SCHEDULES.register
class StepSchedule(ScheduleSpec):
    """Multiply the rate by `factor` at each boundary (Keras `PiecewiseConstantDecay`)."""

    type: Literal["step"] = "step"
    factor: float = Field(0.1, gt=0, lt=1, description="Multiplies the rate at each boundary.")
    every: int | None = Field(
        None, gt=0, le=1_000_000_000,
        description="A boundary every this many iterations (default: the run in three equal parts).",
    )
    boundaries: list[int] | None = Field(
        None, min_length=1, description="The iterations (after the warm-up) where the rate drops, ascending."
    )

    @pydantic.model_validator(mode="after")
    def _one_way(self) -> "StepSchedule":
        if self.every is not None and self.boundaries is not None:
            raise at("boundaries", "give every or boundaries, not both")
        if self.boundaries is not None:
            for i, (a, b) in enumerate(zip([0, *self.boundaries], self.boundaries)):
                if b <= a:
                    raise at(f"boundaries[{i}]", f"boundaries are ascending iterations after 0 (got {b} after {a})")
        return self


@SCHEDULES.register
class CosineSchedule(DecayingSchedule):
    """Cosine decay from learning_rate to alpha * learning_rate (Keras `CosineDecay`)."""

    type: Literal["cosine"] = "cosine"
    alpha: float = Field(0.0, ge=0, le=1, description="The final rate as a fraction of learning_rate.")


@SCHEDULES.register
class PlateauSchedule(ScheduleSpec):
    """Multiply the rate by `factor` when a validation metric stops improving (Keras `ReduceLROnPlateau`)."""

    type: Literal["plateau"] = "plateau"
    monitor: str = Field("val_loss", pattern=MONITOR, description="The validation metric watched.")
    mode: Mode = Field("auto", description="min, max, or auto (max for accuracy-like metrics, else min).")
    factor: float = Field(0.1, gt=0, lt=1, description="Multiplies the rate at each reduction.")
    patience: int = Field(5, ge=0, le=1_000_000, description="Evaluations without improvement before a reduction.")
    min_delta: float = Field(1e-4, ge=0, description="A smaller change is no improvement.")
    cooldown: int = Field(0, ge=0, le=1_000_000, description="Evaluations to wait after a reduction.")
    min_lr: float = Field(0.0, ge=0, description="The rate never goes below this.")


@SCHEDULES.register
class OneCycleSchedule(ScheduleSpec):
    """Smith's 1cycle: from learning_rate / div_factor up to learning_rate (cosine), then down to
    learning_rate / (div_factor * final_div_factor) by the end of the run (PyTorch's OneCycleLR)."""

    type: Literal["one_cycle"] = "one_cycle"
    pct_start: float = Field(0.3, gt=0, lt=1, description="The fraction of the run spent rising.")
    div_factor: float = Field(25.0, ge=1, description="The starting rate is learning_rate / div_factor.")
    final_div_factor: float = Field(1e4, ge=1, description="The final rate is the starting rate / final_div_factor.")


AnyScheduleSpec = SCHEDULES.union()


# ---------------------------------------------------------------------------------- early stopping


class EarlyStoppingSpec(Section):
    """Stop when a validation metric stops improving, and keep the best evaluation's weights
    (Keras `EarlyStopping`)."""

    monitor: str = Field("val_loss", pattern=MONITOR, description="The validation metric watched.")
    mode: Mode = Field("auto", description="min, max, or auto (max for accuracy-like metrics, else min).")
    patience: int | None = Field(
        10, ge=1, le=1_000_000,
        description="Evaluations without improvement before training stops; null never stops early "
        "(the best evaluation is still kept with restore_best).",
    )
    min_delta: float = Field(0.0, ge=0, description="A smaller change is no improvement.")
    restore_best: bool = Field(
        True, description="End with the best evaluation's weights: the final metrics, predictions and "
        "logged model all come from them."
    )
