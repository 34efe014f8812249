"""Which phone is this, and which device profile fits it.

One adb shell call reads the properties (`getprop`), /proc/cpuinfo (features and MIDR part per core),
cpuinfo_max_freq per core (clusters and big cores) and /proc/meminfo. A profile matches by ro.soc.model first,
then ro.board.platform, then ro.hardware (Android 11 and older have no ro.soc.*, so the board name decides).
When nothing matches, the nearest profile by core layout (MIDR parts per cluster) is offered.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import DeviceError
from .adb import Adb, list_devices, parse_getprop, pick_serials, split_sections

PROBE_SCRIPT = (
    "echo '@@getprop'; getprop; "
    "echo '@@cpuinfo'; cat /proc/cpuinfo; "
    "echo '@@meminfo'; cat /proc/meminfo; "
    "echo '@@freq'; for d in /sys/devices/system/cpu/cpu[0-9]*; do "
    "echo \"${d##*/} $(cat $d/cpufreq/cpuinfo_max_freq 2>/dev/null)\"; done; "
    "echo '@@uname'; uname -m"
)

# What emulated Androids (and the stand-in adb's arm64 phones, which run programs under qemu) set.
EMULATOR_PROPS = ("ro.kernel.qemu", "ro.boot.qemu")

PROP_KEYS = ("ro.soc.model", "ro.soc.manufacturer", "ro.board.platform", "ro.hardware", "ro.product.model",
             "ro.build.version.release", "ro.build.version.sdk")


@dataclass(frozen=True)
class CpuCore:
    cpu: int
    part: int | None  # MIDR "CPU part"
    implementer: int | None
    features: tuple[str, ...]
    max_freq_khz: int | None


@dataclass(frozen=True)
class ConnectedDevice:
    """What detection found on one phone (fields are None when the phone could not be read)."""

    serial: str
    state: str
    model: str | None = None
    soc_model: str | None = None
    soc_manufacturer: str | None = None
    board_platform: str | None = None
    hardware: str | None = None
    android_release: str | None = None
    sdk: int | None = None
    ram_bytes: int | None = None
    cpu_count: int = 0
    big_cores: tuple[int, ...] = ()
    isa: tuple[str, ...] = ()  # our ISA names present on every core
    cpu_parts: tuple[int | None, ...] = ()  # per cpu id
    max_freq_khz: tuple[int | None, ...] = ()  # per cpu id
    clusters: tuple[tuple[int, ...], ...] = ()  # cpu ids grouped by (part, max freq), in cpu order
    machine: str | None = None  # `uname -m`: the CPU architecture binaries must be built for
    emulated: bool = False  # an emulator says so (ro.kernel.qemu=1 / ro.boot.qemu=1): no timing is a phone's speed
    profile_id: str | None = None  # matched profile
    matched_by: str | None = None  # soc_model | board_platform | hardware
    nearest_profile_id: str | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cpu_parts"] = [None if p is None else f"0x{p:03x}" for p in self.cpu_parts]
        return d

    def summary(self) -> str:
        soc = self.soc_model or f"board {self.board_platform}"
        layout = ", ".join(f"{len(c)}x{_part_name(self.cpu_parts[c[0]])}@{_ghz(self.max_freq_khz[c[0]])}"
                           for c in self.clusters)
        return f"{self.model or self.serial} ({soc}; {layout or 'cores unknown'})"


# --------------------------------------------------------------------------------------------- parsing


def parse_cpuinfo(text: str) -> dict[int, dict[str, str]]:
    """/proc/cpuinfo (arm64) -> {cpu id: {key: value}}; lines outside a processor block are ignored."""
    cpus: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            try:
                current = cpus.setdefault(int(value), {})
            except ValueError:
                current = None
            continue
        if current is not None:
            current[key] = value
    return cpus


def parse_meminfo_total(text: str) -> int | None:
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def parse_probe(text: str) -> tuple[dict[str, str], list[CpuCore], int | None]:
    sec = {k: "\n".join(v) for k, v in split_sections(text).items()}
    props = parse_getprop(sec.get("getprop", ""))
    info = parse_cpuinfo(sec.get("cpuinfo", ""))
    freqs: dict[int, int | None] = {}
    for line in sec.get("freq", "").splitlines():
        m = re.match(r"cpu(\d+)\s*(\d*)", line.strip())
        if m:
            freqs[int(m.group(1))] = int(m.group(2)) if m.group(2) else None
    cores = []
    for cpu in sorted(set(info) | set(freqs)):
        block = info.get(cpu, {})
        cores.append(CpuCore(cpu, _int(block.get("CPU part")), _int(block.get("CPU implementer")),
                             tuple(block.get("Features", "").split()), freqs.get(cpu)))
    return props, cores, parse_meminfo_total(sec.get("meminfo", ""))


def parse_machine(text: str) -> str | None:
    """`uname -m` from the probe's output ('aarch64' on phones), None when it printed nothing usable."""
    lines = split_sections(text).get("uname", [])
    value = lines[0].strip() if lines else ""
    return value if value and value.replace("_", "").isalnum() else None


