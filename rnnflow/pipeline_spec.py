"""Which kind of file `rnnflow validate` is looking at, and validating it."""

from __future__ import annotations

from pathlib import Path

from rnnflow.spec.spec import spec_from_document
from rnnflow.spec.yamlio import load_yaml


def check_file(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """Validate a spec or pipeline file; return which it is ('spec' or 'pipeline').

    Raises:
        SpecError: listing every problem in the file.
    """
    doc = load_yaml(path)
    spec_from_document(doc, overrides)
    return "spec"
