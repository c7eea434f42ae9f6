"""SHAP-guided prompts for MedSAM (seed 000): a classifier's evidence becomes point prompts.

1. A torch image classifier scores the slice (the softmax probability of ``class_index``).
2. shap's partition explainer with an image masker that blurs the masked parts attributes that
   probability to the slice's pixels, within ``budget`` classifier evaluations.
3. The ``k`` highest positive places at least ``min_distance`` pixels apart become positive
   points; optionally the ``negative`` most negative places become negative points.
4. The segmenter decodes one candidate per number of positive points (the best point alone, the
   best two, ...; every candidate keeps the negative points) and the candidate with the highest
   stability score is kept: the IoU of its mask thresholded at logit +1 and at logit -1, the
   model-agnostic confidence SAM uses to rank masks.
5. With a ground truth, Dice and IoU of the kept mask are reported.

Nothing here is specific to the classifier: any torch module mapping (N, C, H, W) in [0, 1] to
(N, K) logits works (a TorchScript file, or MONAI's DenseNet121 built here).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError, ModelError, require
from .models.base import SlicePrompt, check_slice, forward_slices
from .progress import Progress, ensure

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/"
                  "markups-schema-v1.0.3.json#")


class Classifier:
    """A torch classifier as a function of slices: (N, H, W) in [0, 1] -> (N,) probability of
    ``class_index`` (softmax over the K outputs; sigmoid when K == 1)."""

    def __init__(self, module, class_index: int = 1, in_channels: int = 1, input_size: Optional[int] = None,
                 device: str = "cpu", name: Optional[str] = None, weights: str = "unknown",
                 seed: Optional[int] = None) -> None:
        if input_size is not None and int(input_size) < 8:
            raise InputError(f"classifier input size {input_size} is too small; expected at least 8 pixels")
        self.module = module.eval().to(device)
        self.class_index = int(class_index)
        self.in_channels = int(in_channels)
        self.input_size = None if input_size is None else int(input_size)
        self.device = device
        self.name = name or type(module).__name__
        self.weights = weights
        self.seed = seed  # the seed of random weights; None for trained ones
        self.evaluations = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        out = forward_slices(self.module, x, self.input_size, self.in_channels, self.device)
        if out.dim() != 2:
            raise ModelError(f"classifier {self.name} returned shape {tuple(out.shape)}; expected (N, K) logits")
        k = out.shape[1]
        if not 0 <= self.class_index < max(k, 2):
            raise ModelError(f"class index {self.class_index} is outside the classifier's {k} output(s)")
        prob = torch.sigmoid(out[:, 0]) if k == 1 else torch.softmax(out.float(), dim=1)[:, self.class_index]
        self.evaluations += len(x)
        return prob.float().cpu().numpy().astype(np.float64)

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "class_index": self.class_index,
                "in_channels": self.in_channels, "input_size": self.input_size, "device": self.device,
                "seed": self.seed}


def load_classifier(spec: str, checkpoint: Optional[str] = None, sha256: Optional[str] = None, classes: int = 2,
                    class_index: int = 1, input_size: Optional[int] = 96, device: str = "cpu",
                    seed: int = 0) -> Classifier:
    """``monai-densenet121`` (MONAI's 2D DenseNet121, 1 input channel, ``classes`` outputs; random
    weights drawn with ``seed`` unless ``checkpoint``, a state dict verified against ``sha256`` and
    loaded with ``weights_only=True``), or a TorchScript file (verified when ``sha256`` is given)."""
    import torch

    from .weights import load_into, load_state_dict, verify

    if int(classes) < 1:
        raise InputError(f"classes {classes} must be at least 1")
    if not 0 <= int(class_index) < max(int(classes), 2):
        raise InputError(f"class index {class_index} is outside 0..{max(int(classes), 2) - 1}")
    if spec == "monai-densenet121":
        nets = require("monai.networks.nets", "monai", "the MONAI DenseNet121 classifier")
        with torch.random.fork_rng(devices=[]):  # the same seed, the same random network; global RNG untouched
            torch.manual_seed(int(seed))
            module = nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=int(classes))
        weights = f"random init (seed {int(seed)}, no checkpoint): a plumbing check, not a trained classifier"
        weights_seed: Optional[int] = int(seed)
        if checkpoint:
            state, sha = load_state_dict(checkpoint, sha256, "classifier checkpoint")
            load_into(module, state, checkpoint, sha, "classifier checkpoint")
            weights, weights_seed = f"{checkpoint} (SHA-256 {sha})", None
        return Classifier(module, class_index, 1, input_size, device, "monai DenseNet121 (2D)", weights, weights_seed)
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--classifier {spec!r} is neither 'monai-densenet121' nor an existing TorchScript file")
    sha = verify(path, sha256, "TorchScript classifier")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad archive
        raise ModelError(f"{path} (SHA-256 {sha}) is not a TorchScript model: {str(exc).splitlines()[0]}") from exc
    return Classifier(module, class_index, 1, input_size, device, f"torchscript:{path.name}", f"SHA-256 {sha}")


def shap_map(classifier: Classifier, image: np.ndarray, budget: int = 256, blur: int = 16, batch_size: int = 16,
             progress: Optional[Progress] = None, stage: str = "shap") -> np.ndarray:
    """SHAP values (H, W) of ``classifier``'s probability on ``image``: shap's partition explainer,
    masked parts blurred with a ``blur`` x ``blur`` kernel, at most ``budget`` evaluations.
    The explainer is deterministic: the same input gives the same map."""
    from .explain.shap_import import import_shap

    image = np.asarray(image, dtype=np.float32)
    check_slice(image)
    if int(budget) < 8:
        raise InputError(f"SHAP budget {budget} is too small; expected at least 8 classifier evaluations")
    if int(blur) < 1:
        raise InputError(f"blur kernel {blur} must be at least 1 pixel")
    if not np.isfinite(image).all() or float(image.max() - image.min()) <= 0:
        raise InputError("the slice is constant or not finite; SHAP needs an image with some contrast")
    shap = import_shap()
    progress = ensure(progress)
    h, w = image.shape
    progress.stage(stage, int(budget))

    def f(x):
        progress.check()
        p = classifier(np.asarray(x, dtype=np.float32).reshape(len(x), h, w))
        progress.step(len(x), evaluations=classifier.evaluations)
        return p[:, None]

    masker = shap.maskers.Image(f"blur({int(blur)},{int(blur)})", (h, w, 1))
    explainer = shap.Explainer(f, masker, output_names=["target"])
    values = explainer(image[None, :, :, None], max_evals=int(budget), batch_size=int(batch_size), silent=True)
    return np.asarray(values.values, dtype=np.float64).reshape(h, w)


def points_from_map(values: np.ndarray, k: int = 3, min_distance: float = 10.0, negative: int = 0,
                    smooth: float = 1.5) -> Tuple[List[Tuple[float, float]], List[int]]:
    """The ``k`` highest positive places of ``values`` at least ``min_distance`` pixels apart as
    (x, y) = (column, row) with label 1, then the ``negative`` lowest negative places (also apart
    from every chosen point) with label 0.  The map is smoothed with a Gaussian of ``smooth``
    pixels first; on a plateau (partition SHAP gives rectangles) the point goes to its most
    interior pixel."""
    import cv2

    if int(k) < 1:
        raise InputError(f"number of positive points {k} must be at least 1")
    if float(min_distance) < 0:
        raise InputError(f"minimum distance {min_distance} must be >= 0 pixels")
    if int(negative) < 0:
        raise InputError(f"number of negative points {negative} must be >= 0")
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2 or not np.isfinite(v).all():
        raise InputError(f"a finite 2D map is expected, got shape {v.shape}")
    if smooth > 0:
        v = cv2.GaussianBlur(v, (0, 0), sigmaX=float(smooth))
    chosen: List[Tuple[float, float]] = []
    labels: List[int] = []
    rr, cc = np.mgrid[0:v.shape[0], 0:v.shape[1]]
    allowed = np.ones(v.shape, bool)

    def pick(count, sign, label):
        nonlocal allowed
        for _ in range(count):
            vals = np.where(allowed, sign * v, -np.inf)
            top = float(vals.max())
            if not np.isfinite(top) or top <= 0:
                return
            # the top level set may be a plateau: take its most interior pixel, not its first one
            level = (vals >= top - 1e-6 * abs(top)).astype(np.uint8)
            depth = cv2.distanceTransform(np.pad(level, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
            r, c = np.unravel_index(int(np.argmax(np.where(level > 0, depth, -1))), v.shape)
            chosen.append((float(c), float(r)))
            labels.append(label)
            allowed &= (rr - r) ** 2 + (cc - c) ** 2 >= float(min_distance) ** 2

    pick(int(k), 1.0, 1)
    if not labels:
        raise InputError("the SHAP map has no positive value: the classifier's score does not rise anywhere, "
                         "so there is no place to prompt")
    pick(int(negative), -1.0, 0)
    return chosen, labels


def stability_score(logits: np.ndarray, offset: float = 1.0) -> float:
    """IoU of the mask at logit > +offset with the mask at logit > -offset (SAM's stability score)."""
    hi, lo = logits > offset, logits > -offset
    union = int(lo.sum())
    return 0.0 if union == 0 else float(int(hi.sum()) / union)


@dataclass(frozen=True)
class ShapPrompts:
    """What the SHAP-to-SAM loop found on one slice."""

    shap: np.ndarray  # (H, W) SHAP values of the classifier's probability
    points: Tuple[Tuple[float, float], ...]  # (x, y) = (column, row)
    labels: Tuple[int, ...]  # 1 positive, 0 negative
    mask: np.ndarray  # (H, W) bool: the kept candidate
    candidates: Tuple[Dict[str, Any], ...]  # per candidate: positive points used, stability, voxels
    chosen: int  # index into candidates
    probability: float  # the classifier's probability on the unmasked slice
    metrics: Dict[str, Any] = field(default_factory=dict)  # dice, iou with the truth; seconds; evaluations
    record: Dict[str, Any] = field(default_factory=dict)


def shap_prompts(classifier: Classifier, segmenter, image: np.ndarray, *, k: int = 3, min_distance: float = 10.0,
                 negative: int = 0, budget: int = 256, blur: int = 16, truth: Optional[np.ndarray] = None,
                 progress: Optional[Progress] = None, embedding=None,
                 preprocessing: Optional[Dict[str, Any]] = None) -> ShapPrompts:
    """Run the whole loop on one slice (2D, in [0, 1]); ``embedding``: the slice's cached one;
    ``preprocessing``: how the slice was made, for the run record."""
    from .metrics import dice, iou
    from .record import run_record

    image = np.asarray(image, dtype=np.float32)
    check_slice(image)
    if truth is not None and np.asarray(truth).shape != image.shape:
        raise InputError(f"ground truth of shape {np.asarray(truth).shape} does not match the slice's {image.shape}")
    progress = ensure(progress)
    t0 = time.perf_counter()
    before = classifier.evaluations
    probability = float(classifier(image[None])[0])
    values = shap_map(classifier, image, budget, blur, progress=progress)
    points, labels = points_from_map(values, k, min_distance, negative)
    progress.check()
    emb = embedding if embedding is not None else segmenter.embed(image)
    pos = [p for p, lab in zip(points, labels) if lab == 1]
    neg = [p for p, lab in zip(points, labels) if lab == 0]
    candidates, masks = [], []
    for n in range(1, len(pos) + 1):
        use = pos[:n] + neg
        prompt = SlicePrompt(points=tuple(use), labels=tuple([1] * n + [0] * len(neg)))
        logits = segmenter.decode(emb, prompt)
        masks.append(logits > 0)
        candidates.append({"positive_points": n, "negative_points": len(neg),
                           "stability": round(stability_score(logits), 4), "voxels": int(masks[-1].sum())})
    nonempty = [i for i, c in enumerate(candidates) if c["voxels"] > 0] or list(range(len(candidates)))
    best = max(nonempty, key=lambda i: (candidates[i]["stability"], -i))
    metrics: Dict[str, Any] = {"seconds": round(time.perf_counter() - t0, 3),
                               "classifier_evaluations": classifier.evaluations - before,
                               "encoder_passes": 0 if embedding is not None else 1, "decoder_passes": len(candidates)}
    if truth is not None:
        t = np.asarray(truth, bool)
        metrics.update(dice=dice(masks[best], t), iou=iou(masks[best], t),
                       positive_points_in_truth=sum(bool(t[int(y), int(x)]) for x, y in pos))
    settings = {"points": int(k), "min_distance": float(min_distance), "negative": int(negative),
                "budget": int(budget), "blur": int(blur), "score": "stability (IoU of logit>1 and logit>-1)",
                "explainer": "shap PartitionExplainer, Image masker blur (deterministic)"}
    prompt = {"points": [list(p) for p in points], "labels": list(labels), "candidate": best}
    record = run_record(model=segmenter.describe(), preprocessing=dict(preprocessing or {}), prompt=prompt,
                        settings=settings, seconds=metrics["seconds"], seed=classifier.seed,
                        evaluations={key: metrics[key] for key in
                                     ("classifier_evaluations", "encoder_passes", "decoder_passes")})
    record["classifier"] = classifier.describe()  # "model" is the segmenter, as in every run record
    record["versions"].update(_versions("shap", "monai"))
    return ShapPrompts(values.astype(np.float32), tuple(points), tuple(labels), masks[best], tuple(candidates), best,
                       probability, metrics, record)


def _versions(*names: str) -> Dict[str, str]:
    """Versions of the optional packages that are loaded."""
    import sys

    return {n: str(getattr(sys.modules[n], "__version__", "unknown")) for n in names if n in sys.modules}


# writing ------------------------------------------------------------------------------------------

def markups_json(points_kji: Sequence[Sequence[float]], labels: Sequence[int], geometry, values: Sequence[float],
                 name: str) -> Dict[str, Any]:
    """A Slicer markups (point list) document in LPS millimetres for voxel positions (k, j, i)."""
    ijk = np.asarray([[p[2], p[1], p[0]] for p in points_kji], dtype=float)
    lps = (geometry.ijk_to_lps @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3] if len(ijk) else np.zeros((0, 3))
    control = []
    npos = nneg = 0
    for n, (pt, lab, val) in enumerate(zip(lps, labels, values), 1):
        if lab == 1:
            npos += 1
            label, kind = f"{name}-pos-{npos}", "positive"
        else:
            nneg += 1
            label, kind = f"{name}-neg-{nneg}", "negative"
        control.append({"id": str(n), "label": label, "description": f"{kind} SAM prompt; SHAP value {val:.6g}",
                        "associatedNodeID": "", "position": [round(float(v), 4) for v in pt],
                        "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
                        "selected": bool(lab == 1), "locked": False, "visibility": True,
                        "positionStatus": "defined"})
    return {"@schema": MARKUPS_SCHEMA,
            "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm", "locked": False,
                         "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
                         "lastUsedControlPointNumber": len(control), "controlPoints": control, "measurements": []}]}


