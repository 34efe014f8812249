"""Options and progress printers shared by the commands."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .. import output

adb_option = click.option("--adb", "adb_path", type=click.Path(dir_okay=False, path_type=Path),
                          help="adb client to run (default: $EXPORTER_ADB, else adb on PATH, else the adbutils one).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")


class IntList(click.ParamType):
    """`64,512` -> (64, 512): llama-bench's habit of taking a list wherever a sweep makes sense."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(int(v) for v in str(value).replace(" ", "").split(",") if v)
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)
        if not out or any(v < 1 for v in out):
            self.fail(f"expected positive integers, got {value!r}", param, ctx)
        return out


INT_LIST = IntList()


def human_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class StageTimer:
    """Progress on stderr: one line per stage with the seconds the previous one took."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.current: str | None = None

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if self.current is not None:
            output.info(f"  done in {now - self.last:.1f}s")
        output.info(f"[{now - self.t0:6.1f}s] {message}")
        self.current, self.last = message, now

    def finish(self) -> None:
        if self.current is not None:
            output.info(f"  done in {time.perf_counter() - self.last:.1f}s")
        self.current = None


def transfer_printer():
    """Progress of adb transfers on stderr, every 10%."""
    last: dict[str, int] = {}

    def progress(remote: str, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if last.get(remote) != pct and (pct in (0, 100) or pct - last.get(remote, 0) >= 10):
            last[remote] = pct
            output.info(f"  {remote}: {pct}% of {total / 2**20:.1f} MiB")

    return progress
