"""Bad-input sweep (issue #16, "Checked by"): bad inputs across every command, kill -9 / Ctrl-C trials with the README's
next command, concurrency cases — through the real `llmctl` process, on tiny data made in a temporary folder.

    nice -n 19 .venv/bin/python benchmarks/sweep_bad_inputs.py                 # everything
    nice -n 19 .venv/bin/python benchmarks/sweep_bad_inputs.py --only bad      # bad inputs only (or: kill, lock)
    ... --mode spawn          # one fresh `python -m llmctl` per case (default `fork`: a process forked from one
                              # that imported TensorFlow once; the child is still a real process: its own fds 1/2,
                              # its exit status, its files)
    ... --out benchmarks/results/sweep_bad_inputs.txt

For every bad input: the exit code is one of the README's codes for the mistake (never 1), stderr is one line with no
traceback, and the workspace is unchanged (no file added — `.tmp-*` leftovers counted apart — none changed or
removed: no silent overwrite). Every kill trial is followed by the command the README (or the error) suggests,
which must succeed and leave no `.tmp-*` or lock behind; interrupted deterministic pretrain runs must end with the
uninterrupted run's metrics.csv, digit for digit. A concurrency case holds a run/dataset/export with one process and
checks the second writer is refused in one line naming the first one's pid. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the quick brown fox jumps over lazy dog a language model predicts next word from ones before it and then "
         "some more words").split()
TMP_PREFIX = ".tmp-"
LOCK_SUFFIX = ".llmctl.lock"


# ---------------------------------------------------------------- running llmctl


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def _env(extra: Optional[dict] = None) -> dict:
    env = {**os.environ, "LLMCTL_NO_STDIN": "1", "PYTHONPATH": str(ROOT)}
    env.pop("LLMCTL_DEBUG", None)
    env.update(extra or {})
    return env


class Spawner:
    """One fresh `python -m llmctl` process per call."""

    def run(self, args: list, cwd: Path, stdin: bytes | None = None, env: dict | None = None,
            timeout: float = 300) -> Outcome:
        started = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "llmctl", *map(str, args)], cwd=cwd, env=_env(env),
                                  input=stdin if stdin is not None else b"", capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return Outcome(-9, (exc.stdout or b"").decode("utf-8", "replace"),
                           (exc.stderr or b"").decode("utf-8", "replace"), time.perf_counter() - started, True)
        return Outcome(done.returncode, done.stdout.decode("utf-8", "replace"),
                       done.stderr.decode("utf-8", "replace"), time.perf_counter() - started)


class Child:
    """A running llmctl process (forked or spawned): `pid`, `poll()`, `send_signal()`, `communicate()`."""

    def __init__(self, pid: int, err_path: Path, io_dir):
        self.pid, self._err, self._io, self.returncode = pid, err_path, io_dir, None

    def poll(self):
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None):
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired("llmctl", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None):
        self.wait(timeout)
        err = self._err.read_bytes()
        self._io.cleanup()
        return b"", err


class Forker:
    """A parent that imported TensorFlow/Keras (no op run, no device initialised) forks one child per call; the
    child runs `llmctl.cli.main()` with its own stdin/stdout/stderr files, cwd and environment, and exits with the
    command's status. Much faster than importing TensorFlow ~200 times on a busy 2-core machine."""

    def __init__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        saved = os.dup(2)
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                import keras  # noqa: F401
                import tensorflow  # noqa: F401

                import llmctl.cli  # noqa: F401
                import llmctl.config  # noqa: F401 - the schema's validators are built once, here
                import llmctl.locks  # noqa: F401
                import llmctl.progress  # noqa: F401
            finally:
                os.dup2(saved, 2)
                os.close(saved)

    def start(self, args: list, cwd: Path) -> Child:
        io_dir = tempfile.TemporaryDirectory(prefix="sweep-io-")
        err = Path(io_dir.name) / "err"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(args, cwd, {"in": Path(os.devnull), "out": Path(os.devnull), "err": err}, None)
        return Child(pid, err, io_dir)

    @staticmethod
    def _child(args, cwd, paths, env) -> None:
        code = 1
        # a sweep started in the background (`&`) inherits SIGINT ignored; a user's llmctl gets Ctrl-C
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            for fd, name, mode in ((0, "in", os.O_RDONLY), (1, "out", os.O_WRONLY | os.O_CREAT),
                                   (2, "err", os.O_WRONLY | os.O_CREAT)):
                handle = os.open(paths[name], mode, 0o644)
                os.dup2(handle, fd)
                os.close(handle)
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(_env(env))
            sys.argv = ["llmctl", *map(str, args)]
            from llmctl.cli import main

            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - what a real process would print
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def run(self, args: list, cwd: Path, stdin: bytes | None = None, env: dict | None = None,
            timeout: float = 300) -> Outcome:
        with tempfile.TemporaryDirectory(prefix="sweep-io-") as io_dir:
            paths = {name: Path(io_dir) / name for name in ("in", "out", "err")}
            paths["in"].write_bytes(stdin or b"")
            sys.stdout.flush()
            sys.stderr.flush()
            started = time.perf_counter()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = 1
                signal.signal(signal.SIGINT, signal.default_int_handler)
                try:
                    for fd, name, mode in ((0, "in", os.O_RDONLY), (1, "out", os.O_WRONLY | os.O_CREAT),
                                           (2, "err", os.O_WRONLY | os.O_CREAT)):
                        handle = os.open(paths[name], mode, 0o644)
                        os.dup2(handle, fd)
                        os.close(handle)
                    os.chdir(cwd)
                    os.environ.clear()
                    os.environ.update(_env(env))
                    sys.argv = ["llmctl", *map(str, args)]
                    from llmctl.cli import main

                    main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:  # noqa: BLE001 - what a real process would print
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            timed_out = False
            deadline = time.time() + timeout
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.time() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    status, timed_out = 9, True
                    break
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            code = os.waitstatus_to_exitcode(status) if not timed_out else -9
            return Outcome(code, paths["out"].read_text("utf-8", "replace"), paths["err"].read_text("utf-8", "replace"),
                           seconds, timed_out)


# ---------------------------------------------------------------- the workspace


def corpus(lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(lines)) + "\n"


