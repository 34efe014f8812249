"""`exporter export` and `exporter verify`: click wrappers over the export pipeline and host verification."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .. import output
from ..build.recipes import EMBEDDING_SCHEMES, LINEAR_SCHEMES


def _human_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class _StageTimer:
    """Progress on stderr: one line per stage with the seconds the previous one took."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.t0 = self.last = time.perf_counter()
        self.current: str | None = None

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if self.quiet:
            return
        if self.current is not None:
            output.info(f"  done in {now - self.last:.1f}s")
        output.info(f"[{now - self.t0:6.1f}s] {message}")
        self.current, self.last = message, now

    def finish(self) -> None:
        if self.current is not None and not self.quiet:
            output.info(f"  done in {time.perf_counter() - self.last:.1f}s")
        self.current = None


def _export_rows(m: dict) -> list[tuple[str, str]]:
    exp = m["export"]
    return [
        ("model", f"{m['model']['id']} ({m['model']['architecture']}, {m['model']['parameters'] / 1e6:.1f}M params)"),
        ("profile", f"{m['profile']['id']} ({m['profile']['name']})"),
        ("recipe", m["recipe"]["label"]),
        ("context", str(m["max_seq_len"])),
        (".pte", f"{_human_bytes(m['pte']['bytes'])}  (bf16 weights {_human_bytes(m['bf16_bytes'])}, {m['size_reduction']:.2f}x smaller)"),
        ("export time", f"{exp['wall_s']:.1f} s  ({', '.join(f'{k[:-2]} {v:.0f}s' for k, v in exp['stages_s'].items())})"),
        ("peak RSS", _human_bytes(exp["peak_rss_bytes"])),
        ("XNNPACK calls", f"{exp['delegated_calls']} delegated; on CPU kernels: {', '.join(sorted(exp['non_delegated_ops']))}"),
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
_chunks_option = click.option("--chunks", default=4, show_default=True, help="Chunks of the text to score.")
_chunk_len_option = click.option("--chunk-len", default=256, show_default=True, help="Tokens per chunk (each scored on its own).")


@click.command("export")
@click.option("--model", default=None, help="Hub id, local folder or .gguf file (default: built-in SmolLM2-135M-Instruct).")
@click.option("--device", required=True, help="Profile id (see 'exporter devices'), a profile YAML path, or 'auto'.")
@click.option("--output", "-o", "output_dir", type=click.Path(path_type=Path), default=None, help="Output folder (default: out/<model>-<device>).")
@click.option("--quant", type=click.Choice(LINEAR_SCHEMES), default=None, help="Override the linear scheme.")
@click.option("--group-size", type=int, default=None, help="Override the linear group size (0 = per channel).")
@click.option("--embedding-quant", type=click.Choice(EMBEDDING_SCHEMES), default=None, help="Override the embedding scheme.")
@click.option("--max-seq-len", type=int, default=None, help="Context length (default: the profile's).")
@click.option("--serial", default=None, help="With --device auto: the phone to read the SoC from.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Run 'exporter verify' on the result.")
@_text_option
@_chunks_option
@_chunk_len_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (and verification) as JSON.")
def export_cmd(model, device, output_dir, quant, group_size, embedding_quant, max_seq_len, serial, force, verify, text_file, chunks, chunk_len, as_json):
    """Export a causal LM into an XNNPACK .pte for a phone SoC (model.pte + tokenizer + manifest.json)."""
    from ..artifact import check_output_free
    from ..build.export import run_export
    from ..build.plan import build_plan

    profile = device
    if device == "auto":
        from ..device.detect import auto_profile

        profile = auto_profile(serial)
        output.info(f"detected {profile.name} -> profile {profile.id}")
    if output_dir is None:
        name = Path(model).stem if model else "smollm2-135m-instruct"
        output_dir = Path("out") / f"{name.split('/')[-1].lower()}-{getattr(profile, 'id', profile)}"
    check_output_free(output_dir, force)  # before minutes of work, not after
    plan = build_plan(model, profile, output_dir, quant=quant, group_size=group_size,
                      embedding_quant=embedding_quant, max_seq_len=max_seq_len)
    for key, value in plan.overrides.items():
        output.info(f"override: {key} = {value} (profile {plan.profile.id} says otherwise)")
    verify_kwargs = _verify_kwargs(text_file, chunks, chunk_len) if verify else None
    timer = _StageTimer()
    manifest = run_export(plan, force=force, progress=timer).to_dict()
    timer.finish()
    result = None
    if verify:
        from ..verify import verify_folder

        result = verify_folder(plan.output, progress=timer, **verify_kwargs).to_dict()
        timer.finish()
    if as_json:
        output.print_json({"manifest": manifest, "verify": result})
        return
    rows = _export_rows(manifest) + (_verify_rows(result) if result else [])
    output.print_table(f"Exported to {plan.output}", ("", ""), rows)



@click.command("verify")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@_text_option
@_chunks_option
@_chunk_len_option
@click.option("--prefill-len", default=32, show_default=True, help="Tokens in the prefill call before token-by-token decode.")
@click.option("--min-agreement", type=float, default=None, help="Fail (exit 5) under this top-1 agreement with the eager model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def verify_cmd(folder: Path, text_file, chunks, chunk_len, prefill_len, min_agreement, as_json):
    """Run an export folder's .pte on this machine and compare it with the eager model."""
    from ..verify import verify_folder

    timer = _StageTimer()
    result = verify_folder(folder, prefill_len=prefill_len, min_agreement=min_agreement, progress=timer,
                           **_verify_kwargs(text_file, chunks, chunk_len)).to_dict()
    timer.finish()
    if as_json:
        output.print_json(result)
        return
    rows = [("recipe", result["recipe"]),
            (".pte", f"{_human_bytes(result['pte_bytes'])} (bf16 {_human_bytes(result['bf16_bytes'])}, {result['size_reduction']:.2f}x)")]
    output.print_table(f"Verification of {folder}", ("", ""), rows + _verify_rows(result))

