"""Starting, polling and stopping the engine's worker (``python -m xaiseg.worker REQUEST.json``).

The worker runs with Slicer's own Python (``PythonSlicer`` next to the application, or
``sys.executable`` outside Slicer) so it sees the same packages (torch from PyTorchUtils) while
the GUI stays responsive.  A reader thread turns its stdout into parsed JSON events; ``poll``
hands them over without blocking, so a QTimer (in the widget) or a loop (in tests) drives it.

``PythonSlicer`` is a launcher: the Python that runs the worker is its child.  The worker is
therefore started in a process group (POSIX: a new session; Windows: a new process group) and
stopped as a whole: :meth:`WorkerProcess.terminate` sends SIGTERM to the group and returns at
once, and :meth:`WorkerProcess.reap`, called from the same timer, sends SIGKILL to whatever is
left after the grace period and reports when every process of the group is gone.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from xaiseg.processes import ENDED_STATES, proc_stat, process_ended

ENGINE_ROOT = Path(__file__).resolve().parents[1]  # the folder that holds xaiseg/


def python_executable() -> str:
    """Slicer's ``PythonSlicer`` launcher when running inside Slicer (it sets up Slicer's library
    paths), else this interpreter."""
    exe = Path(sys.executable)
    in_slicer = bool(os.environ.get("SLICER_HOME")) or exe.name.lower().startswith("slicer")
    if in_slicer:
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        candidates = [shutil.which("PythonSlicer")]
        if os.environ.get("SLICER_HOME"):
            candidates.append(str(Path(os.environ["SLICER_HOME"]) / "bin" / name))
        candidates.append(str(exe.parent / name))
        for c in candidates:
            if c and Path(c).is_file():
                return c
    return sys.executable


def worker_environment() -> Dict[str, str]:
    env = dict(os.environ)
    paths = [str(ENGINE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("KMP_DUPLICATE_LIB_OK", "TRUE")
    return env


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is still running (zombies count as gone)."""
    proc_dir = Path("/proc")
    if proc_dir.is_dir() and (proc_dir / "self" / "stat").is_file():  # Linux: read the process table
        for entry in proc_dir.iterdir():
            fields = proc_stat(entry.name) if entry.name.isdigit() else None  # state, ppid, pgrp, ...
            if fields is not None and int(fields[2]) == pgid and fields[0] not in ENDED_STATES:
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a process of that group exists
        return True
    return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may still run: not known to have ended (a zombie has; see
    :func:`xaiseg.processes.process_ended`)."""
    return not process_ended(pid)


class WorkerProcess:
    """One running worker (and its process group).  ``poll()`` returns the events that arrived
    since the last call; ``terminate()`` + ``reap()`` stop it without blocking the caller."""

    def __init__(self, request_path, python: Optional[str] = None, log_path=None,
                 args: Optional[Sequence[str]] = None) -> None:
        self.request_path = Path(request_path)
        self.log_path = Path(log_path) if log_path else self.request_path.with_suffix(".stderr.txt")
        self._events: "queue.Queue[dict]" = queue.Queue()
        self._stderr = open(self.log_path, "wb")
        extra: Dict[str, object] = {}
        if os.name == "nt":
            extra["creationflags"] = (getattr(subprocess, "CREATE_NO_WINDOW", 0)
                                      | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
        else:
            extra["start_new_session"] = True  # its own process group: the launcher and its child
        self.started = time.monotonic()
        command = list(args) if args is not None else [python or python_executable(), "-m", "xaiseg.worker",
                                                       str(self.request_path)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL,
                                     env=worker_environment(), cwd=str(self.request_path.parent), **extra)
        self.pgid = self.proc.pid
        self._kill_at: Optional[float] = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.final: Optional[dict] = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or "event" not in event:
                    raise ValueError
            except ValueError:
                event = {"event": "log", "message": line}
            self._events.put(event)
        self.proc.stdout.close()

    def poll(self) -> List[dict]:
        """New events (without blocking).  After the process ended and its output was read, the
        last event is the final one (``result``, ``error`` or ``cancelled``)."""
        out = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.get("event") in ("result", "error", "cancelled"):
                self.final = event
            out.append(event)
        return out

    @property
    def finished(self) -> bool:
        """The process exited and everything it printed was read."""
        return self.proc.poll() is not None and not self._reader.is_alive() and self._events.empty()

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            self._stderr.flush()
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    # ------------------------------------------------------------------ stopping

    @property
    def stopping(self) -> bool:
        return self._kill_at is not None

    def alive(self) -> bool:
        """Whether the worker or any process it started (its group) still runs."""
        if self.proc.poll() is None:
            return True
        return os.name != "nt" and group_alive(self.pgid)

    def _signal_group(self, sig) -> None:
        try:
            if os.name == "nt":  # pragma: no cover - Windows: end the whole tree
                if sig == getattr(signal, "SIGKILL", None) or sig == signal.SIGTERM:
                    subprocess.Popen(["taskkill", "/T", "/F", "/PID", str(self.proc.pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
                return
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def terminate(self, grace: float = 0.5) -> None:
        """Ask the worker's whole process group to stop (SIGTERM: the worker stops at its next
        step and writes nothing) and return at once; :meth:`reap` kills what is left after
        ``grace`` seconds.  Call :meth:`reap` from a timer until it returns True."""
        if self._kill_at is None:
            self._kill_at = time.monotonic() + max(0.0, grace)
            self._signal_group(signal.SIGTERM)
        self.reap()

    def reap(self) -> bool:
        """Advance the stop schedule without blocking; True once the worker and its group are gone."""
        if not self.alive():
            self._finish()
            return True
        if self._kill_at is not None and time.monotonic() >= self._kill_at:
            self._signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))
        if not self.alive():
            self._finish()
            return True
        return False

    def stop(self, timeout: float = 5.0) -> bool:
        """Terminate and wait (scripts and tests; the panel calls :meth:`terminate` and :meth:`reap`)."""
        self.terminate()
        end = time.monotonic() + timeout
        while not self.reap():
            if time.monotonic() > end:
                return False
            time.sleep(0.02)
        return True

    def _finish(self) -> None:
        self.proc.poll()
        if not self._reader.is_alive():
            self.close()

    def close(self) -> None:
        try:
            self._stderr.close()
        except OSError:  # pragma: no cover
            pass
