"""release_freed_memory hands the heap's free pages back (glibc), so the export's peak RSS follows its live data."""

from __future__ import annotations

import pytest

from exporter.build.memory import _malloc_trim, release_freed_memory


def _rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))


@pytest.mark.skipif(_malloc_trim() is None, reason="no glibc malloc_trim here")
def test_freed_heap_holes_leave_the_resident_set():
    # 64 KiB blocks sit inside glibc's heap (below its mmap threshold); small live blocks between them keep the
    # heap's top in use, so free() alone cannot shrink it: the holes stay resident until trimmed.
    blocks, keep = [], []
    for _ in range(3000):
        blocks.append(bytearray(b"\1" * (64 << 10)))
        keep.append(bytearray(b"\1" * 1024))  # above pymalloc's 512 bytes: from the same heap
    del blocks
    before = _rss()
    release_freed_memory()
    assert before - _rss() > 100 << 20
    assert len(keep) == 3000
