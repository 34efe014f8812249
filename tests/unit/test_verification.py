"""The agreement / KL / perplexity arithmetic of `verify`, independent of any model."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")


def test_compare_logits_is_the_same_whatever_the_slice_size():
    from exporter.verification import compare_logits

    torch.manual_seed(0)
    eager = torch.randn(150, 50)
    pte = eager + 0.1 * torch.randn(150, 50)
    targets = torch.randint(0, 50, (150,)).tolist()
    sliced, whole = compare_logits(eager, pte, targets, rows_per_slice=7), compare_logits(eager, pte, targets, rows_per_slice=1000)
    assert sliced["agree"] == whole["agree"] and sliced["n"] == 150
    for key in ("kl_sum", "nll_eager", "nll_pte"):
        assert math.isclose(sliced[key], whole[key], rel_tol=1e-12)
    # against a direct computation
    logp_e, logp_p = torch.log_softmax(eager.double(), -1), torch.log_softmax(pte.double(), -1)
    assert math.isclose(whole["kl_sum"], float((logp_e.exp() * (logp_e - logp_p)).sum()), rel_tol=1e-12)
    assert math.isclose(whole["nll_pte"], float(-logp_p[range(150), targets].sum()), rel_tol=1e-12)
    same = compare_logits(eager, eager.clone(), targets)
    assert same["agree"] == 150 and abs(same["kl_sum"]) < 1e-9 and same["nll_eager"] == same["nll_pte"]
