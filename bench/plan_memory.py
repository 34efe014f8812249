"""Peak RSS of `exporter plan`'s measuring on the built-in model: one load, then the candidates one by one.

    PYTHONPATH=<checkout> .venv/bin/python bench/plan_memory.py [--candidates N] [--out FILE.json]

Runs the plan's own code (plan_run._evaluator, EagerEvaluator.measure) of the checkout on PYTHONPATH (without
it, whichever `exporter` the environment has installed; the first line says which), without the per-layer costs
or the cache, and prints the resident and peak RSS after each candidate; --out keeps each candidate's quality
and bytes, so two checkouts can be compared candidate by candidate.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=11, help="how many of the plan's candidates (in order)")
    parser.add_argument("--device", default="sm8650")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import exporter
    from exporter.build.candidates import candidate_recipes
    from exporter.build.plan import build_plan
    from exporter.plan_run import EvalSettings, _evaluator

    print(f"exporter from {Path(exporter.__file__).parent}", flush=True)
    plan = build_plan(None, args.device)
    settings = EvalSettings()
    text = settings.text_path()
    t0 = time.process_time()
    ev, _ = _evaluator(plan.source, text.read_text(encoding="utf-8"), text.name, settings, print)
    print(f"loaded: rss {rss_mb():.0f} MB, peak {peak_mb():.0f} MB, cpu {time.process_time() - t0:.0f} s", flush=True)
    # the plan orders mixed-precision layers by measured cost; any order measures the same way
    layers = list(range(ev.lm.n_layers))
    out = {}
    for recipe in candidate_recipes(plan.recipe, layers)[: args.candidates]:
        m = ev.measure(recipe, context=0)
        out[recipe.label()] = {"quality": m.quality.to_dict(), "weights": m.weights.to_dict()}
        print(f"{recipe.label()}: perplexity {m.quality.perplexity:.3f}, rss {rss_mb():.0f} MB, peak {peak_mb():.0f} MB,"
              f" cpu {time.process_time() - t0:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
