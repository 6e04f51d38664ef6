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
  - spec: ../specs/gru_forecast.yaml
    search:                            # trials chosen by an algorithm (see rnnflow.spec.search)
      space:
        train.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
      metric: val_loss
      mode: min
      num_samples: 8
resources: {cpus: 1, gpus: 0}          # what each run takes on Ray (--executor ray)
```

Every resolved spec is validated before anything trains; an error in an override points at the
line of the pipeline file that wrote it. Nothing here imports TensorFlow.
"""

import dataclasses
import functools
import itertools
import os
from pathlib import Path
from typing import Any, Callable

import pydantic
from pydantic import Field

from rnnflow.errors import SpecError, SpecIssue
from rnnflow.spec.base import NAME_PATTERN, Section, at, json_schema
from rnnflow.spec.search import SearchSpec
from rnnflow.spec.spec import Spec, spec_from_document
from rnnflow.spec.validate import validate_named
from rnnflow.spec.keypath import KeyPath, format_path, parse_path, shortest_endings
from rnnflow.spec.overrides import apply_overrides, set_path
from rnnflow.spec.yamlio import Document, Position, load_yaml

MAX_RUNS = 1000


class Resources(Section):
    """What one run takes on a Ray cluster. TensorFlow's threads are pinned to `cpus`, on Ray and,
    when a pipeline gives resources, in serial runs too (so their metrics compare)."""

    cpus: int = Field(1, ge=1, le=1024, description="CPU cores of the run; TensorFlow uses this many threads.")
    gpus: float = Field(0, ge=0, le=64, description="GPUs of the run (a fraction shares one GPU).")


class RunEntry(Section):
    """One spec to run, with its overrides and an optional grid of values or a search."""

    spec: str = Field(..., min_length=1, description="The spec file, relative to the pipeline file.")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="Child run name (default: the spec's).")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides: key path -> value.")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="Key path -> list of values; one run per combination."
    )
    search: SearchSpec | None = Field(None, description="Trials chosen by a search algorithm (instead of a grid).")
    resources: Resources | None = Field(None, description="What each run of this entry takes (default: the pipeline's).")

    @pydantic.model_validator(mode="after")
    def _grid_or_search(self) -> "RunEntry":
        if self.grid and self.search is not None:
            raise at("search", "give a grid or a search, not both")
        return self


class Pipeline(Section):
    """A list of runs recorded as children of one parent MLflow run."""

    name: str = Field(..., pattern=NAME_PATTERN, description="The pipeline's name (default: the file name).")
    description: str = Field("", max_length=10_000, description="What the comparison is about.")
    experiment: str = Field("rnnflow", min_length=1, max_length=200,
                            description="MLflow experiment of the parent and every child run.")
    tracking_uri: str | None = Field(None, description="Tracking store; default: MLflow's own.")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides applied to every run.")
    runs: list[RunEntry] = Field(..., min_length=1, description="The specs to run, with their overrides and grids.")
    resources: Resources | None = Field(
        None, description="What each run takes on Ray, {cpus: 1, gpus: 0} when not given; also pins TensorFlow's "
        "threads in serial runs when given."
    )

    @pydantic.model_validator(mode="after")
    def _one_search(self) -> "Pipeline":
        searches = [i for i, entry in enumerate(self.runs) if entry.search is not None]
        if len(searches) > 1:
            raise at(f"runs[{searches[1]}].search", "one search per pipeline (its parent run records the best trial)")
        return self


@dataclasses.dataclass
class Child:
    """One resolved run of a pipeline.

    Attributes:
        name: the child run's name.
        spec: the validated spec, overrides applied.
        overrides: the overrides as `key.path=value` texts (for tags and the record).
        varied: the grid values of this child (key path text -> value), or a trial's values.
        resources: what the run takes (None: not given in the pipeline).
        trial: the trial number when the child is a search trial.
    """

    name: str
    spec: Spec
    overrides: list[str]
    varied: dict[str, Any]
    resources: Resources | None = None
    trial: int | None = None


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


@dataclasses.dataclass
class SearchPlan:
    """The search of a pipeline: its section, and how a trial's values become a validated child.

    Attributes:
        entry: the index of its run entry in the pipeline file.
        search: the search section.
        name: the trials' base name (trial 3 is `name[trial=3]`).
        make: (values, trial number) -> the trial's Child; raises SpecError for values its spec refuses.
    """

    entry: int
    search: SearchSpec
    name: str
    make: Callable[[dict[str, Any], int], Child]

    def trial_name(self, number: int) -> str:
        """The run name of trial `number`."""
        return f"{self.name}[trial={number}]"

    def trial(self, number: int, values: dict[str, Any]) -> Child:
        """The child run of trial `number` with these values (key path -> value).

        Raises:
            SpecError: when the spec refuses the values.
        """
        return self.make(values, number)


@dataclasses.dataclass
class PipelinePlan:
    """A validated pipeline: its children (runs and grids), and its search if it has one."""

    pipeline: Pipeline
    children: list[Child]
    search: SearchPlan | None

    @property
    def total(self) -> int:
        """How many child runs the pipeline makes (every trial counted)."""
        return len(self.children) + (self.search.search.num_samples if self.search else 0)


def expand(pipeline: Pipeline, doc: Document, extra: tuple[str, ...] = ()) -> list[Child]:
    """Resolve every run of a pipeline into a validated spec (a search is validated, not run).

    Args:
        pipeline: the validated pipeline.
        doc: its document (for positions and the base directory).
        extra: `--set` overrides applied to every child after the pipeline's own.

    Raises:
        SpecError: every problem of every child, located in the pipeline or spec file.
    """
    return _expand(pipeline, doc, extra)[0]


def _expand(pipeline: Pipeline, doc: Document, extra: tuple[str, ...]) -> tuple[list[Child], SearchPlan | None]:
    base = doc.path.resolve().parent if doc.path is not None else Path.cwd()
    issues: list[SpecIssue] = []
    for key in pipeline.set:
        issue = _key_issue(doc, ("set",), key)
        issues += [issue] if issue else []
    for i, entry in enumerate(pipeline.runs):
        for section, keys in (("set", entry.set), ("grid", entry.grid),
                              ("search.space", entry.search.space if entry.search else {})):
            for key in keys:
                issue = _key_issue(doc, ("runs", i, *section.split(".")), key)
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
    search: SearchPlan | None = None
    names: dict[str, int] = {}
    for i, entry in enumerate(pipeline.runs):
        spec_path = Path(entry.spec)
        spec_path = Path(os.path.normpath(spec_path if spec_path.is_absolute() else base / spec_path))
        if entry.search is not None:
            try:
                search = _search_plan(pipeline, doc, i, entry, spec_path, extra)
            except SpecError as error:
                issues.extend(error.issues)
            continue
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
    return children, search


def _combinations(entry: RunEntry) -> int:
    if entry.search is not None:
        return entry.search.num_samples
    total = 1
    for values in entry.grid.values():
        total *= len(values)
    return total


def _search_plan(pipeline: Pipeline, doc: Document, index: int, entry: RunEntry, spec_path: Path,
                 extra: tuple[str, ...]) -> SearchPlan:
    """Check a search before anything runs: every bound and choice of the space must give a valid
    spec (the others at their first), and those specs must have what the search asks for.

    Raises:
        SpecError: located in the pipeline file (or the spec file).
    """
    search = entry.search
    assert search is not None
    space = search.space
    first = {key: dim.corners()[0] for key, dim in space.items()}
    corners = [first] + [{**first, key: value} for key, dim in space.items() for value in dim.corners()[1:]]
    where: KeyPath = ("runs", index, "search")
    issues: list[SpecIssue] = []

    def issue(key: str, message: str) -> None:
        pos = doc.position(where + (key,))
        issues.append(SpecIssue(pos.source, pos.line, pos.column, format_path(where + (key,)), message))

    for varied in corners:
        try:
            spec = _child(pipeline, doc, index, entry, spec_path, varied, extra, section=("search", "space")).spec
        except SpecError as error:
            issues.extend(error.issues)
            continue
        if spec.train is None:
            issue("metric", "a search trains its trials, but the spec has train: null")
            continue
        if "val" not in spec.split_names:
            issue("metric", "a search chooses on the validation split, and the spec has none: set "
                  "train.validation (a fraction, e.g. 0.2) in the spec or in this run's set:")
        elif search.metric not in {f"val_{m}" for m in spec.metric_names}:
            known = ", ".join(f"val_{m}" for m in spec.metric_names)
            issue("metric", f"the runs do not measure {search.metric}; they measure {known}")
        if search.scheduler is not None and not (spec.evaluate.every or spec.evaluate.every_epoch):
            issue("scheduler", "asha stops trials at evaluations during training, and the spec has none: set "
                  "evaluate.every (or evaluate.every_epoch)")
    if issues:
        raise SpecError(issues)

    def make(values: dict[str, Any], number: int) -> Child:
        child = _child(pipeline, doc, index, entry, spec_path, values, extra, section=("search", "space"),
                       label=f"trial={number}")
        child.trial = number
        return child

    return SearchPlan(index, search, _base_name(entry, _load_spec_doc(spec_path), spec_path), make)


def _child(pipeline: Pipeline, doc: Document, index: int, entry: RunEntry, spec_path: Path,
           varied: dict[str, Any], extra: tuple[str, ...], *, section: KeyPath = ("grid",),
           label: str | None = None) -> Child:
    if not spec_path.is_file():
        pos = doc.position(("runs", index, "spec"))
        what = "is a directory, not a spec file" if spec_path.is_dir() else "file not found"
        raise SpecError([SpecIssue(pos.source, pos.line, pos.column, f"runs[{index}].spec", f"{what}: {spec_path}")])
    spec_doc = _load_spec_doc(spec_path)
    texts: list[str] = []
    entry_path: KeyPath = ("runs", index)
    layers = [(("set",), pipeline.set), (entry_path + ("set",), entry.set), (entry_path + section, varied)]
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
    base_name = _base_name(entry, spec_doc, spec_path)
    if label is None:
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
    return Child(name, spec, texts, varied, entry.resources or pipeline.resources)


def _base_name(entry: RunEntry, spec_doc: Document, spec_path: Path) -> str:
    """A child's name before its grid label: the entry's name, else the spec's, else the file's."""
    name = entry.name or (spec_doc.data.get("name") if isinstance(spec_doc.data, dict) else None)
    return str(name or spec_path.stem)


@functools.lru_cache(maxsize=64)
def _parsed(path: Path, stamp: tuple[int, int]) -> Document:
    return load_yaml(path)


def _load_spec_doc(path: Path) -> Document:
    """A fresh copy of a spec file's Document; a grid loads the same spec many times, parse it once."""
    info = path.stat()
    return _parsed(path, (info.st_mtime_ns, info.st_size)).copy()


def load_pipeline(path: str | Path, overrides: tuple[str, ...] = ()) -> tuple[Pipeline, list[Child]]:
    """Load a pipeline file and resolve every run into a validated spec (see `load_plan`).

    Raises:
        SpecError: listing every problem, located in the pipeline file or the spec files.
    """
    plan = load_plan(path, overrides)
    return plan.pipeline, plan.children


def load_plan(path: str | Path, overrides: tuple[str, ...] = ()) -> PipelinePlan:
    """Load a pipeline file: its runs resolved into validated specs, and its search checked.

    Raises:
        SpecError: listing every problem, located in the pipeline file or the spec files.
    """
    doc = load_yaml(path)
    pipeline = validate_named(doc, Pipeline, what="pipeline")
    children, search = _expand(pipeline, doc, tuple(overrides))
    return PipelinePlan(pipeline, children, search)


def pipeline_from_document(doc: Document, overrides: tuple[str, ...] = ()) -> tuple[Pipeline, list[Child]]:
    """Validate a pipeline Document and expand it (see `load_pipeline`)."""
    pipeline = validate_named(doc, Pipeline, what="pipeline")
    return pipeline, _expand(pipeline, doc, tuple(overrides))[0]


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