def _int(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value, 0)
    except ValueError:
        return None


def clusters_of(cores: Sequence[CpuCore]) -> list[tuple[int, ...]]:
    """Adjacent cpus with the same part and max frequency form a cluster (the kernel numbers them that way)."""
    out: list[list[int]] = []
    prev = None
    for core in cores:
        key = (core.part, core.max_freq_khz)
        if out and key == prev:
            out[-1].append(core.cpu)
        else:
            out.append([core.cpu])
        prev = key
    return [tuple(c) for c in out]


def big_cores_of(cores: Sequence[CpuCore]) -> tuple[int, ...]:
    """Performance cores: every cpu except those of the lowest max frequency (all of them if all are equal)."""
    freqs = [c.max_freq_khz for c in cores if c.max_freq_khz]
    if not freqs or len(set(freqs)) == 1:
        return tuple(c.cpu for c in cores)
    low = min(freqs)
    return tuple(c.cpu for c in cores if c.max_freq_khz and c.max_freq_khz > low)


# --------------------------------------------------------------------------------------------- matching


def _profiles():
    from ..profiles import list_profiles

    return list_profiles()


def match_profile(props: dict[str, str], profiles=None) -> tuple[Any | None, str | None]:
    """(profile, key that matched) by ro.soc.model, then ro.board.platform, then ro.hardware; (None, None)."""
    profiles = _profiles() if profiles is None else profiles
    for key, attr in (("ro.soc.model", "soc_model"), ("ro.board.platform", "board_platform"),
                      ("ro.hardware", "hardware")):
        value = props.get(key, "").strip().lower()
        if not value:
            continue
        for prof in profiles:
            if value in {v.lower() for v in getattr(prof.detect, attr)}:
                return prof, attr
    return None, None


def layout_distance(cores: Sequence[CpuCore], isa: Sequence[str], profile) -> float:
    """How far a phone's cores are from a profile's: differing cores by MIDR part, then cluster count, ISA,
    and clock (smaller is nearer)."""
    have = Counter(c.part for c in cores)
    want: Counter = Counter()
    for cl in profile.clusters:
        want[cl.part] += cl.count
    parts = sum(abs(have[p] - want[p]) for p in set(have) | set(want))
    n_clusters = len({(c.part, c.max_freq_khz) for c in cores})
    isa_diff = len(set(isa) ^ set(profile.isa))
    top_phone = max((c.max_freq_khz or 0) for c in cores) / 1e6 if cores else 0.0
    top_prof = max((cl.max_ghz for cl in profile.clusters), default=0.0)
    return parts + 0.5 * abs(n_clusters - len(profile.clusters)) + 0.25 * isa_diff + 0.1 * abs(top_phone - top_prof)


def nearest_profile(cores: Sequence[CpuCore], isa: Sequence[str], profiles=None):
    profiles = _profiles() if profiles is None else profiles
    if not profiles or not cores:
        return None
    return min(profiles, key=lambda p: (layout_distance(cores, isa, p), p.id))


