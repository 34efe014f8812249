"""`exporter app-bench`: run the demo app's BenchmarkActivity on a phone over adb and collect its results.

Steps: the app is installed at the expected version (`pm list packages`, `dumpsys package`), the export is on
the phone, `am start` launches the activity with INTENT_EXTRAS, the results file is polled for, pulled,
checked against protocol.RUN_FIELDS and turned into the same rows as `exporter bench`.
"""

from __future__ import annotations

import json
import posixpath
import re
import secrets
import shlex
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..device.adb import Adb
from ..artifact import Artifact
from ..device.bench import Case, DeviceInfo, TestResult, now_rfc3339
from ..device.protocol import RunSchemaError, validate_run
from ..device.push import default_remote_dir
from ..errors import AppError
from .bundle import APP_PACKAGE, app_versions

BENCH_ACTIVITY = ".BenchmarkActivity"
# Where BenchmarkActivity writes: getExternalFilesDir(null)/bench/<run_id>.json
RESULTS_DIR = f"/sdcard/Android/data/{APP_PACKAGE}/files/bench"
RESULTS_SCHEMA = "exporter-app-bench/1"

# The intent extras `am start` sends: extra name -> (am flag, BenchSpec attribute). The Kotlin side reads the
# same names in BenchmarkActivity.kt; tests/unit/test_android_demo.py compares both (names and types).
INTENT_EXTRAS: dict[str, tuple[str, str]] = {
    "run_id": ("--es", "run_id"),
    "model_dir": ("--es", "model_dir"),
    "prompt": ("--es", "prompt"),
    "prompt_len": ("--ei", "prompt_len"),
    "gen_len": ("--ei", "gen_len"),
    "reps": ("--ei", "reps"),
    "warmup": ("--ei", "warmup"),
}


