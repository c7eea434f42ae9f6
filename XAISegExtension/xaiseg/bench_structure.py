"""``xaiseg bench structure``: a whole structure's occlusion explanation on the CPU, before and after
each optimisation, in one run, against the time of segmenting the structure.

For each structure (MNI152, a tight Harvard-Oxford box per axial slice) in a fresh session:

* the segmentation of every slice of the structure, timed: the reference;
* the whole structure explained by budgeted occlusion (``passes``, default 6) with the defaults
  otherwise (batch 1 on a CPU, activation reuse, the no-evidence check's jittered passes, no
  curves), timed: ``x segmentation`` is its time over the segmentation's;
* on a sample of slices spread through the structure, each step of the way from seed 001's
  occlusion to the budgeted one, attribution only, one slice at a time with the variants in turn:
  patch 64 / stride 32 on the model grid in batches of 8 without reuse (the old default), the
  same in batches of 1, the same with activation reuse, the structure-sized coarse-to-fine default,
  and the budgeted one.  Encoder passes per slice, seconds per pass and per slice, and each map's
  deletion AUC over the embedding ROI (8 steps, pixels removed by inpainting);
* MONAI's OcclusionSensitivity (full image, the same 64 / 32 patches) on the sample's middle
  slice, as the reference implementation of the old default's map.

All figures of a run come from one process on one machine, which is recorded; compare ratios.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .io import write_tables
from .metrics import mean_of
from .models.base import without_reuse

PASSES = 6
GOALS = {"passes_per_slice": 6, "deletion_auc_margin": 0.02, "x_segmentation": 4.0}

#: (key, label, occlusion settings, batch size, activation reuse)
VARIANTS = (
    ("seed001_batch8", "64/32, batch 8, no reuse (before)", dict(patch=64, stride=32), 8, False),
    ("seed001_batch1", "64/32, batch 1, no reuse", dict(patch=64, stride=32), 1, False),
    ("seed001_reuse", "64/32, batch 1, reuse", dict(patch=64, stride=32), 1, True),
    # the squares, as the committed table measured them (the strips are the default since stop 45)
    ("structure_sized", "structure-sized coarse to fine, batch 1, reuse", dict(aspect=1.0), 1, True),
    ("budget", "budgeted, batch 1, reuse", None, 1, True),
)
#: the variants whose maps are the same computation (their maps must agree)
SAME_MAP = ("seed001_batch8", "seed001_batch1", "seed001_reuse")


def sample_slices(slices: Sequence[int], count: int) -> List[int]:
    """``count`` slices spread evenly through the inside of ``slices`` (at 1/(count+1), 2/(count+1),
    ...: the end slices, where the structure is a few pixels, are not what a reader explains)."""
    ks = sorted(slices)
    idx = [int(round((i + 1) * (len(ks) - 1) / (count + 1))) for i in range(min(count, len(ks)))]
    return sorted({ks[i] for i in idx})


def _occlusion(segmenter, settings: Dict, batch: int, steps: int):
    from .explain import make_explainer

    return make_explainer("occlusion", segmenter, batch_size=batch, metric_steps=steps, noise_passes=0, **settings)


def slice_rows(session, seg, k: int, passes: int, steps: int) -> Dict[str, Dict]:
    """Every variant on slice ``k``: attribution seconds (the activation cache's pass included where
    it is used), encoder passes, and the deletion AUC of the maps that differ."""
    from .bench_explain import slice_setup

    image, prompt, embedding, _mask, region = slice_setup(session, seg, k)
    plain = without_reuse(session.segmenter)
    out: Dict[str, Dict] = {}
    for key, _label, settings, batch, reuse in VARIANTS:
        settings = dict(passes=passes) if settings is None else settings
        measured = key not in SAME_MAP[:-1]  # the curves once per distinct map
        ex = _occlusion(session.segmenter if reuse else plain, settings, batch, steps if measured else 0)
        e = ex.explain(image, prompt, roi=region, embedding=embedding, measure=measured)
        reuse_record = e.record["reuse"]
        full = reuse_record["full_passes"] + reuse_record["cache_passes"]
        out[key] = {"passes": e.n_evaluations, "reused": reuse_record["reused_passes"], "full_passes": full,
                    "seconds": e.seconds, "deletion_auc": e.metrics.get("deletion_auc") if measured else None,
                    "raw": e.raw}
    reference = out["seed001_reuse"]["raw"]
    for key in SAME_MAP:
        out[key]["max_map_difference"] = float(np.abs(out[key].pop("raw") - reference).max())
    for key in out:
        out[key].pop("raw", None)
    return out


def monai_row(session, seg, k: int, steps: int) -> Dict:
    """MONAI's OcclusionSensitivity (full image, seed 001's 64 / 32 patches) on slice ``k``."""
    from .bench_explain import monai_occlusion, slice_setup
    from .explain import make_explainer
    from .explain.base import PerturbationEngine
    from .explain.measure import faithfulness

    image, prompt, embedding, _mask, region = slice_setup(session, seg, k)
    p, s = make_explainer("occlusion", session.segmenter, patch=64, stride=32).pixel_sizes(image.shape)
    plain = without_reuse(session.segmenter)
    engine = PerturbationEngine(plain, image, prompt, np.ones(image.shape, bool), embedding=embedding, batch_size=1)
    t0 = time.perf_counter()
    raw = monai_occlusion(engine, image, p, s, 1)
    seconds = time.perf_counter() - t0
    curves = PerturbationEngine(session.segmenter, image, prompt, region, embedding=embedding)
    return {"slice": k, "passes": engine.evaluations, "seconds": seconds,
            "deletion_auc": faithfulness(curves, np.where(region, raw, 0.0), steps)["deletion_auc"]}


def _segment(segmenter, sample, name: str, progress, keep: bool = False):
    """A fresh session (no embedding cached yet) and the structure segmented in it, timed; ``keep``:
    keeping each slice's activation cache for an explanation, as ``xaiseg explain`` does."""
    from .pipeline import SegmentConfig, Session
    from .volume import LabelBoxPrompt

    session = Session(sample.image, segmenter, SegmentConfig())
    t0 = time.perf_counter()
    if keep:
        session.keep_activations()
    seg = session.segment(LabelBoxPrompt(sample.mask(name).astype(np.uint8), 1), name=name, progress=progress)
    return session, seg, time.perf_counter() - t0


