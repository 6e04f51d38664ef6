"""Validate a loaded Document against a pydantic model and report every error with its place.

Pydantic reports locations such as ('model', 'cells', 0, 'lstm', 'units'), where 'lstm' is the
union tag. This module maps such a location back onto the YAML document, finds its line and
column, and rewrites the message the way a spec author thinks about it, with a did-you-mean for
misspelt keys and `type:` names.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, TypeVar

import pydantic

from rnnflow.errors import SpecError, SpecIssue, describe
from rnnflow.spec.base import NAME_PATTERN, PATTERN_WORDS, KeyedError
from rnnflow.spec.keypath import KeyPath, format_path
from rnnflow.spec.yamlio import Document

M = TypeVar("M", bound=pydantic.BaseModel)


def _model_classes(annotation: Any) -> list[type]:
    """Every pydantic model class an annotation can hold (through Optional, Union, Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_classes(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in _model_classes(arg)]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return []


def _items_of(annotation: Any) -> Any:
    """The element annotation of list[...] (through Optional/Annotated), else None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _items_of(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _items_of(arg)
            if found is not None:
                return found
        return None
    if origin is list:
        return typing.get_args(annotation)[0]
    return None


def _tag_of(cls: type) -> str | None:
    field = cls.model_fields.get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if len(args) == 1 else None


def _is_plain_union(annotation: Any) -> bool:
    """Whether pydantic tries the members of this annotation one by one (str | list[str]).

    Unions of models are the registries' discriminated unions: their location step is the tag.
    """
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType) or _model_classes(annotation):
        return False
    return len([a for a in typing.get_args(annotation) if a is not type(None)]) > 1


def _resolve(root: type[pydantic.BaseModel], data: Any, loc: tuple) -> tuple[KeyPath, list[type], Any]:
    """Walk a pydantic error location through the data.

    Returns:
        The key path in the document (union tags and pydantic's internal steps removed), the
        model classes the last mapping on the path may be (for key suggestions), and, when the
        error is one member's of a plain union (`str | list[str]`), (key path of the union, member
        name), else None.
    """
    path: list[str | int] = []
    classes: list[type] = [root]
    annotation: Any = None
    branch = None
    for part in loc:
        if isinstance(part, int):
            if isinstance(data, list) and 0 <= part < len(data):
                data = data[part]
            else:
                data = None
            path.append(part)
            annotation = _items_of(annotation) if annotation is not None else None
            classes = _model_classes(annotation) if annotation is not None else []
            continue
        if branch is None and annotation is not None and _is_plain_union(annotation):
            branch = (tuple(path), part)  # pydantic names the member it tried: 'str', 'list[str]'
            continue
        tags = {_tag_of(c) for c in classes} if len(classes) > 1 else set()
        if isinstance(data, dict) and part in tags and data.get("type") == part:
            # A union tag, not a key, even when the variant has a key of the same name
            # (a `device` wrapper's `device`).
            classes = [c for c in classes if _tag_of(c) == part]
            continue
        is_key = isinstance(data, dict) and (part in data or any(part in c.model_fields for c in classes))
        if not is_key:
            continue  # a pydantic-internal step (a validator, a member), not a key of the spec
        path.append(part)
        field = next((c.model_fields[part] for c in classes if part in c.model_fields), None)
        annotation = field.annotation if field is not None else None
        data = data.get(part)
        new_classes = _model_classes(annotation) if annotation is not None else []
        if new_classes:
            classes = new_classes
        elif field is not None:
            classes = []
    return tuple(path), classes, branch


_MEMBER_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                 "list[str]": "a list of strings", "list[int]": "a list of integers", "list[float]": "a list of numbers"}


def _member_fits(member: str, value: Any) -> bool:
    """Whether a value has the shape of a plain union's member, so the member's errors are the ones to show."""
    if member.startswith("list"):
        return isinstance(value, list)
    if member == "str":
        return isinstance(value, str)
    if member in ("int", "float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if member == "bool":
        return isinstance(value, bool)
    return isinstance(value, dict)  # dict[...] or a model class


def _value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    """Whether a string is a number in quotes."""
    try:
        return isinstance(value, str) and float(value) == float(value)
    except ValueError:
        return False


def _suggest(word: str, options: list[str]) -> str:
    import difflib  # only a spec with errors needs it

    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _key_of_other_types(key: str, classes: list[type]) -> str | None:
    """'forget_bias is a key of lstm and peephole_lstm cells, not gru' when `key` belongs to other
    types of the same kind (a did-you-mean would suggest a key of this type that merely looks alike)."""
    from rnnflow.spec.registry import REGISTRIES

    for registry in REGISTRIES:
        own = [name for name in (registry.name_of(c) for c in classes) if name]
        owners = [name for name in registry.owners(key) if name not in own] if own else []
        if owners:
            listed = ", ".join(owners[:-1]) + f" and {owners[-1]}" if len(owners) > 1 else owners[0]
            return f"{key} is a key of {listed} {registry.kind}s, not {' or '.join(own)}"
    return None


_TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def _message(error: dict, classes_parent: list[type], key: str | int | None) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": ("greater than", "gt"),
            "greater_than_equal": ("at least", "ge"),
            "less_than": ("less than", "lt"),
            "less_than_equal": ("at most", "le"),
        }[kind]
        return f"must be {words[0]} {ctx.get(words[1])} (got {_show(value)})"
    if kind == "extra_forbidden":
        elsewhere = _key_of_other_types(str(key), classes_parent)
        if elsewhere:
            return f"unknown key '{key}': {elsewhere}"
        options = sorted({k for c in classes_parent for k in c.model_fields})
        return f"unknown key '{key}'{_suggest(str(key), options)}"
    if kind == "missing":
        field = next((c.model_fields[key] for c in classes_parent if key in c.model_fields), None)
        about = (field.description or "").rstrip(".") if field is not None else ""
        return f"is required ({about[:1].lower()}{about[1:]})" if about else "is required"
    if kind == "union_tag_invalid":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        tag = value.get("type") if isinstance(value, dict) else ctx.get("tag")
        if not isinstance(tag, str):
            return f"must be the name of a type, one of: {', '.join(expected)} (got {describe(tag)})"
        return f"unknown type '{tag}'{_suggest(tag, expected)}; expected one of: {', '.join(expected)}"
    if kind == "union_tag_not_found":
        tags = [t for t in (_tag_of(c) for c in classes_parent) if t]
        return f"needs a 'type': one of {', '.join(tags)}" if tags else "needs a 'type' key"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        got = _show(value) if isinstance(value, str) else describe(value)
        return f"must be one of {', '.join(expected)} (got {got}){_suggest(str(value), expected)}"
    if kind == "finite_number":
        if isinstance(value, float) and value == value:  # an infinity, often a number too large
            return f"must be a finite number (got {describe(value)}; numbers beyond ±1.8e308 read as infinite)"
        return f"must be a finite number (got {describe(value)})"
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        short = kind.endswith("too_short")
        limit = ctx.get("min_length") if short else ctx.get("max_length")
        if isinstance(value, str) and short and limit == 1:
            return "must not be empty"
        word = "at least" if short else "at most"
        unit = "character" if isinstance(value, str) else "item"
        return f"must have {word} {limit} {unit}{'' if limit == 1 else 's'}"
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(ctx.get("pattern"))
        if words:
            return f"{_show(value)} is not allowed here: use {words}"
        return f"{_show(value)} is not allowed here (must match {ctx.get('pattern')})"
    if kind in _TYPE_NAMES:
        hint = "; write it without quotes" if kind.startswith(("int", "float")) and _is_number(value) else ""
        return f"must be {_TYPE_NAMES[kind]} (got {describe(value)}{hint})"
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", error["msg"]))
        return text
    return error["msg"]


def issues_from(error: pydantic.ValidationError, doc: Document, root: type[pydantic.BaseModel]) -> list[SpecIssue]:
    """Turn a pydantic ValidationError into located SpecIssues."""
    issues = []
    errors = error.errors(include_url=False)
    resolved = [_resolve(root, doc.data, item["loc"]) for item in errors]
    # A value that fits no member of a plain union gets one error naming them all; a value that
    # fits one (a list for str | list[str]) gets only that member's errors.
    members: dict[KeyPath, dict[str, None]] = {}  # in pydantic's order: the annotation's
    for _, _, branch in resolved:
        if branch is not None:
            members.setdefault(branch[0], {})[branch[1]] = None
    for union_path, names in members.items():
        value = _value_at(doc.data, union_path)
        if not any(_member_fits(name, value) for name in names):
            words = " or ".join(_MEMBER_WORDS.get(n, "a mapping") for n in names)
            position = doc.position(union_path)
            issues.append(SpecIssue(position.source, position.line, position.column, format_path(union_path),
                                    f"must be {words} (got {describe(value)})"))
    for item, (path, classes, branch) in zip(errors, resolved):
        if branch is not None and not _member_fits(branch[1], _value_at(doc.data, branch[0])):
            continue  # reported above, or another member's error is the one that applies
        kind = item["type"]
        if kind == "extra_forbidden":
            parent_path, parent_classes, _ = _resolve(root, doc.data, item["loc"][:-1])
            message = _message(item, parent_classes, path[-1] if path else None)
            position = doc.position(path, key=True)
        elif kind == "missing":
            parent_path, parent_classes, _ = _resolve(root, doc.data, item["loc"][:-1])
            message = _message(item, parent_classes, path[-1] if path else None)
            position = doc.position(path)
        elif kind == "union_tag_invalid":
            message = _message(item, classes, None)
            path = path + ("type",)
            position = doc.position(path)
        else:
            raised = (item.get("ctx") or {}).get("error")
            if isinstance(raised, KeyedError):  # a section's validator pointing at one of its keys
                path, message = path + raised.path, raised.message
            else:
                message = _message(item, classes, path[-1] if path else None)
            position = doc.position(path)
        issues.append(SpecIssue(position.source, position.line, position.column, format_path(path), message))
    # One error per place and message (SpecError drops repeats), in document order.
    return sorted(issues, key=lambda i: (i.line or 0, i.column or 0, i.path))


def validate(doc: Document, root: type[M], *, what: str = "spec") -> M:
    """Validate a Document against `root`.

    Raises:
        SpecError: listing every problem, each with its file, line, column and key path.
    """
    if doc.data is None and () not in doc.values:  # no YAML document at all
        has = "only comments" if doc.text.strip() else "nothing"
        raise SpecError([SpecIssue(doc.source, None, None, "",
                                   f"the file is empty (it holds {has}); a {what} is a mapping of sections")])
    if not isinstance(doc.data, dict):
        pos = doc.position(())
        raise SpecError(
            [SpecIssue(pos.source, pos.line, pos.column, "",
                       f"a {what} must be a mapping of sections, not {describe(doc.data)}")]
        )
    try:
        return root.model_validate(doc.data)
    except pydantic.ValidationError as error:
        raise SpecError(issues_from(error, doc, root)) from None


def validate_named(doc: Document, root: type[M], *, what: str) -> M:
    """`validate` for a spec or pipeline, whose `name:` defaults to the file's name.

    Raises:
        SpecError: as `validate`; an unusable file name is reported as such.
    """
    named_after_file = isinstance(doc.data, dict) and "name" not in doc.data and doc.path is not None
    if named_after_file:
        doc.data = {"name": doc.path.stem, **doc.data}
    try:
        return validate(doc, root, what=what)
    except SpecError as error:
        if not named_after_file:
            raise
        raise SpecError([_name_from_file(issue, doc) for issue in error.issues]) from None


def _name_from_file(issue: SpecIssue, doc: Document) -> SpecIssue:
    """An error about a name the author never wrote: it is the file's, so say so."""
    if issue.path != "name":
        return issue
    return SpecIssue(doc.source, None, None, "name",
                     f"no name: given, and the file name '{doc.path.stem}' cannot serve as one "
                     f"({PATTERN_WORDS[NAME_PATTERN]}); add a name: key or rename the file")
