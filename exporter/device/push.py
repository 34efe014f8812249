"""Copy an export folder (model.pte, tokenizer.json, manifest.json) to a phone, safely and resumably.

- files whose sha256 already matches on the phone are skipped (re-running resumes);
- free space is checked before anything is copied;
- each file goes to `NAME.partial`, its sha256 is checked on the phone, then it is renamed: a file under its
  real name is always complete. Partials are deleted on failure (when the phone is still there) and on the
  next run;
- manifest.json goes last, so a remote folder with a manifest holds the whole export.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..artifact import Artifact, file_sha256
from ..errors import DeviceError, ExporterError, UsageError
from .adb import Adb, Progress

REMOTE_BASE = "/data/local/tmp"
PARTIAL = ".partial"
SPACE_MARGIN = 16 * 2**20  # keep this much free on the phone beyond what the files need


@dataclass(frozen=True)
class PushedFile:
    name: str
    remote: str
    bytes: int
    sha256: str
    action: str  # "pushed" | "skipped"


@dataclass(frozen=True)
class PushResult:
    serial: str
    remote_dir: str
    files: tuple[PushedFile, ...]

    @property
    def pushed_bytes(self) -> int:
        return sum(f.bytes for f in self.files if f.action == "pushed")

    def to_dict(self) -> dict:
        return {"serial": self.serial, "remote_dir": self.remote_dir,
                "files": [f.__dict__ for f in self.files], "pushed_bytes": self.pushed_bytes}


def default_remote_dir(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(folder).resolve().name).lstrip(".") or "export"
    return posixpath.join(REMOTE_BASE, name)


def check_remote_dir(remote_dir: str) -> str:
    if not remote_dir.startswith("/") or any(ord(c) < 32 or c == "\x7f" for c in remote_dir) or "/../" in f"{remote_dir}/":
        raise UsageError(f"--remote-dir must be an absolute path on the phone without '..' or control characters, "
                         f"got {remote_dir!r}")
    return remote_dir.rstrip("/") or "/"


@dataclass(frozen=True)
class LocalFile:
    path: Path
    name: str  # name on the phone
    bytes: int
    sha256: str

    @classmethod
    def of(cls, path: Path, name: str | None = None, sha256: str | None = None) -> "LocalFile":
        path = Path(path)
        return cls(path, name or path.name, path.stat().st_size, sha256 or file_sha256(path))


def push_files(adb: Adb, files: Sequence[LocalFile], remote_dir: str, *,
               progress: Progress | None = None, say: Callable[[str], None] | None = None) -> list[PushedFile]:
    """Push files into remote_dir with skip-if-same, space check, verify-then-rename."""
    say = say or (lambda _m: None)
    q = shlex.quote
    local = [(f.path, f.name, f.bytes, f.sha256) for f in files]
    # one call: create the folder, drop stale partials, checksum what is already there
    names = " ".join(q(name) for _, name, _, _ in local)
    text = adb.shell(f"mkdir -p {q(remote_dir)} && cd {q(remote_dir)} && rm -f -- *{PARTIAL} && "
                     f"(sha256sum {names} 2>/dev/null; true)", action=f"prepare {remote_dir}").stdout
    remote_sums = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            remote_sums[posixpath.basename(parts[1].strip().lstrip("*"))] = parts[0]
    todo = [f for f in local if remote_sums.get(f[1]) != f[3]]
    need = sum(size for _, _, size, _ in todo)
    if todo:
        free = adb.free_bytes(remote_dir)
        if free < need + SPACE_MARGIN:
            raise DeviceError(
                f"not enough space on '{adb.serial}': {need / 2**20:.1f} MiB to push to {remote_dir}, "
                f"{free / 2**20:.1f} MiB free",
                hint="free space on the phone (adb shell df -h /data) or remove old exports from /data/local/tmp")
    out: list[PushedFile] = []
    for path, name, size, digest in local:
        remote = posixpath.join(remote_dir, name)
        if remote_sums.get(name) == digest:
            say(f"{name}: already on the phone (sha256 matches), skipped")
            out.append(PushedFile(name, remote, size, digest, "skipped"))
            continue
        partial = remote + PARTIAL
        say(f"{name}: pushing {size / 2**20:.1f} MiB")
        try:
            adb.push(path, partial, progress=progress)
            got = adb.sha256([partial]).get(partial)
            if got != digest:
                raise DeviceError(f"{name} arrived corrupted on '{adb.serial}' (sha256 {got or 'unreadable'}, "
                                  f"expected {digest})", hint="re-run the push; check the cable")
            adb.shell(f"mv -f {q(partial)} {q(remote)}", action=f"rename {name}.partial")
        except DeviceError:
            _remove_quietly(adb, partial)
            raise
        out.append(PushedFile(name, remote, size, digest, "pushed"))
    return out


def _remove_quietly(adb: Adb, path: str) -> None:
    """Best effort: the phone may be gone (the next push removes stale partials)."""
    try:
        adb.shell(f"rm -f {shlex.quote(path)}", check=False, timeout=15, action=f"remove {path}")
    except ExporterError:
        pass


def push_artifact(adb: Adb, artifact: Artifact, remote_dir: str | None = None, *, progress: Progress | None = None,
                  say: Callable[[str], None] | None = None) -> PushResult:
    """Put an export folder on the phone (resumable: re-running skips files that are already correct).

    The local files are checked against the manifest first, so a changed file is never pushed as if it were
    the export; their hashes are then the ones the phone's copies are compared with.
    """
    artifact.check_hashes()
    remote_dir = check_remote_dir(remote_dir or default_remote_dir(artifact.folder))
    files = [LocalFile.of(p, sha256=artifact.sha256(p)) for p in artifact.files()]
    pushed = push_files(adb, files, remote_dir, progress=progress, say=say)
    return PushResult(adb.serial, remote_dir, tuple(pushed))
