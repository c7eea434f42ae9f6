"""Command-line options shared by the subcommands, and the one place they become a request.

The options are read from the typed request (:mod:`xaiseg.request`) and from every registered
explainer's ``Settings``, so a new method's settings appear here without an edit.  Defaults are
not repeated: an option the user did not give is left out of the request, whose dataclasses fill
in their defaults.  :func:`request_from_args` builds the same JSON form the worker reads and parses
it with the same parser.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import InputError, PromptError
from .preprocess import CT_WINDOWS, Preprocessing
from .request import RunRequest, SegmenterSpec, parse_range, parse_slices
from .settings import defaults, flag_of, hints

_SEG = defaults(SegmenterSpec)
_PREP = defaults(Preprocessing)


def _floats(text: str, what: str) -> List[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise PromptError(f"{what} {text!r} must be comma-separated numbers") from None


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("segmenter")
    g.add_argument("--model", choices=["litemedsam", "medsam", "torch"],
                   help=f"litemedsam: built in, offline (default {_SEG['kind']}); medsam: MedSAM ViT-B from "
                        "--checkpoint or --url with --sha256; torch: your own model, a TorchScript file or a factory")
    g.add_argument("--checkpoint", help="checkpoint file (MedSAM ViT-B, LiteMedSAM, or the torch model's state dict)")
    g.add_argument("--sha256", help="expected SHA-256 of the checkpoint; a different file is refused")
    g.add_argument("--url", help="download the MedSAM checkpoint from this URL into --cache-dir (needs --sha256)")
    g.add_argument("--cache-dir", help="where downloaded checkpoints are kept (default ~/.cache/xaiseg or $XAISEG_CACHE)")
    g.add_argument("--torchscript", help="--model torch: a TorchScript file mapping (B,C,H,W) to logits")
    g.add_argument("--factory", help="--model torch: 'package.module:callable' that builds the network, "
                                     "e.g. monai.networks.nets:BasicUNet")
    g.add_argument("--factory-kwargs", help="--model torch: JSON keyword arguments for --factory")
    g.add_argument("--class-index", type=int, help=f"--model torch: output channel to segment (default "
                                                   f"{_SEG['class_index']}; a single-channel model uses its one channel)")
    g.add_argument("--in-channels", type=int, help=f"--model torch: input channels (slice repeated; default "
                                                   f"{_SEG['in_channels']})")
    g.add_argument("--input-size", type=int, help="--model torch: resize slices to this square size")
    g.add_argument("--device", help=f"torch device, e.g. cpu or cuda (default {_SEG['device']})")


def add_preprocess_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocessing")
    g.add_argument("--percentiles", help="clip to these percentiles of the foreground voxels, then scale to [0, 1] "
                                         f"(default {_PREP['lower']},{_PREP['upper']})")
    g.add_argument("--window", help="CT window preset instead of percentiles: " + ", ".join(CT_WINDOWS))
    g.add_argument("--level-width", help="explicit CT window 'level,width' in HU")
    g.add_argument("--clahe", action="store_true", help="apply CLAHE (clip 2.0, 8x8 tiles) to each slice (seed 001)")


def preprocessing_dict(args) -> Dict[str, Any]:
    """--percentiles / --window / --level-width / --clahe as the request's preprocessing object."""
    out: Dict[str, Any] = {"clahe": True} if getattr(args, "clahe", False) else {}
    if args.window and args.level_width:
        raise InputError("give --window or --level-width, not both")
    if args.window:
        return dict(out, mode="window", window=args.window)
    if args.level_width:
        vals = _floats(args.level_width, "--level-width")
        if len(vals) != 2:
            raise InputError(f"--level-width {args.level_width!r} must be two numbers level,width (in HU)")
        return dict(out, mode="window", level=vals[0], width=vals[1])
    if args.percentiles:
        vals = _floats(args.percentiles, "--percentiles")
        if len(vals) != 2 or vals[0] >= vals[1]:
            raise InputError(f"--percentiles {args.percentiles!r} must be two numbers low,high with low < high")
        return dict(out, mode="percentile", lower=vals[0], upper=vals[1])
    return out


def preprocessing_from(args) -> Preprocessing:
    from .settings import build

    return build(Preprocessing, preprocessing_dict(args), "preprocessing")


def segmenter_dict(args) -> Dict[str, Any]:
    """The segmenter options the user gave (the rest take SegmenterSpec's defaults)."""
    keys = {"model": "kind", "checkpoint": "checkpoint", "sha256": "sha256", "url": "url", "cache_dir": "cache_dir",
            "torchscript": "torchscript", "factory": "factory", "class_index": "class_index",
            "in_channels": "in_channels", "input_size": "input_size", "device": "device"}
    out = {key: getattr(args, arg) for arg, key in keys.items() if getattr(args, arg, None) is not None}
    if getattr(args, "factory_kwargs", None):
        try:
            out["factory_kwargs"] = json.loads(args.factory_kwargs)
        except json.JSONDecodeError as exc:
            raise InputError(f"--factory-kwargs {args.factory_kwargs!r} is not valid JSON ({exc.msg})") from None
    return out


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
    s.add_argument("--slice-range", help="segment only slices FIRST-LAST along the slicing axis (default: all the "
                                         "prompt covers)")
    s.add_argument("--series", help="DICOM SeriesInstanceUID when the folder holds several series")
    s.add_argument("--name", help="output name prefix (default: the input file's name)")
    add_run_options(s)


