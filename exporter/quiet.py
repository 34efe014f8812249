"""A quiet terminal: other libraries' warnings, progress bars and C++ log lines stay hidden unless asked for.

`exporter -v` (or EXPORTER_VERBOSE=1 / EXPORTER_DEBUG=1) shows them. Known-harmless Python warnings are
filtered; what the ExecuTorch C++ runtime logs straight to file descriptor 2 is
captured by `native_logs` and only shown when something fails.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator


def verbose() -> bool:
    return bool(os.environ.get("EXPORTER_VERBOSE") or os.environ.get("EXPORTER_DEBUG"))


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_python_noise() -> None:
    """Filter the warnings and log lines listed as harmless, and transformers' progress bars."""
    if verbose():
        return
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for message in (".*_check_is_size.*", ".*mutated buffer.*", ".*Mutation on a buffer.*"):
        warnings.filterwarnings("ignore", message=message)
    # torch's logging set-up resets these loggers' levels when it is imported, so a level is not enough: a filter
    # (which it leaves alone) drops "Failed to load ... _C_mxfp8 / _C_cutlass_90a" and the pytree Enum notice.
    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if _errors_only not in logger.filters:
            logger.addFilter(_errors_only)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # plain tqdm bars, e.g. transformers' GGUF de-quantization
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@contextmanager
def native_logs() -> Iterator[Callable[[], str]]:
    """While the block runs, what native code writes to stderr goes to a temp file; yields a function that
    returns it (the last 64 KiB), to attach to an error. With -v it passes through untouched."""
    if verbose():
        yield lambda: ""
        return
    sys.stderr.flush()
    saved = os.dup(2)
    sink = tempfile.TemporaryFile()
    os.dup2(sink.fileno(), 2)

    def read() -> str:
        sink.flush()
        size = sink.seek(0, os.SEEK_END)
        sink.seek(max(0, size - 65536))
        return sink.read().decode("utf-8", errors="replace")

    try:
        yield read
    finally:
        sys.stderr.flush()
        _flush_c_stdio()  # C++ streams buffer; what they hold belongs in the sink, not the terminal
        os.dup2(saved, 2)
        os.close(saved)
        sink.close()


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
