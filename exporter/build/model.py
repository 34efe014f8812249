"""An exportable decoder with a static KV cache, built from a Hugging Face causal LM's config and weights.

Why not export the transformers module itself: its cache and attention stay ATen ops, which decode at a
fraction of the speed of ExecuTorch's fused `llama::custom_sdpa` / `llama::update_cache` kernels (measured
in docs/benchmarks.md). The families below share one layer shape (pre-norm, RoPE, GQA attention, gated MLP)
and differ only in a few switches, so one small module covers all of them. Rotary tables come from the
transformers model's own rotary embedding, so every rope scaling type it supports (llama3, yarn, longrope,
dynamic) is honoured without re-implementing it.

Calling convention of the exported `forward` (what ExecuTorch's stock LLM runners expect):
    tokens: int64 [1, S], input_pos: int64 [1]  ->  logits: float32 [1, vocab] (last position only)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelError


@dataclass(frozen=True)
class ArchSpec:
    """What distinguishes one supported family from another."""

    family: str
    qkv_bias: bool = False  # Qwen2: biases on q/k/v
    qk_norm: bool = False  # Qwen3: RMSNorm on each head of q and k
    fused_qkv: bool = False  # Phi-3: one qkv_proj
    fused_gate_up: bool = False  # Phi-3: one gate_up_proj


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama"),
    "mistral": ArchSpec("mistral"),
    "qwen2": ArchSpec("qwen2", qkv_bias=True),
    "qwen3": ArchSpec("qwen3", qk_norm=True),
    "phi3": ArchSpec("phi3", fused_qkv=True, fused_gate_up=True),
}


def arch_spec(config) -> ArchSpec:
    model_type = getattr(config, "model_type", None)
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        raise ModelError(
            f"unsupported architecture '{model_type}'",
            hint=f"supported model types: {', '.join(sorted(ARCHITECTURES))}",
        )
    return spec


class RMSNorm(nn.Module):
    """RMSNorm whose mean of squares is a matmul with a constant 1/dim row.

    XNNPACK delegates `mean` only over the inner dims of 4-D tensors; a plain `mean(-1)` would stay on the
    portable CPU kernels and cut the delegated graph in two at every norm (twice per layer), which costs
    both runtime and minutes of lowering (each XNNPACK partition is preprocessed separately).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("mean_row", torch.full((1, dim), 1.0 / dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = nn.functional.linear(x * x, self.mean_row)
        return self.weight * (x * torch.rsqrt(ms + self.eps))


def rotate_half_matrix(head_dim: int, rot_dim: int) -> torch.Tensor:
    """R with x @ R.T == rotate_half(x) on the first rot_dim lanes and 0 elsewhere.

    A matmul instead of slice+neg+cat: slices of a dynamic-length tensor are not delegated to XNNPACK.
    """
    half = rot_dim // 2
    r = torch.zeros(head_dim, head_dim)
    idx = torch.arange(half)
    r[idx, idx + half] = -1.0
    r[idx + half, idx] = 1.0
    return r


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    # x: [1, S, H, D]; cos/sin: [S, 1, D] (padded with 1/0 past a partial rotary dim).
    return x * cos + nn.functional.linear(x, rot) * sin


class Attention(nn.Module):
    def __init__(
        self, spec: ArchSpec, dim: int, n_heads: int, n_kv_heads: int, head_dim: int, max_seq_len: int, eps: float
    ):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(dim, n_heads * head_dim, bias=spec.qkv_bias)
        self.k_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=spec.qkv_bias)
        self.v_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim, eps) if spec.qk_norm else None
        self.k_norm = RMSNorm(head_dim, eps) if spec.qk_norm else None
        # Layout [batch, seq, kv_heads, head_dim] is what llama::update_cache / custom_sdpa take.
        self.register_buffer("k_cache", torch.zeros(1, max_seq_len, n_kv_heads, head_dim), persistent=False)
        self.register_buffer("v_cache", torch.zeros(1, max_seq_len, n_kv_heads, head_dim), persistent=False)

    def forward(self, x, cos, sin, rot, start_pos: int):
        seq = x.shape[1]
        q = self.q_proj(x).view(1, seq, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(1, seq, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(1, seq, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _apply_rope(q, cos, sin, rot), _apply_rope(k, cos, sin, rot)
        torch.ops.llama.update_cache(k, self.k_cache, start_pos)
        torch.ops.llama.update_cache(v, self.v_cache, start_pos)
        out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start_pos, None, 0.0, True, self.head_dim**-0.5)
        return self.o_proj(out.reshape(1, seq, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        self.act = act

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, spec, cfg, head_dim: int, max_seq_len: int, act):
        super().__init__()
        eps = cfg.rms_norm_eps
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps)
        self.self_attn = Attention(
            spec, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads,
            head_dim, max_seq_len, eps,
        )
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, act)

    def forward(self, x, cos, sin, rot, start_pos: int):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, rot, start_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class StaticCacheLM(nn.Module):
    """Decoder-only LM with a static KV cache of `max_seq_len` slots, one forward for prefill and decode."""

    def __init__(self, spec: ArchSpec, cfg, max_seq_len: int, rope_cos: torch.Tensor, rope_sin: torch.Tensor, act):
        super().__init__()
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.spec = spec
        self.max_seq_len = max_seq_len
        self.vocab_size = cfg.vocab_size
        self.n_layers = cfg.num_hidden_layers
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        rot_dim = rope_cos.shape[-1]
        self.layers = nn.ModuleList(Block(spec, cfg, head_dim, max_seq_len, act) for _ in range(cfg.num_hidden_layers))
        # One table shared by every layer: a buffer per layer would be stored 30 times in the .pte.
        self.register_buffer("rot", rotate_half_matrix(head_dim, rot_dim), persistent=False)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        pad = head_dim - rot_dim
        cos = torch.cat([rope_cos, torch.ones(max_seq_len, pad)], dim=-1) if pad else rope_cos
        sin = torch.cat([rope_sin, torch.zeros(max_seq_len, pad)], dim=-1) if pad else rope_sin
        # [max_seq_len, 1, head_dim]: a narrow along dim 0 broadcasts over heads without an unsqueeze per layer.
        self.register_buffer("rope_cos", cos.unsqueeze(1).contiguous(), persistent=False)
        self.register_buffer("rope_sin", sin.unsqueeze(1).contiguous(), persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        start_pos = input_pos[0].item()
        torch._check_is_size(start_pos)
        torch._check(start_pos + seq <= self.max_seq_len)
        cos = self.rope_cos.narrow(0, start_pos, seq)
        sin = self.rope_sin.narrow(0, start_pos, seq)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, self.rot, start_pos)
        # Only the last position's logits: the lm_head over a whole prompt would dominate prefill.
        return self.lm_head(self.norm(x[:, -1, :]))

    def reset_cache(self) -> None:
        for layer in self.layers:
            layer.self_attn.k_cache.zero_()
            layer.self_attn.v_cache.zero_()


def _rope_tables(hf_model, max_seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    rotary = getattr(hf_model.model, "rotary_emb", None)
    if rotary is None:
        raise ModelError(f"{type(hf_model).__name__} has no rotary embedding module; cannot build RoPE tables")
    positions = torch.arange(max_seq_len).unsqueeze(0)
    probe = torch.zeros(1, dtype=torch.float32)
    with torch.no_grad():
        cos, sin = rotary(probe, positions)
    return cos[0].float().contiguous(), sin[0].float().contiguous()


def _activation(cfg):
    from transformers.activations import ACT2FN

    name = getattr(cfg, "hidden_act", "silu")
    if name not in ("silu", "swish", "gelu", "gelu_pytorch_tanh", "gelu_new"):
        raise ModelError(f"unsupported MLP activation '{name}'")
    return ACT2FN[name]


def build_static_lm(hf_model, max_seq_len: int) -> StaticCacheLM:
    """Copy a loaded transformers causal LM (fp32) into a StaticCacheLM of `max_seq_len` cache slots."""
    cfg = hf_model.config
    spec = arch_spec(cfg)
    window = getattr(cfg, "sliding_window", None)
    if window is not None and getattr(cfg, "use_sliding_window", True) and window < max_seq_len:
        raise ModelError(
            f"context length {max_seq_len} exceeds the model's sliding window {window}",
            hint=f"use --max-seq-len {window} or less",
        )
    cos, sin = _rope_tables(hf_model, max_seq_len)
    lm = StaticCacheLM(spec, cfg, max_seq_len, cos, sin, _activation(cfg))
    src = hf_model.state_dict()
    dst: dict[str, torch.Tensor] = {}
    for name, tensor in src.items():
        if name.startswith("model."):
            name = name[len("model."):]
        if spec.fused_qkv and name.endswith("self_attn.qkv_proj.weight"):
            base = name[: -len("qkv_proj.weight")]
            q_out = cfg.num_attention_heads * lm.layers[0].self_attn.head_dim
            kv_out = (tensor.shape[0] - q_out) // 2
            q, k, v = tensor.split([q_out, kv_out, kv_out], dim=0)
            dst.update({base + "q_proj.weight": q, base + "k_proj.weight": k, base + "v_proj.weight": v})
        elif spec.fused_gate_up and name.endswith("mlp.gate_up_proj.weight"):
            base = name[: -len("gate_up_proj.weight")]
            gate, up = tensor.chunk(2, dim=0)
            dst.update({base + "gate_proj.weight": gate, base + "up_proj.weight": up})
        elif "rotary_emb" in name:
            continue
        else:
            dst[name] = tensor
    if "lm_head.weight" not in dst:  # tied embeddings
        dst["lm_head.weight"] = dst["embed_tokens.weight"]
    missing, unexpected = lm.load_state_dict(dst, strict=False)
    missing = [m for m in missing if not m.endswith(("k_cache", "v_cache", "rope_cos", "rope_sin", "rot", "mean_row"))]
    if missing or unexpected:
        raise ModelError(
            f"weights of {spec.family} model do not fit the exporter's decoder: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    # Untie: the embedding and the output layer are quantized with different schemes.
    lm.lm_head.weight = nn.Parameter(lm.lm_head.weight.detach().clone())
    return lm.eval()
