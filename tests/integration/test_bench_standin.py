"""`exporter bench` end to end through the STAND-IN adb (tests/standin_adb; a script, never a real device).

The stand-in runs pushed executables on this machine and answers `uname -m` from it, so it is an x86_64 device
and the host-built harness is the right architecture for it. The real host harness on a real tiny .pte is used
where it can be built; the fake harness script covers orchestration and failure paths quickly.
"""

from __future__ import annotations

import hashlib
import json
import platform
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standin_adb"))
from standin import FAKE_HARNESS, FAKE_LLAMA_MAIN, StandIn  # noqa: E402

from exporter.artifact import Artifact
from exporter.profiles import load_profile
from exporter.roofline import manifest_token_bytes
from conftest import fake_export

S24, X100 = "R5CX10S24", "10AD5X100P"


def make_export(folder: Path, pte_bytes: bytes | None = None, *, payload: bytes = b"", profile="sm8650", max_seq_len=64) -> Path:
    return fake_export(folder, pte=pte_bytes, payload=payload, **{"profile.id": profile, "max_seq_len": max_seq_len,
                                                                 "context.requested": max_seq_len})


def run_cli(args, env_extra, timeout=300):
    env = dict(os.environ)
    env.update(env_extra)
    env.pop("EXPORTER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "exporter", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def export(tmp_path):
    return make_export(tmp_path / "tiny", payload=os.urandom(40_000))


def bench_args(folder, *extra):
    return ["bench", folder, "--harness", FAKE_HARNESS, "--prompt-lengths", "4,8", "--gen", "4", "--repeat", "2",
            "--no-cooldown", "--json", *extra]


def test_bench_fake_harness_end_to_end(tmp_path, export):
    from exporter.results import load_results

    stored = len(load_results("sm8650"))
    s = StandIn.phones(tmp_path, S24)
    out_dir = tmp_path / "out"
    p = run_cli(bench_args(export, "--serial", S24, "--out-dir", out_dir), s.env)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)["rows"]
    # each phone test is also kept for `exporter plan` (the measured efficiencies of the profile)
    new = load_results("sm8650")[stored:]
    assert [r["decode_tps"] for r in new] == [r["decode_tps_mean"] for r in rows] and new[0]["pte_bytes"] > 0
    prof = load_profile("sm8650")
    assert [r["test"] for r in rows] == ["pp4+tg4", "pp8+tg4"]
    for r, plen in zip(rows, (4, 8)):
        assert r["status"] == "ok" and r["serial"] == S24 and r["soc"] == "SM8650" and r["profile_id"] == "sm8650"
        assert [x["prompt_tokens"] for x in r["samples"]] == [plen, plen]
        assert r["decode_tps_mean"] > 0 and r["n_runs"] == 2
        assert r["cpu_set"] == ",".join(map(str, prof.cpu_set)) and r["threads"] == prof.threads
        assert r["bandwidth_gbps"] == prof.memory.bandwidth_gbps
        per_token = manifest_token_bytes(Artifact.open(export).manifest, plen, 4).total
        assert r["roofline_decode_tps"] == pytest.approx(prof.memory.bandwidth_gbps * 1e9 / per_token)
        assert r["battery_level"] == 87 and r["battery_status"] == "charging"
        assert 30 < r["temp_c_before"] < 45 and len(r["cpu_freq_khz_before"]) == 8
        assert r["pte_sha256"] == hashlib.sha256((export / "model.pte").read_bytes()).hexdigest()
    log = s.log(S24)
    assert f"PINNED [' --cpu-set {','.join(map(str, prof.cpu_set))}']" in log
    assert {"results.json", "results.csv", "results.md", "tokens_per_s.png"} <= {f.name for f in out_dir.iterdir()}
    assert "not a real device" not in p.stdout  # results only on stdout
    # second run: export and harness already on the phone, nothing pushed again
    pushes = log.count("PUSH ")
    p2 = run_cli(bench_args(export, "--serial", S24), s.env)
    assert p2.returncode == 0, p2.stderr
    assert s.log(S24).count("PUSH ") == pushes


