"""Benchmark rows (llama-bench style): one row per (device, prompt length) test, one schema, several printers.

ROW_FIELDS is the schema (name, type, meaning); docs/results_schema.md documents it. JSON rows add the raw
per-run samples. Markdown shows the columns people compare; CSV has every scalar field. No measuring here.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .artifact import Artifact
from .device.bench import TestResult, mean_sd
from .roofline import UNAVAILABLE, manifest_token_bytes

# name -> (type, meaning). Order is the column order of CSV and JSON rows.
ROW_FIELDS: dict[str, tuple[str, str]] = {
    "test_time": ("str", "RFC 3339 UTC time the test started"),
    "status": ("str", "ok | failed"),
    "error": ("str", "why the test failed (null when ok)"),
    "serial": ("str", "adb serial, or 'host'"),
    "host": ("bool", "measured on this machine (--host), not a phone"),
    "emulated": ("bool", "the runner ran under an emulator (qemu): a correctness run, its timings are no phone's speed"),
    "device_model": ("str", "ro.product.model (host name for --host)"),
    "soc": ("str", "ro.soc.model, else ro.board.platform (host CPU name for --host)"),
    "board_platform": ("str", "ro.board.platform"),
    "android_release": ("str", "ro.build.version.release"),
    "sdk": ("int", "ro.build.version.sdk"),
    "profile_id": ("str", "device profile used (the manifest's)"),
    "detected_profile_id": ("str", "profile the phone matched by detection (null: none)"),
    "runner": ("str", "harness | llama_main"),
    "model": ("str", "Hugging Face model id from the manifest"),
    "recipe": ("str", "quantization recipe label from the manifest"),
    "pte_bytes": ("int", "size of model.pte"),
    "pte_sha256": ("str", "sha256 of model.pte"),
    "max_seq_len": ("int", "positions the .pte allows"),
    "kv_cache": ("str", "KV cache storage from the recipe: fp32 | int8"),
    "kv_cache_bytes": ("int", "KV cache buffers the .pte allocates (manifest; null in older manifests)"),
    "exporter_version": ("str", "exporter package version that ran the bench"),
    "executorch_version": ("str", "executorch version the .pte was exported with (manifest)"),
    "torch_version": ("str", "torch version of the export (manifest)"),
    "torchao_version": ("str", "torchao version of the export (manifest)"),
    "threads": ("int", "runtime worker threads"),
    "cpu_set": ("str", "CPU ids the runner was pinned to, comma-separated (empty: not pinned)"),
    "cpu_mask": ("str", "the same as a hex affinity mask"),
    "test": ("str", "llama-bench name: pp<prompt>+tg<gen>"),
    "prompt_len": ("int", "prompt tokens (prefill)"),
    "prefill_chunk": ("int", "prompt tokens per prefill call the harness used (null: llama_main or an older harness)"),
    "gen_len": ("int", "generated tokens (decode steps)"),
    "warmup": ("int", "warm-up runs before measuring (not in the stats)"),
    "reps": ("int", "measured runs requested"),
    "n_runs": ("int", "measured runs that produced a result"),
    "prefill_tps_mean": ("float", "prompt tokens/s, mean over runs"),
    "prefill_tps_sd": ("float", "prompt tokens/s, sample standard deviation"),
    "decode_tps_mean": ("float", "generated tokens/s, mean over runs"),
    "decode_tps_sd": ("float", "generated tokens/s, sample standard deviation"),
    "ttft_ms_mean": ("float", "time to first token, ms, mean"),
    "ttft_ms_sd": ("float", "time to first token, ms, standard deviation"),
    "model_load_ms_mean": ("float", "program + method load, ms, mean"),
    "token_ms_p50_mean": ("float", "median per-token decode latency, ms, mean over runs"),
    "token_ms_p90_mean": ("float", "p90 per-token decode latency, ms, mean over runs"),
    "peak_rss_mib": ("float", "largest peak RSS (VmHWM) over runs, MiB"),
    "rss_other_mib": ("float", "peak RSS minus pte bytes minus KV cache bytes, MiB: runtime, activations, "
                               "allocator (negative when mmap left part of the .pte unread)"),
    "bandwidth_gbps": ("float", "memory bandwidth used for the roofline, GB/s"),
    "bandwidth_source": ("str", "where bandwidth_gbps comes from (profile, measured on host, given, assumed)"),
    "decode_bytes_per_token": ("float", "bytes a decode step reads, mean over the test's steps: the manifest's "
                               "weight_bytes_per_token plus the KV cache to that depth (exporter/roofline.py; null "
                               "for manifests without it)"),
    "roofline_decode_tps": ("float", "decode tokens/s the bandwidth allows: bandwidth / decode_bytes_per_token"),
    "roofline_fraction": ("float", "decode_tps_mean x decode_bytes_per_token / bandwidth (= decode_tps_mean / "
                          "roofline_decode_tps)"),
    "temp_c_before": ("float", "hottest CPU thermal zone before the first run, deg C"),
    "temp_c_after": ("float", "hottest CPU thermal zone after the last run, deg C"),
    "cooldown_wait_s": ("float", "total seconds waited for the CPU to cool between runs"),
    "cooldown_timed_out": ("bool", "some run started above the threshold because the wait timed out"),
    "cpu_freq_khz_before": ("dict", "scaling_cur_freq per CPU id before the runs"),
    "cpu_freq_khz_after": ("dict", "scaling_cur_freq per CPU id after the runs"),
    "battery_level": ("int", "battery percent before the runs"),
    "battery_status": ("str", "charging | discharging | full | not charging"),
    "battery_plugged": ("str", "ac | usb | wireless | none"),
    "warnings": ("list", "detection warnings for this device (feature or layout differences)"),
}
JSON_ONLY_FIELDS = {
    "samples_prefill_tps": "prefill tokens/s of each run",
    "samples_decode_tps": "decode tokens/s of each run",
    "samples": "the raw run objects (protocol.RUN_FIELDS fields + per-run temperature and cooldown wait)",
}
METRIC_FIELDS = [k for k in ROW_FIELDS if k.endswith(("_mean", "_sd")) or k in (
    "peak_rss_mib", "rss_other_mib", "roofline_decode_tps", "roofline_fraction", "n_runs")]


def _mask(cpu_set: Sequence[int]) -> str:
    return f"0x{sum(1 << c for c in cpu_set):x}" if cpu_set else ""


def build_rows(results: Sequence[TestResult], artifact: Artifact) -> list[dict[str, Any]]:
    m = artifact.manifest
    pte_sha = artifact.sha256(artifact.pte_path)
    rows = []
    for r in results:
        d = r.device
        runs = r.runs if r.ok else []
        pre, pre_sd = mean_sd([x.get("prefill_tps") for x in runs])
        dec, dec_sd = mean_sd([x.get("decode_tps") for x in runs])
        ttft, ttft_sd = mean_sd([x.get("ttft_ms") for x in runs])
        load, _ = mean_sd([x.get("model_load_ms") for x in runs])
        p50, _ = mean_sd([x.get("token_ms_p50") for x in runs])
        p90, _ = mean_sd([x.get("token_ms_p90") for x in runs])
        rss = [x.get("peak_rss_kb") for x in runs if x.get("peak_rss_kb") is not None]
        peak_mib = max(rss) / 1024 if rss else None
        kv_bytes = m.kv_cache_bytes
        bw = d.bandwidth_gbps
        tb = manifest_token_bytes(m, r.prompt_len, r.gen_len)
        per_token = tb.total if tb else None
        # an emulator's timings say nothing about the memory system: no roofline from them
        roof = bw * 1e9 / per_token if bw and per_token and not d.emulated else None
        waits = [x.get("cooldown_wait_s") for x in runs if x.get("cooldown_wait_s") is not None]
        pre_temps = [x.get("temp_c_before") for x in runs if x.get("temp_c_before") is not None]
        battery = r.env.get("battery") or {}
        v = m.versions
        row = {
            "test_time": r.test_time, "status": "ok" if r.ok else "failed", "error": None if r.ok else r.error,
            "serial": d.serial, "host": d.host, "emulated": d.emulated, "device_model": d.model,
            "soc": d.soc, "board_platform": d.board_platform,
            "android_release": d.android_release, "sdk": d.sdk, "profile_id": d.profile_id,
            "detected_profile_id": d.detected_profile_id, "runner": r.runner,
            "model": m.model.id, "recipe": m.recipe.label, "pte_bytes": m.pte.bytes, "pte_sha256": pte_sha,
            "max_seq_len": m.max_seq_len, "kv_cache": m.recipe.spec.kv_cache, "kv_cache_bytes": kv_bytes,
            "exporter_version": __version__,
            "executorch_version": v.get("executorch"), "torch_version": v.get("torch"),
            "torchao_version": v.get("torchao"),
            "threads": r.threads, "cpu_set": ",".join(map(str, r.cpu_set)), "cpu_mask": _mask(r.cpu_set),
            "test": r.case.name, "prompt_len": r.prompt_len,
            "prefill_chunk": runs[0].get("prefill_chunk") if runs else None, "gen_len": r.gen_len,
            "warmup": r.warmup, "reps": r.reps, "n_runs": len(runs),
            "prefill_tps_mean": pre, "prefill_tps_sd": pre_sd, "decode_tps_mean": dec, "decode_tps_sd": dec_sd,
            "ttft_ms_mean": ttft, "ttft_ms_sd": ttft_sd, "model_load_ms_mean": load,
            "token_ms_p50_mean": p50, "token_ms_p90_mean": p90,
            "peak_rss_mib": peak_mib,
            "rss_other_mib": peak_mib - (m.pte.bytes + kv_bytes) / 2**20
            if peak_mib is not None and kv_bytes is not None else None,
            "bandwidth_gbps": bw, "bandwidth_source": d.bandwidth_source, "decode_bytes_per_token": per_token,
            "roofline_decode_tps": roof, "roofline_fraction": dec / roof if dec is not None and roof else None,
            "temp_c_before": r.env.get("temp_c_before", pre_temps[0] if pre_temps else None),
            "temp_c_after": r.env.get("temp_c_after"),
            "cooldown_wait_s": sum(waits) if waits else None,
            "cooldown_timed_out": any(x.get("cooldown_timed_out") for x in runs) if waits else None,
            "cpu_freq_khz_before": {str(k): v for k, v in (r.env.get("cpu_freq_khz_before") or {}).items()},
            "cpu_freq_khz_after": {str(k): v for k, v in (r.env.get("cpu_freq_khz_after") or {}).items()},
            "battery_level": battery.get("level"), "battery_status": battery.get("status"),
            "battery_plugged": battery.get("plugged"), "warnings": list(d.warnings),
            "samples_prefill_tps": [x.get("prefill_tps") for x in runs],
            "samples_decode_tps": [x.get("decode_tps") for x in runs],
            "samples": runs,
        }
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- printers


def to_json(rows: Sequence[dict]) -> str:
    return json.dumps({"schema": "exporter-bench/1", "rows": list(rows)}, indent=2, default=str) + "\n"


def to_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ROW_FIELDS)
    for row in rows:
        out = []
        for name, (kind, _) in ROW_FIELDS.items():
            value = row.get(name)
            if value is None:
                out.append("")
            elif kind in ("list", "dict"):
                out.append(json.dumps(value, sort_keys=True))
            elif kind == "float":
                out.append(f"{value:.6g}")
            else:
                out.append(str(value).lower() if isinstance(value, bool) else str(value))
        writer.writerow(out)
    return buf.getvalue()


def _pm(mean: float | None, sd: float | None, digits: int = 2) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    several = len({r["serial"] for r in rows}) > 1
    cols = (["device"] if several else []) + ["model", "recipe", "soc", "threads", "test", "pp t/s", "tg t/s",
                                              "ttft ms", "load ms", "RSS MiB", "pte+KV MiB", "roofline"]
    body = []
    for r in rows:
        pp, tg = f"pp{r['prompt_len']}", f"tg{r['gen_len']}"
        cells = ([f"{r['device_model'] or r['serial']}"] if several else []) + [
            r["model"] or "?", r["recipe"] or "?", (r["soc"] or "?") + (" (emulated)" if r["emulated"] else ""),
            str(r["threads"]), f"{pp}+{tg}",
            _pm(r["prefill_tps_mean"], r["prefill_tps_sd"]), _pm(r["decode_tps_mean"], r["decode_tps_sd"]),
            _num(r["ttft_ms_mean"]), _num(r["model_load_ms_mean"]), _num(r["peak_rss_mib"]), _pte_kv(r),
            "n/a" if r["roofline_fraction"] is None else
            f"{100 * r['roofline_fraction']:.0f}% of {r['roofline_decode_tps']:.1f}",
        ]
        if r["status"] != "ok":
            cells[-1] = "FAILED"
        body.append(cells)
    return cols, body


def _pte_kv(r: dict) -> str:
    """Peak RSS set against what the program must hold: `88.0+9.4` (pte + KV cache, MiB)."""
    pte = r["pte_bytes"] / 2**20
    return f"{pte:.1f}+{r['kv_cache_bytes'] / 2**20:.1f}" if r["kv_cache_bytes"] is not None else f"{pte:.1f}+?"


def to_markdown(rows: Sequence[dict]) -> str:
    cols, body = markdown_table(rows)
    numeric = {"threads", "pp t/s", "tg t/s", "ttft ms", "load ms", "RSS MiB", "pte+KV MiB"}
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in cols) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    if rows:
        r0 = rows[0]
        sources = sorted({r["bandwidth_source"] for r in rows if r["bandwidth_source"]})
        lines.append("")
        lines.append(f"exporter {r0['exporter_version']}, executorch {r0['executorch_version'] or '?'}; "
                     f"pte {r0['pte_bytes']} bytes, sha256 {r0['pte_sha256'][:12]}; "
                     f"roofline = bandwidth / bytes read per decoded token ({'; '.join(sources) or 'no bandwidth'})")
        if any(r["decode_bytes_per_token"] is None for r in rows):
            lines.append(f"no roofline: {UNAVAILABLE}")
        for r in rows:
            if r["status"] != "ok":
                first = (r["error"] or "").splitlines()[0] if r["error"] else "failed"
                lines.append(f"failed: {r['serial']} {r['test']}: {first}")
    return "\n".join(lines) + "\n"


def write_plot(rows: Sequence[dict], path: Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """tokens/s against prompt length (PNG); None with a warning when matplotlib is missing or one length."""
    ok = [r for r in rows if r["status"] == "ok"]
    if len({r["prompt_len"] for r in ok}) < 2:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if warn:
            warn("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for serial in sorted({r["serial"] for r in ok}):
        mine = sorted((r for r in ok if r["serial"] == serial), key=lambda r: r["prompt_len"])
        label = f"{mine[0]['device_model'] or serial} ({mine[0]['soc']})"
        xs = [r["prompt_len"] for r in mine]
        for ax, key in ((axes[0], "prefill_tps"), (axes[1], "decode_tps")):
            ax.errorbar(xs, [r[f"{key}_mean"] for r in mine], yerr=[r[f"{key}_sd"] or 0 for r in mine],
                        marker="o", capsize=3, label=label)
    axes[0].set_title("prefill")
    axes[1].set_title(f"decode (tg{ok[0]['gen_len']})")
    for ax in axes:
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("tokens/s")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{ok[0]['model'] or 'model'} · {ok[0]['recipe'] or ''}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(rows: Sequence[dict], out_dir: Path, warn: Callable[[str], None] | None = None) -> dict[str, Path]:
    """results.json, results.csv, results.md (and tokens_per_s.png with several prompt lengths) in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in (("results.json", to_json(rows)), ("results.csv", to_csv(rows)),
                       ("results.md", to_markdown(rows))):
        (out_dir / name).write_text(text)
        written[name] = out_dir / name
    plot = write_plot(rows, out_dir / "tokens_per_s.png", warn)
    if plot:
        written["tokens_per_s.png"] = plot
    return written
