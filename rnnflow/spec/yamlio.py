"""Safe YAML loading that remembers where every value was written.

PyYAML's `safe_load` forgets positions, silently keeps the last of two duplicate keys and reports
tabs as "found character '\\t' that cannot start any token". This module composes the node tree
itself, builds plain Python data from it (mappings, lists, strings, numbers, booleans, null only)
and keeps a map from each key path to its line and column, so validation errors can say
`specs/x.yaml:12:9 model.cells[1].units: ...`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from rnnflow.errors import SpecError, SpecIssue
from rnnflow.spec.keypath import KeyPath, format_path

# Scalar tags a spec may use; anything else (!!python/object, !!binary, custom tags) is refused.
_SAFE_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
}
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
# Bounds against alias bombs ("billion laughs") and self-referencing anchors.
_MAX_NODES = 200_000
_MAX_DEPTH = 64
_MAX_BYTES = 10_000_000
_TOO_DEEP = f"lists and mappings nested too deeply (a spec needs far fewer than {_MAX_DEPTH} levels)"
_TOO_LARGE = f"expands to over {_MAX_NODES} values (counting what its aliases repeat); a spec needs far fewer"


class _DepthLimit:
    """Stops composing past `_MAX_DEPTH` levels: PyYAML's composer recurses once per level, so
    `[[[[...]]]]` a few thousand deep would otherwise end in a RecursionError."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1


