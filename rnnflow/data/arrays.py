"""Sequences from an NPZ file, for sequence classification (or regression), equal or variable length.

x is (sequences, steps, features) or (sequences, steps); y is (sequences,) integer classes, or
(sequences,) / (sequences, k) values for regression; lengths (sequences,) give the valid steps of
zero-padded rows (outputs past a length are zero and the final state is the last valid step's,
as TF1's `dynamic_rnn(sequence_length=...)`). Models take sequences of any length, so a test
sequence may be longer than every training sequence.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
from pydantic import Field

from rnnflow.data.base import (
    DataBundle, LoadContext, SourceSpec, Split, Task, carve_validation, fit_scaling, resolve_file,
)
from rnnflow.data.table import did_you_mean, part_amount, shown
from rnnflow.errors import DataError
from rnnflow.spec.base import Section, at
from rnnflow.spec.registry import SOURCES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


class ArrayKeys(Section):
    """The names of one part's arrays in the NPZ file."""

    x: str = Field(..., min_length=1, description="The inputs: (sequences, steps, features) or (sequences, steps).")
    y: str | None = Field(None, min_length=1, description="The targets: (sequences,) classes, or (sequences[, k]) values.")
    lengths: str | None = Field(
        None, min_length=1, description="Valid steps of each zero-padded sequence (default: every step)."
    )


class ArraysSplit(Section):
    """Splits carved from the training arrays, stratified by class."""

    validation: float | int | None = Field(
        None, description="Training sequences held out for validation: a fraction or a count; null for none."
    )
    test: float | int | None = Field(
        None, description="Training sequences held out for testing when the file has no test arrays."
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "ArraysSplit":
        part_amount(self.validation, "validation")
        part_amount(self.test, "test")
        return self


@SOURCES.register
class ArraysSource(SourceSpec):
    """Sequences in an NPZ file: training arrays, and test arrays or a test split carved from them.

    Inputs are scaled per feature (`scale`), fitted on the valid steps of the training sequences
    only; the scaling travels inside the model.
    """

    type: Literal["arrays"] = "arrays"
    path: str = Field(..., min_length=1, description="The .npz file, relative to the spec file.")
    train: ArrayKeys = Field(
        default_factory=lambda: ArrayKeys(x="x_train", y="y_train"), description="The training arrays."
    )
    test: ArrayKeys | None = Field(None, description="The test arrays; default: split.test, else no test split.")
    split: ArraysSplit = Field(default_factory=ArraysSplit, description="Parts carved from the training arrays.")
    target_type: Literal["classification", "regression"] = Field(
        "classification", description="Whether y holds class indexes or values."
    )
    class_names: list[str] | str | None = Field(
        None, description="The name of each class: a list, or the key of a string array in the file."
    )
    scale: Literal["standard", "minmax", "none"] = Field(
        "standard", description="Scaling of each input feature (and regression target), fitted on training data only."
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "ArraysSource":
        if Path(self.path).suffix.lower() != ".npz":
            raise at("path", "arrays are read from a .npz file")
        if self.train.y is None:
            raise at("train.y", "the training arrays need targets")
        if self.test is not None and self.split.test is not None:
            raise at("split.test", "the test arrays are given (data.test); give them or split.test, not both")
        if self.test is not None and self.test.y is None:
            raise at("test.y", "the test arrays need targets, to be measured")
        if self.class_names is not None and self.target_type != "classification":
            raise at("class_names", "class names go with target_type: classification")
        if isinstance(self.class_names, list) and len(set(self.class_names)) != len(self.class_names):
            raise at("class_names", "every class needs its own name")
        return self

    @property
    def task(self) -> Task:
        return self.target_type

    @property
    def sequence_targets(self) -> bool | None:
        return False

    @property
    def has_validation(self) -> bool:
        return self.split.validation is not None

    @property
    def has_test(self) -> bool:
        return self.test is not None or self.split.test is not None

    @property
    def variable_length(self) -> bool:
        return True

    def load(self, context: LoadContext) -> DataBundle:
        import numpy as np

        path = resolve_file(self.path, context.base_dir)
        arrays = read_npz(path)
        parts = {"train": self.train, "test": self.test}
        splits = {name: self._split(arrays, path, keys, name) for name, keys in parts.items() if keys is not None}
        features = {name: split.x.shape[2] for name, split in splits.items()}
        if len(set(features.values())) > 1:
            raise DataError(f"{path}: {self.test.x} has {features['test']} features per step, "
                            f"{self.train.x} has {features['train']}")
        if any(split.lengths is not None for split in splits.values()):
            for split in splits.values():  # the model takes lengths: every split gives them
                if split.lengths is None:
                    split.lengths = np.full(len(split), split.x.shape[1], np.int32)
        names, classes = None, None
        if self.target_type == "classification":
            names, classes = self._classes(arrays, path, splits)
            output_size = classes
        else:
            output_size = splits["train"].y.shape[1]
        data = DataBundle(
            train=splits["train"], test=splits.get("test"), task=self.target_type, output_size=int(output_size),
            sequence_targets=False, variable_length=True, class_names=names, source_file=path,
            info={"file": str(path), **{f"{name}_sequences": len(split) for name, split in splits.items()}},
        )
        if self.split.test is not None:
            data = carve_validation(data, self.split.test, context.seed, into="test", key="data.split.test")
        if self.split.validation is not None:
            data = carve_validation(data, self.split.validation, context.seed, key="data.split.validation")
        return data

    def _split(self, arrays: dict[str, Any], path: Path, keys: ArrayKeys, part: str) -> Split:
        """One part's arrays, checked."""
        import numpy as np

        def get(key: str, role: str) -> "np.ndarray":
            if key not in arrays:
                raise DataError(f"{path}: no array '{key}' (data.{part}.{role}){did_you_mean(key, list(arrays))}; "
                                f"the arrays are: {', '.join(arrays) or 'none'}")
            value = arrays[key]
            if isinstance(value, str):  # read_npz's note of an array it could not read
                raise DataError(f"{path}: array '{key}' {value}")
            return value

        x = get(keys.x, "x")
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3 or not (x.dtype.kind in "iuf" and x.size):
            raise DataError(f"{path}: array '{keys.x}' is {_describe(x)}; expected numbers shaped "
                            "(sequences, steps, features) or (sequences, steps)")
        _check_finite(x, path, keys.x)
        n, steps = x.shape[:2]
        lengths = None
        if keys.lengths is not None:
            lengths = get(keys.lengths, "lengths")
            if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
                raise DataError(f"{path}: array '{keys.lengths}' is {_describe(lengths)}; expected {n} integer "
                                f"lengths, one per sequence of '{keys.x}'")
            bad = (lengths < 1) | (lengths > steps)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"{path}: {keys.lengths}[{i}] is {int(lengths[i])}, out of range 1-{steps} "
                                f"(the steps of '{keys.x}')")
            lengths = lengths.astype(np.int32)
        y = get(keys.y, "y")
        if y.ndim == 0 or len(y) != n:
            raise DataError(f"{path}: array '{keys.y}' is {_describe(y)} for {n} sequences in '{keys.x}'")
        if self.target_type == "classification":
            y = _labels(y, path, keys.y)
        else:
            if y.ndim not in (1, 2) or y.dtype.kind not in "iuf":
                raise DataError(f"{path}: array '{keys.y}' is {_describe(y)}; regression targets are "
                                "numbers shaped (sequences,) or (sequences, k)")
            _check_finite(y, path, keys.y)
            y = y.reshape(n, -1).astype(np.float32)
        return Split(x=x.astype(np.float32), y=y, lengths=lengths)

    def _classes(self, arrays: dict[str, Any], path: Path, splits: dict[str, Split]) -> tuple[list[str] | None, int]:
        """The class names and how many classes there are."""
        import numpy as np

        names = self.class_names
        if isinstance(names, str):
            if names not in arrays or isinstance(arrays[names], str) or arrays[names].dtype.kind not in "US":
                raise DataError(f"{path}: no string array '{names}' (data.class_names)"
                                f"{did_you_mean(names, list(arrays))}")
            names = [str(v) for v in arrays[names].reshape(-1)]
        highest = max(int(split.y.max()) for split in splits.values())
        if names is None:
            return None, max(highest + 1, 2)
        for part, split in splits.items():
            if split.y.max() >= len(names):
                i = int(np.argmax(split.y >= len(names)))
                key = getattr(self, part).y
                raise DataError(f"{path}: {key}[{i}] is class {int(split.y[i])}, but data.class_names names "
                                f"{len(names)} classes (0-{len(names) - 1})")
        return list(names), len(names)

    def scaling(self, data: DataBundle):
        import numpy as np

        train = data.train
        if train.lengths is None:
            steps = train.x.reshape(-1, train.x.shape[2])
        else:  # only the valid steps: padding is not data
            steps = train.x[np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]]
        if self.scale == "none":
            return None
        return fit_scaling(self.scale, steps, train.y if self.target_type == "regression" else None)