def shap_panel(image01: np.ndarray, values: np.ndarray, mask: np.ndarray, points, labels, path, title: str,
               flips=(False, False), truth: Optional[np.ndarray] = None, zoom: int = 2) -> Path:
    """PNG: the slice with the positive SHAP values over it, the kept mask (green), the truth
    (yellow), positive points (green crosses) and negative points (red crosses)."""
    import io as _io

    from PIL import Image, ImageDraw

    from .io import write_bytes_atomic
    from .metrics import normalise01
    from .render import heat_tile

    outlines = [(mask, (60, 220, 75))] + ([(truth, (255, 225, 25))] if truth is not None else [])
    positive = normalise01(np.clip(values, 0, None))
    tile = heat_tile(image01, positive, outlines, flips, zoom)
    canvas = Image.new("RGB", (tile.shape[1] + 8, tile.shape[0] + 24), (0, 0, 0))
    canvas.paste(Image.fromarray(tile), (4, 20))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill=(255, 255, 255))
    h, w = image01.shape
    for (x, y), lab in zip(points, labels):
        px = (w - 1 - x if flips[1] else x) * zoom + zoom / 2 + 4
        py = (h - 1 - y if flips[0] else y) * zoom + zoom / 2 + 20
        colour = (60, 255, 90) if lab == 1 else (255, 60, 60)
        draw.line([(px - 5, py), (px + 5, py)], fill=colour, width=2)
        draw.line([(px, py - 5), (px, py + 5)], fill=colour, width=2)
    buf = _io.BytesIO()
    canvas.save(buf, format="PNG")
    return write_bytes_atomic(path, buf.getvalue())
