"""Importing TensorFlow quietly and describing the machine it runs on.

TensorFlow writes start-up lines (oneDNN, CUDA probing) straight to file descriptor 2, below Python's `sys.stderr`,
even with TF_CPP_MIN_LOG_LEVEL=3. `import_tf()` points fd 2 at a temporary file while TF loads and initialises its
devices, and replays that text only when `LLMCTL_DEBUG` is set (`--debug`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Any, Iterator

_tf: Any = None
_captured = ""


@contextlib.contextmanager
def _silence_fd2() -> Iterator[None]:
    global _captured
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            _captured += sink.read().decode("utf-8", "replace")


def import_tf():
    """Import TensorFlow (and Keras) once, quietly, with its devices initialised. Returns the `tf` module."""
    global _tf
    if _tf is not None:
        return _tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    with _silence_fd2():
        import keras  # noqa: F401,PLC0415
        import tensorflow as tf  # noqa: PLC0415 - the whole point is a lazy import

        tf.get_logger().setLevel("ERROR")
        tf.config.list_physical_devices()
    if os.environ.get("LLMCTL_DEBUG") and _captured:
        sys.stderr.write(_captured)
    _tf = tf
    return tf


def configure_cpu_devices(logical_cpus: int) -> None:
    """Split the CPU into `logical_cpus` logical devices (testing `mirrored` without GPUs). Call before any op."""
    tf = import_tf()
    if logical_cpus <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == logical_cpus:
        return
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)


def device_report() -> dict[str, Any]:
    """Devices TensorFlow sees, for the start-of-run report and summary.json."""
    tf = import_tf()
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "tensorflow": tf.__version__,
        "gpus": [g.name for g in gpus],
        "cpus": len(tf.config.list_logical_devices("CPU")),
        "cuda_build": bool(tf.test.is_built_with_cuda()),
    }


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy, TF and Keras; optionally enable op determinism (bit-identical CPU runs)."""
    tf = import_tf()
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
