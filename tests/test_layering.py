"""Imports point one way (docs/architecture.md): foundation ← data ← models ← inference_run ← generate ←
evaluation / export ← train / serve / commands ← cli. Checked on the source with `ast`, local imports included."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llmctl"

# top-level modules every layer may use: files, errors, config, the run layout, reporting
FOUNDATION = {"__init__", "atomic", "errors", "tfenv", "limits", "locks", "progress", "results", "schema",
              "schema_base", "schema_data", "schema_docs", "config", "config_yaml", "config_fields",
              "config_validation", "runs", "machine_cache"}
LOWER = {"foundation"}
ALLOWED = {  # layer → the layers it may import (besides itself)
    "foundation": set(),
    "data": LOWER,
    "models": LOWER | {"data"},
    "inference_run": LOWER | {"data", "models"},
    "generate": LOWER | {"data", "models", "inference_run"},
    "evaluation": LOWER | {"data", "models", "inference_run", "generate"},
    "export": LOWER | {"data", "models", "inference_run", "generate"},
    "train": LOWER | {"data", "models", "evaluation"},
    "commands": LOWER | {"data", "models", "inference_run", "generate", "evaluation"},
    "serve": LOWER | {"data", "models", "inference_run", "generate", "commands", "export"},  # tflite: export's step
    "demo": LOWER,
    "cli": set(),  # the command line may import anything (it does so lazily, per command)
}
COMMANDS = {"evaluate", "predict"}
DEMOS = {"demo_data", "pairs_demo"}

# Known exceptions, each to be cleared (what training and evaluation share now lives in models/: stream_nll,
# response_nll).
KNOWN: set[tuple[str, str]] = set()


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in FOUNDATION:
        return "foundation"
    name = parts[1]
    if name in COMMANDS:
        return "commands"
    if name in DEMOS:
        return "demo"
    if name in ("cli", "cli_errors", "cli_output", "__main__", "entry"):  # entry: the console script, wrapping cli
        return "cli"
    return name  # a package (data, models, ...) or inference_run


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """Every llmctl module `path` imports, at any depth of the file (function-local imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.split(".")[0] == "llmctl")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            assert not node.level, f"{path}: relative import"  # llmctl imports absolutely
            if base.split(".")[0] != "llmctl":
                continue
            if base == "llmctl":  # `from llmctl import atomic` names modules (or `__version__`)
                out.update(f"llmctl.{alias.name}" if _is_module(alias.name) else "llmctl" for alias in node.names)
            else:
                out.add(base)
    return out


def _edges():
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        for target in imports(path):
            yield source, target


def test_every_module_has_a_layer():
    layers = {layer_of(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_imports_point_one_way():
    wrong = []
    for source, target in _edges():
        src, dst = layer_of(source), layer_of(target)
        if src == dst or src == "cli" or dst in ALLOWED[src]:
            continue
        if (source, target) in KNOWN:
            continue
        wrong.append(f"{source} ({src}) imports {target} ({dst})")
    assert not wrong, "\n".join(wrong)


def test_known_exceptions_are_still_real():
    """A cleared exception must leave the list (so the list stays the to-do it is)."""
    edges = set(_edges())
    assert KNOWN <= edges, KNOWN - edges


@pytest.mark.parametrize("args", [["--help"], ["config", "--help"], ["pretrain", "--help"]])
def test_help_does_not_import_tensorflow(args):
    code = ("import sys\nfrom llmctl.cli import main\nsys.argv = ['llmctl', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage" in proc.stdout
