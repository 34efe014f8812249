"""A profile's quantization recipe -> torchao configs applied in place to the exportable decoder.

Names follow optimum-executorch (`8da4w`, `8da8w`, `4w`, `8w`): `8da` = int8 dynamic activations (XNNPACK's
fast int8 GEMM path), `4w`/`8w` = weight-only. A linear whose input width is not divisible by the group size
falls back to per-channel groups of the same bit width (recorded in the result), as optimum does.

4-bit linears get their own scale search (given calibration activations): each group's scale is chosen to
minimise the activation-weighted squared error of the dequantized weights (llama.cpp's importance-matrix
idea, on a few hundred calibration tokens). XNNPACK supports only symmetric 4-bit groups (it ignores zero
points: measured here, an asymmetric 8da4w linear came out wrong), so the search is over symmetric scales,
rounded to bf16 because that is how XNNPACK stores them. On SmolLM2-135M it takes perplexity on Pride and
Prejudice from 28.2 (torchao HQQ scales) to 24.8 for the body linears alone.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError, field_validator, model_validator

from ..errors import RecipeError
from ..schema import Int, Model, NonEmptyStr, did_you_mean, first_problem

if TYPE_CHECKING:  # torch loads only when a model is quantized, not when a profile is read
    import torch
    from torch import nn

# ------------------------------------------------------------------------------------- the vocabulary

LINEAR_SCHEMES = ("8da4w", "8da8w", "4w", "8w", "none")
EMBEDDING_SCHEMES = ("4w", "8w", "none")
OUTPUT_MODES = ("linear", "8w", "none")
# int8: per-token asymmetric codes read directly by llama::custom_quantized_sdpa (a quarter of the fp32 bytes
# plus one fp32 scale and one int8 zero point per position and head); see model.py.
KV_CACHE_DTYPES = ("fp32", "int8")
GROUP_SIZES_4BIT = (0, 32, 64, 128, 256)  # 0 = per-channel (linear) / per-row (embedding)


def is_4bit(scheme: str) -> bool:
    return scheme.endswith("4w")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"'{value}' is not one of {', '.join(choices)}{did_you_mean(value, choices)}")


def _check_group(field_name: str, scheme: str, kind: str, value: int) -> None:
    if scheme != "none" and is_4bit(scheme):
        if value not in GROUP_SIZES_4BIT:
            choices = ", ".join(str(g) for g in GROUP_SIZES_4BIT)
            raise ValueError(f"field 'recipe.{field_name}': {value} is not valid for {kind} scheme {scheme} "
                             f"(choose one of {choices}; 0 = per-channel)")
    elif value != 0:
        why = "8-bit schemes are always per-channel" if scheme != "none" else "nothing is quantized"
        raise ValueError(f"field 'recipe.{field_name}': {value} is not valid for {kind} scheme {scheme}: {why}, "
                         f"set recipe.{field_name}: 0")


class Recipe(Model):
    """How a model is quantized for a device. Validated on construction (RecipeError through `make`)."""

    linear: NonEmptyStr
    group_size: Int
    embedding: NonEmptyStr
    embedding_group_size: Int
    output: NonEmptyStr
    # Mixed precision: decoder layers (0-based) whose linears take the 8-bit form of the 4-bit `linear` scheme
    # (8da4w -> 8da8w, 4w -> 8w), chosen by `exporter plan` from the per-layer cost of 4-bit error.
    layers_8bit: tuple[Int, ...] = ()
    kv_cache: NonEmptyStr = "fp32"

    @field_validator("linear")
    @classmethod
    def _linear(cls, v: str) -> str:
        _check_choice("linear", v, LINEAR_SCHEMES)
        return v

    @field_validator("embedding")
    @classmethod
    def _embedding(cls, v: str) -> str:
        _check_choice("embedding", v, EMBEDDING_SCHEMES)
        return v

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        _check_choice("output", v, OUTPUT_MODES)
        return v

    @field_validator("kv_cache")
    @classmethod
    def _kv_cache(cls, v: str) -> str:
        _check_choice("kv_cache", v, KV_CACHE_DTYPES)
        return v

    @model_validator(mode="after")
    def _groups(self) -> "Recipe":
        _check_group("group_size", self.linear, "linear", self.group_size)
        _check_group("embedding_group_size", self.embedding, "embedding", self.embedding_group_size)
        if self.layers_8bit:
            if not is_4bit(self.linear):
                raise ValueError(f"field 'recipe.layers_8bit': only a 4-bit linear scheme has 8-bit layers "
                                 f"(linear is {self.linear})")
            if list(self.layers_8bit) != sorted(set(self.layers_8bit)) or self.layers_8bit[0] < 0:
                raise ValueError(f"field 'recipe.layers_8bit': {list(self.layers_8bit)} must be distinct layer "
                                 "numbers (0 or more) in increasing order")
        return self

    @classmethod
    def make(cls, **fields: Any) -> "Recipe":
        """Validated construction from Python: RecipeError (exit code 3) instead of pydantic's error."""
        try:
            return cls.model_validate(fields)
        except ValidationError as err:
            problem = first_problem(err, cls, prefix=("recipe",))
            raise RecipeError(problem.message, hint=problem.hint) from None

    def label(self) -> str:
        """Short, stable name: `8da4w-g32+emb4w-g32`, `8da8w+emb8w+out8w`, `none+outnone`, `8da4w-g64+l8-0.3`,
        `8da4w-g32+kv8`.

        4-bit schemes carry `-g<N>` (`-pc` for per-channel, group 0); 8-bit schemes are always per-channel and carry
        nothing. The embedding part is left out when the embedding stays float; the output part is added only when
        the lm_head is not treated like the other linears; `l8-` lists the decoder layers kept at 8 bits; `+kv8`
        comes last and only for an int8 KV cache (so fp32-cache labels stay what they were). `parse_label` reads
        it back.
        """
        parts = [_scheme_label(self.linear, self.group_size)]
        if self.embedding != "none":
            parts.append("emb" + _scheme_label(self.embedding, self.embedding_group_size))
        if self.output != "linear":
            parts.append("out" + self.output)
        if self.layers_8bit:
            parts.append(LAYERS_8BIT_PREFIX + ".".join(str(i) for i in self.layers_8bit))
        if self.kv_cache == "int8":
            parts.append("kv8")
        return "+".join(parts)

    def eight_bit_form(self) -> str:
        """The scheme of the `layers_8bit` linears: 8da8w for 8da4w, 8w for 4w."""
        return self.linear[:-2] + "8w"

    def replace_checked(self, **overrides: Any) -> "Recipe":
        """A copy with `overrides` applied and validated (RecipeError on an unknown field or a bad value).

        Convenience: switching `linear` (or `embedding`) to an 8-bit scheme or `none` without also giving its group
        size sets that group size to 0, since those schemes only allow 0.
        """
        names = list(type(self).model_fields)
        for key in overrides:
            if key not in names:
                raise RecipeError(f"unknown recipe field '{key}'{did_you_mean(key, names)}", hint=f"fields: {', '.join(names)}")
        for scheme_key, group_key in (("linear", "group_size"), ("embedding", "embedding_group_size")):
            scheme = overrides.get(scheme_key)
            if isinstance(scheme, str) and group_key not in overrides and not is_4bit(scheme):
                overrides[group_key] = 0
        return Recipe.make(**{**self.model_dump(), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def _scheme_label(scheme: str, group: int) -> str:
    if scheme == "none" or not is_4bit(scheme):
        return scheme
    return f"{scheme}-g{group}" if group else f"{scheme}-pc"


LAYERS_8BIT_PREFIX = "l8-"
_PART = re.compile(r"^(?P<scheme>[a-z0-9]+?)(?:-(?:g(?P<group>\d+)|(?P<pc>pc)))?$")


def parse_label(label: str) -> Recipe:
    """The Recipe a label names (`8da4w-g32+emb4w-g64`, `8da8w+emb8w+out8w+kv8`); RecipeError when it names none."""
    parts = label.strip().split("+")
    fields: dict[str, Any] = {"embedding": "none", "embedding_group_size": 0, "output": "linear"}
    if len(parts) > 1 and parts[-1] == "kv8":
        fields["kv_cache"] = "int8"
        parts = parts[:-1]
    for i, part in enumerate(parts):
        key = "linear"
        if i and part.startswith(LAYERS_8BIT_PREFIX):
            numbers = part[len(LAYERS_8BIT_PREFIX):].split(".")
            if not all(n.isdigit() for n in numbers):
                raise RecipeError(f"recipe label '{label}': '{part}' is not l8- and layer numbers joined by '.'",
                                  hint="e.g. 8da4w-g64+l8-0.3.29 keeps decoder layers 0, 3 and 29 at 8 bits")
            fields["layers_8bit"] = tuple(int(n) for n in numbers)
            continue
        if i:
            key = next((k for k, prefix in (("embedding", "emb"), ("output", "out")) if part.startswith(prefix)), "")
            if not key:
                raise RecipeError(f"recipe label '{label}': '{part}' is neither emb..., out..., l8-... (nor a last +kv8)",
                                  hint="labels look like 8da4w-g32+emb4w-g64 or 8da8w+emb8w+out8w+kv8")
            part = part[3:]
        m = _PART.match(part)
        if m is None:
            raise RecipeError(f"recipe label '{label}': cannot read '{part}'",
                              hint="labels look like 8da4w-g32+emb4w-g64 or 8da8w+emb8w+out8w")
        group = 0 if m["pc"] or m["group"] is None else int(m["group"])
        if key == "output":
            fields["output"] = m["scheme"]
        else:
            fields[key] = m["scheme"]
            fields["group_size" if key == "linear" else "embedding_group_size"] = group
    return Recipe.make(**fields)



def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, tokens: int, kv_cache: str) -> int:
    """Bytes of K and V for `tokens` positions: fp32 values, or int8 codes plus a 4-byte scale and a 1-byte zero
    point per cached row (what the decoder allocates and what a decode step at that depth reads)."""
    row = head_dim + 4 + 1 if kv_cache == "int8" else head_dim * 4
    return n_layers * 2 * tokens * n_kv_heads * row

# ------------------------------------------------------------------------------------- applying it


class QuantReport(Model):
    """What quantization actually did, for the manifest."""

    linear_layers: Int = 0
    per_channel_fallback: tuple[str, ...] = ()
    embedding: str = "none"
    output: str = "none"
    scale_search: str = "torchao hqq_scale_only"
    refined_layers: Int = 0
    calibration_tokens: Int = 0


def _granularity(group_size: int):
    from torchao.quantization.granularity import PerAxis, PerGroup

    return PerAxis(0) if group_size == 0 else PerGroup(group_size)


def linear_config(scheme: str, group_size: int):
    """torchao's config for `scheme` (the linears whose scales are not searched, see _quantize_searched)."""
    import torch

    from torchao.quantization.quant_api import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
    )

    bits = {"8da4w": torch.int4, "4w": torch.int4, "8da8w": torch.int8, "8w": torch.int8}.get(scheme)
    if bits is None:
        raise RecipeError(f"unknown linear scheme '{scheme}'", hint="use one of 8da4w, 8da8w, 4w, 8w, none")
    # HQQ's scale-only search lowers weight error against plain round-to-nearest at no runtime cost.
    algorithm = "hqq_scale_only"
    if scheme.startswith("8da"):
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=bits, weight_granularity=_granularity(group_size), intx_choose_qparams_algorithm=algorithm
        )
    return IntxWeightOnlyConfig(weight_dtype=bits, granularity=_granularity(group_size), intx_choose_qparams_algorithm=algorithm)


