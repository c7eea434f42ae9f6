"""``python -m xaiseg.bench_bound``: how low can the deletion curve go on the faithfulness
benchmark's slices?  A greedy search that optimises the curve itself
(:func:`xaiseg.explain.search.backward_search`) beside the trivial maps and the methods.

The faithfulness benchmark asks occlusion, RISE and the layer maps to beat the trivial maps (the
blurred mask, the box centre, random) on 80 % of slices.  This benchmark takes the same slices
(:func:`xaiseg.bench_faithfulness.pair_segmentation`), the same engine, ROI and curves, and
searches for a deletion order that lowers the curve, at a resolution of about ``--blocks`` squares
over the ROI.  Where the search beats the trivial maps, a ranking that does exists, and the gap
is room a method could take; where it does not, the trivial map is hard to beat at that
resolution (the search is greedy, so not impossible).
The methods' figures on the same slices are read from ``faithfulness.json`` in the output folder,
and the trivial maps' figures are checked against it (the same slices and engine give the same
figures).

``--pairs N`` takes N adjacent pairs per structure as the faithfulness benchmark's ``--pairs`` does
(off the middle from 2 on).  ``--polish BLOCKS`` adds, on the slices where no search beats every
trivial map, :func:`xaiseg.explain.search.polish` of the lowest order found: never worse than that
order, so a polished order below the best trivial map shows that a beating one exists there.

Two processes, one per core, each with its share of the structures (``--structures``), are
merged with ``--merge DIR ...``.
"""
from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .bench_faithfulness import METHODS, _f
from .io import write_bytes_atomic, write_tables
from .metrics import curve_auc, mean_of
from .sample_data import DEMO_STRUCTURES

STEPS = 8
BLOCKS = (12, 48)

#: what a run before ``--pairs`` and ``--polish`` (stop 35) measured, holding neither key
OPTION_DEFAULTS = {"pairs": 1, "polish": 0}

#: the summary's column for the lowest order per slice: the search's, or the polished one's where
#: the search did not beat the trivial maps and ``--polish`` refined it
BEST_ORDER = "search, then polish"


def slice_row(session, seg, k: int, blocks: Sequence[int], seed: int = 0, keep: Optional[Dict] = None,
              polish_blocks: int = 0) -> Dict:
    """The trivial maps' deletion AUC on slice ``k`` of ``seg``, and the search's with each of
    ``blocks`` (squares over the ROI); ``search``: the lowest of them.  With ``polish_blocks``, on a
    slice where no search beats every trivial map, :func:`~xaiseg.explain.search.polish` (blocks of
    about that many over the ROI) refines the lowest order found so far (``polished``).  ``keep``:
    filled with what :func:`figure` draws (the slice, its ROI and mask, the blurred mask and the best
    search's rankings)."""
    from .bench_explain import slice_setup
    from .explain.base import PerturbationEngine
    from .explain.measure import faithfulness, trivial_curves
    from .explain.search import backward_search, polish

    image, prompt, embedding, _mask, region = slice_setup(session, seg, k)
    engine = PerturbationEngine(session.segmenter, image, prompt, region, embedding=embedding, stage=f"slice {k}")
    maps, curves = trivial_curves(engine, STEPS, seed, "inpaint", f"slice {k}")
    row: Dict = {"mask_px": int(engine.reference.sum()), "roi_px": int(region.sum()),
                 "trivial": {name: c["deletion_auc"] for name, c in curves.items()},
                 "trivial_curves": {name: c["deletion_curve"] for name, c in curves.items()}}
    row["searches"] = {}
    rankings = {}
    for n in blocks:
        t0 = time.perf_counter()
        found = backward_search(engine, STEPS, n)
        curve = faithfulness(engine, found.ranking, STEPS, stage=f"slice {k} search, {n} blocks")
        row["searches"][str(n)] = {"deletion_auc": curve["deletion_auc"], "curve": curve["deletion_curve"],
                                   "passes": found.passes, "block_px": found.block_px,
                                   "seconds": round(time.perf_counter() - t0, 1)}
        rankings[str(n)] = found.ranking
    best = min(row["searches"], key=lambda n: row["searches"][n]["deletion_auc"])
    row["search"] = row["searches"][best]["deletion_auc"]
    lowest = {"name": f"search, {best} blocks", "ranking": rankings[best], "curve": row["searches"][best]["curve"],
              "deletion_auc": row["search"]}
    if polish_blocks and row["search"] >= min(row["trivial"].values()):
        orders = dict({name: (c["deletion_auc"], maps[name]) for name, c in curves.items()},
                      **{f"search, {n} blocks": (v["deletion_auc"], rankings[n]) for n, v in row["searches"].items()})
        start = min(orders, key=lambda name: orders[name][0])
        t0 = time.perf_counter()
        done = polish(engine, orders[start][1], STEPS, polish_blocks)
        seconds = round(time.perf_counter() - t0, 1)
        # its order measured as every map is (the figure the row reports); unmoved, the start keeps
        # the AUC its own curve measured (a batch of other images could differ in the last digits on
        # a GPU, and an unchanged order must not read as a win)
        measured = faithfulness(engine, done.ranking, STEPS, stage=f"slice {k} polished") if done.moves else None
        row["polished"] = {"deletion_auc": measured["deletion_auc"] if measured else orders[start][0],
                           "polish_auc": done.deletion_auc, "from": start, "start_auc": done.start_auc,
                           "moves": done.moves, "passes": done.passes, "block_px": done.block_px,
                           "curve": measured["deletion_curve"] if measured else done.curve, "seconds": seconds}
        if measured and measured["deletion_auc"] < lowest["deletion_auc"]:
            lowest = {"name": f"polished from the {start.replace('_', ' ')}", "ranking": done.ranking,
                      "curve": measured["deletion_curve"], "deletion_auc": measured["deletion_auc"]}
    if keep is not None:
        keep.update({"slice": k, "image": image, "roi": region, "mask": engine.reference, "row": row,
                     "lowest": {k: lowest[k] for k in ("name", "curve", "deletion_auc")},
                     "rankings": {"blurred mask": maps["blurred_mask"], lowest["name"]: lowest["ranking"]}})
    return row


