"""A sweep of bad inputs across every command, through the real CLI: each case must exit with the README's code,
print exactly one line on stderr (nothing on stdout), show no traceback and add no file anywhere.

One tiny dataset and run are built once for the module (preprocess + a 4-step pretrain); a case that needs a damaged
run damages a copy in its own folder, made before the "no files added" snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.cli_runs import Built, build_experiment, cli, corpus, tiny_config, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return build_experiment(tmp_path_factory.mktemp("bad_inputs"))


def _cfg(built: Built, d: Path, name: str = "case", **sections) -> Path:
    """A config in the case folder that uses the module's dataset (its own run name, runs under the case folder)."""
    cfg = tiny_config(d, name=name, **sections)
    cfg["run"]["dir"] = str(d / "runs")
    cfg["data"] = {**cfg["data"], "dir": str(built.data), "train": [str(built.root / "corpus.txt")],
                   **sections.get("data", {})}
    return write_config(d / f"{name}.yaml", cfg)


def _raw(d: Path, text: str, name: str = "raw.yaml") -> Path:
    path = d / name
    path.write_text(text, encoding="utf-8")
    return path


def _copy_run(built: Built, d: Path, name: str = "run") -> Path:
    target = d / name
    shutil.copytree(built.run, target)
    return target


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


def _damaged_checkpoint(built: Built, d: Path) -> Path:
    run = _copy_run(built, d)
    for data in (run / "checkpoints").glob("*.data-*"):
        _truncate(data, 40)
    return run


