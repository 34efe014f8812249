"""The profiles added for issue 11's "phones to cover": each loads, each stand-in phone (tests/standin_adb, a
STAND-IN adb, never a device) is detected as its own profile through the real detection code, and the SoCs that
share a board name, CPU parts or a core layout are told apart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from exporter import profiles as P
from exporter.device.adb import Adb
from exporter.device.detect import describe, layout_distance, nearest_profile, parse_probe
from exporter.profiles import isa_from_cpuinfo, list_profiles, load_profile

PHONES = Path(__file__).resolve().parents[1] / "standin_adb" / "phones"

# profile id -> (stand-in phone folder, the property detection must match it by)
NEW = {
    "sm8250": ("snapdragon865_sm8250_android10", "board_platform"),
    "sm6450": ("snapdragon6gen1_sm6450", "soc_model"),
    "sm7550": ("snapdragon7gen3_sm7550", "soc_model"),
    "sm8850": ("snapdragon8elitegen5_sm8850", "soc_model"),
    "mt6893": ("dimensity1200_mt6893_android11", "board_platform"),
    "mt6895": ("dimensity8100_mt6895", "soc_model"),
    "mt6993": ("dimensity9500_mt6993", "soc_model"),
}
DOTPROD_ONLY = ("sm8250", "sm6450", "mt6893", "mt6895")


@pytest.fixture(autouse=True)
def _shipped_dir(monkeypatch):
    monkeypatch.delenv("EXPORTER_PROFILES_DIR", raising=False)


def _serial(pid: str) -> str:
    return f"STANDIN{pid.upper()}"


@pytest.fixture
def phone(tmp_path, monkeypatch):
    """phone(pid, folder=None) -> serial of a stand-in phone served by the stand-in adb (not a device)."""
    from standin import StandIn  # tests/standin_adb is put on sys.path by tests/conftest.py

    devices: list[dict] = []

    def add(pid: str, folder: str | Path | None = None, serial: str | None = None) -> str:
        serial = serial or _serial(pid)
        devices.append({"serial": serial, "phone": str(folder) if folder is not None else NEW[pid][0]})
        s = StandIn(tmp_path / f"cfg{len(devices)}", list(devices))
        for k, v in s.env.items():
            monkeypatch.setenv(k, v)
        return serial

    return add


def _copy_phone(pid: str, tmp_path: Path, props: dict[str, str | None]) -> Path:
    """A copy of `pid`'s stand-in phone with some getprop values changed (None removes the property)."""
    dst = tmp_path / f"{pid}_modified"
    shutil.copytree(PHONES / NEW[pid][0], dst)
    data = yaml.safe_load((dst / "phone.yaml").read_text())
    for key, value in props.items():
        if value is None:
            data["props"].pop(key, None)
        else:
            data["props"][key] = value
    (dst / "phone.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


# --------------------------------------------------------------------------------------------- the profiles


@pytest.mark.parametrize("pid", sorted(NEW))
def test_new_profile_is_consistent(pid):
    p = load_profile(pid)
    assert p.id == pid == Path(p.source).stem
    assert p.total_cores == 8
    assert p.detect.soc_model == (pid.upper(),)
    # the threads are the big cores: the cpu_set is the last clusters, exactly as many cpus as threads
    assert p.cpu_set == tuple(range(p.total_cores - p.threads, p.total_cores))
    assert p.default_seq_len <= p.max_seq_len
    for c in p.clusters:
        if c.core in P.KNOWN_CORE_PARTS:
            assert c.part == P.KNOWN_CORE_PARTS[c.core]
    header = Path(p.source).read_text().splitlines()[0]
    assert header == "# yaml-language-server: $schema=../docs/schemas/profile.schema.json"


def test_new_profiles_are_listed():
    ids = {p.id for p in list_profiles()}
    assert set(NEW) <= ids
    assert "sm8350" not in NEW  # owned by another change; not written here


def test_dotprod_only_profiles_expect_no_i8mm():
    for pid in DOTPROD_ONLY:
        assert load_profile(pid).isa == ("asimd", "dotprod"), pid
    for pid in ("sm7550", "sm8850", "mt6993"):
        assert {"i8mm", "bf16"} <= set(load_profile(pid).isa), pid


def test_sme_levels_tell_the_two_newest_apart():
    """8 Elite Gen 5 has SME but its public cpuinfo dumps show no sme2 flag; the Dimensity 9500 has SME2."""
    sm8850, mt6993 = load_profile("sm8850"), load_profile("mt6993")
    assert "sme" in sm8850.isa and "sme2" not in sm8850.isa
    assert {"sme", "sme2", "sve2"} <= set(mt6993.isa)
    assert isa_from_cpuinfo("sve sve2 sme smei8i32".split())[-1] == "sme"
    assert isa_from_cpuinfo("sme sme2".split()) == ("sme", "sme2")


def test_oryon_v3_part_differs_from_earlier_oryon():
    assert {c.part for c in load_profile("sm8850").clusters} == {0x002}
    assert {c.part for c in load_profile("sm8750").clusters} == {0x001}


def test_recipes_follow_the_hardware():
    """Profiles differ where RAM, bandwidth and ISA differ (reasons in docs/profiles.md)."""
    for pid in DOTPROD_ONLY:
        p = load_profile(pid)
        assert p.memory.typical_ram_gb <= 8 and p.memory.bandwidth_gbps <= 52
        assert (p.default_seq_len, p.max_seq_len) == (512, 2048), pid
        assert p.recipe.label() == "8da4w-g32+emb4w-g64", pid
    mid = load_profile("sm7550")
    assert (mid.default_seq_len, mid.max_seq_len) == (1024, 2048)
    for pid in ("sm8850", "mt6993"):
        p = load_profile(pid)
        assert p.memory.typical_ram_gb >= 12 and p.memory.bandwidth_gbps > 80
        assert (p.default_seq_len, p.max_seq_len) == (2048, 8192), pid
    # the lm_head goes to 8 bits exactly where bandwidth is >= 84 GB/s with 12 GB: the 8 Elite class
    for p in list_profiles():
        fast = p.memory.bandwidth_gbps >= 84 and p.memory.typical_ram_gb >= 12
        want = "8da4w-g32+emb4w-g64+out8w" if fast else "8da4w-g32+emb4w-g64"
        assert p.recipe.label() == want, p.id
        assert (p.default_seq_len, p.max_seq_len) == (2048, 8192) or not fast, p.id
    assert {p.id for p in list_profiles() if p.recipe.output == "8w"} >= {"sm8850", "mt6993", "sm8750", "mt6991"}


# --------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize("pid", sorted(NEW))
def test_standin_phone_is_detected_as_its_own_profile(pid, phone):
    serial = phone(pid)
    d = describe(Adb(serial))
    prof = load_profile(pid)
    assert (d.profile_id, d.matched_by) == (pid, NEW[pid][1])
    assert d.cpu_count == prof.total_cores
    assert d.cpu_parts == tuple(c.part for c in prof.clusters for _ in range(c.count))
    assert d.isa == prof.isa
    assert len(d.clusters) == len(prof.clusters)
    assert [len(c) for c in d.clusters] == [c.count for c in prof.clusters]
    for cl, cpus in zip(prof.clusters, d.clusters):
        assert abs(d.max_freq_khz[cpus[0]] / 1e6 - cl.max_ghz) < 0.02, (pid, cl)
    if pid == "sm8850":
        # all-big-core Oryon: detection calls only the fastest cluster "performance"; the profile uses six
        assert d.big_cores == (6, 7)
        assert len(d.warnings) == 1 and "pins to cpus" in d.warnings[0]
    else:
        assert set(prof.cpu_set) <= set(d.big_cores)
        assert [w for w in d.warnings if "ro.soc.model is not set" not in w] == []
    gb = d.ram_bytes / 2**30
    assert prof.memory.typical_ram_gb - 1.5 < gb <= prof.memory.typical_ram_gb


@pytest.mark.parametrize("pid", sorted(NEW))
def test_core_layout_alone_points_at_its_own_profile(pid):
    """With every getprop name hidden, the nearest profile by MIDR parts, clusters, ISA and clock is still this
    one and no other (same-layout pairs: sm6450/mt6895, sm7550/mt6897; same-vendor-core pairs: sm8850/sm8750)."""
    text = _probe_text(pid)
    _, cores, _ = parse_probe(text)
    isa = isa_from_cpuinfo(set.intersection(*(set(c.features) for c in cores)))
    profiles = list_profiles()
    assert nearest_profile(cores, isa, profiles).id == pid
    own = layout_distance(cores, isa, load_profile(pid))
    others = sorted((layout_distance(cores, isa, p), p.id) for p in profiles if p.id != pid)
    assert own < others[0][0], (pid, own, others[:2])


def _probe_text(pid: str) -> str:
    """What the probe would print for the recorded phone, built from its files (no adb involved)."""
    folder = PHONES / NEW[pid][0]
    data = yaml.safe_load((folder / "phone.yaml").read_text())
    freq = "\n".join(f"cpu{i} {c['max_khz']}" for i, c in enumerate(data["cpus"]))
    return (f"@@getprop\n@@cpuinfo\n{(folder / 'cpuinfo').read_text()}@@meminfo\n{(folder / 'meminfo').read_text()}"
            f"@@freq\n{freq}\n@@uname\naarch64\n")


def test_kona_board_identifies_865_without_soc_model(phone):
    """Android 10: no ro.soc.model; the board name decides, and the Qualcomm Kryo parts are read as such."""
    d = describe(Adb(phone("sm8250")))
    assert d.soc_model is None and d.board_platform == "kona"
    assert any("ro.soc.model is not set" in w for w in d.warnings)
    assert d.cpu_parts[0] == 0x805 and d.cpu_parts[-1] == 0x804


def test_855_board_is_not_taken_for_865(phone, tmp_path):
    """The 855 (board msmnile) has the same Kryo parts 0x804/0x805: it matches nothing; nearest is sm8250."""
    folder = _copy_phone("sm8250", tmp_path, {"ro.board.platform": "msmnile"})
    d = describe(Adb(phone("sm8250", folder)))
    assert d.profile_id is None and d.nearest_profile_id == "sm8250"


def test_parrot_board_of_another_soc_is_not_taken_for_6_gen_1(phone, tmp_path):
    """sm6450 does not claim 'parrot': a Snapdragon 7s Gen 2 (SM7435) phone on that board must not match it."""
    folder = _copy_phone("sm6450", tmp_path, {"ro.soc.model": "SM7435"})
    d = describe(Adb(phone("sm6450", folder)))
    assert d.board_platform == "parrot"
    assert d.profile_id is None


def test_crow_board_of_another_soc_is_not_taken_for_7_gen_3(phone, tmp_path):
    folder = _copy_phone("sm7550", tmp_path, {"ro.soc.model": "SM7675"})
    d = describe(Adb(phone("sm7550", folder)))
    assert d.profile_id is None


def test_dimensity_1200_and_8100_told_apart_by_board(phone, tmp_path):
    """Same cores (A55 + A78), both dotprod-only: the 1200 on Android 11 matches by board, the 8100 by soc model;
    swapping the 8100's names for the 1200's makes it the 1200 and the layout check flags the difference."""
    d1200 = describe(Adb(phone("mt6893")))
    d8100 = describe(Adb(phone("mt6895")))
    assert (d1200.profile_id, d1200.matched_by) == ("mt6893", "board_platform")
    assert (d8100.profile_id, d8100.matched_by) == ("mt6895", "soc_model")
    assert d1200.cpu_parts == d8100.cpu_parts  # the parts alone cannot tell them apart
    assert len(d1200.clusters) == 3 and len(d8100.clusters) == 2
    folder = _copy_phone("mt6895", tmp_path, {"ro.soc.model": None, "ro.board.platform": "mt6893",
                                             "ro.hardware": "mt6893"})
    relabelled = describe(Adb(phone("mt6895", folder, serial="RELABELLED")))
    assert relabelled.profile_id == "mt6893"


def test_8_elite_gen_5_without_names_is_not_taken_for_8_elite(phone, tmp_path):
    folder = _copy_phone("sm8850", tmp_path, {"ro.soc.model": None, "ro.board.platform": "sun"})
    d = describe(Adb(phone("sm8850", folder)))
    assert d.profile_id == "sm8750" and d.matched_by == "board_platform"  # the names are trusted first ...
    assert any("core layout differs" in w for w in d.warnings)  # ... and the 0x002 parts are flagged
    assert any("sme" in w and "does not expect" in w for w in d.warnings)


def test_9500_reports_sme2_and_8_elite_gen_5_does_not(phone):
    d9500 = describe(Adb(phone("mt6993")))
    d8eg5 = describe(Adb(phone("sm8850")))
    assert "sme2" in d9500.isa and "sme2" not in d8eg5.isa
    assert "sme" in d8eg5.isa and "sve2" in d8eg5.isa
    assert d9500.big_cores == (4, 5, 6, 7)


def test_wrong_sme2_expectation_is_flagged(phone, tmp_path):
    """A profile claiming sme2 for the 8 Elite Gen 5 would be caught by the stand-in phone's features."""
    src = Path(load_profile("sm8850").source).read_text()
    bad = tmp_path / "sm8850_sme2.yaml"
    bad.write_text(src.replace("isa: [asimd, dotprod, i8mm, bf16, sve, sve2, sme]",
                            "isa: [asimd, dotprod, i8mm, bf16, sve, sve2, sme, sme2]"))
    prof = load_profile(bad)
    assert "sme2" in prof.isa
    d = describe(Adb(phone("sm8850")), profiles=[prof])
    assert d.profile_id == "sm8850"
    assert any("expects sme2 but the phone does not report it" in w for w in d.warnings)


# --------------------------------------------------------------------------------------------- the flagship recipe


@pytest.mark.slow
def test_flagship_recipe_with_8bit_lm_head_lowers_and_matches_eager(tmp_path):
    """The 85 GB/s profiles quantize the lm_head to 8 bits (`+out8w`): that export must lower to XNNPACK and
    agree with the eager model quantized the same way (a tiny Llama; the .pte runs on this host)."""
    import torch

    from conftest import make_tiny_model
    from exporter.artifact import PTE
    from exporter.build.export import CALIBRATION_TOKENS, run_export
    from exporter.build.model import build_static_lm
    from exporter.build.plan import build_plan
    from exporter.build.recipes import apply_recipe, collect_importance
    from exporter.build.source import load_model, load_tokenizer, resolve_source, sample_text
    from exporter.verification import PteDecoder

    folder = make_tiny_model(tmp_path / "llama", "llama")
    out = tmp_path / "out"
    plan = build_plan(str(folder), "sm8850", out, max_seq_len=64)
    assert plan.recipe.output == "8w"
    manifest = run_export(plan).manifest
    assert manifest.recipe.label == "8da4w-g32+emb4w-g64+out8w"
    assert manifest.recipe.applied.output == "8da8w-per-channel"
    assert manifest.export.delegated_calls > 0
    # the 8-bit lm_head runs inside XNNPACK too: no matmul is left to the portable kernels, and the one
    # dequantize left is the 4-bit embedding table's (the 4-bit profiles' exports leave the same one)
    ops = manifest.export.non_delegated_ops
    assert not [op for op in ops if "mm" in op or "linear" in op], ops
    assert ops.get("torchao.dequantize_affine.default") == 1 and "aten.embedding.default" in ops, ops

    src = resolve_source(str(folder))
    hf = load_model(src)
    lm = build_static_lm(hf, 64)
    ids = load_tokenizer(src)(sample_text(), add_special_tokens=False)["input_ids"][:CALIBRATION_TOKENS]
    apply_recipe(lm, plan.recipe, collect_importance(hf, ids))
    tokens = [5, 17, 42, 99, 3, 250, 7, 8, 13, 21, 34, 55]
    got = PteDecoder(out / PTE).score(tokens, 6)
    rows = []
    with torch.no_grad():
        lm.reset_cache()
        rows.append(lm(torch.tensor([tokens[:6]]), torch.tensor([0]))[0])
        for pos in range(6, len(tokens)):
            rows.append(lm(torch.tensor([tokens[pos: pos + 1]]), torch.tensor([pos]))[0])
    want = torch.stack(rows)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    # the same tolerance as the 4-bit export test: XNNPACK and torchao round the int8 activations differently
    assert cos.mean() > 0.98, cos
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.7
