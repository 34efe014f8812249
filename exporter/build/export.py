"""The export pipeline: profile + model -> plan -> static-cache decoder -> quantized -> .pte folder."""

from __future__ import annotations

import errno
import resource
import time
from typing import Callable

from .. import __version__
from ..artifact import (
    MANIFEST_SCHEMA_VERSION,
    PTE,
    Artifact,
    PlanRecord,
    ContextRecord,
    DimsRecord,
    ExportRecord,
    FileRecord,
    Manifest,
    ModelRecord,
    ProfileRecord,
    RecipeRecord,
    TokenizerRecord,
    check_output_free,
    file_sha256,
    staged_output,
    top_token_id,
    write_bytes_synced,
)
from ..errors import ModelError, OutputError
from .plan import ExportPlan

TOKENIZER = "tokenizer.json"

Progress = Callable[[str], None]

# Tokens of the built-in sample text used to weigh 4-bit scale search (see recipes.py). Per-channel
# mean squares settle within a few hundred tokens; more only slows the export.
CALIBRATION_TOKENS = 512


def library_versions() -> dict:
    """exporter and the libraries that decide what a .pte contains (manifests, plan caches)."""
    from importlib.metadata import version

    out = {"exporter": __version__}
    for pkg in ("torch", "executorch", "torchao", "transformers"):
        out[pkg] = version(pkg)
    return out


def _bf16_bytes(hf_model) -> int:
    # Unique tensors only: a tied embedding/lm_head is stored once in the original checkpoint.
    seen = {p.data_ptr(): p.numel() for p in hf_model.parameters()}
    return 2 * sum(seen.values())


def run_export(plan: ExportPlan, *, force: bool = False, progress: Progress = lambda s: None) -> Artifact:
    """Export `plan` into `plan.output` (model.pte, tokenizer, manifest.json); the caller holds its output_lock."""
    import torch

    from .candidates import count_bytes
    from .lower import export_program, lower_to_executorch, runner_metadata
    from .memory import release_freed_memory
    from .model import arch_spec, build_static_lm, spec_kv_cache_bytes
    from .recipes import apply_recipe, collect_importance
    from .source import (
        gguf_parsed_once,
        load_model,
        load_tokenizer,
        sample_text,
        special_ids,
        weights_sha256,
    )

    check_output_free(plan.output, force)
    t_start = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str, t0: float) -> float:
        now = time.perf_counter()
        stages[name] = round(now - t0, 2)
        return now

    progress(f"loading {plan.source.id}")
    t = time.perf_counter()
    with gguf_parsed_once():
        hf_model = load_model(plan.source)
        tokenizer = load_tokenizer(plan.source)
    weights_hash = weights_sha256(plan.source)
    bos_id, eos_ids = special_ids(hf_model, tokenizer)
    bf16 = _bf16_bytes(hf_model)
    n_params = bf16 // 2
    family = arch_spec(hf_model.config).family
    lm = build_static_lm(hf_model, plan.max_seq_len, plan.recipe.kv_cache)
    _check_tokenizer_ids(tokenizer, lm.vocab_size, plan)
    t = stage("load_s", t)

    progress(f"quantizing ({plan.recipe.label()})")
    calib_ids = tokenizer(sample_text(), add_special_tokens=False)["input_ids"][:CALIBRATION_TOKENS]
    importance = collect_importance(hf_model, calib_ids)
    del hf_model
    release_freed_memory()  # the transformers model's float weights go before quantization needs room
    report = apply_recipe(lm, plan.recipe, importance)
    del importance
    weights_read = count_bytes(lm, plan.max_seq_len).read_per_token  # the roofline's weights (roofline.py)
    release_freed_memory()
    t = stage("quantize_s", t)

    progress("torch.export (dynamic prompt length)")
    with torch.no_grad():
        program = export_program(lm)
    t = stage("export_s", t)

    metadata = runner_metadata(lm, bos_id=bos_id, eos_ids=eos_ids)
    vocab_size, n_layers, spec = lm.vocab_size, lm.n_layers, lm.spec
    del lm  # the program holds the weights from here on
    release_freed_memory()
    lowered = lower_to_executorch(program, metadata, progress)
    del program
    release_freed_memory()
    stages["lower_s"] = round(lowered.lower_s, 2)
    stages["serialize_s"] = round(lowered.serialize_s, 2)
    t = time.perf_counter()

    progress(f"writing {plan.output}")
    with staged_output(plan.output, force) as stage_dir:
        pte_path = stage_dir / PTE
        write_bytes_synced(pte_path, lowered.buffer)
        _save_tokenizer(tokenizer, stage_dir, plan)
        stages["write_s"] = round(time.perf_counter() - t, 2)
        tok_path = stage_dir / TOKENIZER
        manifest = Manifest(
            schema_version=MANIFEST_SCHEMA_VERSION,
            model=ModelRecord(id=plan.source.id, kind=plan.source.kind, architecture=family,
                              weights_sha256=weights_hash, parameters=n_params),
            profile=ProfileRecord(id=plan.profile.id, name=plan.profile.name, vendor=plan.profile.vendor),
            recipe=RecipeRecord(spec=plan.recipe, label=plan.recipe.label(),
                                applied=report.model_copy(update={"calibration_tokens": len(calib_ids)})),
            max_seq_len=plan.max_seq_len,
            context=ContextRecord(requested=plan.context.requested, model_limit=plan.context.model_limit,
                                  capped=plan.context.capped),
            pte=FileRecord(file=PTE, bytes=pte_path.stat().st_size, sha256=file_sha256(pte_path)),
            bf16_bytes=bf16,
            size_reduction=round(bf16 / pte_path.stat().st_size, 3),
            tokenizer=TokenizerRecord(file=TOKENIZER, bytes=tok_path.stat().st_size, sha256=file_sha256(tok_path),
                                      bos_id=bos_id, eos_ids=tuple(eos_ids)),
            chat_template=getattr(tokenizer, "chat_template", None),
            threads=plan.profile.threads,
            cpu_set=plan.profile.cpu_set,
            vocab_size=vocab_size,
            n_layers=n_layers,
            kv_cache_bytes=spec_kv_cache_bytes(spec, plan.max_seq_len, plan.recipe.kv_cache),
            dims=DimsRecord.of(spec),
            weight_bytes_per_token=weights_read,
            versions=library_versions(),
            export=ExportRecord(
                wall_s=round(time.perf_counter() - t_start, 2),
                peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                stages_s=stages, delegated_calls=lowered.delegated_ops, non_delegated_ops=lowered.non_delegated_ops,
            ),
            overrides=plan.overrides,
            plan=PlanRecord.model_validate(plan.chosen_by) if plan.chosen_by else None,
        )
        manifest.save(stage_dir)
    return Artifact(plan.output, manifest)


