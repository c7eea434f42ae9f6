"""``python -m xaiseg.bench_cost -o docs/benchmarks``: the cost estimate printed before a run against
the run's real time, on MNI152 structures with LiteMedSAM and different methods.

In one process: the calibration first (a model load, timed encoder/decoder passes, a timed write;
:mod:`xaiseg.cost`), then for each run a new calibration of the passes (on a shared machine the
pass time drifts), its estimate (:func:`xaiseg.cost.estimate_plan` from the run's preflight plan, as
``xaiseg explain`` prints it) and the wall time of
:func:`xaiseg.pipeline.run` (reading, model load, segmentation, explanation, writing).  The goal
is an estimate within 30 % of the real time (ratio 0.7 - 1.3).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .cost import CALIBRATION_PASSES
from .io import write_tables

#: (structure, explained slices, methods and settings); each run segments only its explained slices
RUNS = (
    ("Left_Caudate", 2, [{"name": "occlusion"}], {"metric_steps": 4}),
    ("Left_Putamen", 3, [{"name": "layers"}], {"metric_steps": 2}),
    ("Left_Thalamus", 1, [{"name": "rise", "settings": {"n_masks": 60}}], {"metric_steps": 4}),
    ("Right_Caudate", 1, [{"name": "occlusion", "settings": {"patch": 64, "stride": 32}}], {"metric_steps": 0}),
    ("Right_Thalamus", 4, [{"name": "occlusion", "settings": {"passes": 6}}], {"metric_steps": 0}),
)
QUICK = (("Left_Putamen", 1, [{"name": "layers"}], {"metric_steps": 2}),)


def run_request(work: Path, labels: Path, value: int, ks: List[int], methods, common, device: str,
                threads: int) -> Dict:
    from .request import RunRequest
    from .sample_data import mni152_path

    return RunRequest.from_dict({
        "input": str(mni152_path()), "output_dir": str(work), "name": "run", "threads": threads,
        "prompt": {"type": "labelmap", "file": str(labels), "label": value},
        "slice_range": [ks[0], ks[-1]], "segmenter": {"device": device},
        "explain": {"methods": methods, "common": common, "slices": ks, "pngs": True}})


def bench_cost(outdir: Path, runs: Sequence = RUNS, device: str = "cpu", threads: Optional[int] = None) -> dict:
    import torch

    from .bench_audit import middle_slices
    from .bench_explain import machine
    from .cost import calibrate, calibrate_write, estimate_plan, summary
    from .io import write_volume
    from .models.litemedsam import LiteMedSAM
    from .pipeline import read_input, run
    from .preflight import preflight
    from .sample_data import load_mni_atlas

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    structures = tuple(dict.fromkeys(r[0] for r in runs))
    sample = load_mni_atlas(structures)
    t0 = time.perf_counter()
    model = LiteMedSAM(device=device)
    load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="xaiseg-bench-cost-") as tmp:
        work = Path(tmp)
        calibration = dict(calibrate(model, CALIBRATION_PASSES, load), seconds_write_mb=calibrate_write(work))
        first = dict(calibration)
        labels = write_volume(sample.labels, sample.labels.array, work / "labels.nrrd")
        rows: List[Dict] = []
        for i, (structure, count, methods, common) in enumerate(runs):
            ks = middle_slices(sample.mask(structure), count)
            request = run_request(work / f"run{i}", labels, sample.label_values[structure], ks, methods, common,
                                  device, threads)
            volume = read_input(request, lambda text: None)
            calibration.update(calibrate(model, CALIBRATION_PASSES))  # the pass times just before the run (a shared machine)
            # the run loads the model in this process, where the imports are done: its load is timed
            # the same way here (a command-line run and its --calibrate both load in a fresh process)
            t = time.perf_counter()
            LiteMedSAM(device=device)
            calibration["seconds_load"] = time.perf_counter() - t
            estimate = estimate_plan(request, preflight(request, volume), volume.shape, calibration)
            del volume
            print(summary(estimate), flush=True)
            t = time.perf_counter()
            outcome = run(request)
            seconds = time.perf_counter() - t
            doc = outcome.explanation.metrics()
            passes = outcome.segmentation.record["evaluations"]["encoder_passes"] + sum(
                int(v.get("evaluations", 0)) + int(v.get("metric_evaluations", 0))
                for m in doc["methods"].values() for v in m["slices"].values())
            rows.append({"structure": structure, "slices": ks, "methods": methods, "common": common,
                         "seconds_encoder": round(calibration["seconds_encoder"], 3),
                         "seconds_load": round(calibration["seconds_load"], 2),
                         "estimated_passes": estimate["encoder_passes"], "real_passes": passes,
                         "estimated_full_pass_equivalents": round(estimate["full_pass_equivalents"], 1),
                         "estimated_seconds": round(estimate["seconds"], 1), "real_seconds": round(seconds, 1),
                         "ratio": round(estimate["seconds"] / seconds, 3)})
            print(f"{structure}: estimated {estimate['seconds']:.0f} s, real {seconds:.0f} s "
                  f"(ratio {rows[-1]['ratio']:.2f})", flush=True)
    result = {"machine": dict(machine(device), threads=threads), "calibration": first, "rows": rows}
    write_report(Path(outdir), result)
    return result


def _methods(row: Dict) -> str:
    parts = []
    for m in row["methods"]:
        own = ", ".join(f"{k} {v}" for k, v in (m.get("settings") or {}).items())
        parts.append(m["name"] + (f" ({own})" if own else ""))
    return "; ".join(parts) + f"; metric steps {row['common'].get('metric_steps', 8)}"


def write_report(outdir: Path, result: dict) -> None:
    cal = result["calibration"]
    ratios = [r["ratio"] for r in result["rows"]]
    md = ["# Cost estimate against the real time (LiteMedSAM, MNI152)", "",
          f"Produced by `python -m xaiseg.bench_cost` on {result['machine']['platform']} "
          f"({result['machine']['device']}, {result['machine']['threads']} torch threads), in one process: the "
          f"calibration first (first model load {cal['seconds_load']:.1f} s, {cal['seconds_encoder']:.2f} s per encoder "
          f"pass, {cal['seconds_decoder'] * 1000:.0f} ms per decoder pass, {cal['seconds_write_mb'] * 1000:.1f} ms "
          "per MB written), then, just before each run, the passes timed again (the median of "
          f"{CALIBRATION_PASSES}; the machine is shared) and a timed model load (in this process the imports are done, as they are for the run; a "
          "command line run and its `--calibrate` both load in a fresh process) and the run's estimate (as "
          "`xaiseg explain` prints it before a run) against its wall time "
          "(read, load, segment, explain, write PNGs and volumes). Each run segments only its explained slices "
          "(Harvard-Oxford > 50 % as the label-map prompt).", "",
          "| structure | slices | methods | s per encoder pass | s model load | encoder passes est. / real "
          "| full-pass equivalents est. | seconds est. / real | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        md.append(f"| {r['structure']} | {len(r['slices'])} | {_methods(r)} | {r['seconds_encoder']:.2f} | "
                  f"{r.get('seconds_load', 0.0):.1f} | {r['estimated_passes']} / "
                  f"{r['real_passes']} | {r.get('estimated_full_pass_equivalents', float('nan')):.1f} | {r['estimated_seconds']:.0f} / {r['real_seconds']:.0f} | {r['ratio']:.2f} |")
    if ratios:
        md += ["", f"Ratio estimate / real: {min(ratios):.2f} - {max(ratios):.2f} (goal: 0.7 - 1.3).", ""]
    write_tables(outdir, "cost", "\n".join(md), result, indent=1)
    print("\n".join(md))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xaiseg.bench_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default="docs/benchmarks", help="folder for cost.md/.json")
    p.add_argument("--quick", action="store_true", help="one small run only (a smoke run)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    a = p.parse_args(argv)
    bench_cost(Path(a.output), QUICK if a.quick else RUNS, a.device, a.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
