"""Static checks of the Android demo app (android_demo/). No Android SDK here: nothing is compiled.

Kotlin is parsed with a real Kotlin grammar (tree-sitter-kotlin); the contracts between the app and the Python
side are extracted from both sources and compared, never from a second hand-written list:
- the intent extras BenchmarkActivity reads  <->  the extras exporter/app/bench.py puts on `am start`;
- the config keys ExporterConfig.kt reads    <->  the keys exporter/app/bundle.py writes;
- the run fields BenchRunner.kt writes       <->  exporter/device/protocol.RUN_FIELDS (the native harness schema).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from exporter.app import bench as app_bench, bundle
from exporter.device.protocol import RUN_FIELDS

ts = pytest.importorskip("tree_sitter")
tsk = pytest.importorskip("tree_sitter_kotlin")

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "android_demo"
SRC = APP / "app/src/main/java/dev/exporter/demo"
MANIFEST = APP / "app/src/main/AndroidManifest.xml"
ANDROID = "{http://schemas.android.com/apk/res/android}"

PARSER = ts.Parser(ts.Language(tsk.language()))

# Intent getter -> the `am start` flag that produces that extra type.
GETTER_FLAGS = {"getStringExtra": "--es", "getIntExtra": "--ei", "getLongExtra": "--el",
                "getBooleanExtra": "--ez", "getFloatExtra": "--ef"}
JSON_GETTERS = {"getString", "optString", "getInt", "optInt", "getLong", "optLong", "getDouble", "optDouble",
                "getBoolean", "optBoolean", "getJSONArray", "optJSONArray", "getJSONObject", "optJSONObject",
                "isNull", "has"}


# ------------------------------------------------------------------------------------------------ helpers


def parse(path: Path):
    return PARSER.parse(path.read_bytes())


def syntax_problems(tree) -> list[str]:
    out = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            kind = "MISSING " + node.type if node.is_missing else "ERROR"
            out.append(f"{kind} at line {node.start_point[0] + 1}: {node.text[:60]!r}")
        stack.extend(node.children)
    return out


def walk(node):
    yield node
    for child in node.children:
        yield from walk(child)


def string_value(node) -> str | None:
    """The value of a plain string literal (no templates), else None."""
    if node.type != "string_literal":
        return None
    parts = [c for c in node.children if c.type not in ('"', '"""')]
    if any(c.type != "string_content" for c in parts):
        return None
    return "".join(c.text.decode() for c in parts)


def const_strings(tree) -> dict[str, str]:
    """`const val NAME = "value"` declarations of a file."""
    out = {}
    for node in walk(tree.root_node):
        if node.type != "property_declaration":
            continue
        mods = next((c for c in node.children if c.type == "modifiers"), None)
        if mods is None or b"const" not in mods.text:
            continue
        decl = next(c for c in node.children if c.type == "variable_declaration")
        value = next((string_value(c) for c in node.children if c.type == "string_literal"), None)
        if value is not None:
            out[decl.children[0].text.decode()] = value
    return out


def calls(tree, *, receiver: str | None = None, methods: set[str] | None = None, inside: str | None = None):
    """(method, first-argument node) of `receiver.method(arg, ...)` calls, optionally inside function `inside`."""
    roots = [tree.root_node]
    if inside:
        roots = [n for n in walk(tree.root_node) if n.type == "function_declaration"
                 and n.child_by_field_name("name") is not None and n.child_by_field_name("name").text.decode() == inside]
        assert roots, f"function {inside} not found"
    found = []
    for root in roots:
        for node in walk(root):
            if node.type != "call_expression" or node.children[0].type != "navigation_expression":
                continue
            nav = node.children[0]
            method = nav.children[-1].text.decode()
            if methods is not None and method not in methods:
                continue
            if receiver is not None and nav.children[0].text.decode() != receiver:
                continue
            args = next((c for c in node.children if c.type == "value_arguments"), None)
            values = [c for c in args.children if c.type == "value_argument"] if args else []
            if values:
                found.append((method, values[0].children[-1]))
    return sorted(found, key=lambda item: item[1].start_byte)  # source order, not tree-walk order


def resolve(arg, consts: dict[str, str]) -> str:
    value = string_value(arg)
    if value is not None:
        return value
    name = arg.text.decode()
    assert name in consts, f"{name} is neither a string literal nor a const val"
    return consts[name]


# ------------------------------------------------------------------------------------------------ tests


KOTLIN_FILES = sorted(APP.rglob("*.kt"))


def test_kotlin_sources_exist():
    names = {p.name for p in KOTLIN_FILES}
    assert {"MainActivity.kt", "SettingsActivity.kt", "BenchmarkActivity.kt", "ExporterConfig.kt",
            "BenchRunner.kt", "LlmSession.kt"} <= names


