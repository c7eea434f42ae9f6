"""Each explained slice's maps kept as the faithfulness bench measured them, and scored again later.

``xaiseg bench faithfulness --keep-maps DIR`` writes one ``STRUCTURE_kNNN.npz`` per explained slice:
the slice as the model saw it (turned into the run's orientation), its ROI and prompt, every
method's raw map in that orientation, and what the bench measured there.  :func:`rescore` puts any
map of the same slice (a ranking, a smoothing, another method's idea) through the bench's own curves
on the same engine and ROI, beside the trivial maps, without running the method again: minutes
instead of the hour a RISE run takes.  ``python -m xaiseg.kept_maps DIR`` scores the kept maps again
and prints them beside the figures the bench recorded, as a check that the files reproduce them.
``--method M --set NAME=VALUE`` instead runs method M again on each kept slice with its recorded
settings, NAME changed to VALUE, and scores the new map beside the recorded one and the best trivial
map: a setting's effect on the bench's slices in minutes per slice, without the whole bench.
``--method M --fresh`` runs M with the bench's default settings (``--set`` changes them) on every kept
slice, also where the folder kept no map of M: a method the bench did not run there, measured on the
same curves against the same trivial maps.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .errors import InputError, XAISegError

#: what a kept file holds; a file of another version is refused rather than misread
KEPT_VERSION = 1
#: the per-slice figures of each method kept beside its map
MEASURED = ("deletion_auc", "insertion_auc", "best_trivial_deletion_auc", "beats_trivial_deletion")
#: what identifies the model a map was measured with (not its device or where its weights lie)
MODEL_KEYS = ("name", "weights_sha256", "input_size")
#: what a kept file's meta must hold
META_KEYS = ("structure", "slice", "model", "prompt", "score", "metric_steps", "metric_fill", "seed", "measured")
#: the largest difference between a figure scored again and the one recorded that the check accepts
#: (the same passes on the same machine agree to the last digit)
TOLERANCE = 1e-6
KEPT_FILE = re.compile(r".+_k\d{3,}\.npz$")


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
        from .explain_volume import slice_prompt

        return slice_prompt(self.meta["prompt"])


def kept_name(structure: str, k: int) -> str:
    return f"{structure}_k{int(k):03d}.npz"


def keep_slices(folder, structure: str, session, segmentation, run, explainers: Sequence,
                versions: Optional[Dict] = None, doc: Optional[Dict] = None) -> List[Path]:
    """Write every explained slice of ``run`` (a :meth:`Session.explain` of ``segmentation`` with
    ``explainers``; ``doc`` its :meth:`metrics` when already made) into ``folder``, with each method's
    settings and the bench's map ``versions``; each file is written whole or not at all."""
    from .explain_volume import slice_prompt
    from .io import write_bytes_atomic

    vs, axis = session.volume_segmenter, session.axis
    prompts = {r.index: slice_prompt(r.prompt) for r in segmentation.slices}
    metrics = (doc or run.metrics())["methods"]
    first = explainers[0]
    written = []
    for k in run.slices:
        prompt = vs.to_model_prompt(prompts[k].clipped(vs.slice_shape))
        arrays = {"image": np.asarray(vs.model_slice(k), np.float32),
                  "roi": vs.to_model(np.take(run.roi, k, axis=axis).astype(bool))}
        for method, per_slice in run.explanations.items():
            arrays[f"map_{method}"] = np.asarray(vs.to_model(per_slice[k].raw), np.float32)
        meta = {"version": KEPT_VERSION, "structure": structure, "slice": int(k), "model": session.segmenter.describe(),
                "prompt": prompt.record(),
                "score": first.score, "metric_steps": int(first.metric_steps), "metric_fill": first.metric_fill,
                "seed": int(first.seed), "versions": dict(versions or {}),
                "settings": {m: e.get("settings") for m, e in metrics.items()},
                "measured": {m: {x: e["slices"][str(k)].get(x) for x in MEASURED} for m, e in metrics.items()}}
        arrays["meta"] = np.array(json.dumps(meta))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        written.append(write_bytes_atomic(Path(folder) / kept_name(structure, k), buffer.getvalue()))
    return written


