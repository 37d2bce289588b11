"""Advisory locks (issue 16, item 6): one writer per run / dataset / export directory, the second one refused with
the holder's pid, a lock left by a killed process taken over safely, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl import locks
from llmctl.errors import ArtifactError
from tests.cli_runs import cli, corpus, tiny_config, write_config

ROOT = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time\nfrom llmctl import locks\nwith locks.session():\n"
        "    getattr(locks, sys.argv[1])(sys.argv[2])\n    print('locked', flush=True)\n"
        "    time.sleep(float(sys.argv[3]))\n")


def _child(how: str, path: Path, seconds: float = 0) -> subprocess.CompletedProcess:
    """Another process that takes the lock, holds it `seconds` and releases it."""
    return subprocess.run([sys.executable, "-c", HOLD, how, str(path), str(seconds)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


class Holder:
    """Another process holding a lock (`acquire_run` or `acquire_replaced` on `path`)."""

    def __init__(self, how: str, path: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, how, str(path), "120"], stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout.readline().strip() == "locked"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def holder():
    made: list[Holder] = []

    def start(how: str, path: Path) -> Holder:
        made.append(Holder(how, path))
        return made[-1]

    yield start
    for h in made:
        h.kill()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    run = tmp_path / "run"
    h = holder("acquire_run", run)
    with pytest.raises(ArtifactError, match=rf"run directory .* is in use by another llmctl process \(pid "
                                            rf"{h.proc.pid}\)"):
        locks.acquire_run(run)


def test_a_stale_lock_of_a_killed_process_is_taken_over(tmp_path, holder):
    run = tmp_path / "run"
    h = holder("acquire_run", run)
    h.kill()  # SIGKILL: no cleanup ran, the lock file with its pid is still there ...
    lock_file = run / locks.LOCK_FILE
    assert lock_file.read_text().strip() == str(h.proc.pid)
    with locks.session():  # ... but the kernel dropped the flock: the next process takes it over
        locks.acquire_run(run)
        assert lock_file.read_text().strip() == str(os.getpid())
        proc = _child("acquire_run", run)  # and holds it against other processes
        assert proc.returncode != 0 and f"(pid {os.getpid()})" in proc.stderr
    assert not lock_file.exists()  # released: the file is removed


def test_lock_is_exclusive_between_processes_and_free_after_release(tmp_path):
    target = tmp_path / "ds"
    with locks.session():
        locks.acquire_replaced(target, "dataset directory")
        proc = _child("acquire_replaced", target)
        assert proc.returncode != 0 and f"dataset directory {target} is in use" not in proc.stderr  # (no `what`)
        assert f"(pid {os.getpid()})" in proc.stderr
    proc = _child("acquire_replaced", target)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.iterdir())  # no lock file, no dataset: nothing left behind


def _preprocess_config(tmp_path: Path) -> Path:
    (tmp_path / "corpus.txt").write_text(corpus(60), encoding="utf-8")
    return write_config(tmp_path / "pp.yaml", tiny_config(tmp_path, name="pp"))


def test_preprocess_into_a_dataset_being_written_is_refused(tmp_path, holder):
    config = _preprocess_config(tmp_path)
    h = holder("acquire_replaced", tmp_path / "data" / "tiny")
    result = cli(["preprocess", config])
    assert result.exit_code == 4 and f"dataset directory {tmp_path / 'data' / 'tiny'} is in use" in result.stderr
    assert f"(pid {h.proc.pid})" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "data" / "tiny").exists()
    h.kill()
    result = cli(["preprocess", config])  # the holder died: its lock is taken over
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "data").glob(f".*{locks.LOCK_FILE}"))


def test_export_into_a_folder_being_exported_is_refused(tmp_path, holder):
    from tests.export.tiny_runs import make_lm_run

    run = make_lm_run(tmp_path / "runs", steps=2)
    h = holder("acquire_replaced", run.export)
    result = cli(["export", run.root])
    assert result.exit_code == 4 and f"export directory {run.export} is in use" in result.stderr
    assert f"(pid {h.proc.pid})" in result.stderr and not run.export.exists()


def test_locks_are_reentrant_within_a_process_and_released_by_the_session(tmp_path):
    with locks.session():
        first = locks.acquire_run(tmp_path / "r")
        assert locks.acquire_run(tmp_path / "r") == first
    assert not first.exists()