def _damaged_tokenizer_json(built: Built, d: Path) -> Path:
    run = _copy_run(built, d)
    (run / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": ', encoding="utf-8")
    return run


def _keras_only_truncated(built: Built, d: Path) -> Path:
    run = _copy_run(built, d)
    shutil.rmtree(run / "checkpoints")
    _truncate(run / "model.keras", 500)
    return run


_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + "generate: {prompts: *i}\n"  # 9**9 strings if expanded


def _damaged(built: Built, d: Path, rel: str, content: bytes) -> Path:
    """A copy of the module's run (its own name: config.yaml unchanged) with one file replaced by `content`."""
    run = _copy_run(built, d, built.run.name)
    (run / rel).write_bytes(content)
    return run


def _damaged_data(built: Built, d: Path, rel: str = "manifest.json", content: bytes = b"[1, 2]") -> Path:
    data = d / "data"
    shutil.copytree(built.data, data)
    (data / rel).write_bytes(content)
    return data


def _source(d: Path, name: str, content: bytes) -> Path:
    path = d / name
    path.write_bytes(content)
    return path


def _preprocess(d: Path, source: Path, **data) -> list:
    cfg = tiny_config(d, name="pp")
    cfg["data"] = {**cfg["data"], "dir": str(d / "out"), "train": [str(source)], **data}
    return ["preprocess", write_config(d / "pp.yaml", cfg)]


def _locked_run(built: Built, d: Path) -> list:
    """The module's run copied, locked by another live process (killed after the case)."""
    run = _copy_run(built, d)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from llmctl import locks; "
                               "locks.acquire_run(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
                               str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "locked"
    _HOLDERS.append(holder)
    return ["pretrain", run, "--resume", "--set", "train.max_steps=6"]


_HOLDERS: list[subprocess.Popen] = []

Case = tuple[str, Callable[[Built, Path], list], int, str]

CASES: list[Case] = [
    # ---- config errors: exit 2
    ("config-missing-file", lambda b, d: ["config", "validate", d / "nope.yaml"], 2, "config file not found"),
    ("config-duplicate-key", lambda b, d: ["config", "validate", _raw(d, "model: {units: 32, units: 64}\n")], 2,
     "duplicate key `units`"),
    ("config-duplicate-key-block", lambda b, d: ["config", "validate", _raw(
        d, "model:\n  units: 32\n  layers: 1\n  units: 64\n")], 2, "line 4: duplicate key `units`"),
    ("config-bool-for-int", lambda b, d: ["config", "validate", _raw(d, "model: {units: true}\n")], 2,
     "`model.units`: expected a number"),
    ("config-bool-for-int-set", lambda b, d: ["config", "validate", _raw(d, "{}\n"), "--set", "train.epochs=false"],
     2, "`train.epochs`"),
    ("config-lr-inf", lambda b, d: ["config", "validate", _raw(d, "train: {lr: .inf}\n")], 2, "finite"),
    ("config-temperature-inf", lambda b, d: ["config", "validate", _raw(d, "{}\n"), "--set",
                                             "generate.temperature=.inf"], 2, "`generate.temperature`"),
    ("config-max-time-inf", lambda b, d: ["config", "validate", _raw(d, "train: {max_time: .inf}\n")], 2, "finite"),
    ("config-dropout-nan", lambda b, d: ["config", "validate", _raw(d, "model: {dropout: .nan}\n")], 2, "finite"),
    ("config-max-new-tokens-cap", lambda b, d: ["config", "validate", _raw(d, "generate: {max_new_tokens: "
                                                                             "1000000000}\n")], 2, "max_new_tokens"),
    ("config-typo", lambda b, d: ["config", "validate", _raw(d, "trian: {epochs: 2}\n")], 2, "did you mean `train`"),
    ("config-many-unknown-keys", lambda b, d: ["config", "validate", _raw(
        d, "model:\n" + "".join(f"  k{i}: 1\n" for i in range(5000)))], 2, "and 4980 more"),
    ("config-too-large", lambda b, d: ["config", "validate", _raw(d, "# " + "x" * (2 << 20) + "\n{}\n")], 2,
     "at most 1 MiB"),
    ("config-python-tag", lambda b, d: ["config", "validate", _raw(d, "run: !!python/object/apply:os.system [ls]\n")],
     2, "never executed"),
    ("config-extends-cycle", lambda b, d: ["config", "validate", _raw(d, "extends: raw.yaml\n")], 2, "cycle"),
    ("config-yaml-syntax", lambda b, d: ["config", "validate", _raw(d, "model: {units: 3\n")], 2, "line"),
    ("config-top-level-list", lambda b, d: ["config", "validate", _raw(d, "- 1\n- 2\n")], 2, "mapping"),
    ("config-not-utf8", lambda b, d: ["config", "validate", _source(d, "l.yaml", "run: {name: caf\xe9}\n".encode(
        "latin-1"))], 2, "not UTF-8"),
    # found by benchmarks/sweep_bad_inputs.py (issue 16's fresh sweep)
    ("config-deep-nesting-lists", lambda b, d: ["config", "validate", _raw(d, "a: " + "[" * 5000 + "]" * 5000 + "\n")],
     2, "nested more than 64 levels deep"),
    ("config-deep-nesting-maps", lambda b, d: ["config", "validate", _raw(d, "a: " + "{b: " * 3000 + "1" + "}" * 3000
                                                                           + "\n")], 2, "nested more than 64 levels"),
    ("config-set-deep-nesting", lambda b, d: ["config", "validate", _raw(d, "{}\n"), "--set",
                                              "model.units=" + "[" * 3000], 2, "nested more than 64 levels"),
    ("config-binary-tag", lambda b, d: ["config", "validate", _raw(d, "run: {name: !!binary aGVsbG8=}\n")], 2,
     "tag:yaml.org,2002:binary is not a config value"),
    ("config-set-tag", lambda b, d: ["config", "validate", _raw(d, "generate: {stop: !!set {a, b}}\n")], 2,
     "tag:yaml.org,2002:set is not a config value"),
    ("config-set-python-tag", lambda b, d: ["config", "validate", _raw(d, "{}\n"), "--set",
                                            "run.name=!!python/object/apply:os.system [ls]"], 2, "never executed"),
    ("config-unhashable-key", lambda b, d: ["config", "validate", _raw(d, "? [a, b]\n: 1\n")], 2,
     "line 1: found unhashable key"),
    ("config-device-file", lambda b, d: ["config", "validate", "/dev/zero"], 2, "is not a regular file"),
    ("config-alias-bomb", lambda b, d: ["config", "validate", _raw(d, _BOMB)], 2, "`generate.prompts[0]`"),
    ("pretrain-resume-damaged-run-json", lambda b, d: ["pretrain", _damaged(b, d, "run.json", b"{oops"), "--resume",
                                                       "--set", "train.max_steps=6"], 4, "run.json is damaged"),
    ("evaluate-run-json-not-an-object", lambda b, d: ["evaluate", _damaged(b, d, "run.json", b"[]")], 4,
     "run.json is damaged (a JSON list"),
    ("pretrain-damaged-manifest-list", lambda b, d: ["pretrain", _cfg(b, d), "--set",
                                                     f"data.dir={_damaged_data(b, d)}"], 4, "manifest.json is damaged"),
    ("pretrain-dataset-tokenizer-json-damaged", lambda b, d: ["pretrain", _cfg(b, d), "--set", "data.dir=" + str(
        _damaged_data(b, d, "tokenizer/tokenizer.json", b'{"model": '))], 4,
     "tokenizer.json is not a valid tokenizer file"),
    ("config-seed-negative", lambda b, d: ["config", "validate", _raw(d, "run: {seed: -5}\n")], 2, "`run.seed`"),
    ("config-seed-too-large", lambda b, d: ["config", "validate", _raw(d, "{}\n"), "--set",
                                            "generate.seed=" + "9" * 30], 2, "`generate.seed`"),
    ("pretrain-resume-damaged-tokenizer-json", lambda b, d: ["pretrain", _damaged(b, d, "tokenizer/tokenizer.json",
                                                                                b'{"model": '), "--resume", "--set",
                                                             "train.max_steps=6"], 4,
     "tokenizer.json is not a valid tokenizer file"),
    ("pretrain-run-dir-is-a-file", lambda b, d: ["pretrain", _cfg(b, d), "--set",
                                                 f"run.dir={_source(d, 'afile', b'x')}"], 4, "Not a directory"),
    ("pretrain-dataset-llmctl-tokenizer-damaged", lambda b, d: ["pretrain", _cfg(b, d), "--set", "data.dir=" + str(
        _damaged_data(b, d, "tokenizer/llmctl_tokenizer.json", b"[]"))], 4, "llmctl_tokenizer.json is damaged"),
    ("config-set-not-key-value", lambda b, d: ["config", "validate", _raw(d, "{}\n"), "--set", "train.epochs"], 2,
     "key=value"),
    ("config-set-duplicate-key", lambda b, d: ["config", "validate", _raw(d, "{}\n"), "--set",
                                               "model={units: 1, units: 2}"], 2, "duplicate key"),
    ("config-bad-run-name", lambda b, d: ["config", "validate", _raw(d, "run: {name: ../x}\n")], 2, "run.name"),
    ("evaluate-bad-split", lambda b, d: ["evaluate", b.run, "--split", "nope"], 2, "evaluate.split"),
    ("usage-unknown-option", lambda b, d: ["generate", b.run, "--bogus"], 2, "No such option: --bogus"),
    ("usage-missing-argument", lambda b, d: ["evaluate"], 2, "Missing argument"),
    ("usage-option-needs-value", lambda b, d: ["evaluate", b.run, "--split"], 2, "requires an argument"),
    ("pretrain-resume-and-overwrite", lambda b, d: ["pretrain", _copy_run(b, d), "--resume", "--overwrite"], 2,
     "contradict"),
    ("export-into-the-run", lambda b, d: ["export", b.run, "--set", f"export.dir={b.run}"], 2,
     "would destroy the run"),
    # ---- data errors: exit 3
    ("preprocess-source-missing", lambda b, d: _preprocess(d, d / "nothing.txt"), 3, "source not found"),
    ("preprocess-empty-file", lambda b, d: _preprocess(d, _source(d, "e.txt", b"")), 3, "empty file"),
    ("preprocess-binary", lambda b, d: _preprocess(d, _source(d, "b.txt", b"abc\x00def\n" * 10)), 3, "binary"),
    ("preprocess-bad-utf8", lambda b, d: _preprocess(d, _source(d, "l.txt", "caf\xe9 au lait\n".encode("latin-1"))),
     3, "invalid utf-8"),
    ("preprocess-jsonl-number-text", lambda b, d: _preprocess(d, _source(d, "n.jsonl", b'{"text": "ok"}\n'
                                                                                       b'{"text": 12345}\n')),
     3, "n.jsonl:2: field `text` is 12345"),
    ("preprocess-jsonl-deep-nesting", lambda b, d: _preprocess(d, _source(d, "deep.jsonl", b'{"text": "a", "x": '
                                                                           + b"[" * 100000 + b"]" * 100000 + b"}\n")),
     3, "deep.jsonl:1: JSON nested too deeply"),
    ("preprocess-data-dir-under-a-file", lambda b, d: _preprocess(d, b.root / "corpus.txt",
                                                                  dir=str(_source(d, "afile", b"x") / "sub")), 4,
     "afile: File exists (a path in the config goes through a file"),
    ("preprocess-jsonl-invalid", lambda b, d: _preprocess(d, _source(d, "i.jsonl", b'{"text": "a"\n')), 3,
     "invalid JSON"),
    ("preprocess-jsonl-missing-field", lambda b, d: _preprocess(d, _source(d, "m.jsonl", b'{"body": "a"}\n')), 3,
     "no field `text`"),
    ("preprocess-csv-missing-column", lambda b, d: _preprocess(d, _source(d, "c.csv", b"body\nhello\n")), 3,
     "no column `text`"),
    ("generate-prompts-file-missing", lambda b, d: ["generate", b.run, "--prompts-file", d / "none.txt"], 3,
     "cannot read prompts file"),
    ("generate-prompt-too-long", lambda b, d: ["generate", b.run, "--prompt", "a" * 1_000_001], 3,
     "at most 1,000,000"),
    ("predict-file-missing", lambda b, d: ["predict", b.run, "--file", d / "none.txt"], 3, "cannot read texts file"),
    # ---- artifact errors: exit 4
    ("evaluate-missing-run", lambda b, d: ["evaluate", d / "runs" / "gone"], 4, "does not exist"),
    ("export-missing-run", lambda b, d: ["export", d / "runs" / "gone"], 4, "does not exist"),
    ("generate-missing-run", lambda b, d: ["generate", d / "gone", "--prompt", "a"], 4, "does not exist"),
    ("predict-missing-run", lambda b, d: ["predict", d / "gone", "--text", "a"], 4, "does not exist"),
    ("pretrain-missing-run", lambda b, d: ["pretrain", d / "gone", "--resume"], 4, "does not exist"),
    ("generate-folder-not-a-run", lambda b, d: ["generate", d, "--prompt", "a"], 4, "without config.yaml"),
    ("generate-corrupt-tokenizer-json", lambda b, d: ["generate", _damaged_tokenizer_json(b, d), "--prompt", "a"], 4,
     "tokenizer.json is not a valid tokenizer file"),
    ("export-corrupt-tokenizer-json", lambda b, d: ["export", _damaged_tokenizer_json(b, d)], 4,
     "tokenizer.json is not a valid tokenizer file"),
    ("generate-truncated-checkpoint", lambda b, d: ["generate", _damaged_checkpoint(b, d), "--prompt", "a"], 4,
     "is damaged"),
    ("evaluate-truncated-checkpoint", lambda b, d: ["evaluate", _damaged_checkpoint(b, d)], 4, "is damaged"),
    ("export-truncated-checkpoint", lambda b, d: ["export", _damaged_checkpoint(b, d)], 4, "is damaged"),
    ("generate-truncated-model-keras", lambda b, d: ["generate", _keras_only_truncated(b, d), "--prompt", "a"], 4,
     "model.keras is damaged"),
    ("predict-on-language-model", lambda b, d: ["predict", b.run, "--text", "a"], 4, "not a classifier"),
    ("pretrain-rerun-different-config", lambda b, d: ["pretrain", _copy_run(b, d), "--set", "model.units=20"], 4,
     "already holds a run (differs in model.units)"),
    ("pretrain-locked-run", _locked_run, 4, "in use by another llmctl process (pid "),
    ("evaluate-dataset-gone", lambda b, d: ["evaluate", _copy_run(b, d), "--set", f"data.dir={d / 'none'}"], 4,
     "no dataset"),
    ("preprocess-into-foreign-folder", lambda b, d: _preprocess(d, b.root / "corpus.txt", dir=str(b.root)), 4,
     "not an llmctl dataset"),
    ("pretrain-embeddings-file-missing", lambda b, d: ["pretrain", _cfg(b, d), "--set",
                                                       f"model.pretrained_embeddings={d / 'vec.txt'}"], 3,
     "pretrained embeddings file not found"),  # and no stub run directory is left behind
    # ---- resource errors: exit 6
    ("pretrain-out-of-memory-model", lambda b, d: ["pretrain", _cfg(b, d), "--set", "model.units=2000000"], 6,
     "memory"),
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name,make,code,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(built: Built, name: str, make, code: int, expected: str):
    case_dir = built.root / "cases" / name
    case_dir.mkdir(parents=True)
    try:
        args = make(built, case_dir)
        before = _tree(built.root)
        started = time.perf_counter()
        result = cli(args)
        seconds = time.perf_counter() - started
    finally:
        while _HOLDERS:
            holder = _HOLDERS.pop()
            holder.kill()
            holder.wait()
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == "", result.stdout
    assert _tree(built.root) == before, sorted(_tree(built.root) ^ before)
    assert seconds < 60


def test_the_sweep_is_broad():
    assert len(CASES) >= 40
    assert {code for *_, code, _ in CASES} >= {2, 3, 4, 6}


def test_unknown_key_listing_is_capped(tmp_path):
    """160k unknown keys was one 22 MB line: now at most MAX_PROBLEMS problems and a count, in well under 5 kB."""
    cfg = tmp_path / "many.yaml"
    cfg.write_text("model:\n" + "".join(f"  k{i}: 1\n" for i in range(30000)), encoding="utf-8")
    result = cli(["config", "validate", cfg])
    assert result.exit_code == 2
    assert len(result.stderr) < 5000 and "and 29980 more problem(s)" in result.stderr


def test_jsonl_label_may_be_a_number(tmp_path):
    """Only text fields must be strings: a numeric label stays a label."""
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps({"text": corpus(1, seed=i), "label": i % 2})
                                                for i in range(40)) + "\n", encoding="utf-8")
    cfg = tiny_config(tmp_path, name="cls")
    cfg["data"] = {"dir": str(tmp_path / "out"), "train": [str(tmp_path / "l.jsonl")], "task": "classify",
                   "split": {"valid": 0.2, "mode": "documents"}}
    result = cli(["preprocess", write_config(tmp_path / "c.yaml", cfg)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("code,errno_name,needle", [
    (6, "ENOSPC", "disk full while writing /x/y"), (6, "EDQUOT", "disk full"), (6, "EFBIG", "ulimit -f"),
    (6, "EROFS", "read-only"), (6, "EACCES", "permissions"), (6, "EPERM", "immutable"),
    (4, "ENOTDIR", "goes through a file"), (4, "EEXIST", "goes through a file"), (4, "EISDIR", "a folder"),
    (2, "ENAMETOOLONG", "shorten"), (4, "ELOOP", "symbolic link"),
])
def test_file_system_refusals_are_one_line_with_the_readme_code(capsys, code, errno_name, needle):
    """What the file system refuses where no check named the path first (a read-only or immutable folder, a path
    through a file, ...) is one line with the README's code, never exit 1."""
    import errno

    import typer

    from llmctl import cli_errors

    def body():
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)), "/x/y")

    with pytest.raises(typer.Exit) as exc:
        cli_errors.guard(False, body)
    err = capsys.readouterr().err
    assert exc.value.exit_code == code and len(err.splitlines()) == 1 and needle in err and "/x/y" in err, err