def compare_with_profile(dev: ConnectedDevice, cores: Sequence[CpuCore], profile) -> list[str]:
    """Differences between what the phone reports and what the profile expects, as warnings."""
    out = []
    extra = [f for f in dev.isa if f not in profile.isa]
    missing = [f for f in profile.isa if f not in dev.isa]
    if extra:
        out.append(f"phone reports {', '.join(extra)} which profile {profile.id} does not expect")
    if missing:
        out.append(f"profile {profile.id} expects {', '.join(missing)} but the phone does not report it")
    phone_parts = [c.part for c in cores]
    prof_parts = [cl.part for cl in profile.clusters for _ in range(cl.count)]
    if phone_parts and phone_parts != prof_parts:
        out.append(f"core layout differs from profile {profile.id}: phone {_layout(phone_parts)}, "
                   f"profile {_layout(prof_parts)}")
    bad = [c for c in profile.cpu_set if c >= dev.cpu_count or c not in dev.big_cores]
    if dev.cpu_count and bad:
        out.append(f"profile {profile.id} pins to cpus {list(profile.cpu_set)} but the phone's performance cores are "
                   f"{list(dev.big_cores)}")
    return out


def _layout(parts: Sequence[int | None]) -> str:
    groups: list[list] = []
    for p in parts:
        if groups and groups[-1][0] == p:
            groups[-1][1] += 1
        else:
            groups.append([p, 1])
    return "+".join(f"{n}x{_part_name(p)}" for p, n in groups)


_PART_NAMES = {0xD05: "A55", 0xD41: "A78", 0xD44: "X1", 0xD46: "A510", 0xD47: "A710", 0xD48: "X2", 0xD4D: "A715",
               0xD4E: "X3", 0xD80: "A520", 0xD81: "A720", 0xD82: "X4", 0xD85: "X925", 0xD87: "A725"}


def _part_name(part: int | None) -> str:
    if part is None:
        return "?"
    return _PART_NAMES.get(part, f"0x{part:03x}")


def _ghz(khz: int | None) -> str:
    return "?" if not khz else f"{khz / 1e6:.2f}GHz"


# --------------------------------------------------------------------------------------------- public API


def describe(adb: Adb, profiles=None) -> ConnectedDevice:
    """Read one phone (one adb shell call) and match it against the device profiles."""
    from ..profiles import isa_from_cpuinfo

    profiles = _profiles() if profiles is None else profiles
    text = adb.shell(PROBE_SCRIPT, action="read the phone's properties and CPU layout").stdout
    props, cores, ram = parse_probe(text)
    warnings: list[str] = []
    if not cores:
        warnings.append("could not read /proc/cpuinfo or cpufreq: core layout unknown")
    common = set.intersection(*(set(c.features) for c in cores)) if cores and all(c.features for c in cores) else set()
    isa = isa_from_cpuinfo(common)
    union = set().union(*(set(c.features) for c in cores)) if cores else set()
    uneven = [f for f in isa_from_cpuinfo(union) if f not in isa]
    if uneven:
        warnings.append(f"only some cores report {', '.join(uneven)}")
    if not props.get("ro.soc.model"):
        warnings.append(f"ro.soc.model is not set (Android {props.get('ro.build.version.release', '?')}; "
                        "it appeared in Android 12): matching by board name")
    emulated = any(props.get(k, "").strip() == "1" for k in EMULATOR_PROPS)
    if emulated:
        warnings.append("this is an emulated phone (ro.kernel.qemu=1): it checks correctness, its timings are no "
                        "phone's speed")
    prof, matched_by = match_profile(props, profiles)
    dev = ConnectedDevice(
        serial=adb.serial, state="device", model=props.get("ro.product.model") or None,
        soc_model=props.get("ro.soc.model") or None, soc_manufacturer=props.get("ro.soc.manufacturer") or None,
        board_platform=props.get("ro.board.platform") or None, hardware=props.get("ro.hardware") or None,
        android_release=props.get("ro.build.version.release") or None, machine=parse_machine(text),
        sdk=_int(props.get("ro.build.version.sdk")), ram_bytes=ram, cpu_count=len(cores),
        big_cores=big_cores_of(cores), isa=isa, cpu_parts=tuple(c.part for c in cores),
        max_freq_khz=tuple(c.max_freq_khz for c in cores), clusters=tuple(clusters_of(cores)),
        profile_id=prof.id if prof else None, matched_by=matched_by, emulated=emulated,
    )
    near = prof if prof is not None else nearest_profile(cores, isa, profiles)
    if prof is not None:
        warnings += compare_with_profile(dev, cores, prof)
    else:
        warnings.append(f"no device profile matches this phone; nearest by core layout: "
                        f"{near.id if near else 'none'}")
    return dataclasses.replace(dev, nearest_profile_id=near.id if near else None, warnings=tuple(warnings))


