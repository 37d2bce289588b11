"""A run directory is self-contained: copied or moved anywhere, the commands given its new location use it — and never
read or write the old one (issue 16, item 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.cli_runs import Built, build_experiment, cli, tiny_config, write_config


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return build_experiment(tmp_path_factory.mktemp("relocation"))


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


def test_saved_config_does_not_name_the_runs_location(built: Built):
    saved = yaml.safe_load((built.run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["run"]["dir"] == ".." and saved["run"]["name"] == "base"
    assert str(built.root) not in yaml.safe_dump(saved["run"])


def test_copied_run_evaluates_and_generates_in_place(built: Built, tmp_path):
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(built.run, copy)
    before = _snapshot(built.run)
    result = cli(["evaluate", copy, "--json"])
    assert result.exit_code == 0, result.output
    assert (copy / "eval" / "valid.json").is_file()          # the card is written into the copy ...
    assert not (built.run / "eval").exists()                  # ... not into the original
    result = cli(["generate", copy, "--prompt", "the "])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("the ")
    assert _snapshot(built.run) == before


def test_moved_run_works_and_the_old_place_is_never_touched(built: Built, tmp_path):
    original = tmp_path / "runs" / "mv1"
    shutil.copytree(built.run, original)
    moved = tmp_path / "other" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(original), str(moved))
    for args in (["generate", moved, "--prompt", "a "], ["evaluate", moved], ["config", "show", moved]):
        result = cli(args)
        assert result.exit_code == 0, (args, result.output)
    assert not original.exists() and not (tmp_path / "runs" / "renamed").exists()
    shown = yaml.safe_load(cli(["config", "show", moved]).stdout)
    assert shown["run"]["dir"] == str(moved.parent) and shown["run"]["name"] == "renamed"
    # resuming the moved run continues it where it now lives
    result = cli(["pretrain", moved, "--resume", "--set", "train.max_steps=6"])
    assert result.exit_code == 0, result.output
    assert not original.exists()
    assert any((moved / "checkpoints").glob("last-000000006.index"))


def test_classifier_copy_predicts(tmp_path):
    from tests.export.tiny_runs import make_classifier_run

    run = make_classifier_run(tmp_path / "runs", steps=3)
    copy = tmp_path / "copied" / "cls"
    shutil.copytree(run.root, copy)
    shutil.rmtree(run.root)  # the original is gone: the copy alone must do
    result = cli(["predict", copy, "--text", "a wonderful story", "--json"])
    assert result.exit_code == 0, result.output
    assert '"label"' in result.stdout


@pytest.mark.slow
def test_moved_run_exports_and_is_finetuned_from(built: Built, tmp_path):
    moved = tmp_path / "moved" / "parent"
    shutil.copytree(built.run, tmp_path / "orig")
    shutil.move(str(tmp_path / "orig"), str(moved))
    result = cli(["export", moved, "--quiet"])
    assert result.exit_code == 0, result.output
    assert (moved / "export" / "manifest.json").is_file() and not (tmp_path / "orig").exists()
    assert not (built.run / "export").exists()
    # finetune-from: a domain-LM fine-tune whose parent is the moved run
    cfg = tiny_config(tmp_path, name="ft", finetune={"task": "lm", "parent": str(moved)},
                      tokenizer={"from": str(moved)})
    cfg["data"] = {**cfg["data"], "dir": str(tmp_path / "ftdata"), "train": [str(built.root / "corpus.txt")]}
    cfg["run"]["dir"] = str(tmp_path / "runs")
    config = write_config(tmp_path / "ft.yaml", cfg)
    for command in ("preprocess", "finetune"):
        result = cli([command, config])
        assert result.exit_code == 0, (command, result.output)
    assert (tmp_path / "runs" / "ft" / "model.keras").is_file()
    result = cli(["generate", tmp_path / "runs" / "ft", "--prompt", "the "])
    assert result.exit_code == 0, result.output
