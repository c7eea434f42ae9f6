"""Starting, polling and stopping the engine's worker (``python -m xaiseg.worker REQUEST.json``).

The worker runs with Slicer's own Python (``PythonSlicer`` next to the application, or
``sys.executable`` outside Slicer) so it sees the same packages (torch from PyTorchUtils) while
the GUI stays responsive.  A reader thread turns its stdout into parsed JSON events; ``poll``
hands them over without blocking, so a QTimer (in the widget) or a loop (in tests) drives it.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

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


class WorkerProcess:
    """One running worker.  ``poll()`` returns the events that arrived since the last call."""

    def __init__(self, request_path, python: Optional[str] = None, log_path=None) -> None:
        self.request_path = Path(request_path)
        self.log_path = Path(log_path) if log_path else self.request_path.with_suffix(".stderr.txt")
        self._events: "queue.Queue[dict]" = queue.Queue()
        self._stderr = open(self.log_path, "wb")
        creationflags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [python or python_executable(), "-m", "xaiseg.worker", str(self.request_path)],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL,
            env=worker_environment(), cwd=str(self.request_path.parent), creationflags=creationflags)
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

    def terminate(self, grace: float = 10.0) -> int:
        """Ask the worker to stop (SIGTERM; it stops at the next step and writes nothing), then
        kill it if it has not exited after ``grace`` seconds.  Returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            except OSError:  # pragma: no cover - already gone
                pass
        self._reader.join(5)
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        try:
            self._stderr.close()
        except OSError:  # pragma: no cover
            pass
