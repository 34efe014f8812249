"""The exporter's 4-bit embedding (emb4w-g64, lowered by lower.py to quantized_decomposed::embedding_4bit) alone in
a program: the aarch64 harness under qemu must return the same bits as the x86 host harness. This is the
minimal repro that cleared the embedding of the SmolLM2 drift (docs/device.md, "What the lane found")."""

from __future__ import annotations

import pytest
import torch

from test_arm_lane import arm_argv, arm_bundle, arm_env, run_dump  # noqa: F401  fixtures

pytestmark = pytest.mark.arm

ROWS, DIM = 1024, 576  # SmolLM2's width; more rows than DIM so the harness's argmax token is a valid index


def _embedding_only_pte() -> bytes:
    from torch import nn

    from exporter.build.lower import export_program, lower_to_executorch, runner_metadata
    from exporter.build.recipes import quantize_embedding

    class EmbeddingOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(ROWS, DIM)
            # what lower.py's runner metadata reads; the harness takes the last dim as the vocabulary
            self.max_seq_len, self.vocab_size, self.n_layers = 48, DIM, 1

        def forward(self, tokens, input_pos):
            return self.embed_tokens(tokens)

    torch.manual_seed(0)
    m = EmbeddingOnly().eval()
    quantize_embedding(m.embed_tokens, "4w", 64)
    return lower_to_executorch(export_program(m), runner_metadata(m, bos_id=1, eos_ids=[2])).buffer


@pytest.fixture(scope="module")
def embedding_pte(arm_env, tmp_path_factory):
    from executorch.exir._serialize._program import deserialize_pte_binary

    buffer = _embedding_only_pte()
    program = deserialize_pte_binary(buffer)
    program = getattr(program, "program", program)
    forward = next(p for p in program.execution_plan if p.name == "forward")
    # the op under test, not a float embedding: the fusion pass must have produced embedding_4bit
    assert ("quantized_decomposed::embedding_4bit", "out") in {(o.name, o.overload) for o in forward.operators}
    path = tmp_path_factory.mktemp("arm_emb") / "emb4w.pte"
    path.write_bytes(buffer)
    return path


@pytest.mark.parametrize("cpu", ["cortex-a710", "neoverse-n1"])
def test_4bit_embedding_rows_are_bit_identical(arm_bundle, harness_binary, embedding_pte, tmp_path, cpu):
    # prompt ids below the harness's vocabulary (DIM); the 16 decode ids are argmaxes of looked-up rows
    args = ["--pte", str(embedding_pte), "--tokens", "0,5,100,333,511,540,560,575", "--gen-len", "16",
            "--reps", "1", "--warmup", "0", "--threads", "1"]
    _, host = run_dump([str(harness_binary), *args], tmp_path / "host.json")
    _, arm = run_dump(arm_argv(arm_bundle, cpu, args), tmp_path / "arm.json")
    a, b = torch.tensor(host["logits"]), torch.tensor(arm["logits"])
    assert a.shape == (17, DIM) and a.abs().max() > 0
    assert arm["decode_tokens"] == host["decode_tokens"]
    assert torch.equal(a, b), f"{int((a != b).sum())} of {a.numel()} values differ, max {(a - b).abs().max()}"
