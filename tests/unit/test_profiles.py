"""Device profiles: every shipped YAML loads; bad files fail with messages that name the file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import profiles as P
from exporter.errors import ProfileError, RecipeError
from pydantic import ValidationError
from exporter.build.recipes import Recipe, parse_label
from exporter.profiles import list_profiles, load_profile, profiles_dir

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "profiles"
SHIPPED_IDS = {"sm8450", "sm8550", "sm8650", "sm8750", "sm7475", "mt6985", "mt6989", "mt6991", "mt6897"}


@pytest.fixture(autouse=True)
def _shipped_dir(monkeypatch):
    monkeypatch.delenv("EXPORTER_PROFILES_DIR", raising=False)


def bad(name: str) -> str:
    return str(DATA / name)


# --------------------------------------------------------------------------------------------- shipped


def test_profiles_dir_is_the_repo_folder():
    assert profiles_dir().resolve() == (REPO / "device_profiles").resolve()


def test_every_shipped_profile_loads_and_base_is_excluded():
    profs = list_profiles()
    ids = [p.id for p in profs]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))
    assert SHIPPED_IDS <= set(ids)
    assert "base" not in ids


@pytest.mark.parametrize("pid", sorted(SHIPPED_IDS))
def test_shipped_profile_is_consistent(pid):
    p = load_profile(pid)
    assert p.id == pid == Path(p.source).stem
    assert Path(p.source).resolve().parent == profiles_dir().resolve()
    assert p.vendor in ("qualcomm", "mediatek")
    assert p.total_cores == 8
    assert 1 <= p.threads <= 6
    assert len(p.cpu_set) >= p.threads
    assert all(0 <= c < p.total_cores for c in p.cpu_set)
    # cpu_set holds the fastest cores: never the first (little) cluster on these phones
    assert min(p.cpu_set) >= p.clusters[0].count or p.clusters[0].core == "oryon"
    assert p.default_seq_len <= p.max_seq_len
    assert {"asimd", "dotprod", "i8mm", "bf16"} <= set(p.isa)
    assert p.detect.soc_model == (pid.upper(),)
    assert p.memory.bandwidth_gbps > 40
    for c in p.clusters:
        if c.core in P.KNOWN_CORE_PARTS:
            assert c.part == P.KNOWN_CORE_PARTS[c.core]


def test_detect_values_do_not_collide():
    seen: dict[tuple[str, str], str] = {}
    for p in list_profiles():
        for prop in ("soc_model", "board_platform", "hardware"):
            for value in getattr(p.detect, prop):
                key = (prop, value.lower())
                assert key not in seen, f"{p.id} and {seen[key]} both claim {prop}={value}"
                seen[key] = p.id


def test_sm8650_values():
    p = load_profile("sm8650")
    assert p.name == "Snapdragon 8 Gen 3"
    assert p.detect.board_platform == ("pineapple",)
    assert [(c.core, c.count) for c in p.clusters] == [("cortex-a520", 2), ("cortex-a720", 3), ("cortex-a720", 2), ("cortex-x4", 1)]
    assert p.clusters[-1].part == 0xD82
    assert p.cluster_cpus() == [(0, 1), (2, 3, 4), (5, 6), (7,)]
    assert p.threads == 6 and p.cpu_set == (2, 3, 4, 5, 6, 7)
    # inherited from base.yaml
    assert p.recipe == R("8da4w", 32, "4w", 64, "linear")
    assert p.recipe.label() == "8da4w-g32+emb4w-g64"
    assert (p.default_seq_len, p.max_seq_len) == (1024, 4096)


def test_low_ram_profiles_have_smaller_context():
    for pid in ("sm7475", "mt6897"):
        p = load_profile(pid)
        assert p.memory.typical_ram_gb <= 8
        assert p.max_seq_len == 2048


def test_id_lookup_is_case_insensitive():
    assert load_profile("SM8650").id == "sm8650"


def test_profile_is_frozen_and_json_ready():
    import json

    p = load_profile("mt6989")
    with pytest.raises(ValidationError, match="frozen"):
        p.runtime = p.runtime  # type: ignore[misc]
    d = json.loads(json.dumps(p.to_dict()))
    assert d["recipe_label"] == "8da4w-g32+emb4w-g64"
    assert d["total_cores"] == 8
    assert d["cpu"]["clusters"][2] == {"core": "cortex-x4", "count": 1, "max_ghz": 3.25, "part": "0xd82"}
    assert d["runtime"] == {"threads": 4, "cpu_set": [4, 5, 6, 7]}


# --------------------------------------------------------------------------------------------- lookup


def test_unknown_id_suggests_closest():
    with pytest.raises(ProfileError) as e:
        load_profile("sm8655")
    assert str(e.value) == "unknown device 'sm8655'"
    assert "sm8650" in e.value.hint
    assert "exporter devices" in e.value.hint


def test_base_is_abstract():
    with pytest.raises(ProfileError, match="abstract"):
        load_profile("base")


def test_missing_file():
    with pytest.raises(ProfileError, match="not found: .*nope.yaml"):
        load_profile(bad("nope.yaml"))


def test_env_var_overrides_dir(monkeypatch, tmp_path):
    (tmp_path / "base.yaml").write_text((REPO / "device_profiles" / "base.yaml").read_text())
    (tmp_path / "sm8650.yaml").write_text((REPO / "device_profiles" / "sm8650.yaml").read_text())
    monkeypatch.setenv("EXPORTER_PROFILES_DIR", str(tmp_path))
    assert profiles_dir() == tmp_path
    assert [p.id for p in list_profiles()] == ["sm8650"]
    monkeypatch.setenv("EXPORTER_PROFILES_DIR", str(tmp_path / "missing"))
    with pytest.raises(ProfileError, match="EXPORTER_PROFILES_DIR"):
        profiles_dir()


# --------------------------------------------------------------------------------------------- user files


def test_user_file_extends_shipped_profile():
    p = load_profile(bad("good_user.yaml"))
    assert p.id == "my-phone"
    assert p.name == "My Snapdragon 8 Gen 3 phone"
    # merged mappings: overridden keys change, siblings are inherited
    assert p.max_seq_len == 2048 and p.default_seq_len == 1024
    assert p.recipe.group_size == 64 and p.recipe.linear == "8da4w" and p.recipe.embedding_group_size == 64
    # lists replace, not append
    assert p.cpu_set == (4, 5, 6, 7) and p.threads == 4
    assert p.clusters == load_profile("sm8650").clusters
    assert p.vendor == "qualcomm"
    assert p.source.endswith("good_user.yaml")


def test_user_file_extends_base(tmp_path):
    f = tmp_path / "phone.yaml"
    f.write_text(
        "extends: base\nid: tiny\nvendor: other\nname: Tiny\n"
        "cpu:\n  clusters:\n    - {core: cortex-a55, count: 4, max_ghz: 2.0, part: 0xd05}\n"
        "memory: {typical_ram_gb: 4, lpddr: LPDDR4X, bandwidth_gbps: 17}\n"
        "runtime: {threads: 4, cpu_set: [0, 1, 2, 3]}\n"
    )
    p = load_profile(f)
    assert p.isa == ("asimd", "dotprod")  # from base
    assert p.recipe.label() == "8da4w-g32+emb4w-g64"
    assert p.total_cores == 4
    assert p.detect == P.Detect()


def test_deep_merge_rules():
    merged = P._deep_merge({"a": {"x": 1, "y": [1, 2]}, "b": 1}, {"a": {"y": [3]}, "c": 2})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}


# --------------------------------------------------------------------------------------------- errors


def test_unknown_key_names_file_path_and_suggestion():
    with pytest.raises(ProfileError) as e:
        load_profile(bad("typo_key.yaml"))
    msg = str(e.value)
    assert msg.startswith("profile typo (")
    assert "typo_key.yaml" in msg
    assert "unknown key 'runtime.thread' (did you mean 'threads'?)" in msg
    assert "cpu_set" in e.value.hint


def test_unknown_top_level_key_suggestion(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("extends: sm8650\nid: x\nrecipie: {}\n")
    with pytest.raises(ProfileError, match=r"unknown key 'recipie' \(did you mean 'recipe'\?\)"):
        load_profile(f)


def test_wrong_type_says_expected_type():
    with pytest.raises(ProfileError) as e:
        load_profile(bad("wrong_type.yaml"))
    msg = str(e.value)
    assert "wrong_type.yaml" in msg
    assert "'runtime.threads': expected an integer, got a string ('four')" in msg


def test_missing_required_field():
    with pytest.raises(ProfileError) as e:
        load_profile(bad("missing_field.yaml"))
    assert "missing_field.yaml" in str(e.value)
    assert "missing required field 'memory'" in str(e.value)
    assert e.value.hint == "add `memory: {typical_ram_gb: ..., lpddr: ..., bandwidth_gbps: ...}` to the profile"


def test_bad_recipe_scheme_is_recipe_error():
    with pytest.raises(RecipeError) as e:
        load_profile(bad("bad_scheme.yaml"))
    msg = str(e.value)
    assert "bad_scheme.yaml" in msg
    assert "field 'recipe.linear': '8da4x' is not one of 8da4w, 8da8w, 4w, 8w, none (did you mean '8da4w'?)" in msg


def test_bad_group_size():
    with pytest.raises(RecipeError) as e:
        load_profile(bad("bad_group.yaml"))
    assert "field 'recipe.group_size': 48 is not valid for linear scheme 8da4w" in str(e.value)
    assert "32, 64, 128, 256" in str(e.value)


def test_group_size_must_be_zero_for_8bit():
    with pytest.raises(RecipeError, match=r"field 'recipe.group_size': 32 is not valid for linear scheme 8da8w.*set recipe.group_size: 0"):
        load_profile(bad("bad_group_8bit.yaml"))


def test_default_context_above_max():
    with pytest.raises(ProfileError, match=r"'context.default': 8192 is larger than context.max \(4096\)"):
        load_profile(bad("bad_context.yaml"))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bad_cpu_set_range.yaml", r"cpu ids \[8\] do not exist \(cpus are 0..7\)"),
        ("bad_cpu_set_dup.yaml", r"cpu ids listed twice: \[7\]"),
        ("bad_cpu_set_short.yaml", r"2 cpus for 6 threads"),
        ("bad_threads.yaml", r"'runtime.threads': 12 is outside 1..8"),
        ("bad_part.yaml", r"'cpu.clusters\[1\].part': cortex-x4 has MIDR part 0xd82, not 0xd81"),
        ("bad_count.yaml", r"'cpu.clusters\[0\].count': must be at least 1, got 0"),
        ("bad_isa.yaml", r"unknown feature 'asimddp'"),
        ("bad_version.yaml", r"schema_version 2 is not supported"),
        ("bad_extends.yaml", r"field 'extends': no profile 'sm8655' \(did you mean 'sm8650'\?\)"),
        ("cycle_a.yaml", r"`extends` cycle"),
    ],
)
def test_invalid_profiles(name, expected):
    with pytest.raises(ProfileError, match=expected) as e:
        load_profile(bad(name))
    assert name in str(e.value) or "cycle" in expected


def test_malformed_yaml_names_file_and_line():
    with pytest.raises(ProfileError) as e:
        load_profile(bad("malformed.yaml"))
    msg = str(e.value)
    assert "malformed.yaml" in msg
    assert "malformed YAML at line 5" in msg


def test_duplicate_key_is_an_error():
    with pytest.raises(ProfileError, match=r"duplicate_key.yaml.*line 5.*duplicate key 'threads'"):
        load_profile(bad("duplicate_key.yaml"))


def test_shipped_id_must_match_file_name(monkeypatch, tmp_path):
    (tmp_path / "base.yaml").write_text((REPO / "device_profiles" / "base.yaml").read_text())
    (tmp_path / "sm9999.yaml").write_text((REPO / "device_profiles" / "sm8650.yaml").read_text())
    monkeypatch.setenv("EXPORTER_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ProfileError, match=r"'sm8650' does not match the file name 'sm9999.yaml'"):
        list_profiles()


# --------------------------------------------------------------------------------------------- recipe


def R(linear, group, emb, emb_group, output, kv_cache="fp32") -> Recipe:
    return Recipe.make(linear=linear, group_size=group, embedding=emb, embedding_group_size=emb_group, output=output,
                       kv_cache=kv_cache)


@pytest.mark.parametrize("fields, label", [
    (("8da4w", 32, "4w", 32, "linear"), "8da4w-g32+emb4w-g32"),
    (("8da4w", 0, "8w", 0, "8w"), "8da4w-pc+emb8w+out8w"),
    (("8da8w", 0, "none", 0, "linear"), "8da8w"),
    (("none", 0, "none", 0, "none"), "none+outnone"),
    (("8da4w", 32, "4w", 64, "linear", "int8"), "8da4w-g32+emb4w-g64+kv8"),
    (("none", 0, "none", 0, "8w", "int8"), "none+out8w+kv8"),
])
def test_recipe_labels_round_trip(fields, label):
    assert R(*fields).label() == label
    assert parse_label(label) == R(*fields)


@pytest.mark.parametrize("label, message", [
    ("8da4w-g48", "48 is not valid"), ("8da4x", "'8da4x' is not one of"), ("8da4w+foo", "neither emb"),
    ("8da4w-gx", "cannot read"), ("", "cannot read"), ("8da4w+kv8+emb4w-g32", "neither emb"), ("kv8", "'kv8' is not one of"),
])
def test_bad_recipe_labels(label, message):
    with pytest.raises(RecipeError, match=message):
        parse_label(label)


def test_recipe_validates_on_construction():
    with pytest.raises(RecipeError, match="field 'recipe.output': 'fp16' is not one of linear, 8w, none"):
        R("8da4w", 32, "4w", 32, "fp16")
    with pytest.raises(RecipeError, match="field 'recipe.embedding_group_size': 16"):
        R("8da4w", 32, "4w", 16, "linear")
    with pytest.raises(RecipeError, match="expected an integer"):
        R("8da4w", "32", "4w", 32, "linear")
    with pytest.raises(RecipeError, match="field 'recipe.kv_cache': 'int4' is not one of fp32, int8"):
        R("8da4w", 32, "4w", 32, "linear", "int4")


def test_recipe_replace_checked():
    r = load_profile("sm8650").recipe
    assert r.replace_checked(group_size=128).label() == "8da4w-g128+emb4w-g64"
    # switching to 8-bit without a group size drops it to 0 (the only valid value)
    assert r.replace_checked(linear="8da8w", embedding="8w").label() == "8da8w+emb8w"
    with pytest.raises(RecipeError, match=r"unknown recipe field 'group' \(did you mean 'group_size'\?\)"):
        r.replace_checked(group=64)
    with pytest.raises(RecipeError, match="'recipe.group_size': 64 is not valid for linear scheme 8w"):
        r.replace_checked(linear="8w", group_size=64)
    assert r.group_size == 32  # original untouched


def test_isa_from_cpuinfo_maps_kernel_flags():
    flags = "fp asimd evtstrm aes asimddp sha512 i8mm bf16 bti".split()
    assert P.isa_from_cpuinfo(flags) == ("asimd", "dotprod", "i8mm", "bf16")
    assert set(P.CPUINFO_FLAG) == set(P.ISA_FEATURES)
    assert P.CPUINFO_FLAG["dotprod"] == "asimddp"


def test_docs_table_lists_every_shipped_profile():
    doc = (REPO / "docs" / "profiles.md").read_text()
    for p in list_profiles():
        assert f"| `{p.id}` | {p.name} |" in doc, f"docs/profiles.md has no row for {p.id}"


# --------------------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("text, message", [
    ("? [a, b]\n: 1\n", "keys must be strings, found list"),
    ("id: x\n1: 2\n", "keys must be strings, found int"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 levels"),
    # a billion laughs: each line refers to the previous one nine times
    ("a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                                              for p, c in zip("abcdefgh", "bcdefghi")), "more than 100000 values"),
    ("- 1\n- 2\n", "expected a mapping at the top level"),
    ("\x00\x01", "malformed YAML|cannot read"),
    ("id: [unclosed\n", "malformed YAML at line"),
])
def test_hostile_yaml_is_a_profile_error(tmp_path, text, message):
    f = tmp_path / "hostile.yaml"
    f.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(f)


def test_not_utf8_is_a_profile_error(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(f)


def test_shipped_schema_file_is_current_and_validates_every_shipped_profile():
    """docs/schemas/profile.schema.json is what editors read: it must be the generated one, and accept our files."""
    import json

    import jsonschema

    from exporter.schemas import SCHEMA_FILES

    on_disk = json.loads((REPO / "docs" / "schemas" / "profile.schema.json").read_text())
    assert on_disk == SCHEMA_FILES["profile.schema.json"](), "run `python -m exporter.schemas` to regenerate"
    validator = jsonschema.Draft202012Validator(on_disk)
    import yaml

    for f in sorted((REPO / "device_profiles").glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        assert not list(validator.iter_errors(data)), f.name
        assert f.read_text().startswith("# yaml-language-server: $schema=../docs/schemas/profile.schema.json")
    typo = {"extends": "sm8650", "runtime": {"thread": 4}}
    assert list(validator.iter_errors(typo)), "the schema must flag unknown keys as they are typed"


def test_shipped_manifest_schema_is_current_and_accepts_a_written_manifest(tmp_path):
    """docs/schemas/manifest.schema.json must be the generated one and describe what export writes."""
    import json

    import jsonschema

    from conftest import fake_export
    from exporter.schemas import SCHEMA_FILES

    on_disk = json.loads((REPO / "docs" / "schemas" / "manifest.schema.json").read_text())
    assert on_disk == SCHEMA_FILES["manifest.schema.json"](), "run `python -m exporter.schemas` to regenerate"
    validator = jsonschema.Draft202012Validator(on_disk)
    written = json.loads((fake_export(tmp_path / "e") / "manifest.json").read_text())
    assert list(validator.iter_errors(written)) == []
    written["pte"]["file"] = "../outside.pte"
    written["max_seq_len"] = "64"
    assert len(list(validator.iter_errors(written))) >= 2
