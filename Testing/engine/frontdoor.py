"""Helpers for the front-door tests: tiny volumes, the command line and the worker run in this
process or as child processes, a record of segmenter loads, and a look at a folder tree.

The segmenter is the real ``--model torch --factory toys:ramp`` (mask = normalised intensity
above 0.5), so nothing is mocked; :func:`record_loads` only notes when it is loaded, so a test can
tell that a refusal came before the model loaded.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

import xaiseg

ENGINE_TESTS = Path(__file__).resolve().parent
TOY_ARGS = ["--model", "torch", "--factory", "toys:ramp", "--class-index", "0"]
TOY_SEGMENTER = {"kind": "torch", "factory": "toys:ramp", "class_index": 0}
BOX = ["--box", "2,2,1,20,20,3"]  # i, j, k corners: slices 1..3
BOX_KJI = {"type": "box", "lo_kji": [1, 2, 2], "hi_kji": [3, 20, 20]}


def write_volume(path: Path, shape=(6, 32, 32), seed: int = 0, dtype=np.float32) -> Path:
    """A textured volume with a bright block (the toy model's mask) on every slice."""
    rng = np.random.default_rng(seed)
    a = (rng.random(shape) * 0.3).astype(np.float32)
    a[:, shape[1] // 4: shape[1] * 3 // 4, shape[2] // 4: shape[2] * 3 // 4] += 0.6
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(a.astype(dtype)), str(path))
    return path


def write_labels(path: Path, shape=(6, 32, 32), label: int = 1) -> Path:
    a = np.zeros(shape, np.uint8)
    a[1:4, 10:20, 10:20] = label
    sitk.WriteImage(sitk.GetImageFromArray(a), str(path))
    return path


def record_loads(monkeypatch) -> List[str]:
    """The kinds of segmenter loaded from now on (the real loader still runs)."""
    import xaiseg.models as models

    real, calls = models.load_segmenter, []

    def loading(kind="litemedsam", **options):
        calls.append(kind)
        return real(kind, **options)

    monkeypatch.setattr(models, "load_segmenter", loading)
    return calls


def cli(argv: List[str], capsys) -> Tuple[int, List[str]]:
    """``xaiseg ARGV`` in this process: its exit status and its stderr's non-empty lines
    (``capsys`` is pytest's capsys or capfd)."""
    from xaiseg.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def worker(request: dict, folder: Path, capfd) -> Tuple[int, List[dict], str]:
    """``python -m xaiseg.worker`` on ``request`` in this process: exit status, events, stderr."""
    from xaiseg.worker import main

    path = folder / "request.json"
    path.write_text(json.dumps(request))
    capfd.readouterr()
    code = main([str(path)])
    captured = capfd.readouterr()
    path.unlink()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, events, captured.err


def tree(root: Path) -> Dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), folders as empty entries ending in '/'."""
    out: Dict[str, bytes] = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        out[rel + "/" if p.is_dir() else rel] = b"" if p.is_dir() else p.read_bytes()
    return out


def internal(names) -> List[str]:
    """Names that are xaiseg's own (lock, staging, temporary) or hidden: never left in an output folder."""
    return [n for n in names if any(part.startswith(".") for part in Path(n).parts)]


def child_env() -> dict:
    """Environment of a child xaiseg process: this engine and the toy models importable, unbuffered."""
    path = os.pathsep.join([str(Path(xaiseg.__file__).parent.parent), str(ENGINE_TESTS)])
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


class Child:
    """A child process (``python -m MODULE ARGS``) whose stream is read as it comes."""

    def __init__(self, module: str, args: List[str], watch: str = "stderr") -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=child_env())
        self.stream = self.proc.stderr if watch == "stderr" else self.proc.stdout
        self.seen = ""

    def wait_for(self, pattern, limit: float = 300.0) -> str:
        """Read the watched stream until ``pattern`` (a compiled regex) appears; the text so far.
        ``limit`` only stops a test that would otherwise hang."""
        deadline = time.monotonic() + limit
        fd = self.stream.fileno()
        while not pattern.search(self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern.pattern!r} never appeared:\n{self.seen[-2000:]}"
            ready, _, _ = select.select([fd], [], [], left)
            chunk = os.read(fd, 65536) if ready else b""
            if ready and not chunk:
                raise AssertionError(f"the process ended before {pattern.pattern!r} appeared "
                                     f"(status {self.proc.wait()}):\n{self.seen[-3000:]}")
            self.seen += chunk.decode("utf-8", "replace")
        return self.seen

    def finish(self, timeout: float = 300.0) -> Tuple[int, str, str]:
        """Wait for the end: status, all of stdout and all of stderr."""
        out, err = self.proc.communicate(timeout=timeout)
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        if self.stream is self.proc.stderr:
            err = self.seen + err
        else:
            out = self.seen + out
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def folder_state(folder: Path) -> Optional[Dict[str, bytes]]:
    return tree(folder) if Path(folder).exists() else None
