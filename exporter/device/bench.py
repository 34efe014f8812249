"""Benchmark an export folder on phones (through adb) or on this machine (`--host`), llama-bench style.

A BenchSpec is a grid (threads x prompt lengths x generation lengths, each a list); every combination is one
test. One loop, `run_tests`, runs the tests on a Target: a phone (detected, the export and the runner pushed,
pinned to the profile's performance cores, waiting between runs for the CPU to cool) or this host. The
runner prints one JSON object per run (protocol.RUN_FIELDS); ExecuTorch's stock `llama_main` is accepted too
and its `PyTorchObserver {...}` line is mapped to the same fields. What the device reported around each
test (temperatures, frequencies, battery) is recorded beside it.

Library code: raises typed errors, reports progress through `say`, never prints.
"""

from __future__ import annotations

import itertools
import os
import platform
import posixpath
import shlex
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from ..artifact import Artifact
from ..errors import DeviceError, ExporterError, HarnessError, PartialBenchError, ProfileError, UsageError
from .adb import Adb
from .bandwidth import host_bandwidth
from .protocol import harness_argv, llama_main_argv, parse_observer, parse_runs
from .push import LocalFile, push_artifact, push_files
from .telemetry import THERMAL_SCRIPT, cpu_temp_c, host_cpu_freqs, host_cpu_name, parse_thermal, snapshot, wait_cool

Say = Callable[[str], None]

REMOTE_HARNESS = "exporter_harness"
REMOTE_LLAMA_MAIN = "llama_main"
RUNNERS = ("harness", "llama_main")
# ELF e_machine of each `uname -m` a phone (or emulator, or stand-in) may report.
ELF_MACHINES = {"aarch64": 183, "arm64": 183, "armv8l": 40, "armv7l": 40, "x86_64": 62, "i686": 3, "riscv64": 243}
_ELF_NAMES = {183: "aarch64", 40: "arm (32-bit)", 62: "x86-64", 3: "x86", 243: "riscv"}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _nop(_message: str) -> None:
    return None


@dataclass(frozen=True)
class Case:
    """One test of the grid."""

    prompt_len: int
    gen_len: int
    threads: int

    @property
    def name(self) -> str:
        return f"pp{self.prompt_len}+tg{self.gen_len}"


@dataclass(frozen=True)
class BenchSpec:
    """What to measure. Every list is an axis of the grid (like llama-bench's `-p 64,512 -n 128 -t 2,4`)."""

    prompt_lengths: tuple[int, ...] = (64,)
    gen_lengths: tuple[int, ...] = (128,)
    threads: tuple[int, ...] = ()  # empty: the manifest's (phones) / min(manifest's, cores) on the host
    reps: int = 5
    warmup: int = 1
    cooldown_temp_c: float | None = 45.0  # None: do not wait between runs
    cooldown_timeout_s: float = 120.0
    runner: str = "harness"
    run_timeout_s: float | None = None  # None: scaled with the tokens a run processes
    prefill_chunk: int | None = None  # harness: prompt tokens per prefill call (None: the program's limit)

    def __post_init__(self) -> None:
        for name in ("prompt_lengths", "gen_lengths"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise UsageError(f"{name.replace('_', ' ')} must be positive integers, got {list(values)}")
        if any(not isinstance(t, int) or t < 1 for t in self.threads):
            raise UsageError(f"thread counts must be positive integers, got {list(self.threads)}")
        if self.reps < 1 or self.warmup < 0:
            raise UsageError("--repeat must be >= 1 and --warmup >= 0")
        if self.runner not in RUNNERS:
            raise UsageError(f"unknown runner {self.runner!r}", hint=f"choose one of {', '.join(RUNNERS)}")
        if self.prefill_chunk is not None:
            if self.prefill_chunk < 1:
                raise UsageError(f"--prefill-chunk must be a positive integer, got {self.prefill_chunk}")
            if self.runner != "harness":
                raise UsageError("--prefill-chunk is a harness setting",
                                 hint="llama_main splits prompts by the program's get_max_seq_len itself")

    def cases(self, default_threads: int) -> list[Case]:
        """The grid, threads outermost (a runner process per thread count keeps its pool warm)."""
        threads = self.threads or (default_threads,)
        return [Case(p, g, t) for t, p, g in itertools.product(threads, self.prompt_lengths, self.gen_lengths)]

    def timeout(self, case: Case, reps: int) -> float:
        """Seconds one runner invocation may take before it counts as hung (a slow phone decodes ~2 tok/s)."""
        if self.run_timeout_s is not None:
            return self.run_timeout_s
        return 120.0 + (reps + self.warmup) * (0.2 * case.prompt_len + 2.0 * case.gen_len)


@dataclass(frozen=True)
class DeviceInfo:
    """Where a test ran: a phone as detection read it, or this host."""

    serial: str
    host: bool = False
    model: str | None = None
    soc: str | None = None
    board_platform: str | None = None
    android_release: str | None = None
    sdk: int | None = None
    profile_id: str | None = None  # the profile the run used (the manifest's)
    detected_profile_id: str | None = None  # the profile the phone matched by detection
    bandwidth_gbps: float | None = None
    bandwidth_source: str | None = None
    emulated: bool = False  # the runner ran under an emulator: its timings are no phone's speed
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TestResult:
    """One test of the grid on one device: its raw runs and what was recorded around them."""

    __test__ = False  # not a pytest class

    device: DeviceInfo
    case: Case
    cpu_set: tuple[int, ...] = ()
    runs: list[dict] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    error: str | None = None
    test_time: str = ""
    warmup: int = 0
    reps: int = 0
    runner: str = "harness"

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.runs)

    @property
    def prompt_len(self) -> int:
        return self.case.prompt_len

    @property
    def gen_len(self) -> int:
        return self.case.gen_len

    @property
    def threads(self) -> int:
        return self.case.threads


