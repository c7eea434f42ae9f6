"""Progress reporting and cancellation, shared by the CLI (tqdm), the worker (JSON lines) and tests."""
from __future__ import annotations

import sys
import threading
from typing import Callable, Optional

from .errors import Cancelled


class CancelToken:
    """A flag another thread (or a signal handler) sets to stop a run between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("the run was cancelled; no output was written")


class Progress:
    """Receives progress of long work.  The base class ignores everything.

    ``stage(name, total)`` opens a unit of work with ``total`` steps, ``step(n, **info)`` advances
    it, ``done()`` closes it.  ``cancel`` (a :class:`CancelToken`) is checked by the engine
    between steps, so cancelling a progress object stops the run at the next step.
    """

    def __init__(self, cancel: Optional[CancelToken] = None) -> None:
        self.cancel = cancel or CancelToken()

    def stage(self, name: str, total: int) -> None:  # noqa: D401 - protocol
        pass

    def step(self, n: int = 1, **info) -> None:
        pass

    def done(self) -> None:
        pass

    def check(self) -> None:
        self.cancel.check()


class CallbackProgress(Progress):
    """Calls ``callback(event)`` with a dict per event; used by the Slicer worker and tests."""

    def __init__(self, callback: Callable[[dict], None], cancel: Optional[CancelToken] = None) -> None:
        super().__init__(cancel)
        self._callback = callback
        self._name = ""
        self._total = 0
        self._count = 0

    def stage(self, name: str, total: int) -> None:
        self._name, self._total, self._count = name, int(total), 0
        self._callback({"event": "stage", "stage": name, "total": self._total})

    def step(self, n: int = 1, **info) -> None:
        self._count += n
        self._callback({"event": "step", "stage": self._name, "done": self._count,
                        "total": self._total, **info})

    def done(self) -> None:
        self._callback({"event": "done", "stage": self._name, "done": self._count, "total": self._total})


class TqdmProgress(Progress):
    """A tqdm bar on stderr per stage (the CLI's default)."""

    def __init__(self, cancel: Optional[CancelToken] = None, file=None) -> None:
        super().__init__(cancel)
        self._bar = None
        self._file = file or sys.stderr

    def stage(self, name: str, total: int) -> None:
        from tqdm import tqdm

        self.done()
        # segmentation counts slices, the report its steps, explainers model evaluations
        unit = "slice" if name.startswith("segment") else "step" if name == "report" else "eval"
        self._bar = tqdm(total=total, desc=name, file=self._file, unit=unit, leave=True,
                         dynamic_ncols=True)

    def step(self, n: int = 1, **info) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix({k: v for k, v in info.items() if isinstance(v, (int, float, str))},
                                      refresh=False)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def ensure(progress: Optional[Progress]) -> Progress:
    """Return ``progress`` or a silent one."""
    return progress if progress is not None else Progress()
