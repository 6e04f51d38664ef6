"""`--set key.path=value` overrides and pipeline assignments, applied to a loaded Document.

An override is placed like a value written in the file: later errors about the keys it set
point at the `--set` (or at the pipeline line) that wrote them.
"""

from __future__ import annotations

import copy
from typing import Any

from rnnflow.errors import SpecError, SpecIssue, describe
from rnnflow.spec.keypath import KeyPath, format_path, parse_path
from rnnflow.spec.yamlio import Document, Position, parse_yaml


def apply_overrides(doc: Document, assignments: list[str] | tuple[str, ...]) -> None:
    """Apply `--set` assignments in order (see `apply_override`).

    Raises:
        SpecError: listing the issue of every assignment that cannot be applied, not only the
            first; the others are applied.
    """
    issues: list[SpecIssue] = []
    for assignment in assignments:
        try:
            apply_override(doc, assignment)
        except SpecError as error:
            issues.extend(error.issues)
    if issues:
        raise SpecError(issues)


def apply_override(doc: Document, assignment: str) -> None:
    """Apply one `--set key.path=value` to a Document in place.

    The value is parsed as YAML (so `8`, `1e-3`, `[1, 2]` and `{a: 1}` work) with the same safety
    rules as a file. Intermediate mappings are created; list indexes must exist, or equal the
    list's length to append. Every key the override sets or creates is reported, in later
    errors, at the `--set` rather than at a place in the file.

    Raises:
        SpecError: when the assignment is malformed or its path cannot be set.
    """
    source = f"--set {assignment}"

    def fail(path: str, message: str) -> SpecError:
        return SpecError([SpecIssue(source, None, None, path, message)])

    if "=" not in assignment:
        raise fail("", "expected KEY=VALUE, like model.cells[0].units=64")
    key_text, value_text = assignment.split("=", 1)
    try:
        key_path = parse_path(key_text.strip())
    except ValueError as error:
        raise fail("", str(error)) from None
    if not value_text.strip():
        # YAML reads nothing as null: `--set train=` would quietly switch training off.
        raise fail(key_text.strip(), "no value after '='; write null to clear a key")
    try:
        value_doc = parse_yaml(value_text, source)
    except SpecError as error:
        raise SpecError([_in_value(issue, key_text) for issue in error.issues]) from None
    set_path(doc, key_path, value_doc.data, Position(source), value_positions=value_doc.values)


def set_path(doc: Document, key_path: KeyPath, value: Any, position: Position,
             value_positions: dict[KeyPath, Position] | None = None) -> None:
    """Set the value at `key_path` in a Document (an override from `--set` or a pipeline).

    Errors, and the positions of everything at or below the path (and of keys created on the
    way to it), point at `position`.

    Raises:
        SpecError: when the path cannot be set (no such list item, not inside a mapping).
    """

    def fail(path: str, message: str) -> SpecError:
        return SpecError([SpecIssue(position.source, position.line, position.column, path, message)])

    if not isinstance(doc.data, dict):
        raise fail("", "the document is not a mapping")
    value = copy.deepcopy(value)
    target: Any = doc.data
    for i, part in enumerate(key_path):
        here = format_path(key_path[: i + 1])
        last = i == len(key_path) - 1
        if isinstance(part, int):
            if not isinstance(target, list):
                raise fail(format_path(key_path[:i]), f"is {describe(target)}, not a list")
            if part > len(target) or (part == len(target) and not last):
                raise fail(here, f"no such list item: the list has {len(target)} item(s)"
                           + (f"; [{len(target)}] appends one" if last else ""))
            if part == len(target):
                target.append(value)
                break
        elif not isinstance(target, dict):
            raise fail(format_path(key_path[:i]), f"is {describe(target)}, not a mapping: cannot set '{part}' in it")
        elif not last and (part not in target or target[part] is None):
            target[part] = [] if isinstance(key_path[i + 1], int) else {}
        if last:
            target[part] = value
        else:
            target = target[part]
    # Everything at or below the path now comes from `position`, and so does any key on the way
    # to it that the file did not have.
    for table in (doc.values, doc.keys):
        for existing in [p for p in table if p[: len(key_path)] == key_path]:
            del table[existing]
    for cut in range(1, len(key_path) + 1):
        doc.keys.setdefault(key_path[:cut], position)
        doc.values.setdefault(key_path[:cut], position)
    for sub_path in value_positions or {}:
        doc.values[key_path + sub_path] = position


def _in_value(issue: SpecIssue, key_text: str) -> SpecIssue:
    """An issue of an override's value, placed at the overridden key rather than a line:column."""
    where = ""
    if issue.line is not None:
        where = f" (at character {issue.column} of the value)" if issue.line == 1 else (
            f" (at line {issue.line}, character {issue.column} of the value)")
    path = f"{key_text}.{issue.path}" if issue.path else key_text
    return SpecIssue(issue.source, None, None, path, issue.message + where)
