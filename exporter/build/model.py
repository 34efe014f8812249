"""An exportable decoder with a static KV cache, built from a Hugging Face causal LM's config and weights.

Why not export the transformers module itself: its cache and attention stay ATen ops, which decode at a
fraction of the speed of ExecuTorch's fused `llama::custom_sdpa` / `llama::update_cache` kernels (measured
in docs/benchmarks.md). The supported families share one layer shape (pre-norm, RoPE, GQA attention, gated MLP)
and differ in switches listed as data in families.py, so one small module covers all of them. Rotary tables
come from the transformers model's own rotary embedding, so every rope scaling type it supports (llama3,
yarn, longrope, dynamic) is honoured without re-implementing it.

Sliding-window layers (Gemma 2/3, Mistral, Phi-3, Qwen2 with use_sliding_window) keep a full-length cache but
attend only to its last `window + seq - 1` slots under an additive mask that hides everything older than the
window: exact at every length up to the context length, with attention work bounded by the window (the KV
memory stays full length: no ring buffer; see docs/models.md).

An int8 KV cache (recipe kv_cache "int8") follows ExecuTorch's own llama example (QuantizedKVCache +
QuantizedSDPA): each new key/value row is quantized per token and head (asymmetric int8, one fp32 scale and one
int8 zero point per row), stored with `llama::update_cache`, and `llama::custom_quantized_sdpa` reads the int8
codes directly, with the query quantized the same way. Every op has an out-variant in the stock runtime
(llama custom ops + quantized kernels), so the stock runners and the native harness run it unchanged.

Calling convention of the exported `forward` (what ExecuTorch's stock LLM runners expect):
    tokens: int64 [1, S], input_pos: int64 [1]  ->  logits: float32 [1, vocab] (last position only)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .recipes import kv_cache_bytes
from .families import DecoderSpec, Family, check_kv_cache, family_of, resolve

# Masked logits get the most negative float, as transformers' eager masks do: exp() of it is exactly 0 once a
# visible key is in the row, and no inf - inf can arise in custom_sdpa's blockwise softmax (blocks of 512 keys
# wholly outside a window are tested in test_families.py).
MASKED = torch.finfo(torch.float32).min


def arch_spec(config) -> Family:
    return family_of(config)


class RMSNorm(nn.Module):
    """RMSNorm whose mean of squares is a matmul with a constant 1/dim row.

    XNNPACK delegates `mean` only over the inner dims of 4-D tensors; a plain `mean(-1)` would stay on the
    portable CPU kernels and cut the delegated graph in two at every norm (twice per layer), which costs
    both runtime and minutes of lowering (each XNNPACK partition is preprocessed separately).
    Gemma's (1 + w) scale is folded into `weight` at load time (the same fp32 add transformers does).
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


def window_mask(start_pos, seq: int, window: int, first, width) -> torch.Tensor:
    """Additive mask [seq, width] over cache slots first .. first + width - 1: query start_pos + i sees slot j
    iff 0 <= start_pos + i - j < window.

    The same rule as transformers' sliding_window_overlay (kv_idx > q_idx - sliding_window) plus causality.
    custom_sdpa (executorch 1.5.1), given a mask, checks mask.size(1) against the length of the cache it is
    handed and reads all of it, so the mask spans exactly the slots passed.
    """
    q_pos = torch.arange(seq).unsqueeze(1) + start_pos
    k_pos = torch.arange(width).unsqueeze(0) + first
    dist = q_pos - k_pos
    return torch.where((dist >= 0) & (dist < window), 0.0, MASKED)


