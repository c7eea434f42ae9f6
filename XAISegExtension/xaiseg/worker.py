"""The background worker Slicer starts: ``python -m xaiseg.worker REQUEST.json``.

The request is a JSON object (see :func:`parse_request`); the worker reads the input volume,
segments it, optionally explains the mask, and writes every result file into the request's
``output_dir``.  It talks to its parent through **stdout, one JSON object per line**:

``{"event": "start", ...}``          once, with the worker's pid and the request's name
``{"event": "stage"|"step"|"done", "stage": NAME, "done": i, "total": n, ...}``   progress
``{"event": "log", "message": ...}``  human-readable notes
``{"event": "result", "output_dir": ..., "files": {...}, "seconds": ...}``  the last line on success
``{"event": "error", "error": TYPE, "message": ...}``  the last line when the input or model is bad
``{"event": "cancelled", "message": ...}``  the last line after SIGTERM/SIGINT or the cancel file

Results are written into a hidden folder beside ``output_dir`` and renamed into place only when
the whole run finished, so a cancelled or failed run leaves nothing partial behind.  Exit status:
0 success, 2 bad input/model (an ``XAISegError``), 130 cancelled, 1 unexpected failure.
Anything else the libraries print goes to stderr, so stdout only ever carries JSON lines.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .errors import Cancelled, InputError, PromptError, XAISegError
from .progress import CallbackProgress, CancelToken

REQUEST_VERSION = 1
TASKS = ("run", "calibrate")
PROMPT_TYPES = ("box", "points", "labelmap")

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


class Emitter:
    """Writes one JSON object per line to a private duplicate of stdout and flushes it."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: Dict[str, Any]) -> None:
        line = json.dumps(event, default=_json_default)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def _json_default(value):
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None:
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        if isinstance(value, np.ndarray):
            return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


# --------------------------------------------------------------------------- request parsing


def _path(value: Any, base: Path, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} {value!r} must be a non-empty path string")
    p = Path(value)
    return p if p.is_absolute() else base / p


def _ints(value: Any, n: int, what: str) -> List[int]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise PromptError(f"{what} {value!r} must be a list of {n} integers")
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise PromptError(f"{what} {value!r} must be a list of {n} integers") from None


def parse_request(data: Any, base: Path) -> Dict[str, Any]:
    """Check a request and resolve its relative paths against ``base`` (the request file's folder).

    Keys: ``version`` (1), ``task`` (``run`` or ``calibrate``), ``input`` (volume file),
    ``output_dir``, ``name``, ``prompt`` (``{"type": "box", "lo_kji": [k, j, i], "hi_kji": [...]}``,
    ``{"type": "points", "points_kji": [[k, j, i], ...], "labels": [1, 0, ...]}`` or
    ``{"type": "labelmap", "file": F, "label": 1, "margin": 0}``), ``segmenter`` (keyword
    arguments of :func:`xaiseg.models.load_segmenter` plus ``kind``), ``preprocessing``
    (fields of :class:`xaiseg.preprocess.Preprocessing`), ``axis``, ``margin``, ``slice_range``
    (``[first, last]`` array indices along the slicing axis, inclusive, or null for all the
    prompt covers), ``explain`` (null, or ``{"methods": [{"name": M, "settings": {...}}],
    "roi": {...}, "slices": [k, ...] or null, "target": F or null, "seed": 0}``), ``threads``,
    ``cancel_file`` (the run stops when this file appears).
    """
    if not isinstance(data, dict):
        raise InputError(f"the request must be a JSON object, got {type(data).__name__}")
    version = data.get("version", REQUEST_VERSION)
    if version != REQUEST_VERSION:
        raise InputError(f"request version {version!r} is not supported; expected {REQUEST_VERSION}")
    task = data.get("task", "run")
    if task not in TASKS:
        raise InputError(f"task {task!r} is unknown; expected one of {', '.join(TASKS)}")
    req: Dict[str, Any] = {"task": task, "version": version}
    req["segmenter"] = dict(data.get("segmenter") or {"kind": "litemedsam"})
    req["segmenter"].setdefault("kind", "litemedsam")
    for key in ("checkpoint", "torchscript"):
        if req["segmenter"].get(key):
            req["segmenter"][key] = str(_path(req["segmenter"][key], base, f"segmenter {key}"))
    threads = data.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads {threads!r} must be a positive integer or null")
    req["threads"] = threads
    req["cancel_file"] = str(_path(data["cancel_file"], base, "cancel_file")) if data.get("cancel_file") else None
    if task == "calibrate":
        req["repeats"] = int(data.get("repeats", 1))
        return req
    req["input"] = _path(data.get("input"), base, "input volume")
    req["output_dir"] = _path(data.get("output_dir"), base, "output_dir")
    name = data.get("name") or req["input"].name.split(".")[0]
    if not isinstance(name, str) or any(c in name for c in "/\\\0") or name.startswith("."):
        raise InputError(f"name {name!r} must be a plain file-name prefix without slashes")
    req["name"] = name
    req["prompt"] = _parse_prompt(data.get("prompt"), base)
    req["preprocessing"] = dict(data.get("preprocessing") or {})
    req["axis"] = data.get("axis", "axial")
    req["margin"] = int(data.get("margin", 0))
    sr = data.get("slice_range")
    req["slice_range"] = None if sr is None else _ints(sr, 2, "slice_range")
    if req["slice_range"] is not None and req["slice_range"][0] > req["slice_range"][1]:
        raise InputError(f"slice_range {sr} has first > last; expected [first, last] with first <= last")
    explain = data.get("explain")
    if explain:
        methods = explain.get("methods") or []
        if not isinstance(methods, list) or not methods:
            raise InputError(f"explain.methods {methods!r} must be a non-empty list of {{'name', 'settings'}}")
        parsed = []
        for m in methods:
            if isinstance(m, str):
                m = {"name": m}
            if not isinstance(m, dict) or not isinstance(m.get("name"), str):
                raise InputError(f"explain method {m!r} must be a name or {{'name': ..., 'settings': {{...}}}}")
            parsed.append({"name": m["name"], "settings": dict(m.get("settings") or {})})
        slices = explain.get("slices")
        if slices is not None:
            if not isinstance(slices, list) or not all(isinstance(s, int) for s in slices):
                raise InputError(f"explain.slices {slices!r} must be a list of slice indices or null")
        target = explain.get("target")
        report = explain.get("report")
        if report is not None and not isinstance(report, dict):
            raise InputError(f"explain.report {report!r} must be an object of report options or null")
        req["explain"] = {"methods": parsed, "roi": dict(explain.get("roi") or {"source": "box"}), "report": report,
                          "slices": slices, "seed": int(explain.get("seed", 0)),
                          "target": str(_path(target, base, "explain.target")) if target else None}
    else:
        req["explain"] = None
    return req