def tiny(name: str, root: Path, **sections) -> dict:
    cfg = {
        "run": {"name": name, "dir": str(root / "runs"), "seed": 7, "progress": "none"},
        "data": {"dir": str(root / "data" / "lm"), "train": [str(root / "corpus.txt")], "documents": "line",
                 "split": {"valid": 0.1}},
        "tokenizer": {"kind": "char"},
        "model": {"embedding_dim": 8, "layers": 1, "units": 16, "dropout": 0.0, "output_dropout": 0.0},
        "train": {"batch_size": 4, "bptt": 16, "epochs": 1, "max_steps": 4, "checkpoint_every": 2, "log_every": 2,
                  "jit_compile": False},
        "evaluate": {"batch_size": 4},
        "generate": {"max_new_tokens": 8},
        "export": {"formats": ["saved_model"]},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def write_cfg(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Workspace:
    root: Path
    runner: object
    lm_cfg: Path = None
    cls_cfg: Path = None
    lm_data: Path = None
    cls_data: Path = None
    lm_run: Path = None
    cls_run: Path = None
    exported: Path = None  # a run with a finished export

    def must(self, args: list, cwd: Path | None = None, timeout: float = 900) -> Outcome:
        out = self.runner.run(args, cwd or self.root, timeout=timeout)
        if out.code != 0:
            raise SystemExit(f"set-up command failed: llmctl {' '.join(map(str, args))}\n{out.stderr}{out.stdout}")
        return out


def build_workspace(root: Path, runner) -> Workspace:
    ws = Workspace(root=root, runner=runner)
    base = root / "base"
    base.mkdir(parents=True)
    (base / "corpus.txt").write_text(corpus(400), encoding="utf-8")  # ~24 KB
    rng = random.Random(3)
    rows = []
    for i in range(80):
        label = ["pos", "neg"][i % 2]
        words = ["good", "great", "fun"] if label == "pos" else ["bad", "dull", "weak"]
        rows.append({"text": " ".join(rng.choice(WORDS + words * 3) for _ in range(8)), "label": label})
    (base / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ws.lm_cfg = write_cfg(base / "lm.yaml", tiny("lm", base))
    ws.lm_data, ws.lm_run = base / "data" / "lm", base / "runs" / "lm"
    ws.must(["preprocess", ws.lm_cfg])
    ws.must(["pretrain", ws.lm_cfg])
    cls = tiny("cls", base, data={"dir": str(base / "data" / "cls"), "task": "classify",
                                  "train": [str(base / "labels.jsonl")], "split": {"valid": 0.2, "mode": "documents"}},
               tokenizer={"from": str(ws.lm_run)},
               finetune={"task": "classify", "parent": str(ws.lm_run), "max_length": 16, "head_units": 8})
    ws.cls_cfg = write_cfg(base / "cls.yaml", cls)
    ws.cls_data, ws.cls_run = base / "data" / "cls", base / "runs" / "cls"
    ws.must(["preprocess", ws.cls_cfg])
    ws.must(["finetune", ws.cls_cfg])
    ws.exported = base / "runs" / "exported"
    shutil.copytree(ws.lm_run, ws.exported)
    ws.must(["export", ws.exported, "--quiet"])
    return ws


# ---------------------------------------------------------------- helpers that make a case's inputs


def raw(d: Path, text: str, name: str = "c.yaml") -> Path:
    p = d / name
    p.write_text(text, encoding="utf-8")
    return p


def rawb(d: Path, data: bytes, name: str) -> Path:
    p = d / name
    p.write_bytes(data)
    return p


def copy_run(src: Path, d: Path, name: str | None = None) -> Path:
    target = d / (name or src.name)  # the run's own name: its saved config.yaml stays byte for byte the same
    shutil.copytree(src, target)
    return target


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


def truncated_ckpt(src: Path, d: Path, size: int = 40) -> Path:
    run = copy_run(src, d)
    for data in (run / "checkpoints").glob("*.data-*"):
        truncate(data, size)
    return run


def ckpt_removed_index(src: Path, d: Path) -> Path:
    run = copy_run(src, d)
    for index in (run / "checkpoints").glob("*.index"):
        index.write_bytes(b"garbage" * 10)
    return run


def corrupt_tok(src: Path, d: Path, text: str = '{"version": "1.0", "model": ') -> Path:
    run = copy_run(src, d)
    (run / "tokenizer" / "tokenizer.json").write_text(text, encoding="utf-8")
    return run


def corrupt_file(src: Path, d: Path, rel: str, content: bytes | None) -> Path:
    run = copy_run(src, d)
    target = run / rel
    if content is None:
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    else:
        target.write_bytes(content)
    return run


def keras_only(src: Path, d: Path, size: int | None = 500) -> Path:
    run = copy_run(src, d)
    shutil.rmtree(run / "checkpoints")
    if size is not None:
        truncate(run / "model.keras", size)
    return run


def stub(src: Path, d: Path) -> Path:
    run = copy_run(src, d)
    shutil.rmtree(run / "checkpoints")
    for name in ("model.keras", "summary.json", "loss.png"):
        if (run / name).exists():
            (run / name).unlink()
    return run


def lm_case_cfg(ws: Workspace, d: Path, name: str = "case", **sections) -> Path:
    """A config using the shared LM dataset; its run goes under the case folder."""
    cfg = tiny(name, ws.root / "base", **sections)
    cfg["run"]["dir"] = str(d / "runs")
    return write_cfg(d / f"{name}.yaml", cfg)


def pp_cfg(d: Path, sources: list, **data) -> Path:
    cfg = tiny("pp", d)
    cfg["data"] = {**cfg["data"], "dir": str(d / "out"), "train": [str(s) for s in sources], **data}
    return write_cfg(d / "pp.yaml", cfg)


def pp(d: Path, content: bytes, name: str = "src.txt", **data) -> list:
    return ["preprocess", pp_cfg(d, [rawb(d, content, name)], **data)]


def cls_pp(d: Path, content: bytes, name: str = "l.jsonl", **data) -> list:
    return pp(d, content, name, task="classify", split={"valid": 0.2, "mode": "documents"}, **data)


def copy_data(src: Path, d: Path, name: str = "data") -> Path:
    target = d / name
    shutil.copytree(src, target)
    return target


def damaged_dataset(ws: Workspace, d: Path, rel: str, content: bytes | None) -> list:
    data = copy_data(ws.lm_data, d)
    target = data / rel
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)
    return ["pretrain", lm_case_cfg(ws, d), "--set", f"data.dir={data}"]


def damaged_cls_dataset(ws: Workspace, d: Path, rel: str, content: bytes | None) -> list:
    data = copy_data(ws.cls_data, d)
    if content is None:
        (data / rel).unlink()
    else:
        (data / rel).write_bytes(content)
    return ["finetune", ws.cls_cfg, "--set", f"run.dir={d / 'runs'}", "--set", f"data.dir={data}"]


def sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (a hole)."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def user_folder(d: Path) -> Path:
    """A folder of the user's own files (not llmctl's)."""
    folder = d / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n", encoding="utf-8")
    return folder


def immutable(path: Path) -> Path:
    subprocess.run(["chattr", "+i", str(path)], check=True)
    CLEANUPS.append(lambda: subprocess.run(["chattr", "-i", str(path)], check=False))
    return path


def tiny_mount(path: Path, size: str = "64k") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    CLEANUPS.append(lambda: subprocess.run(["umount", "-l", str(path)], check=False))
    return path


def ro_bind(path: Path) -> Path:
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
    CLEANUPS.append(lambda: subprocess.run(["umount", "-l", str(path)], check=False))
    return path


CLEANUPS: list[Callable[[], object]] = []
KINDS: list[str] = []  # --kinds: which commands the kill trials interrupt (default: the fixed plan)
BAD_VECTORS = b"the 1 2 x\nfox 3\n"
JSONL_LINE = b'{"text": "the quick brown fox", "label": "pos"}\n{"text": "a lazy dog", "label": "neg"}\n'


# ---------------------------------------------------------------- the bad inputs


@dataclass
class Case:
    name: str
    command: str
    make: Callable[[Workspace, Path], object]  # -> args list, or (args, stdin bytes)
    codes: tuple  # README codes acceptable for this mistake
    needle: str = ""  # expected in the error line (case-insensitive)
    timeout: float = 300
    keeps_record: bool = False  # a diverged run (exit 5) keeps summary.json/metrics: files added are its record


def C(name, command, make, codes, needle="", keeps_record=False):  # noqa: N802 - table shorthand
    return Case(name, command, make, codes if isinstance(codes, tuple) else (codes,), needle,
                keeps_record=keeps_record)


def V(name, text, needle="", codes=2, sets=()):  # noqa: N802 - config validate on raw YAML
    return C(name, "config", lambda ws, d: ["config", "validate", raw(d, text), *sum((["--set", s] for s in sets),
                                                                                     [])], codes, needle)


def S(name, sets, needle="", codes=2, command="config"):  # noqa: N802 - --set overrides on the LM config
    def make(ws, d):
        if command == "config":
            args = ["config", "validate", ws.lm_cfg]
        elif command == "show":
            args = ["config", "show", ws.lm_cfg]
        else:
            args = [command, ws.lm_run if command in ("generate", "evaluate", "export") else lm_case_cfg(ws, d)]
            if command == "export":
                args = ["export", copy_run(ws.lm_run, d)]
        for s in sets:
            args += ["--set", s]
        return args
    return C(name, "config" if command == "show" else command, make, codes, needle)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + "generate: {prompts: *i}\n"

CASES: list[Case] = [
    # ======== config files and values (exit 2)
    C("cfg-missing-file", "config", lambda ws, d: ["config", "validate", d / "nope.yaml"], 2, "not found"),
    C("cfg-missing-file-show", "config", lambda ws, d: ["config", "show", d / "nope.yml"], 2, "not found"),
    C("cfg-dir-not-run", "config", lambda ws, d: ["config", "validate", d], 4, "without config.yaml"),
    C("cfg-missing-run-dir", "config", lambda ws, d: ["config", "show", d / "runs" / "gone"], 4, "does not exist"),
    V("cfg-dup-flow", "model: {units: 32, units: 64}\n", "duplicate key"),
    V("cfg-dup-block", "model:\n  units: 32\n  layers: 1\n  units: 64\n", "duplicate key"),
    V("cfg-dup-section", "model: {units: 3}\ntrain: {epochs: 1}\nmodel: {layers: 2}\n", "duplicate key"),
    V("cfg-dup-deep", "train:\n  schedule:\n    kind: step\n    kind: cosine\n", "duplicate key"),
    V("cfg-bool-int", "model: {units: true}\n", "model.units"),
    V("cfg-bool-float", "train: {lr: false}\n", "train.lr"),
    V("cfg-str-int", "model: {units: abc}\n", "model.units"),
    V("cfg-float-int", "model: {units: 16.5}\n", "model.units"),
    V("cfg-list-int", "model: {units: [1, 2]}\n", "model.units"),
    V("cfg-map-int", "model: {units: {a: 1}}\n", "model.units"),
    V("cfg-section-scalar", "train: 5\n", "train"),
    V("cfg-section-list", "model: [1, 2]\n", "model"),
    V("cfg-section-null", "model: null\n", "model"),
    V("cfg-neg-units", "model: {units: -4}\n", "model.units"),
    V("cfg-zero-layers", "model: {layers: 0}\n", "model.layers"),
    V("cfg-too-many-layers", "model: {layers: 17}\n", "model.layers"),
    V("cfg-dropout-1", "model: {dropout: 1.0}\n", "model.dropout"),
    V("cfg-dropout-neg", "model: {dropout: -0.1}\n", "model.dropout"),
    V("cfg-lr-zero", "train: {lr: 0}\n", "train.lr"),
    V("cfg-lr-inf", "train: {lr: .inf}\n", "train.lr"),
    V("cfg-lr-neg-inf", "train: {lr: -.inf}\n", "train.lr"),
    V("cfg-lr-nan", "train: {lr: .nan}\n", "train.lr"),
    V("cfg-temp-inf", "generate: {temperature: .inf}\n", "generate.temperature"),
    V("cfg-temp-zero", "generate: {temperature: 0}\n", "generate.temperature"),
    V("cfg-max-time-inf", "train: {max_time: .inf}\n", "train.max_time"),
    V("cfg-split-1.5", "data: {split: {valid: 1.5}}\n", "data.split.valid"),
    V("cfg-split-sum", "data: {split: {valid: 0.6, test: 0.5}}\n", "must be < 1"),
    V("cfg-unknown-top", "trian: {epochs: 2}\n", "did you mean"),
    V("cfg-unknown-nested", "model: {unitz: 2}\n", "model.unitz"),
    V("cfg-unknown-deep", "train: {schedule: {kind: step, gama: 0.3}}\n", "train.schedule.gama"),
    V("cfg-enum-tokenizer", "tokenizer: {kind: sentencepiece}\n", "tokenizer.kind"),
    V("cfg-enum-optimizer", "train: {optimizer: rmsprop}\n", "train.optimizer"),
    V("cfg-enum-strategy", "generate: {strategy: nucleus}\n", "generate.strategy"),
    V("cfg-enum-format", "export: {formats: [onnx]}\n", "export.formats"),
    V("cfg-run-name-dots", "run: {name: ../x}\n", "run.name"),
    V("cfg-run-name-empty", "run: {name: ''}\n", "run.name"),
    V("cfg-run-name-space", "run: {name: a b}\n", "run.name"),
    V("cfg-python-tag", "run: !!python/object/apply:os.system [ls]\n", "never executed"),
    V("cfg-custom-tag", "model: !custom {units: 3}\n", "tag"),
    V("cfg-binary-tag", "run: {name: !!binary aGVsbG8=}\n", "binary"),
    V("cfg-syntax", "model: {units: 3\n", "line"),
    V("cfg-tab-indent", "model:\n\tunits: 3\n", "line"),
    V("cfg-top-list", "- 1\n- 2\n", "mapping"),
    V("cfg-top-scalar", "hello\n", "mapping"),
    V("cfg-int-key", "1: 2\n", ""),
    V("cfg-int-key-nested", "model: {1: 2}\n", ""),
    V("cfg-null-key", "model: {null: 2}\n", ""),
    V("cfg-list-key", "? [a, b]\n: 1\n", ""),
    V("cfg-deep-nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n", ""),
    V("cfg-deep-nesting-maps", "a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n", ""),
    V("cfg-alias-bomb", BOMB, ""),
    C("cfg-not-utf8", "config", lambda ws, d: ["config", "validate", rawb(d, "run: {name: caf\xe9}\n".encode(
        "latin-1"), "l.yaml")], 2, "not UTF-8"),
    C("cfg-utf16", "config", lambda ws, d: ["config", "validate", rawb(d, "model: {units: 3}\n".encode("utf-16"),
                                                                          "u.yaml")], 2, ""),
    C("cfg-binary", "config", lambda ws, d: ["config", "validate", rawb(d, bytes(range(256)) * 4, "b.yaml")], 2, ""),
    C("cfg-nul-bytes", "config", lambda ws, d: ["config", "validate", rawb(d, b"model: {units: 3}\x00\x00\n",
                                                                           "n.yaml")], 2, ""),
    C("cfg-too-large", "config", lambda ws, d: ["config", "validate", raw(d, "# " + "x" * (2 << 20) + "\n")], 2,
      "1 MiB"),
    C("cfg-devnull", "config", lambda ws, d: ["config", "validate", "/dev/zero"], 2, ""),
    V("cfg-extends-missing", "extends: nope.yaml\n", "does not exist"),
    V("cfg-extends-self", "extends: c.yaml\n", "cycle"),
    C("cfg-extends-cycle2", "config", lambda ws, d: (raw(d, "extends: b.yaml\n", "a.yaml"),
                                                      ["config", "validate", raw(d, "extends: a.yaml\n", "b.yaml")])[1],
      2, "cycle"),
    V("cfg-extends-number", "extends: 5\n", "extends"),
    V("cfg-extends-map", "extends: {a: 1}\n", "extends"),
    C("cfg-extends-dir", "config", lambda ws, d: ["config", "validate", raw(d, f"extends: {d}\n")], 2, ""),
    C("cfg-extends-deep", "config", lambda ws, d: ([raw(d, f"extends: e{i + 1}.yaml\n", f"e{i}.yaml")
                                                     for i in range(30)], raw(d, "{}\n", "e30.yaml"),
                                                    ["config", "validate", d / "e0.yaml"])[2], 2, "deeper"),
    C("cfg-extends-bad-parent", "config", lambda ws, d: (raw(d, "model: {units: [\n", "p.yaml"),
                                                          ["config", "validate", raw(d, "extends: p.yaml\n")])[1], 2,
      "p.yaml"),
    C("cfg-many-problems", "config", lambda ws, d: ["config", "validate", raw(
        d, "model:\n" + "".join(f"  k{i}: 1\n" for i in range(3000)))], 2, "more problem"),
    V("cfg-nbest-beam", "generate: {strategy: beam, beam_width: 2, n_best: 3}\n", "n_best"),
    V("cfg-strict-cudnn", "model: {strict_cudnn: true, recurrent_dropout: 0.2}\n", "strict_cudnn"),
    V("cfg-tie-sampled", "model: {tie_embeddings: true, output: sampled}\n", "tie_embeddings"),
    V("cfg-train-limit-lm", "data: {train_limit: 10}\n", "train_limit"),
    V("cfg-plateau-no-valid", "data: {split: {valid: 0}}\ntrain: {schedule: {kind: plateau}}\n", "plateau"),
    V("cfg-extend-no-from", "tokenizer: {extend: true}\n", "tokenizer.extend"),
    V("cfg-port-high", "serve: {port: 70000}\n", "serve.port"),
    V("cfg-port-neg", "serve: {port: -1}\n", "serve.port"),
    V("cfg-host-empty", "serve: {host: ''}\n", "serve.host"),
    V("cfg-max-new-cap", "generate: {max_new_tokens: 1000000000}\n", "max_new_tokens"),
    V("cfg-vocab-small", "tokenizer: {kind: bpe, vocab_size: 10}\n", "tokenizer.vocab_size"),
    V("cfg-jit-str", "train: {jit_compile: sometimes}\n", "train.jit_compile"),
    V("cfg-encoding-errors", "data: {encoding_errors: ignore}\n", "data.encoding_errors"),
    V("cfg-source-format", "data: {train: [{path: a.txt, format: xml}]}\n", "format"),
    V("cfg-source-nopath", "data: {train: [{format: text}]}\n", "path"),
    V("cfg-source-number", "data: {train: [5]}\n", "data.train"),
    V("cfg-train-string-list", "data: {train: {a: 1}}\n", "data.train"),
    V("cfg-checkpoint-zero", "train: {checkpoint_every: 0}\n", "train.checkpoint_every"),
    V("cfg-bptt-1", "train: {bptt: 1}\n", "train.bptt"),
    V("cfg-prompts-not-str", "generate: {prompts: [1, {a: b}]}\n", "generate.prompts"),
    V("cfg-stop-not-list", "generate: {stop: {a: 1}}\n", "generate.stop"),
    # ---- --set syntax
    S("set-no-equals", ["train.epochs"], "key=value"),
    S("set-empty-key", ["=3"], "empty key"),
    S("set-empty-part", ["train..epochs=3"], "empty key"),
    S("set-trailing-dot", ["train.=3"], "empty key"),
    S("set-unknown", ["train.epochz=3"], "did you mean"),
    S("set-wrong-type", ["train.epochs=many"], "train.epochs"),
    S("set-bool", ["train.epochs=false"], "train.epochs"),
    S("set-inf", ["train.lr=.inf"], "train.lr"),
    S("set-nan", ["train.lr=nan"], "train.lr"),
    S("set-into-scalar", ["train.lr.x=1"], "train.lr"),
    S("set-section-scalar", ["train=5"], "train"),
    S("set-dup-key", ["model={units: 1, units: 2}"], "duplicate key"),
    S("set-bad-yaml", ["model.units=[1,"], "model.units"),
    S("set-python-tag", ["model.units=!!python/object/apply:os.system [ls]"], ""),
    S("set-show-bad", ["model.layers=0"], "model.layers", command="show"),
    S("set-pretrain-bad", ["train.batch_size=0"], "train.batch_size", command="pretrain"),
    S("set-generate-bad", ["generate.top_p=1.5"], "generate.top_p", command="generate"),
    S("set-generate-topk", ["generate.top_k=0"], "generate.top_k", command="generate"),
    S("set-generate-temp", ["generate.temperature=.inf"], "generate.temperature", command="generate"),
    S("set-generate-max-new-0", ["generate.max_new_tokens=0"], "generate.max_new_tokens", command="generate"),
    S("set-evaluate-bad", ["evaluate.batch_size=-1"], "evaluate.batch_size", command="evaluate"),
    S("set-export-quantize", ["export.quantize=int4"], "export.quantize", command="export"),
    # ---- command-line usage (exit 2, one line)
    C("usage-unknown-command", "usage", lambda ws, d: ["trian", ws.lm_cfg], 2, "no such command"),
    C("usage-unknown-option", "usage", lambda ws, d: ["generate", ws.lm_run, "--bogus"], 2, "no such option"),
    C("usage-missing-arg", "usage", lambda ws, d: ["evaluate"], 2, "missing argument"),
    C("usage-option-value", "usage", lambda ws, d: ["evaluate", ws.lm_run, "--split"], 2, "requires an argument"),
    C("usage-port-not-int", "usage", lambda ws, d: ["serve", ws.lm_run, "--port", "abc"], 2, "--port"),
    C("usage-set-no-value", "usage", lambda ws, d: ["config", "validate", ws.lm_cfg, "--set"], 2, "requires"),
    C("usage-config-unknown-sub", "usage", lambda ws, d: ["config", "check", ws.lm_cfg], 2, "no such command"),
    C("usage-extra-arg", "usage", lambda ws, d: ["evaluate", ws.lm_run, "extra"], 2, "unexpected extra argument"),
    C("usage-resume-overwrite", "pretrain", lambda ws, d: ["pretrain", copy_run(ws.lm_run, d), "--resume",
                                                           "--overwrite"], 2, "contradict"),
    C("usage-finetune-resume-overwrite", "finetune", lambda ws, d: ["finetune", copy_run(ws.cls_run, d), "--resume",
                                                                    "--overwrite"], 2, "contradict"),
    C("usage-bad-split", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--split", "nope"], 2, "evaluate.split"),
    C("usage-split-quote", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--split", "valid: x"], 2, ""),
    C("usage-host-quote", "serve", lambda ws, d: ["serve", ws.lm_run, "--host", "a\"b"], (2, 6), ""),
    # ======== preprocess: data errors (exit 3)
    C("pp-source-missing", "preprocess", lambda ws, d: ["preprocess", pp_cfg(d, [d / "none.txt"])], 3, "not found"),
    C("pp-glob-nothing", "preprocess", lambda ws, d: ["preprocess", pp_cfg(d, [d / "*.nothing"])], 3, ""),
    C("pp-empty-dir", "preprocess", lambda ws, d: ((d / "empty").mkdir(), ["preprocess", pp_cfg(d, [d / "empty"])])[1],
      3, ""),
    C("pp-no-train", "preprocess", lambda ws, d: ["preprocess", pp_cfg(d, [])], (2, 3), "data.train"),
    C("pp-empty-file", "preprocess", lambda ws, d: pp(d, b""), 3, "empty"),
    C("pp-whitespace-file", "preprocess", lambda ws, d: pp(d, b"   \n\n\t\n"), 3, ""),
    C("pp-binary", "preprocess", lambda ws, d: pp(d, b"abc\x00def\n" * 10), 3, "binary"),
    C("pp-random-bytes", "preprocess", lambda ws, d: pp(d, random.Random(1).randbytes(4000)), 3, ""),
    C("pp-latin1", "preprocess", lambda ws, d: pp(d, "caf\xe9 au lait\n".encode("latin-1") * 5), 3, "utf-8"),
    C("pp-utf16-nobom", "preprocess", lambda ws, d: pp(d, ("the quick fox\n" * 20).encode("utf-16-le")), 3, ""),
    C("pp-bad-codec", "preprocess", lambda ws, d: pp(d, b"hello world\n" * 20, encoding="klingon-8"), (2, 3),
      "klingon"),
    C("pp-devnull", "preprocess", lambda ws, d: ["preprocess", pp_cfg(d, ["/dev/null"])], 3, ""),
    C("pp-symlink-loop", "preprocess", lambda ws, d: (os.symlink(d / "loop", d / "loop"),
                                                      ["preprocess", pp_cfg(d, [d / "loop"])])[1], 3, ""),
    C("pp-dangling-symlink", "preprocess", lambda ws, d: (os.symlink(d / "gone.txt", d / "s.txt"),
                                                          ["preprocess", pp_cfg(d, [d / "s.txt"])])[1], 3, ""),
    C("pp-jsonl-invalid", "preprocess", lambda ws, d: pp(d, b'{"text": "a"\n', "i.jsonl"), 3, "invalid JSON"),
    C("pp-jsonl-missing-field", "preprocess", lambda ws, d: pp(d, b'{"body": "a"}\n', "m.jsonl"), 3, "text"),
    C("pp-jsonl-number", "preprocess", lambda ws, d: pp(d, b'{"text": "ok"}\n{"text": 12345}\n', "n.jsonl"), 3,
      "12345"),
    C("pp-jsonl-null", "preprocess", lambda ws, d: pp(d, b'{"text": null}\n', "z.jsonl"), 3, ""),
    C("pp-jsonl-list", "preprocess", lambda ws, d: pp(d, b'{"text": ["a", "b"]}\n', "l.jsonl"), 3, ""),
    C("pp-jsonl-array-line", "preprocess", lambda ws, d: pp(d, b'["a", "b"]\n', "a.jsonl"), 3, ""),
    C("pp-jsonl-scalar-line", "preprocess", lambda ws, d: pp(d, b'"just a string"\n', "s.jsonl"), 3, ""),
    C("pp-jsonl-whole-array", "preprocess", lambda ws, d: pp(d, b'[{"text": "a"},\n{"text": "b"}]\n', "w.jsonl"), 3,
      ""),
    C("pp-jsonl-empty-lines", "preprocess", lambda ws, d: pp(d, b"\n\n\n", "e.jsonl"), 3, ""),
    C("pp-jsonl-nan", "preprocess", lambda ws, d: pp(d, b'{"text": NaN}\n', "nan.jsonl"), 3, ""),
    C("pp-jsonl-latin1", "preprocess", lambda ws, d: pp(d, '{"text": "caf\xe9"}\n'.encode("latin-1"), "x.jsonl"), 3,
      ""),
    C("pp-jsonl-deep", "preprocess", lambda ws, d: pp(d, b'{"text": "a", "x": ' + b"[" * 100000 + b"]" * 100000
                                                      + b"}\n", "deep.jsonl"), 3, ""),
    C("pp-csv-missing-col", "preprocess", lambda ws, d: pp(d, b"body\nhello\n", "c.csv"), 3, "text"),
    C("pp-tsv-missing-col", "preprocess", lambda ws, d: pp(d, b"body\tx\nhello\tworld\n", "c.tsv"), 3, "text"),
    C("pp-csv-ragged", "preprocess", lambda ws, d: pp(d, b'text,label\n"unterminated,1\n', "r.csv"), 3, ""),
    C("pp-csv-header-only", "preprocess", lambda ws, d: pp(d, b"text\n", "h.csv"), 3, ""),
    C("pp-format-mismatch", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [{"path": str(rawb(d, b"plain text line\n" * 10, "p.txt")), "format": "jsonl"}])], 3, ""),
    C("pp-cls-no-label", "preprocess", lambda ws, d: cls_pp(d, b'{"text": "a b c"}\n' * 20), 3, "label"),
    C("pp-cls-one-class", "preprocess", lambda ws, d: cls_pp(d, b'{"text": "a b c", "label": "x"}\n' * 20), 3, ""),
    C("pp-cls-null-label", "preprocess", lambda ws, d: cls_pp(d, JSONL_LINE * 10 + b'{"text": "a", "label": null}\n'),
      3, ""),
    C("pp-cls-list-label", "preprocess", lambda ws, d: cls_pp(d, JSONL_LINE * 10 + b'{"text": "a", "label": [1]}\n'),
      3, ""),
    C("pp-cls-dict-label", "preprocess", lambda ws, d: cls_pp(d, JSONL_LINE * 10 + b'{"text": "a", "label": {}}\n'),
      3, ""),
    C("pp-pairs-no-response", "preprocess", lambda ws, d: pp(d, b'{"prompt": "a", "text": "b"}\n' * 10, "p.jsonl",
                                                             task="pairs"), 3, "response"),
    C("pp-stopwords-missing", "preprocess", lambda ws, d: pp(d, b"hello world\n" * 20, normalize={
        "stopwords": str(d / "nostop.txt")}), (2, 3), "nostop"),
    C("pp-tokenizer-from-missing", "preprocess", lambda ws, d: ["preprocess", write_cfg(d / "t.yaml", {
        **tiny("t", d), "data": {"dir": str(d / "out"), "train": [str(ws.root / "base" / "corpus.txt")]},
        "tokenizer": {"kind": "char", "from": str(d / "nowhere")}})], 4, "nowhere"),
    C("pp-tokenizer-from-foreign", "preprocess", lambda ws, d: ["preprocess", write_cfg(d / "t.yaml", {
        **tiny("t", d), "data": {"dir": str(d / "out"), "train": [str(ws.root / "base" / "corpus.txt")]},
        "tokenizer": {"kind": "char", "from": str(d)}})], 4, ""),
    C("pp-tokenizer-from-corrupt", "preprocess", lambda ws, d: ["preprocess", write_cfg(d / "t.yaml", {
        **tiny("t", d), "data": {"dir": str(d / "out"), "train": [str(ws.root / "base" / "corpus.txt")]},
        "tokenizer": {"kind": "char", "from": str(corrupt_file(ws.lm_run, d, "tokenizer/llmctl_tokenizer.json",
                                                               b'{"kind": '))}})], 4, "tokenizer"),
    C("pp-into-foreign-dir", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [ws.root / "base" / "corpus.txt"], dir=str(user_folder(d)))], 4, "not an llmctl dataset"),
    C("pp-force-into-foreign-dir", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [ws.root / "base" / "corpus.txt"], dir=str(user_folder(d))), "--force"], 4, "not an llmctl dataset"),
    C("pp-data-dir-is-file", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [ws.root / "base" / "corpus.txt"], dir=str(raw(d, "x", "afile")))], (2, 4), "afile"),
    C("pp-data-dir-under-file", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [ws.root / "base" / "corpus.txt"], dir=str(raw(d, "x", "afile") / "sub"))], (2, 4), "afile"),
    C("pp-into-run-dir", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [ws.root / "base" / "corpus.txt"], dir=str(copy_run(ws.lm_run, d)))], 4, ""),
    C("pp-source-is-dataset-tokens", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [ws.lm_data / "train.tokens"])], 3, ""),
    C("pp-immutable-out", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [ws.root / "base" / "corpus.txt"], dir=str(immutable((d / "ro").mkdir() or d / "ro") / "out"))],
      (4, 6), "ro"),
    C("pp-readonly-mount", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [ws.root / "base" / "corpus.txt"], dir=str(ro_bind((d / "rom").mkdir() or d / "rom") / "out"))],
      (4, 6), "rom"),
    C("pp-disk-full", "preprocess", lambda ws, d: ["preprocess", pp_cfg(
        d, [rawb(d, corpus(3000).encode(), "big.txt")], dir=str(tiny_mount(d / "small", "48k") / "out"))], 6,
      "disk full"),
    # ======== pretrain
    C("pt-no-dataset", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                  f"data.dir={d / 'none'}"], 4, "preprocess"),
    C("pt-manifest-corrupt", "pretrain", lambda ws, d: damaged_dataset(ws, d, "manifest.json", b"{not json"), 4,
      "manifest"),
    C("pt-manifest-empty", "pretrain", lambda ws, d: damaged_dataset(ws, d, "manifest.json", b""), 4, "manifest"),
    C("pt-manifest-list", "pretrain", lambda ws, d: damaged_dataset(ws, d, "manifest.json", b"[1, 2]"), 4, ""),
    C("pt-manifest-fields", "pretrain", lambda ws, d: damaged_dataset(ws, d, "manifest.json", b'{"a": 1}'), 4, ""),
    C("pt-tokens-missing", "pretrain", lambda ws, d: damaged_dataset(ws, d, "train.tokens", None), 4, "train"),
    C("pt-tokens-truncated", "pretrain", lambda ws, d: damaged_dataset(ws, d, "train.tokens", b"\x01"), 4, ""),
    C("pt-valid-missing", "pretrain", lambda ws, d: damaged_dataset(ws, d, "valid.tokens", None), 4, "valid"),
    C("pt-dataset-tokenizer-corrupt", "pretrain", lambda ws, d: damaged_dataset(
        ws, d, "tokenizer/tokenizer.json", b'{"model": '), 4, "tokenizer"),
    C("pt-dataset-llmctl-tokenizer-corrupt", "pretrain", lambda ws, d: damaged_dataset(
        ws, d, "tokenizer/llmctl_tokenizer.json", b"[]"), 4, "tokenizer"),
    C("pt-bptt-larger-than-data", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                             "train.bptt=100000"], (3, 4), ""),
    C("pt-batch-larger-than-data", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                              "train.batch_size=100000"], (3, 4, 6), ""),
    C("pt-units-oom", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set", "model.units=2000000"], 6,
      "memory"),
    C("pt-units-huge-int", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                      "model.units=1" + "0" * 400], 6, "memory"),
    C("pt-embedding-oom", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                     "model.embedding_dim=100000000000"], 6, "memory"),
    C("pt-seed-huge", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                 "run.seed=99999999999999999999999"], 2, "run.seed"),
    C("pt-seed-negative", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set", "run.seed=-5"], 2,
      "run.seed"),
    C("pt-resume-missing", "pretrain", lambda ws, d: ["pretrain", d / "gone", "--resume"], 4, "does not exist"),
    C("pt-resume-stub", "pretrain", lambda ws, d: ["pretrain", stub(ws.lm_run, d), "--resume"], 4, "no checkpoint"),
    C("pt-rerun-exists", "pretrain", lambda ws, d: ["pretrain", copy_run(ws.lm_run, d)], 4, "already holds a run"),
    C("pt-rerun-differs", "pretrain", lambda ws, d: ["pretrain", copy_run(ws.lm_run, d), "--set", "model.units=20"], 4,
      "differs in model.units"),
    C("pt-resume-differs", "pretrain", lambda ws, d: ["pretrain", copy_run(ws.lm_run, d), "--resume", "--set",
                                                      "model.units=20"], 4, "model.units"),
    C("pt-resume-truncated-ckpt", "pretrain", lambda ws, d: ["pretrain", truncated_ckpt(ws.lm_run, d), "--resume",
                                                             "--set", "train.max_steps=6"], 4, "damaged"),
    C("pt-resume-garbage-index", "pretrain", lambda ws, d: ["pretrain", ckpt_removed_index(ws.lm_run, d), "--resume",
                                                            "--set", "train.max_steps=6"], 4, ""),
    C("pt-resume-runjson-corrupt", "pretrain", lambda ws, d: ["pretrain", corrupt_file(
        ws.lm_run, d, "run.json", b"{oops"), "--resume", "--set", "train.max_steps=6"], 4, "run.json"),
    C("pt-resume-runjson-list", "pretrain", lambda ws, d: ["pretrain", corrupt_file(
        ws.lm_run, d, "run.json", b"[]"), "--resume", "--set", "train.max_steps=6"], 4, "run.json"),
    C("pt-resume-state-corrupt", "pretrain", lambda ws, d: ["pretrain", corrupt_file(
        ws.lm_run, d, "checkpoints/state.json", b"{oops"), "--resume", "--set", "train.max_steps=6"], 4, ""),
    C("pt-resume-config-corrupt", "pretrain", lambda ws, d: ["pretrain", corrupt_file(
        ws.lm_run, d, "config.yaml", b"model: {units: [\n"), "--resume"], (2, 4), "config.yaml"),
    C("pt-resume-config-empty-dict", "pretrain", lambda ws, d: ["pretrain", corrupt_file(
        ws.lm_run, d, "config.yaml", b"- 1\n"), "--resume"], (2, 4), "config.yaml"),
    C("pt-resume-tokenizer-corrupt", "pretrain", lambda ws, d: ["pretrain", corrupt_tok(ws.lm_run, d), "--resume",
                                                                "--set", "train.max_steps=6"], 4, "tokenizer"),
    C("pt-run-dir-is-file", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                       f"run.dir={raw(d, 'x', 'afile')}"], (2, 4), "afile"),
    C("pt-multi-worker-no-tfconfig", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                                "distribute.strategy=multi_worker"], (2, 6),
      "TF_CONFIG"),
    C("pt-bad-device", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                  "distribute.strategy=mirrored", "--set",
                                                  "distribute.devices=['/gpu:7']"], (2, 6), "gpu"),
    C("pt-emb-file-missing", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                        f"model.pretrained_embeddings={d / 'vec.txt'}"], 3, "vec.txt"),
    C("pt-emb-file-garbage", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                        f"model.pretrained_embeddings="
                                                        f"{rawb(d, BAD_VECTORS, 'vec.txt')}"], 3, "vec.txt"),
    C("pt-emb-file-binary", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                       f"model.pretrained_embeddings="
                                                       f"{rawb(d, bytes(range(256)) * 8, 'vec.bin')}"], 3, "vec.bin"),
    C("pt-diverge", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set", "train.optimizer=sgd",
                                               "--set", "train.lr=1e30", "--set", "train.clip_norm=null", "--set",
                                               "train.max_steps=12", "--set", "train.checkpoint_every=50"], 5,
      "diverged", keeps_record=True),
    C("pt-immutable-run", "pretrain", lambda ws, d: ["pretrain", immutable(copy_run(ws.lm_run, d)), "--resume",
                                                     "--set", "train.max_steps=6"], (4, 6), ""),
    C("pt-readonly-run", "pretrain", lambda ws, d: ["pretrain", ro_bind(copy_run(ws.lm_run, d)), "--resume",
                                                    "--set", "train.max_steps=6"], (4, 6), ""),
    C("pt-overwrite-readonly", "pretrain", lambda ws, d: ["pretrain", ro_bind(copy_run(ws.lm_run, d)),
                                                          "--overwrite"], (4, 6), ""),
    C("pt-disk-full", "pretrain", lambda ws, d: ["pretrain", lm_case_cfg(ws, d), "--set",
                                                 f"run.dir={tiny_mount(d / 'small', '40k')}"], 6, "disk full"),
    # ======== finetune
    C("ft-parent-missing", "finetune", lambda ws, d: ["finetune", ws.cls_cfg, "--set",
                                                      f"run.dir={d / 'runs'}", "--set",
                                                      f"finetune.parent={d / 'nope'}"], 4, "nope"),
    C("ft-parent-is-file", "finetune", lambda ws, d: ["finetune", ws.cls_cfg, "--set", f"run.dir={d / 'runs'}",
                                                      "--set", f"finetune.parent={raw(d, 'x', 'pfile')}"], 4, "pfile"),
    C("ft-parent-stub", "finetune", lambda ws, d: ["finetune", ws.cls_cfg, "--set", f"run.dir={d / 'runs'}",
                                                   "--set", f"finetune.parent={stub(ws.lm_run, d)}"], 4, ""),
    C("ft-parent-truncated", "finetune", lambda ws, d: ["finetune", ws.cls_cfg, "--set", f"run.dir={d / 'runs'}",
                                                        "--set", f"finetune.parent={truncated_ckpt(ws.lm_run, d)}"],
      4, "damaged"),
    C("ft-parent-classifier", "finetune", lambda ws, d: ["finetune", ws.cls_cfg, "--set", f"run.dir={d / 'runs'}",
                                                         "--set", f"finetune.parent={ws.cls_run}"], (2, 4), ""),
    C("ft-parent-tok-mismatch", "finetune", lambda ws, d: ["finetune", ws.cls_cfg, "--set",
                                                           f"run.dir={d / 'runs'}", "--set",
                                                           f"data.dir={ws.lm_data}"], (2, 3, 4), ""),
    C("ft-no-dataset", "finetune", lambda ws, d: ["finetune", ws.cls_cfg, "--set", f"run.dir={d / 'runs'}",
                                                  "--set", f"data.dir={d / 'nodata'}"], 4, "preprocess"),
    C("ft-rerun-exists", "finetune", lambda ws, d: ["finetune", copy_run(ws.cls_run, d)], 4, "already holds a run"),
    C("ft-resume-missing", "finetune", lambda ws, d: ["finetune", d / "gone", "--resume"], 4, "does not exist"),
    C("ft-labels-corrupt", "finetune", lambda ws, d: damaged_cls_dataset(ws, d, "train.labels.npy", b"garbage"), 4,
      ""),
    C("ft-dataset-manifest-corrupt", "finetune", lambda ws, d: damaged_cls_dataset(ws, d, "manifest.json", b"{"), 4,
      "manifest"),
    C("ft-task-mismatch", "finetune", lambda ws, d: ["finetune", ws.cls_cfg, "--set", f"run.dir={d / 'runs'}",
                                                     "--set", "finetune.task=pairs"], (2, 3, 4), ""),
    # ======== evaluate
    C("ev-missing-run", "evaluate", lambda ws, d: ["evaluate", d / "runs" / "gone"], 4, "does not exist"),
    C("ev-not-a-run", "evaluate", lambda ws, d: ["evaluate", d], 4, "without config.yaml"),
    C("ev-stub", "evaluate", lambda ws, d: ["evaluate", stub(ws.lm_run, d)], 4, "no trained model"),
    C("ev-truncated-ckpt", "evaluate", lambda ws, d: ["evaluate", truncated_ckpt(ws.lm_run, d)], 4, "damaged"),
    C("ev-truncated-ckpt-0", "evaluate", lambda ws, d: ["evaluate", truncated_ckpt(ws.lm_run, d, 0)], 4, "damaged"),
    C("ev-garbage-index", "evaluate", lambda ws, d: ["evaluate", ckpt_removed_index(ws.lm_run, d)], 4, ""),
    C("ev-corrupt-tokenizer", "evaluate", lambda ws, d: ["evaluate", corrupt_tok(ws.lm_run, d)], 4, "tokenizer"),
    C("ev-tokenizer-missing", "evaluate", lambda ws, d: ["evaluate", corrupt_file(ws.lm_run, d, "tokenizer", None)], 4,
      "tokenizer"),
    C("ev-dataset-gone", "evaluate", lambda ws, d: ["evaluate", copy_run(ws.lm_run, d), "--set",
                                                    f"data.dir={d / 'none'}"], 4, "dataset"),
    C("ev-no-test-split", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--split", "test"], (3, 4), "test"),
    C("ev-file-missing", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--file", d / "none.txt"], 3, "none.txt"),
    C("ev-file-binary", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--file", rawb(d, b"\x00\x01" * 100,
                                                                                         "b.txt")], 3, ""),
    C("ev-file-empty", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--file", rawb(d, b"", "e.txt")], 3, ""),
    C("ev-file-dir", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--file", d], 3, ""),
    C("ev-file-utf16", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--file", rawb(
        d, ("the fox " * 50).encode("utf-16-le"), "u.txt")], 3, ""),
    C("ev-checkpoint-path-missing", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--set",
                                                               f"evaluate.checkpoint={d / 'ck'}"], 4, ""),
    C("ev-checkpoint-garbage-name", "evaluate", lambda ws, d: ["evaluate", ws.lm_run, "--set",
                                                               "evaluate.checkpoint=worst"], (2, 4), "worst"),
    C("ev-runjson-corrupt", "evaluate", lambda ws, d: ["evaluate", corrupt_file(ws.lm_run, d, "run.json", b"{x")], 4,
      "run.json"),
    C("ev-runjson-missing", "evaluate", lambda ws, d: ["evaluate", corrupt_file(ws.lm_run, d, "run.json", None)], 4,
      "run.json"),
    C("ev-config-garbage", "evaluate", lambda ws, d: ["evaluate", corrupt_file(ws.lm_run, d, "config.yaml",
                                                                               b"\x00\x01\x02")], (2, 4), ""),
    C("ev-cls-labels-corrupt", "evaluate", lambda ws, d: ["evaluate", corrupt_file(ws.cls_run, d, "labels.json",
                                                                                   b"{bad")], 4, "labels"),
    C("ev-immutable-run", "evaluate", lambda ws, d: ["evaluate", immutable(copy_run(ws.lm_run, d))], (4, 6), ""),
    # ======== generate
    C("gen-missing-run", "generate", lambda ws, d: ["generate", d / "gone", "--prompt", "a"], 4, "does not exist"),
    C("gen-not-a-run", "generate", lambda ws, d: ["generate", d, "--prompt", "a"], 4, "without config.yaml"),
    C("gen-stub", "generate", lambda ws, d: ["generate", stub(ws.lm_run, d), "--prompt", "a"], 4, "no trained model"),
    C("gen-corrupt-tokenizer", "generate", lambda ws, d: ["generate", corrupt_tok(ws.lm_run, d), "--prompt", "a"], 4,
      "tokenizer"),
    C("gen-tokenizer-wrong-json", "generate", lambda ws, d: ["generate", corrupt_tok(ws.lm_run, d, '{"a": 1}'),
                                                             "--prompt", "a"], 4, "tokenizer"),
    C("gen-llmctl-tokenizer-corrupt", "generate", lambda ws, d: ["generate", corrupt_file(
        ws.lm_run, d, "tokenizer/llmctl_tokenizer.json", b"{"), "--prompt", "a"], 4, "tokenizer"),
    C("gen-truncated-ckpt", "generate", lambda ws, d: ["generate", truncated_ckpt(ws.lm_run, d), "--prompt", "a"], 4,
      "damaged"),
    C("gen-truncated-keras", "generate", lambda ws, d: ["generate", keras_only(ws.lm_run, d), "--prompt", "a"], 4,
      "model.keras"),
    C("gen-garbage-keras", "generate", lambda ws, d: ["generate", (lambda r: (r / "model.keras").write_bytes(
        b"PK\x03\x04garbage") and r)(keras_only(ws.lm_run, d, None)), "--prompt", "a"], 4, "model.keras"),
    C("gen-empty-keras", "generate", lambda ws, d: ["generate", keras_only(ws.lm_run, d, 0), "--prompt", "a"], 4,
      "model.keras"),
    C("gen-prompts-file-missing", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompts-file", d / "n.txt"], 3,
      "n.txt"),
    C("gen-prompts-file-dir", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompts-file", d], 3, ""),
    C("gen-prompts-file-binary", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompts-file", rawb(
        d, bytes(range(128, 256)), "p.txt")], 3, ""),
    C("gen-prompts-file-utf16", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompts-file", rawb(
        d, "the fox\n".encode("utf-16"), "p.txt")], 3, ""),
    C("gen-prompt-too-long", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompt", "a" * 1_000_001], 3,
      "1,000,000"),
    C("gen-stdin-too-long", "generate", lambda ws, d: (["generate", ws.lm_run, "--prompts-file", "-"],
                                                       b"a" * 1_000_001 + b"\n"), 3, "1,000,000"),
    C("gen-prompts-file-latin1", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompts-file", rawb(
        d, "caf\xe9\n".encode("latin-1"), "p.txt")], 3, ""),
    C("gen-checkpoint-missing", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompt", "a", "--set",
                                                           f"generate.checkpoint={d / 'ck'}"], 4, ""),
    C("gen-on-classifier", "generate", lambda ws, d: ["generate", ws.cls_run, "--prompt", "a"], (2, 4), "predict"),
    C("gen-memory-cap", "generate", lambda ws, d: ["generate", ws.lm_run, "--set", "generate.max_new_tokens=1000000",
                                                   *sum((["--prompt", "a"] for _ in range(100000)), [])], (2, 3, 6),
      ""),
    C("gen-nbest-beam", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompt", "a", "--set",
                                                   "generate.strategy=beam", "--set", "generate.n_best=9"], 2,
      "n_best"),
    C("gen-config-file-missing-data", "generate", lambda ws, d: ["generate", write_cfg(d / "g.yaml", {
        **tiny("nothere", d)}), "--prompt", "a"], 4, ""),
    # ======== export
    C("ex-missing-run", "export", lambda ws, d: ["export", d / "runs" / "gone"], 4, "does not exist"),
    C("ex-stub", "export", lambda ws, d: ["export", stub(ws.lm_run, d)], 4, "no trained model"),
    C("ex-corrupt-tokenizer", "export", lambda ws, d: ["export", corrupt_tok(ws.lm_run, d)], 4, "tokenizer"),
    C("ex-truncated-ckpt", "export", lambda ws, d: ["export", truncated_ckpt(ws.lm_run, d)], 4, "damaged"),
    C("ex-truncated-keras", "export", lambda ws, d: ["export", keras_only(ws.lm_run, d)], 4, "model.keras"),
    C("ex-into-run", "export", lambda ws, d: (lambda r: ["export", r, "--set", f"export.dir={r}"])(
        copy_run(ws.lm_run, d)), 2, "destroy"),
    C("ex-existing-export", "export", lambda ws, d: ["export", copy_run(ws.exported, d)], 4, "--overwrite"),
    C("ex-dir-is-file", "export", lambda ws, d: ["export", copy_run(ws.lm_run, d), "--set",
                                                 f"export.dir={raw(d, 'x', 'efile')}"], (2, 4), "efile"),
    C("ex-dir-foreign", "export", lambda ws, d: ["export", copy_run(ws.lm_run, d), "--set",
                                                 f"export.dir={user_folder(d)}", "--overwrite"], (2, 4), "mine"),
    C("ex-format-bad", "export", lambda ws, d: ["export", copy_run(ws.lm_run, d), "--set",
                                                "export.formats=[onnx]"], 2, "export.formats"),
    C("ex-formats-empty", "export", lambda ws, d: ["export", copy_run(ws.lm_run, d), "--set",
                                                   "export.formats=[]"], 2, "export.formats"),
    C("ex-immutable-run", "export", lambda ws, d: ["export", immutable(copy_run(ws.lm_run, d))], (4, 6), ""),
    C("ex-disk-full", "export", lambda ws, d: ["export", copy_run(ws.lm_run, d), "--set",
                                               f"export.dir={tiny_mount(d / 'small', '32k') / 'e'}"], 6, "disk full"),
    # ======== predict
    C("pr-missing-run", "predict", lambda ws, d: ["predict", d / "gone", "--text", "a"], 4, "does not exist"),
    C("pr-on-lm", "predict", lambda ws, d: ["predict", ws.lm_run, "--text", "a"], 4, "not a classifier"),
    C("pr-file-missing", "predict", lambda ws, d: ["predict", ws.cls_run, "--file", d / "n.txt"], 3, "n.txt"),
    C("pr-file-dir", "predict", lambda ws, d: ["predict", ws.cls_run, "--file", d], 3, ""),
    C("pr-file-binary", "predict", lambda ws, d: ["predict", ws.cls_run, "--file", rawb(d, bytes(range(128, 256)),
                                                                                        "b.txt")], 3, ""),
    C("pr-no-texts", "predict", lambda ws, d: ["predict", ws.cls_run], (2, 3), ""),
    C("pr-empty-file", "predict", lambda ws, d: ["predict", ws.cls_run, "--file", rawb(d, b"\n\n", "e.txt")], (2, 3),
      ""),
    C("pr-labels-corrupt", "predict", lambda ws, d: ["predict", corrupt_file(ws.cls_run, d, "labels.json", b"[1"),
                                                     "--text", "a"], 4, "labels"),
    C("pr-labels-missing", "predict", lambda ws, d: ["predict", corrupt_file(ws.cls_run, d, "labels.json", None),
                                                     "--text", "a"], 4, "labels"),
    C("pr-truncated-ckpt", "predict", lambda ws, d: ["predict", truncated_ckpt(ws.cls_run, d), "--text", "a"], 4,
      "damaged"),
    C("pr-corrupt-tokenizer", "predict", lambda ws, d: ["predict", corrupt_tok(ws.cls_run, d), "--text", "a"], 4,
      "tokenizer"),
    C("pr-file-too-large", "predict", lambda ws, d: ["predict", ws.cls_run, "--file", sparse(d / "big.txt", 65 << 20)],
      3, "at most"),
    C("gen-prompts-file-too-large", "generate", lambda ws, d: ["generate", ws.lm_run, "--prompts-file",
                                                               sparse(d / "big.txt", 65 << 20)], 3, "at most"),
    C("pr-stub", "predict", lambda ws, d: ["predict", stub(ws.cls_run, d), "--text", "a"], 4, ""),
    # ======== serve start-up
    C("sv-missing-run", "serve", lambda ws, d: ["serve", d / "gone"], 4, "does not exist"),
    C("sv-stub", "serve", lambda ws, d: ["serve", stub(ws.lm_run, d), "--port", "0"], 4, ""),
    C("sv-corrupt-tokenizer", "serve", lambda ws, d: ["serve", corrupt_tok(ws.lm_run, d), "--port", "0"], 4,
      "tokenizer"),
    C("sv-truncated-ckpt", "serve", lambda ws, d: ["serve", truncated_ckpt(ws.lm_run, d), "--port", "0"], 4,
      "damaged"),
    C("sv-port-high", "serve", lambda ws, d: ["serve", ws.lm_run, "--port", "70000"], 2, "serve.port"),
    C("sv-port-in-use", "serve", lambda ws, d: ["serve", ws.lm_run, "--port", str(_busy_port())], (2, 6), "port"),
    C("sv-bad-host", "serve", lambda ws, d: ["serve", ws.lm_run, "--host", "999.1.1.1", "--port", "0"], (2, 6),
      "999.1.1.1"),
    C("sv-max-batch-0", "serve", lambda ws, d: ["serve", ws.lm_run, "--set", "serve.max_batch=0"], 2,
      "serve.max_batch"),
    C("sv-not-a-run", "serve", lambda ws, d: ["serve", d], 4, "without config.yaml"),
]

