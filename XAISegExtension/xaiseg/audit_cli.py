"""``xaiseg audit CASES.csv -o OUTDIR``: argparse wiring used by :mod:`xaiseg.cli`.

The run and method options are the ones ``xaiseg explain`` takes (:mod:`xaiseg.cli_options`), so
the flags are the same; what belongs to one input (image, prompt, ground truth, slices) comes from
each row of the cases file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .audit import COLUMNS

EPILOG = f"""\
cases file (CSV with a header row; columns {', '.join(COLUMNS)}):
  image               volume file or DICOM folder (relative paths: from the CSV's folder)
  labels, label       prompt: a label map and the label to box on each slice (label default 1)
  box                 prompt instead: "I0 J0 K0 I1 J1 K1" voxel indices (spaces or quoted commas)
  structure           the structure's name (output prefix, the plot's groups)
  name                the case's folder name (default: image stem + structure)
  ground_truth[_label] label map of the true structure: Dice, pointing game (optional)
  methods             this case's methods instead of --method, e.g. "occlusion;rise" (optional)
  slices, slice_range explain only these slices / segment only FIRST-LAST (optional)
  segmenter           JSON segmenter options over the audit's, e.g. {{"device": "cuda"}} (optional)

outputs: OUTDIR/<case>/ (each case's files), audit_metrics.csv and .md (one row per case and method),
audit_deletion_auc.png, audit_state.json. A second audit into OUTDIR skips complete cases; a failed
case is recorded with its error (exit status 1) and the other cases go on.

examples:
  xaiseg audit cases.csv -o audit --method occlusion,layers --metric-steps 4
  xaiseg audit cases.csv -o audit --local-cluster 2
  xaiseg audit cases.csv -o audit --scheduler tcp://10.0.0.5:8786
"""


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    from .cli_options import add_explain_options, add_run_options

    a = subparsers.add_parser(
        "audit", help="explain many cases (a CSV) and tabulate the metrics across cases and methods",
        description="Segment and explain every case of CASES.csv with the same methods and settings (in this "
                    "process, or on a Dask cluster), then write one metrics table across cases and methods and a "
                    "plot of each method's deletion AUC per structure.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("cases", metavar="CASES.csv", help="one case per row (see below)")
    a.add_argument("-o", "--output", required=True, help="output folder (a folder per case, the table)")
    d = a.add_argument_group("where the cases run (default: one after the other in this process)")
    d.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786 (its "
                                                          "workers need xaiseg and see the same files)")
    d.add_argument("--local-cluster", type=int, metavar="N", help="start a Dask LocalCluster of N worker processes "
                                                                  "(one thread each) for this audit")
    d.add_argument("--worker-memory", default="auto", help="--local-cluster: memory limit per worker, e.g. 4GiB "
                                                           "(default auto: the machine's memory shared)")
    a.add_argument("--no-plot", action="store_true", help="do not draw the deletion AUC plot")
    add_run_options(a)
    add_explain_options(a, per_case=False)
    a.set_defaults(func=cmd_audit)
    return a


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import read_cases, run_audit
    from .cli_options import explain_dict, run_dict
    from .errors import InputError
    from .prompt_spec import resolve_path
    from .request import SEGMENTER_PATHS

    if args.scheduler and args.local_cluster is not None:
        raise InputError("give --scheduler or --local-cluster, not both")
    log = (lambda text: None) if args.quiet else print
    options = run_dict(args)
    # the command line's files are the user's, relative to here; the rows' files are relative to the CSV
    options["segmenter"] = {k: resolve_path(v, Path.cwd()) if k in SEGMENTER_PATHS else v
                            for k, v in options["segmenter"].items()}
    cases = read_cases(Path(args.cases), Path(args.output), options, lambda methods: explain_dict(args, methods))
    plot = not args.no_plot
    if args.scheduler or args.local_cluster is not None:
        from .audit_cluster import dask_client, dask_executor

        with dask_client(args.scheduler, args.local_cluster, args.worker_memory) as client:
            log(f"Dask cluster: {len(client.nthreads())} worker(s)")
            result = run_audit(cases, Path(args.output), dask_executor(client), log, plot=plot)
    else:
        result = run_audit(cases, Path(args.output), None, log, plot=plot)
    done = len(result.records) - len(result.failed)
    log(f"{len(result.records)} case(s): {done} done ({len(result.skipped)} already complete), "
        f"{len(result.failed)} failed -> {result.files['markdown']}")
    return 1 if result.failed else 0
