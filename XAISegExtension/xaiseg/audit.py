"""``xaiseg audit CASES.csv -o OUTDIR``: explain many cases with the same methods and compare them.

Each row of the CSV is a case (columns in :data:`COLUMNS`): an image, a prompt (a label map and a
label, or a box ``I0 J0 K0 I1 J1 K1`` in voxel indices), optionally a ground truth, the structure's
name, a per-case method list and segmenter overrides.  Each case becomes a
:class:`~xaiseg.request.RunRequest` (through ``RunRequest.from_dict``, the one parser) and runs with
:func:`xaiseg.pipeline.run` into ``OUTDIR/<case>/``.  :func:`run_case` is the one function that
runs a case, in this process or mapped over the cases on a Dask cluster (:mod:`xaiseg.audit_cluster`).

A finished case writes ``OUTDIR/<case>/audit_case.json`` (its request's fingerprint, the files it
wrote and its rows of the metrics table) last, so a case is complete when that record matches its
request and every file in it exists; a second audit skips complete cases.  ``OUTDIR/audit_state.json``
(written atomically after every case) says how each case ended.  A failing case (any exception, or
a Dask worker that died running it) is recorded with its error and the others go on.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from .errors import InputError, XAISegError
from .io import write_text_atomic
from .names import safe_name, stem_name

COLUMNS = ("name", "image", "structure", "labels", "label", "box", "ground_truth", "ground_truth_label",
           "methods", "slices", "slice_range", "segmenter")
STATE_NAME = "audit_state.json"
CASE_RECORD = "audit_case.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class Case:
    """One row of the cases file: its name, structure, the request's checked JSON form (or the
    error that stopped it from being one) and the ground truth for the Dice."""

    name: str
    structure: str
    row: int
    request: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    ground_truth: Optional[str] = None
    ground_truth_label: Optional[int] = None

    @property
    def fingerprint(self) -> str:
        """What the outputs depend on: the request, the ground truth (which only the Dice reads) and
        the version of the table's columns, so that a case measured by an older table is run again."""
        from .audit_table import TABLE_VERSION

        text = json.dumps([self.request, self.ground_truth, self.ground_truth_label, TABLE_VERSION], sort_keys=True,
                          default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def output_dir(self) -> Optional[Path]:
        return Path(self.request["output_dir"]) if self.request else None

    def task(self) -> Dict[str, Any]:
        """What a worker needs to run the case (plain data, so it travels to a Dask worker)."""
        return {"name": self.name, "structure": self.structure, "request": self.request,
                "fingerprint": self.fingerprint, "ground_truth": self.ground_truth,
                "ground_truth_label": self.ground_truth_label}


# ----------------------------------------------------------------------------------------- the cases file

def _numbers(text: str, n: int, what: str) -> List[float]:
    parts = [p for p in text.replace(";", " ").replace(",", " ").split() if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != n:
        raise InputError(f"{what} {text!r} must be {n} numbers separated by spaces or commas")
    return values


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{what} {text!r} must be an integer") from None


def read_rows(path: Path) -> List[Dict[str, str]]:
    """The rows of the cases file (header names lower-cased); an :class:`InputError` names an unknown
    column, a file without rows, or a file that is not CSV text."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"cases file {path} does not exist; expected a CSV file with a header row")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            rows = [{header[i]: (v or "").strip() for i, v in enumerate(raw.get(k) for k in reader.fieldnames)
                     if header[i]} for raw in reader]  # unnamed columns (a spreadsheet's trailing comma) drop out
            header = [h for h in header if h]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cases file {path} is not CSV text ({exc}); expected a header row and one row per "
                         "case") from None
    unknown = [h for h in header if h not in COLUMNS]
    if unknown or "image" not in header:
        raise InputError(f"cases file {path}: unknown column(s) {unknown} or no 'image' column; expected columns "
                         f"among {', '.join(COLUMNS)}")
    rows = [r for r in rows if any(r.values())]
    if not rows:
        raise InputError(f"cases file {path} has no case rows; expected one row per case under the header")
    return rows


def prompt_of(row: Dict[str, str]) -> Dict[str, Any]:
    """The request's prompt from a row: ``labels`` (+ ``label``, default 1) or ``box`` (voxel i, j, k)."""
    given = [c for c in ("labels", "box") if row.get(c)]
    if len(given) != 1:
        raise InputError(f"give exactly one prompt column, labels (a label map, with label) or box "
                         f"(I0 J0 K0 I1 J1 K1); got {given or 'none'}")
    if row.get("labels"):
        return {"type": "labelmap", "file": row["labels"], "label": _int(row.get("label") or "1", "label")}
    v = _numbers(row["box"], 6, "box")
    return {"type": "box", "lo_kji": v[:3][::-1], "hi_kji": v[3:][::-1]}


def case_from_row(row: Dict[str, str], number: int, outdir: Path, base: Path, run_options: Dict[str, Any],
                  explain_for: Callable[[Optional[str]], Dict[str, Any]]) -> Case:
    """One case; a row that cannot become a request is a case with its ``error`` (recorded as failed)."""
    stem = stem_name(row["image"]) if row.get("image") else f"row{number}"
    structure = row.get("structure") or stem
    name = safe_name(row.get("name") or (f"{stem}_{structure}" if row.get("structure") else stem))
    gt = row.get("ground_truth") or None
    gt_label = None
    try:
        if gt:
            gt = str(Path(gt) if Path(gt).is_absolute() else base / gt)
            gt_label = _int(row["ground_truth_label"], "ground_truth_label") if row.get("ground_truth_label") else None
        if not row.get("image"):
            raise InputError("the image column is empty; expected a volume file or DICOM folder")
        data: Dict[str, Any] = json.loads(json.dumps(run_options))
        if row.get("segmenter"):
            try:
                extra = json.loads(row["segmenter"])
            except json.JSONDecodeError as exc:
                raise InputError(f"segmenter {row['segmenter']!r} is not a JSON object ({exc.msg})") from None
            if not isinstance(extra, dict):
                raise InputError(f"segmenter {row['segmenter']!r} must be a JSON object of segmenter options")
            data["segmenter"] = dict(data.get("segmenter") or {}, **extra)
        explain = dict(explain_for(row.get("methods", "").replace(";", ",") or None))
        explain.update(target=gt, target_label=gt_label)
        if row.get("slices"):
            explain["slices"] = row["slices"]
        data.update(input=row["image"], output_dir=str(outdir / name), name=safe_name(structure),
                    prompt=prompt_of(row), explain=explain)
        if row.get("slice_range"):
            data["slice_range"] = row["slice_range"]
        from .request import RunRequest

        request = RunRequest.from_dict(data, base).to_dict()
    except (XAISegError, ValueError) as exc:  # a bad row is a failed case; the other rows still run
        return Case(name, structure, number, error=f"{type(exc).__name__}: {exc}", ground_truth=gt,
                    ground_truth_label=gt_label)
    return Case(name, structure, number, request, None, gt, gt_label)


def read_cases(path: Path, outdir: Path, run_options: Optional[Dict[str, Any]] = None,
               explain_for: Optional[Callable[[Optional[str]], Dict[str, Any]]] = None) -> List[Case]:
    """Every case of the cases file (relative paths from its folder).  ``run_options``: the request's
    run settings shared by every case (segmenter, preprocessing, axis, ...); ``explain_for(methods)``:
    the request's explain object for a case's method list (None: the audit's methods)."""
    path = Path(path)
    if explain_for is None:
        from .explain import DEFAULT_METHODS

        explain_for = lambda methods: {"methods": methods or ",".join(DEFAULT_METHODS)}  # noqa: E731
    cases = [case_from_row(r, i, Path(outdir).resolve(), path.resolve().parent, run_options or {}, explain_for)
             for i, r in enumerate(read_rows(path), 2)]
    seen: Dict[str, int] = {}
    for c in cases:
        if c.name in seen:
            raise InputError(f"cases file {path}: rows {seen[c.name]} and {c.row} are both named {c.name!r}; "
                             "expected one name per case (give a name column)")
        seen[c.name] = c.row
    return cases


# ----------------------------------------------------------------------------------------- one case

def run_case(task: Dict[str, Any]) -> Dict[str, Any]:
    """Run one case (:meth:`Case.task`) in this process and return its record: ``status`` done or
    failed, the error, the seconds, its rows of the metrics table and the files it wrote.  The same
    function runs in-process and on Dask workers."""
    from .pipeline import run
    from .progress import Progress
    from .request import RunRequest

    t0 = time.perf_counter()
    record: Dict[str, Any] = {"name": task["name"], "structure": task["structure"], "fingerprint": task["fingerprint"]}
    outdir = Path(task["request"]["output_dir"])
    try:
        (outdir / CASE_RECORD).unlink()  # a case being run again is not complete until it finished
    except OSError:
        pass
    try:
        remove_stale_stages(outdir)  # a worker that died on this case before (Dask runs it again) left these
        request = RunRequest.from_dict(task["request"])
        outcome = run(request, Progress())
        seconds = time.perf_counter() - t0
        from .audit_table import case_rows

        rows = case_rows(task, outcome, seconds)
        files = sorted({Path(p).name for v in outcome.files.values() for p in (v if isinstance(v, list) else [v])})
        record.update(status="done", error=None, seconds=round(seconds, 3), rows=rows, files=files)
        write_text_atomic(outdir / CASE_RECORD, json.dumps(record, indent=1))
    except Exception as exc:  # any failure of one case is recorded; the audit goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      seconds=round(time.perf_counter() - t0, 3), rows=[], files=[])
    return record


def completed(case: Case) -> Optional[Dict[str, Any]]:
    """The record of a case whose outputs are complete for its current request, else None."""
    if case.request is None:
        return None
    path = case.output_dir / CASE_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("status") != "done" or record.get("fingerprint") != case.fingerprint:
        return None
    if not all((case.output_dir / f).is_file() for f in record.get("files", [])):
        return None
    return record


def failed_record(case: Case, error: str, seconds: float = 0.0) -> Dict[str, Any]:
    return {"name": case.name, "structure": case.structure, "fingerprint": case.fingerprint, "status": "failed",
            "error": error, "seconds": round(seconds, 3), "rows": [], "files": []}


def remove_stale_stages(folder: Optional[Path]) -> None:
    """Staging folders a dead worker left in a case's folder (nobody else writes there)."""
    if folder is not None and folder.is_dir():
        for stage in folder.glob(".xaiseg-*"):
            if stage.is_dir():
                shutil.rmtree(stage, ignore_errors=True)


# ----------------------------------------------------------------------------------------- the audit

@dataclass
class AuditResult:
    """What an audit did: each case's record (by name, in the file's order), which cases were
    skipped as complete, and the files of the metrics table."""

    records: Dict[str, Dict[str, Any]]
    skipped: List[str] = field(default_factory=list)
    files: Dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> List[str]:
        return [n for n, r in self.records.items() if r.get("status") != "done"]


def load_state(outdir: Path) -> Dict[str, Any]:
    try:
        state = json.loads((Path(outdir) / STATE_NAME).read_text(encoding="utf-8"))
        return state if isinstance(state, dict) and isinstance(state.get("cases"), dict) else {"cases": {}}
    except (OSError, ValueError):
        return {"cases": {}}


def save_state(outdir: Path, state: Dict[str, Any]) -> Path:
    state = dict(state, version=STATE_VERSION)
    return write_text_atomic(Path(outdir) / STATE_NAME, json.dumps(state, indent=1, sort_keys=True))


Executor = Callable[[List[Case]], Iterator[Dict[str, Any]]]


def in_process(cases: List[Case]) -> Iterator[Dict[str, Any]]:
    """Run the cases one after the other in this process."""
    for case in cases:
        yield run_case(case.task())


def run_audit(cases: List[Case], outdir: Path, executor: Optional[Executor] = None,
              log: Optional[Callable[[str], None]] = None, plot: bool = True) -> AuditResult:
    """Run every case that is not complete (with ``executor``; default in this process), record each
    case's end in the state file as it comes, and write the metrics table (CSV, Markdown, plot)."""
    from .audit_table import write_table
    from .lock import output_lock

    outdir, log = Path(outdir), log or (lambda text: None)
    executor = executor or in_process
    with output_lock(outdir):
        state = load_state(outdir)
        records: Dict[str, Dict[str, Any]] = {}
        skipped, todo = [], []
        for case in cases:
            done = completed(case)
            if done is not None:
                records[case.name] = done
                skipped.append(case.name)
            elif case.error:
                records[case.name] = failed_record(case, case.error)
            else:
                todo.append(case)
        for name in skipped:
            state["cases"][name] = _state_entry(records[name])
        for case in cases:
            if case.error:
                state["cases"][case.name] = _state_entry(records[case.name])
        save_state(outdir, state)
        if skipped:
            log(f"{len(skipped)} case(s) already complete: {', '.join(skipped)}")
        by_name = {c.name: c for c in todo}
        for n, record in enumerate(executor(todo), 1):
            case = by_name[record["name"]]
            if record.get("worker_died"):
                remove_stale_stages(case.output_dir)
            records[case.name] = record
            state["cases"][case.name] = _state_entry(record)
            save_state(outdir, state)
            end = f"done in {record['seconds']:.0f} s" if record["status"] == "done" else f"FAILED: {record['error']}"
            log(f"[{n}/{len(todo)}] {case.name}: {end}")
        ordered = {c.name: records[c.name] for c in cases}
        files = write_table(cases, ordered, outdir, plot=plot, skipped=skipped)
    return AuditResult(ordered, skipped, files)


def _state_entry(record: Dict[str, Any]) -> Dict[str, Any]:
    return {k: record.get(k) for k in ("status", "error", "fingerprint", "seconds")}
