"""Where text goes: results to stdout (a rich table for people, JSON for scripts), progress to stderr."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

from rich.console import Console
from rich.table import Table

stdout = Console(soft_wrap=True)
if not stdout.is_terminal:  # piped into a file or a CI log: no 80-column wrapping of wide tables
    stdout = Console(soft_wrap=True, width=200)
stderr = Console(stderr=True, soft_wrap=True)


def print_json(obj: Any) -> None:
    """One stable JSON document on stdout, no ANSI."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    stdout.print(table)


def info(message: str) -> None:
    stderr.print(message, highlight=False)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner on stderr for long steps (silent when stderr is not a terminal)."""
    if stderr.is_terminal:
        with stderr.status(message):
            yield
    else:
        info(message)
        yield