def structure_result(segmenter, sample, name: str, passes: int, count: int, steps: int, progress,
                     monai: bool = True, parts: Sequence[str] = ("whole", "steps")) -> Dict:
    # segmentation timed before and after the explanation (A B A), so that a change of the machine's
    # load during the run weighs on both sides of the ratio; B is what `xaiseg explain` does:
    # segmentation keeping the activation caches, then the explanation, which starts from them
    from .explain import make_explainer

    session, seg, seg_before = _segment(segmenter, sample, name, progress)
    slices = [r.index for r in seg.slices if r.voxels > 0]
    seg_passes = session.volume_segmenter.encoder_passes
    kept, kept_seg, seg_kept = _segment(segmenter, sample, name, progress, keep=True)
    t0 = time.perf_counter()
    run = kept.explain(kept_seg, [make_explainer("occlusion", passes=passes, metric_steps=0)], slices=slices,
                       progress=progress)  # releases what it did not take
    whole_seconds = time.perf_counter() - t0
    seg_after = _segment(segmenter, sample, name, progress)[2]
    seg_seconds = (seg_before + seg_after) / 2.0
    extra = seg_kept - seg_seconds  # what keeping the caches added to segmentation: the explanation's cost
    doc = run.metrics()["methods"]["occlusion"]
    per_slice = doc["slices"]
    evaluations = [v.get("evaluations") or 0 for v in per_slice.values()]
    chosen = sample_slices(slices, count) if "steps" in parts else []
    rows = {k: slice_rows(session, seg, k, passes, steps) for k in chosen}
    monai = monai and bool(chosen)
    middle = chosen[len(chosen) // 2] if chosen else None
    return {"slices": len(slices), "segmentation_seconds": round(seg_seconds, 2), "segmentation_passes": seg_passes,
            "segmentation_runs": [round(seg_before, 2), round(seg_after, 2)],
            "whole": {"seconds": round(whole_seconds + extra, 2), "explain_seconds": round(whole_seconds, 2),
                      "segmentation_keeping_caches_seconds": round(seg_kept, 2),
                      "x_segmentation": (whole_seconds + extra) / seg_seconds,
                      "attribution_passes_per_slice": float(np.mean(evaluations)),
                      "passes": run.record["evaluations"],
                      "adjacent_spearman": doc["summary"].get("adjacent_spearman"),
                      "evidence_share": doc["summary"].get("evidence")},
            "sample": {str(k): v for k, v in rows.items()},
            "monai": monai_row(session, seg, middle, steps) if monai else None}


def summary(structures: Dict[str, Dict]) -> Dict[str, Dict]:
    """Per variant over every sampled slice: passes per slice, seconds per pass and per slice,
    mean deletion AUC, and the largest map difference from the 64/32 map with reuse."""
    out: Dict[str, Dict] = {}
    if not any(s["sample"] for s in structures.values()):
        return out
    for key, label, *_ in VARIANTS:
        rows = [r[key] for s in structures.values() for r in s["sample"].values()]
        passes = float(np.mean([r["passes"] for r in rows]))
        seconds = float(np.mean([r["seconds"] for r in rows]))
        out[key] = {"label": label, "slices": len(rows), "passes_per_slice": passes, "seconds_per_slice": seconds,
                    "seconds_per_pass": seconds / passes if passes else None,
                    "deletion_auc": mean_of(r.get("deletion_auc") for r in rows),
                    "max_map_difference": max((r.get("max_map_difference", 0.0) for r in rows), default=None)}
    base = out["seed001_batch8"]["seconds_per_slice"]
    for v in out.values():
        v["relative_time"] = v["seconds_per_slice"] / base if base else None
    return out


def bench_structure(outdir: Path, structures: Optional[Sequence[str]] = None, passes: int = PASSES,
                    count: int = 2, steps: int = 8, device: str = "cpu", threads: int = 0, monai: int = 0,
                    parts: Sequence[str] = ("whole", "steps")) -> Dict:
    """``monai``: on how many structures (the first ones) MONAI's occlusion runs too (0: all);
    ``parts``: "whole" (always: the segmentation and the whole structure) and "steps" (the sampled
    slices, each optimisation in turn, and MONAI)."""
    import torch

    from .bench_explain import machine
    from .models.litemedsam import LiteMedSAM
    from .progress import TqdmProgress
    from .sample_data import DEMO_STRUCTURES, load_mni_atlas

    if threads:
        torch.set_num_threads(int(threads))
    structures = tuple(structures or DEMO_STRUCTURES)
    sample = load_mni_atlas(structures)
    segmenter = LiteMedSAM(device=device)
    result: Dict = {"machine": machine(device), "passes": passes, "sample_slices": count, "metric_steps": steps,
                    "goals": GOALS, "structures": {}}
    load = _load()
    t0 = time.perf_counter()
    for i, name in enumerate(structures):
        result["structures"][name] = structure_result(segmenter, sample, name, passes, count, steps, TqdmProgress(),
                                                      monai=not monai or i < monai, parts=parts)
        result["summary"] = summary(result["structures"])
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["load"] = [load, _load()]
        write_tables(outdir, "structure", markdown(result), result)
    print(markdown(result))
    return result


def merge(results: Sequence[Dict]) -> Dict:
    """One result from runs of the same settings over different structures (run side by side)."""
    out = dict(results[0])
    out["structures"] = {name: s for r in results for name, s in r["structures"].items()}
    out["summary"] = summary(out["structures"])
    out["seconds"] = max(r.get("seconds", 0) for r in results)
    out["load"] = [min(r["load"][0] for r in results if r.get("load")), max(r["load"][1] for r in results
                                                                            if r.get("load"))]
    if len(results) > 1:
        out["merged_runs"] = len(results)
    return out


def _load() -> Optional[float]:
    try:
        import os

        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _f(v, nd: int = 3) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def markdown(result: Dict) -> str:
    m = result["machine"]
    load = result.get("load") or [None, None]
    lines = ["# A whole structure explained by occlusion: before and after each optimisation (LiteMedSAM, CPU)", "",
             f"Produced by `xaiseg bench structure` on {m.get('platform', '?')}, {m.get('threads')} torch thread(s), "
             f"device {m.get('device')}; load average {load[0]} at the start, {load[1]} at the end (a shared "
             "machine: compare ratios within the run).  MNI152 1 mm, a tight Harvard-Oxford box per axial slice, "
             "each structure in a fresh session."
             + (f"  {result['merged_runs']} runs side by side, one per core, each with its share of the structures "
                "(`python -m xaiseg.bench_structure --structures ... -o DIR`, then `--merge DIR...`); every ratio "
                "is taken within one run." if result.get("merged_runs") else ""), "",
             "## Whole structures", "",
             f"Segmenting every slice of the structure, then explaining every slice with budgeted occlusion "
             f"({result['passes']} passes) and the defaults otherwise (batch 1, activation reuse, the no-evidence "
             "check's 2 jittered passes, no curves): `xaiseg explain ... --method occlusion --occlusion-passes "
             f"{result['passes']} --metric-steps 0`.", "",
             "Segmentation seconds: the mean of a timing before and one after the explanation, each in a fresh "
             "session. The explanation ran as `xaiseg explain` runs it: in a session whose segmentation kept each "
             "slice's activation cache (timed too), so the explanation starts from those caches; its seconds below "
             "are the explanation's own plus what keeping the caches added to segmentation (that segmentation "
             "less the plain one).", "",
             "| structure | slices | segmentation s | segmentation keeping caches s | explanation s | x segmentation "
             "| occlusion passes/slice | adjacent Spearman | slices with evidence |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in result["structures"].items():
        w = s["whole"]
        lines.append(f"| {name} | {s['slices']} | {s['segmentation_seconds']:.1f} | "
                     f"{_f(w.get('segmentation_keeping_caches_seconds'), 1)} | {w['seconds']:.1f} | "
                     f"{w['x_segmentation']:.2f} | {w['attribution_passes_per_slice']:.1f} | "
                     f"{_f(w['adjacent_spearman'], 2)} | {_f(w['evidence_share'], 2)} |")
    checks = {name: estimate_check(result, name) for name in result["structures"]}
    lines += ["", "The engine's cost model for the same explanation, timed with each structure's own segmentation "
              "seconds per slice as the full pass (what `--estimate --calibrate` would use on a quiet machine): "
              "full-pass equivalents per slice, predicted against measured explanation seconds:", "",
              "| structure | full-pass equivalents / slice | predicted s | measured s | predicted / measured |",
              "|---|---|---|---|---|"]
    for name, c in checks.items():
        lines.append(f"| {name} | {c['full_pass_equivalents_per_slice']:.2f} | {c['predicted_s']:.0f} | "
                     f"{c['measured_s']:.0f} | {c['ratio']:.2f} |")
    seg = sum(s["segmentation_seconds"] for s in result["structures"].values())
    whole = sum(s["whole"]["seconds"] for s in result["structures"].values())
    lines += ["", f"All structures: explanation {whole:.0f} s against segmentation {seg:.0f} s, "
              f"{whole / seg:.2f} x (goal: at most {GOALS['x_segmentation']:.0f} x).", "",
              "## Each step, on sampled slices", "",
              f"{result['sample_slices']} slice(s) per structure spread through it, the variants in turn on each "
              "slice; attribution only (the activation cache's full pass counted where it is used); deletion AUC "
              f"over the embedding ROI, {result['metric_steps']} steps, pixels removed by inpainting (lower is "
              "better); the three 64/32 rows are one map (largest difference shown).", "",
              "| variant | slices | passes/slice | s/pass | s/slice | relative time | deletion AUC | map difference |",
              "|---|---|---|---|---|---|---|---|"]
    for key, v in (result.get("summary") or {}).items():
        lines.append(f"| {v['label']} | {v['slices']} | {v['passes_per_slice']:.1f} | {_f(v['seconds_per_pass'], 2)} | "
                     f"{v['seconds_per_slice']:.1f} | {_f(v['relative_time'], 2)} | {_f(v['deletion_auc'])} | "
                     f"{'-' if key not in SAME_MAP else format(v['max_map_difference'], '.1e')} |")
    lines += ["", "Per structure (deletion AUC of the 64/32 map, the structure-sized map and the budgeted map on the "
              "sampled slices; MONAI's OcclusionSensitivity with the same patches over the full image, batch 1, no reuse, "
              "on the middle one, beside our 64/32 map with reuse on that slice):", "", "| structure | slices | 64/32 | structure-sized | budgeted | budgeted - 64/32 | "
              "MONAI slice | MONAI passes (ours) | MONAI s (ours) | MONAI deletion AUC (ours) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in result["structures"].items():
        def mean(key):
            return mean_of(r[key]["deletion_auc"] for r in s["sample"].values())

        a, c, b = mean("seed001_reuse"), mean("structure_sized"), mean("budget")
        mo = s.get("monai")
        ours = None if not mo else s["sample"][str(mo["slice"])]["seed001_reuse"]
        monai = "- | - | - | -" if not mo else \
            f"{mo['slice']} | {mo['passes']} ({ours['passes']}) | {mo['seconds']:.1f} ({ours['seconds']:.1f}) | " \
            f"{_f(mo['deletion_auc'])} ({_f(ours['deletion_auc'])})"
        lines.append(f"| {name} | {', '.join(s['sample'])} | {_f(a)} | {_f(c)} | {_f(b)} | "
                     f"{_f(None if a is None or b is None else b - a, 3)} | {monai} |")
    summ = result.get("summary") or {}
    if summ:
        b, a = summ["budget"], summ["seed001_reuse"]
        lines += ["", f"Goals: occlusion at most {GOALS['passes_per_slice']} passes per slice on average over the whole "
                  f"structures: {_whole_passes(result):.1f}; deletion AUC within {GOALS['deletion_auc_margin']} of the "
                  f"64/32 map's: {b['deletion_auc'] - a['deletion_auc']:+.3f} (mean over the sampled slices)."]
    lines += ["", f"Total {result.get('seconds', 0):.0f} s.", ""]
    return "\n".join(lines)


def estimate_check(result: Dict, name: str) -> Dict[str, float]:
    """What the engine's cost model (:func:`xaiseg.cost.estimate_counts`) predicts for the
    structure's explanation, timed with this run's own segmentation (seconds per segmented slice
    as the full pass), against the measured explanation: a check of the model's pass accounting
    (activation reuse, the caches, the passes after scaling) free of the machine's load."""
    from .cost import estimate_counts
    from .request import RunRequest

    s = result["structures"][name]
    n = int(s["slices"])
    request = RunRequest.from_dict({
        "input": "structure.nrrd", "output_dir": "out", "segmenter": {"kind": "litemedsam"},
        "prompt": {"type": "box", "lo_kji": [0, 0, 0], "hi_kji": [1, 1, 1]},
        "explain": {"methods": [{"name": "occlusion", "settings": {"passes": result["passes"]}}],
                    "common": {"metric_steps": 0}}})
    per_slice = s["segmentation_seconds"] / n
    est = estimate_counts(request, n, [None] * n, {"seconds_encoder": per_slice, "seconds_decoder": 0.0,
                                                   "seconds_load": 0.0, "seconds_write_mb": 0.0})
    predicted = est["seconds"] - n * per_slice  # the explanation alone
    return {"predicted_s": predicted, "measured_s": s["whole"]["seconds"], "ratio": predicted / s["whole"]["seconds"],
            "full_pass_equivalents_per_slice": (est["full_pass_equivalents"] - n) / n}


def _whole_passes(result: Dict) -> float:
    per = [(s["whole"]["attribution_passes_per_slice"], s["slices"]) for s in result["structures"].values()]
    return sum(p * n for p, n in per) / max(1, sum(n for _, n in per))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xaiseg.bench_structure", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default="docs/benchmarks")
    ap.add_argument("--structures", help="comma-separated Harvard-Oxford names (default: the six demo structures)")
    ap.add_argument("--passes", type=int, default=PASSES, help=f"budgeted occlusion's passes (default {PASSES})")
    ap.add_argument("--sample", type=int, default=2, help="slices per structure for the step-by-step table")
    ap.add_argument("--metric-steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--monai", type=int, default=0, help="MONAI's occlusion on the first N structures only (0: all)")
    ap.add_argument("--whole-only", action="store_true", help="only the segmentation and the whole structure")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="only write one structure.md/.json from the runs in "
                                                               "DIR... (e.g. two processes on two cores)")
    ap.add_argument("--rewrite", action="store_true", help="only write structure.md again from structure.json")
    args = ap.parse_args(argv)
    if args.rewrite or args.merge:
        import json

        parts = [json.loads((Path(d) / "structure.json").read_text()) for d in (args.merge or [args.output])]
        result = merge(parts)
        write_tables(Path(args.output), "structure", markdown(result), result)
        return 0
    names = [s for s in (args.structures or "").split(",") if s] or None
    bench_structure(Path(args.output), names, args.passes, args.sample, args.metric_steps, args.device, args.threads,
                    args.monai, ("whole",) if args.whole_only else ("whole", "steps"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
