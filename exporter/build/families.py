"""The supported model families as data: which switches of the one decoder (model.py) each one turns on.

A `Family` says which config fields matter and how; `resolve` reads them from a (untrusted) transformers config
into a `DecoderSpec` of concrete numbers, one entry per layer where layers differ (sliding window, RoPE
table, no RoPE). The decoder reads only the `DecoderSpec`; nothing in it branches on a family name.
Each switch was read from the transformers modeling code of that family (5.25).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ModelError, RecipeError

FULL = "full_attention"
SLIDING = "sliding_attention"


@dataclass(frozen=True)
class Family:
    family: str
    qk_norm: bool = False  # Qwen3, Gemma 3: RMSNorm on each head of q and k
    fused_qkv: bool = False  # Phi-3: one qkv_proj
    fused_gate_up: bool = False  # Phi-3: one gate_up_proj
    norm_plus_one: bool = False  # Gemma: every RMSNorm scales by (1 + w)
    sandwich_norms: bool = False  # Gemma 2/3: norms after attention and before/after the MLP (four per block)
    embed_scale: str | None = None  # "sqrt_hidden" (Gemma) | "embedding_multiplier" (Granite)
    residual_multiplier: bool = False  # Granite: residual branches scaled by config.residual_multiplier
    attn_scale: str = "head_dim"  # | "query_pre_attn_scalar" (Gemma) | "attention_multiplier" (Granite)
    attn_softcap: bool = False  # Gemma 2: tanh softcap of attention logits (config.attn_logit_softcapping)
    final_softcap: bool = False  # Gemma 2/3: tanh softcap of output logits (config.final_logit_softcapping)
    logits_scaling: bool = False  # Granite: logits divided by config.logits_scaling
    window: str = "none"  # "all": config.sliding_window on every layer (Mistral, Phi-3) | "layer_types"
    rope_per_layer_type: bool = False  # Gemma 3: separate RoPE base (and scaling) for sliding and full layers
    nope_layers: bool = False  # SmolLM3: config.no_rope_layers[i] == 0 means layer i has no RoPE
    activation_key: str = "hidden_act"


FAMILIES: dict[str, Family] = {
    f.family: f
    for f in (
        Family("llama"),
        Family("mistral", window="all"),
        Family("qwen2", window="layer_types"),
        Family("qwen3", qk_norm=True, window="layer_types"),
        Family("phi3", fused_qkv=True, fused_gate_up=True, window="all"),
        Family("smollm3", window="layer_types", nope_layers=True),
        Family("granite", embed_scale="embedding_multiplier", residual_multiplier=True,
               attn_scale="attention_multiplier", logits_scaling=True),
        Family("gemma2", norm_plus_one=True, sandwich_norms=True, embed_scale="sqrt_hidden",
               attn_scale="query_pre_attn_scalar", attn_softcap=True, final_softcap=True, window="layer_types",
               activation_key="hidden_activation"),
        Family("gemma3_text", qk_norm=True, norm_plus_one=True, sandwich_norms=True, embed_scale="sqrt_hidden",
               attn_scale="query_pre_attn_scalar", final_softcap=True, window="layer_types",
               rope_per_layer_type=True, activation_key="hidden_activation"),
    )
}

_ACTIVATIONS = ("silu", "swish", "gelu", "gelu_pytorch_tanh", "gelu_new")


def family_of(config) -> Family:
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise ModelError(
            f"unsupported architecture '{model_type}'",
            hint=f"supported model types: {', '.join(sorted(FAMILIES))}",
        )
    return family


def check_kv_cache(family: Family, kv_cache: str) -> None:
    """RecipeError when `family` cannot use a `kv_cache` storage (recipes.KV_CACHE_DTYPES)."""
    if kv_cache == "int8" and family.attn_softcap:
        # The softcapped path is plain ATen attention over the cache; llama::custom_quantized_sdpa, which
        # reads int8 codes, has no softcap, and dequantizing the whole cache every step would cost more
        # than the memory saved.
        raise RecipeError(f"an int8 KV cache is not supported for the {family.family} family "
                          "(its attention logits are softcapped)", hint="use --kv-cache fp32")


@dataclass(frozen=True)
class DecoderSpec:
    """Everything the decoder needs to know, as numbers; per-layer tuples have one entry per layer."""

    family: Family
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    eps: float
    activation: str
    attn_scale: float
    attn_softcap: float | None
    final_softcap: float | None
    embed_scale: float | None  # a multiplier of the embedding output
    residual_multiplier: float | None
    logits_divisor: float | None
    windows: tuple[int | None, ...]  # attend to the last `w` positions (self included); None: all before
    rope_keys: tuple[str | None, ...]  # which RoPE table a layer uses; None: no RoPE on that layer

    def rope_tables(self) -> tuple[str, ...]:
        return tuple(sorted({k for k in self.rope_keys if k is not None}))


def _positive_number(config, name: str, *, allow_none: bool = False) -> float | None:
    value = getattr(config, name, None)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ModelError(f"config field {name}={value!r} is not a positive number")
    return float(value)


def _positive_int(config, name: str, *, allow_none: bool = False) -> int | None:
    value = getattr(config, name, None)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"config field {name}={value!r} is not a positive integer")
    return value


def _layer_types(config, n_layers: int) -> list[str]:
    types = getattr(config, "layer_types", None)
    if types is None:
        return [FULL] * n_layers
    if not isinstance(types, (list, tuple)) or len(types) != n_layers or any(t not in (FULL, SLIDING) for t in types):
        raise ModelError(f"config field layer_types must list '{FULL}' or '{SLIDING}' for each of {n_layers} layers",
                         hint=f"got {str(types)[:120]}")
    return list(types)


def resolve(config) -> DecoderSpec:
    """Read `config` into a DecoderSpec, refusing any value the decoder would get wrong."""
    fam = family_of(config)
    n_layers = _positive_int(config, "num_hidden_layers")
    hidden = _positive_int(config, "hidden_size")
    n_heads = _positive_int(config, "num_attention_heads")
    n_kv = _positive_int(config, "num_key_value_heads", allow_none=True) or n_heads
    head_dim = _positive_int(config, "head_dim", allow_none=True) or hidden // n_heads
    if n_heads % n_kv:
        raise ModelError(f"num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv}")
    if getattr(config, "use_bidirectional_attention", None):
        raise ModelError("bidirectional attention (an embedding model) is not a causal LM; cannot export it")

    activation = getattr(config, fam.activation_key, None)
    if activation not in _ACTIVATIONS:
        raise ModelError(f"unsupported MLP activation {activation!r}", hint=f"supported: {', '.join(_ACTIVATIONS)}")

    if fam.attn_scale == "query_pre_attn_scalar":
        attn_scale = _positive_number(config, "query_pre_attn_scalar") ** -0.5
    elif fam.attn_scale == "attention_multiplier":
        attn_scale = _positive_number(config, "attention_multiplier")
    else:
        attn_scale = head_dim**-0.5

    embed_scale = None
    if fam.embed_scale == "sqrt_hidden":
        # transformers multiplies by the scale cast to the weight dtype; the decoder runs in fp32.
        import torch

        embed_scale = float(torch.tensor(hidden**0.5, dtype=torch.float32))
    elif fam.embed_scale == "embedding_multiplier":
        embed_scale = _positive_number(config, "embedding_multiplier")

    types = _layer_types(config, n_layers)
    if fam.window == "all":
        window = _positive_int(config, "sliding_window", allow_none=True)
        windows = tuple(window for _ in range(n_layers))
    elif fam.window == "layer_types":
        window = _positive_int(config, "sliding_window", allow_none=True) if SLIDING in types else None
        if SLIDING in types and window is None:
            raise ModelError("config has sliding-window layers but no sliding_window")
        windows = tuple(window if t == SLIDING else None for t in types)
    else:
        windows = (None,) * n_layers

    if fam.rope_per_layer_type:
        rope_keys: list[str | None] = list(types)
    else:
        rope_keys = ["default"] * n_layers
    if fam.nope_layers:
        flags = getattr(config, "no_rope_layers", None)
        if not isinstance(flags, (list, tuple)) or len(flags) != n_layers or any(f not in (0, 1) for f in flags):
            raise ModelError(f"config field no_rope_layers must hold 0 or 1 for each of {n_layers} layers")
        rope_keys = [key if flag else None for key, flag in zip(rope_keys, flags)]

    return DecoderSpec(
        family=fam,
        n_layers=n_layers,
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        intermediate=_positive_int(config, "intermediate_size"),
        vocab=_positive_int(config, "vocab_size"),
        eps=_positive_number(config, "rms_norm_eps"),
        activation=activation,
        attn_scale=attn_scale,
        attn_softcap=_positive_number(config, "attn_logit_softcapping", allow_none=True)
        if fam.attn_softcap else None,
        final_softcap=_positive_number(config, "final_logit_softcapping", allow_none=True)
        if fam.final_softcap else None,
        embed_scale=embed_scale,
        residual_multiplier=_positive_number(config, "residual_multiplier") if fam.residual_multiplier else None,
        logits_divisor=_positive_number(config, "logits_scaling") if fam.logits_scaling else None,
        windows=windows,
        rope_keys=tuple(rope_keys),
    )