class _Loader(_DepthLimit, yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a number (YAML 1.1 needs `1.0e-3`; people write `1e-3`).

    It also stops past `_MAX_DEPTH` levels of nesting, in the composer and in the scanner, which
    takes time quadratic in the depth of `[`/`{` nesting (a 10 MB file of `[` would never finish).
    Its error messages are the ones `_syntax_message` knows how to reword.
    """

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        if self.flow_level >= _MAX_DEPTH:
            raise _TooDeep(self.get_mark())
        super().fetch_flow_collection_start(token_class)


class _TooDeep(Exception):
    def __init__(self, mark: Any):
        self.mark = mark


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

# libyaml's parser (when PyYAML was built with it) feeding the same Python composer, resolver and
# constructor: about 10x faster on a spec, which `rnnflow validate specs/*.yaml` feels. Text that
# the pure-Python loader accepts reads identically through it, positions included (tested on every
# YAML file of the repository and on fuzzed text); libyaml also accepts a few syntax corners PyYAML
# refuses. Any error, and text with characters the two read differently, goes to `_Loader`, whose
# messages `_syntax_message` rewords.
_CParser = getattr(getattr(yaml, "_yaml", None), "CParser", None) if yaml.__with_libyaml__ else None
_FastLoader: Any = None
if _CParser is not None:

    class _FastLoader(_DepthLimit, yaml.composer.Composer, _CParser, yaml.constructor.SafeConstructor,
                      yaml.resolver.Resolver):
        def __init__(self, stream: str):
            _CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a value came from: a file position, or an override given on the command line."""

    source: str
    line: int | None = None
    column: int | None = None


@dataclasses.dataclass
class Document:
    """Plain data loaded from YAML plus the position of every key and value in it.

    Attributes:
        data: the loaded data (dicts, lists and scalars).
        source: the name errors use for the file (as the user gave it).
        text: the file's text as written.
        values: key path -> position of the value.
        keys: key path -> position of the key itself (mappings only).
        path: the file, when the document came from one.
    """

    data: Any
    source: str
    text: str = ""
    values: dict[KeyPath, Position] = dataclasses.field(default_factory=dict)
    keys: dict[KeyPath, Position] = dataclasses.field(default_factory=dict)
    path: Path | None = None

    def position(self, key_path: KeyPath, *, key: bool = False) -> Position:
        """The position of `key_path` (its key when `key`), else of its nearest known ancestor."""
        table = self.keys if key else self.values
        if key_path in table:
            return table[key_path]
        for cut in range(len(key_path) - 1, -1, -1):
            prefix = key_path[:cut]
            if prefix in self.values:
                return self.values[prefix]
        return Position(self.source)

    def copy(self) -> Document:
        """A copy whose data and position tables can be changed without changing this Document.

        Much cheaper than `copy.deepcopy`: the data is plain mappings, lists and immutable
        scalars (the builder makes a new object for every node, aliases included), and positions
        are immutable, so only the containers are copied.
        """
        return dataclasses.replace(self, data=_copy_data(self.data), values=dict(self.values), keys=dict(self.keys))


def _copy_data(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_data(item) for item in value]
    return value


_KEY_LINE = re.compile(r"""^(?P<key>"[^"]*"|'[^']*'|[^\s#'"\[\]{},:&*!|>%@`-][^:#]*?|-[^\s:#][^:#]*?)\s*:(\s|$)""")


def path_near(text: str, line: int, column: int) -> KeyPath:
    """The key path of the block around (`line`, `column`) (0-based), read from the indentation
    of the lines above it: for syntax errors, where no parsed tree exists to ask.

    A best effort from the text alone (block style; flow collections and multi-line scalars are
    read as far as their first line says).
    """
    lines = text.splitlines()
    path: list[str | int] = []
    limit = column
    dash_column = None  # a list's key may stand in the column of its '- ' ("indentless" list)
    for index in range(min(line, len(lines) - 1), -1, -1):
        content = lines[index]
        if index == line:
            content = content[:column]  # the problem's own line counts up to the problem
        stripped = content.lstrip(" ")
        indent = len(content) - len(stripped)
        if not stripped or stripped.startswith("#"):
            continue
        is_item = stripped.startswith("- ") or stripped == "-"
        key = None if is_item else _KEY_LINE.match(stripped)
        if indent == dash_column and key is not None:
            pass  # the key of a list written in the column of its own '- ' (allowed in YAML)
        elif indent >= limit or (not is_item and key is None):
            continue  # deeper or beside the problem, a continued scalar, a flow collection's line
        path.append(_item_index(lines, index, indent) if is_item else key["key"].strip("'\""))
        dash_column = indent if is_item else None
        limit = indent
        if limit == 0 and dash_column is None:
            break
    return tuple(reversed(path))


def _item_index(lines: list[str], index: int, indent: int) -> int:
    """Which item of its list the `- ` on line `index` (at `indent`) starts."""
    count = 0
    for above in range(index - 1, -1, -1):
        stripped = lines[above].lstrip(" ")
        depth = len(lines[above]) - len(stripped)
        if not stripped or stripped.startswith("#") or depth > indent:
            continue
        if depth < indent or not (stripped.startswith("- ") or stripped == "-"):
            break
        count += 1
    return count


def _issue(source: str, mark: Any, message: str, path: KeyPath = ()) -> SpecIssue:
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return SpecIssue(source, line, column, format_path(path), message)


def _syntax_message(error: yaml.MarkedYAMLError) -> str:
    """PyYAML's error in words a spec author can act on, with where an unclosed thing opened."""
    problem = error.problem or str(error)
    context = error.context or ""
    if "'\\t'" in problem:
        return "tab character: YAML indentation must use spaces, not tabs"
    mark = error.context_mark
    opened = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if context.startswith("while parsing a flow") and problem.startswith("expected ','"):
        bracket, closer = ("{", "}") if "mapping" in context else ("[", "]")
        hint = ""
        if bracket == "{" and "'['" in problem:
            hint = "; inside { } quote keys that contain brackets: {'model.cells[0].units': 8}"
        return (f"YAML syntax error: the '{bracket}' opened{opened} is not closed with '{closer}' "
                f"(or a ',' is missing between its items){hint}")
    if context == "while scanning a quoted scalar" and "end of stream" in problem:
        return f"YAML syntax error: the quoted string opened{opened} is never closed"
    if context == "while parsing a block mapping" and problem.startswith("expected <block end>"):
        if "'-'" in problem:
            return "YAML syntax error: a list item ('- ') where a key was expected; check the indentation"
        return ("YAML syntax error: this line is indented differently from the keys above it "
                "(YAML nests by indentation: the keys of one mapping start in the same column)")
    if context == "while parsing a block collection" and problem.startswith("expected <block end>"):
        # PyYAML: "expected <block end>, but found '?'" (a key in the column of the list's dashes)
        # or "... '<block mapping start>'" (a key deeper than the dash, shallower than the item's keys).
        if "'?'" in problem:
            return ("YAML syntax error: a key in the column of the list's '- ' (the list starts"
                    f"{opened}): indent it like the keys of the item above it, or start a new item with '- '")
        if "<block mapping start>" in problem:
            return ("YAML syntax error: this line is indented differently from the keys of the list item "
                    f"above it (the list starts{opened}); indent it exactly like them")
        return f"YAML syntax error: the list that starts{opened} is broken here; check the indentation"
    if problem == "mapping values are not allowed here":
        return "YAML syntax error: ': ' where no key can start; quote a value that contains ': ', or fix the indentation"
    if "for merging" in problem:
        return "YAML syntax error: a merge key (<<) takes a mapping or a list of mappings, like <<: *defaults"
    if problem.startswith("found undefined alias"):
        name = problem.split("'")[1] if "'" in problem else ""
        return f"YAML syntax error: alias *{name} refers to no anchor &{name} defined before it"
    if context == "expected a single document in the stream":
        return "YAML syntax error: a second document ('---') in the file; a spec is one document"
    context = f"{context}{opened}: " if context else ""
    return f"YAML syntax error: {context}{problem}"


class _Builder:
    """Turns a composed node tree into plain data, recording positions and refusing unsafe tags."""

    def __init__(self, source: str, loader: yaml.constructor.SafeConstructor):
        self.source = source
        self.loader = loader
        self.values: dict[KeyPath, Position] = {}
        self.keys: dict[KeyPath, Position] = {}
        self.issues: list[SpecIssue] = []
        self.count = 0

    def _pos(self, mark: Any) -> Position:
        return Position(self.source, mark.line + 1, mark.column + 1)

    def build(self, node: yaml.Node, path: KeyPath = (), depth: int = 0) -> Any:
        self.count += 1
        if depth > _MAX_DEPTH:
            raise _TooLarge(node, _TOO_DEEP)
        if self.count > _MAX_NODES:
            raise _TooLarge(node, _TOO_LARGE)
        self.values.setdefault(path, self._pos(node.start_mark))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                self.issues.append(_issue(self.source, node.start_mark, _tag_message(node.tag), path))
                return None
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        if node.tag == _TIMESTAMP_TAG:
            return node.value  # a date in a description stays the text it was
        if node.tag not in _SAFE_SCALAR_TAGS:
            self.issues.append(_issue(self.source, node.start_mark, _tag_message(node.tag), path))
            return None
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as error:
            self.issues.append(_issue(self.source, node.start_mark, f"invalid value: {error}", path))
            return None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, depth: int) -> Any:
        if node.tag != _MAP_TAG:
            self.issues.append(_issue(self.source, node.start_mark, _tag_message(node.tag), path))
            return None
        seen: dict[Any, Any] = {}
        own_keys = [k for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        for key_node in own_keys:
            if not isinstance(key_node, yaml.ScalarNode):
                self.issues.append(
                    _issue(self.source, key_node.start_mark, "keys must be plain strings", path)
                )
                continue
            if key_node.value in seen:
                first = seen[key_node.value].start_mark
                self.issues.append(
                    _issue(
                        self.source,
                        key_node.start_mark,
                        f"duplicate key '{key_node.value}' (first given at line {first.line + 1})",
                        path + (key_node.value,),
                    )
                )
            seen[key_node.value] = key_node
        try:
            self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merges
        except yaml.MarkedYAMLError as error:
            self.issues.append(_issue(self.source, error.problem_mark, _syntax_message(error), path))
            return None
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value if key_node.tag in _SAFE_SCALAR_TAGS else None
            if key is None:
                self.issues.append(
                    _issue(self.source, key_node.start_mark, _tag_message(key_node.tag), path)
                )
                continue
            child = path + (key,)
            self.keys[child] = self._pos(key_node.start_mark)
            self.values.pop(child, None)  # a later duplicate or explicit key wins, as in YAML
            result[key] = self.build(value_node, child, depth + 1)
        return result


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node, message: str):
        self.node = node
        self.message = message


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that aliases would expand past the size or depth limits.

    PyYAML composes an alias as a second reference to the anchored node, so nine aliases to a
    list of nine aliases... ("billion laughs") is a small graph that expands to billions of
    values. This measures the expanded size of every node once (memoized), before anything is
    expanded, and stops at the smallest node that is too large.

    Raises:
        _TooLarge: at that node, or at an anchor that contains an alias to itself.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _TooLarge(node, "an anchor contains an alias to itself")
        if depth > _MAX_DEPTH:
            raise _TooLarge(node, _TOO_DEEP)
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        active.discard(key)
        if total > _MAX_NODES:
            raise _TooLarge(node, _TOO_LARGE)
        sizes[key] = total
        return total

    size(root, 0)