@pytest.mark.parametrize("path", KOTLIN_FILES, ids=lambda p: p.name)
def test_kotlin_parses_without_errors(path):
    assert syntax_problems(parse(path)) == []


@pytest.mark.parametrize("broken", [
    "class A {\n    fun f( {\n    }\n}\n",
    "fun g(): Int {\n    return listOf(1, 2.map { it }\n}\n",
    "val x = \"unterminated\n",
])
def test_kotlin_checker_catches_broken_code(broken, tmp_path):
    path = tmp_path / "Broken.kt"
    path.write_text(broken)
    assert syntax_problems(parse(path)), "a syntax error went unnoticed: the check could never fail"


def test_kotlin_gradle_scripts_parse():
    # build scripts are Kotlin too
    for path in [APP / "settings.gradle.kts", APP / "build.gradle.kts", APP / "app/build.gradle.kts"]:
        assert syntax_problems(parse(path)) == [], path


def test_xml_resources_are_well_formed():
    files = [MANIFEST, *sorted((APP / "app/src/main/res").rglob("*.xml"))]
    assert len(files) >= 5
    for path in files:
        ET.parse(path)  # raises on malformed XML


def test_layout_ids_used_by_kotlin_exist():
    ids = set()
    for path in (APP / "app/src/main/res").rglob("*.xml"):
        ids |= set(re.findall(r'android:id="@\+id/(\w+)"', path.read_text()))
    used = set()
    for path in KOTLIN_FILES:
        used |= set(re.findall(r"\bR\.id\.(\w+)", path.read_text()))
    assert used and used <= ids, f"R.id names without a view: {sorted(used - ids)}"


def test_manifest_declares_launched_activities():
    root = ET.parse(MANIFEST).getroot()
    activities = {a.get(ANDROID + "name"): a for a in root.iter("activity")}
    assert set(activities) == {".MainActivity", ".SettingsActivity", ".BenchmarkActivity"}
    for name in activities:
        assert (SRC / f"{name[1:]}.kt").is_file(), name
    # the CLI launches this one from the shell user: it must be exported
    bench = activities[app_bench.BENCH_ACTIVITY]
    assert bench.get(ANDROID + "exported") == "true"
    main = activities[".MainActivity"]
    assert main.get(ANDROID + "exported") == "true"
    actions = {a.get(ANDROID + "name") for a in main.iter("action")}
    categories = {c.get(ANDROID + "name") for c in main.iter("category")}
    assert "android.intent.action.MAIN" in actions and "android.intent.category.LAUNCHER" in categories
    assert activities[".SettingsActivity"].get(ANDROID + "exported") == "false"


def test_application_id_is_the_package_the_cli_uses():
    gradle = (APP / "app/build.gradle.kts").read_text()
    assert re.search(r'applicationId\s*=\s*"([^"]+)"', gradle).group(1) == bundle.APP_PACKAGE
    assert re.search(r'namespace\s*=\s*"([^"]+)"', gradle).group(1) == bundle.APP_PACKAGE
    for path in KOTLIN_FILES:
        assert path.read_text().startswith(f"package {bundle.APP_PACKAGE}\n"), path
    assert app_bench.RESULTS_DIR == f"/sdcard/Android/data/{bundle.APP_PACKAGE}/files/bench"


def kotlin_intent_extras() -> dict[str, str]:
    tree = parse(SRC / "BenchmarkActivity.kt")
    consts = const_strings(tree)
    out = {}
    for method, arg in calls(tree, receiver="intent", methods=set(GETTER_FLAGS)):
        out[resolve(arg, consts)] = GETTER_FLAGS[method]
    return out


def python_intent_extras() -> dict[str, str]:
    """Extras in the command app_bench really builds, with every optional value set."""
    spec = app_bench.AppBenchSpec(model_dir="/data/local/tmp/m", run_id="r1", prompt="hello there")
    argv = shlex.split(app_bench.am_start_command(spec))
    out = {}
    for i, word in enumerate(argv):
        if word in GETTER_FLAGS.values():
            out[argv[i + 1]] = word
    return out


def test_intent_extras_match_between_cli_and_activity():
    kotlin, python = kotlin_intent_extras(), python_intent_extras()
    assert len(kotlin) >= 6
    assert kotlin == python


def test_am_start_targets_the_benchmark_activity():
    spec = app_bench.AppBenchSpec(model_dir="/data/local/tmp/m", run_id="r1")
    argv = shlex.split(app_bench.am_start_command(spec))
    assert argv[:2] == ["am", "start"]
    assert argv[argv.index("-n") + 1] == f"{bundle.APP_PACKAGE}/.BenchmarkActivity"
    assert "prompt" not in argv  # unset optional extras are left out