def figure(keep: Dict, title: str) -> bytes:
    """A PNG of one slice: the slice with the model's mask, what the blurred mask and the lowest
    order found (the best search's, or the polished one's where it is lower) remove at the curve's
    first step, and the deletion curves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .explain.measure import curve_counts, removal_order

    roi, row = keep["roi"], keep["row"]
    ys, xs = np.nonzero(roi)
    pad = 6
    y0, y1 = max(0, ys.min() - pad), min(roi.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(roi.shape[1], xs.max() + pad + 1)
    crop = (slice(y0, y1), slice(x0, x1))
    fig = Figure(figsize=(12, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 4, 1)
    ax.imshow(keep["image"][crop], cmap="gray")
    ax.contour(keep["mask"][crop].astype(float), levels=[0.5], colors="yellow", linewidths=1)
    ax.contour(roi[crop].astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_title(f"slice {keep['slice']}: mask (yellow), ROI (cyan)", fontsize=9)
    for i, (name, ranking) in enumerate(keep["rankings"].items()):
        coords = removal_order(ranking, roi)  # as the curves remove them
        coords = coords[:curve_counts(len(coords), STEPS)[1]]
        first = np.zeros(roi.shape, bool)
        first[coords[:, 0], coords[:, 1]] = True
        ax = fig.add_subplot(1, 4, 2 + i)
        ax.imshow(keep["image"][crop], cmap="gray")
        ax.imshow(np.ma.masked_where(~first[crop], first[crop]), cmap="autumn", alpha=0.6)
        ax.contour(keep["mask"][crop].astype(float), levels=[0.5], colors="yellow", linewidths=1)
        ax.set_title(f"{name}: first 1/{STEPS} removed", fontsize=9)
    for a in fig.axes:
        a.set_xticks([])
        a.set_yticks([])
    ax = fig.add_subplot(1, 4, 4)
    fractions = np.linspace(0, 1, STEPS + 1)
    base = row["trivial_curves"]["blurred_mask"][0] or 1.0
    lowest = keep["lowest"]
    curves = dict(row["trivial_curves"], **{lowest["name"]: lowest["curve"]})
    for name, curve in curves.items():
        auc = row["trivial"].get(name, lowest["deletion_auc"])
        ax.plot(fractions, np.asarray(curve) / base, marker=".", label=f"{name.replace('_', ' ')} ({auc:.3f})")
    ax.set_xlabel("share of the ROI removed", fontsize=8)
    ax.set_ylabel("Dice against the unperturbed mask", fontsize=8)
    ax.set_title("deletion curves (AUC; lower is better)", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def structure_rows(session, sample, name: str, blocks: Sequence[int], progress, keep: Optional[Dict] = None,
                   pairs: int = 1, polish_blocks: int = 0) -> Dict:
    """The rows of the structure's ``pairs`` adjacent pairs as the faithfulness benchmark takes them
    (one: the middle pair); ``keep``: the first slice's figure data."""
    from .bench_faithfulness import pair_segmentation

    seg, slices = pair_segmentation(session, sample, name, pairs, progress)
    return {"slices": slices, "rows": {str(k): slice_row(session, seg, k, blocks, keep=keep if i == 0 else None,
                                                         polish_blocks=polish_blocks)
                                       for i, k in enumerate(slices)}}


