"""Quantization and lowering run on one torch thread: the count is restored, and the results do not change."""

from __future__ import annotations

import pytest
import torch

from exporter.build.threads import torch_threads


def test_thread_count_is_restored_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def _quantized_tensors(folder, threads: int) -> dict[str, torch.Tensor]:
    from exporter.build.model import build_static_lm
    from exporter.build.recipes import Recipe, _apply_recipe, collect_importance
    from exporter.build.source import load_model, resolve_source

    hf = load_model(resolve_source(str(folder)))
    lm = build_static_lm(hf, 32)
    importance = collect_importance(hf, list(range(2, 200)))
    recipe = Recipe.make(linear="8da4w", group_size=32, embedding="4w", embedding_group_size=32, output="linear")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _apply_recipe(lm, recipe, importance)  # the body of apply_recipe, without its one-thread guard
    finally:
        torch.set_num_threads(before)
    out = {}
    for name, value in lm.state_dict().items():
        for part in ("qdata", "scale", "zero_point"):
            if hasattr(value, part):
                out[f"{name}.{part}"] = getattr(value, part)
    return out


def test_quantization_is_bit_identical_with_one_or_two_threads(tmp_path):
    from conftest import make_tiny_model

    # wide enough (256 x 512 linears) that torch splits the scale search's ops across threads
    folder = make_tiny_model(tmp_path / "m", "llama", hidden_size=256, intermediate_size=512)
    one, two = _quantized_tensors(folder, 1), _quantized_tensors(folder, 2)
    assert one.keys() == two.keys() and any(k.endswith("qdata") for k in one)
    for key in one:
        assert one[key].dtype == two[key].dtype and torch.equal(one[key], two[key]), key
