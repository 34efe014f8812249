"""The native latency harness: build it against the executorch wheel, run it on tiny .pte files, and check its
JSON lines, its error exits and its logits (equal to the Python ExecuTorch runtime's for the same tokens).

The build is cached in build/native-host (rebuilt only when native/ changes), so CI compiles once.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from exporter.errors import HarnessError
from exporter.device.harness import build_host, run_host
from exporter.device.protocol import harness_argv, parse_runs
from exporter.device.protocol import RUN_FIELDS

MAX_SEQ_LEN = 48
TIMING_FIELDS = ("model_load_ms", "prefill_ms", "prefill_tps", "ttft_ms", "decode_ms", "decode_tps",
                 "token_ms_p50", "token_ms_p90", "token_ms_p99", "peak_rss_kb")


# ------------------------------------------------------------------------------------------------ fixtures


def _tiny_custom_op_module():
    """One attention layer with the exporter's calling convention and the ops a real export uses:
    llama::update_cache / llama::custom_sdpa on a static KV cache, quantized_decomposed::embedding_4bit
    (kernels_quantized) and torchao 8da4w linears (XNNPACK)."""
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  quantized_decomposed ops
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  llama::* ops
    from torch import nn

    vocab, dim, heads, head_dim = 96, 64, 2, 32

    class Embedding4bit(nn.Module):
        def __init__(self, weight: torch.Tensor, group: int = 32):
            super().__init__()
            rows, cols = weight.shape
            groups = weight.view(rows, cols // group, group)
            scale = groups.abs().amax(-1).clamp(min=1e-6) / 7.0
            q = torch.clamp(torch.round(groups / scale[..., None]), -8, 7).to(torch.int32).view(rows, cols) + 8
            self.register_buffer("packed", ((q[:, 0::2] << 4) | q[:, 1::2]).to(torch.uint8))
            self.register_buffer("scales", scale.float())

        def forward(self, tokens):
            return torch.ops.quantized_decomposed.embedding_4bit(self.packed, self.scales, None, -8, 7, tokens)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.max_seq_len, self.vocab_size = MAX_SEQ_LEN, vocab
            self.emb = Embedding4bit(torch.randn(vocab, dim))
            self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
            self.o = nn.Linear(heads * head_dim, dim, bias=False)
            self.head = nn.Linear(dim, vocab, bias=False)
            self.register_buffer("k_cache", torch.zeros(1, MAX_SEQ_LEN, heads, head_dim), persistent=False)
            self.register_buffer("v_cache", torch.zeros(1, MAX_SEQ_LEN, heads, head_dim), persistent=False)

        def forward(self, tokens, input_pos):
            seq = tokens.shape[1]
            pos = input_pos[0].item()
            torch._check_is_size(pos)
            torch._check(pos + seq <= MAX_SEQ_LEN)
            x = self.emb(tokens)
            q, k, v = self.qkv(x).view(1, seq, 3, heads, head_dim).unbind(2)
            torch.ops.llama.update_cache(k, self.k_cache, pos)
            torch.ops.llama.update_cache(v, self.v_cache, pos)
            att = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, pos, None, 0.0, True, head_dim**-0.5)
            x = x + self.o(att.reshape(1, seq, heads * head_dim))
            return self.head(x[:, -1, :])

    torch.manual_seed(0)
    return Tiny().eval()


@pytest.fixture(scope="module")
def tiny_pte(tmp_path_factory):
    """A few-second export of the self-contained module above."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    module = _tiny_custom_op_module()
    quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32)))
    example = (torch.zeros(1, 4, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    seq = torch.export.Dim("seq", min=1, max=MAX_SEQ_LEN - 1)
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=({1: seq}, None), strict=False)
    metadata = {"get_max_seq_len": MAX_SEQ_LEN, "get_vocab_size": module.vocab_size, "get_bos_id": 1,
                "get_eos_ids": [2], "use_kv_cache": True, "enable_dynamic_shape": True, "get_n_layers": 1}
    et_program = to_edge_transform_and_lower(
        program, partitioner=[XnnpackPartitioner()], constant_methods=metadata
    ).to_executorch()
    path = tmp_path_factory.mktemp("tiny") / "tiny.pte"
    path.write_bytes(et_program.buffer)
    return path


def _llama_pte(folder, prefill_chunk=None):
    """A random-weight 2-layer Llama through the exporter's own pipeline (model.py + lower.py), 8da4w."""
    try:
        from exporter.build.lower import export_program, lower_to_executorch, runner_metadata
        from exporter.build.model import build_static_lm
        from exporter.build.recipes import linear_config
    except ImportError as err:
        pytest.skip(f"the exporter's export pipeline is not available: {err}")
    from torch import nn
    from torchao.quantization import quantize_
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    lm = build_static_lm(LlamaForCausalLM(config).eval(), MAX_SEQ_LEN)
    quantize_(lm, linear_config("8da4w", 32), filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    metadata = runner_metadata(lm, bos_id=1, eos_ids=[2])
    if prefill_chunk is None:
        program = export_program(lm)
    else:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  llama::* ops for the tracer

        metadata["get_max_seq_len"] = prefill_chunk
        seq = torch.export.Dim("seq", min=1, max=prefill_chunk)
        example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0], dtype=torch.long))
        with torch.no_grad():
            program = torch.export.export(lm, example, dynamic_shapes=({1: seq}, None), strict=False)
    lowered = lower_to_executorch(program, metadata)
    path = folder / "llama.pte"
    path.write_bytes(lowered.buffer)
    return path


