"""The adb layer against the STAND-IN adb (tests/standin_adb/adb): a script, not a real device."""

from __future__ import annotations

import sys

import pytest

from exporter.device.adb import Adb, find_adb, list_devices, parse_df_available_kb, parse_devices, parse_getprop, pick_serials
from exporter.errors import DeviceError

S24, PX8 = "R5CX10S24", "3A281FDJH008"




def test_parse_devices_states():
    text = ("List of devices attached\n"
            "R5CX1  device usb:1-1 product:e1qsqw model:SM_S921U device:e1q transport_id:3\n"
            "emulator-5554 offline transport_id:1\n"
            "ABC unauthorized usb:1-2 transport_id:4\n"
            "XYZ no permissions (user in plugdev group; are your udev rules wrong?); see [http://x] usb:1-3\n\n")
    got = parse_devices(text)
    assert [(d.serial, d.state) for d in got] == [("R5CX1", "device"), ("emulator-5554", "offline"),
                                                   ("ABC", "unauthorized"), ("XYZ", "no permissions")]
    assert got[0].model == "SM_S921U" and got[0].transport_id == "3"


def test_parse_getprop_and_df():
    assert parse_getprop("[ro.soc.model]: [SM8650]\n[empty]: []\n") == {"ro.soc.model": "SM8650", "empty": ""}
    df = "Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/block/dm-48 230000 100000 130000 44% /data\n"
    assert parse_df_available_kb(df) == 130000
    wrapped = "Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/very/long/name\n 230000 100000 777 44% /data\n"
    assert parse_df_available_kb(wrapped) == 777
    with pytest.raises(DeviceError):
        parse_df_available_kb("df: /nope: No such file")


def test_find_adb_order(tmp_path, monkeypatch):
    fake = tmp_path / "myadb"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EXPORTER_ADB", str(fake))
    assert find_adb() == str(fake)
    assert find_adb(sys.executable) == sys.executable  # explicit --adb wins over the env var
    monkeypatch.setenv("EXPORTER_ADB", str(tmp_path / "missing"))
    with pytest.raises(DeviceError, match="not an executable"):
        find_adb()


def test_list_and_pick(standin):
    standin(S24, PX8, **{PX8: {"state": "unauthorized"}})
    devs = list_devices()
    assert {(d.serial, d.state) for d in devs} == {(S24, "device"), (PX8, "unauthorized")}
    with pytest.raises(DeviceError, match="several phones"):
        pick_serials()
    assert pick_serials([S24]) == [S24]
    assert pick_serials(all_devices=True) == [S24]
    with pytest.raises(DeviceError, match="unauthorized") as err:
        pick_serials([PX8])
    assert "RSA" in err.value.hint or "Allow USB debugging" in err.value.hint
    with pytest.raises(DeviceError, match="not found"):
        pick_serials(["NOPE"])


def test_no_device(standin):
    standin()
    with pytest.raises(DeviceError, match="no phone"):
        pick_serials()


def test_offline(standin):
    standin(S24, **{S24: {"state": "offline"}})
    with pytest.raises(DeviceError, match="offline"):
        Adb(S24).shell("true")


def test_shell_exit_codes_and_output(standin):
    standin(S24)
    adb = Adb(S24)
    r = adb.shell("echo hi; echo err >&2; printf 'no newline'; exit 7", check=False)
    assert r.rc == 7 and r.stdout == "hi\nno newline" and "err" in r.stderr
    with pytest.raises(DeviceError, match="exit 3"):
        adb.shell("exit 3")
    assert adb.getprop("ro.soc.model") == "SM8650"
    assert adb.getprops()["ro.board.platform"] == "pineapple"
    assert "MemTotal" in adb.read_text("/proc/meminfo")
    assert adb.free_bytes("/data/local/tmp") == 112000000 * 1024


def test_push_pull_sha(standin, tmp_path):
    s = standin(S24)
    adb = Adb(S24)
    local = tmp_path / "blob.bin"
    local.write_bytes(bytes(range(256)) * 100)
    seen = []
    adb.push(local, "/data/local/tmp/blob.bin", progress=lambda r, d, t: seen.append((d, t)))
    assert (s.root(S24) / "data/local/tmp/blob.bin").read_bytes() == local.read_bytes()
    assert seen[0] == (0, 25600) and seen[-1] == (25600, 25600)
    import hashlib
    want = hashlib.sha256(local.read_bytes()).hexdigest()
    assert adb.sha256(["/data/local/tmp/blob.bin", "/data/local/tmp/missing"]) == {"/data/local/tmp/blob.bin": want}
    back = tmp_path / "back.bin"
    adb.pull("/data/local/tmp/blob.bin", back)
    assert back.read_bytes() == local.read_bytes()


def test_unplug_mid_shell(standin):
    standin(S24, **{S24: {"faults": {"unplug_after_shell_calls": 1}}})
    adb = Adb(S24)
    adb.shell("true")
    with pytest.raises(DeviceError, match="disconnected"):
        adb.shell("echo second")
    with pytest.raises(DeviceError, match="disconnected|not found"):
        adb.shell("echo third")
    assert list_devices() == []