def test_a_refused_resume_rewrites_nothing(built: Built, tmp_path):
    """A resume refused after the run directory was opened (a damaged checkpoint) leaves run.json and every
    artifact byte for byte as they were (config.yaml records the resume's budgets when it starts)."""
    run = tmp_path / built.run.name
    shutil.copytree(built.run, run)
    for data in (run / "checkpoints").glob("*.data-*"):
        _truncate(data, 40)
    before = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*")
              if p.is_file() and p.name != "config.yaml"}
    result = cli(["pretrain", run, "--resume", "--set", "train.max_steps=6"])
    assert result.exit_code == 4 and "is damaged" in result.stderr, result.stderr
    assert {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*")
            if p.is_file() and p.name != "config.yaml"} == before


@pytest.mark.parametrize("content", [b"garbage", b"", b"\x93NUMPY\x01\x00"])
def test_damaged_side_arrays_are_artifact_errors(built: Built, tmp_path, content):
    """A damaged `<split>.docs.npy` / `.labels.npy` (a pickle, empty, a truncated header) is an ArtifactError
    naming the file, not numpy's ValueError (exit 1)."""
    from llmctl.data.dataset import Dataset
    from llmctl.errors import ArtifactError

    data = tmp_path / "data"
    shutil.copytree(built.data, data)
    (data / "train.docs.npy").write_bytes(content)
    with pytest.raises(ArtifactError, match="train.docs.npy is damaged"):
        Dataset(data).doc_offsets("train")


