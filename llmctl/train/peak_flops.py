"""The machine's measured float32 matmul peak (FLOP/s), the denominator of MFU, cached per machine.

Measured once with a ~0.5 s `tf.matmul` benchmark and stored in `$LLMCTL_CACHE` (default `~/.cache/llmctl`) /
peak.json under a key naming the host, CPU model, core count, TensorFlow version and device, so a different machine
or TF build measures again.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from llmctl import atomic
from llmctl.machine_cache import cache_dir

SIZE = 1024
SECONDS = 0.5


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(tf, device: str) -> str:
    return "|".join([platform.node(), _cpu_model(), str(os.cpu_count()), tf.__version__, device])


def measure(tf, device: str, seconds: float = SECONDS, size: int = SIZE) -> float:
    """Sustained float32 matmul FLOP/s on `device` (chained [size×size] products for ≥ `seconds`)."""
    with tf.device(device):
        a = tf.random.stateless_normal([size, size], seed=[1, 2]) / size ** 0.5
        b = tf.random.stateless_normal([size, size], seed=[3, 4]) / size ** 0.5

        @tf.function
        def chain(x, n):
            for _ in tf.range(n):
                x = tf.matmul(x, b)
            return x

        chain(a, tf.constant(2)).numpy()  # trace + warm up
        reps = 4
        while True:
            start = time.perf_counter()
            chain(a, tf.constant(reps)).numpy()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or reps >= 1 << 16:
                return 2.0 * size ** 3 * reps / elapsed
            reps *= 2


def matmul_peak(device: str | None = None) -> dict[str, Any]:
    """{"flops": peak FLOP/s, "device": ..., "cached": bool}; measures on first use per machine."""
    from llmctl.tfenv import import_tf

    tf = import_tf()
    if device is None:
        gpus = tf.config.list_logical_devices("GPU")
        device = gpus[0].name if gpus else "/cpu:0"
    key = machine_key(tf, device)
    path = cache_dir() / "peak.json"
    cache: dict[str, Any] = {}
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), dict) and cache[key].get("flops"):
        return {**cache[key], "cached": True}
    flops = measure(tf, device)
    entry = {"flops": flops, "device": device, "dtype": "float32", "size": SIZE,
             "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    cache[key] = entry
    try:
        atomic.write_json(path, cache)
    except Exception:  # noqa: BLE001
        pass  # an unwritable cache only costs a re-measurement next time
    return {**entry, "cached": False}
