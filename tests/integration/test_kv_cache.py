"""The int8 KV cache (recipe kv_cache "int8"): exported, run by the ExecuTorch runtime, and recorded."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import decode_like_the_runner
from exporter.artifact import PTE
from exporter.build.candidates import count_bytes
from exporter.build.export import run_export
from exporter.build.model import build_static_lm, spec_kv_cache_bytes
from exporter.build.plan import build_plan
from exporter.build.source import load_model, resolve_source
from exporter.verification import PteDecoder

pytestmark = pytest.mark.slow


def test_int8_kv_pte_runs_and_matches_eager_int8(tiny_models, tmp_path):
    out = tmp_path / "out"
    plan = build_plan(str(tiny_models["llama"]), "sm8650", out, quant="none", embedding_quant="none",
                      kv_cache="int8", max_seq_len=64)
    manifest = run_export(plan).manifest
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["recipe"]["spec"]["kv_cache"] == "int8"
    assert on_disk["recipe"]["label"] == "none+kv8"
    # tiny llama: 2 layers, 2 kv heads, head_dim 16: rows of 16 int8 codes + a 4-byte scale + a zero point
    assert manifest.kv_cache_bytes == 2 * 2 * 64 * 2 * (16 + 4 + 1) == spec_kv_cache_bytes(
        build_static_lm(load_model(resolve_source(str(tiny_models["llama"]))), 64, "int8").spec, 64, "int8")
    assert "llama.custom_quantized_sdpa.default" in manifest.export.non_delegated_ops
    # the int8 cache's codes, scales and zero points are planned buffers, not weights a decode step reads
    fp32_cache = build_static_lm(load_model(resolve_source(str(tiny_models["llama"]))), 64)
    assert manifest.weight_bytes_per_token == count_bytes(fp32_cache, 64).read_per_token

    lm = build_static_lm(load_model(resolve_source(str(tiny_models["llama"]))), 64, "int8")
    tokens = [5, 17, 42, 99, 3, 250, 7, 8, 13, 21, 34, 55]
    got = PteDecoder(out / PTE).score(tokens, 6)
    want = decode_like_the_runner(lm, tokens, 6)
    # Same ops, same kernels (the eager llama:: and quantized_decomposed:: ops are the runtime's), only the
    # float linears differ (XNNPACK vs ATen summation order): a last-bit difference can flip an int8 code.
    assert torch.allclose(got, want, atol=2e-2), (got - want).abs().max()
    assert (got.argmax(-1) == want.argmax(-1)).all()
