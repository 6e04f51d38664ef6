"""Evaluation steps that run after training: predictions, generation, raw outputs.

Each step type is a pydantic class registered under its YAML `type:`; its `run` writes artifact
files into a folder that the run then logs. Heavy imports happen inside `run`, so validating a
spec never imports TensorFlow or matplotlib.
"""

import csv
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic
from pydantic import Field

from rnnflow.spec.registry import STEPS
from rnnflow.spec.base import Section, at, pattern

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.build import BuiltModel
    from rnnflow.data.base import DataBundle, Split

# Artifact names are plain file names: nothing can point outside the run's artifact folder.
SAFE_NAME = pattern(
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
    "letters, digits, '_' and '-', starting with a letter or digit, at most 64 characters",
)


def _old_split_name(value: Any) -> Any:
    return "test" if value == "eval" else value  # specs written before the val split existed


SplitName = Annotated[Literal["test", "val", "train"], pydantic.BeforeValidator(_old_split_name)]


@dataclasses.dataclass
class StepContext:
    """What a step can use.

    Attributes:
        built: the trained model and its probe model.
        data: the data bundle.
        out_dir: the folder whose files are logged as the run's artifacts.
        seed: the spec's seed.
        predict: a function from a Split to the model's predictions (NumPy).
        metrics: metrics measured so far; a step may add its own.
        source: the spec's data source (a sine source can give the series at any time).
    """

    built: "BuiltModel"
    data: "DataBundle"
    out_dir: Path
    seed: int
    predict: Any
    metrics: dict[str, float]
    source: Any = None


class StepSpec(Section):
    """Base of evaluation steps."""

    type: str
    name: str | None = Field(None, pattern=SAFE_NAME, description="Artifact file name stem; default: the type.")

    @property
    def stem(self) -> str:
        return self.name or self.type

    def check(self, data_task: str, sequence_targets: bool | None) -> None:
        """Raise a ValueError when the step cannot run on this kind of data (checked at validation)."""

    def run(self, context: StepContext) -> list[Path]:
        """Run the step; return the files it wrote."""
        raise NotImplementedError


def pick_split(data: "DataBundle", name: str | None) -> "Split":
    """The split a step asked for; by default the test split (the validation split without one)."""
    if name is not None:
        return getattr(data, name)
    return data.test if data.test is not None else data.held_out


