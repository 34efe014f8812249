"""One command for the export, decode and prefill tables, from scratch, with the aims checked.

    .venv/bin/python bench/run_all.py                      # ~30 min on a quiet 2-core host
    .venv/bin/python bench/run_all.py --skip-busy          # without the export beside a busy core

Runs, one after the other (nothing else should run meanwhile):
1. `export_bench.py --device D`: export the built-in model, stage times, peak RSS, perplexity, host tok/s;
2. `host_bench.py --export <that folder> --engines pte,llamacpp`: the .pte beside llama.cpp Q4_0 (llama-bench),
   pp64/pp512 + tg128, round-robin, with the roofline on each .pte row;
3. `export_bench.py --device D --busy 1`: the same export while one other process keeps a core busy.
Writes bench/results/all_<date>.json: the three result files and every aim with its verdict. The export-time
aim compares with `--baseline-wall` (the wall time of the export before this work on a quiet host of the same
kind), since the old code is not rebuilt here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WORK = REPO / "build" / "bench-all"

EXPORT_RATIO, RSS_LIMIT, BUSY_RATIO, ROOFLINE = 0.6, 1.5e9, 2.5, 0.7


def run(cmd: list[str]) -> str:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def export_bench(*args: str) -> dict:
    """export_bench.py's record: the JSON object it prints last (the export's own output comes before it)."""
    lines = run([sys.executable, "bench/export_bench.py", *args]).splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "not met")


def export_aims(quiet: dict, busy: dict | None, baseline_wall: float) -> list[dict]:
    ratio = quiet["export_wall_s"] / baseline_wall
    aims = [
        {"aim": f"export wall <= {EXPORT_RATIO}x the baseline ({baseline_wall:g} s)", "value": round(ratio, 3),
         "verdict": verdict(ratio <= EXPORT_RATIO)},
        {"aim": "export peak RSS <= 1.5 GB", "value": quiet["export_peak_rss_bytes"],
         "verdict": verdict(quiet["export_peak_rss_bytes"] <= RSS_LIMIT)},
    ]
    if busy is not None:
        ratios = {k: round(busy["export_stages_s"][k] / v, 2) for k, v in quiet["export_stages_s"].items()
                  if v and k in busy["export_stages_s"]}
        aims.append({"aim": f"each export stage <= {BUSY_RATIO}x its quiet time beside one busy core",
                     "value": ratios, "verdict": verdict(all(r <= BUSY_RATIO for r in ratios.values()))})
    return aims


def roofline_aim(host: dict) -> dict:
    row = next((r for r in host["rows"] if r["engine"] == "pte" and r["prompt_len"] == 64), None)
    frac = row.get("roofline_fraction") if row else None
    return {"aim": f"decode roofline fraction >= {ROOFLINE} at pp64", "value": frac,
            "verdict": verdict(None if frac is None else frac >= ROOFLINE)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="sm8650")
    ap.add_argument("--baseline-wall", type=float, default=572.0,
                    help="export wall time before this work, quiet, same kind of host (issue 12: 572 s on AVX2)")
    ap.add_argument("--skip-busy", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    host_out = RESULTS / f"host_{stamp}.json"
    quiet = export_bench("--device", args.device, "--out", str(WORK / "export"))
    sys.stderr.write(run([sys.executable, "bench/host_bench.py", "--export", str(WORK / "export"), "--engines",
                          "pte,llamacpp", "--threads", "2", "--rounds", str(args.rounds), "--repeat", "3",
                          "--out", str(host_out)]))
    host = json.loads(host_out.read_text())
    busy = None if args.skip_busy else export_bench("--device", args.device, "--out", str(WORK / "export-busy"),
                                                    "--busy", "1")
    record = {
        "benchmark": "all",
        "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "export_quiet": quiet,
        "export_busy": busy,
        "host_result_file": str(host_out.relative_to(REPO)),
        "aims": export_aims(quiet, busy, args.baseline_wall) + host["aim"]["by_test"] + [roofline_aim(host)],
    }
    out = RESULTS / f"all_{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    for a in record["aims"]:
        print(f"{a.get('aim') or a['test']}: {a.get('value', a.get('ratio'))} -> {a['verdict']}")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
