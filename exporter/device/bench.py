"""Benchmark an export folder on phones (through adb) or on this machine (`--host`).

On a phone: detect it, push the export and the harness (skipping what is already there), pin to the
profile's performance cores, and for each prompt length run warm-up + repetitions, waiting between runs for
the CPU to cool below a threshold. CPU frequencies, temperatures and the battery state are recorded beside
each result. The harness prints one JSON object per run (protocol.RUN_FIELDS); the stock ExecuTorch
`llama_main` runner is also accepted and its `PyTorchObserver {...}` line is mapped to the same fields.

Library code: raises typed errors, reports progress through `say`, never prints.
"""

from __future__ import annotations

import json
import os
import platform
import posixpath
import shlex
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from ..errors import (
    DeviceError,
    ExporterError,
    HarnessError,
    PartialBenchError,
    ProfileError,
)
from .adb import Adb, is_standin
from .protocol import harness_argv, parse_observer, parse_runs
from .push import push_artifact, push_files, sha256_file
from .telemetry import (
    THERMAL_SCRIPT,
    cpu_temp_c,
    host_cpu_freqs,
    host_cpu_name,
    measure_host_bandwidth,
    parse_thermal,
    snapshot,
    wait_cool,
)

Say = Callable[[str], None]

EM_AARCH64 = 183
REMOTE_HARNESS = "exporter_harness"
REMOTE_LLAMA_MAIN = "llama_main"
# Test-only: lets the stand-in adb run a host-built harness. Refused unless the adb client is the stand-in.
STANDIN_HOST_HARNESS_ENV = "EXPORTER_STANDIN_HOST_HARNESS"
RUNNERS = ("harness", "llama_main")


@dataclass(frozen=True)
class BenchSpec:
    prompt_lengths: tuple[int, ...] = (64,)
    gen_len: int = 128
    reps: int = 5
    warmup: int = 1
    threads: int | None = None  # None: the manifest's, else the profile's
    cooldown_temp_c: float | None = 45.0  # None: do not wait between runs
    cooldown_timeout_s: float = 120.0
    runner: str = "harness"

    def __post_init__(self) -> None:
        if not self.prompt_lengths or any(p < 1 for p in self.prompt_lengths):
            raise ExporterError(f"prompt lengths must be positive, got {list(self.prompt_lengths)}")
        if self.gen_len < 1 or self.reps < 1 or self.warmup < 0:
            raise ExporterError("--gen and --repeat must be >= 1 and --warmup >= 0")
        if self.runner not in RUNNERS:
            raise ExporterError(f"unknown runner {self.runner!r}", hint=f"choose one of {', '.join(RUNNERS)}")


@dataclass(frozen=True)
class ExportInfo:
    """What a bench needs from an export folder (the manifest is the truth, not the folder name)."""

    folder: Path
    pte: Path
    pte_bytes: int
    pte_sha256: str
    model_id: str | None
    recipe: str | None
    profile_id: str | None
    max_seq_len: int | None
    threads: int | None
    cpu_set: tuple[int, ...]
    versions: dict

    @classmethod
    def load(cls, folder: Path) -> "ExportInfo":
        folder = Path(folder)
        pte = folder / "model.pte"
        if not pte.is_file():
            raise ExporterError(f"{folder} has no model.pte", hint="pass the output folder of `exporter export`")
        manifest: dict = {}
        mpath = folder / "manifest.json"
        if mpath.is_file():
            try:
                manifest = json.loads(mpath.read_text())
            except json.JSONDecodeError as err:
                raise ExporterError(f"{mpath} is not valid JSON: {err}") from err
        sha = sha256_file(pte)
        want = (manifest.get("pte") or {}).get("sha256")
        if want and want != sha:
            raise ExporterError(f"{pte} does not match its manifest (sha256 {sha[:12]}…, manifest {want[:12]}…)",
                                hint="re-export, or restore the original model.pte")
        recipe = manifest.get("recipe")
        return cls(
            folder=folder, pte=pte, pte_bytes=pte.stat().st_size, pte_sha256=sha,
            model_id=(manifest.get("model") or {}).get("id"),
            recipe=recipe.get("label") if isinstance(recipe, dict) else recipe,
            profile_id=(manifest.get("profile") or {}).get("id"), max_seq_len=manifest.get("max_seq_len"),
            threads=manifest.get("threads"), cpu_set=tuple(manifest.get("cpu_set") or ()),
            versions=dict(manifest.get("versions") or {}),
        )


