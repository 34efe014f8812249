"""`exporter app-bench` end to end through the STAND-IN adb (tests/standin_adb; no phone, no app, no Android).

The stand-in runs shell commands on this machine with the fake phone's root/bin first on PATH. This test (and
nothing shared) installs a FAKE APP there: `pm`, `dumpsys package` and `am` shims. The `am` shim plays
BenchmarkActivity: it parses the `am start` extras, checks the model folder, and writes a results file in the
app's schema a moment later (so the CLI's polling is exercised). Behaviour is set per test in fake_app.json.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standin_adb"))
from standin import ADB, StandIn  # noqa: E402

from conftest import fake_export
from exporter.app import bench as app_bench
from exporter.artifact import Artifact
from exporter.device.adb import Adb
from exporter.app.bench import run_app_bench
from exporter.app.bundle import APP_PACKAGE, app_versions
from exporter.cli import cli
from exporter.errors import AppError
from exporter.device.push import push_artifact
from exporter.device.protocol import RUN_FIELDS

S24 = "R5CX10S24"

# ---- the fake app (test fixture only) --------------------------------------------------------------------

AM_SHIM = r'''#!PYTHON
"""FAKE `am` for tests: stands in for dev.exporter.demo/.BenchmarkActivity. Not the app."""
import json, os, subprocess, sys, time
ROOT = ROOT_PATH
cfg = json.load(open(os.path.join(ROOT, "fake_app.json")))
args = sys.argv[1:]
if args[:1] == ["force-stop"]:
    sys.exit(0)
if args[:1] != ["start"]:
    sys.exit("fake am: only `am start` and `am force-stop`")
extras, i, component = {}, 1, None
while i < len(args):
    a = args[i]
    if a == "-n":
        component = args[i + 1]; i += 2
    elif a in ("--es", "--ei"):
        extras[args[i + 1]] = (a, args[i + 2]); i += 3
    elif a in ("-S", "-W"):
        i += 1
    else:
        sys.exit(f"fake am: unexpected argument {a!r}")
# the stand-in rewrote /data paths to the fake phone's folder; log them as the phone would see them
seen = {k: (flag, v.replace(ROOT, "")) for k, (flag, v) in extras.items()}
with open(os.path.join(ROOT, "am_calls.jsonl"), "a") as f:
    f.write(json.dumps({"component": component, "extras": seen}) + "\n")
if not cfg.get("installed", True) or component != PACKAGE + "/.BenchmarkActivity":
    print("Error: Activity class {" + str(component) + "} does not exist.")
    sys.exit(0)  # am start reports this on stdout and still exits 0 on many Android versions
print("Starting: Intent { cmp=" + component + " (has extras) }")
mode = cfg.get("mode", "ok")
if mode == "silent":
    sys.exit(0)
val = {k: v for k, (_, v) in extras.items()}
ints = {k: int(v) for k, (flag, v) in extras.items() if flag == "--ei"}
model_dir = val["model_dir"]
doc = {"schema": "exporter-app-bench/1", "run_id": val["run_id"], "app_version": cfg.get("version"),
       "executorch_version": "1.5.1", "device": {"model": "SM-S921B"}, "memory": {"total_pss_kb": 400000},
       "runs": [], "error": None}
if not os.path.isfile(os.path.join(model_dir, "model.pte")):
    doc["error"] = "IOException: " + model_dir + "/model.pte is missing or unreadable (run `exporter push`)"
elif mode == "error":
    doc["error"] = "IllegalStateException: LlmModule.load() failed with ExecuTorch error 34"
else:
    plen = ints["prompt_len"] if "prompt" not in val else 7
    for r in range(ints["reps"]):
        run = {"run": r, "threads": 5, "cpu_set": [], "prompt_tokens": plen, "gen_tokens": ints["gen_len"],
               "model_load_ms": 812.0, "prefill_ms": 100.0 + r, "prefill_tps": plen / ((100.0 + r) / 1000),
               "ttft_ms": 104.0 + r, "decode_ms": 500.0, "decode_tps": ints["gen_len"] / 0.5,
               "token_ms_p50": 31.0, "token_ms_p90": 33.0, "token_ms_p99": 40.0, "peak_rss_kb": 350000}
        if mode == "bad_schema":
            del run["decode_tps"]
        doc["runs"].append(run)
out_dir = os.path.join(ROOT, "sdcard/Android/data", PACKAGE, "files/bench")
os.makedirs(out_dir, exist_ok=True)
final = os.path.join(out_dir, val["run_id"] + ".json")
tmp = final + ".partial"
open(tmp, "w").write(json.dumps(doc))
# like the app: the file appears under its real name only when complete, a little later
subprocess.Popen(["sh", "-c", f"sleep {cfg.get('delay_s', 0.5)}; mv '{tmp}' '{final}'"],
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 start_new_session=True)
'''

PM_SHIM = r'''#!PYTHON
"""FAKE `pm` for tests (not Android's): `pm list packages [FILTER]`."""
import json, os, sys
cfg = json.load(open(os.path.join(ROOT_PATH, "fake_app.json")))
if sys.argv[1:3] != ["list", "packages"]:
    sys.exit("fake pm: only `pm list packages`")
pkgs = ["com.android.settings", "com.google.android.gms"] + ([PACKAGE] if cfg.get("installed", True) else [])
flt = sys.argv[3] if len(sys.argv) > 3 else ""
for p in pkgs:
    if flt in p:
        print("package:" + p)
'''

DUMPSYS_SHIM = r'''#!PYTHON
"""FAKE `dumpsys` for tests: `dumpsys package PKG` from fake_app.json, anything else to the stand-in's."""
import json, os, sys
cfg = json.load(open(os.path.join(ROOT_PATH, "fake_app.json")))
if sys.argv[1:2] == ["package"]:
    if cfg.get("installed", True) and sys.argv[2:3] == [PACKAGE]:
        print("Packages:\n  Package [" + PACKAGE + "] (8c1f2e1):\n    versionCode=1 minSdk=28 targetSdk=35\n"
              "    versionName=" + cfg["version"] + "\n    flags=[ DEBUGGABLE HAS_CODE ALLOW_CLEAR_USER_DATA ]")
    sys.exit(0)
os.execv(os.path.join(os.path.dirname(os.path.abspath(__file__)), "dumpsys.standin"), [sys.argv[0]] + sys.argv[1:])
'''


class FakeApp:
    def __init__(self, root: Path):
        self.root = root

    def set(self, **cfg) -> None:
        base = {"installed": True, "version": app_versions()["demoApp"], "mode": "ok", "delay_s": 0.5}
        (self.root / "fake_app.json").write_text(json.dumps({**base, **cfg}))

    def calls(self) -> list[dict]:
        path = self.root / "am_calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def results(self) -> list[Path]:
        d = self.root / "sdcard/Android/data" / APP_PACKAGE / "files/bench"
        return sorted(d.glob("*")) if d.exists() else []


def _install_shims(root: Path) -> None:
    bin_dir = root / "bin"
    (bin_dir / "dumpsys").rename(bin_dir / "dumpsys.standin")
    for name, text in (("am", AM_SHIM), ("pm", PM_SHIM), ("dumpsys", DUMPSYS_SHIM)):
        body = (text.replace("#!PYTHON", "#!" + sys.executable, 1).replace("ROOT_PATH", repr(str(root)))
                .replace("PACKAGE", repr(APP_PACKAGE)).replace("+ repr(APP_PACKAGE) +", "+ PACKAGE +"))
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)


def make_export(folder: Path) -> Path:
    return fake_export(folder, payload=hashlib.sha256(b"app-bench").digest() * 1024,
                       **{"model.id": "HuggingFaceTB/SmolLM2-135M-Instruct", "threads": 4, "cpu_set": [4, 5, 6, 7],
                          "max_seq_len": 512, "context.requested": 512})


@pytest.fixture
def phone(tmp_path, monkeypatch):
    s = StandIn.phones(tmp_path, S24)
    for k, v in s.env.items():
        monkeypatch.setenv(k, v)
    subprocess.run([str(ADB), "devices"], check=True, capture_output=True)  # materializes the fake phone
    root = s.root(S24)
    _install_shims(root)
    app = FakeApp(root)
    app.set()
    return app


@pytest.fixture
def export(tmp_path):
    return make_export(tmp_path / "smollm2")


def _bench(export, **kw):
    kw.setdefault("poll_s", 0.1)
    kw.setdefault("timeout_s", 20)
    return run_app_bench(Adb(S24), export, **kw)


# ---- tests -----------------------------------------------------------------------------------------------


def test_app_bench_launches_waits_pulls_and_validates(phone, export):
    push_artifact(Adb(S24), Artifact.open(export))
    result, doc = _bench(export, prompt_len=32, gen_len=16, reps=3, warmup=2)
    assert len(result.runs) == 3 and all(set(RUN_FIELDS) <= set(r) for r in result.runs)
    assert (result.prompt_len, result.gen_len, result.runner) == (32, 16, "android_app")
    assert doc["memory"]["total_pss_kb"] == 400000
    [call] = phone.calls()
    assert call["component"] == f"{APP_PACKAGE}/.BenchmarkActivity"
    assert call["extras"] == {"run_id": ["--es", doc["run_id"]], "model_dir": ["--es", "/data/local/tmp/smollm2"],
                              "prompt_len": ["--ei", "32"], "gen_len": ["--ei", "16"], "reps": ["--ei", "3"],
                              "warmup": ["--ei", "2"]}
    assert set(call["extras"]) <= set(app_bench.INTENT_EXTRAS)
    assert phone.results() == []  # pulled, then removed from the phone
    # the runtime's thread count differs from the profile's (LlmModule sets its own): said, not hidden
    assert any("threads" in w for w in result.device.warnings)


def test_cli_app_bench_reports_like_bench(phone, export):
    push_artifact(Adb(S24), Artifact.open(export))
    runner = CliRunner()
    res = runner.invoke(cli, ["app-bench", str(export), "--serial", S24, "-p", "32", "--gen", "16", "-r", "2",
                              "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    [row] = doc["rows"]
    assert row["status"] == "ok" and row["runner"] == "android_app" and row["test"] == "pp32+tg16"
    assert row["n_runs"] == 2 and row["decode_tps_mean"] == pytest.approx(32.0)
    assert row["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and row["soc"]
    md = runner.invoke(cli, ["app-bench", str(export), "--serial", S24, "-p", "32", "--gen", "16", "-r", "2"])
    assert md.exit_code == 0, md.output
    assert "| pp32+tg16 |" in md.stdout and "tg t/s" in md.stdout


def test_fixed_prompt_is_sent_and_real_token_count_reported(phone, export):
    push_artifact(Adb(S24), Artifact.open(export))
    result, _ = _bench(export, prompt="Tell me about phones", gen_len=8, reps=1)
    [call] = phone.calls()
    assert call["extras"]["prompt"] == ["--es", "Tell me about phones"]
    assert result.prompt_len == 7


def test_app_not_installed(phone, export):
    phone.set(installed=False)
    with pytest.raises(AppError, match="not installed") as err:
        _bench(export)
    assert err.value.exit_code == 9 and "installDebug" in err.value.hint
    assert phone.calls() == []


def test_wrong_app_version(phone, export):
    phone.set(version="0.0.1")
    with pytest.raises(AppError, match="version 0.0.1"):
        _bench(export)


def test_model_not_pushed(phone, export):
    with pytest.raises(AppError, match="not on") as err:
        _bench(export)
    assert "exporter push" in err.value.hint


def test_failure_on_the_phone_is_reported(phone, export):
    push_artifact(Adb(S24), Artifact.open(export))
    phone.set(mode="error")
    with pytest.raises(AppError, match="error 34"):
        _bench(export)


def test_results_off_schema_are_rejected(phone, export):
    push_artifact(Adb(S24), Artifact.open(export))
    phone.set(mode="bad_schema")
    with pytest.raises(AppError, match="decode_tps"):
        _bench(export)


def test_no_results_times_out(phone, export):
    push_artifact(Adb(S24), Artifact.open(export))
    phone.set(mode="silent")
    with pytest.raises(AppError, match="no results from the app after 1 s"):
        _bench(export, timeout_s=1, poll_s=0.2)


def test_cli_exit_code_for_app_errors(phone, export):
    phone.set(installed=False)
    from exporter.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["app-bench", str(export), "--serial", S24])
    assert exit_.value.code == 9