@pytest.fixture(scope="module")
def llama_pte(tmp_path_factory):
    return _llama_pte(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def chunked_llama_pte(tmp_path_factory):
    """The same model taking at most 5 prompt tokens per call (get_max_seq_len 5, get_max_context_len 48), as
    other tools export for ExecuTorch's runners to split prompts."""
    return _llama_pte(tmp_path_factory.mktemp("llama-chunk5"), prefill_chunk=5)


def _run(binary, *args, check=False):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, check=check, timeout=120)


def _python_runtime_logits(pte, prompt, decode_tokens) -> torch.Tensor:
    """The same token sequence through the ExecuTorch Python runtime: prefill, then one call per decode token."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(pte)).load_method("forward")
    rows = [method.execute([torch.tensor([prompt]), torch.tensor([0])])[0]]
    for step, token in enumerate(decode_tokens):
        rows.append(method.execute([torch.tensor([[token]]), torch.tensor([len(prompt) + step])])[0])
    return torch.stack([r.reshape(-1)[-r.shape[-1]:].float() for r in rows])


# ------------------------------------------------------------------------------------- no build needed


def test_harness_argv():
    argv = harness_argv("/x/latency_main", "m.pte", prompt_len=64, gen_len=32, reps=5, warmup=1, threads=4,
                        cpu_set=[4, 5, 6, 7])
    assert argv == ["/x/latency_main", "--pte", "m.pte", "--prompt-len", "64", "--gen-len", "32", "--reps", "5",
                    "--warmup", "1", "--threads", "4", "--cpu-set", "4,5,6,7"]
    assert "--cpu-set" not in harness_argv("b", "m.pte", prompt_len=1, gen_len=1, reps=1, warmup=0, threads=1)


def test_parse_runs_skips_noise_and_validates():
    row = {name: ([] if name == "cpu_set" else 1) for name in RUN_FIELDS} | {"run": 0}
    text = "[cpuinfo] log line\n" + json.dumps(row) + "\n{not json\n" + json.dumps({**row, "run": 1, "pte": "m"})
    runs = parse_runs(text)
    assert [r["run"] for r in runs] == [0, 1] and runs[1]["pte"] == "m"
    with pytest.raises(HarnessError, match="no run"):
        parse_runs("nothing here\n")
    with pytest.raises(HarnessError, match="prefill_ms"):
        parse_runs(json.dumps({k: v for k, v in row.items() if k != "prefill_ms"}))


# ------------------------------------------------------------------------------------------ native runs


@pytest.mark.native
def test_build_is_cached(harness_binary):
    mtime = harness_binary.stat().st_mtime_ns
    assert build_host(jobs=2) == harness_binary
    assert harness_binary.stat().st_mtime_ns == mtime


@pytest.mark.native
def test_runs_have_schema_fields_and_counts(harness_binary, tiny_pte):
    runs = run_host(tiny_pte, prompt_len=8, gen_len=6, reps=2, warmup=1, threads=1, binary=harness_binary)
    assert [r["run"] for r in runs] == [0, 1]
    for r in runs:
        assert r["prompt_tokens"] == 8 and r["gen_tokens"] == 6
        assert r["threads"] == 1 and r["cpu_set"] == []
        assert r["max_seq_len"] == MAX_SEQ_LEN and r["warmup"] == 1
        for name in TIMING_FIELDS:
            assert r[name] > 0, name
        assert r["token_ms_p50"] <= r["token_ms_p90"] <= r["token_ms_p99"]
        assert len(r["token_ms"]) == 6
        assert r["ttft_ms"] >= r["prefill_ms"]


@pytest.mark.native
def test_cpu_set_pins_and_sizes_the_threadpool(harness_binary, tiny_pte):
    cpu = min(os.sched_getaffinity(0))
    runs = run_host(tiny_pte, prompt_len=4, gen_len=2, reps=1, warmup=0, threads=1, cpu_set=[cpu], binary=harness_binary)
    assert runs[0]["cpu_set"] == [cpu] and runs[0]["threads"] == 1


@pytest.mark.native
@pytest.mark.parametrize("which", ["tiny_pte", "llama_pte"])
def test_dumped_logits_equal_python_runtime(harness_binary, which, request, tmp_path):
    pte = request.getfixturevalue(which)
    dump = tmp_path / "logits.json"
    proc = _run(harness_binary, "--pte", pte, "--prompt-len", 12, "--gen-len", 5, "--reps", 1, "--warmup", 1,
                "--threads", 1, "--dump-logits", dump)
    assert proc.returncode == 0, proc.stderr
    assert len(parse_runs(proc.stdout)) == 1
    data = json.loads(dump.read_text())
    prompt, decode = data["prompt_tokens"], data["decode_tokens"]
    got = torch.tensor(data["logits"])
    assert len(prompt) == 12 and len(decode) == 5 and got.shape[0] == 6
    # greedy decode: each fed token is the argmax of the previous logits
    assert decode == [int(row.argmax()) for row in got[:-1]]
    ref = _python_runtime_logits(pte, prompt, decode)
    assert ref.shape == got.shape
    assert torch.allclose(got, ref, atol=1e-4, rtol=0), (got - ref).abs().max()


@pytest.mark.native
def test_prompt_is_prefilled_in_the_programs_chunks(harness_binary, llama_pte, chunked_llama_pte, tmp_path):
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(chunked_llama_pte))
    assert program.load_method("get_max_seq_len").execute([])[0] == 5
    assert program.load_method("get_max_context_len").execute([])[0] == MAX_SEQ_LEN
    with pytest.raises(Exception):  # one call of 6 tokens is beyond the program's bound
        program.load_method("forward").execute([torch.zeros(1, 6, dtype=torch.long), torch.tensor([0])])

    dumps = {}
    runs = {"whole": (llama_pte,), "chunked": (chunked_llama_pte,), "asked": (llama_pte, "--prefill-chunk", 4)}
    for name, (pte, *extra) in runs.items():
        dump = tmp_path / f"{name}.json"
        proc = _run(harness_binary, "--pte", pte, "--prompt-len", 12, "--gen-len", 5, "--reps", 1, "--warmup", 0,
                    "--threads", 1, "--dump-logits", dump, *extra)
        assert proc.returncode == 0, proc.stderr
        assert parse_runs(proc.stdout)[0]["prefill_chunk"] == {"whole": 12, "chunked": 5, "asked": 4}[name]
        assert parse_runs(proc.stdout)[0]["max_seq_len"] == MAX_SEQ_LEN
        dumps[name] = json.loads(dump.read_text())
    ref = torch.tensor(dumps["whole"]["logits"])
    for name in ("chunked", "asked"):
        assert dumps[name]["decode_tokens"] == dumps["whole"]["decode_tokens"]
        got = torch.tensor(dumps[name]["logits"])
        assert torch.allclose(got, ref, atol=1e-4, rtol=0), (name, (got - ref).abs().max())
    too_big = _run(harness_binary, "--pte", chunked_llama_pte, "--prompt-len", 12, "--prefill-chunk", 6)
    assert too_big.returncode == 2 and "exceeds the program's get_max_seq_len 5" in too_big.stderr


def test_verify_scores_a_chunked_program_like_a_whole_one(llama_pte, chunked_llama_pte):
    from exporter.verification import PteDecoder

    whole, chunked = PteDecoder(llama_pte), PteDecoder(chunked_llama_pte)
    assert (chunked.prefill_chunk, chunked.max_seq_len) == (5, MAX_SEQ_LEN)
    ids = [(7 * i + 3) % 128 for i in range(20)]
    a, b = whole.score(ids, prefill_len=12), chunked.score(ids, prefill_len=12)
    assert a.shape == b.shape == (9, 128)
    assert torch.allclose(a, b, atol=1e-4, rtol=0), (a - b).abs().max()


@pytest.mark.native
def test_explicit_tokens(harness_binary, tiny_pte):
    proc = _run(harness_binary, "--pte", tiny_pte, "--tokens", "5,6,7", "--gen-len", 2, "--reps", 1)
    assert proc.returncode == 0, proc.stderr
    assert parse_runs(proc.stdout)[0]["prompt_tokens"] == 3
    bad = _run(harness_binary, "--pte", tiny_pte, "--tokens", "5,6,999", "--gen-len", 2)
    assert bad.returncode != 0 and "vocabulary size 96" in bad.stderr


@pytest.mark.native
def test_missing_pte_is_a_clear_error(harness_binary, tmp_path):
    proc = _run(harness_binary, "--pte", tmp_path / "nope.pte")
    assert proc.returncode != 0 and proc.stdout == ""
    assert "error: cannot read .pte" in proc.stderr and "nope.pte" in proc.stderr


@pytest.mark.native
def test_corrupt_pte_shows_executorch_error_code(harness_binary, tmp_path):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"this is not a flatbuffer program" * 4)
    proc = _run(harness_binary, "--pte", bad)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "loading program" in proc.stderr and "ExecuTorch error 0x" in proc.stderr
    with pytest.raises(HarnessError, match="ExecuTorch error 0x"):
        run_host(bad, prompt_len=4, gen_len=4, binary=harness_binary)


@pytest.mark.native
def test_lengths_beyond_max_seq_len_are_refused(harness_binary, tiny_pte):
    proc = _run(harness_binary, "--pte", tiny_pte, "--prompt-len", 40, "--gen-len", 9)
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"40 + generation length 9 = 49 exceeds the program's max_seq_len {MAX_SEQ_LEN}" in proc.stderr
    with pytest.raises(HarnessError, match="max_seq_len"):
        run_host(tiny_pte, prompt_len=40, gen_len=9, binary=harness_binary)
