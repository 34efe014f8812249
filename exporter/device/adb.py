"""The only module that talks to a phone: runs the adb client binary in a subprocess.

Which adb: `--adb PATH` (the `adb_path` argument), else `$EXPORTER_ADB`, else `adbutils.adb_path()` (the `adb`
on PATH, else the binary the adbutils wheel ships). Running the client binary, not adbutils' socket protocol,
is what lets tests substitute the stand-in adb in tests/standin_adb/ (a script, never a real device).

Every adb failure is mapped to DeviceError with a message that says what happened and what to do.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import DeviceError

# The exit status of the remote command is echoed after this marker: old adb/phones (no shell v2) always
# return 0 from `adb shell`, and a missing marker tells "the command failed" from "the link died".
RC_MARKER = "__exporter_rc="

Progress = Callable[[str, int, int], None]  # (remote path, bytes done, bytes total)

# A transfer may take this long plus one second per MIN_TRANSFER_BYTES_PER_S bytes before it counts as stalled:
# USB 2 adb moves 20-40 MB/s and adb over Wi-Fi a few MB/s, so 1 MB/s is far below any working link.
TRANSFER_BASE_S = 60.0
MIN_TRANSFER_BYTES_PER_S = 1_000_000


def transfer_timeout(nbytes: int) -> float:
    return TRANSFER_BASE_S + nbytes / MIN_TRANSFER_BYTES_PER_S


def find_adb(adb_path: str | os.PathLike | None = None) -> str:
    """The adb client to run: explicit path, $EXPORTER_ADB, or adbutils' choice (PATH, then its bundled adb)."""
    chosen = adb_path or os.environ.get("EXPORTER_ADB")
    if chosen:
        path = Path(chosen)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise DeviceError(f"adb client '{chosen}' is not an executable file",
                              hint="pass --adb PATH or set EXPORTER_ADB to the adb binary")
        return str(path)
    try:
        import adbutils
        return adbutils.adb_path()
    except Exception as err:  # adbutils raises its own AdbError when it finds nothing
        raise DeviceError("no adb client found",
                          hint="install Android platform-tools, or pass --adb PATH / set EXPORTER_ADB") from err


@dataclass(frozen=True)
class DeviceEntry:
    """One line of `adb devices -l`."""

    serial: str
    state: str  # device | unauthorized | offline | recovery | sideload | bootloader | no permissions ...
    model: str | None = None
    product: str | None = None
    device: str | None = None
    transport_id: str | None = None


@dataclass(frozen=True)
class ShellResult:
    rc: int
    stdout: str
    stderr: str


def parse_devices(text: str) -> list[DeviceEntry]:
    """Parse `adb devices -l` output."""
    out: list[DeviceEntry] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        serial, state = parts[0], parts[1]
        if state == "no":  # "no permissions (user in plugdev group; ...)"
            state = "no permissions"
        attrs = dict(w.split(":", 1) for w in parts[2:] if re.match(r"^(usb|product|model|device|transport_id):", w))
        out.append(DeviceEntry(serial, state, attrs.get("model"), attrs.get("product"), attrs.get("device"),
                               attrs.get("transport_id")))
    return out


_GONE = re.compile(r"device '([^']*)' not found|device not found|device offline|no devices/emulators found|"
                   r"error: closed|protocol fault|connection reset|failed to read copy response|no response",
                   re.IGNORECASE)


def _device_error(serial: str | None, text: str, action: str) -> DeviceError:
    """Map adb's stderr to a DeviceError with a next step."""
    low = text.lower()
    who = f"'{serial}'" if serial else "the phone"
    if "unauthorized" in low:
        return DeviceError(f"device {who} is unauthorized",
                           hint="unlock the phone and accept the 'Allow USB debugging?' RSA prompt, then retry")
    if "more than one device" in low:
        return DeviceError("several phones are connected and no serial was given",
                           hint="pass --serial SERIAL (see `adb devices -l`)")
    if "no devices/emulators found" in low:
        return DeviceError("no phone connected", hint="plug in a phone with USB debugging on; check `adb devices -l`")
    if "no space left" in low:
        return DeviceError(f"not enough space on {who} while trying to {action}",
                           hint="free space on the phone (adb shell df -h /data) or use a smaller model")
    if "offline" in low:
        return DeviceError(f"device {who} went offline while trying to {action}",
                           hint="reconnect the cable, check `adb devices -l`, and re-run (completed steps are skipped)")
    if _GONE.search(text):
        return DeviceError(f"device {who} was disconnected while trying to {action}",
                           hint="reconnect the phone and re-run; nothing half-done is reported or left complete-looking")
    tail = text.strip().splitlines()[-3:]
    return DeviceError(f"adb failed to {action} on {who}: {' / '.join(tail) or 'no output'}")


