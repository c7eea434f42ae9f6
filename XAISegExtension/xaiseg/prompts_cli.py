"""``xaiseg prompt-from-shap``: the command-line wiring of :mod:`xaiseg.prompts` (seed 000)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .cli_options import add_preprocess_options, preprocessing_from
from .errors import InputError
from .names import safe_name, stem_name
from . import prompts
from .prompts import load_classifier, markups_json, shap_panel


def add_parser(sub) -> None:
    """The ``prompt-from-shap`` subcommand."""
    p = sub.add_parser(
        "prompt-from-shap", help="SHAP of a classifier on a slice -> point prompts -> MedSAM mask (seed 000)",
        description="Explain a torch image classifier's probability on one slice with SHAP, turn the top places into "
                    "point prompts, segment with them and keep the most stable mask. Writes the points as a Slicer "
                    "markups file, the mask, the SHAP map, a PNG and a JSON summary.")
    p.add_argument("volume", help="NIfTI, NRRD, MHA file or a DICOM series folder")
    p.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    c = p.add_argument_group("classifier")
    c.add_argument("--classifier", required=True, help="monai-densenet121 or a TorchScript file ((N,1,H,W) -> (N,K))")
    c.add_argument("--classifier-checkpoint", help="monai-densenet121: state dict to load (default: random weights)")
    c.add_argument("--classifier-sha256", help="expected SHA-256 of the checkpoint or TorchScript file")
    c.add_argument("--classes", type=int, default=2, help="monai-densenet121: number of outputs (default 2)")
    c.add_argument("--class-index", type=int, default=1, help="class whose probability is explained (default 1)")
    c.add_argument("--input-size", type=int, default=96, help="slices are resized to this square size (default 96)")
    c.add_argument("--seed", type=int, default=0, help="monai-densenet121 without a checkpoint: seed of its random "
                                                       "weights (default 0)")
    s = p.add_argument_group("SHAP and points")
    s.add_argument("--budget", type=int, default=256, help="classifier evaluations for SHAP (default 256)")
    s.add_argument("--blur", type=int, default=16, help="blur kernel of the masker in pixels (default 16)")
    s.add_argument("--points", type=int, default=3, help="positive points (default 3)")
    s.add_argument("--min-distance", type=float, default=10.0, help="pixels between points (default 10)")
    s.add_argument("--negative", type=int, default=0, help="negative points from the most negative SHAP (default 0)")
    g = p.add_argument_group("slice, segmenter and truth")
    g.add_argument("--slice", type=int, help="slice index along --axis (default: the truth's largest slice, else the "
                                              "middle one)")
    g.add_argument("--axis", default="axial", help="slicing plane (default axial)")
    g.add_argument("--model", choices=["litemedsam", "medsam"], default="litemedsam", help="segmenter (default litemedsam)")
    g.add_argument("--checkpoint", help="--model medsam: MedSAM ViT-B checkpoint")
    g.add_argument("--sha256", help="--model medsam: its SHA-256")
    g.add_argument("--truth", help="label map of the true structure, for Dice and IoU")
    g.add_argument("--truth-label", type=int, default=1, help="label value in --truth (default 1)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--series", help="DICOM SeriesInstanceUID when the folder holds several series")
    g.add_argument("--name", help="output name prefix (default: the input file's name)")
    g.add_argument("--format", choices=["nrrd", "nifti", "mha"], default="nrrd", help="volume format (default nrrd)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_preprocess_options(p)
    p.set_defaults(func=cmd_prompt_from_shap)


def cmd_prompt_from_shap(args) -> int:
    from .lock import output_lock

    for value, what in ((args.points, "--points"), (args.budget, "--budget")):
        if value < 1:
            raise InputError(f"{what} {value} must be at least 1")
    with output_lock(args.output):  # one run per output folder; everything is checked before a model loads
        return _prompt_from_shap(args)


def _prompt_from_shap(args) -> int:
    from .diskspace import check_free_space, image_bytes
    from .io import move_into, read_labelmap, read_volume, staged, volume_suffix, write_text_atomic
    from .io import write_volume
    from .models import load_segmenter
    from .pipeline import SegmentConfig, Session
    from .preflight import check_device, png_bytes
    from .progress import Progress, TqdmProgress
    from .render import display_flips
    from .volume import in_plane_axes, put_plane, slicing_axis

    volume = read_volume(args.volume, args.series)
    axis = slicing_axis(volume.geometry, args.axis)
    truth = None
    if args.truth:
        truth = read_labelmap(args.truth, reference=volume).array == args.truth_label
        if not truth.any():
            raise InputError(f"--truth {args.truth} has no voxel with label {args.truth_label}")
    n = volume.shape[axis]
    if args.slice is None:
        k = int(np.argmax(truth.sum(axis=tuple(a for a in range(3) if a != axis)))) if truth is not None else n // 2
    else:
        k = int(args.slice)
        if not 0 <= k < n:
            raise InputError(f"--slice {k} is outside 0..{n - 1} along the {args.axis} axis")
    suffix = volume_suffix(args.format)
    check_device(args.device)
    rows, cols = in_plane_axes(axis)
    check_free_space(args.output, image_bytes(volume.shape, "uint8") + image_bytes(volume.shape, "float32")
                     + png_bytes((volume.shape[rows], volume.shape[cols]), tiles=3) + (256 << 10))
    classifier = load_classifier(args.classifier, args.classifier_checkpoint, args.classifier_sha256, args.classes,
                                 args.class_index, args.input_size, args.device, args.seed)
    segmenter = (load_segmenter("litemedsam", device=args.device) if args.model == "litemedsam" else
                 load_segmenter("medsam", checkpoint=args.checkpoint, sha256=args.sha256, device=args.device))
    # the classifier reads the slice as the array holds it, so the segmenter sees it unturned too
    session = Session(volume, segmenter, SegmentConfig(axis=args.axis, preprocessing=preprocessing_from(args),
                                                       orientation="array"))
    name = safe_name(args.name) if args.name else stem_name(args.volume)
    progress = Progress() if args.quiet else TqdmProgress()
    image = session.volume_segmenter.slice(k)
    embedding, _ = session.volume_segmenter.embedding(k)
    t2d = None if truth is None else np.take(truth, k, axis=axis)
    result = prompts.shap_prompts(classifier, segmenter, image, k=args.points, min_distance=args.min_distance,
                          negative=args.negative, budget=args.budget, blur=args.blur, truth=t2d, progress=progress,
                          embedding=embedding, preprocessing=session.preprocessing_record())
    progress.done()

    def volume_of(plane, dtype):
        return put_plane(np.zeros(volume.shape, dtype), axis, k, plane)

    kji = []
    for x, y in result.points:
        v = [0.0, 0.0, 0.0]
        v[axis], v[rows], v[cols] = float(k), float(y), float(x)
        kji.append(v)
    outdir = Path(args.output)
    with staged(outdir) as stage:
        files = {
            "points": write_text_atomic(stage / f"{name}_shap_points.mrk.json", json.dumps(markups_json(
                kji, result.labels, volume.geometry, [float(result.shap[int(y), int(x)]) for x, y in result.points],
                name), indent=2)),
            "mask": write_volume(volume, volume_of(result.mask, np.uint8), stage / f"{name}_shap_mask{suffix}"),
            "shap": write_volume(volume, volume_of(result.shap, np.float32), stage / f"{name}_shap_map{suffix}"),
            "png": shap_panel(image, result.shap, result.mask, result.points, result.labels,
                              stage / f"{name}_shap_k{k:03d}.png", f"{name} slice {k}: SHAP of {classifier.name}",
                              display_flips(volume.geometry, axis), t2d),
        }
        summary = {"name": name, "input": str(args.volume), "slice": k, "axis": args.axis,
                   "probability": result.probability,
                   "points": [{"x": x, "y": y, "kji": p, "label": lab} for (x, y), p, lab in
                              zip(result.points, kji, result.labels)],
                   "candidates": list(result.candidates), "chosen": result.chosen, "metrics": result.metrics,
                   "record": dict(result.record, input=str(args.volume), slice={"axis": args.axis, "index": k}),
                   "files": {key: Path(v).name for key, v in files.items()}}
        files["summary"] = write_text_atomic(stage / f"{name}_shap_prompts.json", json.dumps(summary, indent=2))
        move_into(files, outdir)
    if not args.quiet:
        m = result.metrics
        extra = f", Dice {m['dice']:.3f}, IoU {m['iou']:.3f}" if "dice" in m else ""
        print(f"{name} slice {k}: p={result.probability:.3f}, {len(result.points)} point(s), kept candidate "
              f"{result.chosen + 1}/{len(result.candidates)} ({int(result.mask.sum())} px){extra} -> "
              f"{outdir / (name + '_shap_prompts.json')}")
    return 0
