"""Everything a run can check before the model loads, in one place: :func:`preflight`.

:func:`xaiseg.pipeline.run` reads the volume and calls it before it loads the segmenter, so a bad
argument costs a second, not a segmentation.  It checks the prompt on every slice it will
segment, the explained slices against those, the methods' packages, the torch device, the ROI
source and its weights, the narrator and its options, the output format, the ground-truth and
ROI-mask files, and the free space in the output folder against the outputs' expected size.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .diskspace import HEADER_BYTES, check_free_space, image_bytes
from .errors import DependencyError, InputError, PromptError, WeightsMissingError
from .io import Volume, read_labelmap, volume_suffix
from .models.base import SlicePrompt
from .volume import BoxPrompt, LabelBoxPrompt, PointsPrompt, in_plane_axes, slicing_axis

#: rough bytes of the JSON documents of a run (the run record, the metrics, findings and report)
RECORD_BYTES = 256 << 10
#: per explained slice: a row of the metrics document and a slice's entry in the records
SLICE_RECORD_BYTES = 8 << 10
#: layer volumes a ``layers`` method writes when it names no layers (LiteMedSAM has 18, SAM ViT-B 14)
MAX_LAYER_VOLUMES = 24
_HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass
class Plan:
    """What :func:`preflight` worked out: the slicing axis, the resolved prompt, the slices it can
    segment, the explainers, the masks read, and the bytes the outputs need."""

    axis: int
    prompt: Any
    slices: Tuple[int, ...]
    explainers: list
    target: Optional[np.ndarray]
    roi_mask: Optional[np.ndarray]
    bytes_needed: int


def preflight(request, volume: Volume) -> Plan:
    """Check ``request`` (a :class:`~xaiseg.request.RunRequest`) against ``volume`` without the model."""
    axis = slicing_axis(volume.geometry, request.axis)
    prompt = request.prompt.resolve(volume, axis, request.slice_range)
    slices = prompt_slices(prompt, axis, volume.shape)
    check_device(request.segmenter.device)
    volume_suffix(request.format)
    spec = request.explain
    explainers: list = []
    target = roi_mask = None
    if spec is not None:
        explainers = spec.explainers()
        check_requirements(explainers)
        check_explained_slices(spec.slices, slices, axis, volume.shape)
        check_roi(spec.roi)
        if spec.target:
            labels = read_labelmap(spec.target, reference=volume).array
            target = labels == spec.target_label if spec.target_label is not None else labels > 0
            if not target.any():
                which = f"label {spec.target_label}" if spec.target_label is not None else "a non-zero voxel"
                raise InputError(f"ground truth {spec.target} has no {which} on the volume's grid; expected the "
                                 "structure's label")
        if spec.roi_mask:
            roi_mask = read_labelmap(spec.roi_mask, reference=volume).array > 0
        if spec.report is not None:
            from .narrate.report import ReportOptions

            ReportOptions(name=request.name, **spec.report).check()
    needed = expected_bytes(request, volume.shape, axis, slices)
    check_free_space(request.output_dir, needed)
    return Plan(axis, prompt, slices, explainers, target, roi_mask, needed)


# ----------------------------------------------------------------------------------------- prompt and slices

def prompt_slices(prompt, axis: int, shape: Sequence[int]) -> Tuple[int, ...]:
    """The slices ``prompt`` segments along ``axis`` (a propagated box may stop earlier, where the
    mask vanishes), after checking its prompt on each of them lies in the slice."""
    rows, cols = in_plane_axes(axis)
    plane, n = (shape[rows], shape[cols]), shape[axis]
    if isinstance(prompt, BoxPrompt):
        box = prompt.check(shape)
        SlicePrompt(box=box.slice_box(axis)).check_inside(plane)
        return tuple(range(box.lo[axis], box.hi[axis] + 1))
    if isinstance(prompt, PointsPrompt):
        per_slice = prompt.check(shape).per_slice(axis)
    elif isinstance(prompt, LabelBoxPrompt):
        if prompt.labelmap.shape != tuple(shape):
            raise PromptError(f"label map of shape {prompt.labelmap.shape} does not match the volume's shape "
                              f"{tuple(shape)}")
        per_slice = prompt.per_slice(axis)
    else:
        raise PromptError(f"unsupported prompt {type(prompt).__name__}")
    outside = [k for k in per_slice if not 0 <= k < n]
    if outside:
        raise PromptError(f"slice(s) {outside} lie outside the volume's {n} slices along axis {axis}")
    for k, p in per_slice.items():
        try:
            p.check_inside(plane)
        except PromptError as exc:
            raise PromptError(f"slice {k}: {exc}") from None
    return tuple(sorted(per_slice))


def spans(indices: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` as ``'3-5, 9'``."""
    out: List[List[int]] = []
    for k in sorted(indices):
        if out and out[-1][1] == k - 1:
            out[-1][1] = k
        else:
            out.append([k, k])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def check_explained_slices(wanted: Optional[Sequence[int]], segmented: Sequence[int], axis: int,
                           shape: Sequence[int]) -> None:
    """Explained slices must lie in the volume and among the slices the prompt segments."""
    if wanted is None:
        return
    n = shape[axis]
    outside = [k for k in wanted if not 0 <= k < n]
    if outside:
        raise InputError(f"explain slice(s) {outside} lie outside the volume, which has {n} slices (0..{n - 1}) along "
                         f"axis {axis}")
    missing = [k for k in wanted if k not in set(segmented)]
    if missing:
        raise InputError(f"explain slice(s) {missing} are not segmented: the prompt covers slice(s) "
                         f"{spans(segmented)} along axis {axis}; expected slices among those")


