"""The worker process on its own: request errors come back as one JSON line with exit status 2 and
no files; SIGTERM mid-run ends it with status 130 and leaves no output folder and no partial files."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from XAISegExtensionLib.process import ENGINE_ROOT, WorkerProcess, worker_environment


def start(request: dict, tmp: Path) -> subprocess.Popen:
    (tmp / "request.json").write_text(json.dumps(request))
    return subprocess.Popen([sys.executable, "-m", "xaiseg.worker", str(tmp / "request.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=worker_environment(), cwd=tmp)


def events(out: bytes):
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def write_volume(path: Path, shape=(6, 48, 48)):
    from xaiseg.io import Geometry, Volume, write_volume as write

    rng = np.random.default_rng(1)
    a = rng.normal(100, 5, shape).astype(np.float32)
    a[:, 16:32, 16:32] += 300
    geom = Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), shape[::-1])
    write(Volume(a, geom), a, path)


def test_engine_root_holds_the_engine():
    assert (ENGINE_ROOT / "xaiseg" / "worker.py").is_file()


def test_bad_request_is_one_error_line(tmp_path):
    p = start({"input": "missing.nrrd", "output_dir": "out", "prompt": {"type": "box", "lo_kji": [0, 0, 0],
                                                                        "hi_kji": [1, 1, 1]}}, tmp_path)
    out, err = p.communicate(timeout=120)
    ev = events(out)
    assert p.returncode == 2, err.decode()[-2000:]
    assert ev[-1]["event"] == "error" and ev[-1]["error"] == "FileFormatError"
    assert "missing.nrrd does not exist" in ev[-1]["message"]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_malformed_prompt_names_the_value(tmp_path):
    p = start({"input": "v.nrrd", "output_dir": "out", "prompt": {"type": "circle"}}, tmp_path)
    out, _ = p.communicate(timeout=120)
    last = events(out)[-1]
    assert p.returncode == 2 and last["error"] == "PromptError" and "'circle'" in last["message"]


def test_box_outside_the_volume(tmp_path):
    write_volume(tmp_path / "v.nrrd")
    p = start({"input": "v.nrrd", "output_dir": "out",
               "prompt": {"type": "box", "lo_kji": [0, 100, 100], "hi_kji": [5, 120, 120]}}, tmp_path)
    out, _ = p.communicate(timeout=300)
    last = events(out)[-1]
    assert p.returncode == 2 and last["error"] == "PromptError" and "outside the volume" in last["message"]
    assert not (tmp_path / "out").exists()


def test_sigterm_mid_run_writes_nothing(tmp_path):
    write_volume(tmp_path / "v.nrrd")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "previous.txt").write_text("an earlier run's output stays until a run completes")
    worker = WorkerProcess_for(tmp_path, {"input": "v.nrrd", "output_dir": "out", "threads": 2,
                                          "prompt": {"type": "box", "lo_kji": [0, 14, 14], "hi_kji": [5, 33, 33]}})
    seen = []
    deadline = time.monotonic() + 300
    while not any(e["event"] == "step" for e in seen):
        seen += worker.poll()
        assert time.monotonic() < deadline and worker.returncode in (None, 0), seen
        time.sleep(0.05)
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(60)
    time.sleep(0.2)
    seen += worker.poll()
    assert worker.returncode == 130, worker.stderr_tail()
    assert seen[-1]["event"] == "cancelled"
    assert (tmp_path / "out" / "previous.txt").is_file() and len(list((tmp_path / "out").iterdir())) == 1
    assert not list(tmp_path.glob(".out.partial-*"))
    worker.close()


def WorkerProcess_for(tmp: Path, request: dict) -> WorkerProcess:
    (tmp / "request.json").write_text(json.dumps(request))
    return WorkerProcess(tmp / "request.json", python=sys.executable)


def test_stray_prints_do_not_break_the_protocol(tmp_path, monkeypatch):
    """Output that is not a JSON event (a library printing to stdout) reaches the parent as a log line."""
    script = tmp_path / "noisy.py"
    script.write_text("print('hello from a library')\nprint('{\"event\": \"log\", \"message\": \"ok\"}')\n")
    (tmp_path / "request.json").write_text("{}")
    w = WorkerProcess.__new__(WorkerProcess)
    # run the reader on a plain script to exercise the parsing without a model
    import queue
    import threading

    w._events = queue.Queue()
    w.proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    w._reader = threading.Thread(target=w._read, daemon=True)
    w._reader.start()
    w.final = None
    w.proc.wait(30)
    w._reader.join(5)
    got = w.poll()
    assert got == [{"event": "log", "message": "hello from a library"}, {"event": "log", "message": "ok"}]
