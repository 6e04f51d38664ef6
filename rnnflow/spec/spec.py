"""The whole spec: name, data, model, train, evaluate, tracking; and loading it from YAML."""

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field

import rnnflow.data  # noqa: F401  (registers the data sources)
from rnnflow.spec.registry import SOURCES
from rnnflow.errors import SpecError, SpecIssue
from rnnflow.spec.base import NAME_PATTERN, Section, at, json_schema
from rnnflow.spec.controls import AnyScheduleSpec, ConstantSchedule, EarlyStoppingSpec
from rnnflow.spec.model import ModelSpec
from rnnflow.spec.validate import validate_named
from rnnflow.spec.overrides import apply_overrides
from rnnflow.spec.yamlio import Document, load_yaml, parse_yaml
from rnnflow.steps import AnyStepSpec, PredictionsStep

_BOTH_SCHEDULES = "give iterations or epochs, not both"
_TAG_KEY = re.compile(r"^[\w\-. /]{1,250}$")

LOSSES = {
    "mse": "regression",
    "mae": "regression",
    "sparse_categorical_crossentropy": "classification",
}
METRICS = {
    "mse": "regression",
    "mae": "regression",
    "rmse": "regression",
    "accuracy": "classification",
    "top_k_accuracy": "classification",
}


class DistributeSpec(Section):
    """One run on several devices or processes, with tf.distribute (data parallel: every replica
    holds the whole model and takes its share of each batch; `batch_size` is the global batch)."""

    strategy: Literal["mirrored", "multi_worker"] = Field(
        ..., description="mirrored: the devices of this machine (MirroredStrategy); multi_worker: "
        "processes on one or several machines (MultiWorkerMirroredStrategy; the cluster from $TF_CONFIG)."
    )
    devices: list[str] | None = Field(
        None, min_length=1, description="mirrored: the devices, e.g. [/gpu:0, /gpu:1] (default: every GPU, "
        "else the CPU's logical devices when cpu_devices is given)."
    )
    cpu_devices: int | None = Field(
        None, ge=1, le=64, description="mirrored: split the CPU into this many logical devices (to try "
        "mirroring without GPUs; they share the same cores)."
    )

    @pydantic.model_validator(mode="after")
    def _mirrored_only(self) -> "DistributeSpec":
        if self.strategy == "multi_worker":
            for key in ("devices", "cpu_devices"):
                if getattr(self, key) is not None:
                    raise at(key, "only for strategy: mirrored (a multi_worker replica is a process)")
        if self.devices is not None and len(set(self.devices)) != len(self.devices):
            raise at("devices", "a device is listed twice")
        return self

    @property
    def known_replicas(self) -> int | None:
        """The replica count the spec alone fixes (None when the devices or the cluster decide)."""
        if self.strategy == "mirrored":
            if self.devices is not None:
                return len(self.devices)
            return self.cpu_devices
        return None


