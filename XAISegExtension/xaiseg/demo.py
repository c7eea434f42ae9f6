"""`xaiseg demo`: LiteMedSAM on the MNI152 template, scored against the Harvard-Oxford atlas.

For each of left/right caudate, putamen and thalamus it segments twice - a tight box per slice
from the atlas, and one 3D box propagated from its central slice - writes both masks with the
template's geometry, a PNG sheet of a few axial slices with the masks outlined, and a table of
Dice and seconds per slice.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .io import write_text_atomic, write_volume
from .pipeline import SegmentConfig, Session
from .progress import Progress, TqdmProgress
from .sample_data import DEMO_STRUCTURES, AtlasSample, load_mni_atlas
from .volume import BoxPrompt, LabelBoxPrompt


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    denom = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / denom) if denom else 1.0


def atlas_box(mask: np.ndarray) -> BoxPrompt:
    idx = np.argwhere(mask)
    return BoxPrompt(tuple(int(v) for v in idx.min(0)), tuple(int(v) for v in idx.max(0)))


@dataclass
class Row:
    structure: str
    mode: str
    dice: float
    slices: int
    encoder_passes: int
    seconds: float
    mask: np.ndarray

    def record(self) -> dict:
        """The row without its mask, for JSON."""
        return {k: v for k, v in self.__dict__.items() if k != "mask"}


def evaluate(session: Session, sample: AtlasSample, structures: Sequence[str],
             modes: Sequence[str] = ("boxes", "propagated"), progress: Optional[Progress] = None) -> List[Row]:
    """Segment each structure in each prompting mode and score it against the atlas."""
    rows = []
    for name in structures:
        truth = sample.mask(name)
        for mode in modes:
            prompt = (LabelBoxPrompt(sample.labels.array, sample.label_values[name], source="Harvard-Oxford")
                      if mode == "boxes" else atlas_box(truth))
            result = session.segment(prompt, name=f"{name}_{mode}", progress=progress)
            rows.append(Row(name, mode, dice(result.mask, truth), len(result.slices),
                            result.record["evaluations"]["encoder_passes"], result.record["seconds"], result.mask))
    return rows


def slice_timings(session: Session) -> Dict[str, float]:
    """Mean seconds per slice for the encoder (embedding) and the decoder, measured directly."""
    seg, vs = session.segmenter, session.volume_segmenter
    idx = [vs.n_slices // 2 + d for d in (-2, 0, 2)]
    t0 = time.perf_counter()
    embs = [seg.embed(vs.slice(k)) for k in idx]
    t1 = time.perf_counter()
    from .models.base import SlicePrompt

    h, w = vs.slice_shape
    prompt = SlicePrompt(box=(w // 3, h // 3, 2 * w // 3, 2 * h // 3))
    reps = 5
    for e in embs:
        for _ in range(reps):
            seg.decode(e, prompt)
    t2 = time.perf_counter()
    return {"embed_s_per_slice": (t1 - t0) / len(idx), "decode_s_per_slice": (t2 - t1) / (len(idx) * reps)}


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


def markdown_table(rows: List[Row]) -> str:
    lines = ["| structure | prompt | Dice | slices | encoder passes | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.structure} | {r.mode} | {r.dice:.3f} | {r.slices} | {r.encoder_passes} | {r.seconds:.1f} |")
    return "\n".join(lines)


def write_sheet(sample: AtlasSample, session: Session, rows: List[Row], path: Path) -> Path:
    from .render import PALETTE, display_flips, overlay, sheet

    axis = session.axis
    boxes = [r for r in rows if r.mode == "boxes"]
    union = np.zeros(sample.labels.array.shape, bool)
    for r in boxes:
        union |= r.mask.astype(bool)
    ks = np.where(np.moveaxis(union, axis, 0).any(axis=(1, 2)))[0]
    picks = [int(ks[int(q * (len(ks) - 1))]) for q in (0.2, 0.4, 0.6, 0.8)] if len(ks) else []
    flips = display_flips(sample.image.geometry, axis)
    tiles, titles = [], []
    for k in picks:
        img = session.volume_segmenter.slice(k)
        masks = [(np.take(r.mask, k, axis=axis), PALETTE[n % len(PALETTE)]) for n, r in enumerate(boxes)]
        tiles.append(overlay(img, masks, flips))
        titles.append(f"axial slice k={k}")
    legend = [(r.structure.replace("_", " "), PALETTE[n % len(PALETTE)]) for n, r in enumerate(boxes)]
    return sheet(tiles, titles, path, legend, columns=4)


def run_demo(outdir: Path, quiet: bool = False, structures: Sequence[str] = DEMO_STRUCTURES) -> dict:
    from .models.litemedsam import LiteMedSAM

    t0 = time.perf_counter()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    say("Loading the MNI152 template and Harvard-Oxford labels ...")
    sample = load_mni_atlas(structures)
    say("Loading LiteMedSAM (weights verified by SHA-256) ...")
    session = Session(sample.image, LiteMedSAM(), SegmentConfig())
    progress = Progress() if quiet else TqdmProgress()
    rows = evaluate(session, sample, structures, progress=progress)
    progress.done()
    outdir = Path(outdir)
    for r in rows:
        write_volume(sample.image, r.mask.astype(np.uint8), outdir / "masks" / f"{r.structure}_{r.mode}.nrrd")
    sheet_path = write_sheet(sample, session, rows, outdir / "sheet.png")
    timings = slice_timings(session)
    summary = {
        "volume": str(sample.image.source), "labels": f"Harvard-Oxford subcortical, probability > {sample.threshold}%",
        "model": session.segmenter.describe(), "preprocessing": session.preprocessing_record(),
        "rows": [r.record() for r in rows],
        "timings": timings, "peak_rss_mb": peak_rss_mb(), "total_seconds": time.perf_counter() - t0,
        "encoder_passes": session.volume_segmenter.encoder_passes,
    }
    table = markdown_table(rows)
    write_text_atomic(outdir / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(outdir / "summary.md", table + "\n")
    say("")
    say(table)
    say(f"\nembedding {timings['embed_s_per_slice']:.2f} s/slice, decoding {timings['decode_s_per_slice'] * 1000:.0f} "
        f"ms/slice, {session.volume_segmenter.encoder_passes} slices embedded once and reused; peak memory "
        f"{summary['peak_rss_mb']:.0f} MB; total {summary['total_seconds']:.0f} s")
    say(f"masks in {outdir / 'masks'}, slice sheet {sheet_path}")
    return summary
