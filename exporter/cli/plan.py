"""`exporter plan`: click wrapper over the recipe planner (measure candidates, predict phone speed, choose)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import output
from .options import StageTimer, human_bytes, json_option


def _rows(plan) -> list[tuple]:
    out = []
    for r in plan.rows:
        q = r.quality
        out.append(("*" if r.chosen else "", r.label, human_bytes(r.weights["total"]), human_bytes(r.memory_bytes),
                    "yes" if r.fits else "NO", f"{q['perplexity']:.2f} ({r.ppl_increase:+.0%})", f"{q['kl']:.3f}",
                    f"{r.prefill_tps:.0f}", f"{r.decode_tps:.0f}", "yes" if r.pareto else "", r.verdict))
    return out


@click.command("plan")
@click.option("--device", required=True, help="Profile id (see 'exporter devices'), a profile YAML path, or 'auto'.")
@click.option("--model", default=None, help="Hub id, local folder or .gguf file (default: built-in SmolLM2-135M-Instruct).")
@click.option("--max-seq-len", type=int, default=None, help="Context length (default: the profile's; capped to the model's).")
@click.option("--text", "text_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Evaluation text (default: $EXPORTER_EVAL_TEXT, else Pride and Prejudice from ../shared/data/austen).")
@click.option("--chunks", type=click.IntRange(min=1), default=4, show_default=True, help="Chunks of the text to score.")
@click.option("--chunk-len", type=click.IntRange(min=2), default=256, show_default=True, help="Tokens per chunk.")
@click.option("--no-cache", is_flag=True, help="Measure every candidate again instead of reusing cached measurements.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write a PNG: predicted decode tok/s against perplexity, with the Pareto front.")
@click.option("--serial", default=None, help="With --device auto: the phone to read the SoC from.")
@json_option
def plan_cmd(device, model, max_seq_len, text_file, chunks, chunk_len, no_cache, plot_path, serial, as_json):
    """Choose a recipe for a phone: measure candidate recipes on this machine, predict their speed there."""
    from ..api import plan

    timer = StageTimer()
    result = plan(model, device=device, max_seq_len=max_seq_len, text=text_file, chunks=chunks, chunk_len=chunk_len,
                  use_cache=not no_cache, plot=plot_path, serial=serial, progress=timer)
    timer.finish()
    if as_json:
        output.print_json(result.to_dict())
        return
    p, e = result.prediction, result.evaluation
    title = (f"Plan for {result.model} on {result.profile} (context {result.context}; budget "
             f"{human_bytes(p['budget_bytes'])}; bound +{p['max_ppl_increase']:.0%} over unquantized perplexity "
             f"{result.unquantized['perplexity']:.2f})")
    output.print_table(title, ("", "recipe", ".pte weights", "memory", "fits", "perplexity", "KL", "prefill tok/s",
                               "decode tok/s", "Pareto", "verdict"), _rows(result))
    output.print_text(f"chosen: {result.chosen}: {result.reason}\n")
    output.print_text(f"quality: {e['text']}, {e['chunks']} x {e['chunk_len']} tokens ({e['scored_tokens']} scored); "
                      f"calibration: {e['calibration_tokens']} tokens of the {e['calibration']}, {e['disjoint']}\n")
    output.print_text(f"speed: {p['kernel_level']} kernels ({p['kernel']}), efficiency decode {p['decode_efficiency']:.2f} / "
                      f"prefill {p['prefill_efficiency']:.2f} from {p['efficiency_source']}; decode with the KV cache "
                      f"{p['decode_depth']} deep, prefill of {p['prefill_prompt']} tokens"
                      + (f"; plot: {plot_path}" if plot_path else "") + ("; measurements from the cache" if result.cached else "") + "\n")