def read_npz(path: Path) -> dict[str, Any]:
    """Every array of an NPZ file by name; an array that cannot be read maps to a note why.

    Raises:
        DataError: when the file is not a readable NPZ archive.
    """
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays: dict[str, Any] = {}
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError:  # object arrays need pickle, which is never allowed
                    arrays[key] = ("holds Python objects (a ragged list of sequences?); store the sequences "
                                   "zero-padded to one length, with their lengths in another array")
            return arrays
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None


def _describe(array: "np.ndarray") -> str:
    return f"shaped {array.shape} of {array.dtype}"


def _check_finite(array: "np.ndarray", path: Path, key: str) -> None:
    import numpy as np

    bad = ~np.isfinite(array)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), array.shape)
        raise DataError(f"{path}: {key}[{', '.join(map(str, index))}] is {shown(array[index])}, not a finite number")


def _labels(y: "np.ndarray", path: Path, key: str) -> "np.ndarray":
    """Class labels as int32: whole numbers from 0."""
    import numpy as np

    if y.ndim != 1:
        raise DataError(f"{path}: array '{key}' is {_describe(y)}; class labels are one integer per sequence")
    if y.dtype.kind not in "iuf":
        raise DataError(f"{path}: array '{key}' is {_describe(y)}; class labels are integers from 0")
    bad = y < 0
    if y.dtype.kind == "f":
        bad |= (y != np.round(y)) | ~np.isfinite(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: {key}[{i}] is {shown(y[i])}; class labels are integers from 0")
    return y.astype(np.int32)
