"""Bytes a .pte reads from memory per decoded token, from its manifest: what the decode roofline divides by.

A decode step reads the weights the export counted on its quantized decoder (the manifest's
`weight_bytes_per_token`, build/candidates.count_bytes: every linear's codes and scales, the output layer, norms
and other constants, one embedding row, one RoPE position) and the KV cache up to the current position (a
sliding-window layer only its window) in the recipe's `kv_cache` dtype (recipes.kv_cache_bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .artifact import Manifest
from .build.recipes import kv_cache_bytes

UNAVAILABLE = ("the manifest was written before the weight bytes a decode step reads were recorded "
               "(weight_bytes_per_token): re-export for a roofline")


@dataclass(frozen=True)
class TokenBytes:
    """Mean bytes read per decode step, by part."""

    weights: int
    kv_cache: float
    kv_dtype: str

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache


def kv_slots_read(windows: Sequence[int | None], max_seq_len: int, positions: Sequence[int]) -> float:
    """Mean over decode positions of the cache slots all layers read: position p sees p + 1 slots, or its window."""
    total = 0
    for p in positions:
        for w in windows:
            total += min(p + 1, w if w is not None else max_seq_len, max_seq_len)
    return total / len(positions)


def manifest_token_bytes(manifest: Manifest, prompt_len: int, gen_len: int) -> TokenBytes | None:
    """Mean bytes per decode step of a prompt_len-token prefill followed by gen_len decode steps; None (see
    UNAVAILABLE) for a manifest written before the weight bytes were recorded."""
    dims = manifest.dims
    if manifest.weight_bytes_per_token is None or dims is None:
        return None
    kv_dtype = manifest.recipe.spec.kv_cache
    # decode step i feeds the token at position prompt_len + i (the first generated one comes from the prefill)
    positions = range(prompt_len, prompt_len + max(gen_len, 1))
    slot = kv_cache_bytes(1, dims.n_kv_heads, dims.head_dim, 1, kv_dtype)  # K and V of one position in one layer
    kv = kv_slots_read(dims.windows, manifest.max_seq_len, positions) * slot
    return TokenBytes(weights=manifest.weight_bytes_per_token, kv_cache=kv, kv_dtype=kv_dtype)
