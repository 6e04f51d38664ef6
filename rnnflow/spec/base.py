"""The base of every spec section, and the small vocabularies sections share."""

from typing import Literal

import pydantic

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

    A validator that wants its error reported at a child key raises `ValueError("@key: message")`;
    the error formatter moves the error to that key path.
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


def at(key: str, message: str) -> ValueError:
    """An error to be reported at `key` below the section that raises it."""
    return ValueError(f"@{key}: {message}")


# The regular expressions of string fields, in words, for error messages.
PATTERN_WORDS: dict[str, str] = {}


def pattern(regex: str, words: str) -> str:
    """Declare a field pattern with its description in words (shown when a value does not match)."""
    PATTERN_WORDS[regex] = words
    return regex
