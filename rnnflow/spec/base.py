"""The base of every spec section, and the small vocabularies sections share."""

from typing import Any, Literal

import pydantic

from rnnflow.spec.keypath import KeyPath, parse_path

Activation = Literal[
    "tanh", "relu", "sigmoid", "hard_sigmoid", "elu", "selu", "gelu", "softsign", "swish", "linear"
]
Initializer = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
    "orthogonal", "zeros", "ones", "random_normal", "random_uniform", "variance_scaling",
]


# Modules that define sections do not use `from __future__ import annotations`: pydantic would
# have to compile every string annotation when they are imported, about 45 ms of each
# `rnnflow validate`. Names imported only for type checking are quoted where they are used.


class Section(pydantic.BaseModel):
    """A spec section: unknown keys are errors, numbers must be finite, defaults are validated.

    A validator that wants its error reported at a child key raises `at(key, message)`; the error
    formatter moves the error to that key path.
    """

    model_config = pydantic.ConfigDict(
        extra="forbid",
        strict=True,  # `units: "8"` is a mistake in a spec, not something to coerce
        allow_inf_nan=False,
        validate_default=True,
        validate_assignment=False,
        use_enum_values=True,
        # Build validators when a model is first used, not when its class is defined: only the
        # top-level Spec and Pipeline validate, and `rnnflow validate` starts about 0.1 s sooner.
        defer_build=True,
    )


class KeyedError(ValueError):
    """A validator's error about a key below the section that raises it.

    Pydantic keeps the raised exception in the error's `ctx["error"]`; the error formatter reads
    `path` from there and reports the message at that key.

    Attributes:
        path: the key path below the section, e.g. ('steps', 1, 'name').
        message: what is wrong.
    """

    def __init__(self, path: KeyPath, message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def at(key: str | KeyPath, message: str) -> KeyedError:
    """An error to be reported at `key` below the section that raises it.

    Args:
        key: a key path as written in a spec (`steps[1].name`), or a tuple of keys (for a key that
            is not a name, such as a tag name with spaces).
        message: what is wrong.
    """
    return KeyedError(parse_path(key) if isinstance(key, str) else tuple(key), message)


# The regular expressions of string fields, in words, for error messages.
PATTERN_WORDS: dict[str, str] = {}


def pattern(regex: str, words: str) -> str:
    """Declare a field pattern with its description in words (shown when a value does not match)."""
    PATTERN_WORDS[regex] = words
    return regex


# The `name:` of specs and pipelines (it defaults to the file name, see `validate_named`).
NAME_PATTERN = pattern(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
    "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 100 characters",
)


def json_schema(model: type[pydantic.BaseModel], title: str) -> dict[str, Any]:
    """The JSON Schema of a top-level model (a spec or a pipeline), for editors."""
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    return schema