# --------------------------------------------------------------------------------------------- targets


class Target:
    """Where tests run. Subclasses say how to run one case and what the device's state is."""

    device: DeviceInfo
    cpu_set: tuple[int, ...] = ()
    default_threads: int = 1
    tag: str = ""

    def state(self) -> dict[str, Any]:
        """Temperatures, frequencies, battery: whatever the device can report (keys: temp_c, cpu_freq_khz, battery)."""
        return {}

    def temperature(self) -> float | None:
        """The hottest CPU zone now, or None when the device has no thermal zones to read."""
        return None

    def run(self, case: Case, reps: int, warmup: int, timeout: float) -> list[dict]:
        raise NotImplementedError


class HostTarget(Target):
    """This machine, with the host-built harness."""

    def __init__(self, artifact: Artifact, binary: Path, *, threads: Sequence[int] = (),
                 bandwidth_gbps: float | None = None, prefill_chunk: int | None = None):
        self.artifact, self.binary, self.prefill_chunk = artifact, binary, prefill_chunk
        self.default_threads = min(artifact.manifest.threads, os.cpu_count() or 1)
        if bandwidth_gbps is not None:
            bw, source = float(bandwidth_gbps), "host: --host-bandwidth-gbps (given)"
        else:
            # the grid's largest thread count: what the fastest decode can pull from memory
            measured, cached = host_bandwidth(max(threads, default=self.default_threads))
            bw, source = measured.gbps, measured.source(cached)
        self.device = DeviceInfo(serial="host", host=True, model=platform.node() or "host", soc=host_cpu_name(),
                                 board_platform=platform.machine(), profile_id=artifact.manifest.profile.id,
                                 bandwidth_gbps=bw, bandwidth_source=source)
        self.tag = "[host] "

    def state(self) -> dict[str, Any]:
        return {"cpu_freq_khz": host_cpu_freqs()}

    def run(self, case: Case, reps: int, warmup: int, timeout: float) -> list[dict]:
        from .harness import run_host

        return run_host(self.artifact.pte_path, prompt_len=case.prompt_len, gen_len=case.gen_len, reps=reps,
                        warmup=warmup, threads=case.threads, prefill_chunk=self.prefill_chunk,
                        binary=self.binary, timeout=timeout)


@dataclass(frozen=True)
class PhoneOptions:
    harness: Path | None = None  # the runner binary to push: exporter's harness, or llama_main
    tokenizer: Path | None = None  # llama_main: default the export's tokenizer
    remote_dir: str | None = None
    adb_path: str | None = None


def check_runner_binary(path: Path, machine: str | None) -> None:
    """The runner must be an ELF executable for the CPU the device reports (`uname -m`)."""
    path = Path(path)
    build_hint = "build it for Android: `exporter harness build --ndk NDK --executorch PREFIX`"
    if not path.is_file():
        raise HarnessError(f"runner binary {path} does not exist", hint=build_hint)
    head = path.read_bytes()[:20]
    if head[:2] == b"#!":
        return  # a wrapper script (such as a bundle's run.sh) runs in the device's shell; its target is its own
    if head[:4] != b"\x7fELF":
        raise HarnessError(f"runner {path} has the wrong format: neither an ELF executable nor a #! script",
                           hint=build_hint)
    got = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    want = ELF_MACHINES.get((machine or "aarch64").strip())
    if want is not None and got != want:
        raise HarnessError(f"runner {path} has the wrong architecture: {_ELF_NAMES.get(got, f'e_machine {got}')}, "
                           f"the device is {machine}", hint=build_hint)


