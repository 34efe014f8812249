"""Torch's intra-op thread count for stages made of many small ops, restored afterwards."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with `n` intra-op threads, then restore the previous count (also on error).

    Quantization and lowering run thousands of small tensor ops. With more than one thread each op ends at an
    OpenMP barrier, and when another process holds a core the waiting thread spins there: measured on 2 cores
    with one busy neighbour, quantization took 805 s instead of 25 s. One thread gives bit-identical results
    (tests/unit/test_threads.py; the SmolLM2 .pte bytes too).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
