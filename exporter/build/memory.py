"""Handing freed memory back to the operating system between the export's stages."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Collect garbage, then ask glibc to return the free pages it keeps inside its heap.

    Tensors of a few megabytes come from glibc's heap, not from their own mappings (glibc raises its mmap
    threshold after the first large frees), so the holes left by freed float weights and temporaries stay
    in the process's resident set: measured on SmolLM2-135M, 0.47 GB after quantization. malloc_trim gives
    them back; where there is no glibc (macOS, musl) this only collects garbage.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
