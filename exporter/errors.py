"""Typed errors: library code raises these, only the CLI prints them and picks the exit code."""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every user-facing failure. `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ProfileError(ExporterError):
    exit_code = 3


class RecipeError(ExporterError):
    exit_code = 3


class ModelError(ExporterError):
    """Model missing, unreadable, unsupported architecture, or a bad context length."""

    exit_code = 4


class ExportError(ExporterError):
    exit_code = 4


class OutputExistsError(ExporterError):
    exit_code = 4


class VerificationError(ExporterError):
    exit_code = 5


class DeviceError(ExporterError):
    """No phone, several phones, unauthorized, unplugged, no space."""

    exit_code = 6


class HarnessError(ExporterError):
    """The native harness failed to build, to run, or to load the .pte."""

    exit_code = 7


class PartialBenchError(ExporterError):
    exit_code = 8


class AppError(ExporterError):
    """Android demo app: bundle target not empty, app missing on phone, results invalid."""

    exit_code = 9
