"""SIGTERM and SIGHUP take the same clean-up path as Ctrl-C.

A maintenance window's automation stops upgrader with SIGTERM, and a closed SSH session sends SIGHUP;
by default either ends the process on the spot, leaving a half-written snapshot (every Secret of the
cluster) and temporary directories behind. ``install`` makes both raise ``KeyboardInterrupt`` like
SIGINT, so every ``try``/``finally`` and ``except BaseException`` clean-up runs.

While a child process must be stopped cleanly first (an Ansible run), ``deferred`` turns the three
signals into an event the caller polls instead; once the block ends, a signal that arrived is raised
as ``KeyboardInterrupt`` there.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received: list[int] = []


def _raise(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> None:
    """SIGINT, SIGTERM and SIGHUP raise ``KeyboardInterrupt`` in the main thread."""
    for signum in SIGNALS:
        signal.signal(signum, _raise)


def last() -> str:
    """The name of the last signal that interrupted this process (SIGINT when none was recorded)."""
    return signal.Signals(_received[-1]).name if _received else "SIGINT"


@contextmanager
def deferred() -> Iterator[threading.Event]:
    """Within the block, the signals set the yielded event instead of raising; at its end one that
    arrived raises ``KeyboardInterrupt``. Outside the main thread signals cannot be caught: the
    event is then never set by a signal."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    arrived: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        arrived.append(signum)
        event.set()

    previous = {signum: signal.signal(signum, note) for signum in SIGNALS}
    try:
        yield event
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if arrived:
        _received.append(arrived[0])
        raise KeyboardInterrupt(signal.Signals(arrived[0]).name)
