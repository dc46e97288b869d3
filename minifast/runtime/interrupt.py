"""Ctrl-C at a batch boundary: the first SIGINT is held until the loop asks for it, so an
interrupted run stops between two whole optimisation steps."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["sigint_at_batch_boundary"]


@contextmanager
def sigint_at_batch_boundary() -> Iterator[Callable[[], bool]]:
    """Defer the first Ctrl-C to the next batch boundary (a second one interrupts at once).

    Yields a function that says whether a Ctrl-C is pending; the loop raises the
    KeyboardInterrupt itself between batches, so the weights are those of a whole step, not
    of a half-done `opt.step()`. Outside the main thread, or when the program installed its
    own SIGINT handler, nothing is deferred and the function always says False.
    """
    hit = []
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: False
        return

    def handler(signum, frame):
        if hit:
            raise KeyboardInterrupt
        hit.append(True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