def _run_client(argv: Sequence[str], *, timeout: float | None, action: str, serial: str | None,
                input_text: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input_text,
                              encoding="utf-8", errors="replace")
    except subprocess.TimeoutExpired as err:
        raise DeviceError(f"adb timed out after {timeout:.0f} s while trying to {action}"
                          + (f" on '{serial}'" if serial else ""),
                          hint="check the cable and `adb devices -l`; a hung phone may need a reconnect") from err
    except OSError as err:
        raise DeviceError(f"cannot run adb client '{argv[0]}': {err}",
                          hint="pass --adb PATH or set EXPORTER_ADB") from err


def list_devices(adb_path: str | os.PathLike | None = None) -> list[DeviceEntry]:
    """Every phone adb sees, in any state (device, unauthorized, offline, ...)."""
    adb = find_adb(adb_path)
    proc = _run_client([adb, "devices", "-l"], timeout=30, action="list devices", serial=None)
    if proc.returncode != 0:
        raise _device_error(None, proc.stderr + proc.stdout, "list devices")
    return parse_devices(proc.stdout)


def _require_usable(entry: DeviceEntry) -> None:
    if entry.state == "device":
        return
    if entry.state == "unauthorized":
        raise _device_error(entry.serial, "unauthorized", "connect")
    if entry.state == "offline":
        raise _device_error(entry.serial, "offline", "connect")
    raise DeviceError(f"device '{entry.serial}' is in state '{entry.state}', not 'device'",
                      hint="boot the phone normally with USB debugging on")


def pick_serials(serials: Sequence[str] = (), *, all_devices: bool = False,
                 adb_path: str | os.PathLike | None = None) -> list[str]:
    """Resolve --serial/--all to usable serials: none given and one phone -> it; several -> DeviceError."""
    devices = list_devices(adb_path)
    by_serial = {d.serial: d for d in devices}
    if serials:
        for s in serials:
            if s not in by_serial:
                seen = ", ".join(f"{d.serial} ({d.state})" for d in devices) or "none"
                raise DeviceError(f"device '{s}' not found (adb sees: {seen})",
                                  hint="check the cable and `adb devices -l`")
            _require_usable(by_serial[s])
        return list(serials)
    if not devices:
        raise DeviceError("no phone connected", hint="plug in a phone with USB debugging on; check `adb devices -l`")
    if all_devices:
        usable = [d for d in devices if d.state == "device"]
        if not usable:
            _require_usable(devices[0])
        return [d.serial for d in usable]
    if len(devices) > 1:
        listing = ", ".join(f"{d.serial} ({d.model or d.state})" for d in devices)
        raise DeviceError(f"several phones are connected ({listing}) and no serial was given",
                          hint="pass --serial SERIAL (repeat it, or use --all, to bench several)")
    _require_usable(devices[0])
    return [devices[0].serial]


