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


@dataclasses.dataclass
class DataBundle:
    """Training and evaluation data plus what the model needs to know about it.

    Attributes:
        train: the training split.
        eval: the evaluation split.
        task: regression or classification.
        output_size: target features (regression) or number of classes (classification).
        sequence_targets: a target per step (True) or per sequence (False).
        masked_inputs: whether inputs are padded and need a `lengths` input.
        info: facts worth logging (sizes, files, function names).
    """

    train: Split
    eval: Split
    task: Task
    output_size: int
    sequence_targets: bool
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def masked_inputs(self) -> bool:
        return self.train.lengths is not None or self.eval.lengths is not None

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
