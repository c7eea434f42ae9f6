"""``python -m xaiseg.bench_bound``: how low can the deletion curve go on the faithfulness
benchmark's slices?  A greedy search that optimises the curve itself
(:func:`xaiseg.explain.search.backward_search`) beside the trivial maps and the methods.

The faithfulness benchmark asks occlusion, RISE and the layer maps to beat the trivial maps (the
blurred mask, the box centre, random) on 80 % of slices.  This benchmark takes the same slices
(:func:`xaiseg.bench_faithfulness.pair_segmentation`), the same engine, ROI and curves, and
searches for the deletion order that lowers the curve most, at a resolution of about ``--blocks``
squares over the ROI.  Where even the search does not beat the trivial maps, no map of that
resolution does by the search's way of ranking; where it does, the gap is the room a method has.
The methods' figures on the same slices are read from ``faithfulness.json`` in the output folder,
and the trivial maps' figures are checked against it (the same slices and engine give the same
figures).

Two processes, one per core, each with its share of the structures (``--structures``), are
merged with ``--merge DIR ...``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .bench_faithfulness import METHODS, _f
from .io import write_tables
from .metrics import mean_of

STEPS = 8
BLOCKS = (12, 48)


def slice_row(session, seg, k: int, blocks: Sequence[int], seed: int = 0) -> Dict:
    """The trivial maps' deletion AUC on slice ``k`` of ``seg``, and the search's with each of
    ``blocks`` (squares over the ROI); ``search``: the lowest of them."""
    from .bench_explain import slice_setup
    from .explain import baselines as trivial
    from .explain.base import PerturbationEngine
    from .explain.measure import faithfulness
    from .explain.search import backward_search
    from .roi.geometry import prompt_box

    image, prompt, embedding, _mask, region = slice_setup(session, seg, k)
    engine = PerturbationEngine(session.segmenter, image, prompt, region, embedding=embedding, stage=f"slice {k}")
    maps = trivial.trivial_maps(engine.reference, prompt_box(engine.prompt, engine.reference), seed, region)
    row: Dict = {"mask_px": int(engine.reference.sum()), "roi_px": int(region.sum()), "trivial": {}}
    for name, m in maps.items():
        row["trivial"][name] = faithfulness(engine, m, STEPS, stage=f"slice {k} {name}")["deletion_auc"]
    row["searches"] = {}
    for n in blocks:
        t0 = time.perf_counter()
        found = backward_search(engine, STEPS, n)
        curve = faithfulness(engine, found.ranking, STEPS, stage=f"slice {k} search, {n} blocks")
        row["searches"][str(n)] = {"deletion_auc": curve["deletion_auc"], "curve": curve["deletion_curve"],
                                   "passes": found.passes, "block_px": found.block_px,
                                   "seconds": round(time.perf_counter() - t0, 1)}
    row["search"] = min(v["deletion_auc"] for v in row["searches"].values())
    return row


def structure_rows(session, sample, name: str, blocks: Sequence[int], progress) -> Dict:
    from .bench_faithfulness import pair_segmentation

    seg, slices = pair_segmentation(session, sample, name, 1, progress)
    return {"slices": slices, "rows": {str(k): slice_row(session, seg, k, blocks) for k in slices}}


def with_methods(result: Dict, faithfulness: Dict) -> Dict:
    """``result`` with each slice's method figures from a faithfulness benchmark's JSON, and whether
    its trivial maps measured the same there (same slices, engine and curves)."""
    maps = faithfulness.get("maps") or {}
    for name, entry in result["structures"].items():
        methods = (maps.get(name) or {}).get("methods") or {}
        for k, row in entry["rows"].items():
            row["methods"] = {m: ((methods.get(m) or {}).get("per_slice") or {}).get(k, {}).get("deletion_auc")
                              for m in METHODS}
            theirs = ((methods.get("occlusion") or {}).get("trivial") or {}).get(k)
            row["trivial_as_faithfulness"] = None if not theirs else all(
                abs(theirs[t]["deletion_auc"] - v) < 1e-6 for t, v in row["trivial"].items())
    return result


def searchers(result: Dict):
    """The search's columns: one per block count."""
    return tuple(f"search, {n} blocks" for n in result["blocks"])


def _value(row: Dict, who: str) -> Optional[float]:
    if who == "search":
        return row["search"]
    if who.startswith("search, "):
        return row["searches"][who.split()[1]]["deletion_auc"]
    return (row.get("methods") or {}).get(who)


def summary(result: Dict) -> Dict:
    """Mean deletion AUC and share of slices beating all three trivial maps: the search and each method."""
    rows = [r for e in result["structures"].values() for r in e["rows"].values()]
    best = [min(r["trivial"].values()) for r in rows]
    out = {"slices": len(rows), "best_trivial": mean_of(best)}
    for who in searchers(result) + ("search",) + METHODS:
        values = [_value(r, who) for r in rows]
        known = [(v, b) for v, b in zip(values, best) if v is not None]
        out[who] = {"deletion_auc": mean_of([v for v, _ in known]),
                    "beats_trivial": None if not known else sum(v < b for v, b in known) / len(known)}
    return out


