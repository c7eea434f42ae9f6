"""The metrics table of an audit (:mod:`xaiseg.audit`): one row per case and method, as CSV and
Markdown, and a plot of each method's deletion AUC per structure.

Columns: deletion and insertion AUC (means over the explained slices; lower deletion and higher
insertion mean the map ranks the pixels the model needs first), the gain over the best trivial map
when the run measured the trivial maps (``--baselines``), the share of slices whose map shows
evidence above the noise, the Spearman correlation of adjacent slices' maps, the pointing game and
the Dice of the segmentation against the case's ground truth, the method's seconds (attribution
over every slice), its encoder passes (attribution and metrics) and the case's seconds.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .io import write_bytes_atomic, write_text_atomic

COLUMNS = ("case", "structure", "method", "status", "slices", "deletion_auc", "insertion_auc", "deletion_gain",
           "insertion_gain", "evidence_share", "adjacent_spearman", "pointing_game", "dice", "encoder_passes",
           "seconds", "case_seconds")
#: the version of what the table's figures mean: a case recorded under another version runs again
#: (2: Dice on the slices the case segmented)
TABLE_VERSION = 2

#: columns that measure time (they differ between two runs of the same case)
TIMING = ("seconds", "case_seconds")
TABLE_CSV, TABLE_MD, PLOT = "audit_metrics.csv", "audit_metrics.md", "audit_deletion_auc.png"


def _round(value: Any, digits: int = 4) -> Any:
    return None if value is None else round(float(value), digits)


def segmentation_dice(task: Dict[str, Any], segmentation) -> Optional[float]:
    """Dice of the case's mask against its ground truth on the slices the case segmented (a case
    that segments a few slices is not charged for the structure's other slices); None without one."""
    if not task.get("ground_truth"):
        return None
    import numpy as np

    from .io import read_labelmap
    from .metrics import dice

    labels = read_labelmap(task["ground_truth"], reference=segmentation.volume).array
    label = task.get("ground_truth_label")
    target = labels == label if label is not None else labels > 0
    mask = segmentation.mask > 0
    ks = sorted({int(r.index) for r in segmentation.slices})
    axis = segmentation.record.get("settings", {}).get("slicing_axis_index")
    if ks and axis is not None:
        mask, target = np.take(mask, ks, axis=int(axis)), np.take(target, ks, axis=int(axis))
    return _round(dice(mask, target))


def case_rows(task: Dict[str, Any], outcome, seconds: float) -> List[Dict[str, Any]]:
    """The case's rows of the table, one per method, from the run's metrics document."""
    doc = outcome.explanation.metrics()
    dice = segmentation_dice(task, outcome.segmentation)
    rows = []
    for method, entry in doc["methods"].items():
        s, slices = entry["summary"], entry["slices"].values()
        rows.append({
            "case": task["name"], "structure": task["structure"], "method": method, "status": "done",
            "slices": int(s["slices"]), "deletion_auc": _round(s.get("deletion_auc")),
            "insertion_auc": _round(s.get("insertion_auc")), "deletion_gain": _round(s.get("deletion_gain")),
            "insertion_gain": _round(s.get("insertion_gain")), "evidence_share": _round(s.get("evidence")),
            "adjacent_spearman": _round(s.get("adjacent_spearman")), "pointing_game": _round(s.get("pointing_game")),
            "dice": dice,
            "encoder_passes": int(sum(int(v.get("evaluations", 0)) + int(v.get("metric_evaluations", 0))
                                      for v in slices)),
            "seconds": _round(sum(float(v.get("seconds", 0.0)) for v in slices), 2),
            "case_seconds": _round(seconds, 1)})
    return rows


def table_rows(cases: Sequence, records: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Every row, in the cases' order; a failed case has one row per method it asked for, with its error."""
    out: List[Dict[str, Any]] = []
    for case in cases:
        record = records[case.name]
        if record.get("status") == "done":
            out.extend(dict(r, error="") for r in record["rows"])
            continue
        methods = [m["name"] for m in (case.request or {}).get("explain", {}).get("methods", [])] or [""]
        out.extend({"case": case.name, "structure": case.structure, "method": m, "status": "failed",
                    "error": record.get("error") or ""} for m in methods)
    return out


def to_csv(rows: List[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS) + ["error"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in writer.fieldnames})
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def to_markdown(rows: List[Dict[str, Any]], skipped: Sequence[str] = ()) -> str:
    lines = ["# Audit: metrics per case and method", "",
             "Deletion AUC: lower is better; insertion AUC: higher is better (means over the explained slices). "
             "Gains are over the best trivial map (only with --baselines). Evidence share: slices whose map rises "
             "above the noise. Dice: the segmentation against the case's ground truth, on the slices the case segmented.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    failed = {r["case"]: r["error"] for r in rows if r["status"] != "done"}
    if failed:
        lines += ["", "## Failed cases", ""] + [f"- {case}: {error}" for case, error in failed.items()]
    if skipped:
        lines += ["", f"Cases already complete and not run again: {', '.join(skipped)}."]
    return "\n".join(lines) + "\n"


def plot_deletion(rows: List[Dict[str, Any]]) -> Optional[bytes]:
    """A PNG of each method's deletion AUC per structure (bars: the mean over cases; dots: each case),
    or None when no row has one."""
    done = [r for r in rows if r["status"] == "done" and r.get("deletion_auc") is not None]
    if not done:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    structures = list(dict.fromkeys(r["structure"] for r in done))
    methods = list(dict.fromkeys(r["method"] for r in done))
    fig = Figure(figsize=(max(5.0, 1.2 * len(structures) * max(1, len(methods)) ** 0.5 + 2), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        for s, structure in enumerate(structures):
            values = [r["deletion_auc"] for r in done if r["method"] == method and r["structure"] == structure]
            if not values:
                continue
            x = s - 0.4 + width * (m + 0.5)
            ax.bar(x, float(np.mean(values)), width * 0.9, color=f"C{m}", label=method if s == 0 else None)
            ax.plot([x] * len(values), values, "k.", markersize=4)
    ax.set_xticks(range(len(structures)))
    ax.set_xticklabels(structures, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("deletion AUC (lower: more faithful)")
    ax.set_ylim(0, max(1.0, max(r["deletion_auc"] for r in done) * 1.05))
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_table(cases: Sequence, records: Dict[str, Dict[str, Any]], outdir: Path, plot: bool = True,
                skipped: Sequence[str] = ()) -> Dict[str, Path]:
    """Write the table as CSV and Markdown, and the plot (atomically); their paths."""
    rows = table_rows(cases, records)
    files = {"csv": write_text_atomic(Path(outdir) / TABLE_CSV, to_csv(rows)),
             "markdown": write_text_atomic(Path(outdir) / TABLE_MD, to_markdown(rows, skipped))}
    try:
        png = plot_deletion(rows) if plot else None
    except ImportError:  # matplotlib is optional (pip install 'xaiseg[audit]'); the table is written without it
        png = None
    if png is not None:
        files["plot"] = write_bytes_atomic(Path(outdir) / PLOT, png)
    return files
