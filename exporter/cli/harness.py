"""`exporter harness ...`: build the native latency harness (native/latency_main.cpp)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import output
from ..errors import HarnessError


@click.group()
def harness() -> None:
    """The native latency harness: a C++ program that times prefill and decode of a .pte."""


@harness.command()
@click.option("--ndk", type=click.Path(path_type=Path, file_okay=False), help="Android NDK root: cross-compile for arm64-v8a.")
@click.option(
    "--executorch", "executorch_prefix", type=click.Path(path_type=Path, file_okay=False),
    help="Install prefix of an ExecuTorch source build for Android (with --ndk).",
)
@click.option("--build-dir", type=click.Path(path_type=Path, file_okay=False), help="Build folder (default: build/native-*).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Parallel compile jobs.")
def build(ndk: Path | None, executorch_prefix: Path | None, build_dir: Path | None, jobs: int) -> None:
    """Build the harness for this machine, or for Android with --ndk and --executorch; print the binary's path."""
    from ..device.harness import build_android, build_host

    if (ndk is None) != (executorch_prefix is None):
        raise HarnessError("--ndk and --executorch go together", hint="omit both to build for this machine")
    if ndk is not None:
        binary = build_android(ndk, executorch_prefix, build_dir, jobs=jobs, progress=output.info)
    else:
        binary = build_host(build_dir, jobs=jobs, progress=output.info)
    click.echo(str(binary))
