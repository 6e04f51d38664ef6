"""Helpers shared by the benchmark programs. Standard library only: the TF1 programs import this
module from their own virtual environment, and `run.py` must not import TensorFlow.

Every benchmark program is one process that writes one JSON record (`write_record`): what it ran,
its timings, what it learned, and the process's peak memory.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPECS = REPO / "specs"

# The benchmarks measure the rnnflow of this checkout, installed or not.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The book's sine window and MNIST batch size (Hands-On ML ch. 14), shared by every program.
SINE_STEPS = 100
MNIST_BATCH = 150
ACCURACY_TARGET = 0.97

# specs/mnist_classifier.yaml as the book trains it (and as the spec did before the training
# controls): every training image trained on, a constant learning rate, no validation split.
# The comparisons with plain Keras `fit` and TF1 and the 100-epoch run use it.
MNIST_AS_IN_THE_BOOK = ["train.validation=null", "train.schedule={type: constant}", "train.early_stopping=null"]


def sine_window():
    """The training window of the seed's sine program: X = f(t[:-1]), y = f(t[1:]), shape (1, 100, 1).

    f(t) = t*sin(t)/3 + 2*sin(5t) on t = linspace(0, 15, 101), computed in float64 and stored as
    float32 (as rnnflow's `sine` source with `sampling: fixed` does).
    """
    import numpy as np

    t = np.linspace(0, 15, SINE_STEPS + 1)
    f = t * np.sin(t) / 3 + 2 * np.sin(5 * t)
    x = f[:-1].reshape(1, SINE_STEPS, 1).astype(np.float32)
    y = f[1:].reshape(1, SINE_STEPS, 1).astype(np.float32)
    return x, y


def epoch_permutation(seed: int, epoch: int, n: int):
    """The order of the training images in an epoch: the same stream rnnflow's trainer uses
    (`rnnflow.train.batch_indices`), so that every program sees the same batches."""
    import numpy as np

    return np.random.default_rng([seed, epoch]).permutation(n)


def max_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_record(path: str | Path | None, record: dict[str, Any]) -> None:
    """Add the peak memory to a record and write it as JSON (to stdout when `path` is None)."""
    record = {**record, "max_rss_mb": round(max_rss_mb(), 1)}
    text = json.dumps(record, indent=1, sort_keys=False)
    if path is None:
        print(text)
    else:
        Path(path).write_text(text + "\n")


def first_at_least(values: list[float], target: float) -> int | None:
    """Index of the first value >= target, or None."""
    return next((i for i, v in enumerate(values) if v is not None and v >= target), None)


def machine_info() -> dict[str, Any]:
    """What the benchmark ran on: CPU model, cores, memory, OS, Python, load, date, rnnflow commit."""
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": _mem_total_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    info.update(_git_state())
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    # The results the benchmarks themselves rewrite do not make the measured code dirty.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results",
                 ":!benchmarks/README.md")
    return {"rnnflow_commit": commit, "rnnflow_dirty": bool(status) if status is not None else None}


def replace_section(path: Path, name: str, text: str) -> bool:
    """Replace what lies between `<!-- name:begin -->` and `<!-- name:end -->` in a file.

    Returns:
        Whether the markers were found (the file is left alone otherwise).
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = path.read_text()
    if begin not in content or end not in content:
        return False
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")
    return True


def tensorflow_versions() -> dict[str, str]:
    """Versions of TensorFlow, Keras (and tf-keras when loaded) in this process."""
    versions = {"python": platform.python_version()}
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        versions["tensorflow"] = tf.__version__
    keras = sys.modules.get("keras")
    if keras is not None:
        versions["keras"] = keras.__version__
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None:
        versions["tf_keras"] = tf_keras.__version__
    return versions