def kotlin_config_keys() -> set[str]:
    tree = parse(SRC / "ExporterConfig.kt")
    consts = const_strings(tree)
    return {resolve(arg, consts) for _, arg in calls(tree, receiver="json", methods=JSON_GETTERS)}


def test_config_keys_read_by_app_equal_keys_bundle_writes(tmp_path):
    from test_bundle import make_export

    export = make_export(tmp_path / "export")
    result = bundle.bundle_app(export, tmp_path / "app")
    written = json.loads((tmp_path / "app" / bundle.CONFIG_ASSET).read_text())
    assert written == result.config
    assert kotlin_config_keys() == set(written)
    assert written["schema_version"] == int(re.search(r"SUPPORTED_SCHEMA = (\d+)",
                                                      (SRC / "ExporterConfig.kt").read_text()).group(1))
    assert const_strings(parse(SRC / "ExporterConfig.kt"))["ASSET_NAME"] == Path(bundle.CONFIG_ASSET).name


def kotlin_run_fields() -> list[str]:
    tree = parse(SRC / "BenchRunner.kt")
    fields = [resolve(arg, {}) for _, arg in calls(tree, methods={"put"}, inside="runRecord")]
    return fields


def test_app_results_use_the_harness_run_schema():
    fields = kotlin_run_fields()
    assert len(fields) == len(set(fields)), "a field is written twice"
    assert fields == list(RUN_FIELDS)


def test_results_document_schema_matches():
    consts = const_strings(parse(SRC / "BenchRunner.kt"))
    assert consts["SCHEMA"] == app_bench.RESULTS_SCHEMA
    assert const_strings(parse(SRC / "BenchmarkActivity.kt"))["RESULTS_DIR"] == app_bench.RESULTS_DIR.rsplit("/", 1)[1]


def test_stats_fields_read_are_executorch_llm_stats():
    tree = parse(SRC / "GenerationStats.kt")
    keys = {resolve(arg, {}) for _, arg in calls(tree, receiver="o", methods=JSON_GETTERS)}
    # extension/llm/stats.h field names as LlmCallback.onStats delivers them
    assert keys == {"prompt_tokens", "generated_tokens", "model_load_start_ms", "model_load_end_ms",
                    "inference_start_ms", "prompt_eval_end_ms", "first_token_ms", "inference_end_ms"}


def test_versions_are_pinned_in_one_catalog():
    versions = bundle.app_versions()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("executorch=="))
    assert versions["executorch"] == pin.split("==")[1]
    assert {"agp", "kotlin", "executorch", "demoApp", "minSdk"} <= set(versions)
    assert versions["minSdk"] == "28"
    catalog = tomllib.loads((APP / bundle.VERSIONS_FILE).read_text())
    assert catalog["libraries"]["executorch-android"]["group"] == "org.pytorch"
    gradle = (APP / "app/build.gradle.kts").read_text()
    # no version literal outside the catalog
    assert not re.search(r'"\d+\.\d+\.\d+"', gradle)
    assert "libs.versions.demoApp" in gradle and "libs.executorch.android" in gradle
    assert '"arm64-v8a"' in gradle


def test_gradle_wrapper_properties_without_jar():
    props = (APP / "gradle/wrapper/gradle-wrapper.properties").read_text()
    assert re.search(r"distributionUrl=https\\://services\.gradle\.org/distributions/gradle-[\d.]+-bin\.zip", props)
    assert not (APP / "gradle/wrapper/gradle-wrapper.jar").exists()


def test_generation_runs_off_the_ui_thread():
    # every model load/generate (LlmSession, BenchRunner) sits inside a worker.execute { } or Thread({ }) body
    checked = 0
    for name in ("MainActivity.kt", "BenchmarkActivity.kt"):
        tree = parse(SRC / name)
        for node in walk(tree.root_node):
            if node.type != "call_expression" or node.children[0].type != "navigation_expression":
                continue
            receiver, method = node.children[0].children[0].text.decode(), node.children[0].children[-1].text.decode()
            heavy = (method in ("generate", "load") and receiver != "ExporterConfig") or (
                method == "run" and receiver.startswith("BenchRunner("))
            if heavy:
                checked += 1
                parent, ok = node.parent, False
                while parent is not None:
                    if parent.type == "call_expression" and parent.children[0].text.decode() in (
                            "worker.execute", "Thread"):
                        ok = True
                        break
                    parent = parent.parent
                assert ok, f"{name}:{node.start_point[0] + 1} calls {node.text[:40]!r} on the UI thread"
    assert checked >= 3