def _parse_prompt(p: Any, base: Path) -> Dict[str, Any]:
    if not isinstance(p, dict) or p.get("type") not in PROMPT_TYPES:
        raise PromptError(f"prompt {p!r} must be an object with type one of {', '.join(PROMPT_TYPES)}")
    if p["type"] == "box":
        return {"type": "box", "lo_kji": _ints(p.get("lo_kji"), 3, "box lo_kji"),
                "hi_kji": _ints(p.get("hi_kji"), 3, "box hi_kji")}
    if p["type"] == "points":
        pts = p.get("points_kji")
        if not isinstance(pts, list) or not pts:
            raise PromptError(f"points_kji {pts!r} must be a non-empty list of [k, j, i]")
        labels = p.get("labels") or [1] * len(pts)
        try:
            points = [[float(v) for v in q] for q in pts]
        except (TypeError, ValueError):
            raise PromptError(f"points_kji {pts!r} must hold numbers") from None
        if any(len(q) != 3 for q in points):
            raise PromptError(f"points_kji {pts!r} must be [k, j, i] triples")
        return {"type": "points", "points_kji": points, "labels": [int(v) for v in labels]}
    return {"type": "labelmap", "file": str(_path(p.get("file"), base, "prompt label map")),
            "label": int(p.get("label", 1)), "margin": int(p.get("margin", 0))}


# --------------------------------------------------------------------------- building engine objects


def build_segmenter(options: Dict[str, Any], progress=None):
    """The segmenter named by ``options['kind']``; the other keys go to its loader."""
    from .models import load_segmenter

    opts = {k: v for k, v in options.items() if v not in (None, "")}
    kind = opts.pop("kind", "litemedsam")
    allowed = {"litemedsam": {"checkpoint", "sha256", "device"},
               "medsam": {"checkpoint", "sha256", "url", "cache_dir", "device"},
               "torch": {"torchscript", "factory", "factory_kwargs", "checkpoint", "sha256", "class_index",
                         "in_channels", "input_size", "device"}}.get(kind)
    if allowed is None:
        raise InputError(f"segmenter {kind!r} is unknown; expected litemedsam, medsam or torch")
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise InputError(f"segmenter option(s) {unknown} do not apply to {kind}; expected some of {sorted(allowed)}")
    if kind == "medsam":
        opts["progress"] = progress
    return load_segmenter(kind, **opts)


