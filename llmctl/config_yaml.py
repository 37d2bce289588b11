"""Reading one YAML config file: PyYAML's safe loader (no tag executed), with duplicate keys, non-config tags (binary,
set, omap, pairs), deep nesting and oversized files refused; any failure is a one-line `ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmctl.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a config file larger than 1 MiB is not an experiment config


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
