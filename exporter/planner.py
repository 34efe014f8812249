"""`exporter plan`: predicted phone speed and memory of measured candidates, and the choice among them.

Pure functions over numbers (no torch): a candidate's measured quality and exact bytes come from
build/evaluate.py; here they meet a profile. Decode is bound by memory bandwidth: tok/s = efficiency x
bandwidth / bytes read per token (weights incl. scales and the output layer, one embedding row, the KV cache
filled to DECODE_DEPTH). Prefill is bound by int8 compute: tok/s = efficiency x (cores x GHz x int8 MACs per
cycle of the phone's kernel level) / MACs per token. Efficiencies come from the profile (assumed, see
docs/plan.md) until `exporter bench` has stored results for that profile (results.py), which replace them.

The choice: among candidates that fit the memory budget and stay within the quality bound, the fastest decode;
candidates within SPEED_TIE of the fastest count as equally fast and the lowest perplexity among them wins.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .artifact import DimsRecord
from .build.recipes import kv_cache_bytes as recipe_kv_cache_bytes
from .errors import ModelError
from .profiles import DeviceProfile

SPEED_TIE = 0.03
PREFILL_PROMPT = 128  # prompt length the prefill prediction is for
DECODE_DEPTH_SHARE = 0.5  # decode speed is predicted with the KV cache filled to half the context
ACTIVATION_TOKENS = 128  # prefill chunk the activation memory is sized for
FP32 = 4


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a model the predictions need: the decoder's recorded shape, its vocabulary and the weights
    of its decoder layers' linears (the MACs of one prefill token)."""

    dims: DimsRecord
    vocab: int
    body_params: int

    def to_dict(self) -> dict[str, Any]:
        return {"dims": self.dims.model_dump(mode="json"), "vocab": self.vocab, "body_params": self.body_params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelShape":
        return cls(DimsRecord.model_validate(d["dims"]), d["vocab"], d["body_params"])


def kv_cache_bytes(shape: ModelShape, tokens: int, recipe: Any) -> int:
    d = shape.dims
    return recipe_kv_cache_bytes(d.n_layers, d.n_kv_heads, d.head_dim, tokens, getattr(recipe, "kv_cache", "fp32"))


def activation_bytes(shape: ModelShape, context: int) -> int:
    """fp32 working memory of a prefill chunk: residual, norm, q/k/v, attention output, MLP and the logits row
    (XNNPACK reuses these buffers layer after layer, so one layer's worth counts)."""
    t = min(ACTIVATION_TOKENS, context)
    d = shape.dims
    per_token = 3 * d.hidden + (d.n_heads + 2 * d.n_kv_heads) * d.head_dim + 3 * d.intermediate
    return FP32 * (t * per_token + t * d.n_heads * context + shape.vocab)


@dataclass(frozen=True)
class Efficiency:
    decode: float
    prefill: float
    source: str


@dataclass(frozen=True)
class Prediction:
    memory_bytes: int
    budget_bytes: int
    decode_tps: float
    prefill_tps: float
    decode_bytes_per_token: int
    decode_depth: int

    @property
    def fits(self) -> bool:
        return self.memory_bytes <= self.budget_bytes


def budget_bytes(profile: DeviceProfile) -> int:
    return int(profile.memory.typical_ram_gb * 1e9 * profile.planning.app_ram_share)


def peak_int8_macs(profile: DeviceProfile) -> float:
    """int8 multiply-adds per second of the runtime's cores with the phone's best kernel level."""
    kernel = profile.planning.kernels[profile.kernel_level]
    ghz = {cpu: c.max_ghz for c, cpus in zip(profile.clusters, profile.cluster_cpus()) for cpu in cpus}
    return sum(ghz[cpu] for cpu in profile.cpu_set[: profile.threads]) * 1e9 * kernel.int8_macs_per_cycle


def predict(profile: DeviceProfile, shape: ModelShape, weights: dict[str, int], recipe: Any, context: int,
            eff: Efficiency) -> Prediction:
    """Memory at `context`, decode and prefill tok/s of one candidate (`weights` is WeightBytes.to_dict())."""
    depth = int(context * DECODE_DEPTH_SHARE)
    per_token = weights["read_per_token"] + kv_cache_bytes(shape, depth, recipe)
    decode = eff.decode * profile.memory.bandwidth_gbps * 1e9 / per_token
    d = shape.dims
    macs = shape.body_params + 2 * d.n_layers * d.n_heads * d.head_dim * PREFILL_PROMPT // 2
    prefill = eff.prefill * peak_int8_macs(profile) / macs
    memory = weights["total"] + kv_cache_bytes(shape, context, recipe) + activation_bytes(shape, context)
    return Prediction(memory, budget_bytes(profile), decode, prefill, per_token, depth)


def efficiency(profile: DeviceProfile, results: Sequence[dict]) -> Efficiency:
    """The profile's assumed efficiencies, or the median of those implied by stored bench results of this
    profile (decode: tok/s x .pte bytes / bandwidth; prefill: tok/s x parameters / peak int8 MACs)."""
    rows = [r for r in results if r.get("profile") == profile.id]
    dec = [r["decode_tps"] * r["pte_bytes"] / (profile.memory.bandwidth_gbps * 1e9) for r in rows
           if r.get("decode_tps") and r.get("pte_bytes")]
    pre = [r["prefill_tps"] * r["parameters"] / peak_int8_macs(profile) for r in rows
           if r.get("prefill_tps") and r.get("parameters")]
    p = profile.planning
    if not dec and not pre:
        return Efficiency(p.decode_efficiency, p.prefill_efficiency, "profile (assumed)")
    return Efficiency(min(1.0, statistics.median(dec)) if dec else p.decode_efficiency,
                      min(1.0, statistics.median(pre)) if pre else p.prefill_efficiency,
                      f"measured ({len(rows)} bench results of {profile.id})")


# ------------------------------------------------------------------------------------------------ the choice


@dataclass
class Row:
    """One candidate of a plan, as the table, the JSON and the plot show it."""

    label: str
    recipe: dict
    weights: dict[str, int]
    quality: dict
    memory_bytes: int
    fits: bool
    ppl_increase: float  # over the unquantized model, as a fraction
    within_quality: bool
    decode_tps: float
    prefill_tps: float
    pareto: bool = False
    chosen: bool = False
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(decode_tps=round(self.decode_tps, 1), prefill_tps=round(self.prefill_tps, 1),
                 ppl_increase=round(self.ppl_increase, 4))
        return d


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which (speed, perplexity) points no other point beats on both (faster or equal, and lower or equal
    perplexity, one of them strictly)."""
    def beaten(i: int) -> bool:
        s, q = points[i]
        return any(s2 >= s and q2 <= q and (s2 > s or q2 < q) for j, (s2, q2) in enumerate(points) if j != i)
    return [not beaten(i) for i in range(len(points))]


def choose(rows: list[Row], *, bound: float, budget: int, tie: float = SPEED_TIE) -> str:
    """Mark the chosen row, the Pareto front of the rows that fit, and why each other row lost; return the reason."""
    fitting = [r for r in rows if r.fits]
    for r, on in zip(fitting, pareto_front([(r.decode_tps, r.quality["perplexity"]) for r in fitting])):
        r.pareto = on
    if not fitting:
        raise ModelError(f"no candidate fits the memory budget of {budget / 1e6:.0f} MB",
                        hint="use a smaller model or context, or raise planning.app_ram_share in the profile")
    eligible = [r for r in fitting if r.within_quality]
    if eligible:
        fastest = max(r.decode_tps for r in eligible)
        tied = [r for r in eligible if r.decode_tps >= fastest * (1 - tie)]
        best = min(tied, key=lambda r: r.quality["perplexity"])
        reason = (f"fastest predicted decode ({best.decode_tps:.0f} tok/s) of the candidates that fit "
                  f"{budget / 1e6:.0f} MB and stay within +{bound:.0%} perplexity")
        if len(tied) > 1:
            reason += f"; most accurate of {len(tied)} within {tie:.0%} of that speed"
    else:
        best = min(fitting, key=lambda r: r.quality["perplexity"])
        reason = f"no candidate stays within +{bound:.0%} perplexity: the most accurate one that fits"
    best.chosen = True
    best.verdict = "chosen"
    for r in rows:
        if r.chosen:
            continue
        if not r.fits:
            r.verdict = f"too big: {r.memory_bytes / 1e6:.0f} MB > budget {budget / 1e6:.0f} MB"
        elif eligible and not r.within_quality:
            r.verdict = f"over the quality bound: {r.ppl_increase:+.1%} > +{bound:.0%}"
        elif r.decode_tps < best.decode_tps * (1 - tie):
            r.verdict = f"slower: {r.decode_tps:.0f} vs {best.decode_tps:.0f} tok/s"
        else:
            r.verdict = (f"less accurate at about the same speed: perplexity {r.quality['perplexity']:.2f} "
                         f"vs {best.quality['perplexity']:.2f}")
    return reason


@dataclass
class PlanResult:
    """A whole plan: what was measured, on what text, and the choice for one profile."""

    model: str
    profile: str
    context: int
    rows: list[Row]
    chosen: str
    reason: str
    unquantized: dict
    evaluation: dict  # text, chunks, tokens, calibration tokens, disjointness
    prediction: dict  # efficiencies, depth, prompt, budget, kernel level
    layer_costs: list[float] = field(default_factory=list)
    cached: bool = False

    @property
    def chosen_row(self) -> Row:
        return next(r for r in self.rows if r.chosen)

    def record(self) -> dict[str, Any]:
        """The manifest's `plan` (artifact.PlanRecord) of an export that follows this plan."""
        return {"chosen": self.chosen, "reason": self.reason, "unquantized_perplexity": self.unquantized["perplexity"],
                "evaluation": self.evaluation, "prediction": self.prediction,
                "candidates": [{"label": r.label, "weight_bytes": r.weights["total"], "memory_bytes": r.memory_bytes,
                                "fits": r.fits, "perplexity": r.quality["perplexity"],
                                "decode_tps": round(r.decode_tps, 1), "prefill_tps": round(r.prefill_tps, 1),
                                "verdict": r.verdict} for r in self.rows]}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "profile": self.profile, "context": self.context, "chosen": self.chosen,
                "reason": self.reason, "unquantized": self.unquantized, "evaluation": self.evaluation,
                "prediction": self.prediction, "layer_costs": [round(c, 5) for c in self.layer_costs],
                "cached": self.cached, "candidates": [r.to_dict() for r in self.rows]}


