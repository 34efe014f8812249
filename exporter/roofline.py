"""Bytes a .pte reads from memory per decoded token, from its manifest: what the decode roofline divides by.

A decode step reads every linear layer's weights and scales once, the whole output layer, one row of the
embedding table, and the KV cache up to the current position (a sliding-window layer only its window). Norms
and biases are left out (under 0.1% on the models here). Storage follows the recipe as XNNPACK keeps it:
4-bit weights pack two per byte with bf16 scales per group (fp32 per channel when per-channel), 8-bit weights
one byte with an fp32 scale per channel (also the `layers_8bit` of a mixed recipe), float weights fp32. The KV
cache is the recipe's `kv_cache` dtype (int8: a byte per element plus an fp32 scale and an int8 zero point per
position and head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .artifact import DimsRecord, Manifest
from .build.recipes import Recipe, is_4bit, kv_cache_bytes

FP32, BF16 = 4, 2


@dataclass(frozen=True)
class TokenBytes:
    """Mean bytes read per decode step, by part."""

    linear: int
    output: int
    embedding_row: int
    kv_cache: float
    kv_dtype: str

    @property
    def total(self) -> float:
        return self.linear + self.output + self.embedding_row + self.kv_cache


def linear_bytes(out_features: int, in_features: int, scheme: str, group_size: int) -> int:
    """Weight + scale bytes of one [out, in] linear stored under `scheme` (a linear recipe scheme or '8w'/'none')."""
    n = out_features * in_features
    if scheme == "none":
        return FP32 * n
    if is_4bit(scheme):
        if group_size and in_features % group_size == 0:
            return n // 2 + BF16 * out_features * (in_features // group_size)
        return n // 2 + FP32 * out_features  # per channel (asked for, or the fallback)
    return n + FP32 * out_features


def embedding_row_bytes(hidden: int, scheme: str, group_size: int) -> int:
    if scheme == "none":
        return FP32 * hidden
    if is_4bit(scheme):
        groups = hidden // group_size if group_size and hidden % group_size == 0 else 1
        return hidden // 2 + FP32 * groups
    return hidden + FP32


def kv_bytes_per_slot(dims: DimsRecord, dtype: str) -> float:
    """K and V bytes of one position in one layer."""
    return kv_cache_bytes(1, dims.n_kv_heads, dims.head_dim, 1, dtype)


def kv_slots_read(windows: Sequence[int | None], max_seq_len: int, positions: Sequence[int]) -> float:
    """Mean over decode positions of the cache slots all layers read: position p sees p + 1 slots, or its window."""
    total = 0
    for p in positions:
        for w in windows:
            total += min(p + 1, w if w is not None else max_seq_len, max_seq_len)
    return total / len(positions)


def token_bytes(recipe: Recipe, dims: DimsRecord, vocab: int, max_seq_len: int, prompt_len: int, gen_len: int,
                kv_dtype: str = "fp32") -> TokenBytes:
    """Mean bytes per decode step of a prompt_len-token prefill followed by gen_len decode steps."""
    q_out = dims.n_heads * dims.head_dim
    kv_out = dims.n_kv_heads * dims.head_dim
    shapes = [(q_out, dims.hidden), (kv_out, dims.hidden), (kv_out, dims.hidden), (dims.hidden, q_out),
              (dims.intermediate, dims.hidden), (dims.intermediate, dims.hidden), (dims.hidden, dims.intermediate)]
    def layer_bytes(scheme: str) -> int:
        return sum(linear_bytes(o, i, scheme, recipe.group_size) for o, i in shapes)

    n_layers = len(dims.windows)
    n_8bit = sum(1 for i in recipe.layers_8bit if i < n_layers)
    linear = layer_bytes(recipe.linear) * (n_layers - n_8bit)
    if n_8bit:
        linear += layer_bytes(recipe.eight_bit_form()) * n_8bit
    if recipe.output == "linear":
        output = linear_bytes(vocab, dims.hidden, recipe.linear, recipe.group_size)
    else:
        output = linear_bytes(vocab, dims.hidden, recipe.output, 0)
    # decode step i feeds the token at position prompt_len + i (the first generated one comes from the prefill)
    positions = range(prompt_len, prompt_len + max(gen_len, 1))
    kv = kv_slots_read(dims.windows, max_seq_len, positions) * kv_bytes_per_slot(dims, kv_dtype)
    return TokenBytes(linear=linear, output=output,
                      embedding_row=embedding_row_bytes(dims.hidden, recipe.embedding, recipe.embedding_group_size),
                      kv_cache=kv, kv_dtype=kv_dtype)


def manifest_token_bytes(manifest: Manifest, prompt_len: int, gen_len: int) -> TokenBytes | None:
    """token_bytes for an export; None for a manifest written before the decoder's dims were recorded."""
    if manifest.dims is None:
        return None
    spec = manifest.recipe.spec
    return token_bytes(spec, manifest.dims, manifest.vocab_size, manifest.max_seq_len, prompt_len, gen_len,
                       spec.kv_cache)
