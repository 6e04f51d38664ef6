"""What `rnnflow show` prints about a spec: the model, its size and how it will execute."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.spec import Spec


def describe(spec: Spec) -> str:
    """The built model's summary, parameter count, each layer's plan with its reasons, and how
    training executes."""
    from rnnflow.build import build_model, model_summary
    from rnnflow.data.base import load_data

    data = load_data(spec)
    built = build_model(spec, data)
    lines = ["", "# model", model_summary(built.model).rstrip(),
             f"parameters: {built.model.count_params():,}", "", "# layers"]
    for plan in built.plans:
        where = plan.device or "default device"
        both = f", bidirectional ({plan.merge_mode})" if plan.bidirectional else ""
        lines.append(f"{plan.name}: {plan.cell.type}, {plan.cell.units} units, {plan.cell.activation}{both}, "
                     f"{plan.execution} ({plan.why}), {where}")
        if plan.execution == "scan":
            lines.append("  loop: scan (rnnflow's loop, hand-written backward pass; model.loop: scan)")
        elif plan.scan_blockers:
            lines.append("  loop: Keras' (model.loop is scan, but " + "; ".join(plan.scan_blockers) + ")")
        directions = " (both directions)" if plan.bidirectional else ""
        if plan.cudnn_blockers:
            lines.append(f"  cuDNN on a GPU: no{directions} - " + "; ".join(plan.cudnn_blockers))
        else:
            lines.append(f"  cuDNN on a GPU: yes{directions}")
    lines += ["", "# execution", *execution_notes(spec, len(data.train))]
    return "\n".join(lines)


def execution_notes(spec: Spec, train_size: int) -> list[str]:
    """How training will execute, and why."""
    if spec.train is None:
        return ["no training (train: null): the model runs forward only"]
    from rnnflow.chunks import plan_iterations

    train = spec.train
    plan = plan_iterations(spec, train_size)
    if spec.model.unroll:
        loop = "static (unrolled) time steps"
    elif spec.model.loop == "scan":
        loop = "dynamic, rnnflow's scan loop where a layer allows it (model.loop: scan)"
    else:
        loop = "dynamic, Keras' loop (model.loop: keras)"
    notes = [
        f"{plan.total} iterations of batch {plan.batch_size} ({plan.steps_per_epoch} per pass over "
        f"{train_size} training sequences); loss logged every {plan.log_every} iterations",
        f"{plan.steps_per_execution} gradient steps per call of one compiled function "
        "(train.steps_per_execution), so Python runs once per chunk, not once per step",
        "loop: " + loop,
        "XLA: " + ("on (train.jit_compile: true)" if train.jit_compile else "off (train.jit_compile: false)"),
        "precision: " + (spec.model.precision if spec.model.precision != "float32" else "float32 (model.precision)"),
        *control_notes(spec),
    ]
    from rnnflow.planner import plan_distribution

    distribution = plan_distribution(spec, train_size)
    notes += distribution.lines() if distribution is not None else ["distribute: no, one device (train.distribute)"]
    return notes


def control_notes(spec: Spec) -> list[str]:
    """The learning rate over training, what evaluations choose, and when training stops early."""
    from rnnflow.spec.controls import direction

    train, evaluate = spec.train, spec.evaluate
    schedule = train.schedule
    warmup = f", after {schedule.warmup} iterations of linear warm-up" if schedule.warmup else ""
    rate = "peaking at" if schedule.type == "one_cycle" else "from"
    notes = [f"learning rate: {schedule.type} {rate} {train.learning_rate:g}{warmup} (train.schedule)"]
    periods = [f"every {evaluate.every} iterations"] if evaluate.every else []
    periods += ["every epoch"] if evaluate.every_epoch else []
    split = "validation" if "val" in spec.split_names else "test (only reported)"
    if periods:
        notes.append(f"evaluation during training: the {split} split, {' and '.join(periods)} and at the end")
    stopping = train.early_stopping
    if stopping is not None:
        patience = ("never stops early" if stopping.patience is None
                    else f"stops after {stopping.patience} evaluations without improvement")
        best = "; ends with the best evaluation's weights" if stopping.restore_best else ""
        notes.append(f"early stopping: {stopping.monitor} ({direction(stopping.monitor, stopping.mode)}), "
                     f"{patience}{best}")
    if train.max_minutes is not None:
        notes.append(f"time budget: stops after {train.max_minutes:g} minutes of training (train.max_minutes)")
    return notes
