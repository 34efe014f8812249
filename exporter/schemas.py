"""The JSON Schemas of exporter's input files, as published in docs/schemas/ for editors.

`python -m exporter.schemas [DIR]` writes them (default: docs/schemas/ of the checkout); a test checks that the
committed files are the generated ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable


def _profile() -> dict[str, Any]:
    from .profiles import profile_json_schema

    return profile_json_schema()


def _manifest() -> dict[str, Any]:
    from .artifact import manifest_json_schema

    return manifest_json_schema()


SCHEMA_FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "profile.schema.json": _profile,
    "manifest.schema.json": _manifest,
}


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in SCHEMA_FILES.items():
        path = folder / name
        path.write_text(json.dumps(make(), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "schemas"
    for path in write_schemas(target):
        print(path)
