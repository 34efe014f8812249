"""The native latency harness (native/latency_main.cpp): build it with CMake, run it, parse its JSON lines.

The harness prints one JSON object per measured run on stdout (fields: protocol.RUN_FIELDS, plus provenance
keys); everything else it says goes to stderr. Builds are cached: a build directory is reused as long as the
sources and the build inputs (runtime, interpreter, executorch version, NDK, prefix) are unchanged.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import HarnessError
from .protocol import harness_argv, parse_runs

REPO_ROOT = Path(__file__).resolve().parents[2]
NATIVE_DIR = REPO_ROOT / "native"
SOURCES = ("CMakeLists.txt", "latency_main.cpp")
BINARY_NAME = "latency_main"
STAMP_NAME = ".harness-stamp"
MIN_CMAKE = (3, 28)  # the executorch wheel's imported targets need it
ANDROID_ABI = "arm64-v8a"
ANDROID_PLATFORM = "android-26"

Progress = Callable[[str], None]


def build_host(build_dir: Path | None = None, *, jobs: int = 2, progress: Progress | None = None) -> Path:
    """Build the harness against the executorch wheel of this interpreter; return the binary's path."""
    build_dir = Path(build_dir) if build_dir is not None else REPO_ROOT / "build" / "native-host"
    python = sys.executable
    cache_args = ["-DHARNESS_RUNTIME=wheel", f"-DHARNESS_PYTHON={python}", "-DCMAKE_BUILD_TYPE=Release"]
    return _build(build_dir, cache_args, jobs=jobs, progress=progress, extra_key=_executorch_version())


def build_android(
    ndk: Path,
    executorch_prefix: Path,
    build_dir: Path | None = None,
    *,
    jobs: int = 2,
    progress: Progress | None = None,
) -> Path:
    """Cross-compile the harness for Android arm64-v8a against an installed ExecuTorch source build."""
    ndk, executorch_prefix = Path(ndk).resolve(), Path(executorch_prefix).resolve()
    toolchain = ndk / "build" / "cmake" / "android.toolchain.cmake"
    if not toolchain.is_file():
        raise HarnessError(f"no Android NDK at {ndk}: {toolchain} is missing", hint="pass the NDK root (e.g. $ANDROID_NDK_HOME)")
    if not (executorch_prefix / "lib").is_dir() or not (executorch_prefix / "include" / "executorch").is_dir():
        raise HarnessError(
            f"{executorch_prefix} is not an installed ExecuTorch build (needs lib/ and include/executorch/)",
            hint="build ExecuTorch for Android and `cmake --install` it; see native/README.md",
        )
    build_dir = Path(build_dir) if build_dir is not None else REPO_ROOT / "build" / f"native-android-{ANDROID_ABI}"
    cache_args = [
        f"-DCMAKE_TOOLCHAIN_FILE={toolchain}",
        f"-DANDROID_ABI={ANDROID_ABI}",
        f"-DANDROID_PLATFORM={ANDROID_PLATFORM}",
        "-DHARNESS_RUNTIME=source",
        f"-DEXECUTORCH_PREFIX={executorch_prefix}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    return _build(build_dir, cache_args, jobs=jobs, progress=progress, extra_key="")


def run_host(
    pte: Path,
    *,
    prompt_len: int,
    gen_len: int,
    reps: int = 3,
    warmup: int = 1,
    threads: int = 2,
    cpu_set: Sequence[int] = (),
    prefill_chunk: int | None = None,
    binary: Path | None = None,
    timeout: float | None = None,
) -> list[dict]:
    """Run the harness on this machine (building it first unless `binary` is given)."""
    pte = Path(pte)
    if not pte.is_file():
        raise HarnessError(f"no .pte at {pte}")
    binary = Path(binary) if binary is not None else build_host()
    argv = harness_argv(
        str(binary), str(pte), prompt_len=prompt_len, gen_len=gen_len, reps=reps, warmup=warmup,
        threads=threads, cpu_set=cpu_set, prefill_chunk=prefill_chunk,
    )
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout,
                              encoding="utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        raise HarnessError(f"the harness did not finish within {timeout:.0f} s", hint="pass a longer run timeout") from None
    except OSError as err:
        raise HarnessError(f"cannot start the harness {binary}: {err}") from err
    if proc.returncode != 0:
        raise HarnessError(
            f"harness exited with status {proc.returncode}: {_last_error(proc.stderr)}",
            hint=_tail(proc.stderr, 8),
        )
    return parse_runs(proc.stdout)


# --------------------------------------------------------------------------------------------- internals


def _build(build_dir: Path, cache_args: list[str], *, jobs: int, progress: Progress | None, extra_key: str) -> Path:
    if not (NATIVE_DIR / "CMakeLists.txt").is_file():
        raise HarnessError(f"harness sources not found in {NATIVE_DIR}", hint="run from a checkout of the repository")
    cmake = _find_cmake()
    binary = build_dir / BINARY_NAME
    stamp = build_dir / STAMP_NAME
    key = _fingerprint(cmake, cache_args, extra_key)
    if binary.is_file() and stamp.is_file() and stamp.read_text() == key:
        return binary
    say = progress or (lambda _msg: None)
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    say(f"configuring the native harness in {build_dir}")
    _run_cmake([cmake, "-S", str(NATIVE_DIR), "-B", str(build_dir), *cache_args], "configure")
    say(f"building the native harness with {jobs} job(s)")
    _run_cmake([cmake, "--build", str(build_dir), "--parallel", str(max(1, int(jobs)))], "build")
    if not binary.is_file():
        raise HarnessError(f"the build finished but {binary} is missing")
    stamp.write_text(key)
    return binary


def _find_cmake() -> str:
    """The newest usable cmake: the one next to this interpreter (pip's `cmake`) first, then PATH."""
    candidates = [Path(sys.executable).parent / "cmake", shutil.which("cmake")]
    found = []
    for cand in candidates:
        if not cand or not Path(cand).is_file():
            continue
        version = _cmake_version(str(cand))
        if version is not None:
            found.append((version, str(cand)))
    usable = [c for c in found if c[0] >= MIN_CMAKE]
    if not usable:
        have = ", ".join(f"{p} {'.'.join(map(str, v))}" for v, p in found) or "none"
        raise HarnessError(
            f"CMake >= {'.'.join(map(str, MIN_CMAKE))} is needed to build the harness (found: {have})",
            hint="pip install 'cmake>=3.28' into this environment",
        )
    return max(usable)[1]


def _cmake_version(cmake: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([cmake, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    match = re.search(r"cmake version (\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def _fingerprint(cmake: str, cache_args: list[str], extra_key: str) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (NATIVE_DIR / name).read_bytes() + b"\0")
    for part in (cmake, ".".join(map(str, _cmake_version(cmake) or ())), *cache_args, extra_key):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "executorch " + version("executorch")
    except PackageNotFoundError as err:
        raise HarnessError("the executorch package is not installed in this environment") from err


def _run_cmake(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as err:
        raise HarnessError(f"cannot run {argv[0]}: {err}") from err
    if proc.returncode != 0:
        raise HarnessError(
            f"cmake {what} of the native harness failed (status {proc.returncode}):\n{_tail(proc.stdout, 25)}",
            hint="a compiler and CMake >= 3.28 are needed; delete the build folder to start from scratch",
        )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _last_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else "(no output on stderr)"