def _tag_message(tag: str) -> str:
    shown = tag.replace("tag:yaml.org,2002:", "!!")
    return f"tag {shown} is not allowed: a spec is plain data (mappings, lists, strings, numbers)"


def _unprintable(text: str, source: str, error: yaml.reader.ReaderError) -> SpecIssue:
    before = text[: error.position]
    line = before.count("\n") + 1
    column = error.position - (before.rfind("\n") + 1) + 1
    return SpecIssue(
        source,
        line,
        column,
        "",
        f"non-printable character U+{error.character:04X} is not allowed in YAML; remove it",
    )


def parse_yaml(text: str, source: str, *, path: Path | None = None) -> Document:
    """Parse YAML text into a Document.

    Args:
        text: the YAML text.
        source: the name used in error messages.
        path: the file it came from, if any.

    Returns:
        The Document; its data may be any YAML value (callers check the shape they need).

    Raises:
        SpecError: on a syntax error, tabs, duplicate keys, unsafe tags or an oversized document.
    """
    if _fast_path_allowed(text):
        document = _parse_fast(text, source, path)
        if document is not None:
            return document
    return _parse(_Loader, text, source, path)


# Characters libyaml reads differently from PyYAML (tabs, byte-order marks, Unicode line breaks):
# text holding one goes to the pure-Python loader.
_NOT_FOR_LIBYAML = re.compile("[\t\ufeff\x85\u2028\u2029]")