_SOCKETS = []


def _busy_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    _SOCKETS.append(s)
    return s.getsockname()[1]


# ---------------------------------------------------------------- snapshots


def snapshot(root: Path, case_dir: Path | None = None) -> dict[str, tuple]:
    """Every path under `root` → (size, sha1) for files, ("dir",) for folders; other cases' folders are skipped."""
    import hashlib

    out: dict[str, tuple] = {}
    cases = root / "cases"
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == cases:
            dirnames[:] = [n for n in dirnames if case_dir is not None and here / n == case_dir]
        for name in dirnames:
            out[str((here / name).relative_to(root)) + "/"] = ("dir",)
        for name in filenames:
            p = here / name
            try:
                if p.is_symlink() or not p.is_file():
                    out[str(p.relative_to(root))] = ("special",)
                    continue
                out[str(p.relative_to(root))] = (p.stat().st_size, hashlib.sha1(p.read_bytes()).hexdigest())
            except OSError:
                continue
    return out


@dataclass
class Diff:
    added: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    removed: list = field(default_factory=list)

    @property
    def metadata(self) -> list:
        """A run's config.yaml rewritten by a command that was then refused (it records the new budgets when a
        resume starts, before the checkpoint is read): reported apart from artifact overwrites."""
        return [p for p in self.changed if p.endswith("/config.yaml")]

    @property
    def overwrites(self) -> list:
        return [p for p in self.changed if p not in self.metadata] + self.removed

    @property
    def leftovers(self) -> list:
        return [p for p in self.added if TMP_PREFIX in p or LOCK_SUFFIX in p]


