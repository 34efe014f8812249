"""The Python API: every command of the CLI as a function with typed arguments and a typed result.

    from exporter import export, verify, push, bench, load_profile

The CLI (exporter/cli) is a thin layer over these. Importing this module loads no torch: each function
imports the heavy parts when it runs. Progress goes to the `progress` / `say` / `warn` callables (silent by
default); errors are the typed exceptions of exporter.errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, Unpack

from .artifact import Artifact, Manifest, VerificationRecord, check_output_free, output_lock
from .errors import Interrupted, VerificationError
from .profiles import DeviceProfile, list_profiles, load_profile

if TYPE_CHECKING:
    from .build.plan import PlanOptions
    from .device.bench import TestResult
    from .device.detect import ConnectedDevice
    from .device.push import PushResult
    from .planner import PlanResult
    from .verification import VerifyResult

Say = Callable[[str], None]

__all__ = ["ExportResult", "BenchReport", "export", "verify", "plan", "push", "bench", "load_profile",
           "list_profiles", "connected_devices", "bundle", "app_bench"]


def _nop(_message: str) -> None:
    return None


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: Manifest
    verification: VerifyResult | None = None
    notices: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "manifest": self.manifest.to_dict(),
                "verify": self.verification.to_dict() if self.verification else None, "notices": list(self.notices)}


def export(
    model: str | None = None,
    *,
    device: str | os.PathLike | DeviceProfile,
    output: str | os.PathLike | None = None,
    force: bool = False,
    verify: bool = True,
    text: str | None = None,
    text_name: str = "built-in sample",
    chunks: int = 4,
    chunk_len: int = 256,
    progress: Say = _nop,
    **options: Unpack[PlanOptions],
) -> ExportResult:
    """Export `model` (a Hub id, a folder, a .gguf, or None for the built-in SmolLM2) for `device` (a profile
    id, a profile YAML path, or "auto" for the phone on adb) into `output` (default out/<model>-<profile>);
    `options` (recipe, quant, group_size, embedding_quant, kv_cache, max_seq_len, serial, adb) are build.plan.PlanOptions.

    The destination is checked and locked before any work; the folder appears whole at the end or not at all.
    With `verify`, the .pte is then compared with the eager model on the host and the outcome is recorded in
    the manifest (`verification.status`); Ctrl-C during that step leaves the export marked "interrupted".
    """
    from .build.export import run_export
    from .build.plan import build_plan

    plan = build_plan(model, device, output, progress=progress, **options)
    for notice in plan.notices:
        progress(notice)
    check_output_free(plan.output, force)
    with output_lock(plan.output):
        artifact = run_export(plan, force=force, progress=progress)
        result = None
        if verify:
            result = _verify_and_record(artifact, progress, text=text, text_name=text_name, chunks=chunks,
                                        chunk_len=chunk_len)
    return ExportResult(artifact.folder, artifact.manifest, result, plan.notices)


def plan(
    model: str | None = None,
    *,
    device: str | os.PathLike | DeviceProfile,
    max_seq_len: int | None = None,
    text: str | os.PathLike | None = None,
    chunks: int = 4,
    chunk_len: int = 256,
    use_cache: bool = True,
    plot: str | os.PathLike | None = None,
    serial: str | None = None,
    adb: str | os.PathLike | None = None,
    progress: Say = _nop,
) -> PlanResult:
    """Choose a recipe for `model` on `device`: candidate recipes measured eagerly on this machine (perplexity
    and KL on `text`, default Pride and Prejudice; exact .pte bytes), their memory and phone speed predicted
    from the profile, the fastest that fits and meets the quality bound chosen. `plot`: also write a PNG."""
    from .build.plan import resolve_profile
    from .plan_run import EvalSettings, run_plan

    profile, notices = resolve_profile(device, serial=serial, adb_path=adb)
    for notice in notices:
        progress(notice)
    settings = EvalSettings(Path(text) if text is not None else None, chunks, chunk_len)
    result = run_plan(model, profile, max_seq_len=max_seq_len, settings=settings, use_cache=use_cache,
                      progress=progress)
    if plot is not None:
        from .plan_plot import plot_plan

        plot_plan(result, Path(plot))
    return result


def _verify_and_record(artifact: Artifact, progress: Say, **options: Any) -> VerifyResult:
    from .verification import verify_folder

    try:
        result = verify_folder(artifact, progress=progress, **options)
    except KeyboardInterrupt:
        artifact.record_verification(VerificationRecord(status="interrupted"))
        raise Interrupted(f"interrupted while verifying: the export in {artifact.folder} is complete but unverified "
                          "(its manifest says verification.status: interrupted)",
                          hint=f"run `exporter verify {artifact.folder}`") from None
    except VerificationError as err:
        artifact.record_verification(VerificationRecord(status="failed", error=str(err)))
        err.hint = (err.hint + "; " if err.hint else "") + f"the export is kept in {artifact.folder}, marked failed"
        raise
    artifact.record_verification(result.record())
    return result


def verify(
    folder: str | os.PathLike,
    *,
    text: str | None = None,
    text_name: str = "built-in sample",
    chunks: int = 4,
    chunk_len: int = 256,
    prefill_len: int = 32,
    min_agreement: float | None = None,
    progress: Say = _nop,
) -> VerifyResult:
    """Run an export folder's .pte with the ExecuTorch runtime and compare it with the eager model."""
    from .verification import verify_folder

    return verify_folder(folder, text=text, text_name=text_name, chunks=chunks, chunk_len=chunk_len,
                         prefill_len=prefill_len, min_agreement=min_agreement, progress=progress)


