"""Pipeline files: many runs of specs, each with overrides and/or a grid, validated up front.

```yaml
name: cell_comparison
experiment: rnnflow-cells
set:                                   # applied to every run
  train.iterations: 1500
runs:
  - spec: ../specs/gru_forecast.yaml   # relative to this file
    grid:                              # one run per combination
      model.cells[0].type: [rnn, lstm, gru]
      train.learning_rate: [1e-3, 1e-4]
```

Every resolved spec is validated before anything trains; an error in an override points at the
line of the pipeline file that wrote it. Nothing here imports TensorFlow.
"""

import dataclasses
import functools
import itertools
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from rnnflow.errors import SpecError, SpecIssue
from rnnflow.spec.base import NAME_PATTERN, Section, json_schema
from rnnflow.spec.spec import Spec, spec_from_document
from rnnflow.spec.validate import validate_named
from rnnflow.spec.keypath import KeyPath, format_path, parse_path, shortest_endings
from rnnflow.spec.overrides import apply_overrides, set_path
from rnnflow.spec.yamlio import Document, Position, load_yaml

MAX_RUNS = 1000


class RunEntry(Section):
    """One spec to run, with its overrides and an optional grid of values."""

    spec: str = Field(..., min_length=1, description="The spec file, relative to the pipeline file.")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="Child run name (default: the spec's).")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides: key path -> value.")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="Key path -> list of values; one run per combination."
    )


class Pipeline(Section):
    """A list of runs recorded as children of one parent MLflow run."""

    name: str = Field(..., pattern=NAME_PATTERN, description="The pipeline's name (default: the file name).")
    description: str = Field("", max_length=10_000, description="What the comparison is about.")
    experiment: str = Field("rnnflow", min_length=1, max_length=200,
                            description="MLflow experiment of the parent and every child run.")
    tracking_uri: str | None = Field(None, description="Tracking store; default: MLflow's own.")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides applied to every run.")
    runs: list[RunEntry] = Field(..., min_length=1, description="The specs to run, with their overrides and grids.")


@dataclasses.dataclass
class Child:
    """One resolved run of a pipeline.

    Attributes:
        name: the child run's name.
        spec: the validated spec, overrides applied.
        overrides: the overrides as `key.path=value` texts (for tags and the record).
        varied: the grid values of this child (key path text -> value).
    """

    name: str
    spec: Spec
    overrides: list[str]
    varied: dict[str, Any]


_PIPELINE_ONLY = {"runs", "experiment", "set"}
_SPEC_ONLY = {"data", "model", "train", "evaluate", "tracking"}


def is_pipeline(doc: Document) -> bool:
    """Whether a document is a pipeline: a mapping with pipeline keys (runs, experiment, set)
    and none of a spec's sections. Anything else is read as a spec."""
    if not isinstance(doc.data, dict):
        return False
    keys = set(doc.data)
    return bool(keys & _PIPELINE_ONLY) and not keys & _SPEC_ONLY


def _value_text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _key_issue(doc: Document, where: KeyPath, key: str) -> SpecIssue | None:
    try:
        parse_path(key)
    except ValueError as error:
        pos = doc.position(where + (key,), key=True)
        return SpecIssue(pos.source, pos.line, pos.column, format_path(where + (key,)), str(error))
    return None


def expand(pipeline: Pipeline, doc: Document, extra: tuple[str, ...] = ()) -> list[Child]:
    """Resolve every run of a pipeline into a validated spec.

    Args:
        pipeline: the validated pipeline.
        doc: its document (for positions and the base directory).
        extra: `--set` overrides applied to every child after the pipeline's own.

    Raises:
        SpecError: every problem of every child, located in the pipeline or spec file.
    """
    base = doc.path.resolve().parent if doc.path is not None else Path.cwd()
    issues: list[SpecIssue] = []
    for key in pipeline.set:
        issue = _key_issue(doc, ("set",), key)
        issues += [issue] if issue else []
    for i, entry in enumerate(pipeline.runs):
        for section in ("set", "grid"):
            for key in getattr(entry, section):
                issue = _key_issue(doc, ("runs", i, section), key)
                issues += [issue] if issue else []
        for key, values in entry.grid.items():
            if not values:
                pos = doc.position(("runs", i, "grid", key))
                issues.append(SpecIssue(pos.source, pos.line, pos.column, format_path(("runs", i, "grid", key)),
                                        "give at least one value"))
    if issues:
        raise SpecError(issues)
    total = sum(_combinations(e) for e in pipeline.runs)
    if total > MAX_RUNS:
        pos = doc.position(("runs",))
        raise SpecError([SpecIssue(pos.source, pos.line, pos.column, "runs",
                                   f"{total} runs in all; at most {MAX_RUNS} (split the pipeline)")])
    children: list[Child] = []
    names: dict[str, int] = {}
    for i, entry in enumerate(pipeline.runs):
        spec_path = Path(entry.spec)
        spec_path = Path(os.path.normpath(spec_path if spec_path.is_absolute() else base / spec_path))
        keys = list(entry.grid)
        for values in itertools.product(*(entry.grid[k] for k in keys)):
            varied = dict(zip(keys, values))
            try:
                child = _child(pipeline, doc, i, entry, spec_path, varied, extra)
            except SpecError as error:
                issues.extend(error.issues)
                continue
            count = names.get(child.name, 0)
            names[child.name] = count + 1
            if count:
                child.name = f"{child.name}-{count + 1}"
                child.spec.tracking.run_name = child.name
            children.append(child)
    if issues:
        raise SpecError(issues)
    return children