@dataclass
class TestResult:
    """One (device, prompt length) test: its raw runs and what was recorded around them."""

    __test__ = False  # not a pytest class

    device: dict  # serial, model, soc_model, board_platform, android_release, sdk, profile ids, host
    prompt_len: int
    gen_len: int
    threads: int
    cpu_set: tuple[int, ...]
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


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------- harness binary


def check_harness_binary(path: Path, *, adb: Adb | None = None) -> None:
    """The phone harness must be an aarch64 ELF. The check can be skipped only for the stand-in adb (test-only
    env var EXPORTER_STANDIN_HOST_HARNESS=1), which runs pushed binaries on this machine."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"harness binary {path} does not exist",
                           hint="build it for Android: `exporter harness build --ndk NDK --executorch PREFIX`")
    if os.environ.get(STANDIN_HOST_HARNESS_ENV) == "1":
        if adb is not None and is_standin(adb):
            return
        raise HarnessError(f"{STANDIN_HOST_HARNESS_ENV}=1 is a test-only switch for the stand-in adb; "
                           "it is refused with a real adb client", hint=f"unset {STANDIN_HOST_HARNESS_ENV}")
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise HarnessError(f"harness {path} has the wrong architecture: not an ELF executable",
                           hint="pass an Android arm64-v8a build (`exporter harness build --ndk NDK --executorch PREFIX`)")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    if head[4] != 2 or machine != EM_AARCH64:
        names = {3: "x86", 62: "x86-64", 40: "arm (32-bit)", 183: "aarch64", 243: "riscv"}
        raise HarnessError(f"harness {path} has the wrong architecture: {names.get(machine, f'e_machine {machine}')}"
                           f"{'' if head[4] == 2 else ' (32-bit)'}, the phone needs aarch64 (arm64-v8a)",
                           hint="build it with the Android NDK: `exporter harness build --ndk NDK --executorch PREFIX`")


# --------------------------------------------------------------------------------------------- runners


def _last_lines(text: str, n: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _llama_prompt(n_tokens: int) -> str:
    """About n_tokens tokens of plain text (llama_main takes text; it reports the exact count it used)."""
    return " ".join(["hello"] * max(1, n_tokens - 1))


# --------------------------------------------------------------------------------------------- one phone


@dataclass(frozen=True)
class PhoneOptions:
    harness: Path | None = None
    runner_binary: Path | None = None  # llama_main
    tokenizer: Path | None = None
    remote_dir: str | None = None
    adb_path: str | None = None


def bench_phone(serial: str, info: ExportInfo, spec: BenchSpec, opts: PhoneOptions, *,
                say: Say | None = None, warn: Say | None = None) -> list[TestResult]:
    """Run every prompt length on one phone. DeviceError (phone gone) propagates; a harness failure for one
    length is recorded on that TestResult; when every length fails, the first HarnessError is raised."""
    from ..profiles import load_profile
    from .detect import describe

    say = say or (lambda _m: None)
    warn = warn or say
    tag = f"[{serial}] "
    adb = Adb(serial, opts.adb_path)
    dev = describe(adb)
    for w in dev.warnings:
        warn(tag + w)
    profile_id = info.profile_id or dev.profile_id
    if profile_id is None:
        raise ProfileError(f"the export has no profile in its manifest and {dev.summary()} matches none",
                           hint=f"nearest profile: {dev.nearest_profile_id}")
    profile = load_profile(profile_id)
    if dev.profile_id and dev.profile_id != profile.id:
        warn(f"{tag}the .pte was built for profile {profile.id} but this phone matches {dev.profile_id}")
    cpu_set = tuple(info.cpu_set or profile.cpu_set)
    if spec.runner == "harness" and cpu_set and dev.cpu_count and (
            set(cpu_set) - set(dev.big_cores) or max(cpu_set) >= dev.cpu_count):
        warn(f"{tag}pinning to cpus {list(cpu_set)} (profile {profile.id}) but detection found performance cores "
             f"{list(dev.big_cores)}")
    threads = spec.threads or info.threads or profile.threads

    # push: the export, then the runner binary (checked for the phone's architecture)
    binary_path = opts.harness if spec.runner == "harness" else opts.runner_binary
    if binary_path is None:
        raise HarnessError(f"no {'harness' if spec.runner == 'harness' else 'llama_main'} binary given for the phone",
                           hint="pass --harness PATH (an Android arm64 build: `exporter harness build --ndk NDK --executorch PREFIX`)")
    check_harness_binary(Path(binary_path), adb=adb)
    pushed = push_artifact(adb, info.folder, opts.remote_dir, say=lambda m: say(tag + m))
    rdir = pushed.remote_dir
    remote_bin = REMOTE_HARNESS if spec.runner == "harness" else REMOTE_LLAMA_MAIN
    extra = [(Path(binary_path), remote_bin)]
    tokenizer_name = "tokenizer.json"
    if spec.runner == "llama_main":
        tok = Path(opts.tokenizer) if opts.tokenizer else info.folder / "tokenizer.json"
        if not tok.is_file():
            raise HarnessError(f"llama_main needs a tokenizer: {tok} does not exist", hint="pass --tokenizer PATH")
        tokenizer_name = tok.name
        if tok.parent.resolve() != info.folder.resolve():
            extra.append((tok, tok.name))
    push_files(adb, extra, rdir, say=lambda m: say(tag + m))
    adb.shell(f"chmod 755 {shlex.quote(posixpath.join(rdir, remote_bin))}", action="make the harness executable")

    device = {"serial": serial, "model": dev.model, "soc_model": dev.soc_model or dev.board_platform,
              "board_platform": dev.board_platform, "android_release": dev.android_release, "sdk": dev.sdk,
              "profile_id": profile.id, "detected_profile_id": dev.profile_id, "host": False,
              "bandwidth_gbps": profile.memory.bandwidth_gbps,
              "bandwidth_source": f"profile {profile.id}: memory.bandwidth_gbps (peak DRAM)",
              "warnings": list(dev.warnings)}
    results = []
    for plen in spec.prompt_lengths:
        res = TestResult(device=device, prompt_len=plen, gen_len=spec.gen_len, threads=threads, cpu_set=cpu_set,
                         test_time=now_rfc3339(), warmup=spec.warmup, reps=spec.reps, runner=spec.runner)
        if info.max_seq_len and plen + spec.gen_len > info.max_seq_len:
            res.error = (f"pp{plen}+tg{spec.gen_len} needs {plen + spec.gen_len} positions, the .pte allows "
                         f"{info.max_seq_len}")
            warn(tag + res.error)
            results.append(res)
            continue
        say(f"{tag}pp{plen}+tg{spec.gen_len}: {spec.reps} run(s) on cpus {list(cpu_set)} with {threads} thread(s)")
        before = snapshot(adb)
        res.env.update(temp_c_before=before["temp_c"], cpu_freq_khz_before=before["cpu_freq_khz"],
                       battery=before["battery"])
        try:
            res.runs = _run_length(adb, rdir, remote_bin, tokenizer_name, plen, spec, threads, cpu_set, tag, say)
        except HarnessError as err:
            res.error = str(err) + (f"\n{err.hint}" if err.hint else "")
            res.env["harness_error"] = err
            warn(f"{tag}pp{plen}: {err}")
        after = snapshot(adb)
        res.env.update(temp_c_after=after["temp_c"], cpu_freq_khz_after=after["cpu_freq_khz"],
                       battery_after=after["battery"])
        results.append(res)
    failed = [r for r in results if not r.ok]
    if failed and len(failed) == len(results):
        first = next((r.env.get("harness_error") for r in failed if r.env.get("harness_error")), None)
        if first is not None:
            raise first
    for r in results:
        r.env.pop("harness_error", None)
    return results


def _run_length(adb: Adb, rdir: str, remote_bin: str, tokenizer_name: str, plen: int, spec: BenchSpec,
                threads: int, cpu_set: tuple[int, ...], tag: str, say: Say) -> list[dict]:
    """All repetitions of one prompt length: one process per run when cooling down between runs."""
    per_run = spec.cooldown_temp_c is not None or spec.runner == "llama_main"
    invocations = spec.reps if per_run else 1
    runs: list[dict] = []
    for i in range(invocations):
        cool = None
        if spec.cooldown_temp_c is not None:
            def read() -> float | None:
                return cpu_temp_c(parse_thermal(adb.shell(THERMAL_SCRIPT, check=False,
                                                          action="read temperatures").stdout.splitlines()))
            cool = wait_cool(read, spec.cooldown_temp_c, spec.cooldown_timeout_s)
            if cool["cooldown_wait_s"] > 0:
                say(f"{tag}waited {cool['cooldown_wait_s']:.0f} s for the CPU to cool to {cool['temp_c']} °C"
                    + (" (timed out)" if cool["cooldown_timed_out"] else ""))
        command = _command(rdir, remote_bin, tokenizer_name, plen, spec, threads, cpu_set,
                           reps=1 if per_run else spec.reps)
        result = adb.shell(command, check=False, timeout=None, action=f"run the benchmark (pp{plen})")
        if result.rc != 0:
            detail = _last_lines(result.stderr or result.stdout, 8)
            last = detail.splitlines()[-1] if detail else "no output"
            raise HarnessError(f"the runner failed on '{adb.serial}' (exit {result.rc}) for pp{plen}: {last}",
                               hint=f"its last output lines:\n{detail}")
        if spec.runner == "llama_main":
            got = [parse_observer(result.stdout + "\n" + result.stderr)]
        else:
            got = parse_runs(result.stdout)
        for run in got:
            run = dict(run)
            run["run"] = len(runs)
            run.setdefault("threads", threads)
            run.setdefault("cpu_set", list(cpu_set))
            if cool is not None:
                run.update(temp_c_before=cool["temp_c"], cooldown_wait_s=cool["cooldown_wait_s"],
                           cooldown_timed_out=cool["cooldown_timed_out"])
            runs.append(run)
    return runs


def _command(rdir: str, remote_bin: str, tokenizer_name: str, plen: int, spec: BenchSpec, threads: int,
             cpu_set: tuple[int, ...], *, reps: int) -> str:
    q = shlex.quote
    binary = posixpath.join(rdir, remote_bin)
    pte = posixpath.join(rdir, "model.pte")
    if spec.runner == "harness":
        argv = harness_argv(binary, pte, prompt_len=plen, gen_len=spec.gen_len, reps=reps, warmup=spec.warmup,
                            threads=threads, cpu_set=cpu_set)
        return f"cd {q(rdir)} && " + " ".join(q(a) for a in argv)
    mask = sum(1 << c for c in cpu_set)
    pin = f"taskset {mask:x} " if cpu_set else ""
    argv = [binary, "--model_path", pte, "--tokenizer_path", posixpath.join(rdir, tokenizer_name),
            "--prompt", _llama_prompt(plen), "--seq_len", str(plen + spec.gen_len), "--cpu_threads", str(threads),
            "--temperature", "0"]
    if spec.warmup:
        argv.append("--warmup")
    return f"cd {q(rdir)} && {pin}" + " ".join(q(a) for a in argv)


# --------------------------------------------------------------------------------------------- host


def bench_host(info: ExportInfo, spec: BenchSpec, *, binary: Path | None = None,
               bandwidth_gbps: float | None = None, say: Say | None = None, warn: Say | None = None) -> list[TestResult]:
    """The same measurement on this machine with the host-built harness (what CI and the benchmarks use)."""
    from .harness import build_host, run_host

    say = say or (lambda _m: None)
    warn = warn or say
    if spec.runner != "harness":
        raise ExporterError("--host runs the exporter harness only (not llama_main)")
    binary = Path(binary) if binary else build_host(progress=say)
    threads = spec.threads or min(info.threads or 4, os.cpu_count() or 1)
    if bandwidth_gbps is not None:
        bw, source = float(bandwidth_gbps), "host: --host-bandwidth-gbps (given)"
    else:
        bw, source = measure_host_bandwidth()
    device = {"serial": "host", "model": platform.node() or "host", "soc_model": host_cpu_name(),
              "board_platform": platform.machine(), "android_release": None, "sdk": None,
              "profile_id": info.profile_id, "detected_profile_id": None, "host": True,
              "bandwidth_gbps": bw, "bandwidth_source": source, "warnings": []}
    results: list[TestResult] = []
    first_error: HarnessError | None = None
    for plen in spec.prompt_lengths:
        res = TestResult(device=device, prompt_len=plen, gen_len=spec.gen_len, threads=threads, cpu_set=(),
                         test_time=now_rfc3339(), warmup=spec.warmup, reps=spec.reps, runner="harness")
        if info.max_seq_len and plen + spec.gen_len > info.max_seq_len:
            res.error = (f"pp{plen}+tg{spec.gen_len} needs {plen + spec.gen_len} positions, the .pte allows "
                         f"{info.max_seq_len}")
            warn(res.error)
            results.append(res)
            continue
        say(f"[host] pp{plen}+tg{spec.gen_len}: {spec.reps} run(s) with {threads} thread(s)")
        res.env["cpu_freq_khz_before"] = host_cpu_freqs()
        try:
            res.runs = run_host(info.pte, prompt_len=plen, gen_len=spec.gen_len, reps=spec.reps, warmup=spec.warmup,
                                threads=threads, cpu_set=(), binary=binary)
        except HarnessError as err:
            res.error = str(err) + (f"\n{err.hint}" if err.hint else "")
            first_error = first_error or err
            warn(f"[host] pp{plen}: {err}")
        res.env["cpu_freq_khz_after"] = host_cpu_freqs()
        results.append(res)
    if first_error is not None and not any(r.ok for r in results):
        raise first_error
    return results


# --------------------------------------------------------------------------------------------- several phones


def run_bench(folder: Path, spec: BenchSpec, *, serials: Sequence[str] = (), host: bool = False,
              opts: PhoneOptions = PhoneOptions(), host_binary: Path | None = None,
              host_bandwidth_gbps: float | None = None, say: Say | None = None,
              warn: Say | None = None) -> list[TestResult]:
    """Bench on this machine or on each serial (in parallel). With one phone, a DeviceError or a total harness
    failure is raised and nothing is reported; with several, a failing phone's tests come back failed."""
    info = ExportInfo.load(folder)
    if host:
        return bench_host(info, spec, binary=host_binary, bandwidth_gbps=host_bandwidth_gbps, say=say, warn=warn)
    if not serials:
        raise DeviceError("no phone selected", hint="pass --serial SERIAL, --all, or --host")
    if len(serials) == 1:
        return bench_phone(serials[0], info, spec, opts, say=say, warn=warn)

    def one(serial: str) -> list[TestResult]:
        try:
            return bench_phone(serial, info, spec, opts, say=say, warn=warn)
        except ExporterError as err:
            if warn:
                warn(f"[{serial}] failed: {err}")
            device = {"serial": serial, "model": None, "soc_model": None, "board_platform": None,
                      "android_release": None, "sdk": None, "profile_id": info.profile_id,
                      "detected_profile_id": None, "host": False, "bandwidth_gbps": None, "bandwidth_source": None,
                      "warnings": []}
            return [TestResult(device=device, prompt_len=p, gen_len=spec.gen_len, threads=spec.threads or 0,
                               cpu_set=(), error=f"{type(err).__name__}: {err}", test_time=now_rfc3339(),
                               warmup=spec.warmup, reps=spec.reps, runner=spec.runner)
                    for p in spec.prompt_lengths]

    with ThreadPoolExecutor(max_workers=len(serials)) as pool:
        per_phone = list(pool.map(one, serials))
    return [r for rs in per_phone for r in rs]


def raise_for_failures(results: Sequence[TestResult]) -> None:
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(f"{r.device.get('serial')}:pp{r.prompt_len}" for r in failed)
        raise PartialBenchError(f"{len(failed)} of {len(results)} test(s) failed ({names}); their rows have null metrics",
                                hint="see the warnings above for each failure")


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


