"""Which `tf.distribute` strategy a run uses, who the chief is, and how many replicas read which batch rows.

    dist = build_distribution(exp.distribute)   # FIRST thing after importing TF: before any op runs
    with dist.strategy.scope(): model, optimizer = ...

`none` uses the default strategy (one device, no overhead); `mirrored` all local GPUs, `distribute.devices`, or
`distribute.logical_cpus` logical CPU devices (testing without GPUs); `multi_worker` the cluster in the TF_CONFIG
environment variable (ring all-reduce over gRPC). The global batch (`train.batch_size` columns) is split evenly across
replicas: replica r (global id, worker-major) owns rows r·b … (r+1)·b − 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from llmctl.errors import ConfigError, ResourceError
from llmctl.tfenv import configure_cpu_devices, import_tf


@dataclass
class Distribution:
    """A strategy plus the facts the training loop needs about it."""

    kind: str
    strategy: Any
    num_replicas: int = 1
    num_workers: int = 1
    worker_index: int = 0
    is_chief: bool = True
    devices: list[str] = field(default_factory=list)

    @property
    def replicas_per_worker(self) -> int:
        return self.num_replicas // self.num_workers

    @property
    def distributed(self) -> bool:
        return self.kind != "none"

    def barrier(self) -> None:
        """Wait until every replica of every worker reaches this point (a tiny all-reduce)."""
        if self.num_workers <= 1:
            return
        tf = import_tf()
        value = self.strategy.run(lambda: tf.constant(1.0))
        self.strategy.reduce("SUM", value, axis=None).numpy()

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.kind, "replicas": self.num_replicas, "workers": self.num_workers,
                "worker_index": self.worker_index, "chief": self.is_chief, "devices": self.devices}


def read_tf_config() -> dict[str, Any]:
    """The parsed TF_CONFIG, or a ConfigError saying what to set."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError("distribute.strategy=multi_worker needs the TF_CONFIG environment variable",
                          hint='set TF_CONFIG={"cluster": {"worker": ["host:port", ...]}, '
                               '"task": {"type": "worker", "index": i}} on every worker')
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        members = cluster[kind]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"TF_CONFIG is not valid ({type(exc).__name__}: {exc})",
                          hint='it must look like {"cluster": {"worker": [...]}, "task": {"type": "worker", '
                               '"index": 0}}') from None
    if index >= len(members):
        raise ConfigError(f"TF_CONFIG task index {index} is outside its cluster of {len(members)} {kind}(s)",
                          hint="use an index between 0 and the number of workers minus 1")
    return config


def build_distribution(cfg) -> Distribution:
    """Create the strategy `distribute.strategy` names. Call before TensorFlow runs any op."""
    tf = import_tf()
    kind = cfg.strategy
    if cfg.logical_cpus > 1:
        try:
            configure_cpu_devices(cfg.logical_cpus)
        except RuntimeError as exc:
            raise ResourceError(f"cannot split the CPU into {cfg.logical_cpus} logical devices ({exc})",
                                hint="run the command in a fresh process (the split must happen before "
                                     "TensorFlow starts)") from None
    if kind == "none":
        if cfg.devices:
            raise ConfigError("distribute.devices is set but distribute.strategy=none",
                              hint="set distribute.strategy=mirrored or remove distribute.devices")
        return Distribution("none", tf.distribute.get_strategy(), devices=[_default_device(tf)])
    if kind == "mirrored":
        devices = list(cfg.devices)
        if devices:  # TensorFlow would place a device it does not have on the CPU, silently
            known = {_device_key(d.name) for d in tf.config.list_logical_devices()}
            missing = [d for d in devices if _device_key(d) not in known]
            if missing:
                raise ResourceError(f"distribute.devices {missing} not found on this machine (TensorFlow sees "
                                    f"{', '.join(sorted(known)) or 'no device'})",
                                    hint="list devices TensorFlow sees, e.g. /gpu:0 /gpu:1 or /cpu:0 /cpu:1 with "
                                         "distribute.logical_cpus")
        if not devices:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        try:
            strategy = tf.distribute.MirroredStrategy(devices=devices)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"distribute.devices {devices} cannot be mirrored ({exc})",
                              hint="list devices TensorFlow sees, e.g. /gpu:0 /gpu:1 or /cpu:0 /cpu:1 with "
                                   "distribute.logical_cpus") from None
        return Distribution("mirrored", strategy, num_replicas=strategy.num_replicas_in_sync, devices=devices)
    if kind == "multi_worker":
        config = read_tf_config()
        task = config["task"]
        cluster = config["cluster"]
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        if task["type"] == "chief":
            index = 0
        else:
            index = int(task["index"]) + len(cluster.get("chief", []))
        is_chief = task["type"] == "chief" or ("chief" not in cluster and int(task["index"]) == 0)
        local = [d.name for d in tf.config.list_logical_devices("GPU")] or ["/cpu:0"]
        return Distribution("multi_worker", strategy, num_replicas=strategy.num_replicas_in_sync,
                            num_workers=workers, worker_index=index, is_chief=is_chief, devices=local)
    raise ConfigError(f"distribute.strategy={kind!r} is not supported", hint="use none, mirrored or multi_worker")


def _device_key(name: str) -> str:
    """`/job:localhost/replica:0/task:0/device:GPU:1`, `/gpu:1`, `GPU:1` → `gpu:1`."""
    tail = name.strip().lower().rsplit("/", 1)[-1]
    return tail[len("device:"):] if tail.startswith("device:") else tail


def _default_device(tf) -> str:
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else tf.config.list_logical_devices("CPU")[0].name
