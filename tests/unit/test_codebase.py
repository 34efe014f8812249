"""The code's shape, as the README promises it: layers import one way, the module map and the API example are true."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "exporter"
README = (ROOT / "README.md").read_text()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every exporter module `path` imports, at module level or inside functions."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return {m for m in found if m == "exporter" or m.startswith("exporter.")}


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def test_nothing_imports_the_cli_and_build_never_reaches_device_or_app():
    for name, path in MODULES.items():
        deps = imports_of(path)
        if not name.startswith("exporter.cli") and name != "exporter.__main__":
            assert not {d for d in deps if d.startswith("exporter.cli")}, f"{name} imports the CLI"
        if name.startswith("exporter.build"):
            bad = {d for d in deps if d.startswith(("exporter.device", "exporter.app", "exporter.cli", "exporter.api"))}
            # plan.py may ask detection for the phone on adb when the device is "auto": the one allowed edge
            bad -= {"exporter.device.detect", "exporter.device.detect.auto_detect"} if name == "exporter.build.plan" else set()
            assert not bad, f"{name} imports {sorted(bad)}"
        if name.startswith(("exporter.profiles", "exporter.schema", "exporter.errors", "exporter.artifact")):
            assert not {d for d in deps if d.startswith(("exporter.device", "exporter.app", "exporter.verification"))}, name


def test_importing_the_api_loads_no_torch():
    code = "import sys, exporter; exporter.load_profile; assert 'torch' not in sys.modules, 'torch'; print('ok')"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.stdout.strip() == "ok", p.stderr


def test_readme_code_map_lists_every_module_and_no_other():
    listed = set(re.findall(r"^\| `(exporter/[\w/]+\.py)` \|", README, flags=re.M))
    actual = {str(p.relative_to(ROOT)) for p in PKG.rglob("*.py") if p.name != "__main__.py"}
    assert listed == actual


@pytest.mark.slow
@pytest.mark.native
def test_readme_python_api_example_runs(tiny_models, tmp_path, harness_binary):
    block = re.search(r"## Python API.*?```python\n(.*?)```", README, flags=re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {"TINY_MODEL": str(tiny_models["llama"]), "OUT": tmp_path / "o"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "Snapdragon 8 Gen 3 8da4w-g32+emb4w-g64 1024 6"
    size, label = lines[1].split()
    assert int(size) == (tmp_path / "o" / "model.pte").stat().st_size and label == "8da4w-g32+emb4w-g64"
    assert lines[2] == "True"
