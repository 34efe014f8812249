"""Shared fixtures: tiny Hugging Face model folders built from configs (no Hub access needed)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "tests" / "standin_adb"))
from standin import StandIn  # noqa: E402  the stand-in adb (a test fixture, never a device)

# `exporter bench --host` caches the host's bandwidth: tests (and the CLIs they start) measure into a throwaway
# file, never into the user's cache, which a contended test run would otherwise fill with a wrong number
os.environ["EXPORTER_BANDWIDTH_CACHE"] = str(Path(tempfile.mkdtemp(prefix="exporter-bw-")) / "bandwidth.json")


def _tiny_tokenizer(folder: Path):
    """A byte-level BPE tokenizer trained on a few sentences: small vocab, real tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = (REPO / "exporter" / "build" / "data" / "sample.txt").read_text()
    tok.train_from_iterator([text], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    fast.save_pretrained(folder)
    return fast


TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=1)


def make_tiny_model(folder: Path, family: str, seed: int = 0, **overrides) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config

    configs = {
        "llama": (LlamaConfig, dict(tie_word_embeddings=True)),
        "qwen2": (Qwen2Config, dict(tie_word_embeddings=False)),
        "qwen3": (Qwen3Config, dict(head_dim=32)),
        "phi3": (Phi3Config, dict(pad_token_id=1)),
        "mistral": (MistralConfig, dict(sliding_window=None)),
    }
    cls, extra = configs[family]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cls(**{**TINY, **extra, **overrides}))
    # Random init gives near-uniform logits; scale up so argmax/perplexity comparisons mean something.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    _tiny_tokenizer(folder)
    return folder


WINDOW = 8
FAMILY_TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=1, pad_token_id=0)


def family_config(name: str):
    """A tiny transformers config of each supported family, with the switch that family is known for turned on.

    Sliding windows are 8 (tests run well past them); vocab 300 matches the tiny tokenizer's."""
    import transformers as tf

    longrope = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                "original_max_position_embeddings": 32,
                "short_factor": [1.0 + 0.1 * i for i in range(6)], "long_factor": [1.5 + 0.3 * i for i in range(6)]}
    configs = {
        "llama": tf.LlamaConfig(**FAMILY_TINY, tie_word_embeddings=False),
        # llama3 RoPE scaling and tied embeddings, as Llama 3.2 1B/3B ship
        "llama3_2": tf.LlamaConfig(**FAMILY_TINY, tie_word_embeddings=True, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
        "mistral": tf.MistralConfig(**FAMILY_TINY, sliding_window=WINDOW),
        "qwen2": tf.Qwen2Config(**FAMILY_TINY, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2,
                                tie_word_embeddings=False),
        "qwen3": tf.Qwen3Config(**{**FAMILY_TINY, "head_dim": 32}),
        # Phi-3-mini: fused projections, a sliding window on every layer
        "phi3": tf.Phi3Config(**FAMILY_TINY, sliding_window=WINDOW),
        # Phi-4-mini: partial rotary 0.75, LongRoPE. The decoder's tables cover max_seq_len positions, so they
        # use the long factors once max_seq_len passes original_max_position_embeddings (32 here), as transformers
        # does for a whole sequence that long. Phi3Config's own original_max_position_embeddings (default 4096)
        # overrides the one in rope_parameters, so it is set too.
        "phi4_mini": tf.Phi3Config(**FAMILY_TINY, tie_word_embeddings=True, rope_parameters=longrope,
                                   original_max_position_embeddings=32, sliding_window=None),
        "smollm3": tf.SmolLM3Config(**FAMILY_TINY, no_rope_layer_interval=2),
        "granite": tf.GraniteConfig(**FAMILY_TINY, embedding_multiplier=12.0, residual_multiplier=0.22,
                                    attention_multiplier=0.0078125, logits_scaling=2.0),
        # Caps small enough to bite: these random weights give attention logits of about 0.1 and output logits of
        # about 0.2 (real Gemma 2: caps 50 and 30 on logits that reach them)
        "gemma2": tf.Gemma2Config(**{**FAMILY_TINY, "head_dim": 16}, sliding_window=WINDOW, query_pre_attn_scalar=24,
                                  attn_logit_softcapping=0.1, final_logit_softcapping=0.3),
        "gemma3": tf.Gemma3TextConfig(**{**FAMILY_TINY, "head_dim": 16, "num_hidden_layers": 6}, sliding_window=WINDOW,
                                      query_pre_attn_scalar=24, rope_parameters={
                                          "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                          "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0,
                                                             "factor": 8.0}}),
    }
    return configs[name]


