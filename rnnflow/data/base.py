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
        time: the x-axis value of each target step (N, T), for plots; else None.
    """

    x: "np.ndarray"
    y: "np.ndarray | None" = None
    lengths: "np.ndarray | None" = None
    weights: "np.ndarray | None" = None
    time: "np.ndarray | None" = None

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
    """

    train: Split
    test: Split | None
    task: Task
    output_size: int
    sequence_targets: bool
    val: Split | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

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
        """(time steps, features) of one input sequence."""
        return int(self.train.x.shape[1]), int(self.train.x.shape[2])


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

    def load(self, context: LoadContext) -> DataBundle:
        """Produce the arrays.

        Raises:
            rnnflow.errors.DataError: when the data cannot be read or has the wrong shape.
        """
        raise NotImplementedError


def load_data(spec: Any) -> DataBundle:
    """Load a spec's data: the source's splits, and the validation split `train.validation` asks
    for, carved from the training part.

    Raises:
        rnnflow.errors.DataError: when the data cannot be read, has the wrong shape, or is too
            small to give a validation split.
    """
    data = spec.data.load(LoadContext(seed=spec.seed, base_dir=spec.base_dir))
    amount = spec.train.validation if spec.train is not None else None
    if isinstance(amount, (int, float)) and not isinstance(amount, bool):
        data = carve_validation(data, amount, spec.seed)
    return data


def carve_validation(data: DataBundle, amount: float | int, seed: int) -> DataBundle:
    """Move `amount` of the training sequences (a fraction, or a count) into a validation split.

    Classes keep their proportions (stratified) when there is one class per sequence; otherwise
    the sequences are drawn at random. The draw depends only on the seed.

    Raises:
        rnnflow.errors.DataError: when the training part is too small for the split.
    """
    import numpy as np

    from rnnflow.errors import DataError

    train = data.train
    n = len(train)
    wanted = amount if isinstance(amount, int) else int(round(amount * n))
    if not 1 <= wanted < n:
        raise DataError(f"train.validation: {amount} of {n} training sequences leaves "
                        f"{'no validation' if wanted < 1 else 'nothing to train on'}")
    rng = np.random.default_rng([seed, 1013])  # a stream of its own: not the batches', not the data's
    if data.task == "classification" and train.y is not None and train.y.ndim == 1:
        picked = _stratified(train.y, wanted, rng)
    else:
        picked = rng.permutation(n)[:wanted]
    mask = np.zeros(n, bool)
    mask[picked] = True
    return dataclasses.replace(data, train=train.take(~mask), val=train.take(mask))


def _stratified(labels: "np.ndarray", wanted: int, rng: Any) -> "np.ndarray":
    """`wanted` row indexes with each class in proportion (largest remainders get the rest)."""
    import numpy as np

    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * wanted / len(labels)
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: wanted - quota.sum()]:
        quota[i] += 1
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)])