def build_prompt(p: Dict[str, Any], volume, axis: int, slice_range: Optional[List[int]]):
    """The engine's volume prompt, restricted to ``slice_range`` along ``axis``."""
    import numpy as np

    from .io import read_labelmap
    from .volume import BoxPrompt, LabelBoxPrompt, PointsPrompt

    shape = volume.shape
    if p["type"] == "box":
        box = BoxPrompt(tuple(p["lo_kji"]), tuple(p["hi_kji"])).check(shape)
        if slice_range is not None:
            lo, hi = list(box.lo), list(box.hi)
            first, last = max(lo[axis], slice_range[0]), min(hi[axis], slice_range[1])
            if first > last:
                raise PromptError(f"slice range {slice_range[0]}..{slice_range[1]} does not overlap the box, which "
                                  f"covers slices {lo[axis]}..{hi[axis]} along axis {axis}")
            lo[axis], hi[axis] = first, last
            box = BoxPrompt(tuple(lo), tuple(hi))
        return box
    if p["type"] == "points":
        pts, labels = p["points_kji"], p["labels"]
        if slice_range is not None:
            keep = [i for i, q in enumerate(pts) if slice_range[0] <= round(q[axis]) <= slice_range[1]]
            if not keep:
                raise PromptError(f"no point lies in the slice range {slice_range[0]}..{slice_range[1]}")
            pts, labels = [pts[i] for i in keep], [labels[i] for i in keep]
        return PointsPrompt(tuple(tuple(q) for q in pts), tuple(labels)).check(shape)
    labels = read_labelmap(p["file"], reference=volume)
    array = labels.array
    if slice_range is not None:
        array = array.copy()
        index = [slice(None)] * 3
        outside = np.ones(shape[axis], dtype=bool)
        outside[slice_range[0]:slice_range[1] + 1] = False
        index[axis] = outside
        array[tuple(index)] = 0
    return LabelBoxPrompt(array, p["label"], p["margin"], p["file"])


def _set_threads(threads: Optional[int]) -> None:
    if threads:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover - torch is a hard dependency
            pass


# --------------------------------------------------------------------------- tasks


def run_calibrate(req: Dict[str, Any], emit: Callable[[dict], None], progress) -> Dict[str, Any]:
    """Time one encoder pass and one decoder pass of the segmenter on a synthetic slice."""
    import numpy as np

    from .models.base import SlicePrompt

    t0 = time.perf_counter()
    segmenter = build_segmenter(req["segmenter"], progress)
    load = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    image = rng.random((256, 256), dtype=np.float32)
    progress.stage("calibrate", 2 * req["repeats"])
    enc, dec = [], []
    for _ in range(req["repeats"]):
        progress.check()
        t = time.perf_counter()
        emb = segmenter.embed(image)
        enc.append(time.perf_counter() - t)
        progress.step()
        t = time.perf_counter()
        segmenter.decode(emb, SlicePrompt(box=(64, 64, 192, 192)))
        dec.append(time.perf_counter() - t)
        progress.step()
    progress.done()
    return {"model": segmenter.describe(), "seconds_load": load,
            "seconds_encoder": float(np.median(enc)), "seconds_decoder": float(np.median(dec))}


