"""This host's memory read bandwidth for the roofline: measured once per machine and thread count, then cached.

One numpy copy of 64 MiB per `exporter bench` call varied 8.1-14.4 GB/s between calls on the same host (issue
#12). Decoding is a read stream with the runtime's threads, so this reads a buffer far past the last-level cache
with that many threads (each ORs its own slice: integer work numpy vectorizes and runs without the GIL), keeps
the best of several passes and caches it keyed by CPU model, thread count and kernel, so every bench on the
machine divides by the same number. The spread of the passes is kept beside it. A measurement taken while the
1-minute load average was at or above the CPU count is used for that call but not cached (measured under a
load of 17 on 2 cores it gave 2.4 GB/s against 14 GB/s quiet): the next call measures again.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .telemetry import host_cpu_name

DEFAULT_BUFFER_MIB = 512
DEFAULT_PASSES = 7
CACHE_ENV = "EXPORTER_BANDWIDTH_CACHE"


@dataclass(frozen=True)
class Bandwidth:
    """Read bandwidth in GB/s: best pass (what the roofline uses), median and worst, and how it was measured."""

    gbps: float
    median_gbps: float
    min_gbps: float
    threads: int
    buffer_mib: int
    passes: int
    key: str
    measured_at: str
    load_avg: float | None = None  # 1-minute load average when measured

    def source(self, cached: bool) -> str:
        return (f"host: read bandwidth, best of {self.passes} passes over {self.buffer_mib} MiB with {self.threads} "
                f"thread(s) (median {self.median_gbps:g}, worst {self.min_gbps:g} GB/s; "
                f"{'cached' if cached else 'measured'} {self.measured_at}, load average {self.load_avg})")


def cache_path() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "exporter" / "bandwidth.json"


def machine_key(threads: int) -> str:
    return f"{host_cpu_name()} | threads={threads} | {platform.system()} {platform.release()}"


def read_gbps(threads: int, buffer_mib: int = DEFAULT_BUFFER_MIB, passes: int = DEFAULT_PASSES) -> list[float]:
    """GB/s of each pass reading a buffer_mib buffer split across `threads` threads (the first touch is not timed)."""
    import numpy as np

    buf = np.ones(buffer_mib * 2**20 // 8, dtype=np.uint64)
    parts = np.array_split(buf, threads)
    start = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)
    stop = False

    def reader(part) -> None:
        while True:
            start.wait()
            if stop:
                return
            np.bitwise_or.reduce(part)
            done.wait()

    workers = [threading.Thread(target=reader, args=(p,), daemon=True) for p in parts]
    for w in workers:
        w.start()
    out = []
    try:
        for _ in range(passes):
            t0 = time.perf_counter()
            start.wait()
            done.wait()
            out.append(buf.nbytes / (time.perf_counter() - t0) / 1e9)
    finally:
        stop = True
        start.wait()
        for w in workers:
            w.join()
    return out


def summarize(samples: list[float], threads: int, buffer_mib: int, key: str, load_avg: float | None) -> Bandwidth:
    s = sorted(samples)
    return Bandwidth(gbps=round(s[-1], 2), median_gbps=round(s[len(s) // 2], 2), min_gbps=round(s[0], 2),
                     threads=threads, buffer_mib=buffer_mib, passes=len(s), key=key,
                     measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load_avg=load_avg)


def load_avg_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def host_bandwidth(threads: int, *, refresh: bool = False, path: Path | None = None,
                   measure=read_gbps, load=load_avg_1m) -> tuple[Bandwidth, bool]:
    """(bandwidth, came from the cache) for this machine at `threads` threads; measures and caches when absent."""
    path = path or cache_path()
    key = machine_key(threads)
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), dict):
        try:
            return Bandwidth(**cache[key]), True
        except TypeError:
            pass  # an entry of another layout: measure again and replace it
    before = load()
    bw = summarize(measure(threads, DEFAULT_BUFFER_MIB, DEFAULT_PASSES), threads, DEFAULT_BUFFER_MIB, key, before)
    if before is not None and before >= (os.cpu_count() or 1):
        return bw, False  # a busy machine's number: good for this call only
    cache[key] = asdict(bw)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=2) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the number is still right for this call
    return bw, False