def diff(before: dict, after: dict) -> Diff:
    dd = Diff()
    for path, sig in after.items():
        if path not in before:
            dd.added.append(path)
        elif before[path] != sig and sig != ("dir",):
            dd.changed.append(path)
    dd.removed = [p for p in before if p not in after]
    return dd


# ---------------------------------------------------------------- running the bad inputs


@dataclass
class Result:
    name: str
    command: str
    code: int
    expected: tuple
    lines: int
    traceback: bool
    needle_ok: bool
    stdout_empty: bool
    diff: Diff
    seconds: float
    first_line: str
    timed_out: bool = False
    kind: str = "bad"

    @property
    def ok(self) -> bool:
        return (self.code in self.expected and self.code != 1 and self.lines == 1 and not self.traceback
                and self.needle_ok and not self.diff.added and not self.diff.overwrites and not self.timed_out)


def run_bad_inputs(ws: Workspace, cases: list[Case], log) -> list[Result]:
    results = []
    cases_root = ws.root / "cases"
    for case in cases:
        d = cases_root / case.name
        d.mkdir(parents=True)
        stdin = None
        try:
            made = case.make(ws, d)
            args, stdin = (made if isinstance(made, tuple) else (made, None))
        except Exception as exc:  # noqa: BLE001 - a case whose set-up failed is reported, not fatal
            log(f"  set-up of {case.name} failed: {type(exc).__name__}: {exc}")
            _cleanup()
            continue
        before = snapshot(ws.root, d)
        try:
            out = ws.runner.run(args, d, stdin=stdin, timeout=case.timeout)
        finally:
            after = snapshot(ws.root, d)
            _cleanup()
        lines = out.stderr.splitlines()
        first = lines[0] if lines else ""
        tb = "Traceback" in out.stderr or "Traceback" in out.stdout
        res = Result(case.name, case.command, out.code, case.codes, len(lines), tb,
                     case.needle.lower() in first.lower(), out.stdout == "", diff(before, after), out.seconds,
                     first[:300], out.timed_out)
        if case.keeps_record:
            res.diff.added = [p for p in res.diff.added if "/runs/" not in p or TMP_PREFIX in p or LOCK_SUFFIX in p]
        results.append(res)
        mark = "ok  " if res.ok else "FAIL"
        log(f"  {mark} {case.name:36s} exit {out.code:>3} (want {'/'.join(map(str, case.codes))}) "
            f"{len(lines)} line(s) {out.seconds:5.1f}s  {first[:150]}")
        if not res.ok:
            if res.diff.added or res.diff.changed or res.diff.removed:
                log(f"       files: +{res.diff.added[:5]} ~{res.diff.changed[:5]} -{res.diff.removed[:5]}")
            if len(lines) > 1:
                log("       stderr: " + " | ".join(lines[-4:])[:600])
    return results


