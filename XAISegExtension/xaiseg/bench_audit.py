"""``python -m xaiseg.bench_audit -o docs/benchmarks`` (or ``xaiseg bench audit``): an audit of the
six MNI152 demo structures (Harvard-Oxford > 50 % as prompt and ground truth) with LiteMedSAM, once
in this process and once on a 2-worker Dask LocalCluster; the two metrics tables and every saliency
volume must be equal.  Writes ``audit.md``/``audit.json`` and the audit's deletion AUC plot.

Each case explains ``--slices`` slices in the middle of its structure and segments only those
(``slice_range``), so the benchmark stays small; every request sets one torch thread, so both runs
compute alike (the workers of a LocalCluster run one thread each).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .io import write_bytes_atomic, write_tables


def middle_slices(mask: np.ndarray, count: int) -> List[int]:
    """``count`` neighbouring axial slices around the middle of a structure's mask."""
    ks = np.unique(np.nonzero(mask)[0])
    mid = int(np.median(ks))
    return sorted(int(k) for k in ks[np.argsort(np.abs(ks - mid), kind="stable")[:count]])


def write_cases(work: Path, structures: Sequence[str], slices: int) -> Path:
    """The MNI152 label map and a cases file with one row per structure."""
    from .io import write_volume
    from .sample_data import load_mni_atlas, mni152_path

    sample = load_mni_atlas(structures)
    labels = write_volume(sample.labels, sample.labels.array, work / "harvard_oxford.nrrd")
    rows = ["name,image,labels,label,structure,ground_truth,ground_truth_label,slices,slice_range"]
    for s in structures:
        ks = middle_slices(sample.mask(s), slices)
        value = sample.label_values[s]
        rows.append(f"{s},{mni152_path()},{labels.name},{value},{s},{labels.name},{value},"
                    f"{ks[0]}-{ks[-1]},{ks[0]}-{ks[-1]}")
    path = work / "cases.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def saliency_differences(cases, a: Path, b: Path) -> Dict[str, float]:
    """Largest absolute difference of every saliency and raw volume between two audits' folders."""
    import SimpleITK as sitk

    out = {}
    for case in cases:
        for path in sorted((a / case.name).glob("*_saliency.nrrd")) + sorted((a / case.name).glob("*_raw.nrrd")):
            x = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            y = sitk.GetArrayFromImage(sitk.ReadImage(str(b / case.name / path.name)))
            out[f"{case.name}/{path.name}"] = float(np.abs(x - y).max()) if x.shape == y.shape else float("inf")
    return out


def bench_audit(outdir: Path, structures: Optional[Sequence[str]] = None, method: str = "occlusion",
                slices: int = 1, metric_steps: int = 2, workers: int = 2, device: str = "cpu",
                workdir: Optional[Path] = None, extra: Sequence[str] = ()) -> dict:
    from .audit import read_cases, run_audit
    from .audit_cluster import dask_client, dask_executor
    from .audit_table import TIMING, table_rows
    from .bench_explain import machine
    from .cli import build_parser
    from .cli_options import explain_dict, run_dict
    from .sample_data import DEMO_STRUCTURES

    structures = tuple(structures or DEMO_STRUCTURES)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="xaiseg-bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    cases_csv = write_cases(work, structures, slices)
    argv = ["audit", str(cases_csv), "-o", str(work), "--method", method, "--metric-steps", str(metric_steps),
            "--threads", "1", "--no-png", "--device", device, *extra]
    args = build_parser().parse_args(argv)
    result: Dict = {"machine": machine(device), "structures": list(structures), "method": method, "slices": slices,
                    "metric_steps": metric_steps, "workers": workers,
                    "command": "xaiseg audit cases.csv -o OUTDIR " + " ".join(argv[4:])}
    runs = {}
    for mode in ("in-process", "cluster"):
        folder = work / mode
        shutil.rmtree(folder, ignore_errors=True)
        cases = read_cases(cases_csv, folder, run_dict(args), lambda m: explain_dict(args, m))
        t0 = time.perf_counter()
        if mode == "cluster":
            with dask_client(local_workers=workers, memory_limit="auto") as client:
                runs[mode] = run_audit(cases, folder, dask_executor(client), print)
        else:
            runs[mode] = run_audit(cases, folder, None, print)
        result[f"seconds_{mode}"] = round(time.perf_counter() - t0, 1)
    rows = {m: [{k: v for k, v in r.items() if k not in TIMING} for r in table_rows(cases, runs[m].records)]
            for m in runs}
    diffs = saliency_differences(cases, work / "in-process", work / "cluster")
    result.update(rows=table_rows(cases, runs["in-process"].records),
                  tables_equal=rows["in-process"] == rows["cluster"], failed={m: runs[m].failed for m in runs}, volumes_compared=len(diffs),
                  largest_volume_difference=max(diffs.values()) if diffs else None)
    try:
        write_report(Path(outdir), result, work / "in-process")
    finally:
        if not workdir:  # the temporary cases and both audits' outputs
            shutil.rmtree(work, ignore_errors=True)
    return result


def write_report(outdir: Path, result: dict, audit_dir: Path) -> None:
    from .audit_table import PLOT, TABLE_MD

    outdir.mkdir(parents=True, exist_ok=True)
    table = (audit_dir / TABLE_MD).read_text().split("\n", 2)[2]  # without its title
    md = ["# Audit benchmark: the six MNI152 demo structures, in-process and on a Dask LocalCluster", "",
          f"Produced by `python -m xaiseg.bench_audit` on {result['machine']['platform']} "
          f"({result['machine']['device']}); the audit ran as `{result['command']}` "
          f"(cases file and output folders in a temporary folder), {result['slices']} slice(s) per structure.", "",
          f"- in this process: {result['seconds_in-process']:.0f} s; on a LocalCluster of {result['workers']} worker "
          f"processes (one thread each): {result['seconds_cluster']:.0f} s",
          f"- metrics tables equal (all columns but seconds): **{result['tables_equal']}**; "
          f"{result['volumes_compared']} saliency and raw volumes compared, largest difference "
          f"{result['largest_volume_difference']}",
          f"- failed cases: in-process {result['failed']['in-process'] or 'none'}, cluster "
          f"{result['failed']['cluster'] or 'none'}", "", table]
    plot = audit_dir / PLOT
    if plot.is_file():
        write_bytes_atomic(outdir / "audit_deletion_auc.png", plot.read_bytes())
        md += ["", "![deletion AUC per structure](audit_deletion_auc.png)", ""]
    write_tables(outdir, "audit", "\n".join(md), result, indent=1)
    print("\n".join(md))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xaiseg.bench_audit", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default="docs/benchmarks", help="folder for audit.md/.json")
    p.add_argument("--structures", help="comma-separated Harvard-Oxford structures (default: the six demo ones)")
    p.add_argument("--method", default="occlusion", help="methods as for --method (default occlusion)")
    p.add_argument("--slices", type=int, default=1, help="explained slices per structure (default 1)")
    p.add_argument("--metric-steps", type=int, default=2, help="deletion/insertion steps (default 2)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--workdir", help="keep the cases and outputs here (default: a temporary folder)")
    p.add_argument("extra", nargs="*", help="more `xaiseg audit` options after --, e.g. -- --patch 128")
    a = p.parse_args(argv)
    structures = [s.strip() for s in a.structures.split(",")] if a.structures else None
    result = bench_audit(Path(a.output), structures, a.method, a.slices, a.metric_steps, a.workers, a.device,
                         Path(a.workdir) if a.workdir else None, a.extra)
    return 0 if result["tables_equal"] and not any(result["failed"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
