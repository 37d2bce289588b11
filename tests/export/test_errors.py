"""Bad input: one-line typed errors, and the export folder is all-or-nothing."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from llmctl.errors import ArtifactError, ConfigError
from tests.export.conftest import export_run
from tests.export.tiny_runs import read_manifest, tiny_experiment


def _one_line(exc) -> str:
    line = exc.one_line()
    assert "\n" not in line
    return line


def test_run_without_a_model(tmp_path):
    from llmctl.config import dump_yaml
    from llmctl.runs import RunDir

    exp = tiny_experiment(tmp_path, "untrained")
    run = RunDir.of(exp)
    run.root.mkdir(parents=True)
    run.config.write_text(dump_yaml(exp))
    with pytest.raises(ArtifactError) as info:
        export_run(run)
    assert "no trained model" in _one_line(info.value) and "llmctl pretrain" in _one_line(info.value)


def test_missing_run_directory(tmp_path):
    import llmctl.export

    with pytest.raises(ArtifactError) as info:
        llmctl.export.run(tiny_experiment(tmp_path, "nowhere"))
    assert "does not exist" in _one_line(info.value)


@pytest.mark.parametrize("overrides,words", [
    (["export.formats=[]"], "export.formats is empty"),
    (["export.formats=[saved_model]", "export.quantize=dynamic_int8"], "add tflite to export.formats"),
])
def test_unsupported_option_combinations(lm_run, overrides, words):
    with pytest.raises(ConfigError) as info:
        export_run(lm_run, *overrides)
    assert words in _one_line(info.value)


def test_export_dir_that_would_destroy_the_run(lm_run):
    for target in (lm_run.root, lm_run.root.parent, lm_run.checkpoints):
        with pytest.raises(ConfigError) as info:
            export_run(lm_run, f"export.dir={target}", "export.overwrite=true")
        assert "export.dir" in _one_line(info.value)
    assert lm_run.checkpoints.is_dir() and lm_run.config.is_file()


def test_existing_export_needs_overwrite(lm_export, lm_run):
    before = read_manifest(lm_run.export)["created"]
    with pytest.raises(ArtifactError) as info:
        export_run(lm_run)
    assert "already exists" in _one_line(info.value) and "--overwrite" in _one_line(info.value)
    assert read_manifest(lm_run.export)["created"] == before


def test_overwrite_refuses_a_folder_that_is_not_an_export(lm_run, tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError) as info:
        export_run(lm_run, f"export.dir={other}", "export.overwrite=true")
    assert "not an llmctl export" in _one_line(info.value)
    assert (other / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_an_earlier_export(lm_run, tmp_path):
    out = tmp_path / "out"
    export_run(lm_run, f"export.dir={out}", "export.formats=[saved_model]")
    (out / "stale.txt").write_text("from before")
    export_run(lm_run, f"export.dir={out}", "export.formats=[tflite]", "export.overwrite=true")
    assert not (out / "stale.txt").exists() and not (out / "saved_model").exists()
    assert (out / "step.float32.tflite").is_file() and read_manifest(out)["kind"] == "lm"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporaries left beside it


def test_failed_export_leaves_nothing_behind(lm_run, tmp_path, monkeypatch):
    from llmctl.export import checks

    out = tmp_path / "out"
    monkeypatch.setattr(checks, "failures", lambda _: ["saved_model.prefill_max_abs_diff=1.00e+00"])
    with pytest.raises(ArtifactError) as info:
        export_run(lm_run, f"export.dir={out}", "export.formats=[saved_model]")
    assert "disagree with the Keras model" in _one_line(info.value)
    assert list(tmp_path.iterdir()) == []


def test_damaged_tokenizer_is_reported(lm_run, tmp_path):
    copy = tmp_path / lm_run.root.name
    shutil.copytree(lm_run.root, copy, ignore=shutil.ignore_patterns("export"))
    meta = copy / "tokenizer" / "llmctl_tokenizer.json"
    data = json.loads(meta.read_text())
    data["vocab"] = data["vocab"][:-1]
    data["vocab_size"] -= 1
    meta.write_text(json.dumps(data))
    from llmctl.runs import RunDir

    with pytest.raises(ArtifactError) as info:
        export_run(RunDir(copy), f"run.dir={tmp_path}")
    assert "tokenizer" in _one_line(info.value)


def test_cli_prints_one_line_and_exit_code(lm_export, lm_run, tmp_path):
    from llmctl.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(lm_run.root)])
    assert result.exit_code == ArtifactError.exit_code
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("artifact error:") and "already exists" in lines[0]

    out = tmp_path / "cli_export"
    result = runner.invoke(app, ["export", str(lm_run.root), "--quiet", "--set", f"export.dir={out}",
                                 "--set", "export.formats=[saved_model]"])
    assert result.exit_code == 0, result.output
    assert read_manifest(out)["artifacts"].keys() == {"saved_model"}
