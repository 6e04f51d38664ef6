"""Fuzzing the spec loader: whatever the input, loading fails only with a SpecError.

Each test starts from small valid specs, breaks them in one of many ways (structurally, as YAML
text, as bytes, through `--set`) and checks that `load_spec` either accepts the result or raises
`SpecError`. Any other exception is a bug in the loader or validator, and so is a CLI run of
`rnnflow validate` that ends in anything but exit code 0 or 2.

The runs are derandomized (the same examples every time) and sized to take a few seconds each;
RNNFLOW_FUZZ_SCALE=20 runs twenty times as many examples, RNNFLOW_FUZZ_RANDOM=1 fresh ones.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnflow.cli import main
from rnnflow.errors import SpecError
from rnnflow.spec import load_spec, spec_from_text

VALID_SPECS: dict[str, dict[str, Any]] = {
    "sine_gru": {
        "name": "sine_gru",
        "seed": 1,
        "data": {"type": "sine", "function": "sin", "sampling": "random", "steps": 10, "resolution": 0.1,
                 "train_windows": 20, "eval_windows": 5, "instance_start": 2.5},
        "model": {
            "cells": [{"type": "gru", "units": 8, "layers": 2,
                       "wrappers": [{"type": "dropout", "keep_prob": 0.9},
                                    {"type": "device", "device": ["/cpu:0", "/cpu:1"], "strict": True}]}],
            "output": "sequence",
            "projection": {"units": 1, "mode": "stacked"},
        },
        "train": {"optimizer": "adam", "learning_rate": 0.01, "iterations": 5, "batch_size": 4,
                  "loss": "mse", "metrics": ["mse", "mae"]},
        "evaluate": {"batch_size": 8, "steps": [{"type": "predictions"},
                                                 {"type": "generate", "seed": "values", "values": [0.1, 0.2]}]},
        "tracking": {"experiment": "fuzz", "tags": {"a": "b"}},
    },
    "mnist_lstm": {
        "name": "mnist_lstm",
        "data": {"type": "mnist", "path": "no/such/mnist.npz", "train_limit": 10, "eval_limit": 5},
        "model": {"cells": [{"type": "lstm", "units": 4, "forget_bias": 1.0},
                            {"type": "peephole_lstm", "units": 4}], "output": "last"},
        "train": {"epochs": 1, "loss": "sparse_categorical_crossentropy",
                  "metrics": ["accuracy", "top_k_accuracy"], "top_k": 3},
    },
    "padded_rnn": {
        "name": "padded_rnn",
        "data": {"type": "padded", "generate": {"task": "sum", "count": 10, "eval_count": 4,
                                                "min_length": 1, "max_length": 5}},
        "model": {"cells": [{"type": "rnn", "units": 3}, {"type": "cifg_lstm", "units": 3}], "output": "last"},
        "train": {"iterations": 2, "loss": "mae"},
        "evaluate": {"steps": [{"type": "outputs", "rows": 2}]},
    },
    "inline_rnn": {
        "name": "inline_rnn",
        "data": {"type": "inline", "inputs": [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]],
                 "targets": [[[1.0], [0.0]], [[0.0], [1.0]]], "lengths": [2, 1]},
        "model": {"cells": [{"type": "rnn", "units": 2}], "unroll": True, "projection": None},
        "train": None,
    },
}

KeyPath = tuple[Any, ...]

# Values a confused author (or a broken editor) might put anywhere in a spec.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**40, -(10**40), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-320, 1e308, -1e308, 0.5, 1.0, 1.5]),
    st.text(max_size=12),
    st.sampled_from(["", "sine", "gru", "lstm", "mnist", "dropout", "device", "generate", "/gpu:0",
                     "null", "~", "yes", "1e400", ".nan", "8", "-3", "a.b", "../x", "mse", "last"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Characters that mean something to YAML, plus a few letters, digits and whitespace.
YAML_TEXT = st.text(alphabet=":{}[],&*!|>-#?%@`'\"\t\n \\ab1.e~", max_size=12)


def _paths(value: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    """Every key path in a nested structure of dicts and lists (the root included)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, prefix + (i,))
    return found


