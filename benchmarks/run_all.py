"""`make bench`: run every benchmark script, each printing ratios measured side by side in one run, then merge their
numbers into benchmarks/results/latest.json and a Markdown table in docs/benchmarks.md. `run_all.py NAME ...` re-runs
only the named benchmarks and keeps the others' numbers from the last latest.json.

Benchmarks report; they never fail because a machine is slow. A benchmark that crashes is reported as such and the
others still run (the exit code is non-zero only if one crashed).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = [
    ("help", "bench_help.py", []),
    ("preprocess", "bench_preprocess.py", []),
    ("train", "bench_train.py", []),
    ("generate", "bench_generate.py", []),
    ("tflite", "bench_tflite.py", []),
    ("serve", "bench_serve.py", []),
]
REQUIRED = ["train_tokens_per_s", "train_vs_keras_fit", "mfu", "generate_tokens_per_s", "generate_vs_naive",
            "preprocess_mb_per_s", "preprocess_vs_textvectorization", "help_seconds", "serve_tokens_per_s_32",
            "serve_32_vs_1"]


def main() -> int:
    only = set(sys.argv[1:])  # `run_all.py preprocess generate`: re-run these, keep the others' last numbers
    details = previous_details(exclude=only) if only else {}
    failed = []
    for name, script, extra in BENCHES:
        if only and name not in only:
            continue
        path = ROOT / "benchmarks" / script
        if not path.exists():
            failed.append(f"{name}: {script} missing")
            continue
        print(f"\n=== {name}: {script} ===", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.json"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, str(path), "--json", str(out), *extra], cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            took = time.perf_counter() - t0
            if proc.returncode != 0 or not out.exists():
                failed.append(f"{name}: exit {proc.returncode}")
                continue
            data = json.loads(out.read_text(encoding="utf-8"))
        data["wall_seconds"] = round(took, 1)
        details[name] = data
    write_latest(details, failed)
    print("\nwrote benchmarks/results/latest.json and docs/benchmarks.md")
    if failed:
        print("benchmarks that did not finish: " + "; ".join(failed))
    return 1 if failed else 0


LATEST = ROOT / "benchmarks" / "results" / "latest.json"


def previous_details(exclude=()) -> dict[str, dict]:
    """Each benchmark's numbers in the last latest.json (those named in `exclude` left out)."""
    if not LATEST.exists():
        return {}
    previous = json.loads(LATEST.read_text(encoding="utf-8"))
    return {k: v for k, v in previous.get("details", {}).items() if k not in set(exclude)}


def write_latest(details: dict[str, dict], failed: list[str]) -> dict:
    """latest.json: every benchmark's scalar numbers merged at the top level (in BENCHES order), its full output
    under details[name]; then docs/benchmarks.md."""
    merged: dict[str, object] = {}
    for data in details.values():
        merged.update({k: v for k, v in data.items() if not isinstance(v, (dict, list)) and k != "wall_seconds"})
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M")},
              **merged, "details": details, "failed": failed,
              "missing_keys": [k for k in REQUIRED if k not in merged]}
    LATEST.parent.mkdir(parents=True, exist_ok=True)
    LATEST.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_markdown(result)
    return result


def update_latest(name: str, data: dict) -> dict:
    """Merge one benchmark's numbers into latest.json the way `run_all.py NAME` does (a script run on its own)."""
    details = previous_details()
    details[name] = data
    return write_latest(details, [])


NOTES = "## Measurements behind design choices"


def write_markdown(result: dict) -> None:
    lines = ["# Benchmarks", "",
             "Measured by `make bench` (`benchmarks/run_all.py`); every ratio compares two things measured side by "
             "side in one run on the same machine. Regenerated on each run — numbers below are from the last one.", "",
             f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, Python "
             f"{result['machine']['python']}, {result['machine']['date']}.", ""]
    for name, data in result["details"].items():
        lines += [f"## {name}", "", "| metric | value |", "|---|---|"]
        for key, value in data.items():
            if isinstance(value, dict):
                value = json.dumps(value)
            lines.append(f"| `{key}` | {value} |")
        lines.append("")
    if result["failed"]:
        lines += ["## Did not finish", ""] + [f"- {f}" for f in result["failed"]] + [""]
    path = ROOT / "docs" / "benchmarks.md"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if NOTES in old:  # the hand-written section below the generated tables is kept
        lines.append(old[old.index(NOTES):].rstrip("\n") + "\n")
    path.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
