"""Pushing an export folder through the STAND-IN adb (not a real device): checksums, resume, unplug, space."""

from __future__ import annotations

import hashlib
import json
import pytest
from conftest import StandIn, fake_export

from exporter.artifact import Artifact

from exporter.device.adb import Adb
from exporter.errors import ArtifactError, DeviceError
from exporter.device.push import push_artifact

S24 = "R5CX10S24"
REMOTE = "/data/local/tmp/exp"


@pytest.fixture
def export_dir(tmp_path):
    return fake_export(tmp_path / "exp", payload=hashlib.sha256(b"seed").digest() * 4096)  # 128 KiB


def push(export_dir):
    return push_artifact(Adb(S24), Artifact.open(export_dir))




def remote_files(s, serial):
    root = s.root(serial) / REMOTE.lstrip("/")
    return {p.name: p.read_bytes() for p in root.iterdir()} if root.exists() else {}


def test_push_verifies_and_resumes(standin, export_dir):
    s = standin(S24)
    res = push(export_dir)
    assert res.remote_dir == REMOTE
    assert [f.action for f in res.files] == ["pushed"] * 3 and res.files[-1].name == "manifest.json"
    files = remote_files(s, S24)
    assert set(files) == {"model.pte", "tokenizer.json", "manifest.json"}
    for name, data in files.items():
        assert data == (export_dir / name).read_bytes()
    pushes_before = s.log(S24).count("PUSH ")
    again = push(export_dir)
    assert [f.action for f in again.files] == ["skipped"] * 3
    assert s.log(S24).count("PUSH ") == pushes_before
    # a local file that no longer matches its manifest is never pushed as if it were the export
    tampered = bytearray(files["tokenizer.json"])
    tampered[-2] ^= 0x01  # same size: only the hash can tell
    (export_dir / "tokenizer.json").write_bytes(bytes(tampered))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        push(export_dir)
    (export_dir / "tokenizer.json").write_text('{}')
    with pytest.raises(ArtifactError, match="its manifest says"):
        push(export_dir)
    # a file changed on the phone is pushed again, the others are skipped
    (s.root(S24) / REMOTE.lstrip("/") / "tokenizer.json").write_text("changed")
    (export_dir / "tokenizer.json").write_bytes(files["tokenizer.json"])
    third = push(export_dir)
    assert {f.name: f.action for f in third.files} == {"model.pte": "skipped", "tokenizer.json": "pushed",
                                                      "manifest.json": "skipped"}


def test_corrupt_remote_file_is_replaced(standin, export_dir):
    s = standin(S24)
    push(export_dir)
    target = s.root(S24) / REMOTE.lstrip("/") / "model.pte"
    target.write_bytes(target.read_bytes()[:1000])  # looks present, is not complete
    res = push(export_dir)
    assert {f.name: f.action for f in res.files}["model.pte"] == "pushed"
    assert target.read_bytes() == (export_dir / "model.pte").read_bytes()


def test_unplug_mid_push_leaves_no_complete_looking_file(standin, export_dir, tmp_path):
    s = standin(S24, **{S24: {"faults": {"unplug_after_push_bytes": 50_000}}})
    with pytest.raises(DeviceError, match="disconnected") as err:
        push(export_dir)
    assert "reconnect" in err.value.hint
    files = remote_files(s, S24)
    assert "model.pte" not in files and "manifest.json" not in files
    assert all(name.endswith(".partial") for name in files)  # the phone was gone: cleanup is left to the next run
    # replug (same phone filesystem, fault gone): the re-run removes the partial and completes
    (s.dir / "state" / S24 / "counters.json").unlink()
    StandIn.phones(tmp_path, S24)
    res = push(export_dir)
    assert [f.action for f in res.files] == ["pushed"] * 3
    assert set(remote_files(s, S24)) == {"model.pte", "tokenizer.json", "manifest.json"}


def test_not_enough_space_is_checked_first(standin, export_dir):
    s = standin(S24, **{S24: {"faults": {"data_free_kb": 64}}})
    with pytest.raises(DeviceError, match="not enough space"):
        push(export_dir)
    assert remote_files(s, S24) == {}
    assert "PUSH" not in s.log(S24)


def test_no_space_during_push_cleans_partial(standin, export_dir):
    s = standin(S24, **{S24: {"faults": {"push_no_space": True}}})
    with pytest.raises(DeviceError, match="not enough space"):
        push(export_dir)
    assert remote_files(s, S24) == {}  # the phone is still there, so the partial was deleted


def test_cli_push_json(standin, export_dir):
    from click.testing import CliRunner

    from exporter.cli import cli

    standin(S24)
    result = CliRunner().invoke(cli, ["push", str(export_dir), "--json", "--remote-dir", "/data/local/tmp/x"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["serial"] == S24 and out["remote_dir"] == "/data/local/tmp/x"
    assert out["pushed_bytes"] == sum(p.stat().st_size for p in export_dir.iterdir())


def test_stalled_push_times_out_instead_of_hanging(standin, export_dir, monkeypatch):
    """Fault: a phone that stops reading made `adb push` hang forever."""
    import time

    import exporter.device.adb as adb_mod

    standin(S24, **{S24: {"faults": {"stall_push": True}}})
    monkeypatch.setattr(adb_mod, "TRANSFER_BASE_S", 2.0)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"stalled: not done after 2 s") as err:
        push(export_dir)
    assert time.monotonic() - t0 < 30 and "reconnect" in err.value.hint


def test_transfer_timeout_scales_with_bytes():
    from exporter.device.adb import transfer_timeout

    assert transfer_timeout(4 << 30) > 10 * transfer_timeout(64 << 20) / 2 > transfer_timeout(0)
