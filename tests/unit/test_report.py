"""Report rows, printers and the bench helpers that need no phone."""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
import struct
from pathlib import Path

import pytest

from conftest import fake_export

from exporter.artifact import Artifact
from exporter.device.bench import BenchSpec, Case, DeviceInfo, TestResult, check_runner_binary, raise_for_failures
from exporter.device.protocol import RUN_FIELDS, parse_observer
from exporter.device.telemetry import cpu_temp_c, parse_battery, parse_thermal, wait_cool
from exporter.errors import HarnessError, PartialBenchError, UsageError
from exporter.roofline import manifest_token_bytes
from exporter.report import ROW_FIELDS, build_rows, to_csv, to_json, to_markdown, write_report


def _info(tmp_path, nbytes=1_000_000):
    return Artifact.open(fake_export(tmp_path / "exp", payload=b"\0" * (nbytes - 8), kv_cache_bytes=3 << 20))


def _runs(rng, n, plen):
    out = []
    for i in range(n):
        run = {k: 1 for k in RUN_FIELDS}
        run.update(run=i, cpu_set=[4, 5], prompt_tokens=plen, prefill_tps=rng.uniform(100, 200),
                   decode_tps=rng.uniform(10, 20), ttft_ms=rng.uniform(50, 60), model_load_ms=rng.uniform(5, 9),
                   peak_rss_kb=rng.randint(50_000, 90_000))
        out.append(run)
    return out


def _device(bw=60.0, **kw):
    return DeviceInfo(serial="S1", model="Phone", soc="SM8650", board_platform="pineapple", android_release="14",
                      sdk=34, profile_id="sm8650", detected_profile_id="sm8650", bandwidth_gbps=bw,
                      bandwidth_source="profile sm8650", **kw)


def test_rows_stats_roofline_and_printers(tmp_path):
    rng = random.Random(1)
    info = _info(tmp_path)
    results = [TestResult(device=_device(), case=Case(p, 32, 2), cpu_set=(4, 5), runs=_runs(rng, 4, p),
                          env={"temp_c_before": 40.5, "battery": {"level": 80, "status": "charging", "plugged": "usb"}},
                          test_time="2025-01-01T00:00:00Z", reps=4, warmup=1) for p in (64, 512)]
    results.append(TestResult(device=_device(), case=Case(2048, 32, 2), cpu_set=(4, 5),
                              error="harness failed: out of memory", test_time="2025-01-01T00:00:01Z"))
    rows = build_rows(results, info)
    assert list(rows[0])[: len(ROW_FIELDS)] == list(ROW_FIELDS)
    r = rows[0]
    dec = [x["decode_tps"] for x in results[0].runs]
    assert r["decode_tps_mean"] == pytest.approx(statistics.fmean(dec))
    assert r["decode_tps_sd"] == pytest.approx(statistics.stdev(dec))
    assert r["peak_rss_mib"] == pytest.approx(max(x["peak_rss_kb"] for x in results[0].runs) / 1024)
    assert r["kv_cache"] == "fp32" and r["kv_cache_bytes"] == info.manifest.kv_cache_bytes == 3 << 20
    assert r["rss_other_mib"] == pytest.approx(r["peak_rss_mib"] - 1_000_000 / 2**20 - 3)
    per_token = manifest_token_bytes(info.manifest, 64, 32).total
    assert r["decode_bytes_per_token"] == pytest.approx(per_token)
    assert r["roofline_decode_tps"] == pytest.approx(60e9 / per_token)
    assert r["roofline_fraction"] == pytest.approx(r["decode_tps_mean"] * per_token / 60e9)
    assert r["cpu_mask"] == "0x30" and r["test"] == "pp64+tg32" and r["model"] == "tiny/llama"
    assert r["samples_decode_tps"] == dec and len(r["samples"]) == 4
    failed = rows[2]
    assert failed["status"] == "failed" and failed["decode_tps_mean"] is None and "out of memory" in failed["error"]

    doc = json.loads(to_json(rows))
    assert doc["rows"][1]["samples"][0]["prompt_tokens"] == 512
    table = list(csv.reader(io.StringIO(to_csv(rows))))
    assert table[0] == list(ROW_FIELDS) and len(table) == 4 and all(len(t) == len(ROW_FIELDS) for t in table)
    md = to_markdown(rows)
    assert "pp64+tg32" in md and "±" in md and "FAILED" in md and "roofline" in md
    assert f"| {1_000_000 / 2**20:.1f}+3.0 |" in md and "no roofline" not in md

    written = write_report(rows, tmp_path / "out")
    assert {"results.json", "results.csv", "results.md"} <= set(written)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "tokens_per_s.png" not in written
    else:
        assert written["tokens_per_s.png"].read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(PartialBenchError):
        raise_for_failures(results)
    raise_for_failures(results[:2])