def load_kept(path) -> KeptSlice:
    """A file :func:`keep_slices` wrote; a clear error for anything else."""
    path = Path(path)
    expected = "expected a STRUCTURE_kNNN.npz written by xaiseg bench faithfulness --keep-maps"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a kept slice ({type(exc).__name__}: {exc}); {expected}") from exc
    if not isinstance(meta, dict) or meta.get("version") != KEPT_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise InputError(f"{path}: kept-slice version {version!r}; expected {KEPT_VERSION} ({expected})")
    missing = [k for k in ("image", "roi") if k not in arrays] + [k for k in META_KEYS if k not in meta]
    if missing:
        raise InputError(f"{path}: a kept slice without {', '.join(missing)}; {expected}")
    image = arrays["image"]
    maps = {key[len("map_"):]: v for key, v in arrays.items() if key.startswith("map_")}
    odd = [name for name, a in [("roi", arrays["roi"])] + list(maps.items()) if a.shape != image.shape or image.ndim != 2]
    if odd:
        raise InputError(f"{path}: {', '.join(odd)} of another shape than the slice's {image.shape}; {expected}")
    return KeptSlice(path, image, arrays["roi"].astype(bool), maps, meta)


def rescore(kept: KeptSlice, maps: Mapping[str, np.ndarray], segmenter, trivial: bool = True,
            progress=None) -> Dict[str, Dict]:
    """The bench's curves (deletion and insertion AUC, the deletion curve) of each of ``maps`` (name ->
    a map of the kept slice's shape, as the model saw the slice; higher goes first) on the kept
    slice's engine and ROI, and with ``trivial`` the trivial maps' under ``"trivial"``.
    ``segmenter`` must be the model the bench ran (its name and weights are checked)."""
    from .explain.base import PerturbationEngine
    from .explain.measure import curve_figures, faithfulness, trivial_curves

    meta = kept.meta
    _same_model(kept, segmenter)
    if "trivial" in maps:
        raise InputError("a map named 'trivial': expected another name (the trivial maps' figures come under it)")
    for name, m in maps.items():
        if np.shape(m) != kept.image.shape:
            raise InputError(f"map {name!r} of shape {np.shape(m)}: expected the kept slice's {kept.image.shape} "
                             "(as the model saw it)")
        if not np.all(np.isfinite(m)):
            raise InputError(f"map {name!r} holds non-finite values; expected finite numbers")
    engine = PerturbationEngine(segmenter, kept.image, kept.prompt, kept.roi, score=meta["score"], progress=progress,
                                stage=f"{meta['structure']} slice {meta['slice']}")
    steps, fill = meta["metric_steps"], meta["metric_fill"]
    out: Dict[str, Dict] = {name: curve_figures(faithfulness(engine, np.asarray(m), steps, fill=fill))
                            for name, m in maps.items()}
    if trivial:
        _, curves = trivial_curves(engine, steps, meta["seed"], fill, "trivial")
        out["trivial"] = {name: curve_figures(c) for name, c in curves.items()}
    return out


#: settings that only change the curves, checks or display, not the map: the kept file's curves are used
CURVE_SETTINGS = ("score", "metric_steps", "metric_slices", "metric_fill", "threshold", "scaling", "noise_passes",
                  "baselines", "sanity", "cascade", "cascade_draws")


def _same_model(kept: KeptSlice, segmenter) -> None:
    """Refuse ``segmenter`` unless it is the model the bench ran on ``kept`` (name, weights, input size)."""
    model = segmenter.describe()
    if any(model.get(k) != kept.meta["model"].get(k) for k in MODEL_KEYS):
        raise InputError(f"{kept.path} was measured with {_model_text(kept.meta['model'])}; expected the same model, got "
                         f"{_model_text(model)}")


