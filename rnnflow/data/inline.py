"""Small arrays written in the spec itself, e.g. the two-step batch of a hand-built RNN."""

import math
from typing import Literal

import pydantic
from pydantic import Field

from rnnflow.data.base import DataBundle, LoadContext, SourceSpec, Split, Task
from rnnflow.spec.registry import SOURCES
from rnnflow.spec.base import at

_MAX_VALUES = 1_000_000
_FLOAT32_MAX = 3.4028234663852886e38  # the arrays are float32: a larger number would become inf


def nested_shape(value, key: str) -> tuple[int, ...]:
    """The shape of a rectangular nested list of finite numbers.

    Raises:
        ValueError: located at `key`, or at the item (`key[i][j]`) that is wrong, when the list is
            ragged or empty, or holds something other than a finite float32 number.
    """
    if isinstance(value, bool) or not isinstance(value, (list, int, float)):
        found = "null" if value is None else "true/false" if isinstance(value, bool) else (
            "a string" if isinstance(value, str) else "a mapping")
        raise at(key, f"must be a number or a list of numbers, not {found}")
    if isinstance(value, float) and math.isnan(value):
        raise at(key, "must be a number, not NaN")
    if not isinstance(value, list):
        if abs(value) > _FLOAT32_MAX:
            shown = f"{value:.3g}" if isinstance(value, float) else f"an integer of {len(str(abs(value)))} digits"
            raise at(key, f"must be a finite number within ±3.4e38 (the arrays are float32), got {shown}")
        return ()
    if not value:
        raise at(key, "must not be empty")
    shapes = {nested_shape(item, f"{key}[{i}]") for i, item in enumerate(value)}
    if len(shapes) != 1:
        raise at(key, "is ragged: every row must have the same length")
    return (len(value), *shapes.pop())


def _sequence_targets(inputs: list, targets: list, time_major: bool, target_type: str) -> bool:
    """Whether inline targets give a value per step: (batch, time[, dim]) rather than (batch[, dim])."""
    steps = len(inputs) if time_major else len(inputs[0])
    depth = len(nested_shape(targets, "targets"))
    if target_type == "classification":
        return depth == 2
    return depth == 3 or (depth == 2 and len(targets[0]) == steps)


@SOURCES.register
class InlineSource(SourceSpec):
    """Arrays given in the spec: inputs (batch, time, features), optional targets and lengths.

    With `time_major: true` the inputs are written step by step ([time][batch][features]), the
    way a hand-written TF1 graph feeds X0, X1, ... Evaluation uses the same arrays.
    """

    type: Literal["inline"] = "inline"
    inputs: list = Field(..., description="Input values, (batch, time, features) or time-major.")
    time_major: bool = Field(False, description="Inputs are written as [time][batch][features].")
    targets: list | None = Field(None, description="Targets: per step (batch, time[, dim]) or per sequence.")
    lengths: list[int] | None = Field(None, description="Valid steps per sequence (padded inputs).")
    target_type: Literal["regression", "classification"] = Field(
        "regression", description="Whether targets are values or class indexes."
    )
    classes: int | None = Field(None, gt=1, le=100_000, description="Number of classes (classification).")

    @pydantic.model_validator(mode="after")
    def _check_shapes(self) -> "InlineSource":
        shape = nested_shape(self.inputs, "inputs")
        if len(shape) != 3:
            raise at("inputs", f"must be 3-dimensional, got {len(shape)} dimension(s)")
        batch, steps = (shape[1], shape[0]) if self.time_major else (shape[0], shape[1])
        if batch * steps * shape[2] > _MAX_VALUES:
            raise at("inputs", f"too many values for an inline source (over {_MAX_VALUES})")
        if self.lengths is not None:
            if len(self.lengths) != batch:
                raise at("lengths", f"gives {len(self.lengths)} lengths for a batch of {batch}")
            for i, length in enumerate(self.lengths):
                if not 1 <= length <= steps:
                    raise at(f"lengths[{i}]", f"must be between 1 and {steps} (got {length})")
        if self.target_type != "classification" and self.classes is not None:
            raise at("classes", "classes is used only with target_type: classification")
        if self.targets is not None:
            target_shape = nested_shape(self.targets, "targets")
            if target_shape[0] != batch:
                raise at("targets", f"has {target_shape[0]} rows for a batch of {batch}")
            if self.target_type == "classification":
                self._check_classes(target_shape, steps)
            else:
                if len(target_shape) > 3:
                    raise at("targets", "regression targets are (batch[, dim]), (batch, time) or "
                             f"(batch, time, dim); these have {len(target_shape)} dimensions")
                if len(target_shape) == 3 and target_shape[1] != steps:
                    raise at("targets", f"give {target_shape[1]} steps per sequence for inputs of {steps} steps")
        elif self.target_type == "classification":
            raise at("targets", "classification needs targets")
        return self

    def _check_classes(self, target_shape: tuple[int, ...], steps: int) -> None:
        if self.classes is None:
            raise at("classes", "give the number of classes of classification targets")
        if len(target_shape) > 2:
            raise at("targets", "classification targets are class indexes, one per sequence (batch) or "
                     f"one per step (batch, time); these have {len(target_shape)} dimensions")
        if len(target_shape) == 2 and target_shape[1] != steps:
            raise at("targets", f"give {target_shape[1]} steps per sequence for inputs of {steps} steps")
        rows = self.targets if len(target_shape) == 2 else [self.targets]
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                if not isinstance(value, int) or not 0 <= value < self.classes:
                    where = f"targets[{i}][{j}]" if len(target_shape) == 2 else f"targets[{j}]"
                    raise at(where, f"must be a class index, an integer from 0 to {self.classes - 1} (got {value!r})")

    @property
    def task(self) -> Task:
        return self.target_type

    @property
    def has_targets(self) -> bool:
        return self.targets is not None

    @property
    def sequence_targets(self) -> bool | None:
        if self.targets is None:
            return None
        return _sequence_targets(self.inputs, self.targets, self.time_major, self.target_type)

    def load(self, context: LoadContext) -> DataBundle:
        import numpy as np

        x = np.asarray(self.inputs, dtype=np.float32)
        if self.time_major:
            x = np.transpose(x, (1, 0, 2))
        lengths = None if self.lengths is None else np.asarray(self.lengths, dtype=np.int32)
        y = None
        sequence_targets = True if self.targets is None else self.sequence_targets
        output_size = x.shape[2]
        if self.targets is not None:
            if self.target_type == "classification":
                y = np.asarray(self.targets, dtype=np.int32)
                output_size = int(self.classes)
            else:
                y = np.asarray(self.targets, dtype=np.float32)
                if y.ndim == 2 and sequence_targets:
                    y = y[:, :, None]
                output_size = y.shape[-1] if y.ndim > 1 else 1
                if y.ndim == 1:
                    y = y[:, None]
        split = Split(x=x, y=y, lengths=lengths)
        return DataBundle(
            train=split,
            test=split,
            task=self.target_type,
            output_size=int(output_size),
            sequence_targets=sequence_targets,
            info={"batch": x.shape[0], "steps": x.shape[1], "features": x.shape[2]},
        )
