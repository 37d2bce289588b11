"""`llmctl serve` as a process and its classifier endpoint: start-up errors are one line with the README's exit
codes, SIGTERM finishes in-flight requests and exits 0, `--help` loads neither TensorFlow nor the web stack,
/v1/classify gives the numbers of `llmctl predict`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

from llmctl import predict
from llmctl.progress import Reporter
from tests.serve.servers import ROOT, load, request, start_process, wait_ready


def _env():
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_help_imports_neither_tensorflow_nor_the_web_stack():
    code = ("import sys\nfrom llmctl.cli import app\n"
            "for argv in (['--help'], ['serve', '--help']):\n"
            "    try:\n        app(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('tensorflow', 'fastapi', 'uvicorn', 'prometheus_client') if m in sys.modules]\n"
            "print(heavy)\nsys.exit(1 if heavy else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--host" in proc.stdout and "127.0.0.1" in proc.stdout


def test_missing_path_exit_4_untrained_run_exit_4_bad_setting_exit_2(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"run: {{name: never_trained, dir: {tmp_path}}}\n", encoding="utf-8")
    for args, code, words in (([str(tmp_path / "nothing")], 4, "does not exist"), ([str(cfg)], 4, "never_trained"),
                              ([str(cfg), "--set", "serve.max_batch=0"], 2, "serve.max_batch")):
        proc = subprocess.run([sys.executable, "-m", "llmctl", "serve", *args, "--port", "0"], env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.count("\n") == 1 and words in proc.stderr and "Traceback" not in proc.stderr


def test_port_in_use_is_a_resource_error_and_sigterm_is_graceful(serve_lm_run):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "llmctl", "serve", str(serve_lm_run.root), "--port", str(port)],
                              env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("resource error: cannot listen on 127.0.0.1:")

    server, host, port = start_process(serve_lm_run.root, "--set", "serve.chunk=1", "--set", "serve.xla=false",
                                       "--set", "generate.min_new_tokens=300")
    try:
        assert host == "127.0.0.1"   # loopback unless told otherwise
        wait_ready(host, port, proc=server)
        answer: dict = {}

        def long_request():
            answer["reply"] = request(host, port, "POST", "/v1/completions",
                                      {"prompt": "The", "max_tokens": 300, "temperature": 0})

        thread = threading.Thread(target=long_request)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:   # wait until the request is being decoded
            if request(host, port, "GET", "/health")[1].get("running"):
                break
            time.sleep(0.02)
        server.send_signal(signal.SIGTERM)
        thread.join(120)
        code = server.wait(120)
        stderr = server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
    assert code == 0, stderr
    status, body, _ = answer["reply"]
    assert status == 200 and body["usage"]["completion_tokens"] == 300   # finished, not cut off
    assert "stopped" in stderr and "Traceback" not in stderr


def test_classify_equals_predict(classifier_server, serve_classifier_run):
    srv = classifier_server
    texts = ["a wonderful and moving story", "bad acting", "the plot is dull but the music is great"]
    status, answer, _ = request(srv.host, srv.port, "POST", "/v1/classify", {"input": texts})
    assert status == 200, answer
    want = predict.run(load(serve_classifier_run), reporter=Reporter("none"), texts=texts).values["predictions"]
    assert [{k: v for k, v in d.items() if k != "index"} for d in answer["data"]] == want
    assert [d["index"] for d in answer["data"]] == [0, 1, 2]
    status, one, _ = request(srv.host, srv.port, "POST", "/v1/classify", {"input": texts[1]})
    assert status == 200 and one["data"][0]["probabilities"] == want[1]["probabilities"]
    status, models, _ = request(srv.host, srv.port, "GET", "/v1/models")
    assert models["data"][0]["kind"] == "classify" and models["data"][0]["labels"] == ["negative", "positive"]
    for body, param in (({"input": 3}, "input"), ({"text": "x"}, "text"), ({}, "input")):
        status, err, _ = request(srv.host, srv.port, "POST", "/v1/classify", body)
        assert status == 400 and err["error"]["param"] == param
    status, err, _ = request(srv.host, srv.port, "POST", "/v1/completions", {"prompt": "x"})
    assert status == 400 and err["error"]["code"] == "wrong_endpoint"
    assert json.loads(json.dumps(answer))   # plain JSON
