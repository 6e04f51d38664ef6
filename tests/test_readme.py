"""README.md's commands are the ones CI and users run."""

from __future__ import annotations

import re

from conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```\n(.*?)```", text, re.S) if "\n" not in block.strip()]


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci]


def test_readme_gives_install_main_job_and_tests():
    commands = readme_commands()
    assert 'pip install -e ".[test,ray]"' in commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test,ray]"' in ci  # the tests need Ray and Optuna
    assert "rnnflow run specs/gru_forecast.yaml" in commands
    assert (ROOT / "specs" / "gru_forecast.yaml").exists()
