"""Load an experiment config: YAML (safe loader only) → `extends` merge → `--set` overrides → one validation.

Relative paths are resolved against the folder of the file that wrote them (`--set` values against the current
directory). Every problem found is reported at once as a `ConfigError` whose lines name the full key path. The
pieces: `config_yaml` reads one file, `config_fields` resolves its paths, `config_validation` validates and renders
the problems; this module merges `extends`, applies `--set` and is the one entry point (`load`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel

from llmctl.config_fields import resolve_paths
from llmctl.config_validation import validate
from llmctl.config_yaml import DuplicateKeyError, NestingError, read_yaml, safe_load
from llmctl.errors import ConfigError
from llmctl.schema import Experiment

CONFIG_SUFFIXES = (".yaml", ".yml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # run.name's pattern (llmctl.schema.RunConfig)
MAX_EXTENDS_DEPTH = 16


# ---------------------------------------------------------------- extends + --set


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) in `override` replaces the base value."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read `path`, follow `extends` (a path or list of paths relative to it), return the merged raw mapping."""
    path = path.resolve()
    if path in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path))
        raise ConfigError(f"`extends` cycle: {cycle}", hint="remove one of the `extends` entries")
    if len(_chain) > MAX_EXTENDS_DEPTH:
        raise ConfigError(f"`extends` chain deeper than {MAX_EXTENDS_DEPTH} at {path}")
    data = read_yaml(path)
    parents = data.pop("extends", None)
    data = resolve_paths(data, path.parent)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: `extends` must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for parent in parents:
        parent_path = (path.parent / parent).expanduser()
        if not parent_path.exists():
            raise ConfigError(f"{path}: extends `{parent}`, which does not exist ({parent_path})",
                              hint="fix the `extends` path (it is relative to the config file)")
        merged = deep_merge(merged, load_raw(parent_path, (*_chain, path)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and a YAML-parsed value (scalars, lists, mappings)."""
    if "=" not in text:
        raise ConfigError(f"--set `{text}` is not key=value", hint="write e.g. --set train.epochs=3")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set `{text}` has an empty key part", hint="write e.g. --set train.epochs=3")
    try:
        value = safe_load(value_text) if value_text.strip() else ""
    except DuplicateKeyError as exc:
        raise ConfigError(f"--set `{text}`: {exc.problem}", hint="keep one of them") from None
    except NestingError as exc:
        raise ConfigError(f"--set `{text[:80]}`: {exc.problem}", hint="write a plain value") from None
    except yaml.constructor.ConstructorError as exc:
        problem = " ".join(str(exc.problem).split())
        if "python/" not in problem and "not a config value" not in problem:
            return key.split("."), value_text  # e.g. `--set generate.stop=!`: the text itself
        raise ConfigError(f"--set `{text[:80]}`: unsupported YAML tag ({problem}); tags are never executed",
                          hint="write a plain value") from None
    except yaml.YAMLError:
        value = value_text
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str], cwd: Path | None = None) -> dict[str, Any]:
    """Apply `--set` overrides; path-typed values resolve against `cwd` (the user's shell folder)."""
    cwd = cwd or Path.cwd()
    out = raw
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for part in reversed(keys):
            nested = {part: nested}
        out = deep_merge(out, resolve_paths(nested, cwd))
    return out


# ---------------------------------------------------------------- the entry point: a file or run directory


def is_run_directory_target(target: Path) -> bool:
    """A CONFIG argument that names a run directory (an existing folder, or a missing path without .yaml/.yml)."""
    return target.is_dir() or (not target.exists() and target.suffix.lower() not in CONFIG_SUFFIXES)


def config_file_for(target: Path) -> Path:
    """A CONFIG argument may be a YAML file or a run directory (its saved, resolved `config.yaml` is used)."""
    from llmctl.errors import ArtifactError

    if target.is_dir():
        candidate = target / "config.yaml"
        if candidate.is_file():
            return candidate
        raise ArtifactError(f"{target} is a directory without config.yaml, not an llmctl run directory",
                            hint="pass a config file or a run directory made by llmctl")
    if not target.exists() and is_run_directory_target(target):
        raise ArtifactError(f"run directory {target} does not exist",
                            hint="check the path, or pass the experiment's .yaml config file")
    return target


def absolutize_defaults(model: BaseModel, cwd: Path) -> None:
    """Paths still relative after loading are defaults: they resolve against the current directory."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            absolutize_defaults(value, cwd)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    absolutize_defaults(item, cwd)
        elif isinstance(value, Path) and not value.is_absolute():
            setattr(model, name, Path(os.path.normpath(cwd / value)))


def load(path: str | Path, overrides: Iterable[str] = (), cwd: Path | None = None) -> Experiment:
    """The one entry point: file (or run directory) + overrides → validated `Experiment`.

    Given a run directory, that directory *is* the run, wherever it lives now (copied or moved): `run.dir` and
    `run.name` are taken from its location and `RunDir.of` returns it."""
    from llmctl.runs import RunDir

    target = Path(path)
    file = config_file_for(target)
    raw = load_raw(file)
    run_dir = target if target.is_dir() else None
    if run_dir is not None:
        located = {"dir": str(run_dir.resolve().parent)}
        if _NAME.match(run_dir.resolve().name):
            located["name"] = run_dir.resolve().name
        raw = {**raw, "run": {**(raw.get("run") or {}), **located}} if isinstance(raw.get("run", {}), dict) else raw
    raw = apply_overrides(raw, overrides, cwd)
    exp = validate(raw, source=file.name)
    absolutize_defaults(exp, cwd or Path.cwd())
    if run_dir is not None:
        RunDir.bind(exp, run_dir)
    return exp


def to_dict(exp: Experiment) -> dict[str, Any]:
    """The resolved config as plain data (paths as absolute strings), ready to save as YAML or JSON."""
    return exp.model_dump(mode="json", by_alias=True)


def dump_yaml(exp: Experiment) -> str:
    """The resolved config as YAML text: loading it again gives the same `Experiment`."""
    return yaml.safe_dump(to_dict(exp), sort_keys=False, allow_unicode=True)
