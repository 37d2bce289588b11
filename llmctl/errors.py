"""Typed errors. Core code raises these; only the command line (`llmctl.cli_errors`) prints them and maps them to
exit codes.

Every message is one line that names the problem and, where there is one, the fix.
"""

from __future__ import annotations


class LlmctlError(Exception):
    """Base class for every error a user can cause. `exit_code` is stable and documented in the README."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.strip().replace("\n", " ")
        if self.hint:
            text += f" ({self.hint.strip()})"
        return f"{self.kind}: {text}"


class ConfigError(LlmctlError):
    """The experiment config (file, `extends`, `--set`) is missing, malformed or invalid."""

    exit_code = 2
    kind = "config error"

    def __init__(self, message: str, *, hint: str | None = None, problems: list[str] | None = None):
        super().__init__(message, hint=hint)
        self.problems = problems or []

    def one_line(self) -> str:
        if not self.problems:
            return super().one_line()
        return f"{self.kind}: " + "; ".join(p.replace("\n", " ") for p in self.problems)


class DataError(LlmctlError):
    """Input data is missing, empty, unreadable, in the wrong format or inconsistent with the config."""

    exit_code = 3
    kind = "data error"


class ArtifactError(LlmctlError):
    """A run directory, dataset, checkpoint or export is missing, incomplete or incompatible."""

    exit_code = 4
    kind = "artifact error"


class TrainingError(LlmctlError):
    """Training could not go on (non-finite loss, diverged); the last good checkpoint is kept."""

    exit_code = 5
    kind = "training error"


class ResourceError(LlmctlError):
    """The machine ran out of something (disk, memory) or a device is unusable."""

    exit_code = 6
    kind = "resource error"


EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "error (unexpected)": 1,
    ConfigError.kind: ConfigError.exit_code,
    DataError.kind: DataError.exit_code,
    ArtifactError.kind: ArtifactError.exit_code,
    TrainingError.kind: TrainingError.exit_code,
    ResourceError.kind: ResourceError.exit_code,
    "interrupted (Ctrl-C)": 130,
}
