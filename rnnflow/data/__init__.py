"""Data sources, one module per `data.type`; importing this package registers them all."""

# Registration order is the order `type:` names are listed in errors and the schema.
from rnnflow.data import inline, mnist, padded, sine  # noqa: F401  # isort: skip
from rnnflow.data import arrays, table  # noqa: F401  # isort: skip
from rnnflow.data.base import DataBundle, LoadContext, SourceSpec, Split

__all__ = ["DataBundle", "LoadContext", "SourceSpec", "Split"]
