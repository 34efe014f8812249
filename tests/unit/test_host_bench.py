"""bench/host_bench.py's llama.cpp engine against a stand-in llama-bench (argv and JSON handling, no timing)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE = """#!{python}
import json, sys
a = sys.argv[1:]
open({log!r}, "a").write(" ".join(a) + "\\n")
if "--fail" in a[a.index("-m") + 1]:
    sys.stderr.write("error: failed to load model\\n"); sys.exit(1)
p, n = int(a[a.index("-p") + 1]), int(a[a.index("-n") + 1])
d = int(a[a.index("-d") + 1]) if "-d" in a else 0
ts = [1000.0, 1200.0] if p else [200.0, 220.0]
print(json.dumps([{{"build_commit": "unknown", "n_prompt": p, "n_gen": n, "n_depth": d, "n_threads": 2,
                   "avg_ts": sum(ts) / 2, "stddev_ts": 1.0, "samples_ts": ts}}]))
"""


def _host_bench():
    spec = importlib.util.spec_from_file_location("host_bench", REPO / "bench" / "host_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def fake_llama_bench(tmp_path):
    exe = tmp_path / "llama-bench"
    exe.write_text(FAKE.format(python=sys.executable, log=str(tmp_path / "argv.log")))
    exe.chmod(0o755)
    return exe


def test_llamacpp_engine_runs_pp_then_tg_at_depth(tmp_path, fake_llama_bench):
    hb = _host_bench()
    args = argparse.Namespace(threads=2, repeat=2, gen=128, worker_timeout=60)
    part = hb.measure_llamacpp(args, 64, {"binary": str(fake_llama_bench), "gguf": "m.gguf"})
    assert part["error"] is None
    calls = (tmp_path / "argv.log").read_text().splitlines()
    assert calls == ["-m m.gguf -t 2 -r 2 -p 64 -n 0 -o json", "-m m.gguf -t 2 -r 2 -p 0 -n 128 -d 64 -o json"]
    runs = part["runs"]
    assert [r["prefill_tps"] for r in runs] == [1000.0, 1200.0] and [r["decode_tps"] for r in runs] == [200.0, 220.0]
    assert runs[0]["ttft_ms"] == pytest.approx(64.0) and runs[0]["peak_rss_kb"] > 0
    assert [t["n_depth"] for t in part["llama_bench"]] == [0, 64]
    row = hb.summarize("llamacpp", "llama.cpp", None, 64, argparse.Namespace(gen=128, threads=2, warmup=1, repeat=2),
                       [part, part])
    assert row["n_runs"] == 4 and row["rounds"] == 2 and row["decode_tps_mean"] == pytest.approx(210.0)
    assert len(row["contention"]["by_round"]) == 2


def test_llamacpp_engine_failure_keeps_the_reason(tmp_path, fake_llama_bench):
    hb = _host_bench()
    args = argparse.Namespace(threads=2, repeat=2, gen=8, worker_timeout=60)
    part = hb.measure_llamacpp(args, 8, {"binary": str(fake_llama_bench), "gguf": "--fail.gguf"})
    assert part["runs"] == [] and "failed to load model" in part["error"] and "exited 1" in part["error"]
    row = hb.summarize("llamacpp", "llama.cpp", None, 8, argparse.Namespace(gen=8, threads=2, warmup=1, repeat=2),
                       [part])
    assert row["status"] == "failed" and json.dumps(row)


def test_aims_use_the_issue_thresholds_for_decode_and_prefill():
    rows = [{"engine": e, "prompt_len": n, "prefill_tps_mean": p, "decode_tps_mean": d}
            for e, n, p, d in (("pte", 64, 900, 90), ("llamacpp", 64, 800, 61),
                               ("pte", 512, 700, 70), ("llamacpp", 512, 600, 60))]
    host_bench = _host_bench()
    got = {a["test"]: a["verdict"] for a in host_bench.aim(rows)["by_test"]}
    # 90 / 61 = 1.48 < 1.5; 70 / 60 = 1.17 < 1.2; prefill 700 / 600 >= 1
    assert got == {"decode after pp64": "not met", "decode after pp512": "not met", "prefill pp512": "met"}
    rows[0]["decode_tps_mean"] = 92
    assert host_bench.aim(rows)["by_test"][0]["verdict"] == "met"