def rank(profile: DeviceProfile, shape: ModelShape, measured: Sequence[dict], unquantized_ppl: float,
         context: int, results: Sequence[dict] = ()) -> tuple[list[Row], str, dict]:
    """Rows for measured candidates ({recipe, label, quality, weights} dicts) on `profile`, the choice made.

    Returns the rows, the reason for the choice and the prediction settings.
    """
    from .build.recipes import Recipe

    eff = efficiency(profile, results)
    bound = profile.planning.max_ppl_increase
    rows = []
    budget = budget_bytes(profile)
    for m in measured:
        recipe = Recipe.model_validate(m["recipe"])
        pred = predict(profile, shape, m["weights"], recipe, context, eff)
        increase = m["quality"]["perplexity"] / unquantized_ppl - 1
        rows.append(Row(m["label"], m["recipe"], m["weights"], m["quality"], pred.memory_bytes, pred.fits, increase,
                        increase <= bound, pred.decode_tps, pred.prefill_tps))
    reason = choose(rows, bound=bound, budget=budget)
    settings = {"decode_efficiency": eff.decode, "prefill_efficiency": eff.prefill, "efficiency_source": eff.source,
                "decode_depth": int(context * DECODE_DEPTH_SHARE), "prefill_prompt": PREFILL_PROMPT,
                "budget_bytes": budget, "app_ram_share": profile.planning.app_ram_share,
                "max_ppl_increase": bound, "kernel_level": profile.kernel_level,
                "kernel": profile.planning.kernels[profile.kernel_level].name,
                "bandwidth_gbps": profile.memory.bandwidth_gbps, "peak_int8_gmacs": round(peak_int8_macs(profile) / 1e9, 1),
                "kv_cache": "fp32"}
    return rows, reason, settings
