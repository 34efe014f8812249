"""Device profiles: `device_profiles/*.yaml` -> frozen `DeviceProfile` values.

One YAML file per phone SoC, described once as pydantic models (`DeviceProfile` and its parts), which also give
the JSON Schema editors use (`docs/schemas/profile.schema.json`). On top of the models: a file may `extends:`
another profile (an id, or a path relative to the file) whose data is deep-merged under it (mappings merge key
by key, scalars and lists replace); unknown keys are reported with the closest valid key; every message names
the profile, its file and the field path. A profile is input: malformed, hostile or huge YAML ends in a
ProfileError, never a traceback. Library code only raises (`ProfileError`, `RecipeError`); it never prints.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import (Field, PrivateAttr, ValidationError, ValidationInfo, field_serializer, field_validator,
                      model_validator)

from .build.recipes import Recipe
from .errors import ProfileError, RecipeError
from .schema import (Int, Model, NonEmptyStr, Number, describe_error, did_you_mean, file_schema, first_problem,
                     keys_at)

SCHEMA_VERSION = 1

ISA_FEATURES = ("asimd", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme", "sme2")
# our feature name -> the flag the Linux kernel prints on the "Features" line of /proc/cpuinfo
CPUINFO_FLAG = {
    "asimd": "asimd",
    "dotprod": "asimddp",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
    # SME2 is its own hwcap: SME1-only cores (Snapdragon 8 Elite Gen 5) print "sme" without it
    "sme2": "sme2",
}

# Core name -> MIDR "CPU part" (Arm implementer 0x41 unless noted). Source: Linux
# arch/arm64/include/asm/cputype.h and Arm's Technical Reference Manuals (MIDR_EL1.PartNum).
# A profile naming one of these cores must use this part number (catches hex typos); other names are free.
KNOWN_CORE_PARTS = {
    "cortex-a55": 0xD05,
    "cortex-a78": 0xD41,
    "cortex-a510": 0xD46,
    "cortex-a710": 0xD47,
    "cortex-x2": 0xD48,
    "cortex-a715": 0xD4D,
    "cortex-x3": 0xD4E,
    "cortex-a520": 0xD80,
    "cortex-a720": 0xD81,
    "cortex-x4": 0xD82,
    "cortex-x925": 0xD85,
    "cortex-a725": 0xD87,
    # Arm C1 cores: C1-Ultra / C1-Premium from Trusted Firmware-A (include/lib/cpus/aarch64/c1_ultra.h,
    # c1_premium.h); C1-Pro from a Dimensity 9500 /proc/cpuinfo (github.com/hrw/arm-socs-table issue #153)
    "c1-pro": 0xD8B,
    "c1-ultra": 0xD8C,
    "c1-premium": 0xD90,
    "oryon": 0x001,  # Qualcomm implementer 0x51: QCOM_CPU_PART_ORYON_X1; the 8 Elite reports it too
}

ABSTRACT_KEY = "abstract"
EXTENDS_KEY = "extends"
_PROFILE_SUFFIXES = (".yaml", ".yml")
# Bounds on what a profile file may be: real ones are ~2 KB and 4 levels deep.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000
MAX_EXTENDS = 16


# --------------------------------------------------------------------------------------------------- models


class Cluster(Model):
    """Identical cores, in the kernel's cpu numbering order (little cores first on these phones)."""

    core: NonEmptyStr = Field(description="core name, e.g. cortex-x4 (lowercase)")
    count: Int = Field(ge=1, description="cores in this cluster")
    max_ghz: Number = Field(gt=0, lt=10, description="highest clock, GHz")
    part: int = Field(ge=0, le=0xFFF, description='MIDR "CPU part" from /proc/cpuinfo, e.g. 0xd82 for Cortex-X4')

    @field_validator("part", mode="before")
    @classmethod
    def _part(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError(f"expected an integer like 0xd82, got {v!r}")
        if isinstance(v, str):
            try:
                return int(v, 0)
            except ValueError:
                raise ValueError(f"expected an integer like 0xd82, got {v!r}") from None
        return v

    @field_serializer("part", when_used="json")
    def _part_hex(self, v: int) -> str:
        return f"0x{v:03x}"  # as /proc/cpuinfo prints it

    @field_validator("part")
    @classmethod
    def _known_part(cls, v: int, info: ValidationInfo) -> int:
        core = info.data.get("core")
        known = KNOWN_CORE_PARTS.get(core) if isinstance(core, str) else None
        if known is not None and known != v:
            raise ValueError(f"{core} has MIDR part {known:#05x}, not {v:#05x}")
        return v


class Detect(Model):
    """getprop values that identify the SoC; a phone matches when any listed value equals its property."""

    soc_model: tuple[NonEmptyStr, ...] = Field((), description="ro.soc.model values (Android 12+)")
    board_platform: tuple[NonEmptyStr, ...] = Field((), description="ro.board.platform values")
    hardware: tuple[NonEmptyStr, ...] = Field((), description="ro.hardware values")

    @field_validator("soc_model", "board_platform", "hardware", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return () if v is None else v


class Cpu(Model):
    clusters: tuple[Cluster, ...] = Field(min_length=1, description="clusters in cpu id order")
    isa: tuple[NonEmptyStr, ...] = Field(description=f"features every core reports: {', '.join(ISA_FEATURES)}")

    @field_validator("isa")
    @classmethod
    def _isa(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for feature in v:
            if feature not in ISA_FEATURES:
                raise ValueError(f"unknown feature '{feature}'{did_you_mean(feature, ISA_FEATURES)} (known: "
                                 f"{', '.join(ISA_FEATURES)}; our names, /proc/cpuinfo calls dotprod 'asimddp')")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate features in {list(v)}")
        return v


class Memory(Model):
    typical_ram_gb: Number = Field(gt=0, description="RAM of the common configuration, GB")
    lpddr: NonEmptyStr = Field(description="memory type, e.g. LPDDR5X")
    bandwidth_gbps: Number = Field(gt=0, description="peak DRAM bandwidth, GB/s")


class Context(Model):
    default: Int = Field(ge=1, description="context length `exporter export` bakes in by default")
    max: Int = Field(ge=1, description="largest context this RAM class allows")

    @model_validator(mode="after")
    def _order(self) -> "Context":
        if self.default > self.max:
            raise ValueError(f"field 'context.default': {self.default} is larger than context.max ({self.max})")
        return self


class Runtime(Model):
    threads: Int = Field(ge=1, description="runtime worker threads")
    cpu_set: tuple[Int, ...] = Field(min_length=1, description="cpu ids to pin to (the performance cores)")


KERNEL_LEVELS = ("dotprod", "i8mm", "sme2")  # ISA levels with their own int8 GEMM kernels, slowest first


class Kernel(Model):
    """The int8 x int4/int8 GEMM micro-kernel an ISA level runs, and its int8 throughput per core."""

    name: NonEmptyStr = Field(description="kernel family, e.g. KleidiAI qai8dxp x qsi4c32p i8mm (SMMLA)")
    int8_macs_per_cycle: Number = Field(gt=0, description="int8 multiply-adds per cycle per core (prefill peak)")


class Planning(Model):
    """What `exporter plan` needs to choose a recipe for this phone."""

    app_ram_share: Number = Field(gt=0, le=1, description="share of typical_ram_gb one app may use (memory budget)")
    max_ppl_increase: Number = Field(ge=0, description="quality bound: perplexity at most this fraction over the "
                                                       "unquantized model's (0.05 = 5%)")
    decode_efficiency: Number = Field(gt=0, le=1, description="share of peak DRAM bandwidth decode reaches "
                                                              "(replaced by measured bench results when present)")
    prefill_efficiency: Number = Field(gt=0, le=1, description="share of peak int8 compute prefill reaches "
                                                               "(replaced by measured bench results when present)")
    kernels: dict[str, Kernel] = Field(description=f"ISA level ({', '.join(KERNEL_LEVELS)}) -> the kernel it runs")

    @field_validator("kernels")
    @classmethod
    def _levels(cls, v: dict[str, Kernel]) -> dict[str, Kernel]:
        for level in v:
            if level not in KERNEL_LEVELS:
                raise ValueError(f"unknown ISA level '{level}'{did_you_mean(level, KERNEL_LEVELS)} "
                                 f"(known: {', '.join(KERNEL_LEVELS)})")
        return v


class DeviceProfile(Model):
    """One phone SoC: how to recognise it, its CPU and memory, and how to export for it."""

    schema_version: int = Field(description=f"always {SCHEMA_VERSION}")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="lowercase part number, e.g. sm8650")
    vendor: NonEmptyStr
    name: NonEmptyStr
    detect: Detect = Detect()
    cpu: Cpu
    memory: Memory
    recipe: Recipe
    context: Context
    runtime: Runtime
    planning: Planning
    _source: str = PrivateAttr(default="")

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if v != SCHEMA_VERSION or isinstance(v, bool):
            raise ValueError(f"schema_version {v!r} is not supported (this exporter reads schema_version "
                             f"{SCHEMA_VERSION})")
        return v

    @model_validator(mode="after")
    def _runtime_fits_cpu(self) -> "DeviceProfile":
        total = self.total_cores
        threads, cpu_set = self.runtime.threads, list(self.runtime.cpu_set)
        if not 1 <= threads <= total:
            raise ValueError(f"field 'runtime.threads': {threads} is outside 1..{total} (the clusters list {total} cores)")
        dupes = sorted({c for c in cpu_set if cpu_set.count(c) > 1})
        if dupes:
            raise ValueError(f"field 'runtime.cpu_set': cpu ids listed twice: {dupes}")
        missing = [c for c in cpu_set if not 0 <= c < total]
        if missing:
            raise ValueError(f"field 'runtime.cpu_set': cpu ids {missing} do not exist (cpus are 0..{total - 1})")
        if len(cpu_set) < threads:
            raise ValueError(f"field 'runtime.cpu_set': {len(cpu_set)} cpus for {threads} threads "
                             "(list at least as many cpus as threads)")
        return self

    # The names the rest of exporter reads.
    @property
    def source(self) -> str:
        """Path of the YAML file it was loaded from."""
        return self._source

    @property
    def clusters(self) -> tuple[Cluster, ...]:
        return self.cpu.clusters

    @property
    def isa(self) -> tuple[str, ...]:
        return self.cpu.isa

    @property
    def default_seq_len(self) -> int:
        return self.context.default

    @property
    def max_seq_len(self) -> int:
        return self.context.max

    @property
    def threads(self) -> int:
        return self.runtime.threads

    @property
    def cpu_set(self) -> tuple[int, ...]:
        return self.runtime.cpu_set

    @property
    def kernel_level(self) -> str:
        """The fastest ISA level with its own kernel that this phone has (and the profile describes)."""
        have = [lv for lv in KERNEL_LEVELS if lv in self.isa and lv in self.planning.kernels]
        if not have:
            raise ProfileError(f"profile {self.id}: planning.kernels describes none of its ISA levels "
                               f"({', '.join(self.isa)})", hint="add planning.kernels.dotprod to the profile")
        return have[-1]

    @property
    def total_cores(self) -> int:
        return sum(c.count for c in self.cpu.clusters)

    def cluster_cpus(self) -> list[tuple[int, ...]]:
        """CPU ids of each cluster, following the order clusters are listed in (the kernel's numbering)."""
        out, first = [], 0
        for c in self.clusters:
            out.append(tuple(range(first, first + c.count)))
            first += c.count
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (for manifests and `--json`): the file's fields plus derived ones."""
        d = self.model_dump(mode="json")
        d.update(source=self.source, total_cores=self.total_cores, recipe_label=self.recipe.label())
        return d


def profile_json_schema() -> dict[str, Any]:
    """JSON Schema of a profile FILE: every field optional (a file that `extends` another holds only what it
    overrides), unknown keys and wrong types flagged. docs/schemas/profile.schema.json is this, written out."""
    return file_schema(
        DeviceProfile, title="exporter device profile", partial=True,
        extra_properties={
            EXTENDS_KEY: {"type": "string", "description": "profile id or path this one overrides (deep merge)"},
            ABSTRACT_KEY: {"type": "boolean", "description": "shared defaults, not a device (base.yaml)"},
        },
    )


def isa_from_cpuinfo(flags: Iterable[str]) -> tuple[str, ...]:
    """Our ISA feature names present in a /proc/cpuinfo "Features" flag list (in ISA_FEATURES order)."""
    have = set(flags)
    return tuple(f for f in ISA_FEATURES if CPUINFO_FLAG[f] in have)


# --------------------------------------------------------------------------------------------------- reading


def _display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _where(path: Path, pid: Any) -> str:
    shown = _display_path(path)
    return f"profile {pid} ({shown})" if isinstance(pid, str) and pid else f"profile file {shown}"


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last) and keys that are not strings."""


def _construct_mapping(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[str] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"keys must be strings, found {type(key).__name__} {str(key)[:40]!r}", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_size(data: Any, fail) -> None:
    """Refuse documents deeper or larger than any profile (aliases can make a small file enormous)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise fail(f"nested more than {MAX_DEPTH} levels deep")
        if nodes > MAX_NODES:
            raise fail(f"more than {MAX_NODES} values (a profile holds a few dozen)")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _read_yaml(path: Path) -> dict:
    def fail(message: str, hint: str | None = None) -> ProfileError:
        return ProfileError(f"{_where(path, None)}: {message}", hint=hint)

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise fail(f"larger than {MAX_FILE_BYTES // 1024} KiB; a profile is a few KB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"profile file not found: {_display_path(path)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read: {err}") from None
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError:
        raise fail(f"nested more than {MAX_DEPTH} levels deep") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise fail(f"malformed YAML{where}: {problem}") from None
    if data is None:
        raise fail("file is empty")
    if not isinstance(data, dict):
        raise fail(f"expected a mapping at the top level, got {type(data).__name__}")
    _check_size(data, fail)
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_keys(path: Path, data: dict) -> None:
    """Unknown keys are reported before merging, so the message names the file that has the typo."""
    probe = {k: v for k, v in data.items() if k not in (EXTENDS_KEY, ABSTRACT_KEY)}
    try:
        DeviceProfile.model_validate(probe)
    except ValidationError as err:
        for e in err.errors(include_url=False):
            if e["type"] == "extra_forbidden":
                problem = describe_error(e, DeviceProfile)
                raise ProfileError(f"{_where(path, data.get('id'))}: {problem.message}", hint=problem.hint) from None


def _resolve_parent(ref: str, child: Path) -> Path:
    if ref.endswith(_PROFILE_SUFFIXES) or "/" in ref or os.sep in ref:
        p = Path(ref).expanduser()
        return p if p.is_absolute() else (child.parent / p)
    return _id_path(ref)


def _load_merged(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file's data with its `extends` chain merged underneath (parent first)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(_display_path(p) for p in (*chain, path))
        raise ProfileError(f"profile file {_display_path(chain[0])}: `extends` cycle: {cycle}")
    if len(chain) >= MAX_EXTENDS:
        raise ProfileError(f"profile file {_display_path(chain[0])}: `extends` chain longer than {MAX_EXTENDS}")
    data = _read_yaml(path)
    _check_keys(path, data)
    ref = data.get(EXTENDS_KEY)
    if ref is None:
        return data
    if not isinstance(ref, str) or not ref.strip():
        raise ProfileError(f"{_where(path, data.get('id'))}: field 'extends': expected a profile id or path, "
                           f"got {ref!r}")
    parent_path = _resolve_parent(ref, path)
    if not parent_path.is_file():
        raise ProfileError(
            f"{_where(path, data.get('id'))}: field 'extends': no profile '{ref}'"
            f"{did_you_mean(ref, _shipped_ids(include_abstract=True))}",
            hint="extends takes a shipped profile id (e.g. base) or a path relative to this file")
    parent = _load_merged(parent_path, (*chain, path))
    parent.pop(ABSTRACT_KEY, None)  # abstractness is not inherited
    parent.pop(EXTENDS_KEY, None)
    return _deep_merge(parent, data)


def _build(path: Path, data: dict, shipped: bool) -> DeviceProfile:
    fields = {k: v for k, v in data.items() if k not in (EXTENDS_KEY, ABSTRACT_KEY)}
    where = _where(path, fields.get("id"))
    try:
        profile = DeviceProfile.model_validate(fields)
    except ValidationError as err:
        problem = first_problem(err, DeviceProfile)
        hint = problem.hint
        if problem.message.startswith("missing required field"):
            parts = problem.path.split(".")
            inner = keys_at(DeviceProfile, parts)
            leaf = "{" + ", ".join(f"{k}: ..." for k in inner) + "}" if inner else "..."
            hint = f"add `{': {'.join(parts)}: {leaf}{'}' * (len(parts) - 1)}` to the profile"
        if problem.path == "schema_version":
            hint = "upgrade exporter, or rewrite the profile for this schema (see docs/profiles.md)"
        if problem.path == "id" and "pattern" in str(err):
            message = f"field 'id': {fields.get('id')!r} must be lowercase letters, digits, '-', '_' or '.' (e.g. sm8650)"
        else:
            message = problem.message
        cls = RecipeError if problem.path.startswith("recipe") else ProfileError
        raise cls(f"{where}: {message}", hint=hint) from None
    if shipped and profile.id != path.stem:
        raise ProfileError(f"{where}: field 'id': '{profile.id}' does not match the file name '{path.name}' "
                           f"(expected id: {path.stem})")
    profile._source = str(path)
    return profile


# --------------------------------------------------------------------------------------------------- public


def profiles_dir() -> Path:
    """The folder of shipped profiles: $EXPORTER_PROFILES_DIR if set, else `device_profiles/` next to the package
    (a source checkout or an editable install), else one bundled inside the package."""
    env = os.environ.get("EXPORTER_PROFILES_DIR")
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise ProfileError(f"EXPORTER_PROFILES_DIR={env} is not a directory", hint="unset it to use the shipped profiles")
        return p
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "device_profiles", here / "device_profiles"):
        if candidate.is_dir():
            return candidate
    raise ProfileError(
        f"no device_profiles folder found next to {here}",
        hint="set EXPORTER_PROFILES_DIR to a folder of profile YAML files, or install exporter from a source checkout",
    )


def _id_path(pid: str) -> Path:
    base = profiles_dir()
    for suffix in _PROFILE_SUFFIXES:
        p = base / f"{pid}{suffix}"
        if p.is_file():
            return p
    return base / f"{pid}.yaml"


def _shipped_files() -> list[Path]:
    base = profiles_dir()
    return sorted(p for p in base.iterdir() if p.suffix in _PROFILE_SUFFIXES and p.is_file())


def _is_abstract(path: Path) -> bool:
    return _read_yaml(path).get(ABSTRACT_KEY) is True


def _shipped_ids(include_abstract: bool = False) -> list[str]:
    try:
        files = _shipped_files()
    except ProfileError:
        return []
    ids = []
    for p in files:
        try:
            abstract = _is_abstract(p)
        except ProfileError:  # a broken file still counts as a name to suggest
            abstract = False
        if include_abstract or not abstract:
            ids.append(p.stem)
    return ids


def _load_path(path: Path, shipped: bool) -> DeviceProfile:
    data = _load_merged(path)
    if data.get(ABSTRACT_KEY) is True:
        raise ProfileError(
            f"profile file {_display_path(path)} is abstract (shared defaults), not a device",
            hint="write a profile with `extends: base`, or pick a device listed by `exporter devices`",
        )
    return _build(path.resolve(), data, shipped)


def list_profiles() -> list[DeviceProfile]:
    """Every shipped device profile, validated, sorted by id (abstract ones such as base.yaml left out)."""
    profiles = [_load_path(p, shipped=True) for p in _shipped_files() if not _is_abstract(p)]
    return sorted(profiles, key=lambda prof: prof.id)


def load_profile(id_or_path: str | os.PathLike) -> DeviceProfile:
    """A shipped profile by id (`sm8650`, case-insensitive) or a user's YAML file by path."""
    text = os.fspath(id_or_path)
    looks_like_path = text.endswith(_PROFILE_SUFFIXES) or "/" in text or os.sep in text or isinstance(id_or_path, Path)
    if looks_like_path or Path(text).is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file not found: {text}", hint="pass a device id (see `exporter devices`) or a path to a YAML file")
        base = profiles_dir().resolve()
        return _load_path(path, shipped=path.resolve().parent == base)

    pid = text.strip().lower()
    path = _id_path(pid)
    if not path.is_file():
        ids = _shipped_ids()
        close = difflib.get_close_matches(pid, ids, n=3, cutoff=0.6)
        hint = (f"did you mean {', '.join(close)}? " if close else "") + "run `exporter devices` to list the known devices"
        raise ProfileError(f"unknown device '{text}'", hint=hint)
    return _load_path(path, shipped=True)
