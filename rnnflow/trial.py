"""A search trial's side of early stopping: report the search metric, stop when the scheduler says."""

from __future__ import annotations

from typing import TYPE_CHECKING

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras  # noqa: E402

from rnnflow.runner import RunStopped  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.search import TrialLink


class ReportToScheduler(keras.callbacks.Callback):
    """Reports the search metric at every evaluation during training (the `val_*` logs the trainer
    passes after one) and stops the run when the scheduler answers that the trial falls behind.

    Training stops where the evaluation happened, at the end of a chunk of steps; the run is
    recorded KILLED with `rnnflow.stopped_by: scheduler`.
    """

    def __init__(self, link: TrialLink):
        super().__init__()
        self.link = link
        self.evaluations = 0
        self.total: int | None = None

    def on_train_begin(self, logs=None):
        self.total = (logs or {}).get("total")

    def on_train_batch_end(self, batch, logs=None):
        if not logs or self.link.metric not in logs:
            return
        if batch == self.total:
            return  # a trial that has trained to the end is complete, not stopped: its final metric counts
        self.evaluations += 1
        value = float(logs[self.link.metric])
        if self.link.report(value, self.evaluations):
            raise RunStopped("scheduler", int(batch), f"{self.link.metric} {value:.5g} after "
                             f"{self.evaluations} evaluation{'s' if self.evaluations != 1 else ''}")
