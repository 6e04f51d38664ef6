"""benchmarks/report.py regenerates the committed results byte for byte (no TensorFlow here).

The results folders keep the raw records of each benchmark run (results.json) next to what the
report made of them; recomputing the summaries from the records and rendering them again must
give the same summaries, the same results.md and the same results section of benchmarks/README.md.
A change to the statistics, the verdict policy or the rendering shows up here as a diff.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"
RUNS = ["results", "results/sine-repeat"]


@pytest.fixture(scope="module")
def report():
    """benchmarks/report.py, imported as run.py imports it (its folder on sys.path, for its siblings)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import report
    finally:
        sys.path.remove(str(BENCHMARKS))
    return report


@pytest.mark.parametrize("run", RUNS)
def test_report_regenerates_the_committed_results(report, run, tmp_path, capsys):
    """`python benchmarks/report.py RESULTS_JSON` on a copy: the same results.json and results.md."""
    committed = BENCHMARKS / run
    shutil.copy(committed / "results.json", tmp_path / "results.json")
    report.main([str(tmp_path / "results.json")])
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.md"]
    assert (tmp_path / "results.md").read_bytes() == (committed / "results.md").read_bytes()
    assert (tmp_path / "results.json").read_bytes() == (committed / "results.json").read_bytes()


def test_report_regenerates_the_readme_section(report):
    """The results section of benchmarks/README.md is the full run's report at heading level 3."""
    results = json.loads((BENCHMARKS / "results" / "results.json").read_text())
    results["summary"] = report.summarize(results)
    readme = (BENCHMARKS / "README.md").read_text()
    section = readme.split("<!-- results:begin -->\n", 1)[1].split("<!-- results:end -->", 1)[0]
    assert section == report.markdown(results, title="", level=3).rstrip() + "\n"