def _cleanup() -> None:
    while CLEANUPS:
        CLEANUPS.pop()()
    while _SOCKETS:
        _SOCKETS.pop().close()


# ---------------------------------------------------------------- kill trials


def metrics_rows(run: Path) -> list[tuple]:
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [tuple(r.get(c) for c in ("step", "split", "tokens", "loss", "lr", "grad_norm"))
                for r in csv.DictReader(handle)]


def stray(root: Path) -> list[str]:
    """`.tmp-*` and lock files anywhere under `root`."""
    found = []
    for p in root.rglob("*"):
        if p.name.startswith(TMP_PREFIX) or p.name.endswith(LOCK_SUFFIX):
            found.append(str(p.relative_to(root)))
    return found


@dataclass
class Trial:
    name: str
    signal: str
    after_s: float
    killed_code: int
    killed_line: str
    followups: list
    final_code: int
    strays: list
    exact: Optional[bool]
    note: str = ""

    @property
    def ok(self) -> bool:
        interrupted_ok = self.killed_code in (-9, 130, 0) and (self.signal == "KILL" or self.killed_code != 1)
        return interrupted_ok and self.final_code == 0 and not self.strays and self.exact is not False


_RUNNER = None  # the workspace's runner: Forker.start when forking, else a spawned process


def _popen(args: list, cwd: Path):
    if isinstance(_RUNNER, Forker):
        return _RUNNER.start(args, cwd)
    return subprocess.Popen([sys.executable, "-m", "llmctl", *map(str, args)], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupt(args: list, cwd: Path, after: float, sig: int) -> tuple[int, str, float]:
    proc = _popen(args, cwd)
    started = time.time()
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    text = err.decode("utf-8", "replace").strip().splitlines()
    return proc.returncode, (text[-1] if text else ""), time.time() - started


def follow(spawner: Spawner, first: list, cwd: Path, log, original: list | None = None) -> tuple[int, list]:
    """Run the README's next command; when it refuses with a hint naming another command, follow that hint once."""
    steps = []
    if first[0] in ("pretrain", "finetune") and not Path(first[1]).exists() and original is not None:
        first = original  # the interrupted command removed the run it had started: run it again
    out = spawner.run(first, cwd, timeout=900)
    steps.append((" ".join(map(str, first[:1] + first[2:])), out.code, out.stderr.strip()[-200:]))
    if out.code == 4:
        line = out.stderr.strip()
        args = None
        if "without --resume" in line:
            args = [a for a in first if a != "--resume"]
        elif "--overwrite" in line and "--overwrite" not in first:
            args = [*first, "--overwrite"]
        elif "--resume" in line and "--resume" not in first:
            args = [*first, "--resume"]
        if args is not None:
            out = spawner.run(args, cwd, timeout=900)
            steps.append((" ".join(map(str, args[:1] + args[2:])), out.code, out.stderr.strip()[-200:]))
    return out.code, steps


def run_kill_trials(ws: Workspace, n: int, seed: int, log) -> tuple[list[Trial], dict]:
    spawner = ws.runner
    rng = random.Random(seed)
    kroot = ws.root / "kill"
    kroot.mkdir()
    (kroot / "corpus.txt").write_text(corpus(1500, seed=5), encoding="utf-8")  # ~90 KB: preprocess takes a moment
    trials: list[Trial] = []

    # --- the uninterrupted reference runs
    def pt_cfg(name: str) -> Path:
        cfg = tiny(name, kroot, run={"deterministic": True},
                   train={"max_steps": 30, "checkpoint_every": 5, "log_every": 5, "eval_every": 10},
                   data={"dir": str(kroot / "data")})
        cfg["data"]["train"] = [str(kroot / "corpus.txt")]
        return write_cfg(kroot / f"{name}.yaml", cfg)

    (kroot / "corpus.txt").write_text(corpus(1500 if not KINDS else 20000, seed=5), encoding="utf-8")
    ref_out = spawner.run(["preprocess", pt_cfg("ref")], kroot, timeout=900)
    assert ref_out.code == 0, ref_out.stderr
    ref_pp = ref_out.seconds
    data_sig = {p.name: p.read_bytes() for p in (kroot / "data").iterdir() if p.suffix in (".tokens", ".npy")}
    t0 = time.time()
    if not KINDS or "pretrain" in KINDS:
        ref = spawner.run(["pretrain", pt_cfg("ref")], kroot, timeout=900)
        assert ref.code == 0, ref.stderr
    ref_pt = time.time() - t0 if not KINDS or "pretrain" in KINDS else 20.0
    ref_rows = metrics_rows(kroot / "runs" / "ref")
    log(f"  reference: preprocess {ref_pp:.1f}s, pretrain {ref_pt:.1f}s ({len(ref_rows)} metric rows)")

    def record(t: Trial) -> None:
        trials.append(t)
        log(f"  {'ok  ' if t.ok else 'FAIL'} {t.name:18s} SIG{t.signal:4s} at {t.after_s:5.1f}s → exit "
            f"{t.killed_code} {t.killed_line[:70]!r}; then {[(s[0][:40], s[1]) for s in t.followups]} "
            f"strays={t.strays[:3]} exact={t.exact} {t.note}")

    plan = (["pretrain"] * 9 + ["preprocess"] * 6 + ["finetune"] * 4 + ["export"] * 4)
    plan = plan[:max(n, 0)] + ["pretrain"] * max(0, n - len(plan))
    if KINDS:
        plan = [k for k in KINDS for _ in range(n)][:n * len(KINDS)]
    for i, what in enumerate(plan):
        sig = signal.SIGKILL if i % 2 == 0 else signal.SIGINT
        sname = "KILL" if sig == signal.SIGKILL else "INT"
        if what == "pretrain":
            cfg = pt_cfg(f"v{i}")
            after = rng.uniform(0.15, 1.0) * ref_pt
            code, line, _ = interrupt(["pretrain", cfg], kroot, after, sig)
            final, steps = follow(spawner, ["pretrain", kroot / "runs" / f"v{i}", "--resume"], kroot, log,
                                  ["pretrain", cfg])
            rows = metrics_rows(kroot / "runs" / f"v{i}")
            record(Trial(f"pretrain-{i}", sname, after, code, line, steps, final,
                         stray(kroot / "runs" / f"v{i}"), rows == ref_rows if final == 0 else None))
        elif what == "preprocess":
            cfg = tiny(f"p{i}", kroot, data={"dir": str(kroot / f"pdata{i}")})
            cfg["data"]["train"] = [str(kroot / "corpus.txt")]
            cfg_path = write_cfg(kroot / f"p{i}.yaml", cfg)
            rebuild = i % 4 == 1  # every other one replaces an existing dataset (--force): the old one must survive
            if rebuild:
                spawner.run(["preprocess", cfg_path], kroot)
            after = rng.uniform(0.15, 1.0) * ref_pp
            code, line, _ = interrupt(["preprocess", cfg_path, *(["--force"] if rebuild else [])], kroot, after, sig)
            data = kroot / f"pdata{i}"
            intact = (not data.exists()) or ((data / "manifest.json").is_file() and all(
                (data / k).read_bytes() == v for k, v in data_sig.items()))
            final, steps = follow(spawner, ["preprocess", cfg_path], kroot, log)
            same = all((data / k).read_bytes() == v for k, v in data_sig.items()) if final == 0 else None
            record(Trial(f"preprocess-{i}", sname, after, code, line, steps, final,
                         [s for s in stray(kroot) if f"pdata{i}" in s], same and intact,
                         "" if intact else "dataset left half-written after the kill"))
        elif what == "finetune":
            cfg = tiny(f"f{i}", ws.root / "base", run={"dir": str(kroot / "runs")},
                       data={"dir": str(ws.cls_data), "task": "classify", "train": [str(ws.root / "base" /
                                                                                            "labels.jsonl")]},
                       tokenizer={"from": str(ws.lm_run)},
                       finetune={"task": "classify", "parent": str(ws.lm_run), "max_length": 16, "head_units": 8},
                       train={"max_steps": 20, "checkpoint_every": 5, "epochs": 50})
            cfg_path = write_cfg(kroot / f"f{i}.yaml", cfg)
            after = rng.uniform(0.15, 1.0) * ref_pt
            code, line, _ = interrupt(["finetune", cfg_path], kroot, after, sig)
            final, steps = follow(spawner, ["finetune", kroot / "runs" / f"f{i}", "--resume"], kroot, log,
                                  ["finetune", cfg_path])
            record(Trial(f"finetune-{i}", sname, after, code, line, steps, final, stray(kroot / "runs" / f"f{i}"),
                         None))
        else:  # export
            run = kroot / "runs" / f"e{i}"
            shutil.copytree(ws.lm_run, run)
            again = i % 4 == 3  # an export over an existing one (--overwrite): the old one survives a kill
            if again:
                spawner.run(["export", run, "--quiet"], kroot)
            after = rng.uniform(0.15, 1.0) * max(ref_pt, 8.0)
            code, line, _ = interrupt(["export", run, "--quiet", *(["--overwrite"] if again else [])], kroot, after,
                                      sig)
            intact = (not (run / "export").exists()) or (run / "export" / "manifest.json").is_file()
            final, steps = follow(spawner, ["export", run, "--quiet"], kroot, log)
            ok_export = (run / "export" / "manifest.json").is_file() if final == 0 else None
            record(Trial(f"export-{i}", sname, after, code, line, steps, final, stray(run),
                         (ok_export and intact) if ok_export is not None else None,
                         "" if intact else "export left half-written after the kill"))

    if KINDS and "pretrain" not in KINDS:
        return trials, {}
    # --- the explicit bit-exact check: kill -9 after a checkpoint, resume, compare with the reference
    cfg = pt_cfg("exact")
    proc = _popen(["pretrain", cfg], kroot)
    ck = kroot / "runs" / "exact" / "checkpoints"
    killed_at = None
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if len(list(ck.glob("last-*.index"))) >= 2:
            proc.kill()
            killed_at = sorted(ck.glob("last-*.index"))[-1].name
            break
        time.sleep(0.01)
    proc.wait()
    out = spawner.run(["pretrain", kroot / "runs" / "exact", "--resume"], kroot, timeout=900)
    summary = json.loads((kroot / "runs" / "exact" / "summary.json").read_text()) if out.code == 0 else {}
    exact = {"killed_at": killed_at, "resume_exit": out.code, "resumed_from_step": summary.get("resumed_from_step"),
             "rows": len(ref_rows), "bit_exact": out.code == 0 and metrics_rows(kroot / "runs" / "exact") == ref_rows,
             "final_loss": ref_rows[-1][3] if ref_rows else None}
    log(f"  bit-exact: kill -9 at {killed_at}, resume exit {out.code} from step {exact['resumed_from_step']}: "
        f"metrics.csv identical = {exact['bit_exact']}")
    return trials, exact


# ---------------------------------------------------------------- concurrency


@dataclass
class Race:
    name: str
    first_pid: int
    second_code: int
    second_line: str
    first_code: int
    lines: int
    held: bool = True  # the first still ran (held its lock) when the second started

    @property
    def ok(self) -> bool:
        return (self.held and self.second_code == 4 and self.lines == 1 and f"pid {self.first_pid}" in
                self.second_line and self.first_code == 0)


def run_races(ws: Workspace, log) -> list[Race]:
    rroot = ws.root / "races"
    rroot.mkdir()
    races = []

    def race(name: str, first: list, second: list, lock: Path) -> None:
        proc = _popen(first, rroot)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                if lock.read_text().strip() == str(proc.pid):
                    break
            except OSError:
                pass
            time.sleep(0.01)
        held = proc.poll() is None
        out = ws.runner.run(second, rroot, timeout=300)  # forked: starts at once, while the first holds the lock
        _, err = proc.communicate(timeout=900)
        lines = out.stderr.strip().splitlines()
        r = Race(name, proc.pid, out.code, lines[0] if lines else "", proc.returncode, len(lines), held)
        races.append(r)
        log(f"  {'ok  ' if r.ok else 'FAIL'} {name:28s} first pid {proc.pid} exit {proc.returncode}; second exit "
            f"{out.code}: {r.second_line[:140]}")
        if proc.returncode != 0:
            log("       first: " + err.decode("utf-8", "replace").strip()[-300:])

    run = copy_run(ws.lm_run, rroot, "resume2")
    race("pretrain --resume ×2", ["pretrain", run, "--resume", "--set", "train.max_steps=200"],
         ["pretrain", run, "--resume", "--set", "train.max_steps=8"], run / ".llmctl.lock")
    run = rroot / "runs" / "fresh"
    cfg = lm_case_cfg(ws, rroot, "fresh", train={"max_steps": 200})
    race("pretrain vs --overwrite", ["pretrain", cfg], ["pretrain", cfg, "--overwrite"], run / ".llmctl.lock")
    big = rawb(rroot, corpus(60000, seed=9).encode(), "big.txt")  # ~3.6 MB: preprocess holds its lock a while
    cfg = pp_cfg(rroot, [big])
    race("preprocess ×2 one data.dir", ["preprocess", cfg], ["preprocess", cfg, "--force"],
         rroot / ".out.llmctl.lock")
    run = copy_run(ws.lm_run, rroot, "exp")
    race("export ×2 one run", ["export", run, "--quiet"], ["export", run, "--quiet", "--overwrite"],
         run / ".export.llmctl.lock")
    run = copy_run(ws.cls_run, rroot, "cls2")
    race("finetune --resume ×2", ["finetune", run, "--resume", "--set", "train.max_steps=300", "--set",
                                  "train.epochs=100"],
         ["finetune", run, "--resume", "--set", "train.max_steps=300", "--set", "train.epochs=100"],
         run / ".llmctl.lock")
    return races


# ---------------------------------------------------------------- report


def summarize(results: list[Result], trials: list[Trial], exact: dict, races: list[Race], seconds: float,
              mode: str) -> str:
    buf = io.StringIO()
    w = buf.write
    w(f"llmctl bad-input sweep ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, mode={mode}, "
      f"{seconds / 60:.1f} min)\n\n")
    if results:
        w(f"{'case':38s} {'cmd':10s} {'exit':>4s} {'want':>7s} {'lines':>5s} ok  first stderr line\n")
        for r in results:
            w(f"{r.name:38s} {r.command:10s} {r.code:>4d} {'/'.join(map(str, r.expected)):>7s} {r.lines:>5d} "
              f"{'yes' if r.ok else 'NO '} {r.first_line[:110]}\n")
        hist = collections.Counter(r.code for r in results)
        per_cmd = collections.Counter(r.command for r in results)
        w("\nBAD INPUTS\n")
        w(f"  cases: {len(results)} ({', '.join(f'{k} {v}' for k, v in sorted(per_cmd.items()))})\n")
        w(f"  exit-code histogram: {dict(sorted(hist.items()))}\n")
        w(f"  exit 1 results: {hist.get(1, 0)}\n")
        w(f"  exit code not the README's for the case: {sum(r.code not in r.expected for r in results)}\n")
        w(f"  tracebacks: {sum(r.traceback for r in results)}\n")
        w(f"  multi-line (or empty) stderr: {sum(r.lines != 1 for r in results)}\n")
        w(f"  output on stdout: {sum(not r.stdout_empty for r in results)}\n")
        w(f"  message without the expected words: {sum(not r.needle_ok for r in results)}\n")
        w(f"  files left behind (added): {sum(bool(r.diff.added) for r in results)} cases, of them .tmp-*/lock "
          f"leftovers: {sum(bool(r.diff.leftovers) for r in results)}\n")
        w(f"  silent overwrites (existing artifact files changed or removed): "
          f"{sum(bool(r.diff.overwrites) for r in results)}\n")
        meta = [r.name for r in results if r.diff.metadata]
        w(f"  a run's config.yaml rewritten by a refused command (budgets of a resume recorded before the checkpoint "
          f"was read; not counted above): {len(meta)}{' (' + ', '.join(meta) + ')' if meta else ''}\n")
        w(f"  timeouts: {sum(r.timed_out for r in results)}\n")
        w(f"  one-line errors with the README's code: {sum(r.ok for r in results)}/{len(results)} "
          f"({100 * sum(r.ok for r in results) / len(results):.0f} %)\n")
        bad = [r for r in results if not r.ok]
        if bad:
            w("  failing: " + ", ".join(r.name for r in bad) + "\n")
    if trials:
        w("\nKILL TRIALS (kill -9 / SIGINT at a random time, then the README's next command)\n")
        for t in trials:
            w(f"  {t.name:16s} SIG{t.signal:4s} at {t.after_s:5.1f}s exit {t.killed_code:>4} then "
              f"{' → '.join(f'{s[0][:28]}: {s[1]}' for s in t.followups)}; strays {len(t.strays)}; "
              f"same result {t.exact} {'ok' if t.ok else 'FAIL'} {t.note}\n")
        w(f"  trials: {len(trials)} ({collections.Counter(t.signal for t in trials)}), next command succeeded: "
          f"{sum(t.final_code == 0 for t in trials)}, leftovers after it: {sum(bool(t.strays) for t in trials)}, "
          f"signal landed on a running command: {sum(t.killed_code != 0 for t in trials)}, "
          f"interrupted pretrain equal to the uninterrupted run: "
          f"{sum(bool(t.exact) for t in trials if t.name.startswith('pretrain'))}/"
          f"{sum(t.name.startswith('pretrain') for t in trials)}, failing: {sum(not t.ok for t in trials)}\n")
    if exact:
        w(f"  kill -9 + --resume bit-exact: {'yes' if exact['bit_exact'] else 'NO'} ({exact})\n")
    if races:
        w("\nCONCURRENCY (a second writer while the first holds the lock)\n")
        for r in races:
            w(f"  {r.name:28s} second exit {r.second_code}, {r.lines} line: {r.second_line[:120]} — first exit "
              f"{r.first_code} {'ok' if r.ok else 'FAIL'}\n")
        w(f"  cases: {len(races)}, refused in one line naming the holder's pid: {sum(r.ok for r in races)}\n")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["all", "bad", "kill", "lock", "trials"], default="all")
    parser.add_argument("--mode", choices=["fork", "spawn"], default="fork")
    parser.add_argument("--cases", default="", help="comma-separated substrings of case names to run")
    parser.add_argument("--trials", type=int, default=23)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    parser.add_argument("--kinds", default="", help="kill trials of these commands only, --trials each "
                                                    "(e.g. preprocess,export)")
    args = parser.parse_args(argv)
    KINDS[:] = [k for k in args.kinds.split(",") if k]

    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="llmctl-sweep-"))
    os.environ["LLMCTL_CACHE"] = str(tmp / "cache")
    global _RUNNER
    runner = _RUNNER = Forker() if args.mode == "fork" else Spawner()

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        log(f"workspace {tmp} (mode {args.mode})")
        ws = build_workspace(tmp / "ws", runner)
        log(f"  built: LM run, classifier run, exported run in {time.time() - started:.0f}s")
        results, trials, exact, races = [], [], {}, []
        if args.only in ("all", "bad"):
            cases = [c for c in CASES if not args.cases or any(s in c.name for s in args.cases.split(","))]
            results = run_bad_inputs(ws, cases, log)
        if args.only in ("all", "lock", "trials"):
            races = run_races(ws, log)
        if args.only in ("all", "kill", "trials"):
            trials, exact = run_kill_trials(ws, args.trials, args.seed, log)
        text = summarize(results, trials, exact, races, time.time() - started, args.mode)
        print("\n" + text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text, encoding="utf-8")
        failing = sum(not r.ok for r in results) + sum(not t.ok for t in trials) + sum(not r.ok for r in races) + (
            0 if not exact or exact["bit_exact"] else 1)
        return 0 if failing == 0 else 1
    finally:
        _cleanup()
        if not args.keep:
            subprocess.run(["chattr", "-R", "-i", str(tmp)], check=False, capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