def markdown(result: Dict) -> str:
    s = summary(result)
    counts = ",".join(str(n) for n in result["blocks"])
    columns = searchers(result)
    machine = result["machine"]
    lines = ["# How low can the deletion curve go? A search beside the trivial maps and the methods", "",
             f"Produced by `python -m xaiseg.bench_bound --blocks {counts}` on {machine.get('platform', '?')} "
             f"({machine.get('device', 'cpu')}, {machine.get('threads', '?')} torch threads). The faithfulness "
             "benchmark's slices (the middle adjacent pair of each structure, a tight atlas box per slice), engine, "
             f"ROI and curves ({STEPS} steps, removed pixels inpainted). The search starts from the whole ROI removed "
             "and, at each of the curve's fractions from the last back to the first, puts back the blocks (squares, "
             f"about {counts.replace(',', ' or ')} of them over the ROI) whose return raised the Dice least. It "
             "optimises the curve it is measured with, so it is a bound for maps of its resolution, not an "
             "explanation; `search` is the lower of its runs. Lower is better. The methods' figures are read from "
             "faithfulness.json (its maps part, on the same slices).", "",
             "| structure | slice | mask px | ROI px per step | blurred mask | box centre | random | "
             + " | ".join(f"{c} (block px, passes)" for c in columns) + " | search beats all trivial | "
             + " | ".join(METHODS) + " | trivial maps as in faithfulness.json |",
             "|" + "---|" * (9 + len(columns) + len(METHODS))]
    for name, entry in result["structures"].items():
        for k, r in entry["rows"].items():
            t = r["trivial"]
            found = [r["searches"][str(n)] for n in result["blocks"]]
            lines.append(f"| {name} | {k} | {r['mask_px']} | {r['roi_px'] // STEPS} | {_f(t['blurred_mask'])} | "
                         f"{_f(t['box_centre'])} | {_f(t['random'])} | "
                         + " | ".join(f"{_f(v['deletion_auc'])} ({v['block_px']}, {v['passes']})" for v in found)
                         + f" | {'yes' if r['search'] < min(t.values()) else 'no'} | "
                         + " | ".join(_f((r.get("methods") or {}).get(m)) for m in METHODS) + " | "
                         + {True: "yes", False: "no", None: "-"}[r.get("trivial_as_faithfulness")] + " |")
    lines += ["", f"Over {s['slices']} slices (the best trivial map's mean deletion AUC: {_f(s['best_trivial'])}):", "",
              "| map | mean deletion AUC | slices beating all three trivial maps |", "|---|---|---|"]
    for who in columns + ("search",) + METHODS:
        share = s[who]["beats_trivial"]
        lines.append(f"| {who} | {_f(s[who]['deletion_auc'])} | {'-' if share is None else f'{share:.0%}'} |")
    lines += ["", f"Total {result['seconds']} s."]
    return "\n".join(lines) + "\n"


def merge(dirs: Sequence[Path]) -> Dict:
    parts = [json.loads((Path(d) / "bound.json").read_text()) for d in dirs]
    out = dict(parts[0], structures={}, seconds=round(sum(p["seconds"] for p in parts), 1))
    for p in parts:
        if p["blocks"] != out["blocks"]:
            raise SystemExit(f"bound runs with --blocks {p['blocks']} and {out['blocks']} cannot be merged")
        out["structures"].update(p["structures"])
    return out


def blocks(text: str) -> List[int]:
    """``--blocks``: positive whole numbers, comma-separated."""
    try:
        counts = [int(v) for v in str(text).split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit(f"--blocks {text!r}: expected positive whole numbers separated by commas, such as 12,48")
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xaiseg.bench_bound", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default="docs/benchmarks")
    ap.add_argument("--structures", help="comma-separated Harvard-Oxford names (default: the six demo structures)")
    ap.add_argument("--blocks", default=",".join(str(n) for n in BLOCKS),
                    help="comma-separated counts of squares over the ROI, one search each (default "
                         f"{','.join(str(n) for n in BLOCKS)})")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="only write one bound.md/.json from the runs in DIR...")
    args = ap.parse_args(argv)
    out = Path(args.output)
    if args.merge:
        result = merge([Path(d) for d in args.merge])
    else:
        import torch

        from .bench_explain import machine
        from .models.litemedsam import LiteMedSAM
        from .pipeline import SegmentConfig, Session
        from .progress import TqdmProgress
        from .sample_data import DEMO_STRUCTURES, load_mni_atlas

        if args.threads:
            torch.set_num_threads(args.threads)
        names: List[str] = args.structures.split(",") if args.structures else list(DEMO_STRUCTURES)
        sample = load_mni_atlas(names)
        session = Session(sample.image, LiteMedSAM(), SegmentConfig())
        result = {"machine": machine("cpu"), "blocks": blocks(args.blocks), "structures": {}}
        t0 = time.perf_counter()
        for name in names:
            result["structures"][name] = structure_rows(session, sample, name, result["blocks"], TqdmProgress())
            result["seconds"] = round(time.perf_counter() - t0, 1)
            write_tables(out, "bound", markdown(result), result)
    faith = out / "faithfulness.json"
    if faith.is_file():
        result = with_methods(result, json.loads(faith.read_text()))
    write_tables(out, "bound", markdown(result), result)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