class TrainSpec(Section):
    """How to train: optimizer, schedule, batches, loss, metrics and execution settings."""

    optimizer: Literal["adam", "sgd", "rmsprop", "adagrad", "adamw", "nadam"] = Field(
        "adam", description="The optimizer."
    )
    learning_rate: float = Field(1e-3, gt=0, le=100, description="The learning rate.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum (sgd, rmsprop).")
    clip_norm: float | None = Field(None, gt=0, description="Clip each gradient to this norm.")
    iterations: int | None = Field(
        None, gt=0, le=1_000_000_000, description="Gradient steps (default 1000 when epochs is not given)."
    )
    epochs: int | None = Field(None, gt=0, le=1_000_000, description="Passes over the training data.")
    batch_size: int = Field(32, gt=0, le=1_000_000, description="Sequences per gradient step.")
    shuffle: bool = Field(True, description="Shuffle the training data each pass.")
    validation: float | int | Literal["source"] | None = Field(
        None,
        description="The validation split, which may choose things (early stopping, best weights) "
        "where the test split never does: a fraction (0.1) or a count (5000) of the training "
        "sequences, stratified by class; `source` for the source's own; default: the source's own "
        "when it has one, else none.",
    )
    loss: Literal["mse", "mae", "sparse_categorical_crossentropy"] = Field(
        "mse", description="mse/mae for forecasts; sparse_categorical_crossentropy (from logits) for classes."
    )
    metrics: list[Literal["mse", "mae", "rmse", "accuracy", "top_k_accuracy"]] = Field(
        default_factory=list, description="Metrics measured on the training and evaluation data."
    )
    top_k: int = Field(5, gt=0, le=1000, description="k of top_k_accuracy (TF1 in_top_k).")
    log_every: int | None = Field(
        None, gt=0, description="Iterations between logged loss points (default: about 100 points)."
    )
    jit_compile: bool = Field(False, description="Compile training steps with XLA (changes numerics slightly).")
    steps_per_execution: int | None = Field(
        None, gt=0, le=100_000, description="Gradient steps per compiled call (default: chosen by rnnflow)."
    )
    schedule: AnyScheduleSpec = Field(  # type: ignore[valid-type]
        default_factory=ConstantSchedule,
        description="The learning rate over training: constant, exponential, step, cosine, plateau or "
        "one_cycle, each with an optional linear warm-up.",
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None, description="Stop when a validation metric stops improving; keep the best weights."
    )
    max_minutes: float | None = Field(
        None, gt=0, le=10_000_000,
        description="Stop cleanly after this many minutes of training (summed over the sessions of a "
        "resumed run); the run still finishes and says why it stopped.",
    )
    distribute: DistributeSpec | None = Field(
        None, description="Train on several devices or processes: {strategy: mirrored} or {strategy: multi_worker}."
    )

    @pydantic.model_validator(mode="after")
    def _budget(self) -> "TrainSpec":
        if self.iterations is not None and self.epochs is not None:
            raise at("epochs", _BOTH_SCHEDULES)
        if isinstance(self.validation, float) and not 0 < self.validation < 1:
            raise at("validation", f"a fraction is between 0 and 1 (got {self.validation}); "
                     "a count of sequences is an integer")
        if isinstance(self.validation, int) and self.validation < 1:
            raise at("validation", f"a count of sequences is at least 1 (got {self.validation})")
        replicas = self.distribute.known_replicas if self.distribute is not None else None
        if replicas and self.batch_size % replicas:
            raise at("batch_size", f"{self.batch_size} sequences do not split evenly over the {replicas} replicas "
                     "of train.distribute (batch_size is the global batch)")
        if self.distribute is not None and self.distribute.strategy == "multi_worker":
            # Each worker would decide alone (on its own clock, or its own evaluation); one that stops
            # while the others go on leaves them waiting in a collective for ever.
            for key, what in (("max_minutes", "the time budget"), ("early_stopping", "early stopping")):
                if getattr(self, key) is not None:
                    raise at(key, f"{what} is not available under strategy multi_worker: every worker would "
                             "decide alone when to stop, and a worker that stops while the others go on leaves "
                             f"them waiting; leave it out (--set train.{key}=null), or use strategy mirrored")
            if self.schedule.type == "plateau":
                raise at("schedule.type", "plateau is not available under strategy multi_worker: every worker "
                         "would lower its learning rate on its own evaluation; use another schedule, or strategy "
                         "mirrored")
        kind, count = self.budget
        if kind == "iterations" and self.schedule.warmup >= count:
            raise at("schedule.warmup", f"{self.schedule.warmup} iterations of warm-up leave nothing of the "
                     f"{count} iterations of the run")
        return self

    @property
    def budget(self) -> tuple[str, int]:
        """('iterations', n) or ('epochs', n): how long training runs unless something stops it."""
        if self.epochs is not None:
            return "epochs", self.epochs
        return "iterations", self.iterations or 1000

    @property
    def metric_names(self) -> list[str]:
        """The names of the loss and metrics measured on each split (`val_` + name is logged)."""
        return ["loss", *(f"top_{self.top_k}_accuracy" if m == "top_k_accuracy" else m for m in self.metrics)]


class EvaluateSpec(Section):
    """How to evaluate: batch size, how often during training, and the steps that run after it."""

    batch_size: int = Field(1024, gt=0, le=1_000_000, description="Sequences per evaluation batch.")
    every: int | None = Field(None, gt=0, description="Also evaluate every N training iterations.")
    every_epoch: bool = Field(False, description="Also evaluate after every epoch.")
    steps: list[AnyStepSpec] = Field(
        default_factory=lambda: [PredictionsStep()],
        description="Steps after training: predictions, generate, outputs.",
    )

    @pydantic.model_validator(mode="after")
    def _unique_names(self) -> "EvaluateSpec":
        seen: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            if step.stem in seen:
                raise at(f"steps[{i}].name", f"two steps write '{step.stem}' artifacts; give them different names")
            seen[step.stem] = i
        return self


class TrackingSpec(Section):
    """Where and how the run is recorded in MLflow."""

    experiment: str = Field("rnnflow", min_length=1, max_length=200, description="MLflow experiment name.")
    run_name: str | None = Field(None, max_length=200, description="MLflow run name (default: the spec name).")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags for the run.")

    @pydantic.field_validator("tags")
    @classmethod
    def _tag_keys(cls, tags: dict[str, str]) -> dict[str, str]:
        for key in tags:
            if not _TAG_KEY.match(key):
                raise at((key,), "a tag name holds letters, digits, '_', '-', '.', ' ' and '/' "
                         "(at most 250 characters), as MLflow requires")
        return tags
    tracking_uri: str | None = Field(
        None, description="Tracking store; default: MLflow's own ($MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
    )
    log_model: bool = Field(True, description="Log the trained Keras model.")


