"""One command for the export, decode and prefill tables, from scratch, with the aims checked.

    .venv/bin/python bench/run_all.py                      # 21-31 min on a quiet 2-core host
    .venv/bin/python bench/run_all.py --skip-busy          # without the export beside a busy core

Runs, one after the other (nothing else should run meanwhile):
1. `export_bench.py --device D`: export the built-in model, stage times, peak RSS, perplexity, host tok/s;
2. `host_bench.py --export <that folder> --engines pte,llamacpp`: the .pte beside llama.cpp Q4_0 (llama-bench),
   pp64/pp512 + tg128, round-robin, with the roofline on each .pte row;
3. `export_bench.py --device D --busy 1`: the same export while one other process keeps a core busy;
4. the export of the code before issue 12's work (`--baseline-rev`, checked out into a temporary git worktree
   and run with this environment) right after, on the same machine: the side-by-side export-time aim;
5. `decode_profile.py --export <the quiet export>`: where a decode step's time goes (XNNPACK linears per
   weight scheme, attention per cache depth, perf samples per library), the reason behind the decode aims.
Writes bench/results/all_<date>.json: the result files and every aim with its verdict. Without a git checkout
(`--baseline-rev none`) the export-time aim uses `--baseline-wall`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


def baseline_export(rev: str, device: str) -> dict:
    """Export with the code of `rev` (a temporary worktree, this interpreter): its manifest's export record."""
    with tempfile.TemporaryDirectory(prefix="exporter-baseline-") as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "export"
        run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev])
        try:
            env = dict(os.environ, PYTHONPATH=str(tree))
            print(f"+ ({rev}) exporter export --device {device}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "exporter", "export", "--device", device, "--output", str(out),
                            "--force", "--no-verify"], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
            manifest = json.loads((out / "manifest.json").read_text())
        finally:
            run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)])
    record = manifest["export"]
    result = {"benchmark": "export, side by side", "rev": rev, "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "export_wall_s": record["wall_s"], "export_peak_rss_bytes": record["peak_rss_bytes"],
              "export_stages_s": record["stages_s"], "pte_sha256": manifest["pte"]["sha256"],
              "versions": manifest.get("versions")}
    out = RESULTS / f"export_{device}_baseline-{rev}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "not met")


def export_aims(quiet: dict, busy: dict | None, baseline_wall: float, baseline_name: str) -> list[dict]:
    # both sides as the manifests time them (the baseline's is its manifest's wall_s)
    ratio = quiet.get("export_manifest_wall_s", quiet["export_wall_s"]) / baseline_wall
    aims = [
        {"aim": f"export wall <= {EXPORT_RATIO}x the baseline ({baseline_name}: {baseline_wall:g} s)",
         "value": round(ratio, 3),
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
                    help="export wall time before this work, quiet, same kind of host (issue 12: 572 s on AVX2); "
                         "used only with --baseline-rev none")
    ap.add_argument("--baseline-rev", default="bf49e19",
                    help="git revision of the code before this work, exported side by side ('none': skip)")
    ap.add_argument("--skip-busy", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prefill-chunk", type=int, default=128,
                    help="the harness prefills in calls of this many tokens (decode_profile.py measures why)")
    args = ap.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    host_out = RESULTS / f"host_{stamp}.json"
    quiet = export_bench("--device", args.device, "--out", str(WORK / "export"))
    sys.stderr.write(run([sys.executable, "bench/host_bench.py", "--export", str(WORK / "export"), "--engines",
                          "pte,llamacpp", "--threads", "2", "--rounds", str(args.rounds), "--repeat", "3",
                          "--prefill-chunk", str(args.prefill_chunk),
                          "--out", str(host_out)]))
    host = json.loads(host_out.read_text())
    busy = None if args.skip_busy else export_bench("--device", args.device, "--out", str(WORK / "export-busy"),
                                                    "--busy", "1")
    baseline = None if args.baseline_rev == "none" else baseline_export(args.baseline_rev, args.device)
    profile_out = RESULTS / f"decode_profile_{stamp}.json"
    sys.stderr.write(run([sys.executable, "bench/decode_profile.py", "--export", str(WORK / "export"),
                          "--out", str(profile_out)]))
    if baseline is None:
        baseline_wall, baseline_name = args.baseline_wall, "given"
    else:
        baseline_wall, baseline_name = baseline["export_wall_s"], f"{args.baseline_rev} side by side"
    record = {
        "benchmark": "all",
        "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "export_quiet": quiet,
        "export_busy": busy,
        "export_baseline": baseline,
        "host_result_file": str(host_out.relative_to(REPO)),
        "decode_profile_file": str(profile_out.relative_to(REPO)),
        "aims": export_aims(quiet, busy, baseline_wall, baseline_name) + host["aim"]["by_test"] + [roofline_aim(host)],
    }
    out = RESULTS / f"all_{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    for a in record["aims"]:
        print(f"{a.get('aim') or a['test']}: {a.get('value', a.get('ratio'))} -> {a['verdict']}")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
