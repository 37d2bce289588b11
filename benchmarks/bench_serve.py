"""`llmctl serve` under load: 1, 8 and 32 concurrent clients against the demo model, a bounded number of requests.

    python benchmarks/bench_serve.py                 # ~1-2 minutes on 2 CPU cores
    python benchmarks/bench_serve.py --quick         # a few requests per level: checks that it works
    python benchmarks/bench_serve.py --run runs/demo --json out.json

Server: `llmctl serve RUN --port 0` in a subprocess (the real command, default settings: XLA decode loop, dynamic
batching with max_batch 32), on the demo model — `runs/demo` when `make demo` trained it, otherwise a run of the
same shape made here (the demo's BPE-2000 tokenizer preprocessed from the embedded corpus, embedding 128, 1×512
LSTM, initial weights: speed does not depend on the values, and EOS is then rare, so most requests produce all
their tokens). Reported: start (process spawn) to `/health` ready, idle RSS after warm-up.

Clients: threads with a keep-alive HTTP connection each, every client sending its requests one after another
(`POST /v1/completions`, `max_tokens` 32, temperature 0.8, top-p 0.95 — the demo's sampling settings — and a
seed per request). Per level: requests, errors (any non-200 or transport failure), completion tokens, aggregate
generated tokens/s (all clients, wall time of the level), p50 / p99 request latency, and the server's mean rows
per decode-loop call (from /metrics). The levels run one after another against the same server; the ratio
`serve_32_vs_1` compares aggregate tokens/s at 32 clients with one client's, measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = ["The \"while\" statement", "An expression", "The import statement", "A class definition",
           "Exceptions are", "The for loop", "Names refer to objects", "Identifiers"]
LEVELS = (1, 8, 32)


def demo_shaped_run(root: Path) -> Path:
    """A run directory shaped like the demo's, holding its initial weights (see the module docstring)."""
    import keras

    from llmctl import config as config_mod
    from llmctl.data.dataset import open_dataset
    from llmctl.data.preprocess import run as preprocess
    from llmctl.demo_data import write_demo_data
    from llmctl.models.lstm_lm import build_language_model
    from llmctl.progress import Reporter
    from llmctl.runs import RunDir
    from llmctl.train.checkpoints import CheckpointStore

    write_demo_data(root / "demo")
    exp = config_mod.load(ROOT / "configs" / "demo.yaml", [
        f"run.dir={root / 'runs'}", f"data.dir={root / 'processed'}",
        f"data.train=[{json.dumps(str(root / 'demo' / 'pyref.txt'))}]", "run.progress=none"])
    preprocess(exp, reporter=Reporter("none"))
    ds = open_dataset(exp.data.dir)
    run = RunDir.of(exp)
    run.prepare(exp, kind="lm", resume=False, overwrite=True)
    import shutil

    if run.tokenizer.exists():
        shutil.rmtree(run.tokenizer)
    shutil.copytree(ds.layout.tokenizer, run.tokenizer)
    run.write_info(kind="lm", tokenizer_fingerprint=ds.fingerprint, vocab_size=ds.vocab_size, dataset=str(ds.root))
    keras.utils.set_random_seed(exp.run.seed)
    model = build_language_model(exp.model, ds.vocab_size)
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)
    CheckpointStore(run.checkpoints, model=model, optimizer=optimizer, carry_shapes=[], keep_last=1).save(
        "best", step=0, progress={"epoch": 0, "step": 0}, states=None, metrics={"valid_loss": None})
    return run.root


def start_server(run: Path, extra: list[str]):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "serve", str(run), "--port", "0", *extra],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    host = port = None
    for line in proc.stderr:
        match = re.search(r"listening on http://([0-9.]+):(\d+)", line)
        if match:
            host, port = match.group(1), int(match.group(2))
            break
    if host is None:
        raise SystemExit(f"server did not start (exit {proc.wait()})")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()   # keep draining stderr
    while True:
        try:
            status, _ = call(http.client.HTTPConnection(host, port, timeout=5), "GET", "/health")
            if status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} during warm-up")
        time.sleep(0.1)
    return proc, host, port, time.perf_counter() - t0