def test_markdown_is_default_output(tmp_path, export):
    s = StandIn.phones(tmp_path, S24)
    args = [a for a in bench_args(export, "--serial", S24) if a != "--json"]
    p = run_cli(args, s.env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("| model |") and "pp8+tg4" in p.stdout


def test_runner_for_another_architecture_is_refused_before_pushing(tmp_path, export):
    s = StandIn.phones(tmp_path, S24)
    other = {"x86_64": 183, "aarch64": 62}.get(platform.machine(), 62)  # EM_AARCH64 / EM_X86_64
    elf = tmp_path / "runner"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 11 + other.to_bytes(2, "little") + b"\0" * 44)
    args = [a if a != FAKE_HARNESS else elf for a in bench_args(export, "--serial", S24)]
    p = run_cli(args, s.env)
    assert p.returncode == 7 and "wrong architecture" in p.stderr and p.stdout == ""
    assert "PUSH " not in s.log(S24)
    elf.write_text("plain text")
    p = run_cli(args, s.env)
    assert p.returncode == 7 and "neither an ELF executable nor a #! script" in p.stderr


def test_pte_that_fails_to_load_shows_its_error(tmp_path):
    s = StandIn.phones(tmp_path, S24)
    export = make_export(tmp_path / "bad", payload=b"BAD!" + os.urandom(1000))
    p = run_cli(bench_args(export, "--serial", S24), s.env)
    assert p.returncode == 7, p.stderr
    assert "InvalidProgram" in p.stderr and p.stdout == ""


def test_unplugged_mid_run_reports_nothing(tmp_path, export):
    s = StandIn.phones(tmp_path, S24, **{S24: {"faults": {"unplug_when_shell_contains": "--prompt-len 8"}}})
    p = run_cli(bench_args(export, "--serial", S24), s.env)
    assert p.returncode == 6, p.stderr
    assert "disconnected" in p.stderr and p.stdout == ""


def test_several_phones_partial_failure(tmp_path):
    s = StandIn.phones(tmp_path, S24, X100, **{X100: {"faults": {"unplug_when_shell_contains": "--prompt-len 4"}}})
    export = make_export(tmp_path / "tiny", payload=os.urandom(20_000))
    p = run_cli(bench_args(export, "--serial", S24, "--serial", X100), s.env)
    assert p.returncode == 8, p.stderr
    rows = json.loads(p.stdout)["rows"]
    by = {(r["serial"], r["prompt_len"]): r for r in rows}
    assert len(rows) == 4
    assert by[(S24, 4)]["status"] == by[(S24, 8)]["status"] == "ok"
    assert by[(X100, 4)]["status"] == "failed" and by[(X100, 4)]["decode_tps_mean"] is None
    assert "DeviceError" in by[(X100, 8)]["error"]
    assert "mt6989" in p.stderr  # the .pte's profile differs from what the vivo phone matched: warned


def test_several_phones_need_serial(tmp_path, export):
    s = StandIn.phones(tmp_path, S24, X100)
    p = run_cli(bench_args(export), s.env)
    assert p.returncode == 6 and "--serial" in p.stderr


def test_cooldown_waits_and_is_recorded(tmp_path, export):
    s = StandIn.phones(tmp_path, S24, **{S24: {"thermal_sequence_mC": [48000, 48000, 48000, 47000, 41000]}})
    args = ["bench", export, "--serial", S24, "--harness", FAKE_HARNESS, "--prompt-lengths", "4", "--gen", "2",
            "--repeat", "2", "--cooldown-temp", "45", "--cooldown-timeout", "30", "--json"]
    p = run_cli(args, s.env)
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)["rows"][0]
    first, second = row["samples"]
    assert first["cooldown_wait_s"] > 0 and first["temp_c_before"] == 41.0 and not first["cooldown_timed_out"]
    assert second["cooldown_wait_s"] == 0
    assert row["cooldown_wait_s"] == pytest.approx(first["cooldown_wait_s"])


