"""The harness for arm64 Linux (`exporter harness build --target linux-arm64`), and a self-contained bundle of it.

The build cross-compiles native/ with Debian's aarch64 g++ against the C++ package of the aarch64 executorch
wheel (unpacked by `bash scripts/setup.sh --arm` into .arm/). That wheel's llama::* kernels live in a Python
plugin that needs a (CUDA) libtorch, so this build compiles native/llm_ops.cpp instead (HARNESS_LLM_OPS=builtin).

The bundle is that binary with every shared library it needs and glibc's loader, in one flat folder:
`<folder>/ld-linux-aarch64.so.1 --library-path <folder> <folder>/latency_main ...` starts it on any arm64 Linux
kernel without relying on the target's own libraries; this is what lets it run from /data/local/tmp on an
Android phone that has no NDK build of the harness. It has only been run under qemu's user-mode emulator here.

Also: what the lane needs to run an aarch64 program on this x86 machine (qemu with a chosen CPU model).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..artifact import file_sha256
from ..errors import HarnessError
from .harness import NATIVE_DIR, REPO_ROOT, _build

ARM_DIR = REPO_ROOT / ".arm"
ARM_ENV = ARM_DIR / "arm.env"
TARGET = "linux-arm64"
LOADER = "ld-linux-aarch64.so.1"
BUNDLE_BINARY = "latency_main"
BUNDLE_MANIFEST = "bundle.json"
RUN_SH = "run.sh"
SETUP_HINT = "run `bash scripts/setup.sh --arm` (cross compiler, qemu and the aarch64 executorch wheel)"
# ELF e_machine of aarch64
EM_AARCH64 = 183

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ArmEnv:
    """Where scripts/setup_arm.sh put the lane's tools (read from .arm/arm.env)."""

    qemu: Path
    sysroot: Path  # the arm64 glibc / libstdc++ runtime (Debian's cross packages)
    executorch_dir: Path  # the unpacked aarch64 wheel's `executorch` package folder
    executorch_version: str
    cxx: Path
    cc: Path


def load_arm_env(path: Path = ARM_ENV) -> ArmEnv:
    """The lane's tools, checked to exist; HarnessError (with the set-up command as hint) when they do not."""
    if not path.is_file():
        raise HarnessError(f"the arm64 lane is not set up ({path} is missing)", hint=SETUP_HINT)
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.fullmatch(r"([A-Z_]+)=(.*)", line.strip())
        if m:
            values[m.group(1)] = m.group(2)
    missing = [k for k in ("QEMU", "SYSROOT", "EXECUTORCH_DIR", "EXECUTORCH_VERSION", "CXX", "CC") if not values.get(k)]
    if missing:
        raise HarnessError(f"{path} lacks {', '.join(missing)}", hint=SETUP_HINT)
    env = ArmEnv(qemu=Path(values["QEMU"]), sysroot=Path(values["SYSROOT"]),
                 executorch_dir=Path(values["EXECUTORCH_DIR"]), executorch_version=values["EXECUTORCH_VERSION"],
                 cxx=Path(values["CXX"]), cc=Path(values["CC"]))
    for what, p in (("qemu", env.qemu), ("aarch64 g++", env.cxx), ("aarch64 gcc", env.cc),
                    ("arm64 loader", env.sysroot / "lib" / LOADER),
                    ("aarch64 executorch CMake package", env.executorch_dir / "share" / "cmake" / "executorch-config.cmake")):
        if not p.exists():
            raise HarnessError(f"{what} not found at {p}", hint=SETUP_HINT)
    return env


def arm_lane_ready() -> str | None:
    """None when the lane can run, else why not (for skip messages)."""
    try:
        load_arm_env()
    except HarnessError as err:
        return f"{err} ({err.hint})"
    return None


# --------------------------------------------------------------------------------------------- build


