"""A benchmark run's report: its summaries, their verdicts and its markdown (standard library only).

The parts: `stats.py` computes what the records add up to, `verdicts.py` judges that against the
targets, `render.py` writes it as markdown; this module puts them together for `run.py` and
writes the files. Run it on a results.json to recompute the summaries from the records and
regenerate its results.md: `python benchmarks/report.py benchmarks/results/results.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import stats
import verdicts
from _harness import replace_section
from render import markdown

HERE = Path(__file__).parent
DEFAULT_RESULTS = HERE / "results"
README = HERE / "README.md"


def summarize_sine(records: list[dict], spec_variant: str, compiled: list[str]) -> dict[str, Any]:
    """The sine workload's statistics and verdicts (as results.json keeps them)."""
    summary = stats.sine_summary(records, compiled)
    return {**summary, "verdicts": verdicts.sine(summary, spec_variant, compiled), "spec_variant": spec_variant,
            "compiled": compiled, "notes": verdicts.sine_notes(spec_variant)}


def summarize_mnist(records: list[dict], spec_variant: str, compiled: list[str]) -> dict[str, Any]:
    """The MNIST workload's statistics and verdicts (as results.json keeps them)."""
    summary = stats.mnist_summary(records, compiled)
    return {**summary, "verdicts": verdicts.mnist(summary, spec_variant, compiled), "spec_variant": spec_variant,
            "compiled": compiled, "notes": []}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute the summaries of a results dict from its records."""
    summary = {}
    for workload, old in results["summary"].items():
        function = summarize_sine if workload == "sine" else summarize_mnist
        compiled = old.get("compiled") or [v for v in old["variants"] if v.startswith("rnnflow_xla")]
        summary[workload] = function(results["records"], old["spec_variant"], compiled)
    return summary


def write_results(results: dict[str, Any], folder: Path, readme: bool = True) -> list[Path]:
    """Write results.json and results.md into `folder`; for a full run into the default folder
    also the results section of benchmarks/README.md (unless `readme` is false).

    Returns:
        The files written.
    """
    written = [folder / "results.json", folder / "results.md"]
    written[0].write_text(json.dumps(results, indent=1) + "\n")
    written[1].write_text(markdown(results))
    if readme and not results["config"].get("quick") and folder.resolve() == DEFAULT_RESULTS.resolve():
        if replace_section(README, "results", markdown(results, title="", level=3)):
            written.append(README)
    return written


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT_RESULTS / "results.json"
    results = json.loads(path.read_text())
    results["summary"] = summarize(results)
    written = write_results(results, path.parent)
    print("summaries recomputed; wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main(sys.argv[1:])
