"""Benchmark: export the built-in model for one profile and measure what the export issue asks for.

Records export wall time and peak RSS (the export runs in its own process, so RSS is its own), .pte bytes
vs bf16 bytes, perplexity of the eager fp32 model and of the .pte on the first 4096 tokens of Pride and
Prejudice (8 chunks of 512 tokens, each scored on its own: one-token prefill, then 511 decode calls), and
host prefill/decode tokens/s. Writes bench/results/export_<profile>_<date>.json (`_busy<N>` when --busy N).

    .venv/bin/python bench/export_bench.py --device sm8650
    .venv/bin/python bench/export_bench.py --device sm8650 --busy 1   # one core kept busy beside the export
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO.parent / "shared" / "data" / "austen" / "prideprejudice.txt"


BURN = "while True: pass"


@contextlib.contextmanager
def busy_neighbours(n: int):
    """`n` processes that each keep one core busy (a Python loop) while the block runs; killed afterwards."""
    procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="sm8650")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench-export")
    ap.add_argument("--text", type=Path, default=TEXT)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--chunk-len", type=int, default=512)
    ap.add_argument("--kv-cache", choices=("fp32", "int8"), default=None, help="'exporter export --kv-cache'")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="run N CPU-burning processes beside the export (not beside the verification)")
    ap.add_argument("--extra", nargs="*", default=[], help="extra 'exporter export' flags, e.g. --quant 8da4w --group-size 64")
    args = ap.parse_args()
    if not args.text.is_file():
        print(f"evaluation text not found: {args.text}", file=sys.stderr)
        return 2

    exe = [sys.executable, "-m", "exporter"]
    load_start = os.getloadavg()
    with busy_neighbours(args.busy):
        t0 = time.perf_counter()
        subprocess.run(exe + ["export", "--device", args.device, "--output", str(args.out), "--force", "--no-verify",
                                  *(["--kv-cache", args.kv_cache] if args.kv_cache else []), *args.extra], check=True)
        wall = time.perf_counter() - t0
    load_end = os.getloadavg()
    manifest = json.loads((args.out / "manifest.json").read_text())
    verify = subprocess.run(
        exe + ["verify", str(args.out), "--text", str(args.text), "--chunks", str(args.chunks),
               "--chunk-len", str(args.chunk_len), "--prefill-len", "1", "--json"],
        check=True, capture_output=True, text=True,
    )
    result = json.loads(verify.stdout)
    record = {
        "benchmark": "export",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "profile": args.device,
        "model": manifest["model"],
        "recipe": manifest["recipe"]["label"],
        "busy_processes": args.busy,
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in load_end],
        "export_wall_s": round(wall, 1),
        "export_manifest_wall_s": manifest["export"]["wall_s"],  # the export itself, without interpreter start-up
        "export_stages_s": manifest["export"]["stages_s"],
        "export_peak_rss_bytes": manifest["export"]["peak_rss_bytes"],
        "pte_bytes": manifest["pte"]["bytes"],
        "bf16_bytes": manifest["bf16_bytes"],
        "size_reduction": manifest["size_reduction"],
        "kv_cache": manifest["recipe"]["spec"].get("kv_cache", "fp32"),
        "kv_cache_bytes": manifest.get("kv_cache_bytes"),
        "eval": {"text": args.text.name, "chunks": result["chunks"], "chunk_len": result["chunk_len"],
                 "scored_tokens": result["scored_tokens"]},
        "ppl_fp32_eager": result["ppl_eager"],
        "ppl_pte": result["ppl_pte"],
        "top1_agreement": result["top1_agreement"],
        "mean_kl": result["mean_kl"],
        "host_prefill_tps": result["host_prefill_tps"],
        "host_decode_tps": result["host_decode_tps"],
        "versions": manifest["versions"],
    }
    busy = f"_busy{args.busy}" if args.busy else ""
    out = REPO / "bench" / "results" / f"export_{args.device}{busy}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
