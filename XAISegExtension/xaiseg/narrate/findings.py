"""findings.json: everything a narrator may say about a finished run, as numbers and names.

Built from a run directory (see docs/explain_contract.md): ``NAME_mask.*`` + ``NAME_run.json``
from segmentation, and when the run was explained ``NAME_metrics.json``, ``NAME_roi.nrrd`` and per
method ``NAME_METHOD_saliency.nrrd`` / ``_label.nrrd`` / ``_kKKK.png``.  Coordinates are RAS
millimetres of voxel centres (Slicer's convention); volumes in mL from the grid's spacing.
Every narrator reads only this dictionary, and the checker compares model text against it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import FileFormatError, InputError
from ..explain import limits_of
from ..explain.trust import number
from ..io import Geometry, axis_codes, read_image
from ..volume import in_plane_axes, plane_index, put_plane
from .labels import UNLABELLED, LabelMap

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).with_name("findings.schema.json")
AXIS_NAMES = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"}
METRIC_KEYS = ("roi_ratio", "dice_drop", "deletion_auc", "insertion_auc", "pointing_game", "energy_in_target",
               "iou_target", "sanity_similarity", "seconds", "evaluations")
GENERAL_LIMITS = [
    "saliency shows which image regions change this model's mask when perturbed; it does not show where disease is "
    "and is not a diagnosis",
    "saliency is scaled once per structure over the explained slices (unless per-slice scaling was asked for), so "
    "values compare regions and slices of this run, not different runs; the raw volume holds the score changes",
]


def _resolve_name(run_dir: Path, name: Optional[str]) -> str:
    if name:
        if not ((run_dir / f"{name}_run.json").is_file() or (run_dir / f"{name}_metrics.json").is_file()):
            raise FileFormatError(f"run directory {run_dir} has no {name}_run.json or {name}_metrics.json; "
                                  "expected the output folder of 'xaiseg segment' or 'xaiseg explain'")
        return name
    for suffix in ("_metrics.json", "_run.json"):
        names = sorted(p.name[: -len(suffix)] for p in run_dir.glob(f"*{suffix}"))
        if len(names) == 1:
            return names[0]
        if len(names) > 1:
            raise InputError(f"run directory {run_dir} holds several runs ({', '.join(names)}); choose one with "
                             "--name")
    raise FileFormatError(f"{run_dir} holds no *_run.json or *_metrics.json; expected the output folder of "
                          "'xaiseg segment' or 'xaiseg explain'")


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(f"{path} is missing from the run directory") from None
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _read_array(path: Path, what: str) -> Tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    if not path.is_file():
        raise FileFormatError(f"{what} {path} is missing from the run directory")
    image = read_image(path)
    return sitk.GetArrayFromImage(image), Geometry.of(image)


class RunDir:
    """The files of one finished run (``NAME_*``) in a folder."""

    def __init__(self, run_dir, name: Optional[str] = None) -> None:
        self.path = Path(run_dir)
        if not self.path.is_dir():
            raise FileFormatError(f"run directory {self.path} does not exist or is not a folder")
        self.name = _resolve_name(self.path, name)
        run_json = self.path / f"{self.name}_run.json"
        metrics_json = self.path / f"{self.name}_metrics.json"
        self.run = _load_json(run_json) if run_json.is_file() else None
        self.metrics = _load_json(metrics_json) if metrics_json.is_file() else None
        if self.run is None and self.metrics is None:  # pragma: no cover - _resolve_name guarantees one
            raise FileFormatError(f"no run record in {self.path}")

    def file(self, relative: str) -> Path:
        return self.path / Path(relative).name

    @property
    def mask_path(self) -> Path:
        if self.run and isinstance(self.run.get("outputs"), dict) and self.run["outputs"].get("mask"):
            return self.file(self.run["outputs"]["mask"])
        for suffix in (".nrrd", ".nii.gz", ".mha"):
            p = self.path / f"{self.name}_mask{suffix}"
            if p.is_file():
                return p
        raise FileFormatError(f"{self.path} has no {self.name}_mask.nrrd (or .nii.gz/.mha)")

    @property
    def methods(self) -> Dict[str, dict]:
        return dict((self.metrics or {}).get("methods") or {})

    def pngs(self, method: str) -> List[Tuple[int, Path]]:
        files = (self.methods.get(method, {}).get("files") or {}).get("png") or []
        paths = [self.file(f) for f in files] or sorted(self.path.glob(f"{self.name}_{method}_k*.png"))
        out = []
        for p in paths:
            m = re.search(r"_k(\d+)\.png$", p.name)
            if p.is_file() and m:
                out.append((int(m.group(1)), p))
        return sorted(out)


# --- geometry helpers --------------------------------------------------------------------------

def _kji_to_ras(geometry: Geometry, kji: np.ndarray) -> np.ndarray:
    return geometry.ijk_to_ras_points(np.atleast_2d(np.asarray(kji, dtype=float))[:, ::-1])


def _r(values, nd: int = 1):
    if isinstance(values, (list, tuple, np.ndarray)):
        return [_r(v, nd) for v in values]
    return round(float(values), nd)


def _bbox_ras(geometry: Geometry, mask: np.ndarray) -> Optional[dict]:
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    ras = _kji_to_ras(geometry, corners)
    mn, mx = ras.min(axis=0), ras.max(axis=0)
    return {"min": _r(mn), "max": _r(mx), "size": _r(mx - mn)}


# --- saliency analysis -------------------------------------------------------------------------

def _peaks_2d(sal: np.ndarray, spacing_rc: Tuple[float, float], n: int, min_mm: float,
              floor: float) -> List[Tuple[int, int, float]]:
    """Up to ``n`` local maxima of a 2D map, at least ``min_mm`` apart, above ``floor`` (greedy NMS).

    Peaks rank by the raw map's value (to 3 decimals, as reported); ties within a plateau
    (occlusion patches, LIME superpixels) go to the point where the map smoothed over about 2 mm
    is highest, then to the point deepest inside the high-saliency region, so a plateau yields
    its centre rather than its first pixel while the first peak is always the map's maximum.
    """
    import cv2

    sigma = (2.0 / max(spacing_rc[1], 1e-6), 2.0 / max(spacing_rc[0], 1e-6))
    smooth = cv2.GaussianBlur(sal.astype(np.float64), (0, 0), sigmaX=sigma[0], sigmaY=sigma[1])
    span = float(np.ptp(smooth)) or 1.0
    work = np.round(sal.astype(np.float64), 3) + 1e-4 * (smooth - smooth.min()) / span
    high = (sal >= floor).astype(np.uint8)
    if high.any():
        dist = cv2.distanceTransform(high, cv2.DIST_L2, 3)
        work = work + 1e-6 * dist / max(float(dist.max()), 1.0)
    work[sal < floor] = -np.inf
    rr, cc = np.mgrid[0:sal.shape[0], 0:sal.shape[1]]
    out = []
    for _ in range(n):
        flat = int(np.argmax(work))
        r, c = np.unravel_index(flat, work.shape)
        if not np.isfinite(work[r, c]):
            break
        out.append((int(r), int(c), float(sal[r, c])))
        near = ((rr - r) * spacing_rc[0]) ** 2 + ((cc - c) * spacing_rc[1]) ** 2 <= min_mm ** 2
        work[near] = -np.inf
    return out


def _label_entry(labels: Optional[LabelMap], kji: Sequence[int]) -> dict:
    if labels is None:
        return {}
    name = labels.at(kji)
    out: dict = {"label": name or UNLABELLED}
    if name is None:
        near = labels.nearest(kji)
        if near is not None:
            out["nearest_label"] = {"name": near[0], "distance_mm": round(near[1], 1)}
    return out


def _read_saliency(run: RunDir, method: str, info: dict, shape) -> Tuple[np.ndarray, np.ndarray, float]:
    """A method's saliency volume, its high-saliency label map and the threshold that made it."""
    files = info.get("files") or {}
    sal_path = run.file(files.get("saliency") or f"{run.name}_{method}_saliency.nrrd")
    sal, _ = _read_array(sal_path, f"{method} saliency")
    if sal.shape != shape:
        raise FileFormatError(f"{sal_path.name} has shape {sal.shape}, the mask {shape}; expected one grid")
    sal = np.nan_to_num(sal.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    settings = info.get("settings") or {}
    threshold = settings.get("threshold", 0.5)
    threshold = float(threshold) if isinstance(threshold, (int, float)) else 0.5
    label_path = run.file(files.get("label") or f"{run.name}_{method}_label.nrrd")
    high = (_read_array(label_path, f"{method} label")[0] > 0) if label_path.is_file() else (sal >= threshold)
    return sal, high, threshold


def _saliency_mass(s: np.ndarray, mask: np.ndarray, roi: Optional[np.ndarray], explained: np.ndarray) -> dict:
    """Shares of the explained slices' saliency inside and outside the mask and the ROI."""
    total = float(s.sum())

    def share(region: np.ndarray) -> float:
        return round(float(s[region].sum()) / total, 4) if total > 0 else 0.0

    mass = {"in_mask": share(mask), "outside_mask": share(~mask)}
    if roi is not None:
        r = roi.astype(bool)
        mass.update({"in_roi": share(r), "outside_roi": share(~r), "in_mask_within_roi": share(r & mask)})
        roi_px = int((r & explained).sum())
        mass["mask_share_of_roi"] = round(int((r & mask & explained).sum()) / roi_px, 4) if roi_px else 0.0
    return mass


def _peaks(sal: np.ndarray, mask: np.ndarray, roi: Optional[np.ndarray], geometry: Geometry, axis: int,
           slices: List[int], labels: Optional[LabelMap], n_peaks: int, threshold: float) -> List[dict]:
    """The strongest peaks: per explained slice (greedy non-maximum suppression), then overall."""
    r_ax, c_ax = in_plane_axes(axis)
    sp_kji = np.asarray(geometry.spacing, dtype=float)[::-1]
    cands = []
    for k in slices:
        plane = np.take(sal, k, axis=axis)
        for (rr, cc, v) in _peaks_2d(plane, (sp_kji[r_ax], sp_kji[c_ax]), n_peaks, 10.0, threshold):
            kji = [0, 0, 0]
            kji[axis], kji[r_ax], kji[c_ax] = int(k), rr, cc
            cands.append((v, kji))
    cands.sort(key=lambda t: -t[0])
    peaks = []
    for rank, (v, kji) in enumerate(cands[:n_peaks], start=1):
        entry = {"rank": rank, "slice": int(kji[axis]), "value": round(v, 3), "ijk": [int(x) for x in kji[::-1]],
                 "ras_mm": _r(_kji_to_ras(geometry, kji)[0]), "in_mask": bool(mask[tuple(kji)])}
        if roi is not None:
            entry["in_roi"] = bool(roi[tuple(kji)])
        entry.update(_label_entry(labels, kji))
        peaks.append(entry)
    return peaks


def _clusters(s: np.ndarray, high: np.ndarray, mask: np.ndarray, geometry: Geometry, axis: int, slices: List[int],
              labels: Optional[LabelMap], n_clusters: int) -> List[dict]:
    """High-saliency clusters: 8-connected components of the label map on each explained slice,
    ranked by their share of the saliency."""
    import cv2

    total = float(s.sum())
    r_ax, c_ax = in_plane_axes(axis)
    sp_kji = np.asarray(geometry.spacing, dtype=float)[::-1]
    clusters = []
    for k in slices:
        count, comp = cv2.connectedComponents(np.take(high, k, axis=axis).astype(np.uint8), connectivity=8)
        sal2d, m2d = np.take(s, k, axis=axis), np.take(mask, k, axis=axis)
        for c in range(1, count):
            px = comp == c
            rows, cols = np.nonzero(px)
            w = sal2d[px]
            j = int(np.argmax(w))
            pk, cen = [0, 0, 0], [0.0, 0.0, 0.0]
            pk[axis], pk[r_ax], pk[c_ax] = int(k), int(rows[j]), int(cols[j])
            cen[axis], cen[r_ax], cen[c_ax] = float(k), float(rows.mean()), float(cols.mean())
            entry = {"slice": int(k), "pixels": int(px.sum()),
                     "area_mm2": round(float(px.sum() * sp_kji[r_ax] * sp_kji[c_ax]), 1),
                     "saliency_share": round(float(w.sum()) / total, 4) if total > 0 else 0.0,
                     "mean_saliency": round(float(w.mean()), 3), "peak_value": round(float(w[j]), 3),
                     "peak_ras_mm": _r(_kji_to_ras(geometry, pk)[0]),
                     "centroid_ras_mm": _r(_kji_to_ras(geometry, cen)[0]),
                     "in_mask_fraction": round(float(m2d[px].mean()), 4)}
            if labels is not None:
                entry["labels"] = labels.composition(put_plane(np.zeros(mask.shape, bool), axis, k, px))
                entry.update({f"peak_{k2}": v2 for k2, v2 in _label_entry(labels, pk).items()})
            clusters.append(entry)
    clusters.sort(key=lambda d: -d["saliency_share"])
    clusters = clusters[:n_clusters]
    for i, c in enumerate(clusters, start=1):
        c["rank"] = i
    return clusters


def _analyse_method(run: RunDir, method: str, info: dict, mask: np.ndarray, roi: Optional[np.ndarray],
                    geometry: Geometry, axis: int, slices: List[int], labels: Optional[LabelMap],
                    n_peaks: int, n_clusters: int) -> dict:
    """What findings.json says about one method: its figures, where its saliency lies, its peaks
    and clusters, its images and its limits."""
    sal, high, threshold = _read_saliency(run, method, info, mask.shape)
    explained = np.zeros(mask.shape, dtype=bool)
    for k in slices:
        explained[plane_index(axis, k)] = True
    s = np.where(explained, sal, 0.0)
    m = mask.astype(bool)
    return {
        "settings": _jsonable(info.get("settings") or {}),
        "threshold": threshold,
        "summary": _clean_metrics(info.get("summary") or {}),
        "per_slice": {str(key): _clean_metrics(vals) for key, vals in (info.get("slices") or {}).items()},
        "saliency_mass": _saliency_mass(s, m, roi, explained),
        "peaks": _peaks(sal, m, roi, geometry, axis, slices, labels, n_peaks, threshold),
        "clusters": _clusters(s, high & explained, m, geometry, axis, slices, labels, n_clusters),
        "images": [{"slice": k, "file": p.name} for k, p in run.pngs(method)],
        "limits": limits_of(method),  # stated by the method's explainer class
    }


def _clean_metrics(values: dict) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, v in (values or {}).items():
        if isinstance(v, bool) or v is None:
            out[key] = v
        elif isinstance(v, (int, float, np.integer, np.floating)):
            fv = float(v)
            out[key] = (int(v) if isinstance(v, (int, np.integer)) else round(fv, 4)) if np.isfinite(fv) else None
        elif isinstance(v, (str, list, dict)):
            out[key] = _jsonable(v)
    return out


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def leading_method(methods: Dict[str, dict]) -> Tuple[Optional[str], str]:
    """The method whose map is most faithful: largest insertion AUC minus deletion AUC, else largest
    Dice drop, else the only/first one."""
    if not methods:
        return None, "no explanation in this run"
    def val(m, k):
        return number(methods[m]["summary"].get(k))
    if all(val(m, "insertion_auc") is not None and val(m, "deletion_auc") is not None for m in methods):
        best = max(methods, key=lambda m: val(m, "insertion_auc") - val(m, "deletion_auc"))
        return best, "largest insertion AUC minus deletion AUC" if len(methods) > 1 else "the only method"
    if all(val(m, "dice_drop") is not None for m in methods):
        best = max(methods, key=lambda m: val(m, "dice_drop"))
        return best, "largest Dice drop" if len(methods) > 1 else "the only method"
    first = next(iter(methods))
    return first, "the first method (no common faithfulness metric)" if len(methods) > 1 else "the only method"


def build_findings(run_dir, name: Optional[str] = None, labels: Optional[LabelMap] = None,
                   n_peaks: int = 3, n_clusters: int = 5) -> dict:
    """Assemble findings from a run directory; ``labels`` (on any grid in the same space) names places."""
    run = RunDir(run_dir, name)
    mask_arr, geometry = _read_array(run.mask_path, "mask")
    mask = mask_arr > 0
    if labels is not None and (labels.array.shape != mask.shape or not labels.geometry.same_grid(geometry)):
        raise InputError(f"label map {labels.source} is on grid {labels.geometry.size}, the run on {geometry.size}; "
                         "load it with the run's geometry (load_labelmap(..., geometry=...))")
    metrics = run.metrics or {}
    record_seg = run.run or {}
    axis = metrics.get("axis", (record_seg.get("settings") or {}).get("slicing_axis_index", 0))
    axis = int(axis)
    if axis not in (0, 1, 2):
        raise FileFormatError(f"run's slicing axis {axis} is not 0, 1 or 2")
    codes = axis_codes(geometry)
    vox_mm3 = float(np.prod(geometry.spacing))
    on = np.where(np.moveaxis(mask, axis, 0).any(axis=(1, 2)))[0]
    voxels = int(mask.sum())
    mask_info: Dict[str, Any] = {
        "voxels": voxels,
        "volume_ml": round(voxels * vox_mm3 / 1000.0, 3),
        "slices": ({"first": int(on.min()), "last": int(on.max()), "count": int(len(on))} if len(on)
                   else {"first": None, "last": None, "count": 0}),
        "bbox_ras_mm": _bbox_ras(geometry, mask),
        "centroid_ras_mm": _r(_kji_to_ras(geometry, np.argwhere(mask).mean(axis=0))[0]) if voxels else None,
    }
    if labels is not None:
        mask_info["labels"] = labels.composition(mask)

    roi = None
    roi_info: Optional[dict] = None
    if run.metrics is not None:
        roi_path = next((p for p in (run.path / f"{run.name}_roi{sfx}" for sfx in (".nrrd", ".nii.gz", ".mha"))
                         if p.is_file()), None)
        if roi_path is not None:
            roi = _read_array(roi_path, "ROI")[0] > 0
        roi_meta = metrics.get("roi") or {}
        roi_info = {"source": roi_meta.get("source"), "fallback_slices": list(roi_meta.get("fallback_slices") or []),
                    "voxels": int(roi.sum()) if roi is not None else None}
    slices = sorted(int(k) for k in metrics.get("slices") or [])
    methods = {}
    for method, info in run.methods.items():
        methods[method] = _analyse_method(run, method, info, mask, roi, geometry, axis, slices, labels,
                                          n_peaks, n_clusters)
    lead, basis = leading_method(methods)

    prompt = (record_seg.get("prompt") or (metrics.get("record") or {}).get("prompt") or {})
    model = (record_seg.get("model") or (metrics.get("record") or {}).get("model") or {})
    limits = list(GENERAL_LIMITS)
    if slices and len(slices) < mask_info["slices"]["count"]:
        limits.append(f"saliency was computed on {len(slices)} of the mask's {mask_info['slices']['count']} slices; "
                      "other slices were not explained")
    for mth in methods:
        limits.append(methods[mth]["limits"])
    if labels is not None and labels.kind == "atlas":
        limits.append("anatomical names come from an atlas (" + labels.note + "), not from this patient's anatomy")
    if roi_info and roi_info["fallback_slices"]:
        limits.append(f"on slice(s) {roi_info['fallback_slices']} the ROI was empty and fell back to the prompt box")

    findings = {
        "schema_version": SCHEMA_VERSION,
        "run": {"name": run.name, "directory": str(run.path), "explained": bool(methods)},
        "structure": {"name": run.name, "prompt": _jsonable(prompt), "model": _jsonable(model)},
        "volume": {"shape_kji": [int(v) for v in mask.shape], "spacing_mm": _r(geometry.spacing, 4),
                   "voxel_ml": round(vox_mm3 / 1000.0, 6), "slicing_axis": axis,
                   "plane": AXIS_NAMES.get(codes[axis], "axial"), "axis_codes_kji": list(codes)},
        "mask": mask_info,
        "roi": roi_info,
        "explained_slices": slices,
        "explained_slice_count": len(slices),
        "methods": methods,
        "leading_method": {"method": lead, "basis": basis},
        "labels": labels.describe() if labels is not None else None,
        "limits": limits,
        "record": {"segmentation": _slim_record(record_seg), "explanation": _jsonable(metrics.get("record"))},
    }
    return findings


def _slim_record(rec: dict) -> Optional[dict]:
    if not rec:
        return None
    out = _jsonable({k: v for k, v in rec.items() if k != "slices"})
    if isinstance(rec.get("slices"), list):
        out["slices_run"] = len(rec["slices"])
    return out


def validate(findings: dict) -> None:
    """Raise :class:`InputError` naming the first place where ``findings`` breaks the shipped schema."""
    from ..errors import require

    jsonschema = require("jsonschema", "report", "validating findings.json")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(findings), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InputError(f"findings break the schema at {where}: {e.message} ({len(errors)} error(s) in all)")


#: record keys never sent to a model: paths and timestamps may identify a patient
_PRIVATE_KEYS = {"input", "directory", "created", "platform", "outputs", "files", "labelmap", "images", "checkpoint",
                 "weights_sha256", "url", "cache_dir", "torchscript", "clip_model", "device"}


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", "\\", "./", "../")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))


def model_context(findings: dict) -> dict:
    """The part of findings a language model sees: numbers and names, no paths, dates or run record."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in _PRIVATE_KEYS}
        if isinstance(v, list):
            return [strip(x) for x in v]
        if isinstance(v, str) and _looks_like_path(v):
            return "(path withheld)"
        return v

    ctx = {k: strip(findings[k]) for k in ("structure", "volume", "mask", "roi", "explained_slices",
                                            "leading_method", "limits") if k in findings}
    ctx["methods"] = {m: strip({k: v for k, v in info.items() if k not in ("per_slice",)})
                      for m, info in (findings.get("methods") or {}).items()}
    if findings.get("labels"):
        ctx["labels"] = {"kind": findings["labels"]["kind"], "note": findings["labels"].get("note", "")}
    return ctx
