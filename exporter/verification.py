"""Proof on the host: run the .pte with the ExecuTorch runtime and compare it with the eager model.

The .pte returns only the last position's logits (see model.py), so it is scored the way it runs on a
phone: one prefill call, then one decode call per token. The eager transformers model scores the same
tokens in one pass. Both see identical token ids; only the predictions both made are compared.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from .artifact import Artifact, VerificationRecord, top_token_id
from .errors import ArtifactError, VerificationError
from .quiet import native_logs

Progress = Callable[[str], None]


@dataclass(frozen=True)
class VerifyResult:
    folder: str
    recipe: str
    pte_bytes: int
    bf16_bytes: int
    size_reduction: float
    text: str
    chunks: int
    chunk_len: int
    prefill_len: int
    scored_tokens: int
    top1_agreement: float
    mean_kl: float
    ppl_eager: float
    ppl_pte: float
    host_prefill_tps: float
    host_decode_tps: float
    runner_ok: bool
    runner_text: str
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)

    def record(self) -> VerificationRecord:
        """What the manifest keeps of it."""
        return VerificationRecord(status="passed", top1_agreement=self.top1_agreement, mean_kl=self.mean_kl,
                                  ppl_eager=self.ppl_eager, ppl_pte=self.ppl_pte, runner_ok=self.runner_ok)


def load_runtime_program(pte: Path):
    """Load a .pte with the ExecuTorch Python runtime, with the kernels our exports use registered first.

    Callers pass a file that Artifact.open checked (ExecuTorch identifier, manifest size and hash): the
    runtime's loader logs a bad file's header bytes, which aborts the process when they are not UTF-8.
    """
    with native_logs() as logs:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  llama::custom_sdpa / update_cache
        import executorch.kernels.quantized  # noqa: F401  quantized_decomposed::embedding_4bit etc.
        from executorch.runtime import Runtime, Verification

        try:
            return Runtime.get().load_program(str(pte), verification=Verification.InternalConsistency)
        except Exception as err:  # the binding raises RuntimeError with ExecuTorch's error code
            said = _last_line(logs())
            raise VerificationError(f"ExecuTorch could not load {pte}: {err}" + (f" ({said})" if said else ""),
                                    hint="the file is damaged or was written by another ExecuTorch release; re-export") from None


class PteDecoder:
    """Prefill + token-by-token decode over a .pte's `forward(tokens, input_pos)`."""

    def __init__(self, pte: Path):
        program = load_runtime_program(pte)
        with native_logs():  # XNNPACK's first init logs what cpuinfo could not read (harmless on x86)
            try:
                self.forward = program.load_method("forward")
                # get_max_seq_len: tokens per call; get_max_context_len: cache slots (older exports: equal)
                self.prefill_chunk = int(program.load_method("get_max_seq_len").execute([])[0])
                methods = program.method_names
                self.max_seq_len = (int(program.load_method("get_max_context_len").execute([])[0])
                                    if "get_max_context_len" in methods else self.prefill_chunk)
                self.vocab_size = int(program.load_method("get_vocab_size").execute([])[0])
            except Exception as err:
                raise VerificationError(f"{pte} lacks the methods exporter writes (forward, get_max_seq_len, "
                                        f"get_vocab_size): {err}", hint="re-export it with `exporter export`") from None
            if not 1 <= self.prefill_chunk <= self.max_seq_len:
                raise VerificationError(f"{pte} takes {self.prefill_chunk} tokens per call with a context of "
                                        f"{self.max_seq_len}", hint="re-export it with `exporter export`")
        self.prefill_s = 0.0
        self.prefill_tokens = 0
        self.decode_s = 0.0
        self.decode_tokens = 0

    def _call(self, ids, pos: int):
        import torch

        out = self.forward.execute([torch.tensor([ids], dtype=torch.long), torch.tensor([pos], dtype=torch.long)])[0]
        return out.reshape(-1, out.shape[-1])[-1].clone()

    def score(self, ids: list[int], prefill_len: int):
        """Logits predicting ids[prefill_len..] (and one past the end), [len(ids) - prefill_len + 1, vocab]."""
        import torch

        if len(ids) > self.max_seq_len:
            raise VerificationError(f"chunk of {len(ids)} tokens exceeds the .pte's context of {self.max_seq_len}")
        t0 = time.perf_counter()
        for start in range(0, prefill_len, self.prefill_chunk):  # as the runners split a long prompt
            last = self._call(ids[start:min(start + self.prefill_chunk, prefill_len)], start)
        rows = [last]
        t1 = time.perf_counter()
        for pos in range(prefill_len, len(ids)):
            rows.append(self._call(ids[pos : pos + 1], pos))
        t2 = time.perf_counter()
        self.prefill_s += t1 - t0
        self.prefill_tokens += prefill_len
        self.decode_s += t2 - t1
        self.decode_tokens += len(ids) - prefill_len
        return torch.stack(rows)