def _current(kept: KeptSlice, method: str) -> bool:
    """Whether ``kept`` holds a map of ``method`` made by this engine's version of it."""
    from .bench_faithfulness import MAP_VERSIONS

    return method in kept.maps and (kept.meta.get("versions") or {}).get(method) == MAP_VERSIONS.get(method)


def _structure_side(kept: KeptSlice, method: str) -> Optional[float]:
    """The structure's side (the median shorter side of its explained slices' boxes) as ``method``
    recorded it on ``kept``, or else as the other structure-sized methods did (every one of a run
    records the same; refused where they disagree); None where none did."""
    settings = {m: s for m, s in (kept.meta.get("settings") or {}).items() if isinstance(s, dict) and s.get("side")}
    if method in settings:
        return float(settings[method]["side"])
    sides = {float(s["side"]) for s in settings.values()}
    if len(sides) > 1:
        recorded = ", ".join(f"{m} {s['side']}" for m, s in sorted(settings.items()))
        raise InputError(f"{kept.path}: its methods recorded different structure sides ({recorded}); expected one, "
                         "or --set side=PIXELS")
    return sides.pop() if sides else None


def _without(settings: Mapping, *names: str) -> Dict:
    return {k: v for k, v in settings.items() if k not in names}


def changed_map(kept: KeptSlice, method: str, changes: Mapping[str, object], segmenter, fresh: bool = False) -> Dict:
    """``method`` run again on the kept slice with the settings the bench recorded for it, ``changes``
    applied, and its map (inside the ROI, as :meth:`~xaiseg.explain.base.Explainer.explain` keeps
    it) scored on the bench's curves beside the recorded figures: the map, its curve figures, its
    details and passes, and the recorded deletion AUC and best trivial map's deletion AUC.  With no
    changes the map is the kept one (the same passes on the same machine), so a file kept with
    another version of the method's map is refused, as are changes to what only the curves use.
    ``fresh``: with the bench's default settings of ``method`` instead (at the kept run's seed and
    curves, sized from the structure's recorded side), whether or not the file kept its map; the
    recorded deletion AUC is then given only where the file kept a map of this engine's version."""
    from .bench_faithfulness import DEFAULT_MASKS, MAP_VERSIONS, _explainers
    from .explain import make_explainer

    _same_model(kept, segmenter)
    meta = kept.meta
    settings_of = meta.get("settings") or {}
    curves = sorted(set(changes) & set(CURVE_SETTINGS))
    if curves:
        raise InputError(f"--set {', '.join(curves)}: the curves are the kept file's ({_curves_text(meta)}); expected "
                         "a setting of the method's map")
    if fresh:
        if method not in MAP_VERSIONS:
            raise InputError(f"--method {method}: the bench does not measure it; expected one of "
                             f"{', '.join(sorted(MAP_VERSIONS))}")
        bench = _explainers(DEFAULT_MASKS, only=(method,), seed=meta["seed"], metric_fill=meta["metric_fill"])[0]
        settings = _without(bench.settings(), "method")
        side = _structure_side(kept, method)
        if "side" in settings and side and "side" not in changes:
            settings["side"] = side
    else:
        recorded = settings_of.get(method)
        if not recorded:
            raise InputError(f"{kept.path}: no recorded settings of {method!r}; expected one of "
                             f"{', '.join(sorted(settings_of)) or 'the methods of a file kept since settings were recorded'}"
                             " (or --fresh, to run it with the bench's settings)")
        version = (meta.get("versions") or {}).get(method)
        if version != MAP_VERSIONS.get(method):
            raise InputError(f"{kept.path}: its {method} map is version {version}; this engine makes version "
                             f"{MAP_VERSIONS.get(method)}, so its recorded settings no longer give the kept map; expected "
                             f"a folder kept at version {MAP_VERSIONS.get(method)} (or --fresh)")
        settings = _without(recorded, "method")
    settings.update(changes)
    explainer = make_explainer(method, segmenter, **settings)
    box = (kept.meta.get("prompt") or {}).get("box")
    if hasattr(explainer, "side") and box is not None and "side" not in changes:
        # the recorded side is the structure's (the median of all its slices' boxes, which one kept slice
        # cannot give again): a change to per-slice sizing or a fixed size drops it, as a run does
        sized = bool(explainer.for_structure([tuple(int(v) for v in box)]).side)
        if not sized:
            explainer = explainer.replace(side=0.0)
        elif not explainer.side and fresh:
            raise InputError(f"{kept.path}: no method kept there recorded the structure's side, which {method} is "
                             "sized from; expected --set side=PIXELS too (or sizing=slice)")
        elif not explainer.side:
            raise InputError(f"{kept.path}: sized from the structure but measured per slice, so the structure's "
                             "side is not recorded; expected --set side=PIXELS too")
    explained = explainer.explain(kept.image, kept.prompt, roi=kept.roi, measure=False)
    figures = rescore(kept, {method: explained.raw}, segmenter, trivial=False)[method]
    # fresh: the recorded figures stand beside the new ones only where the file kept a current map of the
    # method made with these settings (the structure's side aside), not one of another --masks or variant
    comparable = _current(kept, method) and (
        not fresh or _without(settings_of.get(method) or {}, "method", "side") ==
        _without(explainer.settings(), "method", "side"))
    measured = (meta["measured"].get(method) or {}) if comparable else {}
    # the trivial maps are the slice's, not the method's: the method's own record of them, or any other's
    records = [meta["measured"].get(method)] + list(meta["measured"].values())
    trivial = [m["best_trivial_deletion_auc"] for m in records
               if isinstance(m, dict) and m.get("best_trivial_deletion_auc") is not None]
    return {"map": explained.raw, "figures": figures, "details": explained.details,
            "passes": explained.n_evaluations, "recorded_deletion_auc": measured.get("deletion_auc"),
            "recorded_map": kept.maps[method] if comparable else None,
            "best_trivial_deletion_auc": trivial[0] if trivial else None}


def _curves_text(meta: Mapping) -> str:
    """The kept file's curve settings, in words."""
    return f"score {meta.get('score')}, {meta.get('metric_steps')} steps, fill {meta.get('metric_fill')}"


def parse_changes(pairs: Sequence[str]) -> Dict[str, str]:
    """``NAME=VALUE`` pairs (``--set``) as a dict; the method's settings type and check the values."""
    out: Dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise InputError(f"--set {pair!r}: expected NAME=VALUE, such as smooth=1.0")
        if name.strip() in out:
            raise InputError(f"--set {pair!r}: {name.strip()} is already set to {out[name.strip()]}; expected each "
                             "setting once")
        out[name.strip()] = value.strip()
    return out


def changed_rows(folder, method: str, changes: Mapping[str, object], model=None, report=None,
                 fresh: bool = False) -> List[Dict]:
    """:func:`changed_map` on every kept slice in ``folder`` that kept ``method``'s map (``fresh``: on
    every kept slice), and on the second slice of each adjacent pair the Spearman of the two slices'
    maps over their common ROI, recorded (where both kept a current map) and new (as the bench's
    adjacent-slice Spearman); ``report`` is called with each row as it is measured."""
    from .explain_volume import pair_spearman

    files = _kept_or_refuse(folder)
    model = _model_or_litemedsam(model)
    rows, held, before = [], set(), None  # before: the previous slice's (structure, slice, roi, recorded map, new map)
    for path in files:
        kept = load_kept(path)
        held.update(kept.maps)
        if method not in kept.maps and not fresh:
            continue
        again = changed_map(kept, method, changes, model, fresh=fresh)
        recorded_map = again["recorded_map"]
        structure, k = kept.meta["structure"], int(kept.meta["slice"])
        row = {"structure": structure, "slice": k,
               "recorded": again["recorded_deletion_auc"], "changed": again["figures"]["deletion_auc"],
               "insertion": again["figures"]["insertion_auc"], "best_trivial": again["best_trivial_deletion_auc"],
               "passes": again["passes"], "spearman_recorded": None, "spearman_changed": None,
               "reliability": (again["details"] or {}).get("reliability")}
        # adjacent slices of one structure (the bench keeps them turned alike): Spearman over their common ROI
        if before is not None and before[:2] == (structure, k - 1):
            if before[3] is not None and recorded_map is not None:
                row["spearman_recorded"] = pair_spearman(before[3], before[2], recorded_map, kept.roi)
            row["spearman_changed"] = pair_spearman(before[4], before[2], again["map"], kept.roi)
        before = (structure, k, kept.roi, recorded_map, again["map"])
        rows.append(row)
        if report is not None:
            report(row)
    if not rows:
        raise InputError(f"{folder}: no kept slice holds a {method!r} map; expected one of the maps kept there: "
                         f"{', '.join(sorted(held)) or 'none'}")
    return rows


def wins(rows: Sequence[Dict], key: str) -> int:
    """How many rows' ``key`` deletion AUC is below the best trivial map's."""
    return sum(1 for r in rows if r[key] is not None and r["best_trivial"] is not None and r[key] < r["best_trivial"])


def _model_text(model: Dict) -> str:
    return ", ".join(f"{k} {model.get(k)}" for k in MODEL_KEYS)


def kept_files(folder) -> List[Path]:
    """The kept slices in ``folder``, by name."""
    return sorted(p for p in Path(folder).glob("*.npz") if KEPT_FILE.match(p.name))


def _model_or_litemedsam(model):
    """``model``, or LiteMedSAM (the command's model) when None."""
    if model is None:
        from .models.litemedsam import LiteMedSAM

        model = LiteMedSAM()
    return model


def _kept_or_refuse(folder) -> List[Path]:
    files = kept_files(folder)
    if not files:
        raise InputError(f"{folder}: no kept slices (STRUCTURE_kNNN.npz); expected the folder given to "
                         "xaiseg bench faithfulness --keep-maps")
    return files


def check(folder, model=None, progress=None) -> List[Dict]:
    """Every kept slice's maps in ``folder`` scored again with ``model`` (LiteMedSAM when None), beside
    the figures the bench recorded: per map its deletion AUC both ways and the best trivial map's
    both ways."""
    files = _kept_or_refuse(folder)
    model = _model_or_litemedsam(model)
    rows = []
    for path in files:
        kept = load_kept(path)
        again = rescore(kept, kept.maps, model, progress=progress)
        best = min(c["deletion_auc"] for c in again["trivial"].values())
        for method in kept.maps:
            measured = kept.meta["measured"].get(method, {})
            rows.append({"structure": kept.meta["structure"], "slice": kept.meta["slice"], "method": method,
                         "measured": measured.get("deletion_auc"), "rescored": again[method]["deletion_auc"],
                         "best_trivial_measured": measured.get("best_trivial_deletion_auc"), "best_trivial": best})
    return rows


