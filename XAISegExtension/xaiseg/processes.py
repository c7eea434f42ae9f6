"""Whether the process that left something behind (a lock file, a folder named for it) has ended.

Only the system's word that no such process runs counts as ended.  Whatever it cannot say - another
user's process, a number os.kill cannot take, a system where signal 0 does not ask - counts as still
running, so that nothing a live run holds is taken over or removed.  On Windows signal 0 is
``CTRL_C_EVENT`` (and any other number ends the process), so ``os.kill`` is never called there.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

#: where signal 0 asks whether a process exists (elsewhere no process is ever known to have ended)
POSIX = os.name == "posix"


def process_ended(pid: object) -> bool:
    """Whether process ``pid`` is known to have ended: no process of that number exists, or (where
    ``/proc`` shows it) it is a zombie, ended and waiting for its parent.  False when unknown: not
    POSIX, not a positive whole number (0 and negatives name process groups), a number beyond what
    os.kill takes (a C int), or a process this user may not signal.  A number within that but above
    the system's largest process id has no process, so it counts as ended."""
    if not POSIX or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return _zombie(pid)


#: the states ``/proc/PID/stat`` gives a process that has ended but is not yet reaped
ENDED_STATES = ("Z", "X")


def proc_stat(pid: Union[int, str]) -> Optional[List[str]]:
    """The fields of ``/proc/PID/stat`` after the command's name (state, ppid, pgrp, ...); None where
    there is no such file (no /proc, no such process) or it cannot be read."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None
    return fields if len(fields) >= 3 else None


def _zombie(pid: int) -> bool:
    """Whether ``/proc`` (where there is one) shows ``pid`` as ended but not yet reaped."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] in ENDED_STATES
