"""What every data source produces, and the base class of source specs."""

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rnnflow.spec.base import Section

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

Task = Literal["regression", "classification"]


@dataclasses.dataclass
class Split:
    """One split of a data set, as arrays.

    Attributes:
        x: inputs, (N, T, F) float32.
        y: targets: (N, T, D) float32 or (N, T) int32 per step, (N, D) / (N,) per sequence; or None.
        lengths: valid input steps per sequence (N,) int32, for padded inputs; else None.
        weights: loss weights per target step (N, T) float32 (0 after an end-of-sequence); else None.
        time: the x-axis value of each target step (N, T), for plots; else None. Forecasts from a
            table: the time (or row position) of each forecast step (N, horizon).
        naive: forecasts of a trivial model for the same targets, shaped like y (forecasting
            sources: last value or seasonal naive), for MASE; else None.
        series: the series each sequence comes from (N,), for panel data; else None.
    """

    x: "np.ndarray"
    y: "np.ndarray | None" = None
    lengths: "np.ndarray | None" = None
    weights: "np.ndarray | None" = None
    time: "np.ndarray | None" = None
    naive: "np.ndarray | None" = None
    series: "np.ndarray | None" = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def inputs(self, index: Any = slice(None)) -> Any:
        """The model inputs for rows `index`: the array, or a dict when lengths are given."""
        if self.lengths is None:
            return self.x[index]
        return {"inputs": self.x[index], "lengths": self.lengths[index]}

    def take(self, index: Any) -> "Split":
        """The rows `index` of this split (every array cut alike)."""
        arrays = (getattr(self, field.name) for field in dataclasses.fields(self))
        return Split(*(None if a is None else a[index] for a in arrays))


SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Scaling:
    """An affine scaling fitted on the training part only, which `rnnflow.build` makes part of the
    model (so a logged model takes raw values and returns predictions in the data's units).

    Inputs are scaled to `(x - input_mean) / sqrt(input_variance)` per feature; regression outputs
    are mapped back with `output * sqrt(output_variance) + output_mean` per output unit, and the
    loss is measured on the scaled targets. Min-max scaling is the same with mean = min and
    variance = (max - min)^2.

    With a `level` (forecasts), the first `level_columns` input features are first taken relative
    to their level in each window and the level is added back to the outputs last
    (`rnnflow.preprocessing`); the statistics are then those of the relative values.

    Attributes:
        input_mean: (features,).
        input_variance: (features,), never 0 (a constant feature keeps variance 1).
        output_mean: (outputs,), or None when the outputs are not scaled (classification).
        output_variance: (outputs,), or None.
        level: `none`, `last` or `mean`.
        level_columns: how many leading input features are taken relative (the targets).
    """

    input_mean: "np.ndarray"
    input_variance: "np.ndarray"
    output_mean: "np.ndarray | None" = None
    output_variance: "np.ndarray | None" = None
    level: str = "none"
    level_columns: int = 0

    @property
    def output_scale(self) -> "np.ndarray | None":
        """The standard deviation of each output unit (what a scaled error is divided by)."""
        import numpy as np

        return None if self.output_variance is None else np.sqrt(self.output_variance)


