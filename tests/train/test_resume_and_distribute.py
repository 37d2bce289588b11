"""Heavier end-to-end checks in subprocesses: a real SIGKILL + --resume is bit-exact; mirrored over 2 logical CPUs and
multi-worker over 2 local processes give the single-device losses."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from lm_fixtures import corpus, make_char_dataset, tiny_config

from llmctl.runs import RunDir
from llmctl.train.checkpoints import read_pointer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_char_dataset(tmp_path_factory.mktemp("data") / "chars", corpus(24000))


def _env(tmp_path, **extra):
    return {**os.environ, "LLMCTL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), **extra}


def _rows(run_root: Path, *columns: str) -> list[tuple]:
    with open(RunDir(run_root).metrics, encoding="utf-8") as handle:
        return [tuple(r[c] for c in columns) for r in csv.DictReader(handle)]


def _weights(run_root: Path, which: str = "last") -> dict[str, np.ndarray]:
    code = textwrap.dedent(f"""
        import json, numpy as np, sys
        from llmctl.runs import RunDir
        from llmctl.train.checkpoints import restore_model, model_variable_map
        model, _ = restore_model(RunDir({str(run_root)!r}), {which!r})
        np.savez(sys.argv[1], **{{k.replace('/', '.'): np.asarray(v) for k, v in model_variable_map(model).items()}})
    """)
    out = run_root.parent / f"{run_root.name}-{which}.npz"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=ROOT, env={**os.environ,
                                                                                      "PYTHONPATH": str(ROOT)})
    return dict(np.load(out))


def _reference_then_victim(tmp_path, dataset, sections):
    """Train the uninterrupted reference run `ref` to the end; return the config of the run to interrupt (`victim`,
    same settings) and the environment both use."""
    ref = tiny_config(tmp_path, dataset, name="ref", **sections)
    victim = tiny_config(tmp_path, dataset, name="victim", **sections)
    env = _env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "llmctl", "pretrain", str(ref)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return victim, env


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, dataset):
    sections = dict(run={"deterministic": True},
                    train={"epochs": 4, "checkpoint_every": 20, "log_every": 5, "jit_compile": "auto"})
    victim, env = _reference_then_victim(tmp_path, dataset, sections)

    checkpoints = tmp_path / "runs" / "victim" / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "pretrain", str(victim)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_after = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        try:
            lasts = read_pointer(checkpoints).get("last") or []
        except Exception:  # noqa: BLE001 - the pointer may be mid-replace; just poll again
            lasts = []
        if lasts and lasts[-1]["step"] >= 240:  # in the second epoch (169 steps per epoch)
            os.kill(proc.pid, signal.SIGKILL)
            killed_after = lasts[-1]["step"]
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert killed_after is not None and proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    total = json.loads((tmp_path / "runs" / "ref" / "summary.json").read_text())["steps"]
    assert killed_after < total

    resumed = subprocess.run([sys.executable, "-m", "llmctl", "pretrain", str(victim), "--resume"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((tmp_path / "runs" / "victim" / "summary.json").read_text())
    assert summary["resumed_from_step"] >= killed_after and summary["steps"] == total

    columns = ("step", "split", "tokens", "loss", "lr", "grad_norm")
    assert _rows(tmp_path / "runs" / "victim", *columns) == _rows(tmp_path / "runs" / "ref", *columns)
    a, b = _weights(tmp_path / "runs" / "ref"), _weights(tmp_path / "runs" / "victim")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # bit-exact, dropout RNG state included


def test_ctrl_c_saves_at_a_step_boundary_and_resume_is_exact(tmp_path, dataset):
    sections = dict(run={"deterministic": True}, train={"epochs": 3, "checkpoint_every": 1000, "log_every": 5})
    victim, env = _reference_then_victim(tmp_path, dataset, sections)
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "pretrain", str(victim)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "runs" / "victim" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:  # wait for the first epoch's checkpoint
        try:
            if read_pointer(checkpoints).get("last"):
                break
        except Exception:  # noqa: BLE001 - mid-replace: poll again
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted:")
    saved = read_pointer(checkpoints)["last"][-1]["step"]
    assert saved >= 169  # the epoch-end checkpoint, or a later one written at the step the interrupt arrived
    resumed = subprocess.run([sys.executable, "-m", "llmctl", "pretrain", str(victim), "--resume"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    columns = ("step", "split", "tokens", "loss", "lr", "grad_norm")
    assert _rows(tmp_path / "runs" / "victim", *columns) == _rows(tmp_path / "runs" / "ref", *columns)
    a, b = _weights(tmp_path / "runs" / "ref"), _weights(tmp_path / "runs" / "victim")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


MIRRORED = """
import csv, json, sys
from llmctl import config
from llmctl.train import pretrain
losses = {}
for strategy in ("none", "mirrored"):
    exp = config.load(sys.argv[1], [f"run.name={strategy}", f"distribute.strategy={strategy}",
                                    "distribute.logical_cpus=2"])
    result = pretrain.run(exp)
    with open(result.values["run_dir"] + "/metrics.csv") as handle:
        losses[strategy] = [(r["step"], r["split"], float(r["loss"])) for r in csv.DictReader(handle)]
    losses[strategy + "_replicas"] = result.values["devices"]["replicas"]
print(json.dumps(losses))
"""


def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path, dataset):
    path = tiny_config(tmp_path, dataset, model={"dropout": 0.0, "output_dropout": 0.0},
                       train={"max_steps": 40, "log_every": 5, "jit_compile": False})
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(path)], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["none_replicas"] == 1 and out["mirrored_replicas"] == 2
    assert [r[:2] for r in out["none"]] == [r[:2] for r in out["mirrored"]]
    for (_, _, a), (_, _, b) in zip(out["none"], out["mirrored"], strict=True):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (a, b)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_with_two_local_processes(tmp_path, dataset):
    sections = dict(model={"dropout": 0.0, "output_dropout": 0.0},
                    train={"max_steps": 30, "log_every": 5, "jit_compile": False, "checkpoint_every": 10})
    single = tiny_config(tmp_path, dataset, name="single", **sections)
    multi = tiny_config(tmp_path, dataset, name="multi", distribute={"strategy": "multi_worker"}, **sections)
    done = subprocess.run([sys.executable, "-m", "llmctl", "pretrain", str(single)], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen([sys.executable, "-m", "llmctl", "pretrain", str(multi)], cwd=ROOT,
                                      env=_env(tmp_path, TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=900))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "runs" / "multi" / "summary.json").read_text())
    assert summary["devices"]["workers"] == 2 and summary["devices"]["replicas"] == 2 and summary["steps"] == 30
    a = _rows(tmp_path / "runs" / "single", "step", "split", "loss")
    b = _rows(tmp_path / "runs" / "multi", "step", "split", "loss")
    assert [r[:2] for r in a] == [r[:2] for r in b]
    for (_, _, x), (_, _, y) in zip(a, b, strict=True):
        assert abs(float(x) - float(y)) <= 1e-5 * max(1.0, abs(float(x))), (x, y)
