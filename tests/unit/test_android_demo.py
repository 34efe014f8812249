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
    """(method, first-argument node) of `receiver.method(arg, ...)` calls, optionally inside function `inside`.
    `tree` may be a parsed file or any node of one."""
    roots = [getattr(tree, "root_node", tree)]
    if inside:
        roots = [n for n in walk(roots[0]) if n.type == "function_declaration"
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


# ------------------------------------------------------------------------------- the pinned LlmModule API
#
# Public members of org.pytorch.executorch.extension.llm.LlmModule in the pinned executorch-android release
# (extension/android/.../llm/LlmModule.kt; identical at v1.4.1 and on main of 2026-08-22, see
# docs/android_demo.md). Names only, read from those sources; `resetNative` is @Deprecated there for `close`.
LLM_MODULE_API = {"load", "generate", "stop", "resetContext", "close", "prefillPrompt", "prefillImages",
                  "prefillNormalizedImage", "prefillAudio", "prefillRawAudio"}
LLM_MODULE_DEPRECATED = {"resetNative"}
# LlmModuleConfig.Builder setters in the same release.
LLM_CONFIG_BUILDER = {"modulePath", "tokenizerPath", "temperature", "dataPath", "modelType", "numBos", "numEos",
                      "loadMode", "build"}


def member_calls(tree, receiver: str) -> list[tuple[str, object]]:
    """(method, call node) of every `receiver.method(...)` call, arguments or not, in source order; `tree` may be
    a parsed file or a node."""
    out = []
    for node in walk(getattr(tree, "root_node", tree)):
        if node.type != "call_expression" or node.children[0].type != "navigation_expression":
            continue
        nav = node.children[0]
        if nav.children[0].type == "identifier" and nav.children[0].text.decode() == receiver:
            out.append((nav.children[-1].text.decode(), node))
    return sorted(out, key=lambda item: item[1].start_byte)


def function_node(tree, name: str):
    found = [n for n in walk(tree.root_node) if n.type == "function_declaration"
             and n.child_by_field_name("name") is not None and n.child_by_field_name("name").text.decode() == name]
    assert len(found) == 1, f"function {name}: {len(found)} declarations"
    return found[0]


def int_consts(tree) -> dict[str, int]:
    """`const val NAME = 123` declarations of a file."""
    out = {}
    for node in walk(tree.root_node):
        if node.type != "property_declaration":
            continue
        mods = next((c for c in node.children if c.type == "modifiers"), None)
        value = next((c for c in node.children if c.type == "number_literal"), None)
        if mods is not None and b"const" in mods.text and value is not None:
            decl = next(c for c in node.children if c.type == "variable_declaration")
            out[decl.children[0].text.decode()] = int(value.text.decode(), 0)
    return out


def catches(node) -> list[tuple[str, object]]:
    """(caught type, catch block) of every catch under `node`."""
    out = []
    for n in walk(node):
        if n.type == "catch_block":
            typ = next(c for c in n.children if c.type == "user_type")
            out.append((typ.text.decode(), n))
    return out


def enclosing_try_catches(call) -> set[str]:
    """Exception types caught by the try blocks whose body holds `call`."""
    types, node = set(), call
    while node.parent is not None:
        parent = node.parent
        if parent.type == "try_expression" and node.type == "block":
            # the try's own catch clauses, not those of tries nested in its body
            types |= {t for t, block in catches(parent) if block.parent == parent}
        node = parent
    return types


def test_no_deprecated_llm_module_calls_anywhere():
    for path in KOTLIN_FILES:
        text = path.read_text()
        assert not re.search(r"\.(%s)\s*\(" % "|".join(LLM_MODULE_DEPRECATED), text), \
            f"{path.name} calls a deprecated LlmModule method"


def test_llm_session_uses_only_the_pinned_api():
    tree = parse(SRC / "LlmSession.kt")
    used = {m for m, _ in member_calls(tree, "module")}
    assert {"load", "generate", "close", "resetContext", "stop"} <= used
    assert used <= LLM_MODULE_API, f"not in the pinned LlmModule API: {sorted(used - LLM_MODULE_API)}"
    # close() releases the native runner; resetNative() is only its deprecated alias
    assert [m for m, _ in member_calls(function_node(tree, "close"), "module")] == ["close"]


def test_bos_comes_from_the_template_text_not_the_runner():
    """The runner prepends no BOS: the chat template's text carries it (bench/compat_check.py bos shows that
    num_bos=1 doubles a template's BOS with a TemplateProcessing tokenizer and adds none without one)."""
    tree = parse(SRC / "LlmSession.kt")
    text = (SRC / "LlmSession.kt").read_text()
    builder = re.search(r"LlmModuleConfig\.create\(\)(.*?)\.build\(\)", text, re.S)
    assert builder, "LlmModule is not built from an LlmModuleConfig"
    setters = re.findall(r"\.(\w+)\(([^()]*)\)", builder.group(1) + ".build()")
    names = [name for name, _ in setters]
    assert set(names) <= LLM_CONFIG_BUILDER, sorted(set(names) - LLM_CONFIG_BUILDER)
    args = dict(setters)
    assert "numBos" in args, "numBos is left to the library default"
    consts = int_consts(tree)
    bos = args["numBos"].strip()
    assert (int(bos) if bos.isdigit() else consts[bos]) == 0
    assert args.get("loadMode", "").strip() == "LlmModuleConfig.LOAD_MODE_MMAP"

    # every templated prompt starts with the whole prefix, which holds the template's BOS text
    tree = parse(SRC / "ChatPrompt.kt")
    render = function_node(tree, "render")
    appended = [n for n in walk(render) if n.type == "call_expression" and n.children[0].text == b"append"]
    appended.sort(key=lambda n: n.start_byte)
    first_arg = appended[0].children[1].children[1].text.decode()
    assert first_arg == "config.chatPrefix"
    # and the prefix is never trimmed: only whole turns are dropped
    build = function_node(tree, "build").text.decode()
    assert "chatPrefix" not in build and "turns.removeFirst()" in build

    # the prefix does hold the template's BOS text when the template writes one (Llama-3 style)
    template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    parts = bundle.render_chat_parts(template, "<|begin_of_text|>", "<|eot_id|>")
    assert parts.prefix.startswith("<|begin_of_text|>") and parts.prefix.count("<|begin_of_text|>") == 1
    assert "<|begin_of_text|>" not in parts.suffix + parts.separator


def test_load_failures_are_caught_with_the_runtime_error_code():
    tree = parse(SRC / "LlmSession.kt")
    load = function_node(tree, "load")
    [(_, call)] = [(m, n) for m, n in member_calls(load, "module") if m == "load"]
    caught = enclosing_try_catches(call)
    assert "ExecutorchRuntimeException" in caught, caught
    for typ, block in catches(load):
        if typ == "ExecutorchRuntimeException":
            body = block.text.decode()
            assert "errorCode" in body and "ModelLoadException" in body
    assert "@Throws(ModelLoadException::class)" in load.text.decode()
    # no leftover status-code probing of the pre-1.2 int-returning API
    assert not re.search(r"status is Int", (SRC / "LlmSession.kt").read_text())


def test_load_failure_is_shown_in_the_chat_screen():
    tree = parse(SRC / "MainActivity.kt")
    load_model = function_node(tree, "loadModel")
    [(_, call)] = [(m, n) for m, n in member_calls(load_model, "loaded") if m == "load"]
    assert "ModelLoadException" in enclosing_try_catches(call)
    shown = [block.text.decode() for typ, block in catches(load_model) if typ == "ModelLoadException"]
    assert any("errorCodeHex" in body and "status.text" in body and "load_failed" in body for body in shown), shown
    strings = ET.parse(APP / "app/src/main/res/values/strings.xml").getroot()
    names = {s.get("name") for s in strings.iter("string")}
    assert {"load_failed", "load_failed_code", "benchmark_failed"} <= names


def test_benchmark_results_name_the_load_failure_and_the_host_refuses_them():
    tree = parse(SRC / "BenchRunner.kt")
    run = function_node(tree, "run")
    blocks = [block for typ, block in catches(run) if typ == "ModelLoadException"]
    assert len(blocks) == 1, "BenchRunner.run does not catch ModelLoadException on its own"
    keys = {resolve(arg, {}) for _, arg in calls(blocks[0], receiver="doc", methods={"put"})}
    assert keys == {"error", "error_stage", "error_code"}
    assert "STAGE_LOAD" in blocks[0].text.decode()
    assert const_strings(tree)["STAGE_LOAD"] == "load"
    # the host's check of the results document stops at such a document and shows the phone's words
    spec = app_bench.AppBenchSpec(model_dir="/data/local/tmp/m", run_id="r1")
    doc = {"schema": app_bench.RESULTS_SCHEMA, "run_id": "r1", "runs": [], "error_stage": "load", "error_code": 35,
           "error": "load failed (ExecuTorch error 0x23): [ExecuTorch Error 0x23] Invalid program: Failed to load "
                    "model (runtime: executorch-android 1.5.1; a .pte from a newer ExecuTorch needs an AAR of that "
                    "release)"}
    from exporter.errors import AppError

    with pytest.raises(AppError, match="0x23"):
        app_bench.parse_results(json.dumps(doc), spec)
    # and the activity stays on screen with the error instead of closing
    activity = (SRC / "BenchmarkActivity.kt").read_text()
    assert "R.string.benchmark_failed" in activity


def test_pinned_aar_version_is_documented_as_published():
    versions = bundle.app_versions()
    doc = (ROOT / "docs/android_demo.md").read_text()
    pin = versions["executorch"]
    section = doc.split("## Versions", 1)[1].split("\n## ", 1)[0]
    assert f"`org.pytorch:executorch-android:{pin}`" in section
    assert "Evidence that" in section and "Not verified here: that" not in section
    # the compatibility table says the pinned AAR's release reads what this exporter release writes
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_pin = next(d for d in pyproject["dependencies"] if d.startswith("executorch==")).split("==")[1]
    compat = doc.split("## Compatibility", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in compat.splitlines() if line.startswith(f"| {pyproject['version']} ({pip_pin})")]
    assert len(rows) == 1, "no compatibility row for this exporter release and its executorch pin"
    readers = rows[0].split("|")[3]
    assert re.search(rf"\b{re.escape(pin)}\b", readers), readers