def connected_devices(serial: str | None = None, *, adb: str | os.PathLike | None = None) -> list[ConnectedDevice]:
    """Every phone on adb (or only `serial`) with what detection read from it and the profile it matches."""
    from .device.detect import describe_connected

    return describe_connected(serial, adb)


def push(
    folder: str | os.PathLike,
    serial: str | None = None,
    *,
    adb: str | os.PathLike | None = None,
    remote_dir: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    say: Say = _nop,
) -> PushResult:
    """Copy an export folder to a phone (`serial`, or the only one connected); resumable, sha256-checked."""
    from .device.adb import Adb, pick_serials
    from .device.push import push_artifact

    artifact = Artifact.open(folder)
    chosen = pick_serials([serial] if serial else [], adb_path=adb)[0]
    return push_artifact(Adb(chosen, adb), artifact, remote_dir, progress=progress, say=say)


@dataclass(frozen=True)
class BenchReport:
    """The tests of one `bench` call; `rows` are what --json, CSV and the table are made from."""

    artifact: Artifact
    results: tuple[TestResult, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def raise_for_failures(self) -> None:
        from .device.bench import raise_for_failures

        raise_for_failures(self.results)


def bench(
    folder: str | os.PathLike,
    *,
    serials: Sequence[str] = (),
    all_devices: bool = False,
    host: bool = False,
    prompt_lengths: Sequence[int] = (64,),
    gen_lengths: Sequence[int] = (128,),
    threads: Sequence[int] = (),
    reps: int = 5,
    warmup: int = 1,
    cooldown_temp_c: float | None = 45.0,
    cooldown_timeout_s: float = 120.0,
    runner: str = "harness",
    prefill_chunk: int | None = None,
    harness: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    remote_dir: str | None = None,
    host_bandwidth_gbps: float | None = None,
    adb: str | os.PathLike | None = None,
    say: Say = _nop,
    warn: Say = _nop,
) -> BenchReport:
    """Measure prefill and decode tokens/s of an export folder on phones (or this host), one test per
    combination of `threads` x `prompt_lengths` x `gen_lengths`. Failed tests are in the report with null
    metrics; call `report.raise_for_failures()` to turn them into PartialBenchError. Successful phone tests are
    also appended to the results store `exporter plan` reads (exporter.results)."""
    from .device.adb import pick_serials
    from .device.bench import BenchSpec, PhoneOptions, run_bench
    from .errors import UsageError
    from .report import build_rows
    from .results import record_bench_rows

    if host and (serials or all_devices):
        raise UsageError("--host runs on this machine: drop --serial/--all")
    spec = BenchSpec(prompt_lengths=tuple(prompt_lengths), gen_lengths=tuple(gen_lengths), threads=tuple(threads),
                     reps=reps, warmup=warmup, cooldown_temp_c=None if host else cooldown_temp_c,
                     cooldown_timeout_s=cooldown_timeout_s, runner=runner, prefill_chunk=prefill_chunk)
    artifact = Artifact.open(folder)
    chosen = [] if host else pick_serials(serials, all_devices=all_devices, adb_path=adb)
    opts = PhoneOptions(harness=Path(harness) if harness and not host else None,
                        tokenizer=Path(tokenizer) if tokenizer else None, remote_dir=remote_dir,
                        adb_path=os.fspath(adb) if adb else None)
    results = run_bench(artifact, spec, serials=chosen, host=host, opts=opts,
                        host_binary=Path(harness) if harness and host else None,
                        host_bandwidth_gbps=host_bandwidth_gbps, say=say, warn=warn)
    rows = build_rows(results, artifact)
    # the phones' speeds become the measured efficiencies of `exporter plan` for their profiles
    record_bench_rows(rows, artifact.manifest.model.parameters)
    return BenchReport(artifact, tuple(results), rows)


def bundle(folder: str | os.PathLike, app_dir: str | os.PathLike, **options: Any):
    """Write the Android demo app's Gradle project into `app_dir` with the export wired in (see
    exporter.app.bundle.bundle_app for the options)."""
    from .app.bundle import bundle_app

    return bundle_app(Path(folder), Path(app_dir), **options)


def app_bench(
    folder: str | os.PathLike,
    serial: str | None = None,
    *,
    adb: str | os.PathLike | None = None,
    prompt_len: int = 128,
    gen_len: int = 64,
    reps: int = 5,
    warmup: int = 1,
    prompt: str | None = None,
    remote_dir: str | None = None,
    timeout_s: float = 600.0,
    say: Say = _nop,
    warn: Say = _nop,
) -> BenchReport:
    """Run the demo app's benchmark activity on a phone over adb; reported like `bench`."""
    from .app.bench import run_app_bench
    from .device.adb import Adb, pick_serials
    from .report import build_rows

    artifact = Artifact.open(folder)
    chosen = pick_serials([serial] if serial else [], adb_path=adb)[0]
    result, _doc = run_app_bench(Adb(chosen, adb), artifact, prompt_len=prompt_len, gen_len=gen_len, reps=reps,
                                 warmup=warmup, prompt=prompt, remote_dir=remote_dir, timeout_s=timeout_s, say=say,
                                 warn=warn)
    return BenchReport(artifact, (result,), build_rows([result], artifact))