def _combinations(entry: RunEntry) -> int:
    total = 1
    for values in entry.grid.values():
        total *= len(values)
    return total


def _child(pipeline: Pipeline, doc: Document, index: int, entry: RunEntry, spec_path: Path,
           varied: dict[str, Any], extra: tuple[str, ...]) -> Child:
    if not spec_path.is_file():
        pos = doc.position(("runs", index, "spec"))
        what = "is a directory, not a spec file" if spec_path.is_dir() else "file not found"
        raise SpecError([SpecIssue(pos.source, pos.line, pos.column, f"runs[{index}].spec", f"{what}: {spec_path}")])
    spec_doc = _load_spec_doc(spec_path)
    texts: list[str] = []
    entry_path: KeyPath = ("runs", index)
    layers = [(("set",), pipeline.set), (entry_path + ("set",), entry.set), (entry_path + ("grid",), varied)]
    for where, assignments in layers:
        for key, value in assignments.items():
            pos = doc.position(where + (key,), key=True)
            set_path(spec_doc, parse_path(key), value, Position(pos.source, pos.line, pos.column))
            texts.append(f"{key}={_value_text(value)}")
    apply_overrides(spec_doc, extra)
    texts.extend(extra)
    pos = doc.position(entry_path)
    here = Position(pos.source, pos.line, pos.column)
    set_path(spec_doc, ("tracking", "experiment"), pipeline.experiment, here)
    if pipeline.tracking_uri is not None:
        set_path(spec_doc, ("tracking", "tracking_uri"), pipeline.tracking_uri, here)
    base_name = entry.name or (spec_doc.data.get("name") if isinstance(spec_doc.data, dict) else None) \
        or spec_path.stem
    shorts = shortest_endings([parse_path(k) for k in varied])  # cells[0].units and projection.units stay apart
    label = ",".join(f"{format_path(short)}={_value_text(v)}" for short, v in zip(shorts, varied.values()))
    name = f"{base_name}[{label}]" if label else str(base_name)
    set_path(spec_doc, ("tracking", "run_name"), name, here)
    try:
        spec = spec_from_document(spec_doc)
    except SpecError as error:
        # Say which run an error in the pipeline file belongs to; a `--set` or a spec file's own
        # error is the same for every run and is reported once.
        where = f" (run {name} of {spec_path.name})"
        raise SpecError([dataclasses.replace(x, message=x.message + where) if x.source == doc.source else x
                         for x in error.issues]) from None
    return Child(name, spec, texts, varied)


@functools.lru_cache(maxsize=64)
def _parsed(path: Path, stamp: tuple[int, int]) -> Document:
    return load_yaml(path)


def _load_spec_doc(path: Path) -> Document:
    """A fresh copy of a spec file's Document; a grid loads the same spec many times, parse it once."""
    info = path.stat()
    return _parsed(path, (info.st_mtime_ns, info.st_size)).copy()


def load_pipeline(path: str | Path, overrides: tuple[str, ...] = ()) -> tuple[Pipeline, list[Child]]:
    """Load a pipeline file and resolve every run into a validated spec.

    Raises:
        SpecError: listing every problem, located in the pipeline file or the spec files.
    """
    doc = load_yaml(path)
    return pipeline_from_document(doc, overrides)


def pipeline_from_document(doc: Document, overrides: tuple[str, ...] = ()) -> tuple[Pipeline, list[Child]]:
    """Validate a pipeline Document and expand it (see `load_pipeline`)."""
    pipeline = validate_named(doc, Pipeline, what="pipeline")
    return pipeline, expand(pipeline, doc, tuple(overrides))


def check_file(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """Validate a spec or pipeline file; return which it is ('spec' or 'pipeline').

    Raises:
        SpecError: listing every problem in the file.
    """
    doc = load_yaml(path)
    if is_pipeline(doc):
        pipeline_from_document(doc, overrides)
        return "pipeline"
    spec_from_document(doc, overrides)
    return "spec"


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema of pipeline files."""
    return json_schema(Pipeline, "rnnflow pipeline")