def test_llama_main_runner(tmp_path, export):
    s = StandIn.phones(tmp_path, S24)
    args = ["bench", export, "--serial", S24, "--runner", "llama_main", "--harness", FAKE_LLAMA_MAIN,
            "--prompt-lengths", "6", "--gen", "3", "--repeat", "2", "--no-cooldown", "--json"]
    p = run_cli(args, s.env)
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)["rows"][0]
    assert row["runner"] == "llama_main" and row["n_runs"] == 2
    assert row["samples"][0]["prompt_tokens"] == 6 and row["samples"][0]["gen_tokens"] == 3
    assert row["ttft_ms_mean"] is None and row["decode_tps_mean"] > 0
    assert "taskset" in s.log(S24)


# ------------------------------------------------------------------------ the real host harness, real .pte


@pytest.fixture(scope="module")
def tiny_pte_bytes():
    """A real, tiny ExecuTorch program with the harness's calling convention (no KV cache: last-token logits)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(64, 32)
            self.head = torch.nn.Linear(32, 64)

        def forward(self, tokens, input_pos):
            return self.head(self.emb(tokens)[:, -1, :])

    torch.manual_seed(0)
    seq = torch.export.Dim("seq", min=1, max=31)
    with torch.no_grad():
        prog = torch.export.export(Tiny().eval(), (torch.zeros(1, 4, dtype=torch.long), torch.tensor([0])),
                                   dynamic_shapes=({1: seq}, None), strict=False)
    et = to_edge_transform_and_lower(prog, partitioner=[XnnpackPartitioner()],
                                     constant_methods={"get_max_seq_len": 32, "get_vocab_size": 64}).to_executorch()
    return bytes(et.buffer)


@pytest.mark.native
def test_bench_real_harness_binary_through_standin(tmp_path, harness_binary, tiny_pte_bytes):
    s = StandIn.phones(tmp_path, S24)
    export = make_export(tmp_path / "real", tiny_pte_bytes, max_seq_len=32)
    args = ["bench", export, "--serial", S24, "--harness", harness_binary, "--prompt-lengths", "4,8", "--gen", "4",
            "--repeat", "2", "--threads", "1", "--no-cooldown", "--json"]
    p = run_cli(args, s.env)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for r, plen in zip(rows, (4, 8)):
        sample = r["samples"][0]
        assert "fake" not in sample and sample["prompt_tokens"] == plen and sample["gen_tokens"] == 4
        assert sample["max_seq_len"] == 32  # read by the harness from the .pte's constant method
        assert r["decode_tps_mean"] > 0 and r["prefill_tps_mean"] > 0 and r["threads"] == 1


@pytest.mark.native
def test_bench_host_mode(tmp_path, harness_binary, tiny_pte_bytes):
    export = make_export(tmp_path / "real", tiny_pte_bytes, max_seq_len=32)
    args = ["bench", export, "--host", "--harness", harness_binary, "--prompt-lengths", "4", "--gen", "4",
            "--repeat", "2", "--threads", "1", "--host-bandwidth-gbps", "12.5", "--json"]
    p = run_cli(args, {})
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)["rows"][0]
    assert row["host"] is True and row["serial"] == "host" and row["bandwidth_gbps"] == 12.5
    assert "given" in row["bandwidth_source"]
    per_token = manifest_token_bytes(Artifact.open(export).manifest, 4, 4).total
    assert row["roofline_decode_tps"] == pytest.approx(12.5e9 / per_token)
    assert row["prefill_chunk"] == 4  # one call for the whole prompt unless asked

    p = run_cli(args[:-1] + ["--prompt-lengths", "6", "--prefill-chunk", "4", "--json"], {})
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)["rows"][0]
    assert (row["prompt_len"], row["prefill_chunk"], row["status"]) == (6, 4, "ok")