class Spec(Section):
    """A whole experiment: what data, what network, how to train, evaluate and record it."""

    name: str = Field(..., pattern=NAME_PATTERN, description="The experiment's name (default: the file name).")
    description: str = Field("", max_length=10_000, description="What the experiment is about.")
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seeds every random number generator.")
    data: SOURCES.union() = Field(..., description="The data source.")  # type: ignore[valid-type]
    model: ModelSpec = Field(..., description="The recurrent network.")
    train: TrainSpec | None = Field(
        default_factory=TrainSpec, description="Training; null runs the model forward only."
    )
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec, description="Evaluation and later steps.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow tracking.")

    _document: Document | None = pydantic.PrivateAttr(None)
    _base_dir: Path | None = pydantic.PrivateAttr(None)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> "Spec":
        task = self.data.task
        sequence_targets = self.data.sequence_targets
        if self.train is not None:
            if not self.data.has_targets:
                raise at("train", f"the {self.data.type} source here gives no targets; "
                         "set train: null to run the model forward only")
            if LOSSES[self.train.loss] != task:
                raise at("train.loss", f"{self.train.loss} is a {LOSSES[self.train.loss]} loss, but the "
                         f"{self.data.type} source is a {task} task")
            for i, metric in enumerate(self.train.metrics):
                if METRICS[metric] != task:
                    raise at(f"train.metrics[{i}]", f"{metric} is a {METRICS[metric]} metric, but the "
                             f"{self.data.type} source is a {task} task")
        if sequence_targets is not None and self.data.has_targets:
            wanted = ("sequence",) if sequence_targets else ("last", "mean")
            if self.model.output not in wanted:
                per = "every step" if sequence_targets else "each sequence"
                raise at("model.output", f"the {self.data.type} source has a target for {per}; "
                         f"use output: {' or '.join(wanted)}")
        if self.train is not None and self.train.distribute is not None:
            placed = [i for i, cell in enumerate(self.model.cells) if cell.wrapper("device") is not None]
            if placed:
                raise at("train.distribute", f"model.cells[{placed[0]}] places its layers with a device wrapper; "
                         "under train.distribute every replica holds the whole model on its own device: "
                         "remove one or the other")
            if self.model.precision == "mixed_float16":
                raise at("train.distribute", "model.precision mixed_float16 needs Keras' loss-scaling optimizer, "
                         "which does not train the same under a tf.distribute strategy (other results even with "
                         "one replica); mixed_bfloat16 needs no loss scaling and works")
        if self.train is not None:
            validation = self.train.validation
            if validation == "source" and not self.data.has_validation:
                raise at("train.validation", f"the {self.data.type} source has no validation split of its "
                         "own; give a fraction (0.1) or a count of training sequences")
            if isinstance(validation, (int, float)) and self.data.has_validation:
                raise at("train.validation", f"the {self.data.type} source splits off validation data "
                         "itself; use train.validation: source (or leave it out)")
            if isinstance(validation, (int, float)) and self.data.chronological:
                raise at("train.validation", f"the {self.data.type} source splits in time; a random "
                         "validation split would train on later rows than it validates on: set "
                         "data.split.validation instead")
        if self.model.unroll and self.data.variable_length:
            raise at("model.unroll", f"models of the {self.data.type} source take sequences of any length; "
                     "static unrolling needs one fixed length (leave unroll out)")
        splits = self.split_names
        if self.train is not None:
            self._check_monitors(splits)
        for i, step in enumerate(self.evaluate.steps):
            try:
                step.check(task, sequence_targets)
            except ValueError as error:
                raise at(f"evaluate.steps[{i}].type", str(error)) from None
            if getattr(step, "split", None) not in (None, *splits):  # the default is always there
                raise at(f"evaluate.steps[{i}].split", f"there is no {step.split} split here (there are: "
                         f"{', '.join(splits)}); {self._how_to_validate()}")
        return self

    def _check_monitors(self, splits: tuple[str, ...]) -> None:
        """Early stopping and `plateau` watch a validation metric at each evaluation during training."""
        train = self.train
        names = self.metric_names
        for key, control in (("early_stopping", train.early_stopping), ("schedule", train.schedule)):
            monitor = getattr(control, "monitor", None)
            if monitor is None:
                continue
            if monitor[len("val_"):] not in names:
                raise at(f"train.{key}.monitor", f"{monitor} is not logged here; the validation metrics are "
                         + ", ".join(f"val_{n}" for n in names))
            what = "early stopping" if key == "early_stopping" else "the plateau schedule"
            if "val" not in splits:
                raise at(f"train.{key}.monitor", f"{what} watches {monitor}, but there is no validation split "
                         f"(the test split never chooses anything); {self._how_to_validate()}")
            if self.evaluate.every is None and not self.evaluate.every_epoch:
                raise at(f"train.{key}", f"{what} counts evaluations during training, and there are none; "
                         "set evaluate.every (iterations) or evaluate.every_epoch: true")

    def _how_to_validate(self) -> str:
        """How to get a validation split: a source that splits in time splits it off itself."""
        if self.data.chronological:
            return "set data.split.validation (the last rows before the test part)"
        return "set train.validation, e.g. 0.1"

    @property
    def split_names(self) -> tuple[str, ...]:
        """The splits a run of this spec has: train, then val and test when there are."""
        validation = self.train.validation if self.train is not None else None
        has_val = self.data.has_validation if validation in (None, "source") else True
        return ("train",) + (("val",) if has_val else ()) + (("test",) if self.data.has_test else ())

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What each split is measured with, as the run names it after the split (`val_` + these):
        the loss, the spec's metrics (`top_k_accuracy` is named with its k), then the metrics of the
        source's task (e.g. `mase` of a forecast)."""
        if self.train is None:
            return ()
        return tuple(dict.fromkeys([*self.train.metric_names, *self.data.task_metrics(self.train.loss)]))

    # --- provenance of a loaded spec ---

    @property
    def document(self) -> Document | None:
        """The YAML document the spec was loaded from (None when built in code)."""
        return self._document

    @property
    def base_dir(self) -> Path:
        """The directory relative paths in the spec resolve against: the spec file's own."""
        if self._base_dir is not None:
            return self._base_dir
        if self._document is not None and self._document.path is not None:
            return self._document.path.resolve().parent
        return Path.cwd()

    def resolved(self) -> dict[str, Any]:
        """The spec with every default filled in, as plain data."""
        return self.model_dump(mode="json")

    def sha256(self) -> str:
        """The sha256 of the spec file as written (of the resolved spec when built in code)."""
        if self._document is not None and self._document.text:
            return hashlib.sha256(self._document.text.encode("utf-8")).hexdigest()
        import json

        return hashlib.sha256(json.dumps(self.resolved(), sort_keys=True).encode()).hexdigest()