def _fast_path_allowed(text: str) -> bool:
    """Whether libyaml may parse `text` (see `_NOT_FOR_LIBYAML`; non-printable text goes to PyYAML too)."""
    return (_FastLoader is not None and not _NOT_FOR_LIBYAML.search(text)
            and not yaml.reader.Reader.NON_PRINTABLE.search(text))


def _parse_fast(text: str, source: str, path: Path | None) -> Document | None:
    """`_parse` with libyaml's parser, or None when anything goes wrong (the caller then parses
    again with the pure-Python loader, for its exact error messages)."""
    try:
        return _parse(_FastLoader, text, source, path)
    except SpecError:  # `_parse` turns every parse problem into one
        return None


def _parse(loader_class: Any, text: str, source: str, path: Path | None) -> Document:
    try:
        loader = loader_class(text)
    except yaml.reader.ReaderError as error:  # a control character anywhere in the text
        raise SpecError([_unprintable(text, source, error)]) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            near = path_near(text, mark.line, mark.column) if mark is not None else ()
            raise SpecError([_issue(source, mark, _syntax_message(error), near)]) from None
        except yaml.YAMLError as error:
            raise SpecError([SpecIssue(source, None, None, "", f"YAML error: {error}")]) from None
        except _TooDeep as error:
            raise SpecError([_issue(source, error.mark, _TOO_DEEP)]) from None
        if node is None:
            return Document(None, source, text, path=path)
        builder = _Builder(source, loader)
        try:
            _check_expansion(node)
            data = builder.build(node)
        except _TooLarge as error:
            raise SpecError([_issue(source, error.node.start_mark, error.message)]) from None
        except RecursionError:
            raise SpecError([_issue(source, node.start_mark, "document nested too deeply")]) from None
        if builder.issues:
            raise SpecError(builder.issues)
        return Document(data, source, text, builder.values, builder.keys, path)
    finally:
        loader.dispose()


def read_text(path: Path, source: str) -> str:
    """Read a spec file as UTF-8, turning I/O and decoding problems into located SpecErrors."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([SpecIssue(source, None, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise SpecError([SpecIssue(source, None, None, "", "is a directory, not a file")]) from None
    except OSError as error:
        raise SpecError([SpecIssue(source, None, None, "", f"cannot read: {error.strerror}")]) from None
    if len(raw) > _MAX_BYTES:
        raise SpecError([SpecIssue(source, None, None, "", f"file too large ({len(raw)} bytes)")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        before = raw[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError(
            [
                SpecIssue(
                    source,
                    line,
                    column,
                    "",
                    f"not valid UTF-8 (byte 0x{raw[error.start]:02x}); save the file as UTF-8",
                )
            ]
        ) from None


def load_yaml(path: str | Path) -> Document:
    """Read and parse a YAML file with positions (see `parse_yaml`)."""
    path = Path(path)
    source = str(path)
    text = read_text(path, source)
    return parse_yaml(text, source, path=path)