def _parent(doc: Any, path: KeyPath) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def _near_miss(draw, word: str) -> str:
    """A misspelling of `word`: one character dropped, doubled, changed or the case changed."""
    if not word:
        return "x"
    i = draw(st.integers(0, len(word) - 1))
    how = draw(st.sampled_from(["drop", "double", "change", "upper"]))
    if how == "drop":
        return word[:i] + word[i + 1:] or "x"
    if how == "double":
        return word[:i] + word[i] + word[i:]
    if how == "change":
        return word[:i] + draw(st.sampled_from("aeiouxz_")) + word[i + 1:]
    return word.upper()


@st.composite
def mutated_specs(draw) -> Any:
    """A valid spec broken by one to three structural mutations."""
    doc = copy.deepcopy(VALID_SPECS[draw(st.sampled_from(sorted(VALID_SPECS)))])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "rename", "add", "misspell_value"]))
        if not path:  # the root itself
            if op == "replace":
                doc = draw(VALUES)
            continue
        parent, last = _parent(doc, path), path[-1]
        if op == "replace":
            parent[last] = draw(VALUES)
        elif op == "delete":
            del parent[last]
        elif op == "rename" and isinstance(last, str):
            new = draw(st.one_of(st.text(max_size=10), st.just(_near_miss(draw, last))))
            parent[new] = parent.pop(last)
        elif op == "add" and isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=10))] = draw(VALUES)
        elif op == "add" and isinstance(parent[last], list):
            parent[last].append(draw(VALUES))
        elif op == "misspell_value" and isinstance(parent[last], str):
            parent[last] = _near_miss(draw, parent[last])
    return doc


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _accepts_or_spec_error(text: str, overrides: tuple[str, ...] = ()) -> None:
    """Load a spec from text: it may be valid; if not, only a SpecError of well-formed issues."""
    try:
        spec_from_text(text, "fuzz.yaml", overrides)
    except SpecError as error:
        _check_issues(error, "fuzz.yaml")


def _check_issues(error: SpecError, source: str) -> None:
    """Every issue has a message and comes from the file (with a position) or from a --set."""
    assert error.issues, "a SpecError must list at least one issue"
    for issue in error.issues:
        assert issue.message.strip(), f"an issue without a message: {issue!r}"
        assert issue.source == source or issue.source.startswith("--set "), issue
        if issue.source == source and "the file is empty" not in issue.message:
            assert issue.line is not None and issue.column is not None, f"an issue without a position: {issue}"


SCALE = float(os.environ.get("RNNFLOW_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=int(300 * SCALE), deadline=None,
                derandomize=not os.environ.get("RNNFLOW_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def scaled(examples: int) -> settings:
    return settings(FUZZ, max_examples=max(1, int(examples * SCALE)))


def test_the_starting_specs_are_valid():
    for name, doc in VALID_SPECS.items():
        spec = spec_from_text(_dump(doc), f"{name}.yaml")
        assert spec.name == name


@FUZZ
@given(mutated_specs())
def test_structural_mutations_raise_only_spec_errors(doc):
    _accepts_or_spec_error(_dump(doc))


@st.composite
def mutated_texts(draw) -> str:
    """The YAML text of a valid spec with random edits: inserted, deleted or duplicated text."""
    text = _dump(VALID_SPECS[draw(st.sampled_from(sorted(VALID_SPECS)))])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate_line", "indent", "yaml_snippet"]))
        if op == "insert":
            text = text[:i] + draw(YAML_TEXT) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)):]
        elif op == "duplicate_line":
            lines = text.splitlines(keepends=True)
            j = min(i, len(lines) - 1)
            lines.insert(j, lines[j])
            text = "".join(lines)
        elif op == "indent":
            lines = text.splitlines(keepends=True)
            j = min(i, len(lines) - 1)
            lines[j] = draw(st.sampled_from([" ", "  ", "\t", ""])) + lines[j].lstrip(" ")
            text = "".join(lines)
        else:
            snippet = draw(st.sampled_from([
                "&a ", "*a", "*nope", "<<: *a\n", "!!python/object/apply:os.system [true]",
                "!!python/name:os.system", "!!binary aGk=", "!!set {a}", "!!omap [a: 1]", "!custom ",
                "? [a]\n: 1\n", "---\n", "...\n", "%YAML 1.1\n", "{", "]", "'", '"', "\\x00", "\x00",
                "\x07", "\ufeff", "\u2028", ".inf", "-.inf", ".nan", "1e400", "1" * 400, "0x1F", "0o17",
                "1_000", "2001-12-14", "190:20:30", "~", "null", "yes", "no", "on",
            ]))
            text = text[:i] + snippet + text[i:]
    return text