def _check_tokenizer_ids(tokenizer, vocab_size: int, plan: ExportPlan) -> None:
    """Refuse, before minutes of lowering, a tokenizer with ids past the model's vocabulary.

    A tokenizer class may add its own special tokens when it loads a tokenizer (Qwen2's adds <|endoftext|>),
    and a model whose embedding has no row for them would index past it on the phone. tokenizer.json is
    written from this backend tokenizer, so its ids are the ones the saved file will have.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise _no_fast_form(plan)
    top = top_token_id(backend)
    if top >= vocab_size:
        raise ModelError(f"the tokenizer of {plan.source.id} has token ids up to {top} once saved, but the model's "
                         f"vocabulary has {vocab_size} entries",
                         hint="give the model an embedding row for every token of its tokenizer "
                              "(resize_token_embeddings), or use the tokenizer it was trained with")


def _no_fast_form(plan: ExportPlan) -> ModelError:
    return ModelError(f"the tokenizer of {plan.source.id} has no fast form ({TOKENIZER}), which the runners need",
                      hint="use a model whose tokenizer has a tokenizer.json (a 'fast' tokenizer)")


def _save_tokenizer(tokenizer, folder, plan: ExportPlan) -> None:
    """tokenizer.json (what every runner reads) and its config; every failure is one clear error."""
    try:
        tokenizer.save_pretrained(folder)
    except Exception as err:  # the Rust tokenizers library raises plain Exception, e.g. for a full disk
        text = str(err)
        full = "No space left" in text or getattr(err, "errno", None) == errno.ENOSPC
        raise OutputError(f"could not write the tokenizer into {plan.output}: {'disk full' if full else text}",
                          hint="free disk space, or choose another --output" if full else
                          "check permissions of the output folder") from err
    if not (folder / TOKENIZER).is_file():
        raise _no_fast_form(plan)
