"""A sine-style time series; the model learns to predict the next point at every step."""

from typing import Literal

import pydantic
from pydantic import Field

from rnnflow.data.base import DataBundle, LoadContext, SourceSpec, Split, Task
from rnnflow.spec.registry import SOURCES
from rnnflow.spec.base import at

# The series a spec may name, with the formula shown in help texts. Never an expression taken
# from the spec: specs are data.
SERIES = {
    "sine_mix": ("t*sin(t)/3 + 2*sin(5t)", lambda np, t: t * np.sin(t) / 3 + 2 * np.sin(t * 5)),
    "sin": ("sin(t)", lambda np, t: np.sin(t)),
    "cos": ("cos(t)", lambda np, t: np.cos(t)),
    "t_sin_t": ("t*sin(t)", lambda np, t: t * np.sin(t)),
    "damped_sine": ("exp(-t/10)*sin(2t)", lambda np, t: np.exp(-t / 10) * np.sin(2 * t)),
    "two_tone": ("sin(t) + 0.5*sin(3t)", lambda np, t: np.sin(t) + 0.5 * np.sin(3 * t)),
}
FunctionName = Literal[tuple(SERIES)]  # type: ignore[valid-type]


def series(name: str, t):
    """Evaluate the named series at times `t` (a NumPy array)."""
    import numpy as np

    return SERIES[name][1](np, np.asarray(t, dtype=np.float64))


@SOURCES.register
class SineSource(SourceSpec):
    """Windows of a time series; the target is the input shifted one point ahead.

    `fixed` sampling trains on the single window `linspace(start, stop, steps + 1)` and evaluates
    on that window shifted by `eval_shift` points. `random` sampling draws windows of `steps + 1`
    points spaced `resolution` apart, starting anywhere in [start, stop].
    """

    type: Literal["sine"] = "sine"
    function: FunctionName = Field("sine_mix", description="The series: " + "; ".join(
        f"{k} = {v[0]}" for k, v in SERIES.items()))
    start: float = Field(0.0, ge=-1e6, le=1e6, description="First time value of the range.")
    stop: float = Field(30.0, ge=-1e6, le=1e6, description="Last time value of the range.")
    steps: int = Field(20, gt=0, le=100_000, description="Time steps per window (points - 1).")
    sampling: Literal["fixed", "random"] = Field("random", description="One fixed window, or random windows.")
    resolution: float | None = Field(
        None, gt=0, description="Spacing of points (random sampling; default 0.1). Fixed: (stop-start)/steps."
    )
    train_windows: int = Field(10_000, gt=0, le=10_000_000, description="Random windows to train on.")
    eval_windows: int = Field(100, gt=0, le=1_000_000, description="Random windows to evaluate on.")
    instance_start: float | None = Field(
        None, description="Start time of the first evaluation window (plotted); default: random."
    )
    eval_shift: int = Field(1, ge=0, le=1_000_000, description="Fixed sampling: points the eval window is shifted.")

    @pydantic.model_validator(mode="after")
    def _check_range(self) -> "SineSource":
        if self.stop <= self.start:
            raise at("stop", f"must be greater than start ({self.start})")
        if self.sampling == "fixed":
            if self.resolution is not None:
                raise at("resolution", "fixed sampling spaces the window as (stop - start) / steps")
        else:
            span = self.steps * self.step_size
            if span > self.stop - self.start:
                raise at("steps", f"a window of {self.steps} steps of {self.step_size} does not fit in "
                         f"[{self.start}, {self.stop}]")
            if self.instance_start is not None and not (
                self.start <= self.instance_start <= self.stop - span
            ):
                raise at("instance_start", f"must be in [{self.start}, {self.stop - span:g}]")
        return self

    @property
    def step_size(self) -> float:
        """The time between two points."""
        if self.sampling == "fixed":
            return (self.stop - self.start) / self.steps
        return 0.1 if self.resolution is None else self.resolution

    @property
    def task(self) -> Task:
        return "regression"

    def windows(self, starts):
        """Inputs, targets and target times of windows starting at `starts`."""
        import numpy as np

        t = np.asarray(starts, dtype=np.float64)[:, None] + np.arange(self.steps + 1) * self.step_size
        values = series(self.function, t)
        x = values[:, :-1, None].astype(np.float32)
        y = values[:, 1:, None].astype(np.float32)
        return x, y, t[:, 1:]

    def split(self, starts) -> Split:
        x, y, t = self.windows(starts)
        return Split(x=x, y=y, time=t)

    @property
    def sequence_targets(self) -> bool | None:
        return True

    def load(self, context: LoadContext) -> DataBundle:
        import numpy as np

        if self.sampling == "fixed":
            train_starts = np.array([self.start])
            eval_starts = train_starts + self.eval_shift * self.step_size
        else:
            latest = self.stop - self.steps * self.step_size
            rng = np.random.default_rng(context.seed)
            train_starts = rng.uniform(self.start, latest, self.train_windows)
            eval_starts = np.random.default_rng(context.seed + 1).uniform(self.start, latest, self.eval_windows)
            if self.instance_start is not None:
                eval_starts[0] = self.instance_start
        return DataBundle(
            train=self.split(train_starts),
            test=self.split(eval_starts),
            task="regression",
            output_size=1,
            sequence_targets=True,
            info={"function": SERIES[self.function][0], "step_size": self.step_size,
                  "train_windows": len(train_starts), "eval_windows": len(eval_starts)},
        )

    def values_at(self, t):
        """The series at times `t` (for generation seeds and plots)."""
        return series(self.function, t)