def compare_logits(eager, pte, targets, *, rows_per_slice: int = 64) -> dict:
    """Top-1 agreement, mean KL(eager || pte) and the negative log-likelihoods of `targets` under both.

    Computed in float64 a slice of positions at a time: with a 262k vocabulary (Gemma 3) whole-chunk float64
    copies took over 20 GB for a 1024-token chunk."""
    import torch

    totals = {"agree": 0, "kl_sum": 0.0, "nll_eager": 0.0, "nll_pte": 0.0, "n": len(targets)}
    for start in range(0, len(targets), rows_per_slice):
        stop = min(start + rows_per_slice, len(targets))
        e, p = eager[start:stop].double(), pte[start:stop].double()
        logp_e = torch.log_softmax(e, -1)
        logp_p = torch.log_softmax(p, -1)
        idx = torch.tensor(targets[start:stop]).unsqueeze(-1)
        totals["agree"] += int((e.argmax(-1) == p.argmax(-1)).sum())
        totals["kl_sum"] += float((logp_e.exp() * (logp_e - logp_p)).sum())
        totals["nll_eager"] += float(-logp_e.gather(-1, idx).sum())
        totals["nll_pte"] += float(-logp_p.gather(-1, idx).sum())
    return totals


def token_chunks(ids: list[int], chunk_len: int, chunks: int) -> list[list[int]]:
    out = [ids[i : i + chunk_len] for i in range(0, len(ids), chunk_len)][:chunks]
    return [c for c in out if len(c) >= 2]


def verify_folder(
    folder: str | Path | Artifact,
    *,
    text: str | None = None,
    text_name: str = "built-in sample",
    chunk_len: int = 256,
    chunks: int = 4,
    prefill_len: int = 32,
    runner_tokens: int = 8,
    min_agreement: float | None = None,
    progress: Progress = lambda s: None,
) -> VerifyResult:
    """Score an export folder's .pte against its eager source model.

    The folder is checked first (manifest, file sizes and sha256, the model's weights against the hash the
    manifest recorded, the tokenizer's ids against the .pte's vocabulary), so nothing runs on a folder that is
    not what it says. VerificationError when the .pte is below `min_agreement` or the stock runner fails.
    """
    import torch

    from .build.source import load_model, load_tokenizer, resolve_source, sample_text, weights_sha256

    art = folder if isinstance(folder, Artifact) else Artifact.open(folder)
    manifest = art.manifest
    progress("checking the export folder")
    art.check_hashes()
    source = resolve_source(None if manifest.model.kind == "builtin" else manifest.model.id)
    weights = weights_sha256(source)
    if weights != manifest.model.weights_sha256:
        raise VerificationError(
            f"{source.id} is not the model {art.pte_path} was exported from (weights sha256 {weights[:12]}…, "
            f"manifest {manifest.model.weights_sha256[:12]}…)",
            hint="restore the original model at that path, or re-export from this one")
    decoder = PteDecoder(art.pte_path)
    _check_vocabulary(art, decoder.vocab_size)
    text = sample_text() if text is None else text

    progress("loading the eager model")
    eager = load_model(source)
    tokenizer = load_tokenizer(source)
    chunk_len = min(chunk_len, decoder.max_seq_len)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    parts = token_chunks(ids, chunk_len, chunks)
    if not parts:
        raise VerificationError("the evaluation text is too short (fewer than 2 tokens)")
    prefill_len = max(1, min(prefill_len, min(len(p) for p in parts) - 1))

    totals = {"agree": 0, "kl_sum": 0.0, "nll_eager": 0.0, "nll_pte": 0.0, "n": 0}
    for i, part in enumerate(parts):
        progress(f"scoring chunk {i + 1}/{len(parts)} ({len(part)} tokens)")
        with torch.no_grad():
            eager_logits = eager(torch.tensor([part])).logits[0, prefill_len - 1 : len(part) - 1].float()
        pte_logits = decoder.score(part, prefill_len)[:-1]
        stats = compare_logits(eager_logits, pte_logits, part[prefill_len:])
        for key in totals:
            totals[key] += stats[key]
    del eager

    progress("generating with ExecuTorch's stock LLM runner")
    runner_text, runner_ok = run_stock_runner(art.pte_path, art.tokenizer_path, runner_tokens)

    n = totals["n"]
    result = VerifyResult(
        folder=str(art.folder),
        recipe=manifest.recipe.label,
        pte_bytes=manifest.pte.bytes,
        bf16_bytes=manifest.bf16_bytes,
        size_reduction=manifest.size_reduction,
        text=text_name,
        chunks=len(parts),
        chunk_len=chunk_len,
        prefill_len=prefill_len,
        scored_tokens=n,
        top1_agreement=round(totals["agree"] / n, 4),
        mean_kl=round(totals["kl_sum"] / n, 5),
        ppl_eager=round(math.exp(totals["nll_eager"] / n), 3),
        ppl_pte=round(math.exp(totals["nll_pte"] / n), 3),
        host_prefill_tps=round(decoder.prefill_tokens / decoder.prefill_s, 1),
        host_decode_tps=round(decoder.decode_tokens / decoder.decode_s, 1),
        runner_ok=runner_ok,
        runner_text=runner_text,
        threads=torch.get_num_threads(),
    )
    if min_agreement is not None and result.top1_agreement < min_agreement:
        raise VerificationError(f"top-1 agreement {result.top1_agreement:.3f} < {min_agreement:.3f} vs the eager model")
    if not runner_ok:
        raise VerificationError(f"ExecuTorch's stock LLM runner could not run {art.pte_path}: {runner_text}")
    return result


