"""The background worker Slicer starts: ``python -m xaiseg.worker REQUEST.json``.

The request is the JSON form of a :class:`~xaiseg.request.RunRequest` (task ``run``, the
default) or of a :class:`~xaiseg.request.CalibrateRequest` (task ``calibrate``), plus an optional
``cancel_file`` (the run stops when this file appears).  The worker parses it with the same parser
as the command line and carries it out with the same :func:`xaiseg.pipeline.run`.  It talks to
its parent through **stdout, one JSON object per line**:

``{"event": "start", ...}``          once, with the worker's pid and the request's name
``{"event": "stage"|"step"|"done", "stage": NAME, "done": i, "total": n, ...}``   progress
``{"event": "log", "message": ...}``  human-readable notes
``{"event": "result", "output_dir": ..., "files": {...}, "seconds": ...}``  the last line on success;
                                     ``files`` is the manifest (key -> file name in ``output_dir``)
``{"event": "error", "error": TYPE, "message": ...}``  the last line when the input or model is bad
``{"event": "cancelled", "message": ...}``  the last line after SIGTERM/SIGINT or the cancel file

Results are staged in a hidden folder inside ``output_dir`` and moved into place only when the
whole run finished, so a cancelled or failed run leaves nothing partial behind.  Exit status:
0 success, 2 bad input/model (an ``XAISegError``), 130 cancelled, 1 unexpected failure.
Anything else the libraries print goes to stderr, so stdout only ever carries JSON lines.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import Cancelled, InputError, XAISegError
from .progress import CallbackProgress, CancelToken
from .record import json_default

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


class Emitter:
    """Writes one JSON object per line to a private duplicate of stdout and flushes it."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: Dict[str, Any]) -> None:
        line = json.dumps(event, default=json_default)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def run_calibrate(req, progress) -> Dict[str, Any]:
    """Time loading the segmenter, then one encoder pass and one decoder pass (the median of
    ``repeats`` after a warm-up pass) on a synthetic slice (:func:`xaiseg.cost.calibrate`)."""
    from .cost import calibrate

    t0 = time.perf_counter()
    segmenter = req.segmenter.load(progress)
    load = time.perf_counter() - t0
    progress.stage("calibrate", req.repeats)
    timing = calibrate(segmenter, req.repeats, load, progress)
    progress.done()
    return {"model": segmenter.describe(), **timing}


def manifest(files: Dict[str, Any]) -> Dict[str, Any]:
    """File names by key (lists stay lists), so the parent loads what was written without globbing."""
    return {key: [Path(v).name for v in value] if isinstance(value, (list, tuple)) else Path(value).name
            for key, value in files.items()}


def _watch_cancel_file(path: str, token: CancelToken, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        if os.path.exists(path):
            token.cancel()
            return


def _read_request(path: Path):
    from .request import parse

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"request file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"request file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    cancel = data.get("cancel_file") if isinstance(data, dict) else None
    base = path.resolve().parent
    return parse(data, base), (str(base / cancel) if cancel else None)


def main(argv: Optional[List[str]] = None) -> int:
    """Carry out one request; every stream, signal handler and warning filter it changes is put back
    on the way out (so it can also run inside another process, as the tests do)."""
    from .quiet import silence_third_party_warnings
    from .signals import on_signals

    argv = list(sys.argv[1:] if argv is None else argv)
    # Events go to a private copy of stdout; everything else printed (by torch, warnings, C code)
    # is sent to stderr so the parent only ever reads JSON lines.
    sys.stdout.flush()
    saved_fd, saved_stdout = os.dup(1), sys.stdout
    events = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    token = CancelToken()
    restore_signals = on_signals(lambda signum: token.cancel())
    try:
        with warnings.catch_warnings():
            silence_third_party_warnings()
            return _serve(argv, Emitter(events), token)
    finally:
        restore_signals()
        sys.stdout = saved_stdout
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        events.close()


def _serve(argv: List[str], emit: Emitter, token: CancelToken) -> int:
    if len(argv) != 1:
        emit({"event": "error", "error": "UsageError", "message": "usage: python -m xaiseg.worker REQUEST.json"})
        return EXIT_INPUT
    started = time.perf_counter()
    stop = threading.Event()
    try:
        from .pipeline import run
        from .request import CalibrateRequest

        req, cancel_file = _read_request(Path(argv[0]))
        emit({"event": "start", "pid": os.getpid(), "task": "calibrate" if isinstance(req, CalibrateRequest) else "run",
              "name": getattr(req, "name", None)})
        if req.threads:
            import torch

            torch.set_num_threads(int(req.threads))
        if cancel_file:
            threading.Thread(target=_watch_cancel_file, args=(cancel_file, token, stop), daemon=True).start()
        progress = CallbackProgress(emit, token)
        if isinstance(req, CalibrateRequest):
            result = run_calibrate(req, progress)
            token.check()
            emit(dict(event="result", seconds=time.perf_counter() - started, **result))
            return EXIT_OK
        outcome = run(req, progress, log=lambda text: emit({"event": "log", "message": text}))
        seg = outcome.segmentation
        emit(dict(event="result", output_dir=str(req.output_dir), name=req.name, seconds=time.perf_counter() - started,
                  files=manifest(outcome.files), axis=outcome.session.axis, voxels=seg.voxel_count,
                  slices=sorted(int(s.index) for s in seg.slices)))
        return EXIT_OK
    except Cancelled as exc:
        emit({"event": "cancelled", "message": str(exc)})
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        emit({"event": "cancelled", "message": "interrupted; no output was written"})
        return EXIT_CANCELLED
    except XAISegError as exc:
        emit({"event": "error", "error": type(exc).__name__, "message": str(exc)})
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - report anything to the parent as one line
        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "error": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}",
              "traceback": traceback.format_exc(limit=8)})
        return EXIT_FAILED
    finally:
        stop.set()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
