"""Stopping cleanly on SIGINT and SIGTERM.

* :func:`interrupt_on_signals` (the command line): SIGINT and SIGTERM both raise
  :class:`KeyboardInterrupt` once, so every ``finally`` and ``with`` block on the way out removes
  its staging folder, temporary file and lock; a second signal during that clean-up is ignored.
* :func:`deferred_signals` (the writers): a block that must not be cut in two - moving a finished
  set of files into place, removing a staging folder - holds SIGINT and SIGTERM back and lets them
  act when it ends, so an interrupt leaves the previous outputs or the new ones, never a mix.

Both only act in the main thread (Python runs signal handlers there); elsewhere they do nothing.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional

SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # pragma: no cover
        return f"signal {signum}"


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the block; a signal that came meanwhile acts when it ends."""
    if not _main_thread():
        yield
        return
    pending: List[int] = []
    previous: Dict[int, object] = {}

    def hold(signum, frame):  # noqa: ARG001 - signal API
        pending.append(signum)

    for s in SIGNALS:
        previous[s] = signal.signal(s, hold)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(pending):  # each signal once, in the order they came
            _deliver(s, previous[s])


def _deliver(signum: int, handler) -> None:
    """Act on a held signal as its own handler would have."""
    if handler is signal.SIG_IGN:
        return
    if handler in (signal.SIG_DFL, None):
        if signum == getattr(signal, "SIGINT", None):
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)  # the default action (termination), now that the handler is back
        return
    handler(signum, None)


#: seconds after a swallowed stop (below) before the signal is sent again
RESEND_S = 0.01


class Interrupted:
    """Which signal stopped the run (None until one came), and whether the :class:`KeyboardInterrupt`
    it raised was swallowed (it came while Python ran a weak reference's callback or a ``__del__``,
    where an exception can only be printed, not raised: the import system's module locks use one)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.swallowed = False

    @property
    def name(self) -> str:
        return signal_name(self.signum) if self.signum is not None else "Ctrl-C"


@contextmanager
def interrupt_on_signals() -> Iterator[Interrupted]:
    """SIGINT and SIGTERM raise :class:`KeyboardInterrupt` (once) inside the block; the previous
    handlers come back on the way out.

    A signal that lands while Python runs a weak reference's callback or a ``__del__`` raises there,
    where Python prints the exception ("Exception ignored in ...") and goes on: the run would finish
    as if no signal had come.  Such a swallowed stop is not printed; the signal is sent again
    :data:`RESEND_S` seconds later (from a timer thread, so the main thread is back in ordinary code)
    and raises then."""
    seen = Interrupted()
    if not _main_thread():
        yield seen
        return

    def stop(signum, frame):  # noqa: ARG001 - signal API
        if seen.signum is not None and not seen.swallowed:
            return  # already stopping: let the clean-up finish
        seen.signum, seen.swallowed = signum, False
        raise KeyboardInterrupt(signal_name(signum))

    timers: List[threading.Timer] = []
    previous_hook = sys.unraisablehook

    def swallowed(unraisable) -> None:
        if seen.signum is None or not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)
            return
        seen.swallowed = True
        timer = threading.Timer(RESEND_S, signal.raise_signal, (seen.signum,))
        timer.daemon = True
        timers.append(timer)
        timer.start()

    previous: Dict[int, object] = {s: signal.signal(s, stop) for s in SIGNALS}
    sys.unraisablehook = swallowed
    try:
        yield seen
    finally:
        for timer in timers:
            timer.cancel()
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def on_signals(callback: Callable[[int], None]) -> Callable[[], None]:
    """Call ``callback(signum)`` on SIGINT/SIGTERM (the worker cancels its token); returns a function
    that puts the previous handlers back."""
    if not _main_thread():
        return lambda: None
    previous = {s: signal.signal(s, lambda signum, frame: callback(signum)) for s in SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    return restore
