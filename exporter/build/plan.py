"""Every decision of an export, validated before any heavy work starts: profile, recipe, context, output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError
from ..profiles import DeviceProfile, load_profile
from .recipes import Recipe
from .source import ModelSource, load_config, resolve_source


@dataclass(frozen=True)
class ExportPlan:
    """Every decision of an export, validated, before any heavy work starts."""

    source: ModelSource
    profile: DeviceProfile
    recipe: Recipe
    max_seq_len: int
    output: Path
    overrides: dict = field(default_factory=dict)


def build_plan(
    model: str | None,
    device: str | DeviceProfile,
    output: str | Path,
    *,
    quant: str | None = None,
    group_size: int | None = None,
    embedding_quant: str | None = None,
    max_seq_len: int | None = None,
) -> ExportPlan:
    profile = device if isinstance(device, DeviceProfile) else load_profile(device)
    overrides = {
        k: v
        for k, v in {"linear": quant, "group_size": group_size, "embedding": embedding_quant}.items()
        if v is not None
    }
    recipe = profile.recipe.replace_checked(**overrides) if overrides else profile.recipe
    seq = max_seq_len if max_seq_len is not None else profile.default_seq_len
    if seq < 8:
        raise ModelError(f"context length {seq} is too small", hint="use --max-seq-len 8 or more")
    if seq > profile.max_seq_len:
        raise ModelError(
            f"context length {seq} exceeds the maximum {profile.max_seq_len} of profile {profile.id} "
            f"({profile.memory.typical_ram_gb:g} GB RAM)",
            hint=f"use --max-seq-len {profile.max_seq_len} or less",
        )
    source = resolve_source(model)
    model_limit = getattr(load_config(source), "max_position_embeddings", None)
    if model_limit is not None and seq > model_limit:
        raise ModelError(
            f"context length {seq} exceeds the model's limit of {model_limit} positions",
            hint=f"use --max-seq-len {model_limit} or less",
        )
    if max_seq_len is not None:
        overrides["max_seq_len"] = max_seq_len
    return ExportPlan(source, profile, recipe, seq, Path(output), overrides)
