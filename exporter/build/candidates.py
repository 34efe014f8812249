"""The recipes `exporter plan` weighs against each other, and the exact bytes each stores in a `.pte`.

Bytes are counted from the quantized tensors themselves, the way XNNPACK and ExecuTorch store them (checked
against the sections of a SmolLM2-135M `.pte`: every tensor below matched to the byte; the rest of the file, the
program and alignment, was 0.39 MB): codes packed at 4 or 8 bits; scales of grouped 4-bit linears as bf16
(XNNPACK's blockwise layout), all other scales fp32 (per-channel linears, embeddings); no zero points (the
schemes are symmetric); float parameters and constant buffers at fp32, identical ones stored once (every
RMSNorm's `mean_row`), the RoPE tables at the context the `.pte` is built for. The KV cache (an int8 one with its
scales and zero points) is a mutable buffer planned at load time, not stored.

The same count says what a decode step reads of the weights (`WeightBytes.read_per_token`): the export records it
in the manifest and the decode roofline (exporter/roofline.py) and the plan's speed prediction divide by it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

from .recipes import Recipe

if TYPE_CHECKING:
    from torch import nn

KV_CACHE_BUFFERS = ("k_cache", "v_cache", "k_scales", "v_scales", "k_zero_points", "v_zero_points")
ROPE_PREFIX = "rope_"
EMBEDDING = "embed_tokens"
OUTPUT = "lm_head"


@dataclass(frozen=True)
class WeightBytes:
    """Bytes a `.pte` built for `context` positions stores, by part, and what one decoded token reads of them."""

    embedding: int
    body: int  # the decoder layers' linears
    output: int  # the lm_head
    other: int  # norms, biases and other constants (fp32)
    embedding_row: int  # one token's row of the embedding
    rope_row: int  # one position of the RoPE tables, which are stored for `context` positions
    context: int

    @property
    def rope(self) -> int:
        return self.rope_row * self.context

    @property
    def total(self) -> int:
        return self.embedding + self.body + self.output + self.other + self.rope

    @property
    def read_per_token(self) -> int:
        """Weight bytes a decode step reads: every linear and constant, one embedding row, one RoPE position."""
        return self.body + self.output + self.other + self.embedding_row + self.rope_row

    def at_context(self, context: int) -> WeightBytes:
        return replace(self, context=context)

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "embedding": self.embedding, "body": self.body, "output": self.output,
                "other": self.other, "rope": self.rope, "read_per_token": self.read_per_token}


def tensor_bytes(weight, *, embedding: bool) -> int:
    """Stored bytes of one weight: a torchao quantized tensor (qdata/scale) or a plain float tensor."""
    qdata = getattr(weight, "qdata", None)
    if qdata is None:
        return weight.numel() * weight.element_size()
    import torch

    bits = 4 if getattr(weight, "target_dtype", None) == torch.int4 else 8
    rows, cols = qdata.shape
    groups_per_row = weight.scale.numel() // rows
    grouped = groups_per_row > 1  # one group per row is stored as per-channel (fp32 scales): not checked on a .pte
    scale_bytes = 2 if bits == 4 and grouped and not embedding else 4
    return rows * ((cols * bits + 7) // 8) + weight.scale.numel() * scale_bytes


def count_bytes(lm: nn.Module, context: int) -> WeightBytes:
    """What a `.pte` of `lm` (quantized or not) built for `context` positions stores, by part."""
    import torch

    parts = {"embedding": 0, "body": 0, "output": 0, "other": 0}
    rope_row = 0
    counted: set[int] = set()
    seen_constants: set[tuple] = set()
    for name, module in lm.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) and weight is not None:
            part = "embedding" if name == EMBEDDING else "output" if name == OUTPUT else "body"
            parts[part] += tensor_bytes(weight, embedding=part == "embedding")
            counted.add(id(weight))
    tensors = list(lm.named_parameters(remove_duplicate=False)) + list(lm.named_buffers(remove_duplicate=False))
    for name, t in tensors:
        leaf = name.rsplit(".", 1)[-1]
        if id(t) in counted or leaf in KV_CACHE_BUFFERS:
            continue
        counted.add(id(t))
        n = t.numel() * t.element_size()
        if leaf.startswith(ROPE_PREFIX):
            rope_row += n // lm.max_seq_len
            continue
        key = (t.dtype, tuple(t.shape), hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest())
        if key not in seen_constants:
            seen_constants.add(key)
            parts["other"] += n
    vocab = lm.embed_tokens.num_embeddings
    return WeightBytes(**parts, embedding_row=parts["embedding"] // vocab, rope_row=rope_row, context=context)


def candidate_recipes(base: Recipe, layers_by_cost: Sequence[int]) -> list[Recipe]:
    """The recipes a plan evaluates: group sizes and per-channel 4-bit, 8-bit everywhere, 8-bit embedding,
    8-bit output layer, and mixed precision keeping the decoder layers whose 4-bit error costs most (first in
    `layers_by_cost`) at 8 bits; plus `base` (the profile's recipe) when it is none of these.

    The KV cache stays fp32 in every candidate: the eager evaluator holds one fp32-cache decoder, and the int8
    cache (`--kv-cache int8`) measured slower on hosts so far (docs/benchmarks.md), so it is chosen by hand.
    """
    emb4 = {"embedding": "4w", "embedding_group_size": 64}
    emb8 = {"embedding": "8w", "embedding_group_size": 0}
    n_mixed = max(1, len(layers_by_cost) // 10)
    top = tuple(sorted(layers_by_cost[:n_mixed]))

    def make(linear: str, group: int, emb: dict, output: str = "linear", layers_8bit: tuple[int, ...] = ()) -> Recipe:
        return Recipe.make(linear=linear, group_size=group, output=output, layers_8bit=layers_8bit, **emb)

    out = [
        make("8da4w", 32, emb4),
        make("8da4w", 64, emb4),
        make("8da4w", 128, emb4),
        make("8da4w", 0, emb4),
        make("8da8w", 0, emb8),
        make("8da4w", 32, emb8),
        make("8da4w", 32, emb4, "8w"),
        make("8da4w", 64, emb4, "8w"),
        make("8da4w", 32, emb4, layers_8bit=top),
        make("8da4w", 64, emb4, "8w", top),
        make("8da4w", 128, emb4, "8w", top),
    ]
    if base not in out:
        out.insert(0, base)
    return out
