"""rnnflow: declarative YAML pipelines for recurrent networks on Keras 3, tracked with MLflow.

The public API is `load_spec`, `build_model` and `run`. They are loaded on first use, so that
importing rnnflow (and `rnnflow validate`) never imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "load_spec", "run"]


def __getattr__(name: str) -> Any:
    if name == "load_spec":
        from rnnflow.spec import load_spec

        return load_spec
    if name == "build_model":
        from rnnflow.build import build_model

        return build_model
    if name == "run":
        from rnnflow.runner import run

        return run
    raise AttributeError(f"module 'rnnflow' has no attribute '{name}'")
