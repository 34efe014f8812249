"""What a benchmark records around each run: CPU temperatures, frequencies, battery.

Phone readings come from one adb shell call each; the host's from /proc and /sys. Nothing here measures
tokens/s: that is the harness's job (protocol.py).
"""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .adb import Adb, split_sections

SNAPSHOT_SCRIPT = (
    "echo '@@thermal'; for z in /sys/class/thermal/thermal_zone*; do "
    "echo \"$(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)\"; done; "
    "echo '@@freq'; for d in /sys/devices/system/cpu/cpu[0-9]*; do "
    "echo \"${d##*/} $(cat $d/cpufreq/scaling_cur_freq 2>/dev/null)\"; done; "
    "echo '@@battery'; dumpsys battery 2>/dev/null"
)
THERMAL_SCRIPT = ("for z in /sys/class/thermal/thermal_zone*; do "
                  "echo \"$(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)\"; done")
_CPU_ZONE = re.compile(r"cpu|big|mid|little|soc|tsens|cluster|apc", re.IGNORECASE)


def parse_thermal(lines: Sequence[str]) -> dict[str, float]:
    """'type temp' lines -> {zone type: degrees C}. Millidegrees are converted; implausible values dropped."""
    temps: dict[str, float] = {}
    for line in lines:
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2:
            continue
        try:
            raw = float(parts[1])
        except ValueError:
            continue
        c = raw / 1000.0 if abs(raw) >= 1000 else raw
        if 0 < c < 150:
            key, n = parts[0], 1
            while key in temps:
                n += 1
                key = f"{parts[0]}#{n}"
            temps[key] = c
    return temps


def cpu_temp_c(temps: dict[str, float]) -> float | None:
    """The hottest CPU/SoC zone (all zones but the battery when none is named like a CPU zone)."""
    cpu = [t for k, t in temps.items() if _CPU_ZONE.search(k)]
    if not cpu:
        cpu = [t for k, t in temps.items() if "batt" not in k.lower()]
    return max(cpu) if cpu else None


def parse_battery(lines: Sequence[str]) -> dict[str, Any]:
    kv = {}
    for line in lines:
        if ":" in line:
            k, _, v = line.partition(":")
            kv[k.strip().lower()] = v.strip()
    if not kv:
        return {"level": None, "status": None, "plugged": None}
    status = {"1": "unknown", "2": "charging", "3": "discharging", "4": "not charging", "5": "full"}
    plugged = [name for name, key in (("ac", "ac powered"), ("usb", "usb powered"), ("wireless", "wireless powered"))
               if kv.get(key) == "true"]
    level = kv.get("level")
    temp = kv.get("temperature")
    return {"level": int(level) if level and level.isdigit() else None,
            "status": status.get(kv.get("status", ""), kv.get("status")),
            "plugged": "+".join(plugged) or "none",
            "temp_c": int(temp) / 10 if temp and temp.lstrip("-").isdigit() else None}


def snapshot(adb: Adb) -> dict[str, Any]:
    """CPU temperatures, current CPU frequencies and battery, in one shell call."""
    sec = split_sections(adb.shell(SNAPSHOT_SCRIPT, check=False, action="read temperatures and CPU frequencies").stdout)
    freqs = {}
    for line in sec.get("freq", []):
        m = re.match(r"cpu(\d+)\s+(\d+)", line.strip())
        if m:
            freqs[int(m.group(1))] = int(m.group(2))
    temps = parse_thermal(sec.get("thermal", []))
    return {"temp_c": cpu_temp_c(temps), "cpu_freq_khz": freqs, "battery": parse_battery(sec.get("battery", []))}


def wait_cool(read_temp: Callable[[], float | None], threshold_c: float, timeout_s: float, *,
              poll_s: float = 2.0, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll until the CPU is under threshold_c or timeout_s passed; says what happened (never raises)."""
    temp = read_temp()
    start = clock()
    waited = 0.0
    while temp is not None and temp >= threshold_c and clock() - start < timeout_s:
        sleep(poll_s)
        temp = read_temp()
        waited = clock() - start
    return {"temp_c": temp, "cooldown_wait_s": round(waited, 1),
            "cooldown_timed_out": bool(temp is not None and temp >= threshold_c)}


def host_cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_cpu_freqs() -> dict[int, int]:
    out = {}
    for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        try:
            out[int(p.parent.parent.name[3:])] = int(p.read_text().strip())
        except (OSError, ValueError):
            continue
    return out
