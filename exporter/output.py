"""Where text goes: results to stdout (a rich table for people, JSON for scripts), progress to stderr.

Everything printed here is text, never markup: paths, a phone's property strings and a runner's messages
come from outside and may hold `[/x]` or control characters (ESC, NUL). `clean` escapes the control
characters; rich `Text` objects keep brackets literal.
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

stdout = Console(soft_wrap=True, highlight=False)
if not stdout.is_terminal:  # piped into a file or a CI log: no 80-column wrapping of wide tables
    stdout = Console(soft_wrap=True, width=200, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)

# C0/C1 controls and DEL (but newline and tab), and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(value: Any) -> str:
    """`value` as printable text: control characters shown as escapes (\\x1b, \\x00, \\u202e)."""
    text = value if isinstance(value, str) else str(value)

    def escape(m: re.Match) -> str:
        code = ord(m.group(0))
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escape, text)


def text(value: Any, style: str | None = None) -> Text:
    return Text(clean(value), style=style or "")


def print_json(obj: Any) -> None:
    """One stable JSON document on stdout, no ANSI (json escapes control characters itself)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def print_text(value: str) -> None:
    """Plain results (markdown, CSV) on stdout, cleaned of control characters."""
    sys.stdout.write(clean(value))
    sys.stdout.flush()


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=text(title) if title else None, show_lines=False)
    for col in columns:
        table.add_column(text(col), overflow="fold")
    for row in rows:
        table.add_row(*(text("" if v is None else v) for v in row))
    stdout.print(table)


def info(message: str) -> None:
    stderr.print(text(message))


def warn(message: str) -> None:
    stderr.print(Text.assemble(("warning: ", "yellow"), text(message)))


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner on stderr for long steps (silent when stderr is not a terminal)."""
    if stderr.is_terminal:
        with stderr.status(text(message)):
            yield
    else:
        info(message)
        yield
