"""A one-line progress bar for training (rich), updated at each logged iteration."""

from __future__ import annotations

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras


class ProgressBar(keras.callbacks.Callback):
    """Shows iterations done, the latest loss, speed and time left on stderr.

    Args:
        label: what is being trained (the spec name).
    """

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self._progress = None
        self._task = None

    def on_train_begin(self, logs=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        logs = logs or {}
        self._progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),  # a child run name has [ ]
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=logs.get("total"), completed=logs.get("start", 0),
                                             loss="-")

    def on_train_batch_end(self, batch, logs=None):
        fields = {}
        if logs and "loss" in logs:
            fields["loss"] = f"{logs['loss']:.4g}"
        self._progress.update(self._task, completed=batch, **fields)

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """Stop drawing (also when training stopped early)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
