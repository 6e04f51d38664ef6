"""Running a search: an Optuna study asked and told by the pipeline's driver, reported to by trials.

Optuna directly rather than Ray Tune: the driver asks Optuna for a trial's values, creates the
trial's MLflow run and hands it to the executor like any other child, so searches run the same
way one after another in one process and in parallel on Ray, and rnnflow keeps the lifecycle of
every run (a stopped trial is KILLED, never FAILED by a `SystemExit` inside Tune's `report`).
Optuna's TPE and its SuccessiveHalvingPruner (which is ASHA: asynchronous successive halving) give
what Tune's OptunaSearch and ASHAScheduler would.

The study lives in the driver (serial) or in a Ray actor (ray), so trials on any node report
to the same place. Importing this module imports neither Optuna nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.spec.search import SearchSpec

log = logging.getLogger("rnnflow")


def _optuna():
    try:
        import optuna
    except ImportError:
        from rnnflow.errors import RnnflowError

        raise RnnflowError('a search needs Optuna: pip install "rnnflow[ray]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_available() -> None:
    """Raises RnnflowError when Optuna is not installed (before any run is created)."""
    _optuna()


class Study:
    """A search's Optuna study: the sampler chooses trials' values, the pruner stops bad trials.

    Args:
        search: the pipeline's search section.
    """

    def __init__(self, search: SearchSpec):
        optuna = _optuna()
        self.search = search
        if search.algorithm == "tpe":
            # constant_liar (the default): trials still running count as bad, so parallel trials spread out.
            sampler = optuna.samplers.TPESampler(seed=search.seed)
        else:
            sampler = optuna.samplers.RandomSampler(seed=search.seed)
        scheduler = search.scheduler
        if scheduler is not None:
            pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=scheduler.min_resource,
                                                            reduction_factor=scheduler.reduction_factor)
        else:
            pruner = optuna.pruners.NopPruner()
        self.study = optuna.create_study(direction="minimize" if search.mode == "min" else "maximize",
                                         sampler=sampler, pruner=pruner)
        self.distributions = {key: _distribution(optuna, dim) for key, dim in search.space.items()}
        self.trials: dict[int, Any] = {}

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new trial: (its number, the spec values to try: key path -> value)."""
        trial = self.study.ask(self.distributions)
        self.trials[trial.number] = trial
        values = {}
        for key, dim in self.search.space.items():
            value = trial.params[key]
            values[key] = dim.values[value] if dim.type == "choice" else value
        return trial.number, values

    def report(self, number: int, value: float, step: int) -> bool:
        """Record a trial's metric after `step` evaluations; True when the scheduler stops it."""
        trial = self.trials[number]
        trial.report(value, step)
        return bool(trial.should_prune())

    def tell(self, number: int, state: str, value: float | None = None) -> None:
        """How a trial ended: `complete` (with its final metric), `pruned` or `fail`."""
        optuna = _optuna()
        states = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
                  "fail": optuna.trial.TrialState.FAIL}
        self.study.tell(self.trials.pop(number), value if state == "complete" else None, state=states[state])

    def close(self) -> None:
        """Nothing to release in this process."""


def _distribution(optuna, dim) -> Any:
    distributions = optuna.distributions
    if dim.type == "uniform":
        return distributions.FloatDistribution(dim.low, dim.high)
    if dim.type == "loguniform":
        return distributions.FloatDistribution(dim.low, dim.high, log=True)
    if dim.type == "int":
        return distributions.IntDistribution(dim.low, dim.high, step=dim.step, log=dim.log)
    # Choices can be any YAML value (lists, mappings); Optuna chooses among their positions.
    return distributions.CategoricalDistribution(list(range(len(dim.values))))


class RemoteStudy:
    """A Study in a Ray actor, with the same methods (they wait for the actor's answer)."""

    def __init__(self, actor):
        self.actor = actor

    def ask(self) -> tuple[int, dict[str, Any]]:
        return self._call("ask")

    def report(self, number: int, value: float, step: int) -> bool:
        return self._call("report", number, value, step)

    def tell(self, number: int, state: str, value: float | None = None) -> None:
        self._call("tell", number, state, value)

    def close(self) -> None:
        """Stop the actor (the search is over)."""
        import ray

        ray.kill(self.actor)

    def _call(self, method: str, *args):
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))


@dataclasses.dataclass
class TrialLink:
    """What a trial needs to report to its study: travels with the trial's job.

    Attributes:
        study: the Study (serial) or RemoteStudy (ray).
        number: the trial's number.
        metric: the search metric (a `val_*` metric).
        scheduler: whether a scheduler may stop the trial (else nothing is reported).
    """

    study: Any
    number: int
    metric: str
    scheduler: bool

    def callback(self):
        """The Keras callback that reports the metric at each evaluation and stops the trial when told."""
        from rnnflow.trial import ReportToScheduler

        return ReportToScheduler(self)

    def report(self, value: float, step: int) -> bool:
        """Report the metric after `step` evaluations; True when the scheduler stops the trial."""
        if not self.scheduler:
            return False
        return self.study.report(self.number, value, step)
