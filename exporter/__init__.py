"""exporter: put a Hugging Face causal LM on a specific Android phone as an ExecuTorch .pte, and measure it.

    from exporter import export, verify, plan, push, bench, load_profile

The functions live in exporter.api and are imported on first use, so `import exporter` stays light (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("export", "verify", "plan", "push", "bench", "load_profile", "list_profiles", "connected_devices", "bundle",
        "app_bench", "ExportResult", "BenchReport")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")
