"""Detection of each recorded phone through the STAND-IN adb (not a real device)."""

from __future__ import annotations

from pathlib import Path

import pytest


from exporter.device.adb import Adb
from exporter.device.detect import auto_detect, auto_profile, connected_rows, describe, describe_connected, parse_cpuinfo
from exporter.errors import DeviceError
from exporter.profiles import list_profiles, load_profile

S24, X100, PX8, S22 = "R5CX10S24", "10AD5X100P", "3A281FDJH008", "R5CT11S22"




def test_parse_cpuinfo_kernel_format():
    text = (Path(__file__).resolve().parents[1] / "standin_adb/phones/galaxy_s24_sm8650/cpuinfo").read_text()
    cpus = parse_cpuinfo(text)
    assert sorted(cpus) == list(range(8))
    assert cpus[7]["CPU part"] == "0xd82" and cpus[0]["CPU architecture"] == "8"
    assert "asimddp" in cpus[3]["Features"].split()


def test_galaxy_s24_matches_sm8650_by_soc_model(standin):
    standin(S24)
    d = describe(Adb(S24))
    prof = load_profile("sm8650")
    assert (d.profile_id, d.matched_by) == ("sm8650", "soc_model")
    assert d.model == "SM-S921U" and d.android_release == "14" and d.sdk == 34
    assert d.cpu_count == prof.total_cores
    assert d.cpu_parts == tuple(c.part for c in prof.clusters for _ in range(c.count))
    assert set(prof.cpu_set) <= set(d.big_cores) and 0 not in d.big_cores
    assert d.isa == prof.isa
    assert d.warnings == ()
    assert 7 * 2**30 < d.ram_bytes < 8 * 2**30


def test_mt6989_matches_and_warns_about_sve(standin):
    standin(X100)
    d = describe(Adb(X100))
    assert d.profile_id == "mt6989" and d.matched_by == "soc_model"
    assert "sve" in d.isa and "sve2" in d.isa
    prof = load_profile("mt6989")
    if "sve" not in prof.isa:
        assert any("sve" in w and "does not expect" in w for w in d.warnings)
    assert d.big_cores == (4, 5, 6, 7)


def test_same_soc_without_sve_differs(standin, tmp_path):
    """Two MT6989 phones, one whose firmware hides SVE: the feature difference is found and recorded."""
    import shutil

    src = Path(__file__).resolve().parents[1] / "standin_adb/phones/vivo_x100pro_mt6989"
    other = tmp_path / "mt6989_no_sve"
    shutil.copytree(src, other)
    text = (other / "cpuinfo").read_text()
    (other / "cpuinfo").write_text("\n".join(
        " ".join(w for w in line.split(" ") if not w.startswith("sve")) if line.startswith("Features") else line
        for line in text.split("\n")))
    standin(X100, "R5CX10S24", **{"R5CX10S24": {"phone": str(other)}})
    with_sve = describe(Adb(X100))
    without = describe(Adb("R5CX10S24"))
    assert without.profile_id == with_sve.profile_id == "mt6989"
    assert "sve" in with_sve.isa and "sve" not in without.isa
    expects_sve = "sve" in load_profile("mt6989").isa
    assert any("sve" in w for w in with_sve.warnings) == (not expects_sve)
    assert any("sve" in w for w in without.warnings) == expects_sve


def test_pixel8_no_profile_offers_nearest(standin):
    standin(PX8)
    d = describe(Adb(PX8))
    assert d.profile_id is None and d.soc_model == "Tensor G3" and d.board_platform == "zuma"
    assert d.cpu_count == 9 and d.big_cores == (4, 5, 6, 7, 8)
    near = load_profile(d.nearest_profile_id)
    # nearest by layout: it must share the Pixel's core types (A510 / A715 / X3) better than any other profile
    mine = {0xD46, 0xD4D, 0xD4E}
    overlap = len(mine & {c.part for c in near.clusters})
    assert overlap == max(len(mine & {c.part for c in p.clusters}) for p in list_profiles())
    with pytest.raises(DeviceError) as err:
        auto_profile()
    assert "Tensor G3" in str(err.value) and "zuma" in str(err.value)
    assert d.nearest_profile_id in err.value.hint


def test_android11_falls_back_to_board(standin):
    standin(S22)
    d = describe(Adb(S22))
    assert d.soc_model is None and d.android_release == "11"
    assert (d.profile_id, d.matched_by) == ("sm8450", "board_platform")
    assert any("ro.soc.model is not set" in w for w in d.warnings)
    assert auto_profile().id == "sm8450"


def test_describe_connected_and_rows(standin):
    standin(S24, PX8, S22, **{S22: {"state": "unauthorized"}})
    devs = describe_connected()
    by = {d.serial: d for d in devs}
    assert by[S22].state == "unauthorized" and by[S22].profile_id is None and by[S22].warnings
    assert by[S24].profile_id == "sm8650" and by[PX8].profile_id is None
    cols, rows = connected_rows(devs)
    assert len(rows) == 3 and all(len(r) == len(cols) for r in rows)
    assert [d.serial for d in describe_connected(S24)] == [S24]
    with pytest.raises(DeviceError, match="several phones"):
        auto_profile()
    prof, dev = auto_detect(S24)
    assert prof.id == "sm8650" and dev.serial == S24
