"""Key paths: `model.cells[0].units` as text and as a tuple ('model', 'cells', 0, 'units').

One implementation for every place that names a key in a spec: error messages, `--set`
overrides and pipeline grids.
"""

from __future__ import annotations

import re

KeyPath = tuple[str | int, ...]


def format_path(key_path: KeyPath) -> str:
    """Render ('model', 'cells', 1, 'units') as `model.cells[1].units`.

    A key that would read ambiguously (one holding '.', brackets or spaces, or an empty one, like
    a pipeline's `model.cells[0].units` override key) is quoted: `runs[0].set['model.cells[0].units']`.
    """
    out = ""
    for part in key_path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part or any(c in part for c in ".[] "):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)((?:\[\d+\])*)")


def parse_path(text: str) -> KeyPath:
    """Parse `model.cells[0].units` into ('model', 'cells', 0, 'units').

    Raises:
        ValueError: when the text is not a key path.
    """
    parts: list[str | int] = []
    for chunk in text.split("."):
        match = _PATH_PART.fullmatch(chunk)
        if not match:
            raise ValueError(f"'{text}' is not a key path like model.cells[0].units")
        parts.append(match.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(parts)


def param_name(text: str) -> str:
    """The MLflow param a key path is logged as: `model.cells[0].units` -> `model.cells.0.units`
    (MLflow's names may not hold brackets).

    Raises:
        ValueError: when the text is not a key path.
    """
    return ".".join(str(part) for part in parse_path(text))


def shortest_endings(paths: list[KeyPath]) -> list[KeyPath]:
    """Each path cut to its shortest ending that no other path shares, never starting at an index:
    ('type',) for model.cells[0].type alone; ('cells', 0, 'type') and ('cells', 1, 'type') for two."""
    endings = []
    for path in paths:
        size = 1
        while size < len(path) and (sum(1 for other in paths if other[-size:] == path[-size:]) > 1
                                    or isinstance(path[-size], int)):
            size += 1
        endings.append(path[-size:])
    return endings