def add_run_options(s: argparse.ArgumentParser) -> None:
    """The options of a run that do not depend on its input: slicing, reading, output format, threads,
    model and preprocessing (``xaiseg segment``/``explain``, and ``xaiseg audit`` for every case)."""
    s.add_argument("--axis", help="slicing plane: axial (default), coronal, sagittal, or array axis 0/1/2")
    s.add_argument("--margin", type=int, help="pixels added around propagated boxes (default 0)")
    s.add_argument("--orientation", help="how each slice is turned before the model: auto (default: the layout "
                                          "LiteMedSAM segments best, read from the direction matrix), array (as "
                                          "stored), or a turn such as transpose, flip_rows, rot90")
    s.add_argument("--tta", type=int, help="average the model's logits over this many orientations (1-8; N encoder "
                                           "passes per slice; default 1)")
    s.add_argument("--allow-gaps", action="store_true", default=None,
                   help="read a DICOM series with missing slices anyway (they are filled with the lowest value "
                        "and listed in the run record); default: refuse it, naming the gap")
    s.add_argument("--replace-nonfinite", metavar="VALUE",
                   help="replace NaN and infinite voxels with VALUE (recorded in the run record); default: refuse a "
                        "volume that has any, naming how many and where")
    s.add_argument("--format", choices=["nrrd", "nifti", "mha"], help="output volume format (default nrrd)")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_model_options(s)
    add_preprocess_options(s)


def prompt_dict(args) -> Dict[str, Any]:
    """--box / --points / --box-from as the request's prompt object (voxel i, j, k become k, j, i)."""
    given = [name for name in ("box", "points", "box_from") if getattr(args, name)]
    if len(given) != 1:
        raise PromptError("give exactly one prompt: --box, --points or --box-from "
                          f"(got {', '.join('--' + g.replace('_', '-') for g in given) or 'none'})")
    ras = args.coords == "ras"

    def order(xyz: List[float]) -> List[float]:
        return xyz if ras else xyz[::-1]

    suffix = "ras" if ras else "kji"
    if args.box:
        if "@" in args.box:
            if ras:
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
            return {"type": "slice_box", "box": vals, "slice": k}
        vals = _floats(args.box, "--box")
        if len(vals) != 6:
            raise PromptError(f"--box {args.box!r} must have 6 numbers (two corners) or be X0,Y0,X1,Y1@S")
        return {"type": "box", f"lo_{suffix}": order(vals[:3]), f"hi_{suffix}": order(vals[3:])}
    if args.points:
        pts, labels = [], []
        for text, label in ((args.points, 1), (args.negative_points or "", 0)):
            for item in filter(None, (t.strip() for t in text.split(";"))):
                vals = _floats(item, "point")
                if len(vals) != 3:
                    raise PromptError(f"point {item!r} must have three coordinates")
                pts.append(order(vals))
                labels.append(label)
        return {"type": "points", f"points_{suffix}": pts, "labels": labels}
    if args.label is None:
        raise PromptError("--box-from needs --label N (the label value to box)")
    return {"type": "labelmap", "file": args.box_from, "label": args.label, "margin": args.box_margin}


# ----------------------------------------------------------------------------------------- explain

def _method_flags() -> Dict[str, List[dataclasses.Field]]:
    """Flag -> the fields (of any method) it sets; methods that share a setting share its flag."""
    from .explain import EXPLAINERS

    flags: Dict[str, List] = {}
    for cls in EXPLAINERS.values():
        for f in cls.method_fields():
            if (f.metadata or {}).get("cli", True):
                flags.setdefault(flag_of(f), []).append((cls, f))
    return flags


def _add_field(group, flag: str, settings_cls: type, f: dataclasses.Field, dest: str, owners: str) -> None:
    meta = f.metadata or {}
    tp = hints(settings_cls)[f.name]
    default = f.default if f.default is not dataclasses.MISSING else None
    help_ = f"{meta.get('help', '')} ({owners}; default {default})"
    if tp is bool:
        group.add_argument(flag, dest=dest, action="store_const", const=not default, default=None, help=help_)
        return
    kind = {int: int, float: float}.get(tp, str)
    group.add_argument(flag, dest=dest, type=kind, choices=meta.get("choices"), default=None, help=help_)