def with_methods(result: Dict, faithfulness: Dict) -> Dict:
    """``result`` with each slice's method figures from a faithfulness benchmark's JSON, and whether
    its trivial maps measured the same there (same slices, engine and curves)."""
    maps = faithfulness.get("maps") or {}
    for name, entry in result["structures"].items():
        methods = (maps.get(name) or {}).get("methods") or {}
        for k, row in entry["rows"].items():
            rows = {m: ((methods.get(m) or {}).get("per_slice") or {}).get(k, {}) for m in METHODS}
            row["methods"] = {m: rows[m].get("deletion_auc") for m in METHODS}
            theirs = ((methods.get("occlusion") or {}).get("trivial") or {}).get(k)
            row["trivial_as_faithfulness"] = None if not theirs else all(
                abs(theirs[t]["deletion_auc"] - v) < 1e-6 for t, v in row["trivial"].items())
            curves = {m: rows[m]["deletion_curve"] for m in METHODS if rows[m].get("deletion_curve")}
            # kept since stop 36; only where the trivial maps measure the same there (the same slices,
            # engine and curve fill), so that the floored figures compare like with like
            row.pop("method_curves", None)
            if curves and row["trivial_as_faithfulness"]:
                row["method_curves"] = curves
    return result


def searchers(result: Dict):
    """The search's columns: one per block count."""
    return tuple(f"search, {n} blocks" for n in result["blocks"])


def _columns(result: Dict):
    """The summary's orders: each search, the lowest of them (where there are several), and with
    ``--polish`` the polished."""
    return searchers(result) + (("search",) if len(result["blocks"]) > 1 else ()) \
        + ((BEST_ORDER,) if result.get("polish") else ())


def _value(row: Dict, who: str) -> Optional[float]:
    if who == "search":
        return row["search"]
    if who == BEST_ORDER:
        return min(row["search"], (row.get("polished") or {}).get("deletion_auc", row["search"]))
    if who.startswith("search, "):
        return row["searches"][who.split()[1]]["deletion_auc"]
    return (row.get("methods") or {}).get(who)


def floored_auc(curve: Optional[Sequence[float]]) -> Optional[float]:
    """The deletion AUC of ``curve`` (raw scores, the unperturbed slice's first, the whole ROI removed
    last) with every point below the last raised to it: a removal after which the model draws less of
    its mask than with the whole ROI gone (a changed shape, not missing evidence) earns no more than
    emptying the ROI.  None without a stored curve."""
    if not curve or len(curve) < 2:
        return None
    c = np.asarray(curve, np.float64)
    base = c[0] if abs(c[0]) > 1e-12 else 1.0
    return curve_auc(np.linspace(0.0, 1.0, len(c)), np.maximum(c, c[-1]) / base)


def _curve(row: Dict, who: str) -> Optional[Sequence[float]]:
    """The stored deletion curve of ``who``'s order on ``row`` (None where the run kept none)."""
    searches = row["searches"]
    lowest = min(searches, key=lambda n: searches[n]["deletion_auc"])
    if who == BEST_ORDER:
        polished = row.get("polished") or {}
        if polished.get("deletion_auc", row["search"]) < row["search"]:
            return polished.get("curve")
        return searches[lowest].get("curve")
    if who == "search":
        return searches[lowest].get("curve")
    if who.startswith("search, "):
        return searches[who.split()[1]].get("curve")
    return (row.get("method_curves") or {}).get(who)


def floored_summary(result: Dict) -> Dict:
    """:func:`summary`'s figures with every curve floored at its end (:func:`floored_auc`), the trivial
    maps' too, over the slices whose trivial curves the run stored; ``measured``: each order's slices
    with a stored curve, and ``best_trivial`` the best trivial map's mean over those same slices."""
    rows = [r for e in result["structures"].values() for r in e["rows"].values()
            if all(r.get("trivial_curves", {}).get(n) for n in r["trivial"])]
    best = [min(floored_auc(c) for c in r["trivial_curves"].values()) for r in rows]
    out: Dict = {"slices": len(rows), "best_trivial": mean_of(best)}
    for who in _columns(result) + METHODS:
        known = [(v, b) for v, b in ((floored_auc(_curve(r, who)), b) for r, b in zip(rows, best)) if v is not None]
        out[who] = {"deletion_auc": mean_of([v for v, _ in known]), "measured": len(known),
                    "best_trivial": mean_of([b for _, b in known]),
                    "beats_trivial": None if not known else sum(v < b for v, b in known) / len(known)}
    return out


