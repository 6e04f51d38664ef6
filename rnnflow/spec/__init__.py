"""Spec loading and validation. Importing this package never imports TensorFlow."""

from rnnflow.errors import SpecError, SpecIssue
from rnnflow.spec.spec import Spec, load_spec, spec_from_document, spec_from_text, spec_schema

__all__ = ["Spec", "SpecError", "SpecIssue", "load_spec", "spec_from_document", "spec_from_text", "spec_schema"]