class PhoneTarget(Target):
    """A phone over adb: detected, the export and the runner pushed (skipping what is already there)."""

    def __init__(self, adb: Adb, artifact: Artifact, spec: BenchSpec, opts: PhoneOptions, *, say: Say = _nop,
                 warn: Say = _nop):
        from ..profiles import load_profile
        from .detect import describe

        self.adb, self.spec = adb, spec
        self.tag = f"[{adb.serial}] "
        dev = describe(adb)
        for w in dev.warnings:
            warn(self.tag + w)
        manifest = artifact.manifest
        try:
            profile = load_profile(manifest.profile.id)
        except ProfileError:
            if dev.profile_id is None:
                raise ProfileError(f"the export's profile '{manifest.profile.id}' is not a shipped profile and "
                                   f"{dev.summary()} matches none", hint=f"nearest profile: {dev.nearest_profile_id}") from None
            profile = load_profile(dev.profile_id)
        if dev.profile_id and dev.profile_id != manifest.profile.id:
            warn(f"{self.tag}the .pte was built for profile {manifest.profile.id} but this phone matches {dev.profile_id}")
        self.cpu_set = tuple(manifest.cpu_set or profile.cpu_set)
        if spec.runner == "harness" and self.cpu_set and dev.cpu_count and (
                set(self.cpu_set) - set(dev.big_cores) or max(self.cpu_set) >= dev.cpu_count):
            warn(f"{self.tag}pinning to cpus {list(self.cpu_set)} (profile {profile.id}) but detection found "
                 f"performance cores {list(dev.big_cores)}")
        self.default_threads = manifest.threads or profile.threads
        self.device = DeviceInfo(
            serial=adb.serial, model=dev.model, soc=dev.soc_model or dev.board_platform,
            board_platform=dev.board_platform, android_release=dev.android_release, sdk=dev.sdk,
            profile_id=manifest.profile.id, detected_profile_id=dev.profile_id,
            bandwidth_gbps=profile.memory.bandwidth_gbps,
            bandwidth_source=f"profile {profile.id}: memory.bandwidth_gbps (peak DRAM)", warnings=dev.warnings,
            emulated=dev.emulated)
        missing_isa = [f for f in profile.isa if f not in dev.isa] if dev.isa else []
        if missing_isa and profile.id != dev.profile_id:  # detection already warned about its own match
            warn(f"{self.tag}profile {profile.id} expects {', '.join(missing_isa)}, which this phone does not report: "
                 "the .pte still runs, on slower kernels")

        binary = opts.harness
        self.bundle = None
        if spec.runner == "harness" and binary is not None and Path(binary).is_dir():
            from .cross import open_bundle

            self.bundle = open_bundle(Path(binary))
        elif spec.runner == "harness" and binary is None and (dev.machine or "").strip() in ("aarch64", "arm64"):
            from .cross import find_bundle

            self.bundle = find_bundle()
            if self.bundle is None:
                raise HarnessError("no harness given for the phone and no linux-arm64 bundle built",
                                   hint="pass --harness PATH (an Android build: `exporter harness build --ndk NDK "
                                        "--executorch PREFIX`), or build the self-contained arm64 bundle: "
                                        "`exporter harness build --target linux-arm64`")
            say(f"{self.tag}no --harness given: running the linux-arm64 bundle {self.bundle.folder}")
        if binary is None and self.bundle is None:
            raise HarnessError(f"no {spec.runner} binary given for the phone",
                               hint="pass --harness PATH (an Android arm64 build: "
                                    "`exporter harness build --ndk NDK --executorch PREFIX`)")
        check_runner_binary(self.bundle.binary if self.bundle else binary, dev.machine)
        tok = Path(opts.tokenizer) if spec.runner == "llama_main" and opts.tokenizer is not None else None
        if tok is not None and not tok.is_file():  # before anything is pushed
            raise HarnessError(f"llama_main needs a tokenizer: {tok} does not exist", hint="pass --tokenizer PATH")
        pushed = push_artifact(adb, artifact, opts.remote_dir, say=lambda m: say(self.tag + m))
        self.remote_dir = pushed.remote_dir
        self.remote_bin = REMOTE_HARNESS if spec.runner == "harness" else REMOTE_LLAMA_MAIN
        self.pte_remote = posixpath.join(self.remote_dir, artifact.manifest.pte.file)
        if self.bundle is not None:
            self._push_bundle(say)
            return
        extra = [LocalFile.of(Path(binary), self.remote_bin)]
        self.tokenizer_name = artifact.manifest.tokenizer.file
        if tok is not None:
            self.tokenizer_name = tok.name
            extra.append(LocalFile.of(tok))
        push_files(adb, extra, self.remote_dir, say=lambda m: say(self.tag + m))
        adb.shell(f"chmod 755 {shlex.quote(posixpath.join(self.remote_dir, self.remote_bin))}",
                  action="make the runner executable")

    def _push_bundle(self, say: Say) -> None:
        from .cross import push_bundle

        self.bundle_remote = push_bundle(self.adb, self.bundle, self.remote_dir, say=lambda m: say(self.tag + m))

    def state(self) -> dict[str, Any]:
        return snapshot(self.adb)

    def temperature(self) -> float | None:
        text = self.adb.shell(THERMAL_SCRIPT, check=False, action="read temperatures").stdout
        return cpu_temp_c(parse_thermal(text.splitlines()))

    def command(self, case: Case, reps: int, warmup: int) -> str:
        q = shlex.quote
        binary = posixpath.join(self.remote_dir, self.remote_bin)
        if self.spec.runner == "harness":
            argv = harness_argv(binary, self.pte_remote, prompt_len=case.prompt_len, gen_len=case.gen_len, reps=reps,
                                warmup=warmup, threads=case.threads, cpu_set=self.cpu_set,
                                prefill_chunk=self.spec.prefill_chunk)
            if self.bundle is not None:
                from .cross import bundle_argv

                argv = bundle_argv(self.bundle_remote, argv[1:])
            return f"cd {q(self.remote_dir)} && " + " ".join(q(a) for a in argv)
        argv = llama_main_argv(binary, self.pte_remote, posixpath.join(self.remote_dir, self.tokenizer_name),
                               prompt_len=case.prompt_len, gen_len=case.gen_len, threads=case.threads, warmup=bool(warmup))
        pin = f"taskset {sum(1 << c for c in self.cpu_set):x} " if self.cpu_set else ""
        return f"cd {q(self.remote_dir)} && {pin}" + " ".join(q(a) for a in argv)

    def run(self, case: Case, reps: int, warmup: int, timeout: float) -> list[dict]:
        result = self.adb.shell(self.command(case, reps, warmup), check=False, timeout=timeout,
                                action=f"run the benchmark ({case.name})")
        if result.rc != 0:
            detail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
            last = detail.splitlines()[-1] if detail else "no output"
            raise HarnessError(f"the runner failed on '{self.adb.serial}' (exit {result.rc}) for {case.name}: {last}",
                               hint=f"its last output lines:\n{detail}")
        if self.spec.runner == "llama_main":
            return [parse_observer(result.stdout + "\n" + result.stderr)]
        return parse_runs(result.stdout)