def fit_scaling(mode: str, inputs: "np.ndarray", outputs: "np.ndarray | None" = None) -> Scaling:
    """Fit a scaling on rows of training values.

    Args:
        mode: `standard` (mean and variance), `minmax` (min and range) or `none` (identity).
        inputs: (rows, features) of training inputs.
        outputs: (rows, outputs) of training targets to scale too (regression), or None.

    Returns:
        The Scaling.
    """
    import numpy as np

    def stats(values: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
        values = np.asarray(values, np.float64)
        if mode == "none":
            return np.zeros(values.shape[1]), np.ones(values.shape[1])
        if mode == "minmax":
            low = values.min(axis=0)
            variance = (values.max(axis=0) - low) ** 2
            mean = low
        else:
            mean, variance = values.mean(axis=0), values.var(axis=0)
        # A constant column would be divided by ~0 (Keras clips at 1e-7): leave its scale alone.
        return mean, np.where(variance > 1e-12, variance, 1.0)

    scaling = Scaling(*stats(inputs))
    if outputs is not None:
        scaling.output_mean, scaling.output_variance = stats(outputs)
    return scaling


@dataclasses.dataclass
class Forecast:
    """What a forecasting source knows beyond the windows, for metrics, plots, datasets and predict.

    Attributes:
        targets: the target columns (each window predicts `horizon` values of each).
        features: the extra input columns.
        horizon: steps ahead.
        window: input steps.
        season: the seasonal period of the naive baseline (None: last value).
        time: the time column (None: row order).
        series: the series id column (None: one series).
        parts: the rows of each part (train, val, test), as used (missing values handled).
    """

    targets: list[str]
    features: list[str]
    horizon: int
    window: int
    season: int | None
    time: str | None
    series: str | None
    parts: dict[str, Any]

    @property
    def baseline(self) -> str:
        """The naive forecast MASE compares against, in words."""
        return f"seasonal naive (season {self.season})" if self.season else "naive (last value)"


@dataclasses.dataclass
class DataBundle:
    """The splits of a data set plus what the model needs to know about it.

    Metrics are named after the split they were measured on: `train_*`, `val_*`, `test_*`.
    The validation split is what training may look at to choose anything (early stopping, the
    best weights, a search); the test split is only ever reported.

    Attributes:
        train: the training split.
        test: the held-out test split (None when the source has none).
        task: regression or classification.
        output_size: target features (regression) or number of classes (classification).
        sequence_targets: a target per step (True) or per sequence (False).
        val: the validation split (None when there is none).
        info: facts worth logging (sizes, files, function names).
        scaling: the input (and output) scaling fitted on the training part, or None.
        variable_length: whether the model must take sequences of any length (the time
            dimension of its input is None).
        class_names: the name of each class (classification), or None.
        forecast: forecasting sources' windows, baseline and rows, or None.
        source_file: the file the data was read from, or None for generated data.
    """

    train: Split
    test: Split | None
    task: Task
    output_size: int
    sequence_targets: bool
    val: Split | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    scaling: Scaling | None = None
    variable_length: bool = False
    class_names: list[str] | None = None
    forecast: Forecast | None = None
    source_file: Path | None = None

    def splits(self) -> dict[str, Split]:
        """The splits there are, by name: train, then val and test when present."""
        return {name: split for name in SPLITS if (split := getattr(self, name)) is not None}

    @property
    def held_out(self) -> Split:
        """The split periodic evaluation and examples use: validation when there is one, else test."""
        return self.val if self.val is not None else (self.test if self.test is not None else self.train)

    @property
    def masked_inputs(self) -> bool:
        return any(split.lengths is not None for split in self.splits().values())

    @property
    def input_shape(self) -> tuple[int | None, int]:
        """(time steps, features) of one input sequence; steps is None when any length is taken."""
        steps = None if self.variable_length else int(self.train.x.shape[1])
        return steps, int(self.train.x.shape[2])


def resolve_file(path: str, base_dir: Path) -> Path:
    """A data file named in a spec (`data.path`): relative paths resolve against the spec's folder.

    Raises:
        rnnflow.errors.DataError: when it does not exist or is a directory.
    """
    from rnnflow.errors import DataError

    candidate = Path(path).expanduser()
    candidate = candidate if candidate.is_absolute() else base_dir / candidate
    if candidate.is_dir():
        raise DataError(f"{candidate}: a directory; data.path must name a file")
    if not candidate.is_file():
        raise DataError(f"{candidate}: file not found (data.path in the spec)")
    return candidate


@dataclasses.dataclass(frozen=True)
class LoadContext:
    """What a source needs besides its own settings.

    Attributes:
        seed: the spec's seed, for generated data.
        base_dir: the directory relative paths in the spec are resolved against.
    """

    seed: int
    base_dir: Path


class SourceSpec(Section):
    """Base of `data:` source specs; subclasses register with `rnnflow.spec.registry.SOURCES`."""

    type: str

    @property
    def has_validation(self) -> bool:
        """Whether the source gives a validation split of its own (`train.validation: source`)."""
        return False

    @property
    def has_test(self) -> bool:
        """Whether the source gives a test split."""
        return True

    @property
    def task(self) -> Task:
        """The task the source's targets define (checked against the loss before anything runs)."""
        raise NotImplementedError

    @property
    def sequence_targets(self) -> bool | None:
        """A target per step (True), per sequence (False), or unknown before loading (None)."""
        return None

    @property
    def has_targets(self) -> bool:
        """Whether the source gives targets (a source without them can only be run forward)."""
        return True

    @property
    def chronological(self) -> bool:
        """Whether the source's splits follow time (then no split may be drawn at random)."""
        return False

    @property
    def variable_length(self) -> bool:
        """Whether models of this source take sequences of any length (no static unrolling)."""
        return False

    def task_metrics(self, loss: str) -> tuple[str, ...]:
        """The metrics every run of this source logs besides `train.metrics` (`rnnflow.metrics`)."""
        return ("accuracy",) if loss == "sparse_categorical_crossentropy" else ()

    def scaling(self, data: DataBundle) -> Scaling | None:
        """The scaling of model inputs (and outputs), fitted on `data.train` only; None: none."""
        return None

    def load(self, context: LoadContext) -> DataBundle:
        """Produce the arrays.

        Raises:
            rnnflow.errors.DataError: when the data cannot be read or has the wrong shape.
        """
        raise NotImplementedError


def load_data(spec: Any) -> DataBundle:
    """Load a spec's data: the source's splits, the validation split `train.validation` asks
    for (carved from the training part), then the scaling, fitted on what is left to train on.

    Raises:
        rnnflow.errors.DataError: when the data cannot be read, has the wrong shape, or is too
            small to give a validation split.
    """
    data = spec.data.load(LoadContext(seed=spec.seed, base_dir=spec.base_dir))
    amount = spec.train.validation if spec.train is not None else None
    if isinstance(amount, (int, float)) and not isinstance(amount, bool):
        data = carve_validation(data, amount, spec.seed)
    # Only now is the training part final: fitting earlier would let validation rows in.
    data.scaling = spec.data.scaling(data)
    return data


# Each carved split draws from a stream of its own: not the batches', not the data's.
_STREAMS = {"val": 1013, "test": 2027}


def carve_validation(data: DataBundle, amount: float | int, seed: int, into: str = "val",
                     key: str = "train.validation") -> DataBundle:
    """Move `amount` of the training sequences (a fraction, or a count) into a validation split
    (or, with `into="test"`, a test split).

    Classes keep their proportions (stratified) when there is one class per sequence; otherwise
    the sequences are drawn at random. The draw depends only on the seed.

    Args:
        data: the bundle.
        amount: a fraction of the training sequences, or a count.
        seed: the spec's seed.
        into: the split that receives them: `val` or `test`.
        key: the spec key that asked, for errors.

    Raises:
        rnnflow.errors.DataError: when the training part is too small for the split.
    """
    import numpy as np

    from rnnflow.errors import DataError

    train = data.train
    n = len(train)
    wanted = amount if isinstance(amount, int) else int(round(amount * n))
    if not 1 <= wanted < n:
        name = "validation" if into == "val" else into
        raise DataError(f"{key}: {amount} of {n} training sequences leaves "
                        f"{'no ' + name if wanted < 1 else 'nothing to train on'}")
    rng = np.random.default_rng([seed, _STREAMS[into]])
    if data.task == "classification" and train.y is not None and train.y.ndim == 1:
        picked = _stratified(train.y, wanted, rng)
    else:
        picked = rng.permutation(n)[:wanted]
    mask = np.zeros(n, bool)
    mask[picked] = True
    return dataclasses.replace(data, train=train.take(~mask), **{into: train.take(mask)})


def _stratified(labels: "np.ndarray", wanted: int, rng: Any) -> "np.ndarray":
    """`wanted` row indexes with each class in proportion (largest remainders get the rest)."""
    import numpy as np

    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * wanted / len(labels)
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: wanted - quota.sum()]:
        quota[i] += 1
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)])
