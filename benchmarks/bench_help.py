"""`llmctl --help` wall time (median of several cold subprocess starts) vs the bare `import tensorflow` it avoids."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _time(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    help_s = _time([sys.executable, "-m", "llmctl", "--help"], args.repeats)
    tf_s = _time([sys.executable, "-c", "import tensorflow"], max(3, args.repeats // 2))
    result = {"help_seconds": round(help_s, 4), "import_tensorflow_seconds": round(tf_s, 3),
              "help_vs_tf_import": round(tf_s / help_s, 1)}
    print(f"llmctl --help: {help_s * 1000:.0f} ms median; import tensorflow: {tf_s * 1000:.0f} ms "
          f"({result['help_vs_tf_import']}x slower than --help)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
