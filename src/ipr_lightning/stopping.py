"""SIGTERM (a scheduler's preemption, `timeout`) during rollouts: stop at the next turn.

Exploration, MC scoring and evaluation run inside one Lightning callback, where Lightning's
own SIGTERM handling (checked between training batches) never looks. Inside `stoppable()`
a SIGTERM only records the request; the rollout loop calls `check()` between turns and
raises `StopRequested` there, after every finished episode has reached the store. Outside it
the previous handler is in place.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODE = 128 + signal.SIGTERM


class StopRequested(Exception):
    """A SIGTERM arrived during rollouts; the work done so far is kept."""


_requested = False


def _request(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True


def check() -> None:
    if _requested:
        raise StopRequested("stopped by SIGTERM")


@contextmanager
def stoppable() -> Iterator[None]:
    """Turn SIGTERM into a request that `check()` honours (main thread only; elsewhere a
    no-op). The request outlives the block: the run is ending."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