def add_explain_options(e: argparse.ArgumentParser, per_case: bool = True) -> None:
    """--method, --slices, the ROI, the settings every method shares and each method's own.
    ``per_case=False`` leaves out what belongs to one input (slices, ground truth, ROI mask):
    ``xaiseg audit`` reads those from each case."""
    from .explain import DEFAULT_METHODS, EXPLAINERS, CommonSettings, methods
    from .roi import SOURCES

    g = e.add_argument_group("explanation")
    g.add_argument("--method", default=None,
                   help=f"{', '.join(methods())}, a comma-separated list, or all (the perturbation methods: "
                        f"{', '.join(methods(perturbation_only=True))}); default {', '.join(DEFAULT_METHODS)}")
    if per_case:
        g.add_argument("--slices", help="explain only these slice indices along the slicing axis, e.g. '80,82' or "
                                        "'80-84' (default: every slice with a mask)")
    for f in dataclasses.fields(CommonSettings):
        _add_field(g, flag_of(f), CommonSettings, f, f"common_{f.name}", "every method")
    if per_case:
        g.add_argument("--ground-truth", help="label map with the true structure, for pointing game, energy and IoU")
        g.add_argument("--ground-truth-label", type=int, help="label value in --ground-truth (default: any non-zero)")
    g.add_argument("--no-png", action="store_true", help="do not write a PNG per explained slice")
    m = e.add_argument_group("method settings (defaults: seed 001 and seed 002)")
    for flag, owners in _method_flags().items():
        cls, f = owners[0]
        _add_field(m, flag, cls.Settings, f, "method_" + flag.lstrip("-").replace("-", "_"),
                   ", ".join(c.name for c, _ in owners))
    r = e.add_argument_group("region of interest")
    r.add_argument("--roi", choices=SOURCES, help="where perturbations act: MedSAM embedding similarity (default), "
                                                  "prompt box, mask, or CLIP")
    r.add_argument("--roi-margin", type=int, help="pixels added around the ROI (default 8 for box and mask, 0 for "
                                                  "embedding and clip)")
    if per_case:
        r.add_argument("--roi-mask", help="--roi mask: a label map to use instead of the segmentation (non-zero "
                                          "voxels)")
    r.add_argument("--clip-model", help="--roi clip: local folder or cached Hugging Face name of a CLIP model")
    r.add_argument("--clip-prompts", help="--roi clip: text prompts separated by ';' (default: --name)")
    assert EXPLAINERS  # the built-in methods are registered


def explain_dict(args, method: Optional[str] = None) -> Dict[str, Any]:
    """The explain options as the request's ``explain`` object; ``method`` (names as for --method)
    replaces --method, each method keeping the settings its flags give."""
    from .explain import DEFAULT_METHODS, CommonSettings, expand

    names = expand(method or args.method or ",".join(DEFAULT_METHODS))
    common = {f.name: getattr(args, f"common_{f.name}") for f in dataclasses.fields(CommonSettings)
              if getattr(args, f"common_{f.name}", None) is not None}
    flags = _method_flags()
    methods = []
    for n in names:
        own = {}
        for flag, owners in flags.items():
            value = getattr(args, "method_" + flag.lstrip("-").replace("-", "_"), None)
            for cls, f in owners:
                if cls.name == n and value is not None:
                    own[f.name] = value
        methods.append({"name": n, "settings": own})
    roi: Dict[str, Any] = {}
    if args.roi:
        roi["source"] = args.roi
    if args.roi_margin is not None:
        roi["margin"] = args.roi_margin
    if args.clip_model:
        roi["clip_model"] = args.clip_model
    if args.clip_prompts:
        roi["clip_prompts"] = [p.strip() for p in args.clip_prompts.split(";") if p.strip()]
    report = None
    if getattr(args, "report", False):
        from .narrate.cli import options_from_args

        opts = dataclasses.asdict(options_from_args(args))
        report = {k: v for k, v in opts.items() if k not in ("name", "output")}
    return {"methods": methods, "common": common, "roi": roi,
            "slices": parse_slices(getattr(args, "slices", None), "--slices"),
            "target": getattr(args, "ground_truth", None), "target_label": getattr(args, "ground_truth_label", None),
            "roi_mask": getattr(args, "roi_mask", None), "pngs": not args.no_png, "report": report}


def run_dict(args) -> Dict[str, Any]:
    """The options of :func:`add_run_options` in the request's JSON form (only what the user gave)."""
    data: Dict[str, Any] = {"segmenter": segmenter_dict(args), "preprocessing": preprocessing_dict(args)}
    for key in ("axis", "margin", "orientation", "tta", "format", "threads", "allow_gaps", "replace_nonfinite"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    return data


def request_dict(args, explain: bool = False) -> Dict[str, Any]:
    """The command line's options in the request's JSON form (only what the user gave)."""
    data: Dict[str, Any] = {"input": args.volume, "output_dir": args.output, "prompt": prompt_dict(args)}
    data.update(run_dict(args))
    for key in ("name", "series"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    if getattr(args, "slice_range", None):
        data["slice_range"] = parse_range(args.slice_range, "--slice-range")
    if explain:
        data["explain"] = explain_dict(args)
    return data


def request_from_args(args, explain: bool = False, base: Optional[Path] = None) -> RunRequest:
    """The typed request of ``xaiseg segment`` / ``xaiseg explain``; every value is checked here,
    before any file is read or the model loads."""
    return RunRequest.from_dict(request_dict(args, explain), base)