def window_span(start_pos, seq: int, window: int, cache_len: int):
    """The cache slots a block of queries start_pos .. start_pos + seq - 1 can see: (first, width).

    A window shorter than the cache reads only the last window + seq - 1 slots, so a sliding layer's
    attention costs O(window) per token at every position, like a ring buffer (the memory is not saved).
    The softcapped path and full layers read from slot 0.
    """
    if window >= cache_len:
        return 0, cache_len
    first = torch.sym_max(0, start_pos - window + 1)
    width = start_pos + seq - first
    # Facts the tracer cannot derive through Max() but later passes of the lowering ask for.
    torch._check(width >= 1)
    torch._check(width >= seq)
    torch._check(width <= window + seq - 1)
    return first, width


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int8 codes of x [1, S, H, D] with one fp32 scale and one int8 zero point per (position, head): [1, S, H, 1]."""
    scales, zero_points = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric.default(x, torch.int8)
    codes = torch.ops.quantized_decomposed.quantize_per_token(x, scales, zero_points, -128, 127, torch.int8)
    return codes, scales.to(torch.float32), zero_points.to(torch.int8)


def spec_kv_cache_bytes(spec: DecoderSpec, max_seq_len: int, kv_cache: str) -> int:
    return kv_cache_bytes(spec.n_layers, spec.n_kv_heads, spec.head_dim, max_seq_len, kv_cache)


class Attention(nn.Module):
    def __init__(self, spec: DecoderSpec, layer: int, max_seq_len: int, bias: dict[str, bool], kv_cache: str):
        super().__init__()
        dim, hd = spec.hidden, spec.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = spec.n_heads, spec.n_kv_heads, hd
        self.scale = spec.attn_scale
        self.softcap = spec.attn_softcap
        self.use_rope = spec.rope_keys[layer] is not None
        self.q_proj = nn.Linear(dim, spec.n_heads * hd, bias=bias["q_proj"])
        self.k_proj = nn.Linear(dim, spec.n_kv_heads * hd, bias=bias["k_proj"])
        self.v_proj = nn.Linear(dim, spec.n_kv_heads * hd, bias=bias["v_proj"])
        self.o_proj = nn.Linear(spec.n_heads * hd, dim, bias=bias["o_proj"])
        self.q_norm = RMSNorm(hd, spec.eps) if spec.family.qk_norm else None
        self.k_norm = RMSNorm(hd, spec.eps) if spec.family.qk_norm else None
        # Layout [batch, seq, kv_heads, head_dim] is what llama::update_cache / custom_sdpa take.
        self.int8_kv = kv_cache == "int8"
        dtype = torch.int8 if self.int8_kv else torch.float32
        self.register_buffer("k_cache", torch.zeros(1, max_seq_len, spec.n_kv_heads, hd, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(1, max_seq_len, spec.n_kv_heads, hd, dtype=dtype), persistent=False)
        if self.int8_kv:
            row = (1, max_seq_len, spec.n_kv_heads, 1)
            self.register_buffer("k_scales", torch.ones(row), persistent=False)
            self.register_buffer("v_scales", torch.ones(row), persistent=False)
            self.register_buffer("k_zero_points", torch.zeros(row, dtype=torch.int8), persistent=False)
            self.register_buffer("v_zero_points", torch.zeros(row, dtype=torch.int8), persistent=False)

    def forward(self, x, cos, sin, rot, start_pos: int, mask):
        seq = x.shape[1]
        q = self.q_proj(x).view(1, seq, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(1, seq, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(1, seq, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            q, k = _apply_rope(q, cos, sin, rot), _apply_rope(k, cos, sin, rot)
        if self.int8_kv:
            out = self._int8_attention(q, k, v, start_pos, mask)
            return self.o_proj(out.reshape(1, seq, self.n_heads * self.head_dim))
        torch.ops.llama.update_cache(k, self.k_cache, start_pos)
        torch.ops.llama.update_cache(v, self.v_cache, start_pos)
        if self.softcap is not None:
            out = self._softcapped(q, start_pos, seq, mask[2])
        elif mask is None:
            out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start_pos, None, 0.0, True, self.scale)
        else:
            first, width, m = mask
            k = self.k_cache.narrow(1, first, width)
            v = self.v_cache.narrow(1, first, width)
            out = torch.ops.llama.custom_sdpa(q, k, v, start_pos - first, m, 0.0, False, self.scale)
        return self.o_proj(out.reshape(1, seq, self.n_heads * self.head_dim))

    def _int8_attention(self, q, k, v, start_pos, mask):
        """Quantize the new rows into the int8 cache and attend over the codes (custom_sdpa's two paths)."""
        k_codes, k_scales, k_zero_points = quantize_per_token(k)
        v_codes, v_scales, v_zero_points = quantize_per_token(v)
        caches = (self.k_cache, self.v_cache, self.k_scales, self.v_scales, self.k_zero_points, self.v_zero_points)
        for row, cache in zip((k_codes, v_codes, k_scales, v_scales, k_zero_points, v_zero_points), caches):
            torch.ops.llama.update_cache(row, cache, start_pos)
        q_codes, q_scales, q_zero_points = quantize_per_token(q)
        if mask is None:
            pos, m, causal = start_pos, None, True
        else:
            first, width, m = mask
            caches = tuple(c.narrow(1, first, width) for c in caches)
            pos, causal = start_pos - first, False
        kc, vc, ks, vs, kz, vz = caches
        return torch.ops.llama.custom_quantized_sdpa(q_codes, kc, vc, pos, m, 0.0, causal, self.scale,
                                                     q_zero_points, q_scales, kz, ks, vz, vs)

    def _softcapped(self, q, start_pos, seq: int, mask):
        """Attention with tanh-capped logits (Gemma 2) in plain ATen ops: custom_sdpa has no softcap."""
        kv, rep, hd = self.n_kv_heads, self.n_heads // self.n_kv_heads, self.head_dim
        length = self.k_cache.shape[1]  # the whole cache, like custom_sdpa with a mask; the mask hides the rest
        k = self.k_cache.transpose(1, 2)  # [1, kv, L, D]
        v = self.v_cache.transpose(1, 2)
        # Query head h reads kv head h // rep (transformers' repeat_kv); group the rep heads of a kv head.
        qg = q.view(1, seq, kv, rep, hd).permute(0, 2, 3, 1, 4).reshape(1, kv, rep * seq, hd)
        scores = torch.matmul(qg, k.transpose(2, 3)) * self.scale
        scores = torch.tanh(scores / self.softcap) * self.softcap
        scores = scores.view(1, kv, rep, seq, length) + mask
        probs = torch.softmax(scores, dim=-1).view(1, kv, rep * seq, length)
        out = torch.matmul(probs, v).view(1, kv, rep, seq, hd)
        return out.permute(0, 3, 1, 2, 4)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act, bias: bool):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.act = act

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, spec: DecoderSpec, layer: int, max_seq_len: int, act, bias: dict[str, bool], kv_cache: str):
        super().__init__()
        dim, eps = spec.hidden, spec.eps
        self.input_layernorm = RMSNorm(dim, eps)
        self.self_attn = Attention(spec, layer, max_seq_len, bias, kv_cache)
        # Llama naming: post_attention_layernorm is the norm before the MLP. Gemma naming: it is the norm
        # of the attention output, and the MLP is wrapped by pre_/post_feedforward_layernorm.
        self.post_attention_layernorm = RMSNorm(dim, eps)
        self.sandwich = spec.family.sandwich_norms
        if self.sandwich:
            self.pre_feedforward_layernorm = RMSNorm(dim, eps)
            self.post_feedforward_layernorm = RMSNorm(dim, eps)
        self.mlp = MLP(dim, spec.intermediate, act, bias["mlp"])
        self.residual_multiplier = spec.residual_multiplier

    def _residual(self, x, branch):
        return x + (branch * self.residual_multiplier if self.residual_multiplier is not None else branch)

    def forward(self, x, cos, sin, rot, start_pos: int, mask):
        attn = self.self_attn(self.input_layernorm(x), cos, sin, rot, start_pos, mask)
        if self.sandwich:
            x = self._residual(x, self.post_attention_layernorm(attn))
            return self._residual(x, self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x))))
        x = self._residual(x, attn)
        return self._residual(x, self.mlp(self.post_attention_layernorm(x)))


