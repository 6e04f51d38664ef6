"""Figures saved as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.data.base import Split


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curve(curves: dict[str, list[tuple[int, float]]], path: Path, title: str = "training loss") -> Path:
    """Loss against iteration, one line per curve (log scale when the loss spans decades)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    spans = []
    for label, points in curves.items():
        if not points:
            continue
        steps, values = zip(*points)
        ax.plot(steps, values, label=label, linewidth=1.4)
        spans.extend(v for v in values if v > 0)
    if spans and max(spans) / max(min(spans), 1e-12) > 50:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def forecast(split: Split, pred: np.ndarray, path: Path, index: int = 0) -> Path:
    """Prediction against truth. A target per step: one sequence over time; per sequence: a scatter."""
    fig, ax = plt.subplots(figsize=(8, 4))
    if split.y.ndim == 3:
        steps = split.y.shape[1]
        time = split.time[index] if split.time is not None else np.arange(steps)
        ax.plot(time, split.y[index, :, 0], "o", markersize=5, color="tab:blue", alpha=0.5, label="target")
        ax.plot(time, pred[index, :, 0], ".", markersize=6, color="tab:red", label="prediction")
        # Each input is the point one step before its target.
        input_time = time - (time[1] - time[0] if steps > 1 else 1)
        ax.plot(input_time, split.x[index, :, 0], "-", linewidth=1, color="tab:gray", alpha=0.6, label="input")
        mse = float(np.mean((pred[index] - split.y[index]) ** 2))
        ax.set_title(f"forecast of one evaluation sequence (MSE {mse:.4g})")
        ax.set_xlabel("time" if split.time is not None else "step")
        ax.legend(fontsize=8)
    else:
        y = split.y.reshape(len(split.y), -1)[:, 0]
        p = pred.reshape(len(pred), -1)[:, 0]
        ax.scatter(y, p, s=8, alpha=0.6)
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "--", color="tab:gray", linewidth=1)
        ax.set_xlabel("target")
        ax.set_ylabel("prediction")
        ax.set_title("prediction against target")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def overlay_forecasts(time: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray], path: Path) -> Path:
    """Several models' predictions of one sequence against its truth."""
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(time, truth, "o", markersize=5, color="black", alpha=0.35, label="target")
    for label, values in predictions.items():
        ax.plot(time, values, "-", linewidth=1.2, label=label)
    ax.set_xlabel("time")
    ax.set_title("predictions of one evaluation sequence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def confusion_matrix(matrix: np.ndarray, path: Path) -> Path:
    """A confusion matrix with counts (rows: true class, columns: predicted class)."""
    size = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * size, 0.8 + 0.45 * size))
    ax.imshow(matrix, cmap="Blues")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(size):
        for j in range(size):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_xticks(range(size))
    ax.set_yticks(range(size))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = matrix.sum()
    accuracy = np.trace(matrix) / total if total else 0.0
    ax.set_title(f"confusion matrix (accuracy {accuracy:.4f})")
    return _save(fig, path)


def generated(seed: np.ndarray, sequence: np.ndarray, path: Path, title: str, *, seed_time: np.ndarray | None = None,
              time: np.ndarray | None = None, truth: np.ndarray | None = None, ylabel: str = "value") -> Path:
    """A generated sequence after its seed window, against the true continuation when there is one.

    Args:
        seed: the seed window (steps, features).
        sequence: the generated points (length, features).
        path: where to save the figure.
        title: what was generated from what.
        seed_time: times of the seed's points (else steps -len(seed)..-1).
        time: times of the generated points (else steps 0..).
        truth: the series at `time`, drawn as the continuation the model should have produced.
        ylabel: what the values are.
    """
    fig, ax = plt.subplots(figsize=(9, 3.5))
    steps = len(seed)
    seed_x = seed_time if seed_time is not None else np.arange(-steps, 0)
    gen_x = time if time is not None else np.arange(len(sequence))
    if truth is not None:
        ax.plot(gen_x, truth[:, 0], "-", color="black", linewidth=1, alpha=0.45, label="true continuation")
    ax.plot(seed_x, seed[:, 0], "-", color="tab:gray", linewidth=2, label="seed window")
    ax.plot(gen_x, sequence[:, 0], "-", color="tab:red", linewidth=1.2, label="generated")
    ax.axvline(gen_x[0] if len(gen_x) else 0, color="black", linewidth=0.8, alpha=0.5)
    ax.set_xlabel("time" if time is not None else "step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