def _check_vocabulary(art: Artifact, pte_vocab: int) -> None:
    """The .pte, its manifest and the tokenizer beside it must agree on the vocabulary."""
    if pte_vocab != art.manifest.vocab_size:
        raise ArtifactError(f"{art.pte_path} has a vocabulary of {pte_vocab}, its manifest says "
                            f"{art.manifest.vocab_size}", hint="re-export the folder")
    top = top_token_id(art.tokenizer_path)
    if top >= pte_vocab:
        raise VerificationError(f"{art.tokenizer_path} has token ids up to {top}, but the .pte's vocabulary has "
                                f"{pte_vocab} entries: it is not this model's tokenizer",
                                hint="restore the export's tokenizer.json, or re-export")


@contextmanager
def _stdout_to(fd: int) -> Iterator[None]:
    """Send file descriptor 1 to `fd` while the block runs (the C++ runner writes straight to it)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_stock_runner(pte: Path, tokenizer: Path, max_new_tokens: int, prompt: str = "Once upon a time") -> tuple[str, bool]:
    """Generate a few tokens through executorch.extension.llm.runner.TextLLMRunner (the C++ runner's binding).

    No token callback: the binding turns each token into a Python str and fails on a token that is part of a
    UTF-8 sequence (every multilingual or emoji model has them). Without one, the runner writes the token
    bytes to stdout, which is captured here and decoded as a whole.
    """
    with tempfile.TemporaryFile() as sink, native_logs() as logs:
        # imported in here: the runner library's static initialisers log to stderr ("Registering override
        # fallback regex") when it loads
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        import executorch.kernels.quantized  # noqa: F401
        from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

        try:
            with _stdout_to(sink.fileno()):
                runner = TextLLMRunner(str(pte), str(tokenizer))
                config = GenerationConfig(echo=False, max_new_tokens=max_new_tokens, temperature=0.0)
                runner.generate(prompt, config)
        except Exception as err:  # the binding raises RuntimeError with the ExecuTorch error text
            said = _last_line(logs())
            return f"{type(err).__name__}: {err}" + (f" ({said})" if said else ""), False
        sink.seek(0)
        raw = sink.read(1 << 20)
    return decode_runner_output(raw)


def _last_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def decode_runner_output(raw: bytes) -> tuple[str, bool]:
    """(generated text, whether the runner reported generated tokens) from what the stock runner printed:
    the tokens' bytes as they came, then a `PyTorchObserver {json}` stats line."""
    body, marker, stats_line = raw.rpartition(b"PyTorchObserver ")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = (decoder.decode(body if marker else raw) + decoder.decode(b"", final=True)).rstrip("\n")
    try:
        generated = int(json.loads(stats_line.splitlines()[0]).get("generated_tokens", 0)) if marker else 0
    except (ValueError, IndexError, AttributeError):
        generated = 0
    return text, generated > 0
