"""Eager quality of candidate recipes: perplexity and KL divergence against the unquantized model.

The model is loaded once; each candidate is a copy of the fp32 StaticCacheLM quantized by the export's own
`apply_recipe` (same torchao configs, same scale search, same calibration), then run eagerly with every
position's logits. The copy's modules are new but its tensors are the loaded model's: quantizing replaces a
module's weight with a new tensor and never writes the float one, so a candidate costs its quantized weights,
not another fp32 model. Evaluation text and calibration text are kept apart: `disjoint` checks that no run of
`NGRAM` calibration tokens occurs in the evaluation slice.
"""

from __future__ import annotations

import copy
import gc
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..errors import UsageError
from .candidates import WeightBytes, count_bytes
from .recipes import Recipe, apply_recipe, collect_importance, search_symmetric_scales

if TYPE_CHECKING:
    import torch

    from .model import StaticCacheLM
    from .source import ModelSource

NGRAM = 8


@dataclass(frozen=True)
class Quality:
    perplexity: float
    kl: float  # mean KL(unquantized || candidate) per scored token, nats
    top1: float  # share of positions whose argmax agrees with the unquantized model
    tokens: int

    def to_dict(self) -> dict:
        return {"perplexity": round(self.perplexity, 3), "kl": round(self.kl, 5), "top1": round(self.top1, 4),
                "tokens": self.tokens}


@dataclass(frozen=True)
class Measured:
    recipe: Recipe
    quality: Quality
    weights: WeightBytes


def disjoint(calibration: Sequence[int], evaluation: Sequence[Sequence[int]], n: int = NGRAM) -> bool:
    """True when no `n` consecutive calibration tokens appear in any evaluation chunk."""
    grams = {tuple(calibration[i : i + n]) for i in range(len(calibration) - n + 1)}
    return not any(tuple(c[i : i + n]) in grams for c in evaluation for i in range(len(c) - n + 1))


class EagerEvaluator:
    """One loaded model, its importance statistics and its fp32 reference, shared by every candidate."""

    def __init__(self, lm: StaticCacheLM, importance: dict[str, torch.Tensor], chunks: Sequence[Sequence[int]],
                 calibration: Sequence[int]):
        import torch

        if not chunks or min(len(c) for c in chunks) < 2:
            raise UsageError("the evaluation text is too short (chunks of at least 2 tokens are needed)")
        self.lm = lm
        self.importance = importance
        self.chunks = [list(c) for c in chunks]
        self.calibration = list(calibration)
        self.scales: dict = {}  # 4-bit scale searches, shared by every candidate (recipes.ScaleCache)
        self.lm.all_logits = True
        self.reference = [torch.log_softmax(self._logits(self.lm, c), -1) for c in self.chunks]
        self.unquantized = self._quality(self.lm)

    @classmethod
    def load(cls, source: ModelSource, chunks: Sequence[Sequence[int]], calibration: Sequence[int]) -> "EagerEvaluator":
        from .model import build_static_lm
        from .source import load_model

        hf_model = load_model(source)
        importance = collect_importance(hf_model, list(calibration))
        lm = build_static_lm(hf_model, max(max(len(c) for c in chunks), len(calibration)))
        del hf_model
        return cls(lm, importance, chunks, calibration)

    @staticmethod
    def _logits(lm, ids: Sequence[int]) -> torch.Tensor:
        import torch

        from ..quiet import native_logs

        lm.reset_cache()
        # ExecuTorch's custom attention and cache ops log from C++ on every call (4980 lines in one plan)
        with torch.no_grad(), native_logs():
            return lm(torch.tensor([list(ids)]), torch.tensor([0]))[0, :-1].float()

    def _quality(self, lm) -> Quality:
        import torch

        nll = kl = agree = 0.0
        n = 0
        for ids, ref in zip(self.chunks, self.reference):
            logp = torch.log_softmax(self._logits(lm, ids), -1)
            targets = torch.tensor(ids[1:])
            nll += -logp.gather(1, targets[:, None]).sum().item()
            kl += (ref.exp() * (ref - logp)).sum().item()
            agree += (logp.argmax(-1) == ref.argmax(-1)).sum().item()
            n += len(targets)
        return Quality(math.exp(nll / n), kl / n, agree / n, n)

    def measure(self, recipe: Recipe, context: int) -> Measured:
        """Quantize a copy of the model by `recipe` exactly as the export does, score it, count its bytes."""
        shared = {id(t): t for t in itertools.chain(self.lm.parameters(), self.lm.buffers())}
        lm = copy.deepcopy(self.lm, memo=shared)
        apply_recipe(lm, recipe, self.importance, self.scales)
        measured = Measured(recipe, self._quality(lm), count_bytes(lm, context))
        del lm
        gc.collect()  # torchao's quantized weights sit in reference cycles: free them before the next candidate
        return measured

    def layer_costs(self, group_size: int) -> list[float]:
        """Per decoder layer: KL (nats per token, on the calibration text) when only that layer's linears
        carry the export's 4-bit weights (symmetric groups of `group_size`, searched scales), the rest fp32."""
        import torch
        from torch import nn

        ref = torch.log_softmax(self._logits(self.lm, self.calibration), -1)
        costs = []
        for i, layer in enumerate(self.lm.layers):
            saved = {}
            for name, m in layer.named_modules():
                if isinstance(m, nn.Linear):
                    fqn = f"layers.{i}.{name}"
                    w = m.weight.detach()
                    gs = group_size if group_size and w.shape[1] % group_size == 0 else w.shape[1]
                    if (fqn, gs) not in self.scales:
                        self.scales[(fqn, gs)] = search_symmetric_scales(w, gs, self.importance.get(fqn))
                    q, s = self.scales[(fqn, gs)]
                    saved[m] = w.clone()
                    n, k = w.shape
                    m.weight.data.copy_((q.float().reshape(n, s.shape[1], -1) * s[..., None]).reshape(n, k))
            logp = torch.log_softmax(self._logits(self.lm, self.calibration), -1)
            costs.append((ref.exp() * (ref - logp)).sum(-1).mean().item())
            for m, w in saved.items():
                m.weight.data.copy_(w)
        return costs

