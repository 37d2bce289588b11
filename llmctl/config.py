"""Load an experiment config: YAML (safe loader only) → `extends` merge → `--set` overrides → one validation.

Relative paths are resolved against the folder of the file that wrote them (`--set` values against the current
directory). Every problem found is reported at once as a `ConfigError` whose lines name the full key path.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from llmctl.errors import ConfigError
from llmctl.schema import Experiment, IsPath

CONFIG_SUFFIXES = (".yaml", ".yml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # run.name's pattern (llmctl.schema.RunConfig)
MAX_EXTENDS_DEPTH = 16


MAX_CONFIG_BYTES = 1 << 20  # a config file larger than 1 MiB is not an experiment config
MAX_PROBLEMS = 20           # problems listed in one error line; the rest are counted ("... and N more")

# ---------------------------------------------------------------- reading YAML


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice (YAML would silently keep the last one)."""


class StrictSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags executed), refusing duplicate keys in any mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: the base class reports it
                    break
                if duplicate:
                    raise DuplicateKeyError(None, None, f"duplicate key `{key}` (first at line "
                                            f"{seen[key].line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _refuse_tag(loader: StrictSafeLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(None, None, f"YAML tag {node.tag} is not a config value",
                                            node.start_mark)


# a config holds plain scalars, lists and mappings: bytes, sets and ordered pairs would be silently converted
for _tag in ("binary", "set", "omap", "pairs"):
    StrictSafeLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)

MAX_NESTING = 64  # YAML nested deeper than this is not an experiment config (and would exhaust the recursion limit)


class NestingError(yaml.YAMLError):
    """YAML nested deeper than MAX_NESTING."""

    def __init__(self, mark):
        super().__init__()
        self.problem_mark = mark
        self.problem = f"nested more than {MAX_NESTING} levels deep"


def _check_depth(text: str) -> None:
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_NESTING:
                    raise NestingError(event.start_mark)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except NestingError:
        raise
    except yaml.YAMLError:
        return  # the loader reports syntax errors with their own message


def safe_load(text: str) -> Any:
    """`yaml.safe_load` with duplicate keys refused (`DuplicateKeyError`) and nesting capped (`NestingError`)."""
    _check_depth(text)
    return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping with the safe loader; any failure is a one-line `ConfigError`."""
    if not path.exists():
        raise ConfigError(f"config file not found: {path}", hint="check the path")
    if path.is_dir():
        raise ConfigError(f"config path is a directory: {path}", hint="pass a .yaml file or a run directory")
    if not path.is_file():  # a device or pipe (/dev/zero would be read forever)
        raise ConfigError(f"config path {path} is not a regular file", hint="pass a .yaml file or a run directory")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {size / 2**20:.1f} MiB; an experiment config is at most "
                          f"{MAX_CONFIG_BYTES >> 20} MiB", hint="pass the experiment's YAML config, not a data file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)  # bounded even if the file grows meanwhile
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; an experiment config is at most "
                              f"{MAX_CONFIG_BYTES >> 20} MiB", hint="pass the experiment's YAML config, not a data "
                                                                   "file")
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}", hint="check the path and its "
                                                                                           "permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})", hint="save the config as UTF-8") from None
    try:
        data = safe_load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        raise ConfigError(f"{path}: line {mark.line + 1}: {exc.problem}",
                          hint="keep one of them; YAML would silently use the last") from None
    except yaml.constructor.ConstructorError as exc:
        problem = " ".join((getattr(exc, "problem", "") or str(exc)).split())
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        if "tag" not in problem:  # e.g. "found unhashable key"
            raise ConfigError(f"{path}:{where} {problem}", hint="keys are plain names") from None
        raise ConfigError(f"{path}:{where} unsupported YAML tag ({problem}); tags are never executed",
                          hint="remove the `!!` tag and write a plain value") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())[:160] or "invalid YAML"
        raise ConfigError(f"{path}:{where} {problem}", hint="fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------- paths relative to their file


def _path_like(annotation: Any) -> bool:
    """True if a field annotation is (Optional of) a path field."""
    if typing.get_origin(annotation) is typing.Annotated:
        return any(isinstance(m, IsPath) for m in typing.get_args(annotation)[1:])
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_path_like(a) for a in typing.get_args(annotation))
    return False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _field_annotation(model: type[BaseModel], key: str) -> Any | None:
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
        ann = _field_annotation(model, key) if isinstance(key, str) else None
        if ann is None:
            out[key] = value
            continue
        is_list = typing.get_origin(ann) is list or any(typing.get_origin(a) is list for a in typing.get_args(ann))
        sub = _model_of(ann)
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


# ---------------------------------------------------------------- validation with precise messages


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] | None = Experiment
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        ann = _field_annotation(model, part)
        model = _model_of(ann) if ann is not None else None
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
