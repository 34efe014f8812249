"""`exporter plan --plot`: candidates as predicted decode tok/s against perplexity, the Pareto front drawn."""

from __future__ import annotations

from pathlib import Path

from .errors import OutputError
from .planner import PlanResult


def plot_plan(plan: PlanResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on build machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=90)
    bound = plan.unquantized["perplexity"] * (1 + plan.prediction["max_ppl_increase"])
    for r in plan.rows:
        color = "tab:green" if r.chosen else "tab:blue" if r.fits and r.within_quality else "tab:gray"
        ax.scatter(r.decode_tps, r.quality["perplexity"], s=70 if r.chosen else 30, color=color,
                   marker="*" if r.chosen else "o", zorder=3)
        ax.annotate(r.label, (r.decode_tps, r.quality["perplexity"]), fontsize=6, xytext=(4, 2),
                    textcoords="offset points")
    front = sorted((r.decode_tps, r.quality["perplexity"]) for r in plan.rows if r.pareto)
    if front:
        ax.plot(*zip(*front), color="tab:orange", lw=1, ls="--", label="Pareto front (fits memory)", zorder=2)
    ax.axhline(bound, color="tab:red", lw=0.8, label=f"quality bound (+{plan.prediction['max_ppl_increase']:.0%})")
    ax.axhline(plan.unquantized["perplexity"], color="black", lw=0.6, ls=":", label="unquantized")
    ax.set_xlabel(f"predicted decode tok/s on {plan.profile} (KV cache {plan.prediction['decode_depth']} deep)")
    ax.set_ylabel(f"perplexity ({plan.evaluation['text']}, {plan.evaluation['scored_tokens']} tokens)")
    ax.set_title(f"{plan.model.split('/')[-1]} on {plan.profile}: chosen {plan.chosen}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as err:
        raise OutputError(f"cannot write the plot {path}: {err.strerror}") from None
    finally:
        plt.close(fig)
    return path
