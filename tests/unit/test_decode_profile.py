"""bench/decode_profile.py: the stand-in body uses every linear, and perf's per-library report is read right."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _module():
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("decode_profile", REPO / "bench" / "decode_profile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_body_holds_the_decoders_linear_weights_and_uses_each():
    mod = _module()
    dims = {"hidden": 16, "intermediate": 40, "n_heads": 4, "n_kv_heads": 2, "head_dim": 4}
    body = mod.body_linears(dims, n_layers=6, width=48)
    linears = [m for m in body.modules() if isinstance(m, torch.nn.Linear)]
    per_layer = 16 * 16 * 2 + 16 * 8 * 2 + 16 * 40 * 3
    assert sum(m.weight.numel() for m in linears) == 6 * per_layer  # 21 linears of 16 x 48
    assert {(m.in_features, m.out_features) for m in linears} == {(16, 48)}
    outputs = body(torch.randn(1, 5, 16))
    sum(o.sum() for o in outputs).backward()
    unused = [n for n, p in body.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert unused == []  # a dead linear would be dropped by torch.export and never timed


def test_perf_shares_reads_the_dso_rows_only():
    report = """# Samples: 31K of event 'cpu-clock:ppp'
#
# Overhead  Shared Object
# ........  ..........................
#
    59.40%  libexecutorch_backend_xnnpack.so
    14.30%  libexecutorch_threadpool.so
     7.50%  [kernel.kallsyms]
     0.01%  ld-linux-x86-64.so.2


#
# (Cannot load tips.txt file, please install perf!)
#"""
    shares = _module().perf_shares(report)
    assert shares == {"libexecutorch_backend_xnnpack.so": 59.4, "libexecutorch_threadpool.so": 14.3,
                      "[kernel.kallsyms]": 7.5, "ld-linux-x86-64.so.2": 0.01}
