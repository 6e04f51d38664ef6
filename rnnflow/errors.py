"""Errors rnnflow reports to users.

Every user mistake ends in one of these, and the CLI turns them into located lines and a non-zero
exit code instead of a traceback.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class RnnflowError(Exception):
    """Base class of the errors rnnflow shows to users without a traceback."""

    exit_code = 1


def printable(text: str) -> str:
    """Text shown on one line: characters that are not printable appear as escapes (\\n, \\x1e).

    Keys and values from a spec are echoed in messages; a line break or control character among
    them (written as an escape in a quoted YAML string) must not break or garble the output.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def describe(value: Any) -> str:
    """A value as a spec author would name it: null, true, the integer 3, the string 'x', a list..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = str(value)
        return f"the integer {text}" if len(text) <= 30 else f"an integer of {len(text.lstrip('-'))} digits"
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return f"the number {value!r}"
    if isinstance(value, str):
        text = repr(value)
        return f"the string {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    return "a mapping"


@dataclasses.dataclass(frozen=True)
class SpecIssue:
    """One problem found in a spec, with where it is.

    Attributes:
        source: the file name (or `--set key=value` for an override).
        line: 1-based line, or None when the position is unknown.
        column: 1-based column, or None.
        path: the key path, e.g. `model.cells[1].units` (empty for the whole document).
        message: what is wrong.
    """

    source: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = printable(self.source)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where} {printable(self.path)}: {printable(self.message)}"
        return f"{where}: {printable(self.message)}"


class SpecError(RnnflowError):
    """A spec or pipeline file is invalid; holds every issue found, each with its location."""

    exit_code = 2

    def __init__(self, issues: list[SpecIssue]):
        self.issues = list(dict.fromkeys(issues))  # an issue found twice (e.g. in every run of a grid) is one
        super().__init__("\n".join(str(i) for i in self.issues))


class DataError(RnnflowError):
    """A data source cannot be loaded (missing, corrupt or wrongly shaped file)."""


class TrackingError(RnnflowError):
    """The tracking store cannot be reached or used."""


class TrainingError(RnnflowError):
    """Training cannot go on, e.g. the loss became NaN or infinite."""


class LossNotFinite(TrainingError):
    """The loss became NaN or infinite at `iteration`; training stopped there."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration
