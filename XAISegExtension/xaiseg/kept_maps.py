"""Each explained slice's maps kept as the faithfulness bench measured them, and scored again later.

``xaiseg bench faithfulness --keep-maps DIR`` writes one ``STRUCTURE_kNNN.npz`` per explained slice:
the slice as the model saw it (turned into the run's orientation), its ROI and prompt, every
method's raw map in that orientation, and what the bench measured there.  :func:`rescore` puts any
map of the same slice (a ranking, a smoothing, another method's idea) through the bench's own curves
on the same engine and ROI, beside the trivial maps, without running the method again: minutes
instead of the hour a RISE run takes.  ``python -m xaiseg.kept_maps DIR`` scores the kept maps again
and prints them beside the figures the bench recorded, as a check that the files reproduce them.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .errors import InputError

#: what a kept file holds; a file of another version is refused rather than misread
KEPT_VERSION = 1
#: the per-slice figures of each method kept beside its map
MEASURED = ("deletion_auc", "insertion_auc", "best_trivial_deletion_auc", "beats_trivial_deletion")


@dataclass
class KeptSlice:
    """One kept slice: ``image``, ``roi`` and ``maps`` (method -> raw map) as the model saw the slice;
    ``meta``: structure, slice, prompt, model, curve settings and the figures measured."""

    path: Path
    image: np.ndarray
    roi: np.ndarray
    maps: Dict[str, np.ndarray]
    meta: Dict

    @property
    def prompt(self):
        from .models.base import SlicePrompt

        p = self.meta["prompt"]
        points = tuple(tuple(x) for x in p["points"]) if p.get("points") else None
        return SlicePrompt(tuple(p["box"]) if p.get("box") else None, points,
                           tuple(p["labels"]) if p.get("labels") else None)


def kept_name(structure: str, k: int) -> str:
    return f"{structure}_k{int(k):03d}.npz"


def keep_slices(folder, structure: str, session, segmentation, run, explainers: Sequence) -> List[Path]:
    """Write every explained slice of ``run`` (a :meth:`Session.explain` of ``segmentation`` with
    ``explainers``) into ``folder``; each file is written whole or not at all."""
    from .explain_volume import slice_prompt
    from .io import write_bytes_atomic

    vs, axis = session.volume_segmenter, session.axis
    prompts = {r.index: slice_prompt(r.prompt) for r in segmentation.slices}
    metrics = run.metrics()["methods"]
    first = explainers[0]
    written = []
    for k in run.slices:
        prompt = vs.to_model_prompt(prompts[k].clipped(vs.slice_shape))
        arrays = {"image": np.asarray(vs.model_slice(k), np.float32),
                  "roi": vs.to_model(np.take(run.roi, k, axis=axis).astype(bool))}
        for method, per_slice in run.explanations.items():
            arrays[f"map_{method}"] = np.asarray(vs.to_model(per_slice[k].raw), np.float32)
        meta = {"version": KEPT_VERSION, "structure": structure, "slice": int(k), "model": session.segmenter.describe(),
                "prompt": {"box": None if prompt.box is None else [float(v) for v in prompt.box],
                           "points": None if not prompt.points else [list(map(float, p)) for p in prompt.points],
                           "labels": None if prompt.labels is None else [int(v) for v in prompt.labels]},
                "score": first.score, "metric_steps": int(first.metric_steps), "metric_fill": first.metric_fill,
                "seed": int(first.seed),
                "measured": {m: {x: e["slices"][str(k)].get(x) for x in MEASURED} for m, e in metrics.items()}}
        arrays["meta"] = np.array(json.dumps(meta))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        written.append(write_bytes_atomic(Path(folder) / kept_name(structure, k), buffer.getvalue()))
    return written


def load_kept(path) -> KeptSlice:
    """A file :func:`keep_slices` wrote; a clear error for anything else."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a kept slice ({exc}); expected a STRUCTURE_kNNN.npz written by "
                         "xaiseg bench faithfulness --keep-maps") from exc
    if meta.get("version") != KEPT_VERSION:
        raise InputError(f"{path}: kept-slice version {meta.get('version')!r}; expected {KEPT_VERSION}")
    maps = {key[len("map_"):]: v for key, v in arrays.items() if key.startswith("map_")}
    return KeptSlice(path, arrays["image"], arrays["roi"].astype(bool), maps, meta)


def rescore(kept: KeptSlice, maps: Mapping[str, np.ndarray], segmenter, trivial: bool = True,
            progress=None) -> Dict[str, Dict]:
    """The bench's curves (deletion and insertion AUC, the deletion curve) of each of ``maps`` (name ->
    a map of the kept slice's shape, as the model saw the slice; higher goes first) on the kept
    slice's engine and ROI, and with ``trivial`` the trivial maps' under ``"trivial"``.
    ``segmenter`` must be the model the bench ran (its name and weights are checked)."""
    from .explain.base import PerturbationEngine
    from .explain.measure import faithfulness, trivial_curves

    meta = kept.meta
    if segmenter.describe() != meta["model"]:
        raise InputError(f"{kept.path} was measured with {meta['model']}; expected the same model, got "
                         f"{segmenter.describe()}")
    for name, m in maps.items():
        if np.shape(m) != kept.image.shape:
            raise InputError(f"map {name!r} of shape {np.shape(m)}: expected the kept slice's {kept.image.shape} "
                             "(as the model saw it)")
        if not np.all(np.isfinite(m)):
            raise InputError(f"map {name!r} holds non-finite values; expected finite numbers")
    engine = PerturbationEngine(segmenter, kept.image, kept.prompt, kept.roi, score=meta["score"], progress=progress,
                                stage=f"{meta['structure']} slice {meta['slice']}")
    steps, fill = meta["metric_steps"], meta["metric_fill"]
    out: Dict[str, Dict] = {name: _curve(faithfulness(engine, np.asarray(m, np.float32), steps, fill=fill))
                            for name, m in maps.items()}
    if trivial:
        _, curves = trivial_curves(engine, steps, meta["seed"], fill, "trivial")
        out["trivial"] = {name: _curve(c) for name, c in curves.items()}
    return out


def _curve(figures: Dict) -> Dict:
    return {k: figures[k] for k in ("deletion_auc", "insertion_auc", "deletion_curve")}


def _check(folder: Path, device: str = "cpu", threads: Optional[int] = None) -> List[Dict]:
    """Every kept slice's maps scored again, beside the figures the bench recorded."""
    from .models.litemedsam import LiteMedSAM

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    files = sorted(Path(folder).glob("*_k[0-9][0-9][0-9].npz"))
    if not files:
        raise InputError(f"{folder}: no kept slices (STRUCTURE_kNNN.npz); expected the folder given to "
                         "xaiseg bench faithfulness --keep-maps")
    model = LiteMedSAM(device=device)
    rows = []
    for path in files:
        kept = load_kept(path)
        again = rescore(kept, kept.maps, model)
        best = min(c["deletion_auc"] for c in again["trivial"].values())
        for method in kept.maps:
            rows.append({"structure": kept.meta["structure"], "slice": kept.meta["slice"], "method": method,
                         "measured": kept.meta["measured"].get(method, {}).get("deletion_auc"),
                         "rescored": again[method]["deletion_auc"], "best_trivial": best})
            measured = "-" if rows[-1]["measured"] is None else f"{rows[-1]['measured']:.4f}"
            print(f"{kept.meta['structure']} {kept.meta['slice']} {method}: deletion AUC measured {measured}, "
                  f"scored again {rows[-1]['rescored']:.4f}; best trivial {best:.4f}", flush=True)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xaiseg.kept_maps",
                                description="Score the maps kept by xaiseg bench faithfulness --keep-maps again, "
                                            "beside the figures the bench recorded (with LiteMedSAM).")
    p.add_argument("folder", help="the --keep-maps folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    try:
        _check(Path(args.folder), args.device, args.threads)
    except InputError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