def summary(result: Dict) -> Dict:
    """Mean deletion AUC and share of slices beating all three trivial maps: each search, the lowest
    of them, with ``--polish`` the lowest of the search and the polished order, and each method."""
    rows = [r for e in result["structures"].values() for r in e["rows"].values()]
    best = [min(r["trivial"].values()) for r in rows]
    out = {"slices": len(rows), "best_trivial": mean_of(best)}
    for who in _columns(result) + METHODS:
        values = [_value(r, who) for r in rows]
        known = [(v, b) for v, b in zip(values, best) if v is not None]
        out[who] = {"deletion_auc": mean_of([v for v, _ in known]),
                    "beats_trivial": None if not known else sum(v < b for v, b in known) / len(known)}
    return out


def _polished_cells(row: Dict) -> str:
    p = row.get("polished")
    if not p:
        return "- (the search beats them) | - | "
    won = p["deletion_auc"] < min(row["trivial"].values())
    return f"{_f(p['deletion_auc'])} ({p['from'].replace('_', ' ')}; {p['moves']}, {p['passes']}) | {'yes' if won else 'no'} | "


def markdown(result: Dict) -> str:
    s = summary(result)
    counts = ",".join(str(n) for n in result["blocks"])
    columns = searchers(result)
    machine = result["machine"]
    pairs, polished = (int(result.get(k, v)) for k, v in OPTION_DEFAULTS.items())
    names = list(result["structures"])
    options = "".join([f" --pairs {pairs}" if pairs != 1 else "", f" --polish {polished}" if polished else "",
                       "" if set(names) == set(DEMO_STRUCTURES) else f" --structures {','.join(names)}"])
    which = "the middle adjacent pair" if pairs == 1 else f"{pairs} adjacent pairs, as `--pairs {pairs}` takes them,"
    lines = ["# How low can the deletion curve go? A search beside the trivial maps and the methods", "",
             f"Produced by `python -m xaiseg.bench_bound --blocks {counts}{options}` on {machine.get('platform', '?')} "
             f"({machine.get('device', 'cpu')}, {machine.get('threads', '?')} torch threads). The faithfulness "
             f"benchmark's slices ({which} of each structure, a tight atlas box per slice), engine, "
             f"ROI and curves ({STEPS} steps, removed pixels inpainted). The search starts from the whole ROI removed "
             "and, at each of the curve's fractions from the last back to the first, puts back the blocks (squares, "
             f"about {counts.replace(',', ' or ')} of them over the ROI) whose return raised the Dice least. It "
             "optimises the curve it is measured with: it shows how low a ranking can drive the curve (being greedy, "
             "not the lowest possible), and it is not an explanation"
             + ("; `search` is the lowest of its runs" if len(result["blocks"]) > 1 else "") + ". Lower is better. "
             + ("The methods' figures are read from faithfulness.json (its maps part, on the same slices)."
                if any(v is not None for e in result["structures"].values() for r in e["rows"].values()
                       for v in (r.get("methods") or {}).values()) else
                "No faithfulness.json lay in the output folder: no method figures.")
             + ("" if not polished else
                f" Where no search beats every trivial map, `polished` starts from the lowest order found (a trivial "
                f"map's or a search's) and moves one block (about {polished} over the ROI) at a time a curve step "
                "earlier or later, keeping the moves that lower the curve: never worse than where it started, "
                "so a polished order below the best trivial map shows that one beating them exists there."), "",
             "| structure | slice | mask px | ROI px per step | blurred mask | box centre | random | "
             + " | ".join(f"{c} (block px, passes)" for c in columns) + " | search beats all trivial | "
             + ("polished (from; moves, passes) | polished beats all trivial | " if polished else "")
             + " | ".join(METHODS) + " | trivial maps as in faithfulness.json |",
             "|" + "---|" * (9 + len(columns) + len(METHODS) + (2 if polished else 0))]
    for name, entry in result["structures"].items():
        for k, r in entry["rows"].items():
            t = r["trivial"]
            found = [r["searches"][str(n)] for n in result["blocks"]]
            lines.append(f"| {name} | {k} | {r['mask_px']} | {int(round(r['roi_px'] / STEPS))} | "
                         f"{_f(t['blurred_mask'])} | {_f(t['box_centre'])} | {_f(t['random'])} | "
                         + " | ".join(f"{_f(v['deletion_auc'])} ({v['block_px']}, {v['passes']})" for v in found)
                         + f" | {'yes' if r['search'] < min(t.values()) else 'no'} | "
                         + (_polished_cells(r) if polished else "")
                         + " | ".join(_f((r.get("methods") or {}).get(m)) for m in METHODS) + " | "
                         + {True: "yes", False: "no", None: "-"}[r.get("trivial_as_faithfulness")] + " |")
    lines += ["", f"Over {s['slices']} slices (the best trivial map's mean deletion AUC: {_f(s['best_trivial'])}):", "",
              "| map | mean deletion AUC | slices beating all three trivial maps |", "|---|---|---|"]
    for who in _columns(result) + METHODS:
        share = s[who]["beats_trivial"]
        lines.append(f"| {who} | {_f(s[who]['deletion_auc'])} | {'-' if share is None else f'{share:.0%}'} |")
    f = floored_summary(result)
    if f["slices"]:
        lines += ["", f"With no credit below the whole ROI removed: each curve's points below its last raised to it, the "
                  "trivial maps' too, so that a removal after which the model draws less of its mask than with the "
                  "whole ROI gone (a changed shape, not missing evidence) earns no more than emptying the ROI. Over "
                  f"the {f['slices']} slices whose curves the run stored (the best trivial map's mean: "
                  f"{_f(f['best_trivial'])}):", "",
                  "| map | mean deletion AUC, floored | the best trivial map's, floored, on the same slices | slices "
                  "beating all three trivial maps, floored | slices with a stored curve |", "|---|---|---|---|---|"]
        for who in _columns(result) + METHODS:
            share = f[who]["beats_trivial"]
            lines.append(f"| {who} | {_f(f[who]['deletion_auc'])} | {_f(f[who]['best_trivial'])} | "
                         f"{'-' if share is None else f'{share:.0%}'} | {f[who]['measured']} |")
    lines += ["", f"Total {result['seconds']} s."]
    return "\n".join(lines) + "\n"