def spec_from_document(doc: Document, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Validate a Document (after applying `--set` overrides) into a Spec.

    Raises:
        SpecError: listing every problem with its place.
    """
    unapplied: list[SpecIssue] = []  # overrides that cannot be applied; the rest is still validated
    if isinstance(doc.data, dict):  # else the file itself is wrong, and validation says so
        try:
            apply_overrides(doc, overrides)
        except SpecError as error:
            unapplied = error.issues
    try:
        spec = validate_named(doc, Spec, what="spec")
    except SpecError as error:
        raise SpecError(unapplied + [_schedule_hint(issue, doc) for issue in error.issues]) from None
    if unapplied:
        raise SpecError(unapplied)
    spec._document = doc
    return spec


def _schedule_hint(issue: SpecIssue, doc: Document) -> SpecIssue:
    """Iterations and epochs both given because an override set one on a spec that has the other:
    point at the override and say how to clear the other (`--set train.iterations=null`)."""
    if issue.path != "train.epochs" or issue.message != _BOTH_SCHEDULES:
        return issue
    where = {key: doc.position(("train", key), key=True) for key in ("iterations", "epochs")}
    from_file = [key for key, position in where.items() if position.source == doc.source]
    if len(from_file) != 1:
        return issue  # both in the file, or both overridden: nothing to add
    other = from_file[0]
    key = "epochs" if other == "iterations" else "iterations"
    override = where[key]
    if override.source.startswith("--set"):
        clear = f"--set train.{other}=null"
    else:  # a pipeline's set or grid
        clear = f"train.{other}: null beside it"
    return SpecIssue(override.source, override.line, override.column, f"train.{key}",
                     f"{_BOTH_SCHEDULES}: {doc.source} sets train.{other} (line {where[other].line}); "
                     f"to train by {key} instead, add {clear}")


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Load and validate a spec file.

    Args:
        path: the YAML file.
        overrides: `key.path=value` assignments applied before validation.

    Returns:
        The validated Spec, with every default filled in.

    Raises:
        SpecError: listing every problem, each with file, line, column and key path.
    """
    return spec_from_document(load_yaml(path), overrides)


def spec_from_text(text: str, source: str = "<spec>", overrides: list[str] | tuple[str, ...] = (),
                   base_dir: Path | None = None) -> Spec:
    """Load a spec from YAML text (see `load_spec`).

    Args:
        text: the YAML.
        source: the name errors use for it.
        overrides: `key.path=value` assignments.
        base_dir: where relative paths in the spec resolve (default: the working directory).
    """
    spec = spec_from_document(parse_yaml(text, source), overrides)
    spec._base_dir = base_dir
    return spec


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of specs, for editors."""
    return json_schema(Spec, "rnnflow spec")

