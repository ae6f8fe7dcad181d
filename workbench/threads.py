"""How many CPU threads torch uses for a block of work.

Generation, attribution, steering and the feature pass run many small ops, where one thread is often as fast as
several and far faster when the machine is oversubscribed; each takes a ``threads`` setting and runs its work
inside :func:`torch_threads`, which restores the previous count afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads (None: unchanged), restoring the previous count after it."""
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