def _weight_bounds(scheme: str) -> tuple[torch.dtype, int, int]:
    import torch

    bits = torch.int4 if is_4bit(scheme) else torch.int8
    return (bits, -8, 7) if is_4bit(scheme) else (bits, -128, 127)


def intx_weight(codes: torch.Tensor, scales: torch.Tensor, bits: torch.dtype, group: int, *, activations: bool):
    """torchao's unpacked int-x weight from symmetric codes and fp32 scales, as its quantize_ lays it out
    (int8 zero points of 0; per-token int8 activations for the 8da schemes), without quantizing anything."""
    import torch

    from torchao.quantization import IntxUnpackedToInt8Tensor

    return IntxUnpackedToInt8Tensor(
        qdata=codes, scale=scales, zero_point=torch.zeros_like(scales, dtype=torch.int8), target_dtype=bits,
        block_size=(1, group), dtype=torch.float32, activation_quantization="int8_asym_per_token" if activations else None,
    )


def _set_weight(module: nn.Module, weight) -> None:
    from torch import nn

    module.weight = nn.Parameter(weight, requires_grad=False)


def hqq_scale_only(weight: torch.Tensor, group_size: int, qmin: int, qmax: int, *, iters: int = 20,
                   early_stop_tol: float = 1e-5, rows: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes and fp32 scales of torchao's scale-only HQQ (`_choose_qparams_and_quantize_scale_only_hqq`,
    what IntxWeightOnlyConfig(intx_choose_qparams_algorithm="hqq_scale_only") runs), bit for bit, computed
    over blocks of `rows` rows (default: about a million weights).

    torchao's form makes about four float temporaries the size of the whole tensor per iteration: 0.35 GB
    for SmolLM2's 49152 x 576 embedding, the export's peak memory. Every step but the stopping test is per
    group, so blocks of rows give the same numbers; the test (the largest relative scale change of any
    group under `early_stop_tol`) is taken over all blocks, as torchao takes it over the whole tensor.
    """
    import torch

    n, k = weight.shape
    gs = group_size or k
    eps = torch.finfo(torch.float32).eps
    rows = rows or max(1, (1 << 20) // k)
    w = weight.detach().float()
    blocks = [(r0, w[r0 : r0 + rows].reshape(-1, k // gs, gs)) for r0 in range(0, n, rows)]
    qabs = max(abs(qmin), abs(qmax)) or 1
    scale = torch.empty(n, k // gs)
    with torch.no_grad():
        for r0, g in blocks:
            scale[r0 : r0 + rows] = (g.abs().amax(dim=2) / qabs).clamp_min(eps)
        for _ in range(max(1, iters)):
            new = torch.empty_like(scale)
            rel = None
            for r0, g in blocks:
                s = scale[r0 : r0 + rows]
                q = (g / s.unsqueeze(-1)).round().clamp(qmin, qmax)
                num = (g * q).sum(dim=2, dtype=torch.float32)
                den = (q * q).sum(dim=2, dtype=torch.float32)
                s_new = torch.where(den > 0, num / den, s).clamp_min(eps).abs()
                new[r0 : r0 + rows] = s_new
                change = ((s_new - s).abs() / s.clamp_min(eps)).max()
                rel = change if rel is None else torch.maximum(rel, change)
            scale = new
            if rel < early_stop_tol:
                break
        codes = torch.empty(n, k, dtype=torch.int8)
        for r0, g in blocks:
            q = (g / scale[r0 : r0 + rows].unsqueeze(-1)).round().clamp(qmin, qmax)
            codes[r0 : r0 + rows] = q.reshape(-1, k).to(torch.int8)
    return codes, scale


def quantize_embedding(module: nn.Module, scheme: str, group_size: int) -> None:
    """The embedding table to `scheme` (4w or 8w) in groups of `group_size` (0: whole rows) with HQQ scales,
    in place. Scales stay fp32: with fp16 scales the lowered embedding_4bit produced wrong rows (measured:
    cosine 0.28 against the eager table), so the 1.8 MB they would save is not worth it."""
    if scheme not in ("4w", "8w"):
        raise RecipeError(f"unknown embedding scheme '{scheme}'", hint="use one of 4w, 8w, none")
    bits, qmin, qmax = _weight_bounds(scheme)
    group = group_size or module.weight.shape[1]
    codes, scales = hqq_scale_only(module.weight, group, qmin, qmax)
    _set_weight(module, intx_weight(codes, scales, bits, group, activations=False))


def collect_importance(hf_model: nn.Module, token_ids: list[int]) -> dict[str, torch.Tensor]:
    """Mean squared input activation per input channel of every linear, keyed by StaticCacheLM names.

    Runs the transformers model (all positions, so the lm_head sees every token, unlike the static
    decoder's last-position head). Fused Phi-3 projections map onto the split linears that share the input.
    """
    import torch
    from torch import nn

    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in hf_model.named_modules():
        if isinstance(module, nn.Linear):
            def hook(mod, inputs, name=name):
                x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
                sums[name] = sums.get(name, 0) + (x * x).mean(0)
            hooks.append(module.register_forward_pre_hook(hook))
    # Only the output layer's input is needed, not its tokens x vocabulary logits (80 MB of floats for
    # SmolLM2 on the calibration text, at the export's peak memory): it returns a slice of its input.
    head = hf_model.get_output_embeddings()
    if head is not None:
        head.forward = lambda x: x[..., :1]
    try:
        with torch.no_grad():
            hf_model(torch.tensor([token_ids]))
    finally:
        for h in hooks:
            h.remove()
        if head is not None:
            del head.forward
    out: dict[str, torch.Tensor] = {}
    for name, value in sums.items():
        name = name[len("model."):] if name.startswith("model.") else name
        value = value.float()
        if name.endswith("qkv_proj"):
            base = name[: -len("qkv_proj")]
            out.update({base + p: value for p in ("q_proj", "k_proj", "v_proj")})
        elif name.endswith("gate_up_proj"):
            base = name[: -len("gate_up_proj")]
            out.update({base + p: value for p in ("gate_proj", "up_proj")})
        else:
            out[name] = value
    return out


def search_symmetric_scales(
    weight: torch.Tensor, group_size: int, importance: torch.Tensor | None, qmin: int = -8, qmax: int = 7
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group symmetric int4 codes and bf16-representable scales minimising weighted squared error.

    A grid over scale = absmax * f / 8 (f in 0.7..1.2) picks the best clipping per group, then a
    least-squares step (s = <w, q>_imp / <q, q>_imp with the codes fixed) refines it. The error of a
    scale is s^2 <q, q>_imp - 2 s <q, w>_imp (the constant <w, w>_imp dropped). Rows are processed in
    blocks of about a million weights so each candidate's passes stay in cache.
    """
    import torch

    n, k = weight.shape
    gs = group_size or k
    imp = torch.ones(k) if importance is None else importance.float().clamp(min=1e-12)
    imp = imp.reshape(1, k // gs, gs)
    codes = torch.empty(n, k, dtype=torch.int8)
    scales = torch.empty(n, k // gs)
    rows = max(1, (1 << 20) // k)
    with torch.no_grad():
        for r0 in range(0, n, rows):
            g = weight[r0 : r0 + rows].detach().float().reshape(-1, k // gs, gs)
            gi = g * imp
            amax = g.abs().amax(-1, keepdim=True).clamp(min=1e-10)

            def err(scale):
                q = torch.round(g / scale).clamp_(qmin, qmax)
                return scale * scale * (q * q * imp).sum(-1, keepdim=True) - 2 * scale * (q * gi).sum(-1, keepdim=True), q

            best_s = best_e = None
            for f in torch.linspace(0.7, 1.2, 21).tolist():
                s = (amax * (f / 8)).to(torch.bfloat16).float()
                e, _ = err(s)
                if best_s is None:
                    best_s, best_e = s, e
                else:
                    better = e < best_e
                    best_s, best_e = torch.where(better, s, best_s), torch.where(better, e, best_e)
            _, q = err(best_s)
            s = (gi * q).sum(-1, keepdim=True) / (q * q * imp).sum(-1, keepdim=True).clamp(min=1e-20)
            s = torch.where(s > 0, s, best_s).to(torch.bfloat16).float()
            e, _ = err(s)
            best_s = torch.where(e < best_e, s, best_s)
            q = torch.round(g / best_s).clamp_(qmin, qmax)
            codes[r0 : r0 + rows] = q.reshape(-1, k).to(torch.int8)
            scales[r0 : r0 + rows] = best_s.reshape(-1, k // gs)
    return codes, scales


ScaleCache = dict  # (module name, group size) -> (codes, scales) of search_symmetric_scales


def _quantize_searched(lm: nn.Module, fqns: set[str], scheme: str, group_size: int,
                       importance: dict[str, torch.Tensor], cache: ScaleCache | None = None) -> int:
    """The 4-bit linears in `fqns` quantized in place with searched scales (or those in `cache`, filled for
    the next call on a copy of the same model: exporter plan); returns how many.

    Each linear's float weight is replaced as soon as its scales are found, so at most one float copy of
    any layer exists beside the model (the export's peak memory), and no torchao quantization runs whose
    result the search would overwrite.
    """
    bits, qmin, qmax = _weight_bounds(scheme)
    done = 0
    for fqn, module in lm.named_modules():
        if fqn in fqns:
            k = module.in_features
            group = group_size if group_size and k % group_size == 0 else k
            found = cache.get((fqn, group)) if cache is not None else None
            if found is None:
                found = search_symmetric_scales(module.weight, group, importance.get(fqn), qmin, qmax)
                if cache is not None:
                    cache[(fqn, group)] = found
            codes, scales = (t.clone() for t in found) if cache is not None else found  # a model never aliases the cache
            _set_weight(module, intx_weight(codes, scales, bits, group, activations=scheme.startswith("8da")))
            done += 1
    return done


def _layer_of(fqn: str) -> int | None:
    """The decoder layer a module belongs to (`layers.12.mlp.up_proj` -> 12), None outside the layers."""
    parts = fqn.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "layers" and parts[1].isdigit() else None


def apply_recipe(lm: nn.Module, recipe, importance: dict[str, torch.Tensor] | None = None,
                 scale_cache: ScaleCache | None = None) -> QuantReport:
    """Quantize `lm` (a StaticCacheLM) in place following `recipe` (a profiles.Recipe).

    With `importance` (from collect_importance), 4-bit linear scales are re-searched (see module doc);
    `scale_cache` keeps those searches for the next call on a copy of the same model (exporter plan). Runs
    on one torch thread (see threads.py): the results are the same, and a busy machine no longer stalls it.
    """
    from .threads import torch_threads

    with torch_threads(1):
        return _apply_recipe(lm, recipe, importance, scale_cache)


def _apply_recipe(lm: nn.Module, recipe, importance: dict[str, torch.Tensor] | None,
                  scale_cache: ScaleCache | None = None) -> QuantReport:
    from torch import nn

    from torchao.quantization.quant_api import quantize_

    keep_8bit = set(recipe.layers_8bit)

    def is_8bit_layer(m, fqn):
        return isinstance(m, nn.Linear) and _layer_of(fqn) in keep_8bit

    def is_body_linear(m, fqn):  # the linears `recipe.linear` applies to
        return isinstance(m, nn.Linear) and fqn != "lm_head" and _layer_of(fqn) not in keep_8bit

    searched: set[str] = set()
    refined = 0
    if importance is not None and recipe.linear in ("8da4w", "4w"):
        searched = {fqn for fqn, m in lm.named_modules()
                    if is_body_linear(m, fqn) or (fqn == "lm_head" and recipe.output == "linear")}
        refined = _quantize_searched(lm, searched, recipe.linear, recipe.group_size, importance, scale_cache)

    # After the linears: the table's float temporaries then fit into the memory their float weights left.
    if recipe.embedding != "none":
        quantize_embedding(lm.embed_tokens, recipe.embedding, recipe.embedding_group_size)

    fallback: list[str] = []
    n_linear = 0
    if recipe.linear != "none":
        gs = recipe.group_size
        if gs:
            fallback = [fqn for fqn, m in lm.named_modules() if is_body_linear(m, fqn) and m.in_features % gs]
        if keep_8bit:
            quantize_(lm, linear_config(recipe.eight_bit_form(), 0), filter_fn=is_8bit_layer)
        quantize_(lm, linear_config(recipe.linear, gs),
                  filter_fn=lambda m, fqn: is_body_linear(m, fqn) and fqn not in fallback and fqn not in searched)
        if fallback:
            quantize_(lm, linear_config(recipe.linear, 0),
                      filter_fn=lambda m, fqn: fqn in fallback and fqn not in searched)
        n_linear = sum(1 for fqn, m in lm.named_modules() if is_body_linear(m, fqn) or is_8bit_layer(m, fqn))

    output = "none"
    if recipe.output == "linear" and recipe.linear != "none":
        gs = recipe.group_size if recipe.group_size and lm.lm_head.in_features % recipe.group_size == 0 else 0
        if "lm_head" not in searched:
            quantize_(lm, linear_config(recipe.linear, gs), filter_fn=lambda m, fqn: fqn == "lm_head")
        output = f"{recipe.linear}-g{gs}" if gs else f"{recipe.linear}-per-channel"
    elif recipe.output == "8w":
        quantize_(lm, linear_config("8da8w", 0), filter_fn=lambda m, fqn: fqn == "lm_head")
        output = "8da8w-per-channel"
    embedding = "none" if recipe.embedding == "none" else f"{recipe.embedding}-g{recipe.embedding_group_size}"
    return QuantReport(
        linear_layers=n_linear,
        per_channel_fallback=tuple(fallback),
        embedding=embedding,
        output=output,
        scale_search="activation-weighted mse" if refined else "torchao hqq_scale_only",
        refined_layers=refined,
    )
