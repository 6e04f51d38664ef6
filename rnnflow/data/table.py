"""Forecasting from a table: a CSV or Parquet file of one time series or many (panel data).

Each sample is a window of `window` rows of [targets + features]; its targets are the next
`horizon` values of the target columns (direct multi-output: one output per step ahead and
target). The rows of each series are split in time: training, then validation, then test. A
sample belongs to the part its targets fall in (its inputs may reach back into the part before:
what a forecaster at that time would have seen); a sample whose targets straddle two parts is
left out, and no window ever crosses from one series into another.
"""

import dataclasses
import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
from pydantic import Field

from rnnflow.data.base import DataBundle, Forecast, LoadContext, SourceSpec, Split, Task, fit_scaling, resolve_file
from rnnflow.errors import DataError
from rnnflow.spec.base import Section, at
from rnnflow.spec.registry import SOURCES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

# File formats by extension.
TABLE_FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet"}
PARTS = ("train", "val", "test")


def did_you_mean(name: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def part_amount(value: Any, key: str) -> Any:
    """Check a part size: a fraction in (0, 1), a count of at least 1, or null (none)."""
    if isinstance(value, float) and not 0 < value < 1:
        raise at(key, f"a fraction is between 0 and 1 (got {value}); a count of rows is an integer")
    if isinstance(value, int) and value < 1:
        raise at(key, f"a count is at least 1 (got {value}); null for none")
    return value


class TableSplit(Section):
    """The chronological parts of each series: the last rows are the test part, the rows before
    them the validation part, the rest trains."""

    validation: float | int | None = Field(
        0.1, description="Rows of each series for validation, before the test rows: a fraction or a count; null for none."
    )
    test: float | int | None = Field(
        0.2, description="The last rows of each series for testing: a fraction or a count; null for none."
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "TableSplit":
        part_amount(self.validation, "validation")
        part_amount(self.test, "test")
        if isinstance(self.validation, float) and isinstance(self.test, float) and self.validation + self.test >= 1:
            raise at("test", f"validation ({self.validation}) and test ({self.test}) leave no rows to train on")
        return self

    def rows(self, n: int) -> tuple[int, int]:
        """(validation rows, test rows) of a series of n rows."""
        def count(amount: float | int | None) -> int:
            if amount is None:
                return 0
            return int(round(amount * n)) if isinstance(amount, float) else amount

        return count(self.validation), count(self.test)


@dataclasses.dataclass
class Latest:
    """The last window of each series of a table, for forecasting beyond its end.

    Attributes:
        x: (series, window, inputs) raw values.
        series: the series ids (None for a single series).
        times: (series, horizon) the times of the forecast steps (dates, numbers or row positions).
    """

    x: "np.ndarray"
    series: "np.ndarray | None"
    times: "np.ndarray"


@SOURCES.register
class TableSource(SourceSpec):
    """Time series in a CSV or Parquet file (by extension), for forecasting.

    Inputs are `window` rows of the target and feature columns; targets are the next `horizon`
    values of the target columns. The rows of each series split in time (`split`); the scaling
    is fitted on the training rows only and travels inside the model.
    """

    type: Literal["table"] = "table"
    path: str = Field(..., min_length=1, description="The .csv or .parquet file, relative to the spec file.")
    time: str | None = Field(None, min_length=1, description="The time column: parsed as dates (or numbers); rows are sorted by it.")
    series: str | None = Field(
        None, min_length=1, description="The series id column of a file with many series (panel data)."
    )
    target: str | list[str] = Field(..., description="The column, or list of columns, to forecast.")
    features: list[str] = Field(default_factory=list, description="Extra input columns (default: the targets only).")
    window: int = Field(..., gt=0, le=100_000, description="Input steps per sample.")
    horizon: int = Field(1, gt=0, le=10_000, description="Steps ahead: each sample predicts the next horizon values.")
    missing: Literal["interpolate", "drop", "error"] = Field(
        "interpolate",
        description="Empty values: interpolate (linearly in time, within each part), drop the row, or error.",
    )
    split: TableSplit = Field(default_factory=TableSplit, description="The chronological parts of each series.")
    scale: Literal["standard", "minmax", "none"] = Field(
        "standard", description="Scaling of inputs and targets, fitted on the training rows only."
    )
    level: Literal["none", "last", "mean"] = Field(
        "none",
        description="Take each window's targets relative to their last value (or mean) in the window, and "
        "add it back to the forecasts: the model learns changes, so it can forecast a series that "
        "trends beyond the values it trained on.",
    )
    season: int | None = Field(
        None, gt=1, le=100_000, description="The seasonal period of the naive baseline (default: last value)."
    )

    @pydantic.model_validator(mode="after")
    def _check_columns(self) -> "TableSource":
        if Path(self.path).suffix.lower() not in TABLE_FORMATS:
            raise at("path", f"a table file ends in {', '.join(TABLE_FORMATS)} (its format is its extension)")
        if not self.targets:
            raise at("target", "name at least one column to forecast")
        seen: dict[str, str] = {}
        named = [("time", self.time), ("series", self.series)]
        named += [(f"target[{i}]" if isinstance(self.target, list) else "target", c) for i, c in enumerate(self.targets)]
        named += [(f"features[{i}]", c) for i, c in enumerate(self.features)]
        for key, column in named:
            if column is None:
                continue
            if column in seen:
                raise at(key, f"column '{column}' is already {seen[column]}; a column has one role")
            seen[column] = key
        return self

    @property
    def targets(self) -> list[str]:
        """The target columns as a list."""
        return [self.target] if isinstance(self.target, str) else list(self.target)

    @property
    def task(self) -> Task:
        return "regression"

    @property
    def sequence_targets(self) -> bool | None:
        return False

    @property
    def has_validation(self) -> bool:
        return self.split.validation is not None

    @property
    def has_test(self) -> bool:
        return self.split.test is not None

    @property
    def chronological(self) -> bool:
        return True

    def task_metrics(self, loss: str) -> tuple[str, ...]:
        return ("mae", "rmse", "naive_mae", "mase")

    # --- reading ---

    def read(self, path: Path) -> "pd.DataFrame":
        """The file's rows: columns checked, times parsed, values numeric, sorted by series and time.

        The result holds the used columns plus `_row`, where each row is in the file (for errors).

        Raises:
            DataError: one line naming the file, and the row and column where it can.
        """
        import numpy as np
        import pandas as pd

        frame = read_table(path)
        columns = [str(c) for c in frame.columns]
        frame.columns = columns
        for key, names in (("time", [self.time]), ("series", [self.series]), ("target", self.targets),
                           ("features", self.features)):
            for name in names:
                if name is not None and name not in columns:
                    raise DataError(f"{path}: no column '{name}' (data.{key}){did_you_mean(name, columns)}; "
                                    f"the columns are: {', '.join(columns)}")
        used = [c for c in (self.time, self.series, *self.targets, *self.features) if c is not None]
        frame = frame[used].copy()
        frame["_row"] = np.arange(len(frame))
        where = _locator(path)
        if self.series is not None:
            empty = frame[self.series].isna().to_numpy()
            if empty.any():
                raise DataError(f"{path}: {where(int(np.argmax(empty)))}, column '{self.series}': no series id")
        if self.time is not None:
            frame[self.time] = _times(frame[self.time], path, self.time, where)
        for column in (*self.targets, *self.features):
            frame[column] = _numbers(frame[column], path, column, where)
        keys = [c for c in (self.series, self.time) if c is not None]
        if keys:
            frame = frame.sort_values(keys + ["_row"], kind="stable").reset_index(drop=True)
        if self.time is not None:
            group = frame[self.series] if self.series is not None else pd.Series(0, index=frame.index)
            repeated = (frame[self.time].to_numpy()[1:] == frame[self.time].to_numpy()[:-1]) & (
                group.to_numpy()[1:] == group.to_numpy()[:-1])
            if repeated.any():
                row = int(frame["_row"].iloc[int(np.argmax(repeated)) + 1])
                series = f" of series '{group.iloc[int(np.argmax(repeated))]}'" if self.series else ""
                raise DataError(f"{path}: {where(row)}, column '{self.time}': the time "
                                f"{frame[self.time].iloc[int(np.argmax(repeated))]}{series} appears twice")
        return frame

    def _groups(self, frame: "pd.DataFrame") -> list[tuple[Any, "pd.DataFrame"]]:
        """(series id, rows) of each series, in order of first appearance (one group without a series column)."""
        if self.series is None:
            return [(None, frame)]
        return [(key, rows) for key, rows in frame.groupby(self.series, sort=False)]

    def _missing(self, rows: "pd.DataFrame", path: Path) -> "pd.DataFrame":
        """Rows after `missing: error | drop` (interpolation happens per part, see `_interpolate`)."""
        import numpy as np

        values = rows[[*self.targets, *self.features]]
        empty = values.isna().to_numpy()
        if not empty.any() or self.missing == "interpolate":
            return rows
        if self.missing == "error":
            i, j = divmod(int(np.argmax(empty)), empty.shape[1])
            raise DataError(f"{path}: {_locator(path)(int(rows['_row'].iloc[i]))}, column '{values.columns[j]}': "
                            "empty value (data.missing: error; interpolate or drop would handle it)")
        return rows[~empty.any(axis=1)]

    def _interpolate(self, rows: "pd.DataFrame", path: Path, series: Any, part: str | None = None) -> "pd.DataFrame":
        """Fill empty values linearly in time (by row where there is no time column), edges with
        the nearest value; only from rows of the same part, so no part sees another's values."""
        columns = [*self.targets, *self.features]
        if not rows[columns].isna().to_numpy().any():
            return rows
        index = rows[self.time].to_numpy() if self.time is not None else rows["_row"].to_numpy()
        if index.dtype.kind == "M":
            index = index.astype("datetime64[ns]").astype("int64")
        values = rows[columns].set_axis(index.astype("float64"), axis=0)
        for column in columns:
            if values[column].isna().all():
                where = f" in the {_PART_NAMES[part]} part" if part else ""
                where += f" of series '{series}'" if self.series is not None else ""
                raise DataError(f"{path}: column '{column}' has no value{where}; nothing to interpolate from")
        filled = values.interpolate(method="index", limit_direction="both")
        rows = rows.copy()
        rows[columns] = filled.to_numpy()
        return rows

    # --- samples ---

    def load(self, context: LoadContext) -> DataBundle:
        import numpy as np
        import pandas as pd

        path = resolve_file(self.path, context.base_dir)
        frame = self.read(path)
        start = max(self.window, self.season or 0)  # a full window, and a season for the naive forecast
        samples: dict[str, list[dict[str, Any]]] = {part: [] for part in PARTS}
        parts: dict[str, list[pd.DataFrame]] = {part: [] for part in PARTS}
        for series, rows in self._groups(frame):
            rows = self._missing(rows, path)
            n = len(rows)
            val_rows, test_rows = self.split.rows(n)
            self._check_size(path, series, n, val_rows, test_rows, start)
            bounds = {"train": (0, n - val_rows - test_rows), "val": (n - val_rows - test_rows, n - test_rows),
                      "test": (n - test_rows, n)}
            pieces = [self._interpolate(rows.iloc[lo:hi], path, series, part) if self.missing == "interpolate"
                      else rows.iloc[lo:hi] for part, (lo, hi) in bounds.items()]
            for part, piece in zip(PARTS, pieces):
                if len(piece):
                    parts[part].append(piece)
            rows = pd.concat(pieces)
            part_of = np.repeat(np.arange(3), [hi - lo for lo, hi in bounds.values()])
            for part, sample in self._windows(rows, part_of, start, series).items():
                samples[part].append(sample)
        splits = {part: _concat(samples[part]) for part in PARTS}
        forecast = Forecast(
            targets=self.targets, features=list(self.features), horizon=self.horizon, window=self.window,
            season=self.season, time=self.time, series=self.series,
            parts={part: pd.concat(pieces).drop(columns="_row") for part, pieces in parts.items() if pieces},
        )
        return DataBundle(
            train=splits["train"],
            val=splits["val"] if self.has_validation else None,
            test=splits["test"] if self.has_test else None,
            task="regression",
            output_size=self.horizon * len(self.targets),
            sequence_targets=False,
            info={"file": str(path), "rows": len(frame), "series": len(self._groups(frame)),
                  **{f"{part}_samples": len(split) for part, split in splits.items() if split is not None}},
            forecast=forecast,
            source_file=path,
        )

    def _check_size(self, path: Path, series: Any, n: int, val_rows: int, test_rows: int, start: int) -> None:
        """Refuse a series too short for one sample in each part."""
        need_train = start + self.horizon
        train_rows = n - val_rows - test_rows
        short = [(f"the training part ({train_rows} rows)", need_train)] if train_rows < need_train else []
        for name, rows, asked in (("validation", val_rows, self.has_validation), ("test", test_rows, self.has_test)):
            if asked and rows < self.horizon:
                short.append((f"the {name} part ({rows} rows)", self.horizon))
        if not short:
            return
        of = f"series '{series}' has" if self.series is not None else "the series has"
        what = f"window {self.window}" + (f", season {self.season}" if self.season else "") + f", horizon {self.horizon}"
        needs = "; ".join(f"{name} needs at least {rows}" for name, rows in short)
        raise DataError(f"{path}: {of} {n} rows, too few for {what} and the split "
                        f"(validation {self.split.validation}, test {self.split.test}): {needs}")

    def _windows(self, rows: "pd.DataFrame", part_of: "np.ndarray", start: int, series: Any) -> dict[str, dict]:
        """The samples of one series by part: inputs, targets, naive forecasts, target times."""
        import numpy as np
        from numpy.lib.stride_tricks import sliding_window_view

        values = rows[[*self.targets, *self.features]].to_numpy(np.float64)
        times = self._time_values(rows)
        n, targets, horizon = len(values), len(self.targets), self.horizon
        first = np.arange(start, n - horizon + 1)  # the first target row of each sample
        x = sliding_window_view(values, self.window, axis=0).transpose(0, 2, 1)[first - self.window]
        y = sliding_window_view(values[:, :targets], horizon, axis=0).transpose(0, 2, 1)[first]
        step = np.arange(horizon)
        if self.season:
            # The value one (or more) seasons before each forecast step, from before the window's end.
            back = step - self.season * np.ceil((step + 1) / self.season).astype(int)
            naive = values[first[:, None] + back[None, :], :targets]
        else:
            naive = np.repeat(values[first - 1, None, :targets], horizon, axis=1)
        target_times = sliding_window_view(times, horizon)[first]
        out = {}
        for index, part in enumerate(PARTS):
            keep = (part_of[first] == index) & (part_of[first + horizon - 1] == index)
            out[part] = {
                "x": x[keep].astype(np.float32),
                "y": y[keep].reshape(int(keep.sum()), -1).astype(np.float32),
                "naive": naive[keep].reshape(int(keep.sum()), -1).astype(np.float32),
                "time": target_times[keep],
                "series": np.full(int(keep.sum()), series, dtype=object) if self.series is not None else None,
            }
        return out

    def _time_values(self, rows: "pd.DataFrame") -> "np.ndarray":
        """The time of each row: its time value, or its position in the series."""
        import numpy as np

        if self.time is None:
            return np.arange(len(rows))
        return rows[self.time].to_numpy()

    # --- scaling and forecasting beyond the data ---

    def scaling(self, data: DataBundle):
        """Statistics of the training rows (of the training windows relative to their level, with
        `level`); the outputs' per step ahead and target, horizon-major."""
        import numpy as np

        if self.scale == "none" and self.level == "none":
            return None
        targets = len(self.targets)
        if self.level == "none":
            values = data.forecast.parts["train"][[*self.targets, *self.features]].to_numpy()
            scaling = fit_scaling(self.scale, values, values[:, :targets])
            scaling.output_mean = np.tile(scaling.output_mean, self.horizon)
            scaling.output_variance = np.tile(scaling.output_variance, self.horizon)
            return scaling
        x, y = data.train.x.astype(np.float64), data.train.y.astype(np.float64)
        head = x[..., :targets]
        level = head[:, -1, :].copy() if self.level == "last" else head.mean(axis=1)
        x[..., :targets] -= level[:, None, :]
        scaling = fit_scaling(self.scale, x.reshape(-1, x.shape[-1]), y - np.tile(level, self.horizon))
        scaling.level, scaling.level_columns = self.level, targets
        return scaling

    def latest(self, path: Path) -> Latest:
        """The last window of each series in a file of this table's format, and the times of the
        `horizon` steps after it (continuing the time column's frequency).

        Raises:
            DataError: as `read`, or when a series is shorter than the window.
        """
        import numpy as np

        frame = self.read(path)
        xs, ids, times = [], [], []
        for series, rows in self._groups(frame):
            rows = self._missing(rows, path)
            if self.missing == "interpolate":
                rows = self._interpolate(rows, path, series)
            if len(rows) < self.window:
                of = f"series '{series}' has" if self.series is not None else "it has"
                raise DataError(f"{path}: {of} {len(rows)} rows; the model reads windows of {self.window}")
            xs.append(rows[[*self.targets, *self.features]].to_numpy(np.float32)[-self.window:])
            ids.append(series)
            times.append(_continue(self._time_values(rows), self.horizon))
        return Latest(np.stack(xs), np.array(ids, dtype=object) if self.series is not None else None,
                      np.stack(times))


_PART_NAMES = {"train": "training", "val": "validation", "test": "test"}


def read_table(path: Path) -> "pd.DataFrame":
    """A CSV or Parquet file as a DataFrame.

    Raises:
        DataError: when the file cannot be read as its extension says.
    """
    import pandas as pd

    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: not a table file; use {', '.join(TABLE_FORMATS)}")
    try:
        frame = pd.read_csv(path) if kind == "CSV" else pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - readers raise many kinds on a corrupt file; all mean the same
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: not a readable {kind} file ({reason})") from None
    if frame.empty:
        raise DataError(f"{path}: no rows")
    return frame


def _locator(path: Path):
    """Names row i (0-based, in file order) as the user finds it: a CSV line (after the header) or a Parquet row."""
    if TABLE_FORMATS.get(path.suffix.lower()) == "CSV":
        return lambda i: f"line {i + 2}"
    return lambda i: f"row {i + 1}"


def _numbers(column: "pd.Series", path: Path, name: str, where) -> "pd.Series":
    """A column as float64 (empty stays NaN); text or infinite values are errors."""
    import numpy as np
    import pandas as pd

    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    bad = (numbers.isna() & column.notna()).to_numpy() | np.isinf(numbers.to_numpy())
    if bad.any():
        i = int(np.argmax(bad))
        finite = " finite" if np.isinf(numbers.iloc[i]) else ""
        raise DataError(f"{path}: {where(i)}, column '{name}': {shown(column.iloc[i])} is not a{finite} number")
    return numbers


def shown(value: Any) -> str:
    """A value from a file as a message shows it: text quoted, numbers plain (not np.float64(...))."""
    value = value.item() if hasattr(value, "item") else value
    return repr(value) if isinstance(value, str) else str(value)


def _times(column: "pd.Series", path: Path, name: str, where) -> "pd.Series":
    """A time column as datetimes, or as numbers when it holds numbers."""
    import warnings

    import numpy as np
    import pandas as pd

    empty = column.isna().to_numpy()
    if empty.any():
        raise DataError(f"{path}: {where(int(np.argmax(empty)))}, column '{name}': no time")
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.astype("float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' note that it guessed the format from the first value
        parsed = pd.to_datetime(column, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: {where(i)}, column '{name}': {shown(column.iloc[i])} is not a date")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(None)
    return parsed.astype("datetime64[ns]")


def _continue(times: "np.ndarray", steps: int) -> "np.ndarray":
    """The `steps` times after the last of `times`, at its frequency (inferred, else the median gap)."""
    import numpy as np
    import pandas as pd

    if times.dtype.kind == "M":
        index = pd.DatetimeIndex(times)
        frequency = pd.infer_freq(index) if len(index) >= 3 else None
        if frequency is not None:
            return pd.date_range(index[-1], periods=steps + 1, freq=frequency)[1:].to_numpy()
        gap = np.median(np.diff(times)) if len(times) > 1 else np.timedelta64(1, "D")
        return times[-1] + gap * np.arange(1, steps + 1)
    gap = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    return times[-1] + gap * np.arange(1, steps + 1)


def _concat(samples: list[dict[str, Any]]) -> Split:
    """One split from the samples of every series."""
    import numpy as np

    def join(key: str):
        arrays = [s[key] for s in samples]
        return None if arrays[0] is None else np.concatenate(arrays)

    return Split(x=join("x"), y=join("y"), time=join("time"), naive=join("naive"), series=join("series"))