def write_csv(path: Path, header: list[str], rows) -> Path:
    """Write rows to a CSV file and return its path."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@STEPS.register
class PredictionsStep(StepSpec):
    """Predictions on a split as CSV, with a plot: prediction vs truth, or a confusion matrix."""

    type: Literal["predictions"] = "predictions"
    split: SplitName | None = Field(
        None, description="Which split to predict (default: test, else val; eval is test's old name)."
    )
    rows: int = Field(1000, gt=0, le=1_000_000, description="At most this many sequences in the CSV.")
    plot: bool = Field(True, description="Also draw the plot.")

    def run(self, context: StepContext) -> list[Path]:
        import numpy as np

        from rnnflow import plots

        data = context.data
        split = pick_split(data, self.split)
        if split.y is None:
            return []
        n = min(len(split), self.rows)
        pred = np.asarray(context.predict(split))
        files: list[Path] = []
        csv_path = context.out_dir / f"{self.stem}.csv"
        if data.task == "regression":
            files.append(write_csv(csv_path, *_regression_rows(split, pred, n)))
            if self.plot:
                files.append(plots.forecast(split, pred, context.out_dir / f"{self.stem}.png"))
        else:
            labels, predicted, weights = _classes(split, pred)
            files.append(write_csv(csv_path, *_classification_rows(split, pred, n)))
            classes = data.output_size
            matrix = np.zeros((classes, classes), dtype=np.int64)
            np.add.at(matrix, (labels[weights > 0], predicted[weights > 0]), 1)
            files.append(write_csv(context.out_dir / "confusion_matrix.csv",
                                   ["true\\predicted", *range(classes)],
                                   [[i, *row] for i, row in enumerate(matrix.tolist())]))
            if self.plot:
                files.append(plots.confusion_matrix(matrix, context.out_dir / "confusion_matrix.png"))
        return files


def _regression_rows(split: "Split", pred, n: int):
    import numpy as np

    y = split.y[:n]
    p = pred[:n]
    if y.ndim == 3:  # a target per step
        time = split.time[:n] if split.time is not None else np.broadcast_to(np.arange(y.shape[1]), y.shape[:2])
        header = ["sequence", "step", "time"] + _columns("target", y.shape[2]) + _columns("prediction", y.shape[2])
        rows = (
            [i, t, float(time[i, t]), *map(float, y[i, t]), *map(float, p[i, t])]
            for i in range(y.shape[0]) for t in range(y.shape[1])
        )
        return header, rows
    header = ["sequence"] + _columns("target", y.shape[-1]) + _columns("prediction", y.shape[-1])
    return header, ([i, *map(float, y[i]), *map(float, p[i])] for i in range(y.shape[0]))


def _columns(prefix: str, size: int) -> list[str]:
    return [prefix] if size == 1 else [f"{prefix}_{j}" for j in range(size)]


def _classes(split: "Split", logits):
    """Flattened true labels, predicted classes and weights of a classification split."""
    import numpy as np

    labels = split.y.reshape(-1)
    predicted = np.argmax(logits, axis=-1).reshape(-1)
    weights = split.weights.reshape(-1) if split.weights is not None else np.ones_like(labels, dtype=np.float32)
    return labels, predicted, weights


def _classification_rows(split: "Split", logits, n: int):
    import numpy as np

    shifted = logits[:n] - logits[:n].max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    predicted = probs.argmax(axis=-1)
    confidence = probs.max(axis=-1)
    if split.y.ndim == 2:  # a class per step
        weights = split.weights if split.weights is not None else np.ones(split.y.shape, np.float32)
        header = ["sequence", "step", "label", "predicted", "probability", "counted"]
        rows = (
            [i, t, int(split.y[i, t]), int(predicted[i, t]), float(confidence[i, t]), int(weights[i, t] > 0)]
            for i in range(predicted.shape[0]) for t in range(predicted.shape[1])
        )
        return header, rows
    header = ["sequence", "label", "predicted", "probability"]
    return header, ([i, int(split.y[i]), int(predicted[i]), float(confidence[i])] for i in range(predicted.shape[0]))


@STEPS.register
class GenerateStep(StepSpec):
    """Generate a sequence autoregressively: each prediction becomes the next input ("creative RNN").

    The seed is the first window: zeros, a window of the data (`instance` of `split`), or given
    values (padded on the left with zeros to the window length). The plot says which, and when the
    seed is a window of a series the source can extend (sine), draws the true continuation too.
    """

    type: Literal["generate"] = "generate"
    seed: Literal["zeros", "instance", "values"] = Field("zeros", description="What the first window holds.")
    instance: int = Field(0, ge=0, description="Which sequence of `split` seeds the generation (seed: instance).")
    split: SplitName | None = Field(
        None, description="The split the seed window comes from (seed: instance; default: train)."
    )
    values: list[float] | None = Field(None, description="The seed values (seed: values).")
    length: int = Field(300, gt=0, le=1_000_000, description="Steps to generate.")
    plot: bool = Field(True, description="Also plot the sequence.")

    @pydantic.model_validator(mode="after")
    def _check_seed(self) -> "GenerateStep":
        if self.seed == "values" and not self.values:
            raise at("values", "give the seed values (seed: values)")
        if self.seed != "values" and self.values is not None:
            raise at("values", "values are used only with seed: values")
        if self.seed != "instance" and self.split is not None:
            raise at("split", "split chooses the seed window of seed: instance")
        return self

    def check(self, data_task: str, sequence_targets: bool | None) -> None:
        if data_task != "regression" or sequence_targets is False:
            raise ValueError("generation needs a forecasting source (a value per step, e.g. sine)")

    def run(self, context: StepContext) -> list[Path]:
        import numpy as np

        from rnnflow import plots

        data = context.data
        steps, features = data.input_shape
        if features != data.output_size:
            raise ValueError(
                f"generation feeds predictions back as inputs, but the model reads {features} "
                f"feature(s) and predicts {data.output_size}"
            )
        seed_time = time = truth = None
        if self.seed == "zeros":
            window = np.zeros((steps, features), np.float32)
            described = "a seed window of zeros"
        elif self.seed == "instance":
            name = self.split or "train"
            split = getattr(data, name)
            if self.instance >= len(split):
                raise ValueError(f"instance {self.instance} does not exist ({len(split)} {name} sequences)")
            window = split.x[self.instance].copy()
            described = f"{name} window {self.instance}"
            if split.time is not None:
                seed_time, time = _times_around(split.time[self.instance], self.length, data.info.get("step_size"))
                described += f" (t = {seed_time[0]:.4g} to {seed_time[-1]:.4g})"
                values_at = getattr(context.source, "values_at", None)
                if values_at is not None:  # the series itself goes on after the window
                    truth = np.asarray(values_at(time), np.float32).reshape(len(time), -1)
        else:
            values = np.asarray(self.values[-steps:], np.float32).reshape(-1, 1)
            window = np.zeros((steps, features), np.float32)
            window[steps - len(values):] = np.repeat(values, features, axis=1)
            described = f"the {len(self.values)} given seed value{'s' if len(self.values) != 1 else ''}"
        sequence = context.built.generate(window, self.length)
        files = [write_csv(context.out_dir / f"{self.stem}.csv", *_generated_rows(window, sequence, seed_time, time,
                                                                              truth))]
        if self.plot:
            files.append(plots.generated(window, sequence, context.out_dir / f"{self.stem}.png",
                                         title=f"{self.length} steps generated from {described}",
                                         seed_time=seed_time, time=time, truth=truth,
                                         ylabel=_series_label(data.info.get("function"))))
        return files


def _times_around(target_time, length: int, step_size: float | None):
    """(input times of a window, times of the `length` points generated after it), from the times
    of the window's targets: each input is one step before its target, and the first generated
    point is the prediction after the last input, at the last target's time."""
    import numpy as np

    target_time = np.asarray(target_time, np.float64)
    dt = float(target_time[1] - target_time[0]) if len(target_time) > 1 else float(step_size or 1.0)
    return target_time - dt, target_time[-1] + dt * np.arange(length)


