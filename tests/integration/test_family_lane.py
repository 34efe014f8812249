"""Each family's tiny model through the real pipeline: `exporter export` (fp32, so the .pte must be exact), then
`verify` (the .pte against eager transformers, and ExecuTorch's stock LLM runner), then the .pte's greedy decode
against eager transformers' greedy decode, past the sliding window.

About a minute of lowering per family on a 2-core host, so the lane has its own marker and is left out of the
default run: `python -m pytest -m family_lane`.
"""

from __future__ import annotations

import pytest
import torch

from conftest import FAMILY_CASES, save_tiny_family

pytestmark = [pytest.mark.slow, pytest.mark.family_lane]

PROMPT, NEW = 12, 40  # 52 of the 64 slots: the decode crosses the window of 8 (and Phi-4-mini's LongRoPE 32)


@pytest.mark.parametrize("name", FAMILY_CASES)
def test_family_exports_verifies_and_decodes_like_transformers(name, tmp_path):
    from exporter.artifact import PTE
    from exporter.build.export import run_export
    from exporter.build.plan import build_plan
    from exporter.build.source import load_model, resolve_source
    from exporter.verification import PteDecoder, verify_folder

    folder = save_tiny_family(tmp_path / "model", name)
    out = tmp_path / "out"
    plan = build_plan(str(folder), "sm8650", out, quant="none", embedding_quant="none", max_seq_len=64)
    run_export(plan)

    result = verify_folder(out, chunks=2, chunk_len=64, prefill_len=8, runner_tokens=8)
    assert result.runner_ok, result.runner_text
    assert result.top1_agreement == 1.0 and result.mean_kl < 1e-6

    hf = load_model(resolve_source(str(folder)))
    prompt = torch.randint(2, 300, (PROMPT,), generator=torch.Generator().manual_seed(5)).tolist()
    want = list(prompt)
    with torch.no_grad():
        for _ in range(NEW):
            want.append(int(hf(torch.tensor([want])).logits[0, -1].argmax()))
    # The .pte fed eager's greedy tokens (the prompt in one call, then one token per call, as the runner does)
    # predicts each next one: by induction its own greedy decode is the same sequence.
    got = PteDecoder(out / PTE).score(want, PROMPT)[:-1].argmax(-1).tolist()
    assert got == want[PROMPT:]
