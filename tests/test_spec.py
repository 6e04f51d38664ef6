"""Spec loading and validation: every shipped file is valid; bad input gets located errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PIPELINES, ROOT, SPECS

from rnnflow.cli import main
from rnnflow.errors import SpecError
from rnnflow.spec import load_spec, spec_from_text, spec_schema
from rnnflow.spec.keypath import format_path, parse_path
from rnnflow.spec.overrides import apply_override
from rnnflow.spec.yamlio import parse_yaml

GOOD = """\
name: good
data:
  type: sine
  sampling: fixed
  stop: 15
  steps: 100
model:
  cells:
    - type: rnn
      units: 100
      activation: relu
    - type: gru
      units: 10
train:
  iterations: 10
  batch_size: 1
"""


@pytest.mark.parametrize("path", SPECS + PIPELINES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_files_are_valid(path):
    from rnnflow.spec.pipeline import check_file

    assert check_file(path) in {"spec", "pipeline"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_resolved_spec_validates_to_itself(path):
    import yaml

    resolved = load_spec(path).resolved()
    again = spec_from_text(yaml.safe_dump(resolved, sort_keys=False), source="resolved")
    assert again.resolved() == resolved


def test_specs_exist():
    names = {p.stem for p in SPECS}
    assert {"sine_forecast", "gru_forecast"} <= names


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def only_issue(path: Path, overrides=()):
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    assert len(info.value.issues) == 1, info.value
    return info.value.issues[0]


def test_defaults_are_filled_in(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.seed == 42
    assert spec.train.optimizer == "adam" and spec.train.learning_rate == 1e-3
    assert spec.model.cells[1].reset_after is True
    assert spec.model.projection.mode == "stacked"
    assert spec.tracking.tracking_uri is None
    assert spec.resolved()["data"]["function"] == "sine_mix"


def test_name_defaults_to_file_stem(tmp_path):
    spec = load_spec(write(tmp_path, GOOD.replace("name: good\n", ""), "my_exp.yaml"))
    assert spec.name == "my_exp"


def test_unknown_key_is_located_with_suggestion(tmp_path):
    path = write(tmp_path, GOOD.replace("units: 100", "unit: 100"))
    issue = only_issue(path)
    assert (issue.source, issue.line, issue.column) == (str(path), 10, 7)
    assert issue.path == "model.cells[0].unit"
    assert "unknown key 'unit'" in issue.message and "did you mean 'units'" in issue.message


def test_misspelt_type_gets_suggestion(tmp_path):
    issue = only_issue(write(tmp_path, GOOD.replace("type: gru", "type: gur")))
    assert (issue.line, issue.path) == (12, "model.cells[1].type")
    assert "did you mean 'gru'" in issue.message


def test_wrong_type_is_located(tmp_path):
    issue = only_issue(write(tmp_path, GOOD.replace("batch_size: 1", "batch_size: one")))
    assert (issue.line, issue.column, issue.path) == (16, 15, "train.batch_size")
    assert "must be an integer" in issue.message


def test_out_of_range_is_located(tmp_path):
    issue = only_issue(write(tmp_path, GOOD.replace("units: 10\n", "units: -3\n")))
    assert (issue.line, issue.column, issue.path) == (13, 14, "model.cells[1].units")
    assert issue.message == "must be greater than 0 (got -3)"
    assert str(issue) == f"{tmp_path / 'x.yaml'}:13:14 model.cells[1].units: must be greater than 0 (got -3)"


def test_missing_section(tmp_path):
    text = GOOD.split("model:")[0]
    issue = only_issue(write(tmp_path, text))
    assert issue.path == "model" and issue.message.startswith("is required")
    assert issue.line == 1


def test_not_a_mapping(tmp_path):
    issue = only_issue(write(tmp_path, "- just\n- a list\n"))
    assert (issue.line, issue.column) == (1, 1)
    assert "must be a mapping" in issue.message


def test_empty_file(tmp_path):
    issue = only_issue(write(tmp_path, "# nothing here\n"))
    assert issue.source == str(tmp_path / "x.yaml")
    assert "empty" in issue.message


def test_all_errors_of_a_file_are_reported(tmp_path):
    text = GOOD.replace("units: 100", "units: 0").replace("type: gru", "type: grr").replace(
        "batch_size: 1", "batch_size: 1\n  optimiser: adam")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    paths = [i.path for i in info.value.issues]
    assert paths == ["model.cells[0].units", "model.cells[1].type", "train.optimiser"]
    assert "did you mean 'optimizer'" in info.value.issues[2].message


def test_cross_section_check_points_at_the_key(tmp_path):
    issue = only_issue(write(tmp_path, GOOD.replace("batch_size: 1", "batch_size: 1\n  epochs: 2")))
    assert issue.path == "train.epochs" and "not both" in issue.message
    issue = only_issue(write(tmp_path, GOOD + "  loss: sparse_categorical_crossentropy\n"))
    assert issue.path == "train.loss" and "regression task" in issue.message


def test_duplicate_keys_rejected(tmp_path):
    issue = only_issue(write(tmp_path, GOOD + "seed: 1\nseed: 2\n"))
    assert issue.path == "seed" and "duplicate key" in issue.message and issue.line == 18


def test_python_tags_are_never_constructed(tmp_path):
    marker = tmp_path / "pwned"
    text = GOOD + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    issue = only_issue(write(tmp_path, text))
    assert "not allowed" in issue.message and issue.path == "description"
    assert not marker.exists()


def test_scientific_notation_is_a_number(tmp_path):
    spec = load_spec(write(tmp_path, GOOD + "  learning_rate: 1e-4\n"))
    assert spec.train.learning_rate == pytest.approx(1e-4)


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, GOOD)
    spec = load_spec(path, ["model.cells[0].units=8", "train.learning_rate=0.01", "seed=7"])
    assert (spec.model.cells[0].units, spec.train.learning_rate, spec.seed) == (8, 0.01, 7)
    issue = only_issue(path, ["model.cells[1].units=-1"])
    assert issue.source == "--set model.cells[1].units=-1" and issue.path == "model.cells[1].units"
    assert issue.line is None
    with pytest.raises(SpecError, match="no such list item"):
        load_spec(path, ["model.cells[5].units=3"])
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load_spec(path, ["model.cells"])


def test_path_helpers_round_trip():
    parts = parse_path("model.cells[0].wrappers[1].keep_prob")
    assert parts == ("model", "cells", 0, "wrappers", 1, "keep_prob")
    assert format_path(parts) == "model.cells[0].wrappers[1].keep_prob"


def test_override_adds_nested_keys():
    doc = parse_yaml("a: 1\n", "t.yaml")
    apply_override(doc, "b.c=[1, 2]")
    assert doc.data == {"a": 1, "b": {"c": [1, 2]}}


def test_spec_from_text():
    spec = spec_from_text(GOOD)
    assert spec.name == "good" and spec.document.path is None


def test_schema_lists_every_type():
    schema = json.dumps(spec_schema())
    for name in ("rnn", "lstm", "peephole_lstm", "gru", "cifg_lstm", "sine", "mnist", "padded", "inline",
                 "dropout", "device", "predictions", "generate", "outputs"):
        assert f'"{name}"' in schema


# --- through the command line ---


def test_validate_cli_ok_and_bad(tmp_path):
    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, GOOD.replace("units: 10\n", "units: -3\n"), "bad.yaml")
    result = CliRunner().invoke(main, ["validate", str(good)])
    assert result.exit_code == 0 and "valid spec" in result.output
    result = CliRunner().invoke(main, ["validate", str(good), str(bad), str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert f"{bad}:13:14 model.cells[1].units: must be greater than 0 (got -3)" in result.output
    assert f"{tmp_path / 'missing.yaml'}: file not found" in result.output
    assert "Traceback" not in result.output


def test_validate_cli_every_bad_kind_exits_2_without_traceback(tmp_path):
    texts = {
        "unknown.yaml": GOOD.replace("units: 100", "unit: 100"),
        "wrongtype.yaml": GOOD.replace("batch_size: 1", "batch_size: [1]"),
        "range.yaml": GOOD.replace("batch_size: 1", "batch_size: 0"),
        "missing.yaml": "name: m\n",
        "list.yaml": "[1, 2]\n",
        "empty.yaml": "",
        "syntax.yaml": "model: [\n",
    }
    for name, text in texts.items():
        path = write(tmp_path, text, name)
        result = CliRunner().invoke(main, ["validate", str(path)])
        assert result.exit_code == 2, (name, result.output)
        assert result.output.startswith(str(path)), (name, result.output)
        assert "Traceback" not in result.output


def test_validate_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from rnnflow.cli import main\n"
        f"try:\n    main(['validate', '-q', *{[str(p) for p in SPECS]!r}])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NOTF', code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["NOTF", "0"], out.stderr


def test_schema_cli_prints_json():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "rnnflow spec"
