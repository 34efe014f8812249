"""Typed errors: library code raises these, only the CLI prints them and picks the exit code.

Every expected failure has its own class and exit code (EXIT_CODES, also in the README). Exit code 1 is kept
for what is not expected: a bug, reported with a traceback hint.
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every user-facing failure. `hint` says what to do next. Raise a subclass, never this."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(ExporterError):
    """An argument or option value the library cannot work with (negative lengths, a bad remote path...)."""

    exit_code = 2


class ProfileError(ExporterError):
    exit_code = 3


class RecipeError(ExporterError):
    exit_code = 3


class ModelError(ExporterError):
    """Model missing, unreadable, unsupported architecture, or a bad context length."""

    exit_code = 4


class ExportError(ExporterError):
    """torch.export or lowering failed."""

    exit_code = 4


class VerificationError(ExporterError):
    """The .pte does not behave like the model it was exported from, or the stock runner cannot run it."""

    exit_code = 5


class DeviceError(ExporterError):
    """No phone, several phones, unauthorized, unplugged, stalled, no space."""

    exit_code = 6


class HarnessError(ExporterError):
    """The native harness failed to build, to run, or to load the .pte."""

    exit_code = 7


class PartialBenchError(ExporterError):
    exit_code = 8


class AppError(ExporterError):
    """Android demo app: bundle target not empty, app missing on phone, results invalid."""

    exit_code = 9


class OutputError(ExporterError):
    """The output folder exists, is being written by another export, is not writable, or the disk is full."""

    exit_code = 10


class OutputExistsError(OutputError):
    pass


class ArtifactError(ExporterError):
    """An export folder that is not what its manifest says: malformed manifest, missing or changed files,
    a path leaving the folder, a .pte that is not an ExecuTorch program."""

    exit_code = 11


class Interrupted(ExporterError):
    """Ctrl-C at a point where something is left that the user must know about (e.g. an unverified export)."""

    exit_code = 130


INTERRUPTED = Interrupted.exit_code

# exit code -> meaning; the README's table is checked against this.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error: a bug in exporter (the message says how to get the traceback)",
    UsageError.exit_code: "bad command line or option value",
    ProfileError.exit_code: "device profile or quantization recipe invalid",
    ModelError.exit_code: "model missing, unsupported or unloadable; torch.export or lowering failed",
    VerificationError.exit_code: "the .pte disagrees with its model, or the stock runner cannot run it",
    DeviceError.exit_code: "phone or adb problem (none, several, unauthorized, unplugged, stalled, full)",
    HarnessError.exit_code: "the native harness failed to build or run",
    PartialBenchError.exit_code: "some benchmark tests failed (their rows have null metrics)",
    AppError.exit_code: "Android demo app problem",
    OutputError.exit_code: "output folder exists, is locked by another export, is not writable, or the disk is full",
    ArtifactError.exit_code: "export folder invalid: manifest malformed, files missing or changed, unsafe paths",
    INTERRUPTED: "interrupted (Ctrl-C); nothing half-written is left",
}
