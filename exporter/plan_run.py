"""Run a plan: measure the candidates of a model once (cached), then rank them for a profile.

Measurements (quality, exact bytes, per-layer 4-bit costs) depend on the model, the evaluation text and the
library versions, not on the phone, so they are cached under `<cache>/plans/<key>.json` and every profile
reuses them. Bytes are stored for context 0 (no RoPE tables) and put at each profile's context when ranked;
the ranking is recomputed each time (it is arithmetic, and bench results may have changed the efficiencies).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .artifact import DimsRecord
from .errors import UsageError
from .planner import ModelShape, PlanResult, rank
from .profiles import DeviceProfile
from .results import cache_dir, load_results

EVAL_TEXT_ENV = "EXPORTER_EVAL_TEXT"
DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "austen" / "prideprejudice.txt"
CACHE_FORMAT = 2  # 2: weights are WeightBytes fields (RoPE per position inside), the shape holds DimsRecord


@dataclass(frozen=True)
class EvalSettings:
    """Which text a plan scores: `chunks` x `chunk_len` tokens from its start, each scored on its own."""

    text: Path | None = None
    chunks: int = 4
    chunk_len: int = 256

    def text_path(self) -> Path:
        path = self.text or (Path(os.environ[EVAL_TEXT_ENV]) if os.environ.get(EVAL_TEXT_ENV) else DEFAULT_TEXT)
        if not path.is_file():
            raise UsageError(f"evaluation text not found: {path}",
                             hint=f"pass --text FILE (plain English text, not the calibration sample) or set {EVAL_TEXT_ENV}")
        return path


def _shape(lm) -> ModelShape:
    from torch import nn

    body = sum(m.weight.numel() for name, m in lm.named_modules() if isinstance(m, nn.Linear) and name != "lm_head")
    return ModelShape(DimsRecord.of(lm.spec), lm.spec.vocab, body)


def run_plan(model: str | None, profile: DeviceProfile, *, max_seq_len: int | None = None,
             settings: EvalSettings = EvalSettings(), use_cache: bool = True,
             progress: Callable[[str], None] = lambda s: None) -> PlanResult:
    """The plan of `model` (None: the built-in one) on `profile`: every candidate measured, the choice made."""
    from .build.export import library_versions
    from .build.plan import build_plan
    from .build.source import weights_sha256

    export_plan = build_plan(model, profile, max_seq_len=max_seq_len)
    context = export_plan.max_seq_len
    text_path = settings.text_path()
    text = text_path.read_text(encoding="utf-8", errors="replace")
    key_fields = {"format": CACHE_FORMAT, "weights": weights_sha256(export_plan.source),
                  "text": hashlib.sha256(text.encode()).hexdigest(), "chunks": settings.chunks,
                  "chunk_len": settings.chunk_len, "versions": library_versions()}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "plans" / f"{key}.json"
    store = _read(path) if use_cache else None
    evaluator = None
    ev_description: dict = {}

    def get_evaluator():
        nonlocal evaluator, ev_description
        if evaluator is None:
            evaluator, ev_description = _evaluator(export_plan.source, text, text_path.name, settings, progress)
        return evaluator

    if store is None:
        ev = get_evaluator()
        progress("measuring the cost of 4-bit weights per layer")
        costs = ev.layer_costs(32)
        store = {"key": key_fields, "shape": _shape(ev.lm).to_dict(), "unquantized": ev.unquantized.to_dict(),
                 "evaluation": ev_description, "layer_costs": costs, "measured": {}, "candidates": []}
    from .build.candidates import WeightBytes, candidate_recipes

    by_cost = sorted(range(len(store["layer_costs"])), key=lambda i: -store["layer_costs"][i])
    recipes = candidate_recipes(profile.recipe, by_cost)
    missing = [r for r in recipes if r.label() not in store["measured"]]
    cached = not missing
    for i, recipe in enumerate(missing):
        progress(f"candidate {i + 1}/{len(missing)}: {recipe.label()}")
        m = get_evaluator().measure(recipe, context=0)
        store["measured"][recipe.label()] = {"label": recipe.label(), "recipe": recipe.to_dict(),
                                             "quality": m.quality.to_dict(), "weights": asdict(m.weights)}
    store["candidates"] = sorted(set(store["candidates"]) | {r.label() for r in recipes})
    if missing:
        _write(path, store)

    shape = ModelShape.from_dict(store["shape"])
    measured = [{**m, "weights": WeightBytes(**m["weights"]).at_context(context).to_dict()}
                for m in (store["measured"][r.label()] for r in recipes)]
    rows, reason, prediction = rank(profile, shape, measured, store["unquantized"]["perplexity"], context,
                                    load_results(profile.id))
    chosen = next(r for r in rows if r.chosen)
    return PlanResult(export_plan.source.id, profile.id, context, rows, chosen.label, reason, store["unquantized"],
                      store["evaluation"], prediction, store["layer_costs"], cached)


def _evaluator(source, text: str, text_name: str, settings: EvalSettings, progress):
    from .build.evaluate import NGRAM, EagerEvaluator, disjoint
    from .build.export import CALIBRATION_TOKENS
    from .build.source import load_tokenizer, sample_text
    from .verification import token_chunks

    tokenizer = load_tokenizer(source)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = token_chunks(ids, settings.chunk_len, settings.chunks)
    calibration = tokenizer(sample_text(), add_special_tokens=False)["input_ids"][:CALIBRATION_TOKENS]
    if not disjoint(calibration, chunks):
        raise UsageError(f"the evaluation text {text_name} overlaps the calibration sample",
                         hint="score the plan on text the export does not calibrate on")
    progress(f"loading {source.id} and scoring it unquantized")
    ev = EagerEvaluator.load(source, chunks, calibration)
    return ev, {"text": text_name, "chunks": len(chunks), "chunk_len": settings.chunk_len,
                "scored_tokens": ev.unquantized.tokens, "calibration": "built-in sample (exporter/build/data/sample.txt)",
                "calibration_tokens": len(calibration),
                "disjoint": f"checked: no {NGRAM}-token run of the calibration text occurs in the evaluation slice"}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