@pytest.mark.parametrize("content", [b"{bad", b"{}", b"[]", b'[["a"]]', b"\xff\xfe"])
def test_damaged_labels_json_is_an_artifact_error(tmp_path, content):
    """evaluate/predict read a classifier's labels.json: damaged is an ArtifactError naming it (was exit 1)."""
    from llmctl.errors import ArtifactError
    from llmctl.evaluation.classify import run_labels
    from llmctl.runs import RunDir

    (tmp_path / "labels.json").write_bytes(content)
    with pytest.raises(ArtifactError, match="labels.json is damaged"):
        run_labels(RunDir(tmp_path))


def test_a_device_the_machine_does_not_have_is_refused():
    """`distribute.devices: [/gpu:7]` on a machine without it trained silently on the CPU (exit 0): now exit 6."""
    from llmctl.errors import ResourceError
    from llmctl.schema import DistributeConfig
    from llmctl.train.distribution import _device_key, build_distribution

    assert {_device_key(n) for n in ("/gpu:1", "GPU:1", "/job:localhost/replica:0/task:0/device:GPU:1")} == {"gpu:1"}
    with pytest.raises(ResourceError, match=r"\['/gpu:7'\] not found on this machine"):
        build_distribution(DistributeConfig(strategy="mirrored", devices=["/gpu:7"]))
    assert build_distribution(DistributeConfig(strategy="mirrored", devices=["/cpu:0"])).num_replicas == 1


def test_tensorflow_disk_full_is_named_disk_full(capsys):
    """TensorFlow reports a full disk while saving as ResourceExhaustedError: that is "disk full", not "out of
    memory" (exit 6 either way)."""
    import typer

    from llmctl import cli_errors

    class ResourceExhaustedError(Exception):
        pass

    def body():
        raise ResourceExhaustedError("{{function_node __wrapped__SaveV2_device_/job:localhost/device:CPU:0}} "
                                     "/data/run/export/ck_temp/part-00000.data.tempstate1; No space left on device "
                                     "[Op:SaveV2]")

    with pytest.raises(typer.Exit) as exc:
        cli_errors.guard(False, body)
    err = capsys.readouterr().err
    assert exc.value.exit_code == 6 and err.startswith("resource error: disk full while writing /data/run/export/ck")
    assert len(err.splitlines()) == 1, err


def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first moments (Typer and Rich still importing) was a KeyboardInterrupt traceback."""
    import builtins

    from llmctl import entry

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "llmctl.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as exc:
        entry.main()
    assert exc.value.code == 130 and capsys.readouterr().err == "interrupted: stopped by Ctrl-C\n"