def merge(dirs: Sequence[Path]) -> Dict:
    missing = [str(d) for d in dirs if not (Path(d) / "bound.json").is_file()]
    if missing:
        raise SystemExit(f"--merge {' '.join(missing)}: expected a bound.json there (the -o folder of a run)")
    parts = [json.loads((Path(d) / "bound.json").read_text()) for d in dirs]
    out = dict(parts[0], structures={}, seconds=round(sum(p["seconds"] for p in parts), 1))
    for p in parts:
        for key, default in dict(blocks=None, **OPTION_DEFAULTS).items():
            if p.get(key, default) != out.get(key, default):
                raise SystemExit(f"bound runs with --{key} {p.get(key, default)} and {out.get(key, default)} cannot be "
                                 "merged")
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
    ap.add_argument("--pairs", type=int, default=1, help="adjacent pairs per structure, taken as the faithfulness "
                                                         "benchmark's --pairs takes them (default 1: the middle pair)")
    ap.add_argument("--polish", type=int, default=0, metavar="BLOCKS",
                    help="where no search beats every trivial map, refine the lowest order found by moving blocks "
                         "(about BLOCKS over the ROI) one curve step earlier or later at a time, in at most 3 sweeps "
                         "of about 2 * BLOCKS encoder passes each (default 0: off; try 48)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--figure", metavar="PNG", help="also draw the first structure's first slice into PNG "
                                                    "(needs matplotlib)")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="only write one bound.md/.json from the runs in DIR...")
    args = ap.parse_args(argv)
    out = Path(args.output)
    if args.merge and args.figure:
        raise SystemExit("--figure draws a slice as it is measured; it cannot be used with --merge")
    counts = blocks(args.blocks)
    if args.pairs < 1:
        raise SystemExit(f"--pairs {args.pairs}: expected at least 1 adjacent pair per structure")
    if args.polish < 0:
        raise SystemExit(f"--polish {args.polish}: expected a block count of at least 0 (0: no polish)")
    if args.figure:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("--figure needs matplotlib: pip install 'xaiseg[audit]' (or matplotlib)") from None
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
        result = {"machine": machine("cpu"), "blocks": counts, "pairs": args.pairs, "polish": args.polish,
                  "structures": {}}
        t0 = time.perf_counter()
        keep: Optional[Dict] = {} if args.figure else None
        for name in names:
            result["structures"][name] = structure_rows(session, sample, name, result["blocks"], TqdmProgress(), keep,
                                                        args.pairs, args.polish)
            if keep:
                write_bytes_atomic(Path(args.figure), figure(keep, f"{name}: the blurred mask against a search"))
                keep = None
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