# --------------------------------------------------------------------------------------------- the loop


def run_tests(target: Target, artifact: Artifact, spec: BenchSpec, *, say: Say = _nop, warn: Say = _nop) -> list[TestResult]:
    """Every case of `spec` on `target`. A runner failure is recorded on its test; when every test fails, the
    first HarnessError is raised. A vanished phone (DeviceError) propagates."""
    thermal = spec.cooldown_temp_c is not None and target.temperature() is not None
    # one process per run when cooling down between runs (and for llama_main, which runs once per process)
    per_run = thermal or spec.runner == "llama_main"
    results: list[TestResult] = []
    first_error: HarnessError | None = None
    max_seq_len = artifact.manifest.max_seq_len
    for case in spec.cases(target.default_threads):
        res = TestResult(device=target.device, case=case, cpu_set=target.cpu_set, test_time=now_rfc3339(),
                         warmup=spec.warmup, reps=spec.reps, runner=spec.runner)
        results.append(res)
        if case.prompt_len + case.gen_len > max_seq_len:
            res.error = f"{case.name} needs {case.prompt_len + case.gen_len} positions, the .pte allows {max_seq_len}"
            warn(target.tag + res.error)
            continue
        say(f"{target.tag}{case.name}: {spec.reps} run(s) with {case.threads} thread(s)"
            + (f" on cpus {list(target.cpu_set)}" if target.cpu_set else ""))
        before = target.state()
        res.env.update({f"{k}_before" if k != "battery" else k: v for k, v in before.items()})
        try:
            for _ in range(spec.reps if per_run else 1):
                cool = None
                if thermal:
                    cool = wait_cool(target.temperature, spec.cooldown_temp_c, spec.cooldown_timeout_s)
                    if cool["cooldown_wait_s"] > 0:
                        say(f"{target.tag}waited {cool['cooldown_wait_s']:.0f} s for the CPU to cool to {cool['temp_c']} °C"
                            + (" (timed out)" if cool["cooldown_timed_out"] else ""))
                reps = 1 if per_run else spec.reps
                for run in target.run(case, reps, spec.warmup, spec.timeout(case, reps)):
                    run = {**run, "run": len(res.runs)}
                    run.setdefault("threads", case.threads)
                    run.setdefault("cpu_set", list(target.cpu_set))
                    if cool is not None:
                        run.update(temp_c_before=cool["temp_c"], cooldown_wait_s=cool["cooldown_wait_s"],
                                   cooldown_timed_out=cool["cooldown_timed_out"])
                    res.runs.append(run)
        except HarnessError as err:
            res.error = str(err) + (f"\n{err.hint}" if err.hint else "")
            first_error = first_error or err
            warn(f"{target.tag}{case.name}: {err}")
        after = target.state()
        res.env.update({f"{k}_after": v for k, v in after.items()})
    if first_error is not None and not any(r.ok for r in results):
        raise first_error
    return results