def test_parse_observer_missing_keys():
    line = ('I 00:00:01 PyTorchObserver {"prompt_tokens":10,"generated_tokens":20,"model_load_start_ms":1000,'
            '"model_load_end_ms":1300,"inference_start_ms":1400,"prompt_eval_end_ms":1500,'
            '"inference_end_ms":2500,"SCALING_FACTOR_UNITS_PER_SECOND":1000}')
    run = parse_observer("generated text\n" + line + "\n")
    assert run["model_load_ms"] == 300 and run["prefill_ms"] == 100 and run["prefill_tps"] == pytest.approx(100)
    assert run["decode_tps"] == pytest.approx(20) and run["ttft_ms"] is None and run["peak_rss_kb"] is None
    with pytest.raises(HarnessError):
        parse_observer("no stats here")


def test_thermal_battery_parsing():
    temps = parse_thermal(["cpu-0-0-0 36800", "battery 29500", "pm8550_tz 34100", "bogus -40000", "cpu-1-2-0 41200"])
    assert temps["cpu-0-0-0"] == 36.8 and "bogus" not in temps
    assert cpu_temp_c(temps) == 41.2
    assert cpu_temp_c(parse_thermal(["battery 30000", "skin 33000"])) == 33.0
    bat = parse_battery(["  AC powered: false", "  USB powered: true", "  status: 2", "  level: 87",
                         "  temperature: 295"])
    assert bat == {"level": 87, "status": "charging", "plugged": "usb", "temp_c": 29.5}


def test_wait_cool():
    temps = iter([50.0, 48.0, 44.0, 40.0])
    clock = [0.0]
    out = wait_cool(lambda: next(temps), 45.0, 60.0, poll_s=5, sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                    clock=lambda: clock[0])
    assert out["temp_c"] == 44.0 and out["cooldown_wait_s"] == 10.0 and not out["cooldown_timed_out"]
    clock[0] = 0.0
    out = wait_cool(lambda: 60.0, 45.0, 12.0, poll_s=5, sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                    clock=lambda: clock[0])
    assert out["cooldown_timed_out"] and out["cooldown_wait_s"] == 15.0


def _elf(path: Path, machine: int, cls: int = 2) -> Path:
    path.write_bytes(b"\x7fELF" + bytes([cls, 1, 1, 0]) + b"\0" * 8 + struct.pack("<HH", 2, machine) + b"\0" * 64)
    return path


def test_runner_architecture_check_follows_the_device(tmp_path):
    check_runner_binary(_elf(tmp_path / "arm64", 183), "aarch64")
    check_runner_binary(_elf(tmp_path / "x64", 62), "x86_64")  # an x86_64 emulator (or the stand-in) runs x86-64
    with pytest.raises(HarnessError, match="wrong architecture: x86-64, the device is aarch64"):
        check_runner_binary(_elf(tmp_path / "x64", 62), "aarch64")
    with pytest.raises(HarnessError, match="wrong architecture"):
        check_runner_binary(_elf(tmp_path / "arm32", 40, cls=1), "aarch64")
    with pytest.raises(HarnessError, match="wrong architecture"):
        check_runner_binary(_elf(tmp_path / "x64", 62), None)  # unknown: phones are aarch64
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    check_runner_binary(script, "aarch64")  # a wrapper (a bundle's run.sh) runs in the device's shell
    script.write_text("MZ\x90\x00")
    with pytest.raises(HarnessError, match="neither an ELF executable nor a #! script"):
        check_runner_binary(script, "aarch64")


def test_emulated_rows_are_marked_and_get_no_roofline(tmp_path):
    rng = random.Random(2)
    result = TestResult(device=_device(emulated=True), case=Case(64, 32, 2), runs=_runs(rng, 2, 64), reps=2)
    row = build_rows([result], _info(tmp_path))[0]
    assert row["emulated"] is True and row["roofline_decode_tps"] is None and row["roofline_fraction"] is None
    assert "(emulated)" in to_markdown([row])
    assert "true" in next(csv.DictReader(io.StringIO(to_csv([row]))))["emulated"]


def test_a_manifest_without_weight_bytes_gets_no_roofline_and_says_why(tmp_path):
    old = Artifact.open(fake_export(tmp_path / "old", weight_bytes_per_token=None))
    result = TestResult(device=_device(), case=Case(64, 32, 2), runs=_runs(random.Random(3), 2, 64), reps=2)
    row = build_rows([result], old)[0]
    assert row["decode_tps_mean"] > 0 and row["decode_bytes_per_token"] is None and row["roofline_fraction"] is None
    assert "no roofline: the manifest was written before" in to_markdown([row])


def test_grid_has_one_case_per_combination():
    spec = BenchSpec(prompt_lengths=(64, 512), gen_lengths=(32, 128), threads=(2, 4))
    cases = spec.cases(default_threads=6)
    assert len(cases) == 8 and cases[0] == Case(64, 32, 2) and cases[-1] == Case(512, 128, 4)
    assert [c.threads for c in BenchSpec().cases(default_threads=6)] == [6]


def test_bench_spec_validation():
    with pytest.raises(UsageError):
        BenchSpec(prompt_lengths=())
    with pytest.raises(UsageError):
        BenchSpec(threads=(0,))
    with pytest.raises(UsageError):
        BenchSpec(runner="nope")
    with pytest.raises(UsageError, match="positive"):
        BenchSpec(prefill_chunk=0)
    with pytest.raises(UsageError, match="harness setting"):
        BenchSpec(runner="llama_main", prefill_chunk=128)
