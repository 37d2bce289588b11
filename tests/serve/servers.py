"""Real servers for the serve tests: `llmctl.serve.build` on a tiny trained run, answered by uvicorn in a thread on
a free loopback port (`ThreadServer`), or `llmctl serve` in a subprocess (`start_process`); plain-HTTP helpers."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from llmctl import config as config_mod

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 900.0   # generous: XLA compiles at start-up, and this machine may be busy


def load(run, *overrides: str):
    return config_mod.load(run.root, list(overrides))


class ThreadServer:
    """`build(exp)` served by uvicorn in a daemon thread on 127.0.0.1:<free port>; ready when /health says so."""

    def __init__(self, exp):
        import uvicorn

        from llmctl.serve import _bind, build, url_of

        self.service, app, self.metrics = build(exp)
        sock = _bind("127.0.0.1", 0)
        self.url = url_of(sock)
        self.host, self.port = sock.getsockname()[:2]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        wait_ready(self.host, self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def wait_ready(host: str, port: int, timeout: float = READY_TIMEOUT, proc=None) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before it was ready")
        try:
            status, body, _ = request(host, port, "GET", "/health")
            last = (status, body)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server not ready after {timeout} s (last answer {last})")


def request(host, port, method, path, body=None, headers=None, timeout=60.0):
    """(status, parsed JSON or text, headers) of one plain HTTP request; `body`: dict (sent as JSON) or bytes."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        text = raw.decode("utf-8")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = text
        return resp.status, parsed, dict(resp.getheaders())
    finally:
        conn.close()


def metric(host, port, name: str, labels: str = "") -> float:
    """The value of one Prometheus sample (0 when absent)."""
    _, text, _ = request(host, port, "GET", "/metrics")
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", re.M)
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


def start_process(run_root: Path, *args: str):
    """`llmctl serve RUN --port 0 ...` in a subprocess: (process, host, port) once it printed its address."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "serve", str(run_root), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines = []
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"listening on http://([0-9.]+):(\d+)", line)
        if match:
            return proc, match.group(1), int(match.group(2))
    proc.kill()
    raise AssertionError("server did not start: " + "".join(lines))