def _series_label(function: str | None) -> str:
    return f"x(t) = {function}" if function else "value"


def _generated_rows(window, sequence, seed_time, time, truth):
    """The generate CSV: the seed rows (step < 0, seed 1), then the generated ones; `time` and
    `truth` columns when the seed is a window of a series with times (truth: the series itself)."""
    features = window.shape[1]
    header = ["step", *_columns("value", features), "seed"]
    if time is not None:
        header.append("time")
    if truth is not None:
        header += _columns("truth", features)
    steps = len(window)
    rows = []
    for i in range(steps):
        row = [i - steps, *map(float, window[i]), 1]
        row += [] if time is None else [float(seed_time[i])]
        row += [] if truth is None else [*map(float, window[i])]  # the seed is the series there
        rows.append(row)
    for i in range(len(sequence)):
        row = [i, *map(float, sequence[i]), 0]
        row += [] if time is None else [float(time[i])]
        row += [] if truth is None else [*map(float, truth[i])]
        rows.append(row)
    return header, rows


@STEPS.register
class OutputsStep(StepSpec):
    """The raw outputs of the cell stack at every step and its final states, as JSON.

    For padded inputs it also records the lengths: outputs past a length are zero and the final
    state is the last valid step's.
    """

    type: Literal["outputs"] = "outputs"
    split: SplitName | None = Field(
        None, description="Which split to run (default: test, else val; eval is test's old name)."
    )
    rows: int = Field(16, gt=0, le=10_000, description="At most this many sequences.")

    def run(self, context: StepContext) -> list[Path]:
        split = pick_split(context.data, self.split)
        n = min(len(split), self.rows)
        probe = context.built.probe(split, n)
        record: dict[str, Any] = {"inputs": split.x[:n].tolist()}
        if split.lengths is not None:
            record["lengths"] = split.lengths[:n].tolist()
        record.update({k: _tolist(v) for k, v in probe.items()})
        import json

        path = context.out_dir / f"{self.stem}.json"
        path.write_text(json.dumps(record, indent=1))
        return [path]


def _tolist(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tolist(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tolist(v) for v in value]
    return value.tolist() if hasattr(value, "tolist") else value


AnyStepSpec = STEPS.union()
