"""Spec loading and validation. Importing this package never imports TensorFlow.

The names from `rnnflow.spec.spec` are loaded on first use: the sections of the spec (data
sources, evaluation steps) import `rnnflow.spec.base`, which imports this package first, so an
eager import here would build the `Spec` model before any source or step is registered.
"""

from __future__ import annotations

from typing import Any

from rnnflow.errors import SpecError, SpecIssue

__all__ = ["Spec", "SpecError", "SpecIssue", "load_spec", "spec_from_document", "spec_from_text", "spec_schema"]

_FROM_SPEC = {"Spec", "load_spec", "spec_from_document", "spec_from_text", "spec_schema"}


def __getattr__(name: str) -> Any:
    if name in _FROM_SPEC:
        from rnnflow.spec import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'rnnflow.spec' has no attribute '{name}'")