class StaticCacheLM(nn.Module):
    """Decoder-only LM with a static KV cache of `max_seq_len` slots, one forward for prefill and decode."""

    def __init__(self, spec: DecoderSpec, max_seq_len: int, rope: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 act, bias: dict[str, bool], kv_cache: str = "fp32"):
        super().__init__()
        check_kv_cache(spec.family, kv_cache)
        head_dim = spec.head_dim
        self.spec = spec
        self.max_seq_len = max_seq_len
        self.kv_cache = kv_cache
        self.vocab_size = spec.vocab
        self.n_layers = spec.n_layers
        self.all_logits = False  # `exporter plan` scores every position eagerly; exports keep the last only
        self.embed_tokens = nn.Embedding(spec.vocab, spec.hidden)
        self.layers = nn.ModuleList(Block(spec, i, max_seq_len, act, bias, kv_cache) for i in range(spec.n_layers))
        self.norm = RMSNorm(spec.hidden, spec.eps)
        self.lm_head = nn.Linear(spec.hidden, spec.vocab, bias=False)
        # A window at least as long as the cache hides nothing: those layers take custom_sdpa's causal path.
        # Softcapped attention builds its masks itself, so it needs one even for full layers.
        self.mask_windows: tuple[int | None, ...] = tuple(
            w if w is not None and w < max_seq_len else (max_seq_len if spec.attn_softcap is not None else None)
            for w in spec.windows
        )
        self.rope_names = spec.rope_tables()
        rot_dims = {rope[name][0].shape[-1] for name in self.rope_names}
        if len(rot_dims) > 1:
            raise ModelError(f"RoPE tables of different widths {sorted(rot_dims)} are not supported")
        rot_dim = rot_dims.pop() if rot_dims else head_dim
        # One table per RoPE kind shared by every layer: a buffer per layer would be stored n_layers times.
        self.register_buffer("rot", rotate_half_matrix(head_dim, rot_dim), persistent=False)
        pad = head_dim - rot_dim
        for i, name in enumerate(self.rope_names):
            cos, sin = rope[name]
            if pad:
                cos = torch.cat([cos, torch.ones(max_seq_len, pad)], dim=-1)
                sin = torch.cat([sin, torch.zeros(max_seq_len, pad)], dim=-1)
            # [max_seq_len, 1, head_dim]: a narrow along dim 0 broadcasts over heads without an unsqueeze.
            suffix = "" if i == 0 else f"_{i}"
            self.register_buffer(f"rope_cos{suffix}", cos.unsqueeze(1).contiguous(), persistent=False)
            self.register_buffer(f"rope_sin{suffix}", sin.unsqueeze(1).contiguous(), persistent=False)
        self.layer_rope = tuple(
            None if key is None else self.rope_names.index(key) for key in spec.rope_keys
        )

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        start_pos = input_pos[0].item()
        torch._check_is_size(start_pos)
        torch._check(start_pos + seq <= self.max_seq_len)
        tables = []
        for i in range(len(self.rope_names)):
            suffix = "" if i == 0 else f"_{i}"
            tables.append((getattr(self, f"rope_cos{suffix}").narrow(0, start_pos, seq),
                           getattr(self, f"rope_sin{suffix}").narrow(0, start_pos, seq)))
        masks = {}
        for w in set(self.mask_windows):
            if w is not None:
                # the softcapped path reads the whole cache
                first, width = (0, self.max_seq_len) if self.spec.attn_softcap is not None else \
                    window_span(start_pos, seq, w, self.max_seq_len)
                masks[w] = (first, width, window_mask(start_pos, seq, w, first, width))
        x = self.embed_tokens(tokens)
        if self.spec.embed_scale is not None:
            x = x * self.spec.embed_scale
        for layer, rope_idx, w in zip(self.layers, self.layer_rope, self.mask_windows):
            cos, sin = tables[rope_idx] if rope_idx is not None else (None, None)
            x = layer(x, cos, sin, self.rot, start_pos, masks.get(w) if w is not None else None)
        # Only the last position's logits: the lm_head over a whole prompt would dominate prefill.
        logits = self.lm_head(self.norm(x if self.all_logits else x[:, -1, :]))
        if self.spec.logits_divisor is not None:
            logits = logits / self.spec.logits_divisor
        if self.spec.final_softcap is not None:
            logits = torch.tanh(logits / self.spec.final_softcap) * self.spec.final_softcap
        return logits

    def reset_cache(self) -> None:
        for layer in self.layers:
            for name, buf in layer.self_attn.named_buffers(recurse=False):  # not k_norm.mean_row
                if name.startswith(("k_", "v_")):
                    buf.zero_()