def tiny_family(name: str):
    """A random-weight eager transformers model of `family_config(name)`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = family_config(name)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # norms start at 0 (Gemma) or 1; random ones test the (1 + w) fold
                p.copy_(torch.randn_like(p) * 0.3 + (0.0 if "gemma" in name else 1.0))
    return model


def save_tiny_family(folder: Path, name: str) -> Path:
    """`tiny_family(name)` as a model folder the exporter loads (config, weights, the tiny tokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_family(name)
    # Room for the special tokens a family's tokenizer class adds when it loads the tiny tokenizer (Qwen2's
    # <|endoftext|> becomes id 300), or `verify` rightly refuses a tokenizer with ids past the vocabulary.
    model.resize_token_embeddings(320)
    model.save_pretrained(folder)
    _tiny_tokenizer(folder)
    return folder


FAMILY_CASES = ["llama", "llama3_2", "mistral", "qwen2", "qwen3", "phi3", "phi4_mini", "smollm3", "granite", "gemma2",
                "gemma3"]


def decode_like_the_runner(lm, tokens: list[int], prefill: int):
    """The exporter's eager static-cache decoder called as the runners call a .pte: one prefill call, then one
    token per call. Returns the logits rows [len(tokens) - prefill + 1, vocab]."""
    import torch

    rows = []
    with torch.no_grad():
        lm.reset_cache()
        rows.append(lm(torch.tensor([tokens[:prefill]]), torch.tensor([0]))[0])
        for pos in range(prefill, len(tokens)):
            rows.append(lm(torch.tensor([tokens[pos : pos + 1]]), torch.tensor([pos]))[0])
    return torch.stack(rows)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {f: make_tiny_model(root / f, f) for f in ("llama", "qwen2", "qwen3", "phi3")}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # bench results and plan measurements go to a per-session cache, never the user's ~/.cache/exporter
    monkeypatch.setenv("EXPORTER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "exporter-cache"))

@pytest.fixture
def standin(tmp_path, monkeypatch):
    def make(*serials, **per_serial):
        s = StandIn.phones(tmp_path, *serials, **per_serial)
        for k, v in s.env.items():
            monkeypatch.setenv(k, v)
        return s
    return make


@pytest.fixture(scope="session")
def harness_binary():
    """The native harness built for this host (once per session; CMake caches it under build/)."""
    import shutil

    from exporter.errors import HarnessError
    from exporter.device.harness import build_host

    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler on PATH")
    try:
        return build_host(jobs=2)
    except HarnessError as err:
        if "CMake >=" in str(err):
            pytest.skip(f"no usable CMake: {err}")
        raise


def fake_export(folder: Path, *, payload: bytes = b"\0" * 4096, pte: bytes | None = None, tokenizer: dict | None = None,
                **fields) -> Path:
    """A structurally valid export folder without exporting anything: a model.pte that is only an ExecuTorch
    header plus `payload` (or the real program `pte`), a tokenizer.json, and a manifest.json built (and validated)
    by artifact.Manifest. `fields` override manifest fields (dotted keys like `profile.id` reach into sections)."""
    import hashlib
    import json

    from exporter.artifact import MANIFEST_SCHEMA_VERSION, Manifest

    folder.mkdir(parents=True, exist_ok=True)
    pte = pte if pte is not None else b"\x1c\x00\x00\x00ET12" + payload
    (folder / "model.pte").write_bytes(pte)
    tok = tokenizer or {"version": "1.0", "added_tokens": [{"id": 0, "content": "<s>"}, {"id": 1, "content": "</s>"}],
                        "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "a": 2}, "merges": []}}
    tok_bytes = json.dumps(tok).encode()
    (folder / "tokenizer.json").write_bytes(tok_bytes)
    recipe = {"linear": "8da4w", "group_size": 32, "embedding": "4w", "embedding_group_size": 64, "output": "linear"}
    data = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "model": {"id": "tiny/llama", "kind": "hub", "architecture": "llama", "weights_sha256": "0" * 64,
                  "parameters": 1000},
        "profile": {"id": "sm8650", "name": "Snapdragon 8 Gen 3", "vendor": "qualcomm"},
        "recipe": {"spec": recipe, "label": "8da4w-g32+emb4w-g64", "applied": {}},
        "max_seq_len": 1024,
        "context": {"requested": 1024, "model_limit": 2048, "capped": False},
        "pte": {"file": "model.pte", "bytes": len(pte), "sha256": hashlib.sha256(pte).hexdigest()},
        "tokenizer": {"file": "tokenizer.json", "bytes": len(tok_bytes), "sha256": hashlib.sha256(tok_bytes).hexdigest(),
                      "bos_id": 0, "eos_ids": [1]},
        "bf16_bytes": 2 * len(pte), "size_reduction": 2.0, "chat_template": None, "threads": 6,
        "cpu_set": [2, 3, 4, 5, 6, 7], "vocab_size": 3, "n_layers": 2,
        "dims": {"hidden": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "intermediate": 128,
                 "windows": [None, None]},
        "weight_bytes_per_token": 60_000,
        "versions": {"exporter": "0.1.0", "executorch": "1.5.1", "torch": "2.13.0", "torchao": "0.18.0"},
        "export": {"wall_s": 1.0, "peak_rss_bytes": 1, "stages_s": {}, "delegated_calls": 1, "non_delegated_ops": {}},
        "overrides": {},
    }
    for key, value in fields.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    Manifest.model_validate(data).save(folder)
    return folder
