"""The `search:` section of a pipeline run: a space over spec key paths, a metric, an algorithm.

```yaml
runs:
  - spec: ../specs/gru_forecast.yaml
    search:
      space:
        train.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
        model.cells[0].units: {type: int, low: 16, high: 128}
        model.cells[0].layers: {type: choice, values: [1, 2]}
      metric: val_loss          # a validation metric: the test split never chooses anything
      mode: min
      num_samples: 20
      algorithm: tpe            # random | tpe
      scheduler: asha           # stop bad trials early (optional)
```

Only what a search *is*; running one is `rnnflow.search`. Nothing here imports Optuna.
"""

from typing import Any, Literal

import pydantic
from pydantic import Field

from rnnflow.spec.base import Section, at
from rnnflow.spec.registry import DIMENSIONS

MAX_SAMPLES = 1000


@DIMENSIONS.register
class UniformSpace(Section):
    """A float drawn uniformly from [low, high]."""

    type: Literal["uniform"] = Field(..., description="uniform")
    low: float = Field(..., description="The smallest value.")
    high: float = Field(..., description="The largest value.")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "UniformSpace":
        _check_range(self.low, self.high)
        return self

    def corners(self) -> list[Any]:
        """The values every trial's spec must accept, checked before anything runs."""
        return [self.low, self.high]


def _check_range(low: float, high: float) -> None:
    if not low < high:
        raise at("high", f"must be greater than low ({low}), got {high}")


@DIMENSIONS.register
class LogUniformSpace(UniformSpace):
    """A float drawn uniformly on a log scale from [low, high] (learning rates)."""

    type: Literal["loguniform"] = Field(..., description="loguniform")
    low: float = Field(..., gt=0, description="The smallest value (> 0).")


@DIMENSIONS.register
class IntSpace(Section):
    """An integer from low to high (both included), in steps of `step`."""

    type: Literal["int"] = Field(..., description="int")
    low: int = Field(..., description="The smallest value.")
    high: int = Field(..., description="The largest value.")
    step: int = Field(1, ge=1, description="Distance between the values.")
    log: bool = Field(False, description="Draw on a log scale (step must be 1; low >= 1).")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "IntSpace":
        _check_range(self.low, self.high)
        if (self.high - self.low) % self.step:
            raise at("high", f"high - low must be a multiple of step ({self.step})")
        if self.log and (self.step != 1 or self.low < 1):
            raise at("log", "a log scale needs step: 1 and low >= 1")
        return self

    def corners(self) -> list[Any]:
        return [self.low, self.high]


@DIMENSIONS.register
class ChoiceSpace(Section):
    """One of a list of values (any YAML value: a number, a name, a list of cells...)."""

    type: Literal["choice"] = Field(..., description="choice")
    values: list[Any] = Field(..., min_length=1, description="The values to choose from.")

    def corners(self) -> list[Any]:
        return list(self.values)


class AshaScheduler(Section):
    """Asynchronous successive halving: at each rung only the best trials go on training.

    A trial reports the search metric at every evaluation during training (`evaluate.every` /
    `evaluate.every_epoch`); the evaluations are the resource. A trial that has had
    `min_resource * reduction_factor**k` evaluations goes on only when it is among the best
    1/reduction_factor of the trials that reached that rung; the others stop (recorded KILLED).
    """

    type: Literal["asha"] = Field("asha", description="asha")
    min_resource: int = Field(1, ge=1, le=1_000_000, description="Evaluations every trial gets before the first cut.")
    reduction_factor: int = Field(3, ge=2, le=100, description="Keep the best 1/reduction_factor at each rung.")


class SearchSpec(Section):
    """A search over spec values: one child run per trial, under the pipeline's parent run."""

    space: dict[str, DIMENSIONS.union()] = Field(  # type: ignore[valid-type]
        ..., min_length=1, description="Spec key path -> the values to try (uniform, loguniform, int, choice)."
    )
    metric: str = Field(..., min_length=1, description="The validation metric to optimize: val_loss, val_<metric>.")
    mode: Literal["min", "max"] = Field(..., description="min or max: whether a smaller or larger metric is better.")
    num_samples: int = Field(..., ge=1, le=MAX_SAMPLES, description="Trials in all.")
    algorithm: Literal["random", "tpe"] = Field(
        "tpe", description="How the next trial is chosen: random, or tpe (Optuna's Tree-structured Parzen Estimator)."
    )
    scheduler: AshaScheduler | None = Field(
        None, description="Stop bad trials early: asha (or {type: asha, min_resource, reduction_factor})."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the algorithm's choices.")

    @pydantic.field_validator("scheduler", mode="before")
    @classmethod
    def _named_scheduler(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @pydantic.field_validator("metric")
    @classmethod
    def _validation_metric(cls, metric: str) -> str:
        if metric.startswith("test_"):
            raise ValueError("the test split is only ever reported, it never chooses anything: search on a "
                             "validation metric (val_loss, val_<metric>) and give the spec a validation split "
                             "(train.validation)")
        if not metric.startswith("val_"):
            raise ValueError(f"'{metric}' is not a validation metric: search on val_loss or val_<metric>")
        return metric