def _rope_tables(hf_model, spec: DecoderSpec, max_seq_len: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    rotary = getattr(hf_model.model, "rotary_emb", None)
    if rotary is None:
        raise ModelError(f"{type(hf_model).__name__} has no rotary embedding module; cannot build RoPE tables")
    positions = torch.arange(max_seq_len).unsqueeze(0)
    probe = torch.zeros(1, dtype=torch.float32)
    tables = {}
    with torch.no_grad():
        for name in spec.rope_tables():
            if spec.family.rope_per_layer_type:
                cos, sin = rotary(probe, positions, name)
            else:
                cos, sin = rotary(probe, positions)
            tables[name] = (cos[0].float().contiguous(), sin[0].float().contiguous())
    return tables


def _activation(name: str):
    from transformers.activations import ACT2FN

    return ACT2FN[name]


def _split_fused(spec: DecoderSpec, name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    fam = spec.family
    if fam.fused_qkv and ".self_attn.qkv_proj." in name:
        base, kind = name.rsplit("qkv_proj.", 1)
        q_out = spec.n_heads * spec.head_dim
        kv_out = (tensor.shape[0] - q_out) // 2
        q, k, v = tensor.split([q_out, kv_out, kv_out], dim=0)
        return {f"{base}q_proj.{kind}": q, f"{base}k_proj.{kind}": k, f"{base}v_proj.{kind}": v}
    if fam.fused_gate_up and ".mlp.gate_up_proj." in name:
        base, kind = name.rsplit("gate_up_proj.", 1)
        gate, up = tensor.chunk(2, dim=0)
        return {f"{base}gate_proj.{kind}": gate, f"{base}up_proj.{kind}": up}
    return {name: tensor}


def build_static_lm(hf_model, max_seq_len: int, kv_cache: str = "fp32") -> StaticCacheLM:
    """Copy a loaded transformers causal LM (fp32) into a StaticCacheLM of `max_seq_len` cache slots, with a
    KV cache stored as `kv_cache` (recipes.KV_CACHE_DTYPES)."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  the decoder calls llama::* ops eagerly too
    import executorch.kernels.quantized  # noqa: F401  quantized_decomposed::*_per_token (int8 KV cache), with out-variants

    spec = resolve(hf_model.config)
    src: dict[str, torch.Tensor] = {}
    for name, tensor in hf_model.state_dict().items():
        if name.startswith("model."):
            name = name[len("model."):]
        if "rotary_emb" in name:
            continue
        src.update(_split_fused(spec, name, tensor))
    # Biases follow the checkpoint (attention_bias / mlp_bias / Qwen2's q/k/v biases), not a guess.
    bias = {p: f"layers.0.self_attn.{p}.bias" in src for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    bias["mlp"] = "layers.0.mlp.gate_proj.bias" in src
    rope = _rope_tables(hf_model, spec, max_seq_len)
    from transformers.initialization import no_init_weights

    # Every weight is replaced by a loaded one below: random initialisation would only touch (and keep) memory.
    with no_init_weights():
        lm = StaticCacheLM(spec, max_seq_len, rope, _activation(spec.activation), bias, kv_cache)
    if "lm_head.weight" not in src:  # tied embeddings
        src["lm_head.weight"] = src["embed_tokens.weight"]
    if spec.family.norm_plus_one:
        src = {k: (v + 1.0 if k.endswith("norm.weight") else v) for k, v in src.items()}
    # assign: the decoder takes the loaded tensors over instead of copying them (the export's peak memory).
    missing, unexpected = lm.load_state_dict(src, strict=False, assign=True)
    missing = [m for m in missing if not m.endswith(("k_cache", "v_cache", "rot", "mean_row"))
               and ".rope_" not in f".{m}"]
    if missing or unexpected:
        raise ModelError(
            f"weights of {spec.family.family} model do not fit the exporter's decoder: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    # Untie: the embedding and the output layer are quantized with different schemes.
    lm.lm_head.weight = nn.Parameter(lm.lm_head.weight.detach().clone())
    return lm.eval()
