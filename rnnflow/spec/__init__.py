"""Spec loading and validation. Importing this package never imports TensorFlow.

The names below are loaded on first use, so that `rnnflow.spec.base` (which every component
module imports) can be imported before the data sources are registered.
"""

from __future__ import annotations

from typing import Any

from rnnflow.errors import SpecError, SpecIssue

__all__ = ["Spec", "SpecError", "SpecIssue", "load_spec", "spec_from_document", "spec_from_text", "spec_schema"]


def __getattr__(name: str) -> Any:
    if name in {"Spec", "load_spec", "spec_from_document", "spec_from_text", "spec_schema"}:
        from rnnflow.spec import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'rnnflow.spec' has no attribute '{name}'")
