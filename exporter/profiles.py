"""Device profiles: `device_profiles/*.yaml` -> frozen `DeviceProfile` values.

One YAML file per phone SoC. A file may `extends:` another profile (an id, or a path relative to the file);
the parent is deep-merged under the child (mappings merge key by key, scalars and lists replace). Every key is
checked against a fixed schema: an unknown key is an error naming the file, the dotted field path and the
closest valid key. Library code only raises (`ProfileError`, `RecipeError`); it never prints.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ProfileError, RecipeError

SCHEMA_VERSION = 1

LINEAR_SCHEMES = ("8da4w", "8da8w", "4w", "8w", "none")
EMBEDDING_SCHEMES = ("4w", "8w", "none")
OUTPUT_MODES = ("linear", "8w", "none")
GROUP_SIZES_4BIT = (0, 32, 64, 128, 256)  # 0 = per-channel (linear) / per-row (embedding)

ISA_FEATURES = ("asimd", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme")
# our feature name -> the flag the Linux kernel prints on the "Features" line of /proc/cpuinfo
CPUINFO_FLAG = {
    "asimd": "asimd",
    "dotprod": "asimddp",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
}

# Core name -> MIDR "CPU part" (Arm implementer 0x41 unless noted). Source: Linux
# arch/arm64/include/asm/cputype.h and Arm's Technical Reference Manuals (MIDR_EL1.PartNum).
# A profile naming one of these cores must use this part number (catches hex typos); other names are free.
KNOWN_CORE_PARTS = {
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
    "oryon": 0x001,  # Qualcomm implementer 0x51: QCOM_CPU_PART_ORYON_X1; the 8 Elite reports it too
}

ABSTRACT_KEY = "abstract"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_PROFILE_SUFFIXES = (".yaml", ".yml")


# --------------------------------------------------------------------------------------------------- values


def _is_4bit(scheme: str) -> bool:
    return scheme.endswith("4w")


def _check_group(field_name: str, scheme: str, kind: str, value: int) -> None:
    if scheme != "none" and _is_4bit(scheme):
        if value not in GROUP_SIZES_4BIT:
            choices = ", ".join(str(g) for g in GROUP_SIZES_4BIT)
            raise RecipeError(
                f"{field_name}: {value} is not valid for {kind} scheme {scheme} (choose one of {choices}; 0 = per-channel)"
            )
    elif value != 0:
        raise RecipeError(
            f"{field_name}: {value} is not valid for {kind} scheme {scheme}: "
            f"{'8-bit schemes are always per-channel' if scheme != 'none' else 'nothing is quantized'}, set {field_name}: 0"
        )


@dataclass(frozen=True)
class Recipe:
    """How a model is quantized for a device. Validated on construction (raises RecipeError)."""

    linear: str
    group_size: int
    embedding: str
    embedding_group_size: int
    output: str

    def __post_init__(self) -> None:
        for name in ("linear", "embedding", "output"):
            if not isinstance(getattr(self, name), str):
                raise RecipeError(f"recipe.{name}: expected a string, got {type(getattr(self, name)).__name__}")
        for name in ("group_size", "embedding_group_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecipeError(f"recipe.{name}: expected an integer, got {type(value).__name__}")
        _check_choice("recipe.linear", self.linear, LINEAR_SCHEMES, RecipeError)
        _check_choice("recipe.embedding", self.embedding, EMBEDDING_SCHEMES, RecipeError)
        _check_choice("recipe.output", self.output, OUTPUT_MODES, RecipeError)
        _check_group("recipe.group_size", self.linear, "linear", self.group_size)
        _check_group("recipe.embedding_group_size", self.embedding, "embedding", self.embedding_group_size)

    def label(self) -> str:
        """Short, stable name: `8da4w-g32+emb4w-g32`, `8da8w+emb8w+out8w`, `none+outnone`.

        4-bit schemes carry `-g<N>` (`-pc` for per-channel, group 0); 8-bit schemes are always per-channel and carry
        nothing. The embedding part is left out when the embedding stays float; the output part is added only when
        the lm_head is not treated like the other linears.
        """
        parts = [_scheme_label(self.linear, self.group_size)]
        if self.embedding != "none":
            parts.append("emb" + _scheme_label(self.embedding, self.embedding_group_size))
        if self.output != "linear":
            parts.append("out" + self.output)
        return "+".join(parts)

    def replace_checked(self, **overrides: Any) -> "Recipe":
        """A copy with `overrides` applied and validated (RecipeError on an unknown field or a bad value).

        Convenience: switching `linear` (or `embedding`) to an 8-bit scheme or `none` without also giving its group
        size sets that group size to 0, since those schemes only allow 0.
        """
        names = [f.name for f in dataclasses.fields(self)]
        for key in overrides:
            if key not in names:
                raise RecipeError(f"unknown recipe field '{key}'{_did_you_mean(key, names)}", hint=f"fields: {', '.join(names)}")
        for scheme_key, group_key in (("linear", "group_size"), ("embedding", "embedding_group_size")):
            scheme = overrides.get(scheme_key)
            if isinstance(scheme, str) and group_key not in overrides and not _is_4bit(scheme):
                overrides[group_key] = 0
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _scheme_label(scheme: str, group: int) -> str:
    if scheme == "none" or not _is_4bit(scheme):
        return scheme
    return f"{scheme}-g{group}" if group else f"{scheme}-pc"


@dataclass(frozen=True)
class Cluster:
    """Identical cores, in the kernel's cpu numbering order (little cores first on these phones)."""

    core: str
    count: int
    max_ghz: float
    part: int  # MIDR "CPU part" from /proc/cpuinfo, as an int (0xd82 for Cortex-X4)


