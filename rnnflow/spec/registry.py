"""One small registry per kind of component, keyed by the YAML `type:` string.

A registered class is a pydantic model with a `type: Literal["name"]` field; the registry builds
the discriminated union the spec validates against, so the schema, the validator and the docs are
one and the same.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Union

import pydantic


class Registry:
    """Maps `type:` names to pydantic config classes of one kind (cells, sources, steps...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type[pydantic.BaseModel]] = {}

    def register(self, cls: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
        """Class decorator: register `cls` under the literal value of its `type` field.

        Raises:
            ValueError: if the class has no literal `type` or the name is taken.
        """
        annotation = cls.model_fields["type"].annotation
        names = typing.get_args(annotation)
        if typing.get_origin(annotation) is not typing.Literal or len(names) != 1:
            raise ValueError(f"{cls.__name__}.type must be a Literal of one name")
        name = names[0]
        if name in self._classes:
            raise ValueError(f"{self.kind} type '{name}' is registered twice")
        self._classes[name] = cls
        return cls

    def name_of(self, cls: type) -> str | None:
        """The `type:` name `cls` is registered under, or None when it is not one of this kind."""
        return next((name for name, known in self._classes.items() if known is cls), None)

    def owners(self, key: str) -> list[str]:
        """The names of the registered classes that have the key `key`, in registration order."""
        return [name for name, cls in self._classes.items() if key in cls.model_fields]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._classes)

    def __getitem__(self, name: str) -> type[pydantic.BaseModel]:
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def union(self) -> Any:
        """The discriminated union of every registered class, for use as a field annotation."""
        classes = tuple(self._classes.values())
        if len(classes) == 1:
            return classes[0]
        return Annotated[Union[classes], pydantic.Field(discriminator="type")]  # noqa: UP007


CELLS = Registry("cell")
WRAPPERS = Registry("wrapper")
SOURCES = Registry("data source")
STEPS = Registry("step")
DIMENSIONS = Registry("search space type")
SCHEDULES = Registry("learning-rate schedule")
REGISTRIES = (CELLS, WRAPPERS, SOURCES, STEPS, SCHEDULES, DIMENSIONS)