@FUZZ
@given(mutated_texts())
def test_text_mutations_raise_only_spec_errors(text):
    _accepts_or_spec_error(text)


def _parsed_by(loader_class, text: str):
    from rnnflow.spec import yamlio

    try:
        doc = yamlio._parse(loader_class, text, "x.yaml", None)
    except SpecError:
        return "error"
    return doc.data, doc.values, doc.keys


def _assert_loaders_agree(text: str) -> None:
    """Whatever the pure-Python loader accepts, the fast path (libyaml's parser) reads identically:
    the same data and the same position of every key and value.

    libyaml accepts a few syntax corners that PyYAML refuses (`- >#x`, for one); that text then
    loads, the same on every machine whose PyYAML has libyaml (all the common wheels do).
    """
    from rnnflow.spec import yamlio

    if not yamlio._fast_path_allowed(text):
        return
    pure = _parsed_by(yamlio._Loader, text)
    if pure != "error":
        assert _parsed_by(yamlio._FastLoader, text) == pure


REPO = Path(__file__).resolve().parents[1]
YAML_FILES = sorted(p for d in ("specs", "pipelines", "tests/bad_specs") for p in (REPO / d).rglob("*.yaml"))


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_fast_and_pure_python_yaml_agree_on_every_file(path):
    from rnnflow.spec import yamlio

    if yamlio._FastLoader is None:
        pytest.skip("PyYAML was built without libyaml: there is only one loader")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return
    _assert_loaders_agree(text)
    if path.parent.name in ("specs", "pipelines"):
        assert _parsed_by(yamlio._FastLoader, text) != "error"  # the fast path is really taken


@FUZZ
@given(mutated_texts())
def test_fast_and_pure_python_yaml_agree_on_mutated_texts(text):
    from rnnflow.spec import yamlio

    if yamlio._FastLoader is None:
        return
    _assert_loaders_agree(text)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@scaled(200)
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda text, cut, junk: text[:cut] + junk + text[cut:],
              st.sampled_from([_dump(d).encode() for d in VALID_SPECS.values()]),
              st.integers(0, 400), st.binary(min_size=1, max_size=8)),
))
def test_random_bytes_raise_only_spec_errors(fuzz_dir, raw):
    path = fuzz_dir / "bytes.yaml"
    path.write_bytes(raw)
    try:
        load_spec(path)
    except SpecError as error:
        _check_issues(error, str(path))


def _override_paths() -> list[str]:
    from rnnflow.spec.keypath import format_path

    return sorted({format_path(p) for d in VALID_SPECS.values() for p in _paths(d) if p})


@st.composite
def overrides(draw) -> str:
    kind = draw(st.sampled_from(["structured", "text"]))
    if kind == "text":
        return draw(st.text(alphabet="abcdelmnorstu_.[]0123456789=-{}:, '\"!&*\t", max_size=30))
    key = draw(st.one_of(st.sampled_from(_override_paths()),
                         st.text(alphabet="abc_.[]019", min_size=1, max_size=12)))
    value = yaml.safe_dump(draw(VALUES), default_flow_style=True, width=10**6).strip()
    if value.endswith("\n..."):
        value = value[: -len("\n...")]
    return f"{key}={value}"


@FUZZ
@given(st.sampled_from(sorted(VALID_SPECS)), st.lists(overrides(), min_size=1, max_size=3))
def test_overrides_raise_only_spec_errors(name, assignments):
    _accepts_or_spec_error(_dump(VALID_SPECS[name]), tuple(assignments))


@scaled(60)
@given(st.one_of(mutated_texts(), mutated_specs().map(_dump)))
def test_cli_validate_never_crashes(fuzz_dir, text):
    path = fuzz_dir / "cli.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    for line in result.stderr.splitlines():  # each error on one line, starting with the file
        assert line.startswith((f"{path}:", "rnnflow: ")), line
