"""`exporter export` and `exporter verify`: click wrappers over the export pipeline and host verification."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import output
from ..build.recipes import EMBEDDING_SCHEMES, KV_CACHE_DTYPES, LINEAR_SCHEMES
from .options import StageTimer, adb_option, human_bytes, json_option

if TYPE_CHECKING:
    from ..artifact import Manifest


def _export_rows(m: Manifest) -> list[tuple[str, str]]:
    exp = m.export
    ctx = f"{m.max_seq_len}" + (f" (asked {m.context.requested}, capped to the model's limit)" if m.context.capped else "")
    return [
        ("model", f"{m.model.id} ({m.model.architecture}, {m.model.parameters / 1e6:.1f}M params)"),
        ("profile", f"{m.profile.id} ({m.profile.name})"),
        ("recipe", m.recipe.label),
        ("context", ctx),
        ("KV cache", human_bytes(m.kv_cache_bytes) if m.kv_cache_bytes is not None else "not recorded"),
        (".pte", f"{human_bytes(m.pte.bytes)}  (bf16 weights {human_bytes(m.bf16_bytes)}, {m.size_reduction:.2f}x smaller)"),
        ("export time", f"{exp.wall_s:.1f} s  ({', '.join(f'{k[:-2]} {v:.0f}s' for k, v in exp.stages_s.items())})"),
        ("peak RSS", human_bytes(exp.peak_rss_bytes)),
        ("XNNPACK calls", f"{exp.delegated_calls} delegated; on CPU kernels: {', '.join(sorted(exp.non_delegated_ops))}"),
    ]


def _verify_rows(v: dict) -> list[tuple[str, str]]:
    return [
        ("text", f"{v['text']}: {v['chunks']} chunks x {v['chunk_len']} tokens, prefill {v['prefill_len']}, {v['scored_tokens']} scored"),
        ("top-1 agreement", f"{v['top1_agreement'] * 100:.1f}%"),
        ("mean KL", f"{v['mean_kl']:.4f}"),
        ("perplexity", f"eager fp32 {v['ppl_eager']:.2f} -> .pte {v['ppl_pte']:.2f}"),
        ("host tokens/s", f"prefill {v['host_prefill_tps']:.0f}, decode {v['host_decode_tps']:.1f} ({v['threads']} threads, this machine)"),
        ("stock runner", ("ok: " if v["runner_ok"] else "FAILED: ") + repr(v["runner_text"])),
    ]


def _verify_kwargs(text_file: Path | None, chunks: int, chunk_len: int) -> dict:
    kwargs: dict = {"chunks": chunks, "chunk_len": chunk_len}
    if text_file is not None:
        try:
            kwargs["text"] = text_file.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise click.BadParameter(f"cannot read {text_file}: {err.strerror}", param_hint="--text") from err
        kwargs["text_name"] = text_file.name
    return kwargs


_text_option = click.option("--text", "text_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                            help="Text to score for perplexity and agreement (default: a built-in sample).")
_chunks_option = click.option("--chunks", type=click.IntRange(min=1), default=4, show_default=True,
                              help="Chunks of the text to score.")
_chunk_len_option = click.option("--chunk-len", type=click.IntRange(min=2), default=256, show_default=True,
                                 help="Tokens per chunk (each scored on its own).")


@click.command("export")
@click.option("--model", default=None, help="Hub id, local folder or .gguf file (default: built-in SmolLM2-135M-Instruct).")
@click.option("--device", required=True, help="Profile id (see 'exporter devices'), a profile YAML path, or 'auto'.")
@click.option("--output", "-o", "output_dir", type=click.Path(path_type=Path), default=None, help="Output folder (default: out/<model>-<device>).")
@click.option("--recipe", default=None, help="A whole recipe label instead of the profile's, e.g. 8da4w-g64+emb8w; 'auto': the one 'exporter plan' chooses.")
@click.option("--quant", type=click.Choice(LINEAR_SCHEMES), default=None, help="Override the linear scheme.")
@click.option("--group-size", type=int, default=None, help="Override the linear group size (0 = per channel).")
@click.option("--embedding-quant", type=click.Choice(EMBEDDING_SCHEMES), default=None, help="Override the embedding scheme.")
@click.option("--kv-cache", type=click.Choice(KV_CACHE_DTYPES), default=None,
              help="KV cache storage (default: the profile's recipe, fp32 unless it says int8).")
@click.option("--max-seq-len", type=int, default=None, help="Context length (default: the profile's; capped to the model's).")
@click.option("--serial", default=None, help="With --device auto: the phone to read the SoC from.")
@adb_option
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Run 'exporter verify' on the result.")
@_text_option
@_chunks_option
@_chunk_len_option
@json_option
def export_cmd(model, device, output_dir, recipe, quant, group_size, embedding_quant, kv_cache, max_seq_len, serial, adb_path,
               force, verify, text_file, chunks, chunk_len, as_json):
    """Export a causal LM into an XNNPACK .pte for a phone SoC (model.pte + tokenizer + manifest.json)."""
    from ..api import export

    timer = StageTimer()
    result = export(model, device=device, output=output_dir, recipe=recipe, quant=quant, group_size=group_size,
                    embedding_quant=embedding_quant, kv_cache=kv_cache, max_seq_len=max_seq_len, serial=serial, adb=adb_path, force=force,
                    verify=verify, progress=timer, **_verify_kwargs(text_file, chunks, chunk_len))
    timer.finish()
    if as_json:
        output.print_json({"manifest": result.manifest.to_dict(),
                           "verify": result.verification.to_dict() if result.verification else None})
        return
    rows = _export_rows(result.manifest) + (_verify_rows(result.verification.to_dict()) if result.verification else [])
    output.print_table(f"Exported to {result.folder}", ("", ""), rows)


@click.command("verify")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@_text_option
@_chunks_option
@_chunk_len_option
@click.option("--prefill-len", default=32, show_default=True, help="Tokens in the prefill call before token-by-token decode.")
@click.option("--min-agreement", type=float, default=None, help="Fail (exit 5) under this top-1 agreement with the eager model.")
@json_option
def verify_cmd(folder: Path, text_file, chunks, chunk_len, prefill_len, min_agreement, as_json):
    """Run an export folder's .pte on this machine and compare it with the eager model."""
    from ..api import verify

    timer = StageTimer()
    result = verify(folder, prefill_len=prefill_len, min_agreement=min_agreement, progress=timer,
                    **_verify_kwargs(text_file, chunks, chunk_len)).to_dict()
    timer.finish()
    if as_json:
        output.print_json(result)
        return
    rows = [("recipe", result["recipe"]),
            (".pte", f"{human_bytes(result['pte_bytes'])} (bf16 {human_bytes(result['bf16_bytes'])}, {result['size_reduction']:.2f}x)")]
    output.print_table(f"Verification of {folder}", ("", ""), rows + _verify_rows(result))
