"""The base of the experiment schema: the `Section` every config section derives from, path fields, shared bounds.

`Section` makes unknown keys errors, validates on assignment, refuses NaN / infinity and booleans given for numbers.
Fields typed `PathField` (or annotated with `IsPath`) are resolved against the folder of the YAML file that set them
(see `llmctl.config_fields`). The sections themselves live in `llmctl.schema_data` and `llmctl.schema`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class IsPath:
    """Marker in `Annotated[...]` metadata: this field holds a filesystem path (resolved relative to its file).
    `names`: values that are built-in names rather than paths (left as they are, compared case-insensitively)."""

    def __init__(self, names: tuple[str, ...] = ()):
        self.names = tuple(n.lower() for n in names)

    def __repr__(self) -> str:  # shows up in schema docs
        return "path"


PathField = Annotated[Path, IsPath()]


MAX_SEED = 2**32 - 1  # seeds go to NumPy and Keras, which take 0 .. 2**32 - 1


def _numeric(annotation) -> bool:
    """int / float / Optional of them: fields where a YAML `true`/`false` is a mistake, not a number."""
    if annotation in (int, float):
        return True
    args = getattr(annotation, "__args__", ())
    return bool(args) and all(a in (int, float, type(None)) for a in args) and any(a in (int, float) for a in args)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment too.

    No number is ever infinite or NaN (`allow_inf_nan=False`: `.inf` is refused like `.nan`), and a boolean is
    never taken for a number (`model.units: true` is an error, not 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, frozen=False,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value, info: ValidationInfo):
        if isinstance(value, bool) and info.field_name in cls.model_fields \
                and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
        return value