def run_segment_explain(req: Dict[str, Any], outdir: Path, emit: Callable[[dict], None], progress) -> Dict[str, Any]:
    """Segment (and explain, when asked) and write every file into ``outdir``; returns the file map."""
    from .io import read_labelmap, read_volume
    from .pipeline import SegmentConfig, Session
    from .preprocess import Preprocessing
    from .volume import slicing_axis

    volume = read_volume(req["input"])
    emit({"event": "log", "message": f"read {req['input'].name}: {volume.shape[::-1]} voxels (i, j, k), "
                                     f"spacing {tuple(round(s, 3) for s in volume.geometry.spacing)} mm"})
    try:
        prep = Preprocessing(**req["preprocessing"])
    except TypeError as exc:
        raise InputError(f"preprocessing {req['preprocessing']} has an unknown field ({exc})") from None
    config = SegmentConfig(axis=req["axis"], preprocessing=prep, margin=req["margin"])
    # the prompt is checked before the model is loaded, so a bad box fails in a second
    prompt = build_prompt(req["prompt"], volume, slicing_axis(volume.geometry, req["axis"]), req["slice_range"])
    segmenter = build_segmenter(req["segmenter"], progress)
    emit({"event": "log", "message": f"segmenter: {segmenter.describe().get('name', req['segmenter']['kind'])}"})
    session = Session(volume, segmenter, config)
    seg = session.segment(prompt, name=req["name"], progress=progress)
    if not seg.mask.any():
        emit({"event": "log", "message": "the segmentation is empty: the model found nothing inside the prompt"})
    files: Dict[str, Any] = {}
    explain = req["explain"]
    if explain is None:
        paths = seg.write(outdir)
        files.update({k: Path(v).name for k, v in paths.items()})
        return {"files": files, "axis": session.axis, "voxels": seg.voxel_count,
                "slices": sorted(int(s.index) for s in seg.slices)}
    from .explain import make_explainer
    from .roi import RoiConfig

    explainers = []
    for m in explain["methods"]:
        settings = dict(m["settings"])
        settings.setdefault("seed", explain["seed"])
        try:
            explainers.append(make_explainer(m["name"], **settings))
        except TypeError as exc:
            raise InputError(f"settings {sorted(m['settings'])} do not fit method {m['name']!r}: {exc}") from None
    roi_options = dict(explain["roi"])
    roi_mask_file = roi_options.pop("mask_file", None)
    if "clip_prompts" in roi_options:
        prompts = roi_options["clip_prompts"]
        roi_options["clip_prompts"] = tuple([prompts] if isinstance(prompts, str) else prompts)
    try:
        roi = RoiConfig(**roi_options)
    except TypeError as exc:
        raise InputError(f"ROI options {explain['roi']} are invalid: {exc}") from None
    target = roi_mask = None
    if explain["target"]:
        target = (read_labelmap(explain["target"], reference=volume).array > 0).astype("uint8")
    if roi_mask_file:
        path = roi_mask_file if Path(roi_mask_file).is_absolute() else req["input"].parent / roi_mask_file
        roi_mask = (read_labelmap(path, reference=volume).array > 0).astype("uint8")
    run = session.explain(seg, explainers, roi=roi, slices=explain["slices"], target=target, progress=progress,
                          roi_mask=roi_mask)
    paths = dict(run.write(outdir))
    if explain.get("report") is not None:
        paths.update(_write_report(outdir, req["name"], explain["report"], emit))
    for key, value in paths.items():
        if isinstance(value, (list, tuple)):
            files[key] = [Path(v).name for v in value]
        elif isinstance(value, dict):
            files[key] = {k: (Path(v).name if not isinstance(v, (list, tuple)) else [Path(x).name for x in v])
                          for k, v in value.items()}
        else:
            files[key] = Path(value).name
    return {"files": files, "axis": session.axis, "voxels": seg.voxel_count,
            "slices": sorted(int(s.index) for s in seg.slices)}


def _write_report(outdir: Path, name: str, options: Dict[str, Any], emit: Callable[[dict], None]) -> Dict[str, Any]:
    """Findings, narrative and report of the run (xaiseg.narrate); a failing narrator is logged,
    not fatal, so the explanation the user waited for is kept."""
    from .narrate import ReportOptions, build_report

    try:
        paths = build_report(outdir, ReportOptions(name=name, **options))
    except TypeError as exc:
        raise InputError(f"report options {sorted(options)} are invalid: {exc}") from None
    except XAISegError as exc:
        emit({"event": "log", "message": f"the narrative could not be written: {exc}"})
        return {}
    return {f"report_{k}" if not k.startswith("report") else k: v for k, v in paths.items()}


# --------------------------------------------------------------------------- process plumbing


def _watch_cancel_file(path: str, token: CancelToken, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        if os.path.exists(path):
            token.cancel()
            return


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Events go to a private copy of stdout; everything else printed (by torch, warnings, C code)
    # is sent to stderr so the parent only ever reads JSON lines.
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    emit = Emitter(os.fdopen(events_fd, "w", encoding="utf-8", buffering=1))
    token = CancelToken()

    def on_signal(signum, frame):  # noqa: ARG001 - signal API
        token.cancel()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if len(argv) != 1:
        emit({"event": "error", "error": "UsageError", "message": "usage: python -m xaiseg.worker REQUEST.json"})
        return EXIT_INPUT
    request_path = Path(argv[0])
    started = time.perf_counter()
    partial: Optional[Path] = None
    stop = threading.Event()
    try:
        try:
            data = json.loads(request_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"request file {request_path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"request file {request_path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        req = parse_request(data, request_path.resolve().parent)
        emit({"event": "start", "pid": os.getpid(), "task": req["task"], "name": req.get("name")})
        _set_threads(req["threads"])
        if req["cancel_file"]:
            threading.Thread(target=_watch_cancel_file, args=(req["cancel_file"], token, stop), daemon=True).start()
        progress = CallbackProgress(emit, token)
        if req["task"] == "calibrate":
            result = run_calibrate(req, emit, progress)
            token.check()
            emit(dict(event="result", seconds=time.perf_counter() - started, **result))
            return EXIT_OK
        out: Path = req["output_dir"]
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.parent / f".{out.name}.partial-{os.getpid()}"
        _remove(partial)
        partial.mkdir()
        result = run_segment_explain(req, partial, emit, progress)
        token.check()
        _remove(out)
        os.replace(partial, out)
        partial = None
        emit(dict(event="result", output_dir=str(out), name=req["name"],
                  seconds=time.perf_counter() - started, **result))
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
        if partial is not None:
            _remove(partial)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
