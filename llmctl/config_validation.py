"""Validating a merged config into an `Experiment`, every problem reported at once: pydantic's errors rendered one
line each (full key path, the bad value bounded, what was expected, a close key name for a typo), at most
`MAX_PROBLEMS` of them in one `ConfigError`.
"""

from __future__ import annotations

import difflib
import reprlib
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from llmctl.config_fields import field_annotation, model_of
from llmctl.errors import ConfigError
from llmctl.schema import Experiment

MAX_PROBLEMS = 20  # problems listed in one error line; the rest are counted ("... and N more")


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] | None = Experiment
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        ann = field_annotation(model, part)
        model = model_of(ann) if ann is not None else None
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _dotted(loc: Iterable[Any]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1 if parts else 0:] = [f"{parts[-1] if parts else ''}[{part}]"]
        elif part in ("function-after[_from_string(), SourceConfig]",):
            continue
        else:
            parts.append(str(part))
    return ".".join(parts)


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic inserts validator/union tags into locations (e.g. "literal['auto']", "bool"); drop them
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in str(p) and str(p) not in ("bool", "int", "str",
                                                                                                  "float")))


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxset, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, 4, 4, 60, 60
    return r


_REPR = _bounded_repr()


def describe_errors(exc: ValidationError) -> list[str]:
    """Turn pydantic errors into one line each: key path, bad value, what was expected, and a hint."""
    problems: list[str] = []
    by_key: dict[str, int] = {}
    listed: set[tuple[Any, ...]] = set()  # sections whose valid keys were already listed once
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]))
        key = _dotted(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent, name = loc[:-1], str(loc[-1])
            valid = _valid_keys(parent)
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
            where = f" in `{_dotted(parent)}`" if parent else ""
            hint = f": did you mean `{_dotted((*parent, close[0]))}`?" if close else (
                f"; valid keys{where}: {', '.join(valid)}" if valid and parent not in listed else "")
            if not close and valid:
                listed.add(parent)
            line = f"unknown key `{key}`{hint}"
        else:
            value = err.get("input")
            shown = _REPR.repr(value) if not isinstance(value, dict) else "a mapping"  # bounded: alias bombs
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if err["type"] == "missing":
                line = f"`{key}`: required key missing"
            elif key in by_key:  # a union type: several alternatives failed for the same value
                index = by_key[key]
                head, _, tail = problems[index].rpartition(" (got ")
                problems[index] = f"{head}, or {msg[0].lower() + msg[1:]} (got {tail}"
                continue
            else:
                line = f"`{key}`: {msg} (got {shown})"
            by_key[key] = len(problems)
        problems.append(line)
    return problems


def validate(raw: dict[str, Any], source: str = "config") -> Experiment:
    """Validate a merged raw mapping into an `Experiment`, reporting every problem at once."""
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        problems = describe_errors(exc)
        lines = [f"{source}: {p}" for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"... and {len(problems) - MAX_PROBLEMS} more problem(s)")
        raise ConfigError("; ".join(lines), problems=lines) from None
