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
        lines.append(f"{plan.name}: {plan.cell.type}, {plan.cell.units} units, {plan.cell.activation}, "
                     f"{plan.execution} ({plan.why}), {where}")
        if plan.execution == "scan":
            lines.append("  loop: scan (rnnflow's loop, hand-written backward pass; model.loop: scan)")
        elif plan.scan_blockers:
            lines.append("  loop: Keras' (model.loop is scan, but " + "; ".join(plan.scan_blockers) + ")")
        if plan.cudnn_blockers:
            lines.append("  cuDNN on a GPU: no - " + "; ".join(plan.cudnn_blockers))
        else:
            lines.append("  cuDNN on a GPU: yes")
    lines += ["", "# execution", *execution_notes(spec, len(data.train))]
    return "\n".join(lines)


def execution_notes(spec: Spec, train_size: int) -> list[str]:
    """How training will execute, and why."""
    if spec.train is None:
        return ["no training (train: null): the model runs forward only"]
    from rnnflow.schedule import plan

    train = spec.train
    schedule = plan(spec, train_size)
    if spec.model.unroll:
        loop = "static (unrolled) time steps"
    elif spec.model.loop == "scan":
        loop = "dynamic, rnnflow's scan loop where a layer allows it (model.loop: scan)"
    else:
        loop = "dynamic, Keras' loop (model.loop: keras)"
    notes = [
        f"{schedule.total} iterations of batch {schedule.batch_size} ({schedule.steps_per_epoch} per pass over "
        f"{train_size} training sequences); loss logged every {schedule.log_every} iterations",
        f"{schedule.steps_per_execution} gradient steps per call of one compiled function "
        "(train.steps_per_execution), so Python runs once per chunk, not once per step",
        "loop: " + loop,
        "XLA: " + ("on (train.jit_compile: true)" if train.jit_compile else "off (train.jit_compile: false)"),
        "precision: " + (spec.model.precision if spec.model.precision != "float32" else "float32 (model.precision)"),
    ]
    from rnnflow.planner import plan_distribution

    distribution = plan_distribution(spec, train_size)
    notes += distribution.lines() if distribution is not None else ["distribute: no, one device (train.distribute)"]
    return notes
