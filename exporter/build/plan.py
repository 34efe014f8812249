"""Every decision of an export, validated before any heavy work starts: profile, recipe, context, output."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypedDict, Unpack

from ..errors import UsageError
from ..profiles import DeviceProfile, load_profile
from .families import check_kv_cache, family_of
from .recipes import Recipe, parse_label
from .source import ModelSource, load_config, resolve_source

MIN_SEQ_LEN = 8
AUTO = "auto"  # --recipe auto: the recipe `exporter plan` chooses for the model and profile


@dataclass(frozen=True)
class ContextChoice:
    """The context length baked into the .pte and how it was arrived at."""

    max_seq_len: int
    requested: int
    model_limit: int | None

    @property
    def capped(self) -> bool:
        return self.max_seq_len < self.requested


@dataclass(frozen=True)
class ExportPlan:
    """Every decision of an export, validated, before any heavy work starts."""

    source: ModelSource
    profile: DeviceProfile
    recipe: Recipe
    context: ContextChoice
    output: Path
    overrides: dict = field(default_factory=dict)
    notices: tuple[str, ...] = ()  # what the caller should tell the user (overrides, caps)
    chosen_by: dict | None = None  # `--recipe auto`: the plan's record (artifact.PlanRecord fields)

    @property
    def max_seq_len(self) -> int:
        return self.context.max_seq_len


def resolve_profile(device: str | os.PathLike | DeviceProfile, *, serial: str | None = None,
                    adb_path: str | os.PathLike | None = None) -> tuple[DeviceProfile, list[str]]:
    """A profile from an id, a YAML path, a loaded profile, or 'auto' (read from the connected phone)."""
    if isinstance(device, DeviceProfile):
        return device, []
    if os.fspath(device) == "auto":
        from ..device.detect import auto_detect

        profile, dev = auto_detect(serial, adb_path)
        return profile, [f"detected {dev.summary()} -> profile {profile.id}"]
    return load_profile(device), []


def default_output(source: ModelSource, profile: DeviceProfile) -> Path:
    """out/<model name>-<profile id>: `smollm2-135m-instruct-sm8650`."""
    name = source.id.rstrip("/").split("/")[-1]
    if name.endswith(".gguf"):
        name = name[: -len(".gguf")]
    return Path("out") / f"{name.lower()}-{profile.id}"


class PlanOptions(TypedDict, total=False):
    """What a user may choose beyond model, device and output (the CLI's flags, the API's keywords)."""

    recipe: str | None  # a full label (`8da4w-g64+emb8w`) instead of the profile's recipe; "auto": exporter plan's
    quant: str | None  # these three override single fields of that recipe
    group_size: int | None
    embedding_quant: str | None
    kv_cache: str | None  # "int8" | "fp32": the KV cache's storage, overriding the recipe's
    max_seq_len: int | None  # default: the profile's context length, capped to the model's limit
    serial: str | None  # with device "auto": which phone to detect
    adb: str | os.PathLike | None  # the adb client (default: EXPORTER_ADB, then PATH)
    progress: Callable[[str], None] | None  # with recipe "auto": the plan's progress


def build_plan(model: str | None, device: str | os.PathLike | DeviceProfile, output: str | os.PathLike | None = None,
               **options: Unpack[PlanOptions]) -> ExportPlan:
    """Validate an export before it starts (see PlanOptions for the choices)."""
    recipe, quant, group_size, embedding_quant, kv_cache, max_seq_len = (
        options.get(k) for k in ("recipe", "quant", "group_size", "embedding_quant", "kv_cache", "max_seq_len"))
    profile, notices = resolve_profile(device, serial=options.get("serial"), adb_path=options.get("adb"))
    chosen_by = None
    if recipe == AUTO:
        from ..plan_run import run_plan

        result = run_plan(model, profile, max_seq_len=max_seq_len, progress=options.get("progress") or (lambda s: None))
        recipe, chosen_by = result.chosen, result.record()
        notices.append(f"recipe {recipe} chosen by exporter plan: {result.reason}")
    base = parse_label(recipe) if recipe else profile.recipe
    overrides: dict = {"recipe": base.label()} if recipe else {}
    fields = {k: v for k, v in {"linear": quant, "group_size": group_size, "embedding": embedding_quant,
                                "kv_cache": kv_cache}.items() if v is not None}
    chosen = base.replace_checked(**fields) if fields else base
    overrides.update(fields)
    if chosen != profile.recipe:
        notices.append(f"recipe {chosen.label()} (profile {profile.id} says {profile.recipe.label()})")

    requested = max_seq_len if max_seq_len is not None else profile.default_seq_len
    if requested < MIN_SEQ_LEN:
        raise UsageError(f"context length {requested} is too small", hint=f"use --max-seq-len {MIN_SEQ_LEN} or more")
    if requested > profile.max_seq_len:
        # Checked on the request, before any cap: asking a phone for more than it holds is an error even when
        # the model's own limit would have shrunk the request.
        raise UsageError(
            f"context length {requested} exceeds the maximum {profile.max_seq_len} of profile {profile.id} "
            f"({profile.memory.typical_ram_gb:g} GB RAM)",
            hint=f"use --max-seq-len {profile.max_seq_len} or less",
        )
    source = resolve_source(model)
    config = load_config(source)
    if chosen.kv_cache != "fp32":
        check_kv_cache(family_of(config), chosen.kv_cache)
    model_limit = getattr(config, "max_position_embeddings", None)
    seq = requested
    if isinstance(model_limit, int) and model_limit >= MIN_SEQ_LEN and requested > model_limit:
        seq = model_limit
        notices.append(f"context length {requested} capped to {model_limit}, the model's max_position_embeddings")
    if max_seq_len is not None:
        overrides["max_seq_len"] = max_seq_len
    context = ContextChoice(seq, requested, model_limit if isinstance(model_limit, int) else None)
    out = Path(output) if output is not None else default_output(source, profile)
    return ExportPlan(source, profile, chosen, context, out, overrides, tuple(notices), chosen_by)
