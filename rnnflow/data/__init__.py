"""Data sources, one module per `data.type`; importing this package registers them all."""

from rnnflow.data import inline, mnist, padded, sine  # noqa: F401  (registration)
from rnnflow.data.base import DataBundle, LoadContext, SourceSpec, Split

__all__ = ["DataBundle", "LoadContext", "SourceSpec", "Split"]