@dataclass(frozen=True)
class AppBenchSpec:
    model_dir: str  # export folder on the phone
    run_id: str
    prompt_len: int = 128
    gen_len: int = 64
    reps: int = 5
    warmup: int = 1
    prompt: str | None = None  # a fixed prompt instead of prompt_len filler tokens

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.gen_len < 1 or self.reps < 1 or self.warmup < 0:
            raise AppError("--prompt-len, --gen and --repeat must be >= 1 and --warmup >= 0")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.run_id):
            raise AppError(f"run id {self.run_id!r} may only hold letters, digits, '.', '_' and '-'")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def am_start_command(spec: AppBenchSpec, package: str = APP_PACKAGE) -> str:
    """The `am start` shell command that launches the benchmark activity with every extra in INTENT_EXTRAS."""
    parts = ["am", "start", "-S", "-n", f"{package}/{BENCH_ACTIVITY}"]
    for name, (flag, attr) in INTENT_EXTRAS.items():
        value = getattr(spec, attr)
        if value is None:
            continue
        parts += [flag, name, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def results_path(run_id: str) -> str:
    return posixpath.join(RESULTS_DIR, f"{run_id}.json")


def installed_version(adb: Adb, package: str = APP_PACKAGE) -> str | None:
    """versionName of the installed app, None when it is not installed."""
    listing = adb.shell(f"pm list packages {shlex.quote(package)}", check=False,
                        action="list installed packages").stdout
    if f"package:{package}" not in {line.strip() for line in listing.splitlines()}:
        return None
    text = adb.shell(f"dumpsys package {shlex.quote(package)} | grep versionName", check=False,
                     action=f"read the version of {package}").stdout
    m = re.search(r"versionName=(\S+)", text)
    return m.group(1) if m else ""


def check_app(adb: Adb, expected_version: str, package: str = APP_PACKAGE) -> str:
    version = installed_version(adb, package)
    if version is None:
        raise AppError(f"the demo app ({package}) is not installed on '{adb.serial}'",
                       hint="exporter bundle EXPORT --app-dir APP; cd APP && ./gradlew installDebug")
    if version != expected_version:
        raise AppError(f"the demo app on '{adb.serial}' is version {version or '?'}, this exporter expects "
                       f"{expected_version}", hint="re-bundle and reinstall: ./gradlew installDebug")
    return version


def parse_results(text: str, spec: AppBenchSpec, expected_version: str | None = None) -> dict[str, Any]:
    """Check the app's results document; AppError says what is wrong. Returns the document."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise AppError(f"the app's results file is not JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise AppError(f"the app's results file has schema {got!r}, expected {RESULTS_SCHEMA!r}",
                       hint="reinstall the app from `exporter bundle` of this exporter version")
    if doc.get("run_id") != spec.run_id:
        raise AppError(f"the results file is for run {doc.get('run_id')!r}, not {spec.run_id!r}")
    if doc.get("error"):
        raise AppError(f"the benchmark failed on the phone: {doc['error']}",
                       hint="adb logcat -s ExporterBench ExecuTorch  # for details")
    if expected_version and doc.get("app_version") != expected_version:
        raise AppError(f"results come from app version {doc.get('app_version')!r}, expected {expected_version!r}")
    runs = doc.get("runs")
    if not isinstance(runs, list) or not runs:
        raise AppError("the app's results file holds no runs")
    for i, run in enumerate(runs):
        try:
            validate_run(run)
        except RunSchemaError as err:
            raise AppError(f"run {i} of the app's results is invalid: {err}") from err
    return doc


def _device(adb: Adb, profile_id: str) -> DeviceInfo:
    props = adb.getprops()
    sdk = props.get("ro.build.version.sdk", "")
    return DeviceInfo(serial=adb.serial, model=props.get("ro.product.model"),
                      soc=props.get("ro.soc.model") or props.get("ro.board.platform"),
                      board_platform=props.get("ro.board.platform"),
                      android_release=props.get("ro.build.version.release"),
                      sdk=int(sdk) if sdk.isdigit() else None, profile_id=profile_id)


def run_app_bench(adb: Adb, export: Path | Artifact, *, prompt_len: int = 128, gen_len: int = 64, reps: int = 5,
                  warmup: int = 1, prompt: str | None = None, remote_dir: str | None = None,
                  timeout_s: float = 600.0, poll_s: float = 2.0, run_id: str | None = None,
                  say: Callable[[str], None] = lambda m: None, warn: Callable[[str], None] = lambda m: None,
                  sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                  ) -> tuple[TestResult, dict[str, Any]]:
    """Launch the benchmark activity and wait for its results. Returns (TestResult for report.build_rows, doc)."""
    artifact = export if isinstance(export, Artifact) else Artifact.open(export)
    manifest = artifact.manifest
    spec = AppBenchSpec(model_dir=remote_dir or default_remote_dir(artifact.folder), run_id=run_id or new_run_id(),
                        prompt_len=prompt_len, gen_len=gen_len, reps=reps, warmup=warmup, prompt=prompt)
    expected = app_versions()["demoApp"]
    check_app(adb, expected)
    pte_remote = posixpath.join(spec.model_dir, manifest.pte.file)
    if not adb.exists(pte_remote):
        raise AppError(f"{pte_remote} is not on '{adb.serial}'",
                       hint=f"exporter push {artifact.folder} --serial {adb.serial}")
    device = _device(adb, manifest.profile.id)
    test_time = now_rfc3339()
    remote = results_path(spec.run_id)
    say(f"{adb.serial}: starting {APP_PACKAGE}/{BENCH_ACTIVITY} (run {spec.run_id})")
    started = adb.shell(am_start_command(spec), check=False, action="start the benchmark activity")
    out = started.stdout + started.stderr
    if started.rc != 0 or re.search(r"^Error|Exception|Permission Denial", out, re.MULTILINE):
        raise AppError(f"`am start` of the benchmark activity failed on '{adb.serial}': "
                       + " / ".join(out.strip().splitlines()[-3:]),
                       hint="reinstall the app: ./gradlew installDebug")
    deadline = clock() + timeout_s
    while not adb.exists(remote):
        if clock() >= deadline:
            raise AppError(f"no results from the app after {timeout_s:.0f} s ({remote})",
                           hint="watch `adb logcat -s ExporterBench ExecuTorch`; raise --timeout for big models")
        sleep(poll_s)
    with tempfile.TemporaryDirectory(prefix="exporter-app-bench-") as tmp:
        local = Path(tmp) / f"{spec.run_id}.json"
        adb.pull(remote, local, expected_bytes=1 << 20)
        text = local.read_text()
    adb.shell(f"rm -f {shlex.quote(remote)}", check=False, action="remove the results file")
    doc = parse_results(text, spec, expected)
    runs = doc["runs"]
    threads = runs[0]["threads"]
    warnings = []
    if manifest.threads and threads != manifest.threads:
        warnings.append(f"the app's runtime used {threads} threads (LlmModule picks performant cores - 1);"
                        f" the profile asks for {manifest.threads}")
    short = [r["gen_tokens"] for r in runs if r["gen_tokens"] < gen_len]
    if short:
        warnings.append(f"some runs stopped early at end-of-sequence ({min(short)} < {gen_len} tokens)")
    if prompt is None and any(r["prompt_tokens"] != prompt_len for r in runs):
        warnings.append(f"prompt length calibrated to {runs[0]['prompt_tokens']} tokens, not {prompt_len}")
    for w in warnings:
        warn(w)
    result = TestResult(device=replace(device, warnings=tuple(warnings)),
                        case=Case(int(runs[0]["prompt_tokens"]), gen_len, threads),
                        cpu_set=tuple(runs[0]["cpu_set"]), runs=list(runs), env={"memory": doc.get("memory")},
                        test_time=test_time, warmup=warmup, reps=reps, runner="android_app")
    return result, doc
