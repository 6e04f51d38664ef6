"""Errors rnnflow reports to users.

Every user mistake ends in one of these, and the CLI turns them into located lines and a non-zero
exit code instead of a traceback.
"""

from __future__ import annotations

import dataclasses


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
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class DataError(RnnflowError):
    """A data source cannot be loaded (missing, corrupt or wrongly shaped file)."""


class TrackingError(RnnflowError):
    """The tracking store cannot be reached or used."""


class TrainingError(RnnflowError):
    """Training cannot go on, e.g. the loss became NaN or infinite."""
