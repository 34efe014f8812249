"""The local store of measured phone speeds that `exporter plan` reads: one JSON line per bench test.

`exporter bench` appends a line for every successful test on a real phone (not the host, not an emulator) to
`<cache>/results/<profile id>.jsonl`; the plan turns them into measured efficiencies for that profile
(planner.efficiency). `<cache>` is $EXPORTER_CACHE_DIR, else ~/.cache/exporter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

CACHE_ENV = "EXPORTER_CACHE_DIR"


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "exporter"


def results_path(profile_id: str) -> Path:
    return cache_dir() / "results" / f"{profile_id}.jsonl"


def record_bench_rows(rows: Iterable[dict[str, Any]], parameters: int) -> int:
    """Append the successful phone rows of a bench (report.build_rows) to their profiles' stores; how many."""
    n = 0
    for row in rows:
        if row.get("status") != "ok" or row.get("host") or row.get("emulated") or not row.get("profile_id"):
            continue
        line = {"profile": row["profile_id"], "model": row.get("model"), "recipe": row.get("recipe"),
                "pte_bytes": row.get("pte_bytes"), "parameters": parameters, "max_seq_len": row.get("max_seq_len"),
                "prompt_len": row.get("prompt_len"), "gen_len": row.get("gen_len"),
                "prefill_tps": row.get("prefill_tps_mean"), "decode_tps": row.get("decode_tps_mean"),
                "test_time": row.get("test_time"), "device_model": row.get("device_model"), "serial": row.get("serial")}
        path = results_path(line["profile"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        n += 1
    return n


def load_results(profile_id: str) -> list[dict[str, Any]]:
    """Every stored result of a profile (lines that do not parse are skipped: the store is a cache)."""
    path = results_path(profile_id)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("profile") == profile_id:
            out.append(row)
    return out
