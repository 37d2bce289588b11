"""`llmctl serve` under load: 1, 8 and 32 concurrent clients against the demo model, a bounded number of requests.

    python benchmarks/bench_serve.py                 # both backends, 48 / 320 / 2,048 requests: a few minutes
    python benchmarks/bench_serve.py --quick         # 8 / 32 / 128 requests: checks that it works
    python benchmarks/bench_serve.py --run runs/demo --backends graph --json out.json
    python benchmarks/bench_serve.py --latest        # ... and merge the numbers into benchmarks/results/latest.json
    python benchmarks/run_all.py serve               # the same, as `make bench` runs it (also docs/benchmarks.md)

Server: `llmctl serve RUN --port 0` in a subprocess (the real command, default settings: XLA decode loop, dynamic
batching with max_batch 32), on the demo model — `runs/demo` when `make demo` trained it, otherwise a run of the
same shape made here (the demo's BPE-2000 tokenizer preprocessed from the embedded corpus, embedding 128, 1×512
LSTM, initial weights: speed does not depend on the values, and EOS is then rare, so most requests produce all
their tokens). One server per backend (`serve.backend`: `graph`, then `tflite` — the exported step model with
int8 weights); for each: start (process spawn) to `/health` ready, idle RSS after warm-up, RSS after the load.

Clients: threads with a keep-alive HTTP connection each, every client sending its requests one after another
(`POST /v1/completions`, `max_tokens` 32, temperature 0.8, top-p 0.95 — the demo's sampling settings — and a
seed per request). Per level: requests, errors (any non-200 or transport failure), completion tokens, aggregate
generated tokens/s (all clients, wall time of the level), p50 / p99 request latency (nearest rank), and the
server's mean rows per decode-loop call (from /metrics). The levels run one after another against the same server;
the ratio `serve_32_vs_1` compares aggregate tokens/s at 32 clients with one client's, measured in the same run.
Targets (issue #18): `serve_32_vs_1` >= 4, `serve_errors` 0 over >= 2,000 requests at 32 clients.

TFLite agreement (`serve_tflite_top1_agreement`, `serve_tflite_sampled_agreement`): the served run's float32 model
and its int8 step model read the same text (the last 20,000 characters of the demo corpus, teacher-forced); the share
of positions where their argmax agrees, and where the token drawn with the same random number (temperature 0.8,
top-p 0.95) agrees.
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


def tflite_agreement(run: Path) -> dict:
    """Teacher-forced agreement of the run's int8 step model with its float32 model (see the module docstring)."""
    from llmctl import config as config_mod
    from llmctl.demo_data import write_demo_data
    from llmctl.inference_run import load_language_model, open_run
    from llmctl.serve.tflite_backend import agreement, tflite_decoder

    exp = config_mod.load(run, [])
    opened = open_run(exp)
    model, checkpoint = load_language_model(opened, exp.generate.checkpoint)
    decoder, source = tflite_decoder(exp, opened, model, checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(write_demo_data(Path(tmp))["corpus"]).read_text(encoding="utf-8")[-20_000:]
    ids = opened.tokenizer.encode(text)
    t0 = time.perf_counter()
    numbers = agreement(model, decoder, ids)
    numbers["int8_step_ms"] = round(1000 * (time.perf_counter() - t0) / len(ids), 4)   # includes the float32 pass
    return {**numbers, **source}


def run_backend(run: Path, backend: str, totals, max_tokens: int, sets: list[str]) -> dict:
    extra = ["--set", f"serve.backend={backend}", *[x for s in sets for x in ("--set", s)]]
    proc, host, port, ready_s = start_server(run, extra)
    try:
        idle = rss_mb(proc.pid)
        results = {}
        for clients, total in zip(LEVELS, totals, strict=True):
            results[clients] = level(host, port, clients, max(1, total // clients), max_tokens)
            r = results[clients]
            print(f"[{backend}] {clients:>3} clients: {r['requests']} requests, {r['errors']} errors, "
                  f"{r['tokens_per_s']} tok/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"{r['mean_rows_per_loop_call']} rows/loop call", flush=True)
            for example in r["error_examples"]:
                print(f"    error: {example}", flush=True)
        busy = rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed after 120 s"
    one = results[1]["tokens_per_s"]

    def ratio(n):
        return round(results[n]["tokens_per_s"] / one, 2) if one and results[n]["tokens_per_s"] else None

    return {"tokens_per_s_1": one, "tokens_per_s_8": results[8]["tokens_per_s"],
            "tokens_per_s_32": results[32]["tokens_per_s"], "32_vs_1": ratio(32), "8_vs_1": ratio(8),
            "p50_ms_1": results[1]["p50_ms"], "p99_ms_1": results[1]["p99_ms"],
            "p50_ms_8": results[8]["p50_ms"], "p99_ms_8": results[8]["p99_ms"],
            "p50_ms_32": results[32]["p50_ms"], "p99_ms_32": results[32]["p99_ms"],
            "requests_32": results[32]["requests"], "requests": sum(r["requests"] for r in results.values()),
            "errors": sum(r["errors"] for r in results.values()), "start_to_ready_s": round(ready_s, 2),
            "idle_rss_mb": round(idle, 1), "rss_after_load_mb": round(busy, 1), "sigterm_exit_code": code,
            "levels": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run directory (default: runs/demo if trained, "
                                                                 "else a demo-shaped run made here)")
    parser.add_argument("--requests", type=int, nargs=3, default=[48, 320, 2048], metavar=("N1", "N8", "N32"),
                        help="requests in total at 1, 8 and 32 clients")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--backends", nargs="+", choices=("graph", "tflite"), default=["graph", "tflite"],
                        help="serve.backend values to measure, one server each (default: both)")
    parser.add_argument("--quick", action="store_true", help="8 / 32 / 128 requests: checks that it works")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for the server")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    parser.add_argument("--latest", action="store_true",
                        help="merge the numbers into benchmarks/results/latest.json (and docs/benchmarks.md) as "
                             "`run_all.py serve` does")
    args = parser.parse_args()
    totals = [8, 32, 128] if args.quick else args.requests
    by_backend, agreement_numbers = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        demo = ROOT / "runs" / "demo"
        if run is None:
            run = demo if (demo / "run.json").is_file() else demo_shaped_run(Path(tmp))
        for backend in args.backends:
            by_backend[backend] = run_backend(run, backend, totals, args.max_tokens, args.sets)
        if "tflite" in args.backends:
            agreement_numbers = tflite_agreement(run)
            print(f"[tflite] int8 vs float32 over {agreement_numbers['tokens']} tokens: top-1 agreement "
                  f"{agreement_numbers['top1']:.1%}, sampled-token agreement {agreement_numbers['sampled']:.1%}, "
                  f"max |dlogit| {agreement_numbers['max_abs_logit_diff']:.3g}", flush=True)
    out: dict = {}
    for backend, numbers in by_backend.items():
        prefix = "serve_" if backend == "graph" else f"serve_{backend}_"
        out.update({prefix + k: v for k, v in numbers.items() if k != "levels"})
    if agreement_numbers is not None:
        out["serve_tflite_top1_agreement"] = round(agreement_numbers["top1"], 4)
        out["serve_tflite_sampled_agreement"] = round(agreement_numbers["sampled"], 4)
    if "graph" in by_backend and "tflite" in by_backend and by_backend["graph"]["tokens_per_s_1"]:
        for n in LEVELS:
            graph, lite = by_backend["graph"][f"tokens_per_s_{n}"], by_backend["tflite"][f"tokens_per_s_{n}"]
            out[f"serve_tflite_vs_graph_{n}"] = round(lite / graph, 2) if graph and lite else None
    out["details"] = {"backends": {b: n["levels"] for b, n in by_backend.items()}, "run": str(run),
                      "max_tokens": args.max_tokens, "requests": totals, "quick": args.quick,
                      "tflite_agreement": agreement_numbers, "load_average": os.getloadavg()}
    print(json.dumps({k: v for k, v in out.items() if k != "details"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    if args.latest:
        from run_all import update_latest  # benchmarks/ is this script's folder, first on sys.path

        update_latest("serve", out)
        print("merged into benchmarks/results/latest.json and docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