# ----------------------------------------------------------------------------------------- packages, device, ROI

def check_requirements(explainers: Sequence) -> None:
    """Every optional package the methods need is installed (checked without importing)."""
    for ex in explainers:
        for req in type(ex).requirements:
            if not req.installed():
                raise DependencyError(f"method {ex.name} needs the Python package '{req.module}' for {req.purpose}, "
                                      f"which is not installed. Install it with: pip install '{req.spec}' (or pip "
                                      f"install 'xaiseg[{req.extra}]')")


def check_device(device: str) -> None:
    """``device`` is a torch device this machine has."""
    import torch

    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device {device!r} is not a torch device; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"device {device!r} is not available on this machine (no Apple MPS); expected cpu")
        return
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if not callable(available) or not available():
        raise InputError(f"device {device!r} is not available on this machine; expected cpu"
                         + (" (torch sees no CUDA GPU)" if dev.type == "cuda" else ""))
    count = getattr(backend, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        raise InputError(f"device {device!r} does not exist: this machine has {count()} {dev.type} device(s) "
                         f"(0..{count() - 1})")


def check_roi(roi) -> None:
    """The CLIP ROI needs transformers and weights that are here: a folder or a cached model name."""
    if roi is None or roi.source != "clip":
        return
    from .requirements import TRANSFORMERS_CLIP

    if not TRANSFORMERS_CLIP.installed():
        TRANSFORMERS_CLIP.load()  # raises DependencyError naming the pip extra
    check_clip_model(str(roi.clip_model))


def check_clip_model(name: str) -> None:
    """``name`` is a folder with a CLIP model, or a Hugging Face name already in the local cache."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsMissingError(f"CLIP model folder {path} has no config.json; expected a folder written by "
                                      "save_pretrained (model and tokenizer)")
        return
    if path.exists() or not _HF_NAME.match(name):
        raise WeightsMissingError(f"CLIP model {name} is not a folder; expected a local folder with a CLIP model "
                                  "and its tokenizer, or the name of a model in the Hugging Face cache")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings it; without it the loader says what is wrong
        return
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:
        cached = None
    if not isinstance(cached, str):
        raise WeightsMissingError(f"CLIP model {name!r} is neither a local folder nor in the Hugging Face cache, "
                                  "and nothing is downloaded; expected a folder with a CLIP model, or a model "
                                  "name already cached")


# ----------------------------------------------------------------------------------------- disk space

def png_bytes(plane: Tuple[int, int], tiles: int = 2, zoom: int = 2) -> int:
    """Upper bound of a PNG of ``tiles`` RGB tiles of a slice magnified ``zoom`` times."""
    return tiles * zoom * zoom * 3 * int(plane[0]) * int(plane[1]) + HEADER_BYTES


def layer_volumes(settings) -> int:
    """How many component volumes a method writes (its ``layers`` setting, if it has one)."""
    layers = getattr(settings, "layers", None)
    if not isinstance(layers, str):
        return 0
    from .explain.layers import SELECTIONS

    names = [n for n in layers.split(",") if n.strip()]
    return MAX_LAYER_VOLUMES if layers.strip() in SELECTIONS else len(names)


def expected_bytes(request, shape: Sequence[int], axis: int, slices: Sequence[int]) -> int:
    """Bytes the run's outputs may take (uncompressed volumes, PNGs at their largest): the mask and
    record; with ``explain`` the ROI, each method's saliency and label volumes, its layer volumes,
    its PNGs and the metrics; with a report the findings, report and HTML page (images inlined)."""
    rows, cols = in_plane_axes(axis)
    plane = (shape[rows], shape[cols])
    total = image_bytes(shape, "uint8") + RECORD_BYTES + SLICE_RECORD_BYTES * len(slices)
    spec = request.explain
    if spec is None:
        return total
    explained = len(spec.slices) if spec.slices is not None else len(slices)
    total += image_bytes(shape, "uint8") + RECORD_BYTES + SLICE_RECORD_BYTES * explained * len(spec.methods)
    pngs = 0
    for method in spec.methods:
        total += image_bytes(shape, "float32") + image_bytes(shape, "uint8")
        layers = layer_volumes(method.settings)
        total += image_bytes(shape, "float32", count=layers)
        if spec.pngs:
            pngs += explained * png_bytes(plane)
            if layers:
                pngs += explained * png_bytes(plane, tiles=layers, zoom=3)
    total += pngs
    if spec.report is not None:
        total += RECORD_BYTES + 2 * pngs + png_bytes(plane, tiles=1)  # the page inlines the PNGs (base64)
    return total
