"""A profile's quantization recipe -> torchao configs applied in place to the exportable decoder.

Names follow optimum-executorch (`8da4w`, `8da8w`, `4w`, `8w`): `8da` = int8 dynamic activations (XNNPACK's
fast int8 GEMM path), `4w`/`8w` = weight-only. A linear whose input width is not divisible by the group size
falls back to per-channel groups of the same bit width (recorded in the result), as optimum does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import RecipeError


@dataclass(frozen=True)
class QuantReport:
    """What quantization actually did, for the manifest."""

    linear_layers: int = 0
    per_channel_fallback: tuple[str, ...] = field(default_factory=tuple)
    embedding: str = "none"
    output: str = "none"


def _granularity(group_size: int):
    from torchao.quantization.granularity import PerAxis, PerGroup

    return PerAxis(0) if group_size == 0 else PerGroup(group_size)


def linear_config(scheme: str, group_size: int):
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig

    bits = {"8da4w": torch.int4, "4w": torch.int4, "8da8w": torch.int8, "8w": torch.int8}.get(scheme)
    if bits is None:
        raise RecipeError(f"unknown linear scheme '{scheme}'", hint="use one of 8da4w, 8da8w, 4w, 8w, none")
    # HQQ's scale-only search lowers weight error against plain round-to-nearest at no runtime cost.
    if scheme.startswith("8da"):
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=bits, weight_granularity=_granularity(group_size), intx_choose_qparams_algorithm="hqq_scale_only"
        )
    return IntxWeightOnlyConfig(weight_dtype=bits, granularity=_granularity(group_size), intx_choose_qparams_algorithm="hqq_scale_only")


def embedding_config(scheme: str, group_size: int):
    from torchao.quantization.quant_api import IntxWeightOnlyConfig

    bits = {"4w": torch.int4, "8w": torch.int8}.get(scheme)
    if bits is None:
        raise RecipeError(f"unknown embedding scheme '{scheme}'", hint="use one of 4w, 8w, none")
    return IntxWeightOnlyConfig(weight_dtype=bits, granularity=_granularity(group_size), intx_choose_qparams_algorithm="hqq_scale_only")


def apply_recipe(lm: nn.Module, recipe) -> QuantReport:
    """Quantize `lm` (a StaticCacheLM) in place following `recipe` (a profiles.Recipe)."""
    from torchao.quantization.quant_api import quantize_

    if recipe.embedding != "none":
        quantize_(lm, embedding_config(recipe.embedding, recipe.embedding_group_size), filter_fn=lambda m, fqn: fqn == "embed_tokens")

    def is_body_linear(m, fqn):
        return isinstance(m, nn.Linear) and fqn != "lm_head"

    fallback: list[str] = []
    n_linear = 0
    if recipe.linear != "none":
        gs = recipe.group_size
        if gs:
            fallback = [fqn for fqn, m in lm.named_modules() if is_body_linear(m, fqn) and m.in_features % gs]
        quantize_(lm, linear_config(recipe.linear, gs), filter_fn=lambda m, fqn: is_body_linear(m, fqn) and fqn not in fallback)
        if fallback:
            quantize_(lm, linear_config(recipe.linear, 0), filter_fn=lambda m, fqn: fqn in fallback)
        n_linear = sum(1 for fqn, m in lm.named_modules() if is_body_linear(m, fqn))

    output = "none"
    if recipe.output == "linear" and recipe.linear != "none":
        gs = recipe.group_size if recipe.group_size and lm.lm_head.in_features % recipe.group_size == 0 else 0
        quantize_(lm, linear_config(recipe.linear, gs), filter_fn=lambda m, fqn: fqn == "lm_head")
        output = f"{recipe.linear}-g{gs}" if gs else f"{recipe.linear}-per-channel"
    elif recipe.output == "8w":
        quantize_(lm, linear_config("8da8w", 0), filter_fn=lambda m, fqn: fqn == "lm_head")
        output = "8da8w-per-channel"
    embedding = "none" if recipe.embedding == "none" else f"{recipe.embedding}-g{recipe.embedding_group_size}"
    return QuantReport(linear_layers=n_linear, per_channel_fallback=tuple(fallback), embedding=embedding, output=output)
