"""``python -m xaiseg.bench_consistency -o DIR``: how much the maps of adjacent slices agree, and
what that costs in faithfulness, on runs of consecutive slices through real structures.

Per structure (MNI152, a tight Harvard-Oxford box per axial slice, LiteMedSAM): ``--slices``
consecutive slices from the structure's middle are segmented and explained through the volume
pipeline by budgeted occlusion and RISE, with the deletion/insertion curves on
every one of them.  The table gives each method's adjacent-slice Spearman (every adjacent pair,
over the pair's common ROI), its deletion AUC against the trivial maps' on the same slices, and
its passes per slice.  ``--merge A B`` writes one table from two runs made with different
engines (``PYTHONPATH=<other checkout>/XAISegExtension python -m xaiseg.bench_consistency -o B``),
labelled by ``--label``, for a before/after comparison.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .io import write_tables
from .metrics import mean_of

METHODS = {"occlusion": {"passes": 6}, "rise": {"n_masks": 40, "early_stop": False}}


def middle_run(slices: Sequence[int], count: int) -> List[int]:
    """``count`` consecutive slices from the middle of ``slices``."""
    ks = sorted(slices)
    start = max(0, (len(ks) - count) // 2)
    return ks[start:start + count]


def structure_rows(segmenter, sample, name: str, count: int, steps: int, progress) -> Dict[str, Dict]:
    from .explain import make_explainer
    from .pipeline import SegmentConfig, Session
    from .volume import LabelBoxPrompt

    session = Session(sample.image, segmenter, SegmentConfig())
    truth = sample.mask(name).astype(np.uint8)
    present = [int(k) for k in np.nonzero(truth.reshape(len(truth), -1).any(axis=1))[0]]
    chosen = middle_run(present, count)
    only = np.zeros_like(truth)
    only[chosen] = truth[chosen]  # the box on the chosen slices only: nothing else is segmented
    seg = session.segment(LabelBoxPrompt(only, 1), name=name, progress=progress)
    chosen = [r.index for r in seg.slices if r.voxels > 0]
    explainers = [make_explainer(m, metric_steps=steps, baselines=True, **s) for m, s in METHODS.items()]
    t0 = time.perf_counter()
    run = session.explain(seg, explainers, slices=chosen, progress=progress)
    seconds = time.perf_counter() - t0
    doc = run.metrics()["methods"]
    out = {}
    for method in METHODS:
        s = doc[method]["summary"]
        per = doc[method]["slices"].values()
        out[method] = {"slices": chosen, "adjacent_spearman": s.get("adjacent_spearman"),
                       "adjacent_pairs": s.get("adjacent_pairs"), "deletion_auc": s.get("deletion_auc"),
                       "best_trivial_deletion_auc": s.get("best_trivial_deletion_auc"),
                       "beats_trivial_deletion": s.get("beats_trivial_deletion"),
                       "passes_per_slice": float(np.mean([v.get("evaluations", 0) for v in per]))}
    out["seconds"] = round(seconds, 1)
    return out


def bench_consistency(outdir: Path, structures: Sequence[str], count: int = 5, steps: int = 4,
                      label: str = "this checkout", threads: int = 1) -> Dict:
    import torch

    from .bench_explain import machine
    from .models.litemedsam import LiteMedSAM
    from .progress import TqdmProgress
    from .sample_data import load_mni_atlas

    torch.set_num_threads(threads)
    sample = load_mni_atlas(structures)
    model = LiteMedSAM()
    result = {"machine": dict(machine("cpu"), threads=threads), "label": label, "slices": count,
              "metric_steps": steps, "methods": METHODS, "structures": {}}
    for name in structures:
        result["structures"][name] = structure_rows(model, sample, name, count, steps, TqdmProgress())
    write(outdir, [result])
    return result


def _f(v, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def write(outdir: Path, results: Sequence[Dict]) -> None:
    first = results[0]
    md = ["# Adjacent-slice consistency of the maps (LiteMedSAM, MNI152)", "",
          f"Produced by `python -m xaiseg.bench_consistency` on {first['machine']['platform']}. Per structure, "
          f"{first['slices']} consecutive slices from its middle, each with a tight Harvard-Oxford box, explained "
          "through the volume pipeline by budgeted occlusion (6 passes) and RISE (40 masks, no early stop); "
          f"deletion AUC over the ROI with {first['metric_steps']} steps, pixels removed by inpainting (lower is "
          "better), beside the best of the trivial maps (blurred mask, box centre, random) on the same slices. "
          "Adjacent Spearman: the mean over every adjacent pair, over the pair's common ROI (1: the same ranking).",
          "", "| engine | structure | method | adjacent Spearman | deletion AUC | best trivial | beats all trivial "
              "| passes / slice | slices on a shared frame |", "|---|---|---|---|---|---|---|---|---|"]
    # the last column: slices that used a frame made on an earlier slice, in runs of the engine with
    # shared frames (commit c42499a, reverted); "-" for every other engine
    means: Dict = {}
    for r in results:
        for name, rows in r["structures"].items():
            for method, row in rows.items():
                if method == "seconds":
                    continue
                md.append(f"| {r['label']} | {name} | {method} | {_f(row['adjacent_spearman'], 2)} | "
                          f"{_f(row['deletion_auc'])} | {_f(row['best_trivial_deletion_auc'])} | "
                          f"{_f(row['beats_trivial_deletion'], 2)} | {row['passes_per_slice']:.1f} | "
                          f"{row.get('shared_frames', '-')} |")
                m = means.setdefault((r["label"], method), {"rho": [], "auc": []})
                m["rho"].append(row["adjacent_spearman"])
                m["auc"].append(row["deletion_auc"])
    md += ["", "| engine | method | mean adjacent Spearman | mean deletion AUC |", "|---|---|---|---|"]
    for (label, method), m in means.items():
        md.append(f"| {label} | {method} | {_f(mean_of(m['rho']), 2)} | {_f(mean_of(m['auc']))} |")
    write_tables(Path(outdir), "consistency", "\n".join(md) + "\n", {"runs": list(results)}, indent=1)
    print("\n".join(md))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xaiseg.bench_consistency", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default="docs/benchmarks")
    ap.add_argument("--structures", default="Left_Caudate,Left_Hippocampus")
    ap.add_argument("--slices", type=int, default=5, help="consecutive slices per structure (default 5)")
    ap.add_argument("--metric-steps", type=int, default=4)
    ap.add_argument("--label", default="this checkout", help="the engine's name in the table")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="only write one table from these runs' JSON")
    a = ap.parse_args(argv)
    if a.merge:
        runs = [r for d in a.merge for r in json.loads((Path(d) / "consistency.json").read_text())["runs"]]
        write(Path(a.output), runs)
        return 0
    bench_consistency(Path(a.output), [s.strip() for s in a.structures.split(",")], a.slices, a.metric_steps,
                      a.label, a.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