def describe_connected(serial: str | None = None, adb_path: str | os.PathLike | None = None) -> list[ConnectedDevice]:
    """Every connected phone (or only `serial`), described. Phones that cannot be read (unauthorized, offline)
    are listed with their state and a warning saying what to do."""
    devices = list_devices(adb_path)
    if serial is not None:
        devices = [d for d in devices if d.serial == serial]
        if not devices:
            raise DeviceError(f"device '{serial}' not found", hint="check the cable and `adb devices -l`")
    out = []
    profiles = _profiles()
    for entry in devices:
        if entry.state != "device":
            hint = ("accept the 'Allow USB debugging?' prompt on the phone" if entry.state == "unauthorized"
                    else "reconnect the phone")
            out.append(ConnectedDevice(serial=entry.serial, state=entry.state, model=entry.model,
                                       warnings=(f"{entry.state}: {hint}",)))
            continue
        out.append(describe(Adb(entry.serial, adb_path), profiles))
    return out


def auto_detect(serial: str | None = None, adb_path: str | os.PathLike | None = None):
    """(DeviceProfile, ConnectedDevice) of the one phone meant: `serial`, or the only phone connected."""
    from ..profiles import load_profile

    chosen = pick_serials([serial] if serial else [], adb_path=adb_path)[0]
    dev = describe(Adb(chosen, adb_path))
    if dev.profile_id is None:
        found = (f"ro.soc.model={dev.soc_model!r}, ro.board.platform={dev.board_platform!r}, "
                 f"ro.hardware={dev.hardware!r}")
        raise DeviceError(
            f"no device profile matches {dev.summary()}: {found}",
            hint=(f"the nearest profile by core layout is '{dev.nearest_profile_id}': pass --device "
                  f"{dev.nearest_profile_id} to use it, or add a profile to device_profiles/")
            if dev.nearest_profile_id else "add a profile to device_profiles/")
    return load_profile(dev.profile_id), dev


def auto_profile(serial: str | None = None, adb_path: str | os.PathLike | None = None):
    """The DeviceProfile of the connected phone (`exporter export --device auto`)."""
    return auto_detect(serial, adb_path)[0]


CONNECTED_COLUMNS = ("serial", "state", "model", "soc", "board", "android", "ram", "big cores", "isa", "profile",
                     "warnings")


def connected_rows(devs: Sequence[ConnectedDevice]) -> tuple[tuple[str, ...], list[tuple]]:
    """(columns, rows) for a table of connected phones."""
    rows = []
    for d in devs:
        if d.profile_id:
            prof = f"{d.profile_id} (by {d.matched_by})"
        elif d.state == "device":
            prof = f"none (nearest: {d.nearest_profile_id})"
        else:
            prof = ""
        rows.append((
            d.serial, d.state, d.model or "", d.soc_model or "", d.board_platform or "",
            f"{d.android_release} (sdk {d.sdk})" if d.android_release else "",
            f"{d.ram_bytes / 2**30:.1f} GiB" if d.ram_bytes else "",
            ",".join(map(str, d.big_cores)), " ".join(d.isa), prof, "; ".join(d.warnings),
        ))
    return CONNECTED_COLUMNS, rows