def _toolchain_file(env: ArmEnv, build_dir: Path) -> Path:
    text = (
        "# written by exporter/device/cross.py: Debian's aarch64 cross compiler\n"
        "set(CMAKE_SYSTEM_NAME Linux)\n"
        "set(CMAKE_SYSTEM_PROCESSOR aarch64)\n"
        f"set(CMAKE_C_COMPILER {env.cc})\n"
        f"set(CMAKE_CXX_COMPILER {env.cxx})\n"
        "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)\n"
        "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)\n"
        "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)\n"
        # the executorch package is found by an explicit executorch_DIR outside any root path
        "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)\n"
    )
    build_dir.mkdir(parents=True, exist_ok=True)
    path = build_dir / "aarch64-linux-gnu.cmake"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def build_linux_arm64(build_dir: Path | None = None, *, jobs: int = 2, progress: Progress | None = None) -> Path:
    """Cross-compile the harness for arm64 Linux against the aarch64 executorch wheel; return the binary."""
    env = load_arm_env()
    build_dir = Path(build_dir) if build_dir is not None else REPO_ROOT / "build" / f"native-{TARGET}"
    cache_args = [
        f"-DCMAKE_TOOLCHAIN_FILE={_toolchain_file(env, build_dir)}",
        "-DHARNESS_RUNTIME=wheel",
        "-DHARNESS_LLM_OPS=builtin",
        f"-DHARNESS_EXECUTORCH_DIR={env.executorch_dir}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    # llm_ops.cpp is a source of this build only; the shared fingerprint does not know it.
    key = f"executorch {env.executorch_version} (aarch64); llm_ops {file_sha256(NATIVE_DIR / 'llm_ops.cpp')}; {env.cxx}"
    binary = _build(build_dir, cache_args, jobs=jobs, progress=progress, extra_key=key)
    if elf_machine(binary) != EM_AARCH64:
        raise HarnessError(f"the cross-build produced {binary}, which is not an aarch64 ELF")
    return binary


# --------------------------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class Bundle:
    folder: Path
    binary: Path
    loader: Path
    libs: tuple[Path, ...]
    run_sh: Path

    def files(self) -> list[Path]:
        """Everything a phone needs, in push order (the manifest last, as a marker of a complete folder)."""
        return [self.binary, self.loader, *self.libs, self.run_sh, self.folder / BUNDLE_MANIFEST]

    def to_dict(self) -> dict:
        return {"target": TARGET, "binary": str(self.binary), "bundle": str(self.folder), "loader": str(self.loader),
                "libs": [str(p) for p in self.libs], "run_sh": str(self.run_sh)}


RUN_SH_TEXT = """\
# The exporter harness for arm64 Linux/Android, with its own glibc loader and libraries (exporter/device/cross.py).
# Run it as `sh run.sh --pte model.pte ...` from anywhere (for example /data/local/tmp/<folder>/run.sh on a phone).
# It ignores the system's libraries: the loader below is told to look only in this folder.
# If a phone refuses it (seccomp, SELinux exec rules, a noexec mount), build the harness with the Android NDK
# instead: `exporter harness build --ndk NDK --executorch PREFIX` (docs/device.md).
d=$(cd "$(dirname "$0")" && pwd)
exec "$d/ld-linux-aarch64.so.1" --library-path "$d" "$d/latency_main" "$@"
"""


def make_bundle(binary: Path, folder: Path | None = None, env: ArmEnv | None = None) -> Bundle:
    """Copy the linux-arm64 harness, its loader and the closure of its shared libraries into one folder."""
    env = env or load_arm_env()
    binary = Path(binary)
    if elf_machine(binary) != EM_AARCH64:
        raise HarnessError(f"{binary} is not an aarch64 ELF: cannot bundle it for arm64")
    folder = Path(folder) if folder is not None else binary.parent / "bundle"
    search = [env.executorch_dir / "lib", env.sysroot / "lib"]
    libs = _library_closure(binary, search)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(binary, tmp / BUNDLE_BINARY)
    shutil.copy2(env.sysroot / "lib" / LOADER, tmp / LOADER)
    for lib in libs:
        shutil.copy2(lib, tmp / lib.name)
    (tmp / RUN_SH).write_text(RUN_SH_TEXT)
    for p in tmp.iterdir():
        p.chmod(0o755 if p.name in (BUNDLE_BINARY, LOADER, RUN_SH) else 0o644)
    manifest = {"target": TARGET, "executorch": env.executorch_version, "binary": BUNDLE_BINARY, "loader": LOADER,
                "libs": [lib.name for lib in libs], "run": f"sh {RUN_SH} --pte FILE ...",
                "sha256": {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}}
    (tmp / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return open_bundle(folder)


def open_bundle(folder: Path) -> Bundle:
    """A bundle folder made by make_bundle, checked against its manifest (names and sha256)."""
    folder = Path(folder)
    path = folder / BUNDLE_MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HarnessError(f"{folder} is not an arm64 harness bundle: {err}",
                           hint="make one with `exporter harness build --target linux-arm64`") from None
    names = data.get("libs") if isinstance(data, dict) else None
    sums = data.get("sha256") if isinstance(data, dict) else None
    if (data.get("target") != TARGET or not isinstance(names, list) or not isinstance(sums, dict)
            or not all(isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9._+-]+", n) for n in [*names, *sums])):
        raise HarnessError(f"{path} is not a {TARGET} bundle manifest")
    for name, digest in sums.items():
        p = folder / name
        if not p.is_file() or file_sha256(p) != digest:
            raise HarnessError(f"bundle file {p} is missing or changed since the bundle was made",
                               hint="rebuild it: `exporter harness build --target linux-arm64`")
    return Bundle(folder=folder, binary=folder / BUNDLE_BINARY, loader=folder / LOADER,
                  libs=tuple(folder / n for n in names), run_sh=folder / RUN_SH)


def default_bundle_dir() -> Path:
    return REPO_ROOT / "build" / f"harness-{TARGET}"


def find_bundle() -> Bundle | None:
    """The bundle `exporter harness build --target linux-arm64` made, if it is there and intact."""
    folder = default_bundle_dir()
    if not (folder / BUNDLE_MANIFEST).is_file():
        return None
    return open_bundle(folder)


def build_bundle(folder: Path | None = None, *, build_dir: Path | None = None, jobs: int = 2,
                 progress: Progress | None = None) -> Bundle:
    binary = build_linux_arm64(build_dir, jobs=jobs, progress=progress)
    return make_bundle(binary, folder if folder is not None else default_bundle_dir())


REMOTE_BUNDLE = "exporter_harness_linux-arm64"  # sub-folder of the export's folder on the phone


def push_bundle(adb, bundle: Bundle, remote_dir: str, *, say: Progress | None = None) -> str:
    """Push the bundle into `remote_dir`/exporter_harness_linux-arm64 (its libraries must not mix with another
    export's files), skipping files already there; return that folder."""
    import posixpath
    import shlex

    from .push import LocalFile, push_files

    remote = posixpath.join(remote_dir, REMOTE_BUNDLE)
    push_files(adb, [LocalFile.of(p) for p in bundle.files()], remote, say=say)
    q = shlex.quote
    adb.shell(f"chmod 755 {q(posixpath.join(remote, LOADER))} {q(posixpath.join(remote, BUNDLE_BINARY))}",
              action="make the harness bundle executable")
    return remote


def bundle_argv(remote_folder: str, args: Sequence[str]) -> list[str]:
    """The command that starts a pushed bundle (what run.sh does, without needing a shell script)."""
    loader = f"{remote_folder}/{LOADER}"
    return [loader, "--library-path", remote_folder, f"{remote_folder}/{BUNDLE_BINARY}", *args]


# --------------------------------------------------------------------------------------------- emulation


def qemu_argv(cpu: str, argv: Sequence[str], env: ArmEnv | None = None) -> list[str]:
    """Run an aarch64 program on this machine with qemu's CPU model `cpu` (e.g. neoverse-n1, cortex-a710)."""
    env = env or load_arm_env()
    if not re.fullmatch(r"[a-z0-9-]+(,[a-z0-9=-]+)*", cpu):
        raise HarnessError(f"not a qemu CPU model: {cpu!r}")
    return [str(env.qemu), "-cpu", cpu, "-L", str(env.sysroot), *argv]


def qemu_cpu_models(env: ArmEnv | None = None) -> list[str]:
    env = env or load_arm_env()
    out = subprocess.run([str(env.qemu), "-cpu", "help"], capture_output=True, text=True, check=False).stdout
    return [line.strip() for line in out.splitlines()[1:] if line.startswith("  ") and line.strip()]


# --------------------------------------------------------------------------------------------- ELF


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file, None when it is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def elf_needed(path: Path) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF (what the loader will look for)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise HarnessError(f"{path}: not a 64-bit little-endian ELF")
    u16 = lambda o: int.from_bytes(data[o:o + 2], "little")  # noqa: E731
    u64 = lambda o: int.from_bytes(data[o:o + 8], "little")  # noqa: E731
    phoff, phentsize, phnum = u64(0x20), u16(0x36), u16(0x38)
    dyn = None
    loads = []
    for i in range(phnum):
        o = phoff + i * phentsize
        p_type = int.from_bytes(data[o:o + 4], "little")
        p_offset, p_vaddr, p_filesz = u64(o + 8), u64(o + 16), u64(o + 32)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dyn = (p_offset, p_filesz)
    if dyn is None:
        return []

    def to_offset(vaddr: int) -> int:
        for va, off, size in loads:
            if va <= vaddr < va + size:
                return vaddr - va + off
        raise HarnessError(f"{path}: dynamic string table outside the loaded segments")

    entries = [(u64(o), u64(o + 8)) for o in range(dyn[0], dyn[0] + dyn[1], 16)]
    strtab = next((v for t, v in entries if t == 5), None)
    if strtab is None:
        return []
    base = to_offset(strtab)
    out = []
    for tag, val in entries:
        if tag == 0:
            break
        if tag == 1:
            end = data.index(b"\0", base + val)
            out.append(data[base + val:end].decode("ascii", "replace"))
    return out


def _library_closure(binary: Path, search: Sequence[Path]) -> list[Path]:
    found: dict[str, Path] = {}
    todo = list(elf_needed(binary))
    while todo:
        name = todo.pop(0)
        if name in found or name == LOADER:
            continue
        path = next((d / name for d in search if (d / name).is_file()), None)
        if path is None:
            raise HarnessError(f"{name}, needed by the arm64 harness, is in none of {', '.join(map(str, search))}",
                               hint=SETUP_HINT)
        # kept under the name the loader asks for (copying follows a soname symlink to its file)
        found[name] = path
        todo.extend(elf_needed(path.resolve()))
    return list(found.values())

