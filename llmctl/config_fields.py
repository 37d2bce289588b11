"""The schema's fields by config key: which section model a key opens (`model_of`, `field_annotation`), which values
are paths, and those paths made absolute against the folder of the file that wrote them (`resolve_paths`).
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmctl.schema import Experiment, IsPath


def _path_like(annotation: Any) -> bool:
    """True if a field annotation is (Optional of) a path field."""
    if typing.get_origin(annotation) is typing.Annotated:
        return any(isinstance(m, IsPath) for m in typing.get_args(annotation)[1:])
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_path_like(a) for a in typing.get_args(annotation))
    return False


def model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_of(arg)
        if found is not None:
            return found
    return None


def field_annotation(model: type[BaseModel], key: str) -> Any | None:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            ann = field.annotation
            if field.metadata:
                ann = typing.Annotated[(ann, *field.metadata)]
            return ann
    return None


def _builtin_names(annotation: Any) -> tuple[str, ...]:
    """The built-in names (`IsPath.names`) a path field also accepts."""
    if typing.get_origin(annotation) is typing.Annotated:
        return tuple(n for m in typing.get_args(annotation)[1:] if isinstance(m, IsPath) for n in m.names)
    return tuple(n for a in typing.get_args(annotation) for n in _builtin_names(a))


def _resolve(value: Any, base: Path, names: tuple[str, ...] = ()) -> Any:
    if isinstance(value, str) and value.strip().lower() in names:
        return value
    if isinstance(value, str) and value:
        expanded = Path(value).expanduser()
        return os.path.normpath(expanded if expanded.is_absolute() else base / expanded)
    return value


def resolve_paths(raw: dict[str, Any], base: Path, model: type[BaseModel] = Experiment) -> dict[str, Any]:
    """Return a copy of `raw` with every path-typed value made absolute against `base`."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        ann = field_annotation(model, key) if isinstance(key, str) else None
        if ann is None:
            out[key] = value
            continue
        is_list = typing.get_origin(ann) is list or any(typing.get_origin(a) is list for a in typing.get_args(ann))
        sub = model_of(ann)
        if isinstance(value, list) and is_list:
            inner = [a for a in typing.get_args(ann)] or [ann]
            items = []
            for item in value:
                if isinstance(item, dict) and sub is not None:
                    items.append(resolve_paths(item, base, sub))
                elif isinstance(item, str) and (sub is not None or any(_path_like(a) for a in inner)):
                    items.append(_resolve(item, base))
                else:
                    items.append(item)
            out[key] = items
        elif isinstance(value, dict) and sub is not None:
            out[key] = resolve_paths(value, base, sub)
        elif _path_like(ann):
            out[key] = _resolve(value, base, _builtin_names(ann))
        else:
            out[key] = value
    return out
