"""The CLI: help, version, config commands, error mapping, and no TensorFlow import on the light paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from llmctl import __version__
from llmctl.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("preprocess", "pretrain", "finetune", "evaluate", "generate", "export", "serve", "config"):
        assert command in result.output


def test_every_command_help_shows_an_example():
    for command in ("preprocess", "pretrain", "finetune", "evaluate", "generate", "export", "serve"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example: llmctl" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_config_validate_suggests_the_right_key(tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("trian:\n  epochs: 2\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", str(cfg)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean `train`?" in lines[0]
    assert "Traceback" not in result.output


def test_config_validate_ok_and_show_applies_overrides(tmp_path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("train: {epochs: 1}\n", encoding="utf-8")
    assert runner.invoke(app, ["config", "validate", str(cfg)]).exit_code == 0
    result = runner.invoke(app, ["config", "show", str(cfg), "--set", "train.epochs=5"])
    assert result.exit_code == 0 and "epochs: 5" in result.output


def test_config_schema_is_markdown():
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0 and result.output.startswith("# Experiment config reference")


def test_python_tag_rejected_through_cli(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"run: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", str(cfg)])
    assert result.exit_code == 2 and "never executed" in result.output
    assert not marker.exists()


def test_debug_shows_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCTL_DEBUG", "")  # --debug sets it; restore the environment for later tests
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("trian: {}\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", str(cfg), "--debug"])
    assert result.exit_code != 0 and result.exception is not None


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_importing_cli_does_not_import_tensorflow():
    code = "import sys, llmctl.cli, llmctl.config, llmctl.runs; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], env=_env()).returncode == 0


def test_real_subprocess_config_error_is_one_line(tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("trian: {}\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "llmctl", "config", "validate", str(cfg)],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "did you mean `train`?" in proc.stderr
