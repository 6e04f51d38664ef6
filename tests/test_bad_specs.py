"""The bad-spec corpus: every file in tests/bad_specs/ fails with exactly the issues it must.

tests/bad_specs_expected.yaml lists, for each file, the issues loading it must report (see the
comment at its top for the format). It lives beside the folder, not in it, so that the folder
holds only spec files to validate (the set_* ones are valid on their own: their mistake is in
the `--set` override they are loaded with). The test asserts the exact line, column and key path of each
issue, that its message contains the expected fragment, and that nothing else is reported.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnnflow.cli import main
from rnnflow.data import LoadContext
from rnnflow.errors import DataError, SpecError, SpecIssue, printable
from rnnflow.spec.pipeline import load_pipeline
from rnnflow.spec import load_spec
from rnnflow.spec.yamlio import load_yaml

CORPUS = Path(__file__).parent / "bad_specs"
EXPECTED = Path(__file__).parent / "bad_specs_expected.yaml"
_ISSUE = re.compile(r"^(?P<loc>\d+:\d+|-|--set)(?: (?P<path>[^:\s]+))?: (?P<fragment>.+)$")


@dataclasses.dataclass(frozen=True)
class Expected:
    """One issue a corpus file must produce."""

    source: str  # the file, or "--set" for an issue of an override
    line: int | None
    column: int | None
    path: str
    fragment: str

    def matches(self, issue: SpecIssue, file: Path, overrides: list[str]) -> bool:
        if self.source == "--set":
            if issue.source not in {f"--set {o}" for o in overrides}:
                return False
        elif issue.source != str(file):
            return False
        # As printed: a control character in a key or value shows as an escape like \\n.
        path, message = printable(issue.path), printable(issue.message)
        return (issue.line, issue.column, path) == (self.line, self.column, self.path) and self.fragment in message

    def __str__(self) -> str:
        where = "-" if self.line is None else f"{self.line}:{self.column}"
        where = "--set" if self.source == "--set" else where
        return f"{where}{' ' + self.path if self.path else ''}: {self.fragment}"


@dataclasses.dataclass(frozen=True)
class Case:
    """A corpus file, how to load it and the issues it must produce."""

    name: str
    kind: str
    overrides: list[str]
    missing: bool
    issues: list[Expected]

    @property
    def file(self) -> Path:
        return CORPUS / self.name


def _parse_issue(text: str) -> Expected:
    match = _ISSUE.match(text)
    if not match:
        raise ValueError(f"bad_specs_expected.yaml: cannot read issue {text!r}")
    loc = match["loc"]
    line, column = (None, None) if loc in ("-", "--set") else map(int, loc.split(":"))
    source = "--set" if loc == "--set" else "file"
    return Expected(source, line, column, match["path"] or "", match["fragment"])


def _cases() -> list[Case]:
    # Read with rnnflow's own loader, so a duplicated entry is an error rather than lost.
    entries = load_yaml(EXPECTED).data
    cases = []
    for name, entry in entries.items():
        if isinstance(entry, list):
            entry = {"issues": entry}
        unknown = set(entry) - {"kind", "set", "missing", "issues"}
        assert not unknown, f"bad_specs_expected.yaml: {name}: unknown keys {unknown}"
        cases.append(Case(
            name=name,
            kind=entry.get("kind", "spec"),
            overrides=list(entry.get("set", [])),
            missing=bool(entry.get("missing", False)),
            issues=[_parse_issue(text) for text in entry["issues"]],
        ))
    return cases


CASES = _cases()
# Files a full YAML loader would create if it constructed the python tags in the corpus.
MARKERS = [Path("/tmp/rnnflow-bad-spec-executed"), Path("/tmp/rnnflow-bad-spec-opened")]


def test_the_corpus_is_large_and_every_file_has_its_expectation():
    files = {p.name for p in CORPUS.iterdir()}
    listed = {c.name for c in CASES if not c.missing}
    assert files - listed == set(), "corpus files without an entry in bad_specs_expected.yaml"
    assert listed - files == set(), "entries in bad_specs_expected.yaml without a file (mark them missing: true)"
    assert all(not c.file.exists() for c in CASES if c.missing)
    assert len(files) >= 60
    assert len([c for c in CASES if c.kind == "pipeline"]) >= 10
    assert all(c.issues for c in CASES)


def _load(case: Case) -> list[SpecIssue]:
    assert case.kind in ("spec", "pipeline"), case.kind
    with pytest.raises(SpecError) as caught:
        if case.kind == "pipeline":
            load_pipeline(case.file, tuple(case.overrides))
        else:
            load_spec(case.file, case.overrides)
    return caught.value.issues


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_spec(case: Case):
    for marker in MARKERS:
        marker.unlink(missing_ok=True)
    issues = _load(case)
    shown = "\n".join(str(i) for i in issues)
    expected = "\n".join(str(e) for e in case.issues)
    assert len(issues) == len(case.issues), f"got:\n{shown}\nexpected:\n{expected}"
    for issue, want in zip(issues, case.issues):
        matches = want.matches(issue, case.file, case.overrides)
        assert matches, f"got:\n{issue}\nexpected:\n{want}"
    assert not any(m.exists() for m in MARKERS), "a python tag in a spec was constructed"


def test_not_utf8_file_really_is_not_utf8():
    raw = (CORPUS / "not_utf8.yaml").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


@pytest.mark.parametrize("name", ["tag_python_apply_on_value.yaml", "tag_python_apply_on_mapping.yaml"])
def test_python_tags_are_refused_not_constructed(tmp_path, name):
    """The payloads are live (PyYAML's unsafe loader runs them), and load_spec never does."""
    import yaml

    marker = tmp_path / "marker"
    text = (CORPUS / name).read_text()
    for old in MARKERS:
        text = text.replace(str(old), str(marker))
    assert str(marker) in text
    spec_file = tmp_path / name
    spec_file.write_text(text)

    yaml.unsafe_load(text)
    assert marker.exists(), "the payload should create the marker when constructed"
    marker.unlink()

    with pytest.raises(SpecError, match="is not allowed: a spec is plain data"):
        load_spec(spec_file)
    assert not marker.exists()


# ------------------------------------------------------------------------------------ the CLI


def _cli_cases() -> list[Case]:
    return [c for c in CASES if not c.overrides]


def test_cli_validate_reports_every_issue_of_the_corpus_one_located_line_each():
    cases = _cli_cases()
    result = CliRunner().invoke(main, ["validate", *(str(c.file) for c in cases)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith("rnnflow: ")]
    wanted = [(c, e) for c in cases for e in c.issues]
    assert len(lines) == len(wanted), result.stderr
    for line, (case, want) in zip(lines, wanted):
        where = str(case.file) if want.line is None else f"{case.file}:{want.line}:{want.column}"
        prefix = f"{where} {want.path}: " if want.path else f"{where}: "
        assert line.startswith(prefix), f"{line!r} does not start with {prefix!r}"
        assert want.fragment in line[len(prefix):]
    assert f"rnnflow: {len(cases)} of {len(cases)} file(s) invalid" in result.stderr


def test_cli_validate_names_the_set_source():
    case = next(c for c in CASES if c.name == "set_wrong_type.yaml")
    args = ["validate", str(case.file)]
    for assignment in case.overrides:
        args += ["--set", assignment]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith(f"--set {case.overrides[0]} ")


def test_cli_validate_reports_an_internal_error_in_one_line_without_a_traceback(monkeypatch):
    """A bug in the validator must still not show the user a traceback (--debug shows it)."""
    import rnnflow.spec.pipeline

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(rnnflow.spec.pipeline, "spec_from_document", broken)
    result = CliRunner().invoke(main, ["validate", str(CORPUS / "several_errors.yaml")])
    assert result.exit_code == 1
    assert result.stderr == ("rnnflow: internal error: KeyError: 'a bug' "
                             "(rerun with rnnflow --debug ... for the traceback)\n")
    assert "Traceback" not in result.output


_CHECK_IMPORTS = """
import json, sys
from rnnflow.cli import main
try:
    main(["validate", *sys.argv[1:]])
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("tensorflow", "keras", "mlflow", "matplotlib") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_validate_never_imports_tensorflow_in_a_fresh_interpreter(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data: {type: sine}\nmodel: {cells: [{type: gru}]}\n")
    files = [str(good), str(CORPUS / "several_errors.yaml"), str(CORPUS / "tag_python_name.yaml")]
    done = subprocess.run([sys.executable, "-c", _CHECK_IMPORTS, *files], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**_env(), "PYTHONPATH": _pythonpath()})
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"code": 2, "heavy": []}
    assert f"{CORPUS / 'several_errors.yaml'}:8:7 model.cells[0].unit: unknown key" in done.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _pythonpath() -> str:
    return str(Path(__file__).resolve().parents[1])


# ------------------------------------------------------------------ data that fails at loading


def _mnist_spec(tmp_path: Path, data_path: str) -> Path:
    spec_file = tmp_path / "mnist_spec.yaml"
    spec_file.write_text(
        f"data:\n  type: mnist\n  path: {data_path}\nmodel:\n  cells:\n    - type: lstm\n  output: last\n"
        "train:\n  loss: sparse_categorical_crossentropy\n"
    )
    return spec_file


def test_missing_mnist_file_is_valid_but_fails_to_load_with_a_data_error(tmp_path):
    spec = load_spec(_mnist_spec(tmp_path, "no_such_dir/mnist.npz"))  # validation reads no data
    with pytest.raises(DataError, match=r"no_such_dir/mnist\.npz: file not found \(data\.path in the spec\)"):
        spec.data.load(LoadContext(seed=spec.seed, base_dir=spec.base_dir))


def test_mnist_path_to_a_directory_fails_to_load_with_a_data_error(tmp_path):
    (tmp_path / "datasets").mkdir()
    spec = load_spec(_mnist_spec(tmp_path, "datasets"))
    with pytest.raises(DataError, match=r"datasets: a directory; data.path must name a file"):
        spec.data.load(LoadContext(seed=spec.seed, base_dir=spec.base_dir))


def test_corrupt_mnist_file_fails_to_load_with_a_data_error(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not a zip archive")
    spec = load_spec(_mnist_spec(tmp_path, "mnist.npz"))
    with pytest.raises(DataError, match=r"mnist\.npz: not a readable \.npz file .*expected x_train"):
        spec.data.load(LoadContext(seed=spec.seed, base_dir=spec.base_dir))