@dataclass(frozen=True)
class Detect:
    """getprop values that identify the SoC; a phone matches when any listed value equals its property."""

    soc_model: tuple[str, ...]  # ro.soc.model
    board_platform: tuple[str, ...]  # ro.board.platform
    hardware: tuple[str, ...]  # ro.hardware


@dataclass(frozen=True)
class Memory:
    typical_ram_gb: float
    lpddr: str
    bandwidth_gbps: float  # peak DRAM bandwidth, GB/s


@dataclass(frozen=True)
class DeviceProfile:
    id: str
    vendor: str
    name: str
    detect: Detect
    clusters: tuple[Cluster, ...]
    isa: tuple[str, ...]
    memory: Memory
    recipe: Recipe
    default_seq_len: int
    max_seq_len: int
    threads: int
    cpu_set: tuple[int, ...]
    source: str  # path of the YAML file it was loaded from

    @property
    def total_cores(self) -> int:
        return sum(c.count for c in self.clusters)

    def cluster_cpus(self) -> list[tuple[int, ...]]:
        """CPU ids of each cluster, following the order clusters are listed in (the kernel's numbering)."""
        out, first = [], 0
        for c in self.clusters:
            out.append(tuple(range(first, first + c.count)))
            first += c.count
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (for manifests and `--json`)."""
        d = dataclasses.asdict(self)
        d["total_cores"] = self.total_cores
        d["recipe_label"] = self.recipe.label()
        return d


def isa_from_cpuinfo(flags: Iterable[str]) -> tuple[str, ...]:
    """Our ISA feature names present in a /proc/cpuinfo "Features" flag list (in ISA_FEATURES order)."""
    have = set(flags)
    return tuple(f for f in ISA_FEATURES if CPUINFO_FLAG[f] in have)


# --------------------------------------------------------------------------------------------------- schema

# Each leaf: (type name, required). Types: str, int, float, bool, str_list, int_list, isa_list, clusters.
_SCHEMA: dict[str, Any] = {
    "schema_version": ("int", True),
    "extends": ("str", False),
    ABSTRACT_KEY: ("bool", False),
    "id": ("str", True),
    "vendor": ("str", True),
    "name": ("str", True),
    "detect": {
        "soc_model": ("str_list", False),
        "board_platform": ("str_list", False),
        "hardware": ("str_list", False),
    },
    "cpu": {
        "clusters": ("clusters", True),
        "isa": ("isa_list", True),
    },
    "memory": {
        "typical_ram_gb": ("float", True),
        "lpddr": ("str", True),
        "bandwidth_gbps": ("float", True),
    },
    "recipe": {
        "linear": ("str", True),
        "group_size": ("int", True),
        "embedding": ("str", True),
        "embedding_group_size": ("int", True),
        "output": ("str", True),
    },
    "context": {
        "default": ("int", True),
        "max": ("int", True),
    },
    "runtime": {
        "threads": ("int", True),
        "cpu_set": ("int_list", True),
    },
}
_CLUSTER_SCHEMA = {"core": ("str", True), "count": ("int", True), "max_ghz": ("float", True), "part": ("part", True)}

_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str_list": "a list of strings",
    "int_list": "a list of integers",
    "isa_list": "a list of ISA feature names",
    "clusters": "a list of clusters ({core, count, max_ghz, part})",
    "part": "an integer like 0xd82",
    "mapping": "a mapping",
}


def _yaml_type(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


class _Ctx:
    """Names the profile and its file in every message."""

    def __init__(self, path: Path, pid: str | None = None):
        self.path = path
        self.pid = pid

    def where(self) -> str:
        shown = _display_path(self.path)
        return f"profile {self.pid} ({shown})" if self.pid else f"profile file {shown}"

    def error(self, message: str, hint: str | None = None, cls: type = ProfileError) -> Exception:
        return cls(f"{self.where()}: {message}", hint=hint)


def _display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_choice(field_path: str, value: str, choices: tuple[str, ...], cls: type) -> None:
    if value not in choices:
        raise cls(f"{field_path}: '{value}' is not one of {', '.join(choices)}{_did_you_mean(value, choices)}")


def _check_keys(ctx: _Ctx, data: dict, schema: dict, prefix: str) -> None:
    """Reject unknown keys anywhere in `data` (before merging, so the message names the file that has the typo)."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if not isinstance(key, str) or key not in schema:
            hint = f"valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(schema)}"
            raise ctx.error(f"unknown key '{path}'{_did_you_mean(str(key), schema)}", hint=hint)
        spec = schema[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ctx.error(f"field '{path}': expected a mapping, got {_yaml_type(value)}")
            _check_keys(ctx, value, spec, path + ".")
        elif spec[0] == "clusters" and isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise ctx.error(f"field '{path}[{i}]': expected a mapping ({{core, count, max_ghz, part}}), got {_yaml_type(item)}")
                _check_keys(ctx, item, _CLUSTER_SCHEMA, f"{path}[{i}].")


def _typed(ctx: _Ctx, path: str, kind: str, value: Any) -> Any:
    """Check `value` against `kind` and convert it (lists -> tuples, int -> float for numbers)."""

    def bad() -> Exception:
        return ctx.error(f"field '{path}': expected {_TYPE_WORDS[kind]}, got {_yaml_type(value)} ({value!r})")

    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise bad()
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if kind == "part":
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if kind in ("str_list", "isa_list"):
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad()
        return tuple(value)
    if kind == "int_list":
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad()
        return tuple(value)
    if kind == "clusters":
        if not isinstance(value, list) or not value:
            raise bad()
        return value
    raise ValueError(f"internal: unknown schema type {kind}")  # pragma: no cover


def _get(ctx: _Ctx, data: dict, dotted: str, default: Any = ...) -> Any:
    schema: Any = _SCHEMA
    node: Any = data
    parts = dotted.split(".")
    for part in parts:
        schema = schema[part]
        if not isinstance(node, dict) or node.get(part) is None:
            if default is not ...:
                return default
            raise ctx.error(f"missing required field '{dotted}'", hint=f"add `{_yaml_snippet(dotted)}` to the profile")
        node = node[part]
    return _typed(ctx, dotted, schema[0], node)


def _yaml_snippet(dotted: str) -> str:
    parts = dotted.split(".")
    return ": {".join(parts) + ": ..." + "}" * (len(parts) - 1)


# --------------------------------------------------------------------------------------------------- loading


class _DupKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _DupKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key '{key}'", key_node.start_mark
            )
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_DupKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> dict:
    ctx = _Ctx(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"profile file not found: {_display_path(path)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ctx.error(f"cannot read: {err}") from err
    try:
        data = yaml.load(text, Loader=_DupKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ctx.error(f"malformed YAML{where}: {problem}") from err
    if data is None:
        raise ctx.error("file is empty")
    if not isinstance(data, dict):
        raise ctx.error(f"expected a mapping at the top level, got {_yaml_type(data)}")
    pid = data.get("id")
    ctx.pid = pid if isinstance(pid, str) else None
    _check_keys(ctx, data, _SCHEMA, "")
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


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
    data = _read_yaml(path)
    ref = data.get("extends")
    if ref is None:
        return data
    ctx = _Ctx(path, data.get("id") if isinstance(data.get("id"), str) else None)
    ref = _typed(ctx, "extends", "str", ref)
    parent_path = _resolve_parent(ref, path)
    if not parent_path.is_file():
        raise ctx.error(
            f"field 'extends': no profile '{ref}'{_did_you_mean(ref, _shipped_ids(include_abstract=True))}",
            hint="extends takes a shipped profile id (e.g. base) or a path relative to this file",
        )
    parent = _load_merged(parent_path, (*chain, path))
    parent.pop(ABSTRACT_KEY, None)  # abstractness is not inherited
    parent.pop("extends", None)
    return _deep_merge(parent, data)


def _build(path: Path, data: dict, shipped: bool) -> DeviceProfile:
    ctx = _Ctx(path, data.get("id") if isinstance(data.get("id"), str) else None)

    version = _get(ctx, data, "schema_version")
    if version != SCHEMA_VERSION:
        raise ctx.error(
            f"schema_version {version} is not supported (this exporter reads schema_version {SCHEMA_VERSION})",
            hint="upgrade exporter, or rewrite the profile for this schema (see docs/profiles.md)",
        )

    pid = _get(ctx, data, "id")
    if not _ID_RE.match(pid):
        raise ctx.error(f"field 'id': '{pid}' must be lowercase letters, digits, '-', '_' or '.' (e.g. sm8650)")
    if shipped and pid != path.stem:
        raise ctx.error(f"field 'id': '{pid}' does not match the file name '{path.name}' (expected id: {path.stem})")

    detect = Detect(
        soc_model=_get(ctx, data, "detect.soc_model", ()),
        board_platform=_get(ctx, data, "detect.board_platform", ()),
        hardware=_get(ctx, data, "detect.hardware", ()),
    )

    clusters = []
    for i, raw in enumerate(_get(ctx, data, "cpu.clusters")):
        at = f"cpu.clusters[{i}]"
        vals = {}
        for key, (kind, _) in _CLUSTER_SCHEMA.items():
            if key not in raw or raw[key] is None:
                raise ctx.error(f"missing required field '{at}.{key}'")
            vals[key] = _typed(ctx, f"{at}.{key}", kind, raw[key])
        if vals["count"] < 1:
            raise ctx.error(f"field '{at}.count': must be at least 1, got {vals['count']}")
        if not 0 < vals["max_ghz"] < 10:
            raise ctx.error(f"field '{at}.max_ghz': {vals['max_ghz']} GHz is not plausible (expected 0 < GHz < 10)")
        if not 0 <= vals["part"] <= 0xFFF:
            raise ctx.error(f"field '{at}.part': {vals['part']:#x} is not a 12-bit MIDR part number")
        known = KNOWN_CORE_PARTS.get(vals["core"])
        if known is not None and known != vals["part"]:
            raise ctx.error(f"field '{at}.part': {vals['core']} has MIDR part {known:#05x}, not {vals['part']:#05x}")
        clusters.append(Cluster(**vals))

    isa = _get(ctx, data, "cpu.isa")
    for feature in isa:
        if feature not in ISA_FEATURES:
            raise ctx.error(
                f"field 'cpu.isa': unknown feature '{feature}'{_did_you_mean(feature, ISA_FEATURES)}",
                hint=f"known features: {', '.join(ISA_FEATURES)} (our names; /proc/cpuinfo calls dotprod 'asimddp')",
            )
    if len(set(isa)) != len(isa):
        raise ctx.error(f"field 'cpu.isa': duplicate features in {list(isa)}")

    memory = Memory(
        typical_ram_gb=_get(ctx, data, "memory.typical_ram_gb"),
        lpddr=_get(ctx, data, "memory.lpddr"),
        bandwidth_gbps=_get(ctx, data, "memory.bandwidth_gbps"),
    )
    if memory.typical_ram_gb <= 0:
        raise ctx.error(f"field 'memory.typical_ram_gb': must be positive, got {memory.typical_ram_gb}")
    if memory.bandwidth_gbps <= 0:
        raise ctx.error(f"field 'memory.bandwidth_gbps': must be positive, got {memory.bandwidth_gbps}")

    rfields = {k: _get(ctx, data, f"recipe.{k}") for k in ("linear", "group_size", "embedding", "embedding_group_size", "output")}
    try:
        recipe = Recipe(**rfields)
    except RecipeError as err:
        raise ctx.error(str(err), hint=err.hint, cls=RecipeError) from None

    default_seq_len = _get(ctx, data, "context.default")
    max_seq_len = _get(ctx, data, "context.max")
    if default_seq_len < 1:
        raise ctx.error(f"field 'context.default': must be at least 1, got {default_seq_len}")
    if default_seq_len > max_seq_len:
        raise ctx.error(f"field 'context.default': {default_seq_len} is larger than context.max ({max_seq_len})")

    total = sum(c.count for c in clusters)
    threads = _get(ctx, data, "runtime.threads")
    cpu_set = _get(ctx, data, "runtime.cpu_set")
    if not 1 <= threads <= total:
        raise ctx.error(f"field 'runtime.threads': {threads} is outside 1..{total} (the clusters list {total} cores)")
    if not cpu_set:
        raise ctx.error("field 'runtime.cpu_set': must list at least one cpu id")
    dupes = sorted({c for c in cpu_set if cpu_set.count(c) > 1})
    if dupes:
        raise ctx.error(f"field 'runtime.cpu_set': cpu ids listed twice: {dupes}")
    out_of_range = [c for c in cpu_set if not 0 <= c < total]
    if out_of_range:
        raise ctx.error(f"field 'runtime.cpu_set': cpu ids {out_of_range} do not exist (cpus are 0..{total - 1})")
    if len(cpu_set) < threads:
        raise ctx.error(f"field 'runtime.cpu_set': {len(cpu_set)} cpus for {threads} threads (list at least as many cpus as threads)")

    return DeviceProfile(
        id=pid,
        vendor=_get(ctx, data, "vendor"),
        name=_get(ctx, data, "name"),
        detect=detect,
        clusters=tuple(clusters),
        isa=isa,
        memory=memory,
        recipe=recipe,
        default_seq_len=default_seq_len,
        max_seq_len=max_seq_len,
        threads=threads,
        cpu_set=cpu_set,
        source=str(path),
    )


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
