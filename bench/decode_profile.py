"""Benchmark: where a decode (and prefill) step of an export spends its time on this host, part by part.

Three measurements, each on the shapes of the export given (its manifest's `dims`):

- `linears`: as many linear weights as the decoder body has (random, in `hidden -> 8192` linears with the
  model's K) quantized with each weight scheme and lowered to XNNPACK alone, timed at M=1 (a decode step) and
  M=512 (a prefill of 512): how fast the XNNPACK kernel each scheme reaches on this CPU streams its weights;
- `attention`: ExecuTorch's `llama::custom_sdpa` at the export's head counts and context, n_layers calls per
  step, at several cache depths;
- `chunks`: a 512-token prompt prefilled through the `.pte` in one call and in chunks of 256, 128, 64;
- `threads`: the native harness at 1 and 2 threads (prefill of 512, 64 decode steps);
- `perf` (where `perf` is installed): the native harness on the export's `.pte` under `perf record`, samples
  grouped by shared library (XNNPACK, the optimized kernels that hold attention's GEMMs, the custom ops, the
  thread pool, the kernel).

Writes bench/results/decode_profile_<date>.json and a markdown summary on stdout. Numbers are this host's.

    .venv/bin/python bench/decode_profile.py --export DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "bench"))

from host_bench import loadavg, machine_info, versions  # noqa: E402

RESULTS = REPO / "bench" / "results"
SCHEMES = ("8da4w:32", "8da4w:64", "8da4w:0", "8da8w:0")
DEPTHS = (64, 128, 256, 511, 512, 640, 1000)
PREFILL_M = 512


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _median_min(run, reps: int) -> tuple[float, float]:
    for _ in range(3):
        run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def _lower(module, args, dynamic_shapes=None) -> bytes:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def _load(buffer: bytes, tmp: Path, name: str):
    from executorch.runtime import Runtime

    path = tmp / name
    path.write_bytes(buffer)
    return Runtime.get().load_program(path).load_method("forward")


def body_linears(dims: dict, n_layers: int, width: int = 8192):
    """As many `hidden -> width` linears as hold the decoder body's linear weights, all fed the same input.

    Wide linears with the model's K (its hidden size) instead of its 210 real ones: lowering this takes seconds,
    not minutes, and XNNPACK's kernel for a scheme is chosen by the weight layout, not by N. The weights add
    up to the body's (so a decode step streams them from memory, not from the last-level cache); each linear
    gets its own output, so no extra op sits between them.
    """
    from torch import nn

    hidden, inter = dims["hidden"], dims["intermediate"]
    q_out, kv_out = dims["n_heads"] * dims["head_dim"], dims["n_kv_heads"] * dims["head_dim"]
    per_layer = hidden * (2 * q_out + 2 * kv_out + 3 * inter)
    count = max(1, round(n_layers * per_layer / (hidden * width)))

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.linears = nn.ModuleList(nn.Linear(hidden, width, bias=False) for _ in range(count))

        def forward(self, x):
            return tuple(m(x) for m in self.linears)

    return Body().eval()


def measure_linears(dims: dict, n_layers: int, tmp: Path, reps: int) -> list[dict]:
    import torch
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig

    rows = []
    for spec in SCHEMES:
        scheme, group = spec.split(":")
        torch.manual_seed(0)
        body = body_linears(dims, n_layers)
        t0 = time.perf_counter()
        # Plain round-to-nearest: the weights' values do not matter for speed, only their layout does.
        quantize_(body, Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4 if scheme == "8da4w" else torch.int8,
            weight_granularity=PerGroup(int(group)) if int(group) else PerAxis(0), intx_choose_qparams_algorithm="affine"))
        params = sum(m.in_features * m.out_features for m in body.modules() if isinstance(m, torch.nn.Linear))
        row = {"scheme": scheme, "group_size": int(group), "linear_params": params}
        # One program for both sizes: M is dynamic, as in the export's own forward.
        m_dim = torch.export.Dim("m", min=1, max=PREFILL_M)
        buffer = _lower(body, (torch.randn(1, 2, dims["hidden"]),), dynamic_shapes=({1: m_dim},))
        method = _load(buffer, tmp, f"lin_{scheme}_{group}.pte")
        row["pte_bytes"] = len(buffer)
        _say(f"linears {scheme} g{group}: quantized and lowered in {time.perf_counter() - t0:.0f} s")
        for m in (1, PREFILL_M):
            x = torch.randn(1, m, dims["hidden"])
            med, best = _median_min(lambda: method.execute([x]), reps if m == 1 else max(3, reps // 5))
            row[f"m{m}"] = {"median_ms": round(med, 3), "min_ms": round(best, 3)}
        row["decode_gb_s_at_median"] = round(row["pte_bytes"] / row["m1"]["median_ms"] / 1e6, 1)
        row["prefill_gmac_s_at_median"] = round(params * PREFILL_M / row[f"m{PREFILL_M}"]["median_ms"] / 1e6, 1)
        rows.append(row)
    return rows


def measure_attention(dims: dict, n_layers: int, max_seq_len: int, tmp: Path, reps: int) -> list[dict]:
    import torch

    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  registers llama::custom_sdpa

    heads, kv_heads, head_dim = dims["n_heads"], dims["n_kv_heads"], dims["head_dim"]

    class Attention(torch.nn.Module):
        """One custom_sdpa per layer, each over its own cache (as in the export: a step reads every layer's).

        The caches live in the program (not passed in: the Python runtime would copy inputs on every call)."""

        def __init__(self):
            super().__init__()
            for layer in range(n_layers):
                self.register_buffer(f"k{layer}", torch.randn(1, max_seq_len, kv_heads, head_dim))
                self.register_buffer(f"v{layer}", torch.randn(1, max_seq_len, kv_heads, head_dim))

        def forward(self, q, pos):
            start = pos.item()
            torch._check_is_size(start)
            torch._check(start < max_seq_len)
            for layer in range(n_layers):
                k, v = getattr(self, f"k{layer}"), getattr(self, f"v{layer}")
                q = q + 1e-3 * torch.ops.llama.custom_sdpa(q, k, v, start, None, 0.0, True)
            return q

    q = torch.randn(1, 1, heads, head_dim)
    method = _load(_lower(Attention(), (q, torch.tensor([0]))), tmp, "attention.pte")
    rows = []
    for depth in (d for d in DEPTHS if d < max_seq_len):
        pos = torch.tensor([depth])
        med, best = _median_min(lambda: method.execute([q, pos]), reps)
        cache_bytes = 2 * n_layers * depth * kv_heads * head_dim * 4
        rows.append({"depth": depth, "median_ms": round(med, 3), "min_ms": round(best, 3),
                     "valid_cache_mb": round(cache_bytes / 1e6, 2),
                     "gb_s_of_valid_cache": round(cache_bytes / med / 1e6, 1)})
        _say(f"attention depth {depth}: {med:.2f} ms per step ({n_layers} layers)")
    return rows


def measure_prefill_chunks(export: Path, prompt: int, reps: int) -> list[dict]:
    """A prompt of `prompt` tokens prefilled in one call and in equal chunks (the runners' chunking lever)."""
    import torch
    from executorch.runtime import Runtime

    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  llama::custom_sdpa / update_cache
    import executorch.kernels.quantized  # noqa: F401  quantized embedding

    method = Runtime.get().load_program(export / "model.pte").load_method("forward")
    tokens = torch.randint(0, 1000, (1, prompt))
    rows = []
    for chunk in (prompt, prompt // 2, prompt // 4, prompt // 8):
        def prefill(chunk=chunk):
            for start in range(0, prompt, chunk):
                method.execute([tokens[:, start:start + chunk], torch.tensor([start])])

        med, best = _median_min(prefill, reps)
        rows.append({"prompt": prompt, "chunk": chunk, "median_ms": round(med, 1), "min_ms": round(best, 1),
                     "tok_s_at_median": round(prompt / med * 1e3, 1)})
        _say(f"prefill {prompt} in chunks of {chunk}: {med:.0f} ms")
    return rows


def measure_threads(export: Path, prompt: int, gen: int) -> list[dict]:
    """The harness at 1 and 2 threads (and the host's count): prefill and decode tokens/s."""
    from exporter.device.harness import build_host

    rows = []
    for threads in sorted({1, 2, os.cpu_count() or 1}):
        out = subprocess.run([str(build_host()), "--pte", str(export / "model.pte"), "--prompt-len", str(prompt),
                              "--gen-len", str(gen), "--reps", "3", "--warmup", "1", "--threads", str(threads)],
                             check=True, capture_output=True, text=True).stdout
        runs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        rows.append({"threads": threads, "prompt": prompt, "gen": gen,
                     "prefill_tok_s_median": round(statistics.median(r["prefill_tps"] for r in runs), 1),
                     "decode_tok_s_median": round(statistics.median(r["decode_tps"] for r in runs), 1)})
        _say(f"harness, {threads} threads: {rows[-1]}")
    return rows


def measure_perf(export: Path, threads: int, prompt: int, gen: int, tmp: Path) -> dict | None:
    """Samples of the harness (prefill `prompt` + `gen` decode steps) by shared object, in percent."""
    from exporter.device.harness import build_host

    perf = shutil.which("perf")
    if perf is None:
        return None
    data = tmp / f"perf_{prompt}.data"
    cmd = [str(build_host()), "--pte", str(export / "model.pte"), "--prompt-len", str(prompt), "--gen-len", str(gen),
           "--reps", "2", "--warmup", "0", "--threads", str(threads)]
    subprocess.run([perf, "record", "-F", "999", "-o", str(data), "--", *cmd], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = subprocess.run([perf, "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"],
                            check=True, capture_output=True, text=True).stdout
    return {"prompt": prompt, "gen": gen, "threads": threads, "by_library_percent": perf_shares(report)}


def perf_shares(report: str) -> dict[str, float]:
    """`perf report --sort dso --stdio` rows ("  59.40%  libfoo.so") as {library: percent}."""
    shares = {}
    for line in report.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].endswith("%") and not line.lstrip().startswith("#"):
            shares[parts[1].strip()] = float(parts[0][:-1])
    return shares


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({', '.join(m.get('simd', []))}), "
             f"load {result['load_avg_before']} -> {result['load_avg_after']}", "",
             f"| body linears ({result['n_layers']} layers) | `.pte` MB | decode step (M=1) ms | GB/s | "
             f"prefill M={PREFILL_M} ms | GMAC/s |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["linears"]:
        g = "per channel" if r["group_size"] == 0 else f"g{r['group_size']}"
        lines.append(f"| {r['scheme']} {g} | {r['pte_bytes'] / 1e6:.1f} | {r['m1']['median_ms']:.2f} | "
                     f"{r['decode_gb_s_at_median']} | {r[f'm{PREFILL_M}']['median_ms']:.1f} | {r['prefill_gmac_s_at_median']} |")
    lines += ["", "| cache depth | custom_sdpa ms per step (all layers) | valid cache MB | GB/s of it |", "|---:|---:|---:|---:|"]
    for r in result["attention"]:
        lines.append(f"| {r['depth']} | {r['median_ms']:.2f} | {r['valid_cache_mb']} | {r['gb_s_of_valid_cache']} |")
    if result.get("prefill_chunks"):
        lines += ["", "| prefill of 512 in chunks of | ms | tok/s |", "|---:|---:|---:|"]
        lines += [f"| {r['chunk']} | {r['median_ms']} | {r['tok_s_at_median']} |" for r in result["prefill_chunks"]]
    if result.get("threads"):
        lines += ["", "| harness threads | prefill tok/s | decode tok/s |", "|---:|---:|---:|"]
        lines += [f"| {r['threads']} | {r['prefill_tok_s_median']} | {r['decode_tok_s_median']} |" for r in result["threads"]]
    for p in result.get("perf") or []:
        top = sorted(p["by_library_percent"].items(), key=lambda kv: -kv[1])[:6]
        lines += ["", f"perf, harness pp{p['prompt']}+tg{p['gen']}, {p['threads']} threads: "
                  + ", ".join(f"{k} {v:.1f}%" for k, v in top)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, required=True, help="an export folder (model.pte + manifest.json)")
    ap.add_argument("--threads", type=int, default=2, help="harness threads under perf")
    ap.add_argument("--reps", type=int, default=50, help="timed calls per decode-sized case")
    ap.add_argument("--skip", nargs="*", default=[], choices=("linears", "attention", "chunks", "threads", "perf"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    manifest = json.loads((args.export / "manifest.json").read_text())
    dims, n_layers, max_seq_len = manifest["dims"], manifest["n_layers"], manifest["max_seq_len"]
    result = {"schema": "exporter-decode-profile/1", "export": str(args.export), "recipe": manifest["recipe"]["label"],
              "n_layers": n_layers, "dims": {k: dims[k] for k in ("hidden", "intermediate", "n_heads", "n_kv_heads", "head_dim")},
              "max_seq_len": max_seq_len, "versions": versions(),
              "machine": machine_info(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "load_avg_before": loadavg(),
              "runtime_threads": "ExecuTorch Python runtime default (all cores) for linears and attention"}
    with tempfile.TemporaryDirectory(prefix="exporter-decode-profile-") as tmp_name:
        tmp = Path(tmp_name)
        if "linears" not in args.skip:
            result["linears"] = measure_linears(dims, n_layers, tmp, args.reps)
        if "attention" not in args.skip:
            result["attention"] = measure_attention(dims, n_layers, max_seq_len, tmp, args.reps)
        if "chunks" not in args.skip:
            result["prefill_chunks"] = measure_prefill_chunks(args.export, PREFILL_M, max(3, args.reps // 10))
        if "threads" not in args.skip:
            result["threads"] = measure_threads(args.export, PREFILL_M, 64)
        if "perf" not in args.skip:
            result["perf"] = [p for p in (measure_perf(args.export, args.threads, n, 128, tmp) for n in (64, 512)) if p]
    result["load_avg_after"] = loadavg()
    out = args.out or RESULTS / f"decode_profile_{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    result.setdefault("linears", [])
    result.setdefault("attention", [])
    print(markdown(result))
    _say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
