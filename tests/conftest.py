"""Session-wide test settings: the per-machine cache (`llmctl.machine_cache`) lives in a fresh temporary directory,
so no test reads or writes `~/.cache/llmctl` and every run starts from an empty cache."""

import os
import tempfile


def pytest_configure(config):
    os.environ["LLMCTL_CACHE"] = tempfile.mkdtemp(prefix="llmctl-test-cache-")
