"""Errors rnnflow reports to users.

Every user mistake ends in one of these, and the CLI turns them into located lines and a non-zero
exit code instead of a traceback.
"""

from __future__ import annotations

import dataclasses


class RnnflowError(Exception):
    """Base class of the errors rnnflow shows to users without a traceback."""

    exit_code = 1


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
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where} {self.path}: {self.message}"
        return f"{where}: {self.message}"


class SpecError(RnnflowError):
    """A spec or pipeline file is invalid; holds every issue found, each with its location."""

    exit_code = 2

    def __init__(self, issues: list[SpecIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class DataError(RnnflowError):
    """A data source cannot be loaded (missing, corrupt or wrongly shaped file)."""


class TrackingError(RnnflowError):
    """The tracking store cannot be reached or used."""


class TrainingError(RnnflowError):
    """Training cannot go on, e.g. the loss became NaN or infinite."""