def largest_difference(rows: Sequence[Dict]) -> Optional[float]:
    """The largest difference between a recorded figure and the same figure scored again (None when
    no row recorded one)."""
    gaps = [abs(r[a] - r[b]) for r in rows for a, b in (("measured", "rescored"), ("best_trivial_measured",
                                                                                     "best_trivial"))
            if r[a] is not None]
    return max(gaps) if gaps else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xaiseg.kept_maps",
                                description="Score the maps kept by xaiseg bench faithfulness --keep-maps again "
                                            "with LiteMedSAM, beside the figures the bench recorded; exit status 1 "
                                            f"when one differs by more than {TOLERANCE:g}.")
    p.add_argument("folder", help="the --keep-maps folder")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--method", help="run this method again on each kept slice with its recorded settings, changed "
                                    "by --set, and score the new map beside the recorded one")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="with --method: a setting of the method to change (its settings' names, such as smooth=1.0 "
                        "for occlusion); repeat for several")
    p.add_argument("--fresh", action="store_true",
                   help="with --method: start from the bench's default settings of the method (its seed and "
                        "curves from the kept files) instead of the recorded ones, on every kept slice, also where "
                        "the folder kept no map of it (such as --method rise on a folder that kept occlusion)")
    args = p.parse_args(argv)
    try:
        if args.threads is not None and args.threads < 1:
            raise InputError(f"--threads {args.threads}: expected 1 or more")
        if args.set and not args.method:
            raise InputError(f"--set {args.set[0]}: expected --method too (the method whose setting changes)")
        if args.fresh and not args.method:
            raise InputError("--fresh: expected --method too (the method to run with the bench's settings)")
        changes = parse_changes(args.set)
        if args.threads:
            import torch

            torch.set_num_threads(int(args.threads))
        if args.method:
            return _print_changed(Path(args.folder), args.method, changes, fresh=args.fresh)
        rows = check(Path(args.folder))
    except XAISegError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['structure']} {r['slice']} {r['method']}: deletion AUC recorded {_number(r['measured'], 6)}, "
              f"scored again {r['rescored']:.6f}; best trivial map {r['best_trivial']:.6f}")
    gap = largest_difference(rows)
    print(f"{len(rows)} maps; largest difference from the recorded figures: {'-' if gap is None else f'{gap:.2e}'}")
    return 1 if gap is not None and gap > TOLERANCE else 0


def _print_changed(folder: Path, method: str, changes: Mapping[str, str], model=None, fresh: bool = False) -> int:
    what = ", ".join(f"{k}={v}" for k, v in changes.items())
    what = ("the bench's settings" + (f" and {what}" if what else "")) if fresh else (what or "the recorded settings")

    def show(r: Dict) -> None:
        spearman = "" if r["spearman_changed"] is None else (
            f"; Spearman with slice {r['slice'] - 1} {_number(r['spearman_recorded'], 4)} recorded, "
            f"{r['spearman_changed']:.4f} with {what}")
        # RISE's split-half reliability when it stopped (its early stop's bar is 0.9)
        reliability = "" if r.get("reliability") is None else f", split-half reliability {r['reliability']:.2f}"
        print(f"{r['structure']} {r['slice']} {method}: deletion AUC recorded {_number(r['recorded'], 6)}, with "
              f"{what} {r['changed']:.6f} (insertion {r['insertion']:.4f}, {r['passes']} passes{reliability}); "
              f"best trivial map {_number(r['best_trivial'], 6)}{spearman}", flush=True)

    rows = changed_rows(folder, method, changes, model, report=show, fresh=fresh)
    n, recorded = len(rows), sum(1 for r in rows if r["recorded"] is not None)

    def mean(key: str) -> str:
        vals = [r[key] for r in rows if r[key] is not None]
        return f"{sum(vals) / len(vals):.4f}" if vals else "-"

    print(f"{n} slices: beats every trivial map on {wins(rows, 'recorded')} of the {recorded} recorded, "
          f"{wins(rows, 'changed')} of {n} with {what}; mean deletion AUC {mean('recorded')} recorded (of "
          f"{recorded}), {mean('changed')} with {what}, {mean('best_trivial')} the best trivial map; mean insertion AUC "
          f"{mean('insertion')} with {what}; adjacent-slice Spearman {mean('spearman_recorded')} recorded, "
          f"{mean('spearman_changed')} with {what}")
    return 0


def _number(value: Optional[float], digits: int) -> str:
    """``value`` to ``digits`` decimals, or '-' when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    raise SystemExit(main())