# --------------------------------------------------------------------------------------------- entry points


def bench_host(artifact: Artifact, spec: BenchSpec, *, binary: Path | None = None, bandwidth_gbps: float | None = None,
               say: Say = _nop, warn: Say = _nop) -> list[TestResult]:
    """The same measurement on this machine with the host-built harness (what CI and the benchmarks use)."""
    from .harness import build_host

    if spec.runner != "harness":
        raise UsageError("--host runs the exporter harness only (not llama_main)")
    binary = Path(binary) if binary else build_host(progress=say)
    target = HostTarget(artifact, binary, threads=spec.threads, bandwidth_gbps=bandwidth_gbps,
                        prefill_chunk=spec.prefill_chunk)
    return run_tests(target, artifact, spec, say=say, warn=warn)


def bench_phone(serial: str, artifact: Artifact, spec: BenchSpec, opts: PhoneOptions, *, say: Say = _nop,
                warn: Say = _nop) -> list[TestResult]:
    target = PhoneTarget(Adb(serial, opts.adb_path), artifact, spec, opts, say=say, warn=warn)
    return run_tests(target, artifact, spec, say=say, warn=warn)


def run_bench(folder: str | os.PathLike | Artifact, spec: BenchSpec, *, serials: Sequence[str] = (), host: bool = False,
              opts: PhoneOptions = PhoneOptions(), host_binary: Path | None = None,
              host_bandwidth_gbps: float | None = None, say: Say = _nop, warn: Say = _nop) -> list[TestResult]:
    """Bench on this machine or on each serial (in parallel). With one phone, a DeviceError or a total harness
    failure is raised and nothing is reported; with several, a failing phone's tests come back failed."""
    artifact = folder if isinstance(folder, Artifact) else Artifact.open(folder)
    artifact.check_hashes()
    if host:
        return bench_host(artifact, spec, binary=host_binary, bandwidth_gbps=host_bandwidth_gbps, say=say, warn=warn)
    if not serials:
        raise DeviceError("no phone selected", hint="pass --serial SERIAL, --all, or --host")
    if len(serials) == 1:
        return bench_phone(serials[0], artifact, spec, opts, say=say, warn=warn)

    def one(serial: str) -> list[TestResult]:
        try:
            return bench_phone(serial, artifact, spec, opts, say=say, warn=warn)
        except ExporterError as err:
            warn(f"[{serial}] failed: {err}")
            device = DeviceInfo(serial=serial, profile_id=artifact.manifest.profile.id)
            return [TestResult(device=device, case=case, error=f"{type(err).__name__}: {err}", test_time=now_rfc3339(),
                               warmup=spec.warmup, reps=spec.reps, runner=spec.runner)
                    for case in spec.cases(artifact.manifest.threads)]

    with ThreadPoolExecutor(max_workers=len(serials)) as pool:
        per_phone = list(pool.map(one, serials))
    return [r for rs in per_phone for r in rs]


def raise_for_failures(results: Sequence[TestResult]) -> None:
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(f"{r.device.serial}:{r.case.name}" for r in failed)
        raise PartialBenchError(f"{len(failed)} of {len(results)} test(s) failed ({names}); their rows have null metrics",
                                hint="see the warnings above for each failure")


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
