"""recipes.py builds its quantized weights itself, to spare memory: they must equal what torchao's quantize_ made."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from exporter.build.recipes import hqq_scale_only, intx_weight, quantize_embedding, search_symmetric_scales

PARTS = ("qdata", "scale", "zero_point")
ATTRIBUTES = ("target_dtype", "block_size", "dtype", "activation_quantization")


def _assert_same_weight(got, want):
    assert type(got) is type(want) and got.requires_grad == want.requires_grad
    for part in PARTS:
        a, b = getattr(got, part), getattr(want, part)
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), part
        assert torch.equal(a, b), part
    for name in ATTRIBUTES:
        assert getattr(got, name) == getattr(want, name), name


@pytest.mark.parametrize("rows", [0, 1, 7])  # 0: the default block (here the whole table)
@pytest.mark.parametrize("shape, group, bits", [((50, 128), 64, 4), ((33, 96), 32, 4), ((20, 64), 0, 8)])
def test_row_blocked_hqq_equals_torchao_exactly(rows, shape, group, bits):
    from torchao.quantization.quant_primitives import _choose_qparams_and_quantize_scale_only_hqq

    torch.manual_seed(0)
    w = torch.randn(shape) * torch.rand(shape[0], 1) * 3
    w[3] = 0.0  # an all-zero row: the eps clamp
    qmin, qmax = (-8, 7) if bits == 4 else (-128, 127)
    gs = group or shape[1]
    want_q, want_s = _choose_qparams_and_quantize_scale_only_hqq(w, [1, gs], qmin, qmax)
    got_q, got_s = hqq_scale_only(w, gs, qmin, qmax, rows=rows)
    assert got_q.dtype == torch.int8 and torch.equal(got_q, want_q.to(torch.int8))
    assert got_s.dtype == want_s.dtype and torch.equal(got_s, want_s)


def test_row_blocked_hqq_stops_where_torchao_stops():
    from torchao.quantization.quant_primitives import _choose_qparams_and_quantize_scale_only_hqq

    # One block settles at once (its rows are exact multiples of their scale), the other keeps moving: the
    # stopping test must be the whole table's, or the settled block would differ by its iteration count.
    torch.manual_seed(1)
    settled = torch.randint(-8, 8, (4, 64)).float() * 0.01
    w = torch.cat([settled, torch.randn(4, 64)])
    for iters in (1, 3, 20):
        want_q, want_s = _choose_qparams_and_quantize_scale_only_hqq(w, [1, 64], -8, 7, iters=iters)
        got_q, got_s = hqq_scale_only(w, 64, -8, 7, iters=iters, rows=4)
        assert torch.equal(got_q, want_q.to(torch.int8)) and torch.equal(got_s, want_s), iters


@pytest.mark.parametrize("scheme, group", [("4w", 64), ("4w", 32), ("8w", 0)])
def test_quantize_embedding_equals_torchao_quantize(scheme, group):
    from torchao.quantization.quant_api import IntxWeightOnlyConfig, quantize_

    from exporter.build.recipes import _granularity

    torch.manual_seed(2)
    ours, theirs = nn.Embedding(40, 128), nn.Embedding(40, 128)
    theirs.load_state_dict(ours.state_dict())
    quantize_embedding(ours, scheme, group)
    bits = torch.int4 if scheme == "4w" else torch.int8
    config = IntxWeightOnlyConfig(weight_dtype=bits, granularity=_granularity(group), intx_choose_qparams_algorithm="hqq_scale_only")
    quantize_(theirs, config, filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    _assert_same_weight(ours.weight, theirs.weight)


@pytest.mark.parametrize("scheme, group", [("8da4w", 32), ("4w", 32), ("8da4w", 0)])
def test_searched_linear_layout_equals_torchao_layout_with_codes_installed(scheme, group):
    """What the export did before: torchao laid the linear out (round-to-nearest), then the searched codes and
    scales were copied into that layout, zero points zeroed."""
    from torchao.quantization.quant_api import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
        quantize_,
    )

    from exporter.build.recipes import _granularity

    torch.manual_seed(3)
    linear = nn.Linear(96, 24, bias=False)
    gs = group or 96
    codes, scales = search_symmetric_scales(linear.weight, gs, torch.rand(96) + 0.1)
    g = _granularity(group)
    config = (Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=g, intx_choose_qparams_algorithm="affine")
              if scheme == "8da4w" else
              IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=g, intx_choose_qparams_algorithm="affine"))
    quantize_(linear, config)
    want = linear.weight
    want.qdata.copy_(codes)
    want.scale.copy_(scales.reshape(want.scale.shape))
    want.zero_point.zero_()
    got = nn.Parameter(intx_weight(codes, scales, torch.int4, gs, activations=scheme == "8da4w"), requires_grad=False)
    _assert_same_weight(got, want)


def test_importance_without_logits_equals_hooks_on_the_full_forward(tiny_models):
    from exporter.build.recipes import collect_importance
    from exporter.build.source import load_model, resolve_source

    hf = load_model(resolve_source(str(tiny_models["llama"])))
    ids = list(range(2, 120))
    want: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in hf.named_modules():
        if isinstance(module, nn.Linear):
            def hook(mod, inputs, out, name=name):
                x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
                want[name.removeprefix("model.")] = (x * x).mean(0).float()
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits
    for h in hooks:
        h.remove()
    got = collect_importance(hf, ids)
    assert got.keys() == want.keys() and "lm_head" in got
    for name in want:
        assert torch.equal(got[name], want[name]), name
    with torch.no_grad():  # the output layer is whole again
        assert torch.equal(hf(torch.tensor([ids])).logits, logits)
