"""`exporter harness ...`: build the native latency harness (native/latency_main.cpp)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import output
from ..errors import HarnessError
from .options import json_option

TARGETS = ("host", "android-arm64", "linux-arm64")


@click.group()
def harness() -> None:
    """The native latency harness: a C++ program that times prefill and decode of a .pte."""


@harness.command()
@click.option(
    "--target", type=click.Choice(TARGETS), default=None,
    help="host (default), android-arm64 (with --ndk and --executorch), or linux-arm64: cross-built against the "
         "aarch64 executorch wheel after `bash scripts/setup.sh --arm`, with a self-contained bundle "
         "(loader + libraries + run.sh) that push/bench can run on a phone without an NDK build.",
)
@click.option("--ndk", type=click.Path(path_type=Path, file_okay=False), help="Android NDK root: cross-compile for arm64-v8a.")
@click.option(
    "--executorch", "executorch_prefix", type=click.Path(path_type=Path, file_okay=False),
    help="Install prefix of an ExecuTorch source build for Android (with --ndk).",
)
@click.option("--build-dir", type=click.Path(path_type=Path, file_okay=False), help="Build folder (default: build/native-*).")
@click.option("--bundle-dir", type=click.Path(path_type=Path, file_okay=False),
              help="linux-arm64: where the bundle goes (default: build/harness-linux-arm64).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Parallel compile jobs.")
@json_option
def build(target: str | None, ndk: Path | None, executorch_prefix: Path | None, build_dir: Path | None,
          bundle_dir: Path | None, jobs: int, as_json: bool) -> None:
    """Build the harness for this machine, for Android with --ndk and --executorch, or for arm64 Linux with
    --target linux-arm64; print the binary's path (--json: binary, libs and, for linux-arm64, the bundle)."""
    from ..device.harness import build_android, build_host

    if (ndk is None) != (executorch_prefix is None):
        raise HarnessError("--ndk and --executorch go together", hint="omit both to build for this machine")
    if target is None:
        target = "android-arm64" if ndk is not None else "host"
    if target == "android-arm64" and ndk is None:
        raise HarnessError("--target android-arm64 needs --ndk and --executorch")
    if target != "android-arm64" and ndk is not None:
        raise HarnessError(f"--ndk builds for android-arm64, not {target}")
    if bundle_dir is not None and target != "linux-arm64":
        raise HarnessError("--bundle-dir is for --target linux-arm64")
    if target == "linux-arm64":
        from ..device.cross import build_bundle

        bundle = build_bundle(bundle_dir, build_dir=build_dir, jobs=jobs, progress=output.info)
        result = bundle.to_dict()
    else:
        if target == "android-arm64":
            binary = build_android(ndk, executorch_prefix, build_dir, jobs=jobs, progress=output.info)
        else:
            binary = build_host(build_dir, jobs=jobs, progress=output.info)
        # Both link ExecuTorch into the binary or find it through its RUNPATH: nothing else to carry.
        result = {"target": target, "binary": str(binary), "libs": []}
    if as_json:
        output.print_json(result)
    else:
        click.echo(result["binary"])
        if target == "linux-arm64":
            output.info(f"bundle (harness, loader, {len(result['libs'])} libraries, run.sh): {result['bundle']}")