def call(conn, method, path, body=None):
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, data


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch_rows(host, port) -> tuple[float, float]:
    _, text = call(http.client.HTTPConnection(host, port, timeout=30), "GET", "/metrics")
    text = text.decode()
    total = float(re.search(r"^llmctl_batch_rows_sum ([0-9.e+]+)$", text, re.M).group(1))
    count = float(re.search(r"^llmctl_batch_rows_count ([0-9.e+]+)$", text, re.M).group(1))
    return total, count


def level(host, port, clients: int, per_client: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    tokens = [0]
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=300)
        for j in range(per_client):
            body = {"prompt": PROMPTS[(k + j) % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0.8,
                    "top_p": 0.95, "seed": k * 100_003 + j}
            t0 = time.perf_counter()
            try:
                status, data = call(conn, "POST", "/v1/completions", body)
                took = time.perf_counter() - t0
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
                used = json.loads(data)["usage"]["completion_tokens"]
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the level goes on
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=300)
                continue
            with lock:
                latencies.append(took)
                tokens[0] += used
        conn.close()

    rows_before = batch_rows(host, port)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rows_after = batch_rows(host, port)
    lat = sorted(latencies)
    calls = rows_after[1] - rows_before[1]
    return {"clients": clients, "requests": clients * per_client, "errors": len(errors),
            "error_examples": sorted(set(errors))[:3], "completion_tokens": tokens[0], "seconds": round(wall, 3),
            "tokens_per_s": round(tokens[0] / wall, 1) if wall else None,
            "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
            "mean_rows_per_loop_call": round((rows_after[0] - rows_before[0]) / calls, 2) if calls else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run directory (default: runs/demo if trained, "
                                                                 "else a demo-shaped run made here)")
    parser.add_argument("--requests", type=int, nargs=3, default=[48, 320, 2048], metavar=("N1", "N8", "N32"),
                        help="requests in total at 1, 8 and 32 clients")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="8 / 32 / 128 requests: checks that it works")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for the server")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    totals = [8, 32, 128] if args.quick else args.requests
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        demo = ROOT / "runs" / "demo"
        if run is None:
            run = demo if (demo / "run.json").is_file() else demo_shaped_run(Path(tmp))
        extra = [x for s in args.sets for x in ("--set", s)]
        proc, host, port, ready_s = start_server(run, extra)
        try:
            idle = rss_mb(proc.pid)
            results = {}
            for clients, total in zip(LEVELS, totals, strict=True):
                results[clients] = level(host, port, clients, max(1, total // clients), args.max_tokens)
                r = results[clients]
                print(f"{clients:>3} clients: {r['requests']} requests, {r['errors']} errors, "
                      f"{r['tokens_per_s']} tok/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                      f"{r['mean_rows_per_loop_call']} rows/loop call", flush=True)
            busy = rss_mb(proc.pid)
        finally:
            proc.terminate()
            code = proc.wait(120)
    one = results[1]["tokens_per_s"] or float("nan")
    out = {"serve_tokens_per_s_1": results[1]["tokens_per_s"], "serve_tokens_per_s_8": results[8]["tokens_per_s"],
           "serve_tokens_per_s_32": results[32]["tokens_per_s"],
           "serve_32_vs_1": round(results[32]["tokens_per_s"] / one, 2),
           "serve_8_vs_1": round(results[8]["tokens_per_s"] / one, 2),
           "serve_p50_ms_1": results[1]["p50_ms"], "serve_p99_ms_1": results[1]["p99_ms"],
           "serve_p50_ms_32": results[32]["p50_ms"], "serve_p99_ms_32": results[32]["p99_ms"],
           "serve_requests_32": results[32]["requests"], "serve_errors": sum(r["errors"] for r in results.values()),
           "serve_start_to_ready_s": round(ready_s, 2), "serve_idle_rss_mb": round(idle, 1),
           "serve_rss_after_load_mb": round(busy, 1), "serve_sigterm_exit_code": code,
           "details": {"levels": results, "run": str(run), "max_tokens": args.max_tokens,
                       "load_average": os.getloadavg()}}
    print(json.dumps({k: v for k, v in out.items() if k != "details"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