class Adb:
    """One phone, addressed by serial, through the adb client binary."""

    def __init__(self, serial: str, adb_path: str | os.PathLike | None = None, *, timeout: float = 120.0):
        self.serial = serial
        self.adb = find_adb(adb_path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Adb(serial={self.serial!r}, adb={self.adb!r})"

    def _argv(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def shell(self, command: str, *, check: bool = True, timeout: float | None = -1.0,
              action: str | None = None) -> ShellResult:
        """Run `command` with the phone's sh; return its exit code, stdout and stderr.

        The exit code comes from a marker echoed after the command, so it is right on adb versions without
        shell v2 too. No marker means the link died: DeviceError. check=True raises DeviceError on rc != 0.
        """
        action = action or f"run '{_short(command)}'"
        wrapped = f"( {command}\n); echo \"{RC_MARKER}$?\""
        proc = _run_client(self._argv("shell", wrapped), timeout=self.timeout if timeout == -1.0 else timeout,
                           action=action, serial=self.serial)
        out = proc.stdout
        idx = out.rfind(RC_MARKER)
        if idx < 0:
            raise _device_error(self.serial, proc.stderr + out, action)
        m = re.match(r"(\d+)", out[idx + len(RC_MARKER):])
        rc = int(m.group(1)) if m else 255
        result = ShellResult(rc, out[:idx], proc.stderr)
        if check and rc != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
            raise DeviceError(f"'{_short(command)}' failed on '{self.serial}' (exit {rc}): {' / '.join(detail)}")
        return result

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {shlex.quote(name)}").stdout.strip()

    def getprops(self) -> dict[str, str]:
        return parse_getprop(self.shell("getprop").stdout)

    def read_text(self, path: str) -> str:
        return self.shell(f"cat {shlex.quote(path)}", action=f"read {path}").stdout

    def exists(self, path: str) -> bool:
        return self.shell(f"test -e {shlex.quote(path)}", check=False).rc == 0

    def free_bytes(self, path: str) -> int:
        """Bytes available to files under `path` (toybox `df -k`)."""
        text = self.shell(f"df -k {shlex.quote(path)}", action=f"check free space of {path}").stdout
        return parse_df_available_kb(text) * 1024

    def sha256(self, paths: Sequence[str]) -> dict[str, str]:
        """sha256 of each existing remote file (missing ones are left out)."""
        if not paths:
            return {}
        quoted = " ".join(shlex.quote(p) for p in paths)
        text = self.shell(f"sha256sum {quoted} 2>/dev/null", check=False, action="checksum files").stdout
        out: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                out[parts[1].lstrip("*")] = parts[0]
        return out

    def push(self, local: str | os.PathLike, remote: str, *, progress: Progress | None = None,
             timeout: float | None = None) -> None:
        """`adb push` one file. Progress is reported at start and end (and from adb's percent lines when it
        prints them). A push that outlasts `timeout` (default: transfer_timeout of its size) is killed: a phone
        that stops reading would otherwise hang it forever. Failures map to DeviceError."""
        local = Path(local)
        total = local.stat().st_size
        limit = transfer_timeout(total) if timeout is None else timeout
        if progress:
            progress(remote, 0, total)
        proc = subprocess.Popen(self._argv("push", str(local), remote), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
        out_lines: list[str] = []
        err_lines: list[str] = []

        def read_progress() -> None:  # a thread, so a silent, stalled adb cannot block the timeout
            assert proc.stdout is not None
            for raw in proc.stdout:
                out_lines.append(raw)
                for pct in re.findall(r"\[\s*(\d+)%\]", raw):
                    if progress:
                        progress(remote, total * int(pct) // 100, total)

        readers = [threading.Thread(target=read_progress, daemon=True),
                   threading.Thread(target=lambda: err_lines.extend(proc.stderr or ()), daemon=True)]
        for r in readers:
            r.start()
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise DeviceError(f"adb push of {local.name} ({total / 2**20:.1f} MiB) to '{self.serial}' stalled: "
                              f"not done after {limit:.0f} s", hint="check the cable and `adb devices -l`; a phone that "
                              "stopped reading may need a reconnect (re-running resumes)") from None
        for r in readers:
            r.join(timeout=5)
        if rc != 0:
            text = "".join(err_lines) + "".join(out_lines)
            # adb's message is not always explicit about a vanished phone: ask adb
            if not _GONE.search(text) and "no space" not in text.lower() and not self._present():
                text += f"\ndevice '{self.serial}' not found"
            raise _device_error(self.serial, text, f"push {local.name}")
        if progress:
            progress(remote, total, total)

    def pull(self, remote: str, local: str | os.PathLike, *, expected_bytes: int = 64 << 20) -> None:
        proc = _run_client(self._argv("pull", remote, str(local)), timeout=transfer_timeout(expected_bytes),
                           action=f"pull {remote}", serial=self.serial)
        if proc.returncode != 0:
            raise _device_error(self.serial, proc.stderr + proc.stdout, f"pull {remote}")

    def _present(self) -> bool:
        try:
            return any(d.serial == self.serial and d.state == "device" for d in list_devices(self.adb))
        except DeviceError:
            return False


def parse_getprop(text: str) -> dict[str, str]:
    """`[ro.soc.model]: [SM8650]` lines -> dict."""
    props: dict[str, str] = {}
    for m in re.finditer(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.MULTILINE):
        props[m.group(1)] = m.group(2)
    return props


def parse_df_available_kb(text: str) -> int:
    """Available KiB from `df -k PATH` (toybox/busybox; tolerates a wrapped filesystem name)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) < 2:
        raise DeviceError(f"cannot read free space from df output: {text.strip()!r}")
    tokens = " ".join(lines[1:]).split()
    # ... 1K-blocks Used Available Use% Mounted-on: Available is third from the end
    try:
        return int(tokens[-3])
    except (IndexError, ValueError) as err:
        raise DeviceError(f"cannot read free space from df output: {text.strip()!r}") from err


def _short(command: str, n: int = 60) -> str:
    command = " ".join(command.split())
    return command if len(command) <= n else command[: n - 3] + "..."


def split_sections(text: str) -> dict[str, list[str]]:
    """Split the output of a multi-part shell script whose parts start with '@@name' lines."""
    out: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("@@"):
            name = line[2:].strip()
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return out
