"""The export pipeline: profile + model -> plan -> static-cache decoder -> quantized -> .pte folder."""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from .artifact import PTE, Manifest, check_output_free, file_sha256, staged_output, write_bytes_synced
from .errors import ModelError
from .profiles import DeviceProfile, Recipe, load_profile
from .source import ModelSource, load_config, resolve_source

Progress = Callable[[str], None]

# Tokens of the built-in sample text used to weigh 4-bit scale search (see recipes.py). Per-channel
# mean squares settle within a few hundred tokens; more only slows the export.
CALIBRATION_TOKENS = 512


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


def _versions() -> dict:
    from importlib.metadata import version

    out = {"exporter": __version__}
    for pkg in ("torch", "executorch", "torchao", "transformers"):
        out[pkg] = version(pkg)
    return out


def _bf16_bytes(hf_model) -> int:
    # Unique tensors only: a tied embedding/lm_head is stored once in the original checkpoint.
    seen = {p.data_ptr(): p.numel() for p in hf_model.parameters()}
    return 2 * sum(seen.values())


def run_export(plan: ExportPlan, *, force: bool = False, progress: Progress = lambda s: None) -> Manifest:
    """Export `plan` into `plan.output` (model.pte, tokenizer, manifest.json). Returns the manifest."""
    import torch

    from .lower import export_program, lower_to_executorch, runner_metadata
    from .model import arch_spec, build_static_lm
    from .recipes import apply_recipe, collect_importance
    from .verify import sample_text
    from .source import load_model, load_tokenizer, special_ids, weights_sha256

    check_output_free(plan.output, force)
    t_start = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str, t0: float) -> float:
        now = time.perf_counter()
        stages[name] = round(now - t0, 2)
        return now

    progress(f"loading {plan.source.id}")
    t = time.perf_counter()
    hf_model = load_model(plan.source)
    tokenizer = load_tokenizer(plan.source)
    weights_hash = weights_sha256(plan.source)
    bos_id, eos_ids = special_ids(hf_model, tokenizer)
    bf16 = _bf16_bytes(hf_model)
    n_params = bf16 // 2
    family = arch_spec(hf_model.config).family
    lm = build_static_lm(hf_model, plan.max_seq_len)
    t = stage("load_s", t)

    progress(f"quantizing ({plan.recipe.label()})")
    calib_ids = tokenizer(sample_text(), add_special_tokens=False)["input_ids"][:CALIBRATION_TOKENS]
    importance = collect_importance(hf_model, calib_ids)
    del hf_model
    report = apply_recipe(lm, plan.recipe, importance)
    t = stage("quantize_s", t)

    progress("torch.export (dynamic prompt length)")
    with torch.no_grad():
        program = export_program(lm)
    t = stage("export_s", t)

    lowered = lower_to_executorch(program, runner_metadata(lm, bos_id=bos_id, eos_ids=eos_ids), progress)
    stages["lower_s"] = round(lowered.lower_s, 2)
    stages["serialize_s"] = round(lowered.serialize_s, 2)
    t = time.perf_counter()

    progress(f"writing {plan.output}")
    with staged_output(plan.output, force) as stage_dir:
        pte_path = stage_dir / PTE
        write_bytes_synced(pte_path, lowered.buffer)
        tokenizer.save_pretrained(stage_dir)
        tok_file = "tokenizer.json" if (stage_dir / "tokenizer.json").is_file() else None
        if tok_file is None:
            raise ModelError(f"the tokenizer of {plan.source.id} has no fast (tokenizer.json) form, which the runners need")
        pte_bytes = pte_path.stat().st_size
        pte_sha = file_sha256(pte_path)
        stages["write_s"] = round(time.perf_counter() - t, 2)
        manifest = Manifest(
            model={
                "id": plan.source.id,
                "kind": plan.source.kind,
                "architecture": family,
                "weights_sha256": weights_hash,
                "parameters": n_params,
            },
            profile={"id": plan.profile.id, "name": plan.profile.name, "vendor": plan.profile.vendor},
            recipe={
                **plan.recipe.to_dict(),
                "label": plan.recipe.label(),
                "applied": {
                    "linear_layers": report.linear_layers,
                    "per_channel_fallback": list(report.per_channel_fallback),
                    "embedding": report.embedding,
                    "output": report.output,
                    "scale_search": report.scale_search,
                    "refined_layers": report.refined_layers,
                    "calibration_tokens": len(calib_ids),
                },
            },
            max_seq_len=plan.max_seq_len,
            pte={"file": PTE, "bytes": pte_bytes, "sha256": pte_sha},
            bf16_bytes=bf16,
            size_reduction=round(bf16 / pte_bytes, 3),
            tokenizer={"file": tok_file, "bos_id": bos_id, "eos_ids": eos_ids},
            chat_template=getattr(tokenizer, "chat_template", None),
            threads=plan.profile.threads,
            cpu_set=list(plan.profile.cpu_set),
            vocab_size=lm.vocab_size,
            n_layers=lm.n_layers,
            versions=_versions(),
            export={
                "wall_s": round(time.perf_counter() - t_start, 2),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "stages_s": stages,
                "delegated_calls": lowered.delegated_ops,
                "non_delegated_ops": lowered.non_delegated_ops,
            },
            overrides=plan.overrides,
        )
        (stage_dir / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return manifest
