"""``xaiseg bench faithfulness``: are the maps better than trivial ones, steady through the volume,
and tied to the trained model?  On the MNI152 template with Harvard-Oxford structures.

For each structure (a tight box per axial slice from the atlas), pairs of adjacent slices spread
through the structure are explained with occlusion, RISE and the fused layer map, each measured
against the trivial maps (blurred mask, box centre, random) on the same engine and ROI.  Reported
per method and structure: deletion and insertion AUC, the gain over the best trivial map, the share
of slices where the method beats all three, the adjacent-slice Spearman, the share of slices with
evidence above the noise.  The ``cascade`` part gives the cascading-randomisation similarities of
every method on one slice, the ``cascade_slices`` part those of the layer maps on every explained
slice, and the ``fills`` part compares zero, blur and inpainted patches for occlusion (orientation
is measured by :mod:`xaiseg.bench_orientation`).

Every figure of a run comes from one process and one machine; the machine is recorded.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError
from .io import write_tables
from .metrics import mean_of

METHODS = ("occlusion", "rise", "layers")
#: the bench's parts: the maps and their curves, the cascade on one slice, the cascade of the cheap
#: methods on every slice the maps part explains, occlusion's patch fills
PARTS = ("maps", "cascade", "cascade_slices", "fills")
GOALS = {"beats_trivial_share": 0.8, "adjacent_spearman": 0.7, "randomised_similarity": 0.3}


#: the stop at which each method's map last changed: rows recorded with another version are not
#: resumed, a ``--methods`` run refuses to keep them beside fresh rows, and the cascade, cascade_slices and
#: fills parts are kept from an earlier run only when current, so a table never mixes maps of an older engine
#: unknowingly (stop 24 smoothed occlusion's map; an earlier table's rows would have been resumed;
#: stop 27 scored its structure-sized patches by restore, stop 40 both ways; stop 42 fused the layer
#: maps past the encoder's stem; stop 45 made occlusion's patches strips along the structure)
MAP_VERSIONS = {"occlusion": 45, "rise": 28, "layers": 42}
#: the layer maps' version from which they fuse the layers past the encoder's stem (all 18 before)
LAYERS_DEEP_SINCE = 42
#: occlusion's version from which its structure-sized patches are strips along the structure (squares before)
OCCLUSION_STRIPS_SINCE = 45
#: the stop at which a method's early stop (where it ends a run, so which map a row holds) last
#: changed, recorded in the maps rows as ``<method>_stop``: stop 31 stops RISE on its split-half
#: reliability.  The cascade (at most ``CASCADE_MASKS`` masks, which no early stop cuts short) does
#: not depend on it, so its rows stay current.
STOP_VERSIONS = {"rise": 31}
#: the ``fills`` part measures occlusion's square patches (``--occlusion-aspect 1``) scored by removal
#: (``--occlusion-mode remove``), whose map last changed at stop 24; until stop 27 that was occlusion's
#: only map, recorded as "occlusion"
FILLS_VERSION = 24
#: the stop from which occlusion's own version is no longer its removal map's
SCORING_SPLIT = 27


def fills_current(versions: Optional[Dict[str, int]]) -> bool:
    """Whether a ``fills`` part recorded with ``versions`` measured the current removal map."""
    versions = versions or {}
    legacy = versions.get("occlusion") if versions.get("occlusion", SCORING_SPLIT) < SCORING_SPLIT else None
    return versions.get("occlusion_remove", legacy) == FILLS_VERSION


def row_versions(methods: Sequence[str]) -> Dict[str, int]:
    """What a maps row of ``methods`` records: each map's version and, where it has one, its early
    stop's (``<method>_stop``)."""
    out = {m: MAP_VERSIONS[m] for m in methods}
    out.update({f"{m}_stop": STOP_VERSIONS[m] for m in methods if m in STOP_VERSIONS})
    return out


def current(versions: Optional[Dict[str, int]], methods: Sequence[str] = METHODS, rows: bool = True) -> bool:
    """Whether rows recorded with ``versions`` are the current engine's for ``methods``: maps rows
    (``rows``) by :func:`row_versions`, the cascade's by the maps' versions alone."""
    versions = versions or {}
    want = row_versions(methods) if rows else {m: MAP_VERSIONS[m] for m in methods}
    return all(versions.get(k) == v for k, v in want.items())


#: how the pairs are taken: spread through the inside of the structure, as the structure bench
#: samples (stop 23; before, one pair was the structure's first two slices, where it is a speck);
#: recorded with the results, which are not resumed across samplings
SAMPLING = "middle"
#: the samplings a run may ask for (``--sampling``): ``middle`` (:data:`SAMPLING`, the goal table's), or
#: ``between``, the pairs halfway between the middle sampling's pairs and the inside's ends, which it
#: never explains: slices held out from every figure a setting was chosen on (stop 47)
SAMPLINGS = (SAMPLING, "between")


def check_sampling(sampling: str, pairs: Optional[int]) -> None:
    """Refuse an unknown ``sampling``, or 'between' with every slice (``pairs`` None) asked."""
    if sampling not in SAMPLINGS:
        raise InputError(f"faithfulness sampling {sampling!r}: expected one of {', '.join(SAMPLINGS)}")
    if sampling != SAMPLING and pairs is None:
        raise InputError(f"faithfulness sampling {sampling} takes pairs between the middle sampling's; expected "
                         "a number of pairs (--pairs N, N >= 1), not every slice (--pairs 0)")


def adjacent_pairs(slices: Sequence[int], pairs: Optional[int], sampling: str = SAMPLING) -> List[int]:
    """``pairs`` pairs (k, k+1) spread through the inside of ``slices`` (all slices when ``pairs`` is
    None): their first slices as :func:`xaiseg.bench_structure.sample_slices` takes them (a single
    pair is the middle one), or, where that inside holds fewer distinct pairs than asked, at the
    quantiles (i + 1/2) / n of all the pairs there are.  ``sampling`` 'between': up to ``pairs + 1``
    pairs sharing no slice with the middle sampling of ``pairs``, each the one nearest to a place halfway
    between its pairs and the inside's ends (the ``2 * pairs + 1`` sampling's places that the middle one
    does not take; one pair asked: a quarter and three quarters of the inside); fewer where the structure
    holds fewer such pairs, none where it holds none."""
    from .bench_structure import sample_slices

    check_sampling(sampling, pairs)
    ks = sorted(slices)
    if pairs is None:
        return ks
    known = set(ks)
    starts = [k for k in ks if k + 1 in known]
    if sampling != SAMPLING:
        taken = set(adjacent_pairs(ks, pairs))
        out: List[int] = []
        for j in range(0, 2 * pairs + 1, 2):  # the places the middle sampling does not take
            free = [s for s in starts if not {s, s + 1} & taken]
            if not free:
                break
            place = starts[int(round((j + 1) * (len(starts) - 1) / (2 * pairs + 2)))]
            s = min(free, key=lambda k: (abs(k - place), k))
            out += [s, s + 1]
            taken.update((s, s + 1))
        return sorted(out)
    if not starts:
        return ks[:1]
    n = min(pairs, len(starts))
    chosen = sample_slices(starts, n)
    if len(chosen) < n:
        chosen = [starts[int((i + 0.5) * len(starts) / n)] for i in range(n)]
    return sorted({k for s in chosen for k in (s, s + 1)})


#: the most RISE masks a slice of the bench draws unless told otherwise (``--masks``)
DEFAULT_MASKS = 300


def _explainers(masks: int, cascade: bool = False, fill: str = "auto", only: Sequence[str] = METHODS,
                metric_fill: str = "inpaint", occlusion: Optional[Mapping[str, Any]] = None, seed: int = 0,
                rise: Optional[Mapping[str, Any]] = None, curves: bool = True):
    """The bench's explainers of ``only``; ``occlusion``: occlusion's own settings (its defaults when
    None); ``curves`` False: without the curves and trivial maps (the cascade alone needs neither)."""
    from .explain import make_explainer

    # the seed of every draw: RISE's masks, the random trivial map
    common = dict(baselines=curves, metric_steps=8 if curves else 0, fill=fill, cascade=cascade,
                  metric_fill=metric_fill, seed=seed, cascade_draws=CASCADE_DRAWS if cascade else 1)
    # layers too: curves and trivial maps
    per = {"occlusion": dict(occlusion or {}), "rise": dict(rise or {}, n_masks=masks), "layers": {}}
    return [make_explainer(m, **dict(common, **per[m])) for m in only]


def rise_variant(value: Union[None, str, Mapping[str, Any]]) -> Dict[str, Any]:
    """RISE's own settings for a faithfulness run (``--rise KEY=VALUE,...``, field names of
    :class:`~xaiseg.explain.rise.RiseSettings`), typed and checked, those at their defaults left
    out (so the default table's are ``{}``).  Not the masks (``--masks``), the seed (``--seed``),
    the curves or the fill, which the bench sets for every method, nor the side each structure sets."""
    import dataclasses

    from .explain import make_explainer
    from .explain.base import CommonSettings
    from .explain.rise import RiseSettings

    if not value:
        return {}
    if isinstance(value, str):
        pairs = {}
        for item in (v.strip() for v in value.split(",")):
            key, eq, text = item.partition("=")
            if not eq or not key.strip() or not text.strip():
                raise InputError(f"--rise {item!r}: expected KEY=VALUE, such as strata=5 or p=0.25")
            if key.strip() in pairs:
                raise InputError(f"--rise {value!r} sets {key.strip()} twice; expected each setting once")
            pairs[key.strip()] = text.strip()
    else:
        pairs = dict(value)
    common = {f.name for f in dataclasses.fields(CommonSettings)}
    allowed = sorted(f.name for f in dataclasses.fields(RiseSettings) if f.name not in common | {"n_masks", "side"})
    odd = [k for k in pairs if k not in allowed]
    if odd:
        raise InputError(f"--rise {', '.join(odd)}: expected RISE's own settings, some of {', '.join(allowed)} (the "
                         "bench sets the masks with --masks and the seed with --seed)")
    rise = make_explainer("rise", **pairs)  # typed and checked as any run's
    default = make_explainer("rise")
    return {k: getattr(rise, k) for k in pairs if getattr(rise, k) != getattr(default, k)}


def _variant_text(rise: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(rise.items())) or "its defaults"


def sampled_slices(truth: np.ndarray, axis: int, name: str, pairs: Optional[int], sampling: str = SAMPLING) -> List[int]:
    """The slices of structure ``name`` (its atlas mask ``truth``, slices along ``axis``) that
    :func:`adjacent_pairs` samples; refused where the 'between' sampling finds no free pair."""
    atlas_slices = [int(k) for k in np.nonzero(truth.any(axis=tuple(a for a in range(3) if a != axis)))[0]]
    slices = adjacent_pairs(atlas_slices, pairs, sampling)
    if not slices:
        raise InputError(f"faithfulness sampling {sampling} of {name}: its {len(atlas_slices)} slices hold no pair "
                         f"of adjacent slices outside the middle sampling's {pairs} pair(s); expected a larger "
                         "structure, or fewer --pairs")
    return slices


def pair_segmentation(session, sample, name: str, pairs: Optional[int], progress, sampling: str = SAMPLING):
    """The structure's sampled slices (:func:`adjacent_pairs` of the atlas's slices), each
    segmented from a tight atlas box, and those of them where the model drew a mask."""
    from .volume import LabelBoxPrompt, plane_index

    truth = sample.mask(name)
    axis = session.axis
    slices = sampled_slices(truth, axis, name, pairs, sampling)
    boxes = np.zeros(truth.shape, np.uint8)  # only the explained slices are segmented (tight atlas boxes)
    for k in slices:
        boxes[plane_index(axis, k)] = truth[plane_index(axis, k)]
    seg = session.segment(LabelBoxPrompt(boxes, 1), name=name, progress=progress)
    return seg, [k for k in slices if any(r.index == k and r.voxels for r in seg.slices)]


def structure_rows(session, sample, name: str, pairs: Optional[int], masks: int, progress,
                   metric_fill: str = "inpaint", methods: Sequence[str] = METHODS, keep: Optional[Path] = None,
                   seed: int = 0, rise: Optional[Mapping[str, Any]] = None, sampling: str = SAMPLING) -> Dict:
    """Explain one structure's sampled slices (``pairs`` and ``sampling``, :func:`adjacent_pairs`) with
    ``methods``; the per-method figures and per-slice rows.  ``keep``: a folder where each explained slice's
    maps are kept (:mod:`xaiseg.kept_maps`)."""
    truth = sample.mask(name)
    seg, slices = pair_segmentation(session, sample, name, pairs, progress, sampling)
    t0 = time.perf_counter()
    explainers = _explainers(masks, metric_fill=metric_fill, only=methods, seed=seed, rise=rise)
    run = session.explain(seg, explainers, slices=slices, target=truth, progress=progress)
    seconds = time.perf_counter() - t0
    doc = run.metrics()
    versions = row_versions(methods)
    if keep is not None:
        from .kept_maps import keep_slices

        keep_slices(keep, name, session, seg, run, explainers, versions, doc)
    out = {"slices": slices, "seconds": round(seconds, 1), "methods": {}, "versions": versions}
    for method, entry in doc["methods"].items():
        rows = entry["slices"]
        s = entry["summary"]
        out["methods"][method] = {
            "deletion_auc": s.get("deletion_auc"), "insertion_auc": s.get("insertion_auc"),
            "best_trivial_deletion_auc": s.get("best_trivial_deletion_auc"),
            "deletion_gain": s.get("deletion_gain"), "insertion_gain": s.get("insertion_gain"),
            "beats_trivial_share": s.get("beats_trivial_deletion"), "evidence_share": s.get("evidence"),
            "adjacent_spearman": s.get("adjacent_spearman"), "evaluations": s.get("evaluations"),
            "per_slice": {k: {x: v.get(x) for x in ("deletion_auc", "insertion_auc", "best_trivial_deletion_auc",
                                                      "beats_trivial_deletion", "evidence", "evaluations",
                                                      "patch_px", "cells", "stopped_at", "reliability",
                                                      "masks_for_reliability", "kept_without_roi",
                                                      "deletion_curve")}
                          for k, v in rows.items()},
            "trivial": {k: v.get("trivial") for k, v in rows.items()}}
    return out


def cascade_slice(session, sample, name: str, progress) -> Tuple[Any, int]:
    """The structure's segmentation (a tight box per slice) and its central slice, where the cascade runs."""
    from .volume import LabelBoxPrompt

    truth = sample.mask(name)
    seg = session.segment(LabelBoxPrompt(truth.astype(np.uint8), 1), name=name, progress=progress)
    ks = [r.index for r in seg.slices if r.voxels > 0]
    return seg, ks[len(ks) // 2]


def cascade_rows(session, sample, name: str, masks: int, methods: Sequence[str], progress, seed: int = 0,
                 rise: Optional[Mapping[str, Any]] = None, at: Optional[Tuple[Any, int]] = None) -> Dict:
    """Cascading randomisation on the structure's central slice (``at``: :func:`cascade_slice`'s answer,
    when already known), for ``methods``, its last step drawn :data:`CASCADE_DRAWS` times."""
    seg, k = at or cascade_slice(session, sample, name, progress)
    run = session.explain(seg, _explainers(masks, cascade=True, only=methods, seed=seed, rise=rise), slices=[k],
                          progress=progress)
    return {"slice": k, "draws": CASCADE_DRAWS,
            "methods": {m: e["slices"][str(k)].get("cascade") for m, e in run.metrics()["methods"].items()}}


#: occlusion's patch fills the ``fills`` part compares, on every structure (square patches scored by removal)
FILLS_COMPARED = ("zero", "blur", "inpaint")
#: occlusion's settings in the ``fills`` part (:data:`FILLS_VERSION`)
FILLS_OCCLUSION = {"mode": "remove", "aspect": 1.0}


def fill_rows(session, sample, name: str, progress, metric_fill: str = "inpaint", seed: int = 0) -> Dict:
    """Occlusion's deletion AUC and gain with each of :data:`FILLS_COMPARED` for its patches, on one
    adjacent pair; the curves remove pixels the same way (``metric_fill``) for all."""
    from .volume import LabelBoxPrompt

    truth = sample.mask(name)
    seg = session.segment(LabelBoxPrompt(truth.astype(np.uint8), 1), name=name, progress=progress)
    slices = adjacent_pairs([r.index for r in seg.slices if r.voxels > 0], 1)
    out = {}
    for fill in FILLS_COMPARED:
        # square patches scored by removal: restore inpaints the ROI whatever the fill
        run = session.explain(seg, _explainers(100, fill=fill, only=("occlusion",), metric_fill=metric_fill,
                                               occlusion=FILLS_OCCLUSION, seed=seed), slices=slices, progress=progress)
        s = run.metrics()["methods"]["occlusion"]["summary"]
        out[fill] = {k: s.get(k) for k in ("deletion_auc", "insertion_auc", "deletion_gain", "beats_trivial_deletion")}
    return out


def fill_summary(fills: Dict[str, Dict]) -> Dict[str, Dict]:
    """Per patch fill over the structures of the ``fills`` part: the mean deletion AUC, on how many
    structures it had the lowest, and the mean share of slices beating all trivial maps."""
    out = {}
    for fill in FILLS_COMPARED:
        measured = [entry for entry in fills.values() if entry.get(fill, {}).get("deletion_auc") is not None]
        lowest = sum(1 for entry in measured if entry[fill]["deletion_auc"] <= min(
            v["deletion_auc"] for v in entry.values() if v.get("deletion_auc") is not None))
        out[fill] = {"deletion_auc": mean_of([entry[fill]["deletion_auc"] for entry in measured]),
                     "lowest": lowest,
                     "beats_trivial_deletion": mean_of([entry[fill].get("beats_trivial_deletion") for entry in measured])}
    return out


#: the cascade's RISE masks: at most this many whatever ``masks`` is
CASCADE_MASKS = 100
#: how many times the cascade's last step (the whole model re-drawn) is drawn, each with its own seed:
#: one draw is one sample (the layer maps' similarity, all 18 layers fused, ranged from -0.08 to 0.40
#: over five on one slice, stop 41); a cascade row of another number (older rows: one) is not kept as current
CASCADE_DRAWS = 5


def cascade_draws(entry: Mapping[str, Any]) -> int:
    """How many times a cascade row's last step was drawn (rows before stop 41 record none: once)."""
    return int(entry.get("draws", 1))


#: the methods whose cascade the ``cascade_slices`` part runs on every slice the maps part explains: the layer
#: maps, each step an encoder pass (occlusion's and RISE's steps cost their passes each: one slice's
#: cascade of all three took 50 minutes here, stop 41)
SLICE_CASCADE_METHODS = ("layers",)


def slice_cascade_rows(session, sample, name: str, pairs: Optional[int], progress, methods: Sequence[str] =
                       SLICE_CASCADE_METHODS, seed: int = 0, masks: int = CASCADE_MASKS,
                       rise: Optional[Mapping[str, Any]] = None, sampling: str = SAMPLING) -> Dict:
    """The cascade of ``methods``, its last step drawn :data:`CASCADE_DRAWS` times, on every slice
    the maps part explains (:func:`pair_segmentation`), without curves.  Each draw re-draws the model
    with the same seed on every slice, so draw d is one random model seen through all the slices."""
    seg, slices = pair_segmentation(session, sample, name, pairs, progress, sampling)
    t0 = time.perf_counter()
    run = session.explain(seg, _explainers(masks, cascade=True, only=methods, seed=seed, rise=rise, curves=False),
                          slices=slices, progress=progress)
    doc = run.metrics()
    return {"slices": slices, "draws": CASCADE_DRAWS, "seconds": round(time.perf_counter() - t0, 1),
            "methods": {m: {str(k): e["slices"][str(k)].get("cascade") for k in slices}
                        for m, e in doc["methods"].items()}}


def slice_cascade_summary(rows: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per method over every slice of the ``cascade_slices`` part: each step's mean similarity, and of the last
    step (the whole model re-drawn) the slices whose mean of draws reaches the goal's bar, the draws
    that do, and the lowest and highest draw."""
    bar = GOALS["randomised_similarity"]
    out: Dict[str, Dict[str, Any]] = {}
    for entry in rows.values():
        for method, per in entry["methods"].items():
            for steps in per.values():
                if not steps:
                    continue
                acc = out.setdefault(method, {"parts": [s["redrawn"] for s in steps], "steps": [], "draws": []})
                if [s["redrawn"] for s in steps] != acc["parts"]:
                    raise InputError(f"cascade_slices rows of {method} re-draw "
                                     f"{', '.join(s['redrawn'] for s in steps)} on one slice and "
                                     f"{', '.join(acc['parts'])} on another; expected one model's steps")
                acc["steps"].append([s["similarity"] for s in steps])
                acc["draws"].extend(steps[-1].get("draws") or [steps[-1]["similarity"]])
    for acc in out.values():
        steps, draws = np.asarray(acc.pop("steps"), float), acc.pop("draws")
        acc.update(slices=len(steps), mean=[round(float(v), 4) for v in steps.mean(axis=0)],
                   slices_at_bar=int(np.sum(steps[:, -1] >= bar)), draws=len(draws),
                   draws_at_bar=int(sum(v >= bar for v in draws)), lowest=min(draws), highest=max(draws))
    return out


#: what a table was measured with, and what a key an older table lacks reads as (the bench's default
#: then); tables merged into one must agree on all of it
TABLE_SETTINGS = {"pairs": None, "masks": None, "metric_fill": "zero", "sampling": "first", "machine": None, "seed": 0,
                  "rise": {}}


def table_setting(table: Dict, key: str):
    return table.get(key, TABLE_SETTINGS[key])


def _same_masks(previous: Dict, masks: int, structures: Sequence[str], methods: Sequence[str],
                parts: Sequence[str] = ("maps",)) -> bool:
    """Whether a run with ``masks`` may keep rows of ``previous``: the same masks, or a run of the maps
    part that measures RISE again (masks touch only its rows) on every structure the table holds, with
    the cascade's masks unchanged (so that no row is left labelled with masks it was not measured with)."""
    before = previous.get("masks")
    if before == masks:
        return True
    subset = set(methods) != set(METHODS)
    return (subset and "rise" in methods and "maps" in parts and isinstance(before, int)
            and set(previous.get("maps") or {}) <= set(structures)
            and min(before, CASCADE_MASKS) == min(masks, CASCADE_MASKS))


def rise_masks(result: Dict) -> Dict[str, Optional[int]]:
    """The masks each structure's RISE rows were measured with: its last re-measure of RISE that
    recorded them, else the table's (a re-run interrupted part way leaves both kinds in one table)."""
    out: Dict[str, Optional[int]] = {}
    for name, entry in (result.get("maps") or {}).items():
        runs = [r for r in entry.get("remeasured") or [] if "rise" in r.get("methods", ()) and "masks" in r]
        out[name] = runs[-1]["masks"] if runs else result.get("masks")
    return out


def _held(entry: Mapping[str, Any], methods: Sequence[str]) -> List[str]:
    """Those of ``methods`` whose rows a table's maps ``entry`` holds: the methods it has rows of or its
    versions record (a table begun with a ``--methods`` subset holds those alone), all of them where it
    records no versions."""
    versions = entry.get("versions")
    if not versions:
        return list(methods)
    return [m for m in methods if m in versions or m in (entry.get("methods") or {})]


def bench_faithfulness(outdir: Path, quick: bool = False, device: str = "cpu",
                       structures: Optional[Sequence[str]] = None, pairs: Optional[int] = 1, masks: int = DEFAULT_MASKS,
                       parts: Sequence[str] = PARTS, metric_fill: str = "inpaint",
                       methods: Sequence[str] = METHODS, keep_maps: Optional[Path] = None, seed: int = 0,
                       rise: Union[None, str, Mapping[str, Any]] = None, sampling: str = SAMPLING) -> Dict:
    """``methods``: what the maps part measures; a subset measures only those methods again and
    replaces their rows in the tables already written with the same pairs, masks and curves (the
    other methods' rows stay; each re-measured structure records which methods, when and where), and
    the cascade part draws only their steps again where the table holds the other methods' current
    cascade row.
    ``keep_maps``: a folder where the maps part keeps every slice it explains (:mod:`xaiseg.kept_maps`);
    a structure resumed from the table is not explained, so keeps nothing.  ``seed``: of every random
    draw (RISE's masks, the random trivial map); a table keeps only rows of its own seed.  ``rise``: RISE's
    own settings (:func:`rise_variant`; its defaults when None), to measure a variant of it with the
    bench itself; a table keeps only rows of its own.  ``sampling``: which pairs (:func:`adjacent_pairs`;
    'between' holds out every slice of the goal table's middle sampling); a table keeps only rows of its
    own.  In a folder with no table yet, a ``methods`` subset writes a table of those methods alone."""
    from .bench_explain import machine
    from .models.litemedsam import LiteMedSAM
    from .pipeline import SegmentConfig, Session
    from .progress import TqdmProgress
    from .sample_data import DEMO_STRUCTURES, load_mni_atlas

    structures = tuple(structures or (DEMO_STRUCTURES[:1] if quick else DEMO_STRUCTURES))
    if not parts or set(parts) - set(PARTS):
        raise InputError(f"faithfulness parts {','.join(sorted(set(parts) - set(PARTS))) or '(none)'}: expected some "
                         f"of {','.join(PARTS)}")
    rise = rise_variant(rise)
    check_sampling(sampling, pairs)
    central = sorted(set(parts) & {"cascade", "fills"})
    if sampling != SAMPLING and central:
        raise InputError(f"faithfulness sampling {sampling} with --parts {','.join(central)}: those parts measure "
                         "the structure's middle slices whatever the sampling; expected --parts maps or "
                         "cascade_slices with it")
    if rise and not (("maps" in parts and "rise" in methods) or "cascade" in parts):
        raise InputError(f"--rise {_variant_text(rise)} with --parts {','.join(parts)} and --methods "
                         f"{','.join(methods)}: this run measures no RISE map; expected the maps part with rise "
                         "among the methods, or the cascade part")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise InputError(f"faithfulness methods {','.join(unknown) or '(none)'}: expected some of {','.join(METHODS)}")
    subset = set(methods) != set(METHODS)
    path = Path(outdir) / "faithfulness.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    same = previous.get("pairs") == pairs and _same_masks(previous, masks, structures, methods, parts) and \
        table_setting(previous, "metric_fill") == metric_fill and table_setting(previous, "sampling") == sampling and \
        table_setting(previous, "seed") == seed and table_setting(previous, "rise") == rise
    done = (previous.get("maps") or {}) if same else {}  # structures measured with the same settings
    if "maps" in parts and subset and previous and not all(name in done for name in structures):
        held = (f"it holds {', '.join(previous.get('maps') or {}) or 'none'} measured with pairs "
                f"{previous.get('pairs')} ({table_setting(previous, 'sampling')}), masks {previous.get('masks')}, "
                f"curves {table_setting(previous, 'metric_fill')}, seed {table_setting(previous, 'seed')} and RISE "
                f"{_variant_text(table_setting(previous, 'rise'))}")  # a folder with no table is not refused
        raise InputError(f"faithfulness methods {','.join(methods)} replace rows of {path}; {held}; expected every "
                         f"structure of this run ({', '.join(structures)}) there with this run's pairs {pairs} "
                         f"({sampling}), masks {masks}, curves {metric_fill}, seed {seed} and RISE {_variant_text(rise)} "
                         "(other masks only when RISE is "
                         f"measured again on every structure there, the cascade's {CASCADE_MASKS} unchanged): "
                         "run all methods, or these in a folder with no table")
    kept = [m for m in METHODS if m not in methods]  # the rows a --methods run keeps
    stale = [name for name in structures if name in done and not current(done[name].get("versions"),
                                                                           _held(done[name], kept))]
    if "maps" in parts and subset and stale:
        raise InputError(f"faithfulness methods {','.join(methods)} would keep rows of {','.join(kept)} in {path} "
                         f"made by another engine ({', '.join(stale)}: map versions "
                         f"{done[stale[0]].get('versions') or 'unrecorded'}, now {row_versions(METHODS)}); expected rows of "
                         "the current engine: run all methods")
    if not subset:  # a resumed structure must be the current engine's for every method, RISE's masks these
        measured = rise_masks(previous)
        done = {name: entry for name, entry in done.items()
                if current(entry.get("versions")) and measured[name] == masks}
    result: Dict = {"machine": machine(device), "structures": list(structures), "pairs": pairs, "masks": masks,
                    "metric_fill": metric_fill, "sampling": sampling, "seed": seed, "rise": rise, "goals": GOALS,
                    "parts": list(parts)}
    # parts already measured with the same settings stay (each part records its machine); others go,
    # so the table never labels rows with settings they were not measured with
    if same:
        result.update({k: v for k, v in previous.items() if k in PARTS and k not in parts})
        for part, fresh in (("cascade", lambda v: current(v, METHODS, rows=False)),
                            ("cascade_slices", lambda v: set(v or ()) == set(SLICE_CASCADE_METHODS)
                             and current(v, SLICE_CASCADE_METHODS, rows=False)),
                            ("fills", fills_current)):
            if part in result and (not fresh(previous.get(f"{part}_versions")) or part.startswith("cascade") and any(
                    cascade_draws(entry) != CASCADE_DRAWS for entry in result[part].values())):
                del result[part]  # another engine's (or draws): left out rather than shown as current
            elif part in result:
                result[f"{part}_versions"] = previous[f"{part}_versions"]
    sample = load_mni_atlas(structures)
    session = Session(sample.image, LiteMedSAM(device=device), SegmentConfig())
    for name in structures:  # a structure the sampling cannot take is refused before any is measured
        if "cascade_slices" in parts or "maps" in parts and (subset or name not in done):
            sampled_slices(sample.mask(name), session.axis, name, pairs, sampling)
    progress = TqdmProgress()
    t0 = time.perf_counter()
    if "maps" in parts:  # one structure at a time, saved as it comes; a re-run resumes after the last
        result["maps"] = dict(done) if subset else {}
        if subset and same and previous.get("masks") != masks:
            # RISE measured again with other masks: the table keeps its label until every structure is,
            # so a run stopped part way is not resumed as if measured with the new masks
            result["masks"] = previous.get("masks")
        for name in structures:
            if not subset:
                if name in done and keep_maps is not None:
                    print(f"{name}: resumed from {path}, so no maps kept for it in {keep_maps}")
                result["maps"][name] = done.get(name) or structure_rows(session, sample, name, pairs, masks,
                                                                        progress, metric_fill, keep=keep_maps,
                                                                        seed=seed, rise=rise, sampling=sampling)
            else:
                fresh = structure_rows(session, sample, name, pairs, masks, progress, metric_fill, methods,
                                       keep=keep_maps, seed=seed, rise=rise, sampling=sampling)
                if name not in done:  # a folder with no table: a table of these methods alone
                    result["maps"][name] = fresh
                    _save(outdir, result)
                    continue
                entry = dict(done[name])
                # the table's methods and this run's, in the bench's order (a table begun with a subset grows)
                entry["methods"] = {m: fresh["methods"].get(m, entry["methods"].get(m)) for m in METHODS
                                    if m in fresh["methods"] or m in entry["methods"]}
                entry["versions"] = dict(entry.get("versions") or {}, **fresh["versions"])
                again = [m for m in methods if m in done[name]["methods"]]  # not those added to the table now
                if again:
                    entry["remeasured"] = _remeasured(entry, again, fresh["seconds"], result["machine"], masks=masks)
                result["maps"][name] = entry
            _save(outdir, result)
        if result["masks"] != masks:  # every structure measured again: the table takes the new label
            result["masks"] = masks
            _save(outdir, result)
    if "cascade" in parts:
        name = structures[0]
        # a --methods run draws those methods' cascade again and keeps the others' steps, where the
        # table's row is theirs (the current engine's, drawn as often) on this structure
        held = (previous.get("cascade") or {}).get(name) if same and subset else None
        splice = held is not None and current(previous.get("cascade_versions"), kept, rows=False) and \
            cascade_draws(held) == CASCADE_DRAWS
        at = None
        if splice:  # the slice is known before anything is drawn
            at = cascade_slice(session, sample, name, progress)
            if at[1] != held["slice"]:
                raise InputError(f"faithfulness cascade of {name}: this run's central slice {at[1]} is not "
                                 f"the table's {held['slice']} in {path}; expected one segmentation: run --parts "
                                 "cascade with all methods")
        elif subset:
            print(f"cascade of {name}: {path} holds no row of {', '.join(kept)} to keep (none, another engine's or "
                  f"drawn another number of times), so every method's cascade is drawn")
        t1 = time.perf_counter()
        row = cascade_rows(session, sample, name, min(masks, CASCADE_MASKS), methods if splice else METHODS,
                           progress, seed, rise, at=at)
        if splice:
            row["methods"] = {m: row["methods"].get(m, held["methods"].get(m)) for m in METHODS}
            row["remeasured"] = _remeasured(held, methods, round(time.perf_counter() - t1, 1), result["machine"])
        result["cascade"] = {name: row}
        result["cascade_versions"] = dict(MAP_VERSIONS)
        _save(outdir, result)
    if "cascade_slices" in parts:  # one structure at a time, saved as it comes
        result["cascade_slices"] = {}
        result["cascade_slices_versions"] = {m: MAP_VERSIONS[m] for m in SLICE_CASCADE_METHODS}
        for name in structures:
            result["cascade_slices"][name] = slice_cascade_rows(session, sample, name, pairs, progress, seed=seed,
                                                                masks=min(masks, CASCADE_MASKS), rise=rise,
                                                                sampling=sampling)
            _save(outdir, result)
    if "fills" in parts:
        result["fills"] = {}
        result["fills_versions"] = {"occlusion_remove": FILLS_VERSION}
        for name in structures:
            result["fills"][name] = fill_rows(session, sample, name, progress, metric_fill, seed)
            _save(outdir, result)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    _save(outdir, result)
    text = markdown(result)
    print(text)
    return result


def merge_faithfulness(dirs: Sequence, outdir) -> Dict:
    """``xaiseg bench faithfulness --merge DIR ...``: one table from the runs written into each DIR,
    such as processes that each measured some structures, measuring nothing.  Their settings
    (``TABLE_SETTINGS``) must agree, and so must every structure's map versions and each part's versions
    (a part without them is of another engine); a structure's rows, cascade row or fills held by two
    runs must be the same.  The seconds are the runs' summed; nothing is written when it refuses."""
    tables, seen = [], set()
    for d in dirs:
        path = Path(d) / "faithfulness.json"
        if not path.is_file():
            raise InputError(f"--merge {d}: expected faithfulness.json there (the -o folder of a faithfulness run)")
        if path.resolve() in seen:
            continue  # one folder named twice is one run
        seen.add(path.resolve())
        try:
            tables.append((path, json.loads(path.read_text())))
        except ValueError as exc:
            raise InputError(f"--merge: {path} is not a faithfulness table ({exc}); expected the JSON a run writes") \
                from exc
    if len(tables) < 2:
        raise InputError(f"--merge {' '.join(map(str, dirs))}: expected at least two folders of runs to merge")
    first_path, first = tables[0]
    for path, table in tables[1:]:
        for key in TABLE_SETTINGS:
            if table_setting(table, key) != table_setting(first, key):
                raise InputError(f"--merge: {path} was measured with {key} {table_setting(table, key)!r} and "
                                 f"{first_path} with {table_setting(first, key)!r}; expected the same {key} in "
                                 "every run")
    out: Dict = {key: table_setting(first, key) for key in TABLE_SETTINGS}
    out.update(goals=GOALS, merged=sum(table.get("merged", 1) for _, table in tables),
               seconds=round(sum(table.get("seconds", 0) for _, table in tables), 1))
    missing = object()
    for part in PARTS:
        rows: Dict = {}
        for path, table in tables:
            if not table.get(part):
                continue
            if part != "maps":  # the maps' versions are each structure's, below
                versions = f"{part}_versions"
                if out.setdefault(versions, table.get(versions, missing)) != table.get(versions, missing):
                    raise InputError(f"--merge: {path} holds its {part} with map versions "
                                     f"{table.get(versions, 'unrecorded')} and an earlier folder with "
                                     f"{'unrecorded' if out[versions] is missing else out[versions]}; expected one "
                                     "engine's")
            for name, entry in table[part].items():
                if part.startswith("cascade") and cascade_draws(entry) != CASCADE_DRAWS:  # as a re-run would not keep it
                    raise InputError(f"--merge: {path} holds a {part} row of {name} whose last step was drawn "
                                     f"{cascade_draws(entry)} time(s); expected {CASCADE_DRAWS} (run --parts "
                                     f"{part} again)")
                if rows.setdefault(name, entry) != entry:
                    raise InputError(f"--merge: {path} holds other {part} rows of {name} than an earlier folder; "
                                     "expected each structure measured by one run")
        if rows:
            out[part] = rows
        if out.get(f"{part}_versions") is missing:
            del out[f"{part}_versions"]
    maps = out.get("maps") or {}
    kinds = {name: entry.get("versions") for name, entry in maps.items()}
    held = {name: [m for m in METHODS if m in (entry.get("methods") or {})] for name, entry in maps.items()}
    if len({tuple(v) for v in held.values()}) > 1:  # one run measured other methods than another
        raise InputError("--merge: the structures' maps hold different methods ("
                         + "; ".join(f"{name} {', '.join(v) or 'none recorded'}" for name, v in held.items())
                         + "); expected every run to measure the same methods (--methods)")
    if len({json.dumps(v, sort_keys=True) for v in kinds.values()}) > 1:
        raise InputError("--merge: the structures' maps were made by different engines (map versions "
                         + "; ".join(f"{name} {v or 'unrecorded'}" for name, v in kinds.items())
                         + "); expected one engine's rows")
    out["parts"] = [part for part in PARTS if out.get(part)]
    out["structures"] = list(dict.fromkeys(name for part in PARTS
                                           for name in out.get(part) or {}))
    runs = list(dict.fromkeys(table["runs"] for _, table in tables if table.get("runs")))
    if runs:  # how each run's own parts were run, said once
        out["runs"] = "; ".join(runs)
    _save(Path(outdir), out)
    return out


def _remeasured(held: Dict, methods, seconds: float, machine, **more) -> List[Dict]:
    """``held``'s record of the methods measured again, with this run's appended (which methods, its
    seconds, machine and date, and ``more``)."""
    return list(held.get("remeasured") or []) + [dict({"methods": list(methods), "seconds": seconds, "machine": machine,
                                                       "date": time.strftime("%Y-%m-%d")}, **more)]


def _save(outdir: Path, result: Dict) -> None:
    write_tables(outdir, "faithfulness", markdown(result), result)


def _f(v, nd: int = 3) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, (int, float)) else str(v))


def goal_summary(maps: Dict) -> Dict[str, Dict]:
    """Per method over every measured slice: share beating all trivial maps, mean adjacent Spearman."""
    out = {}
    for method in METHODS:
        beats, rhos, slices = [], [], 0
        for entry in maps.values():
            m = entry["methods"].get(method)
            if not m:
                continue
            for row in m["per_slice"].values():
                if row.get("beats_trivial_deletion") is not None:
                    beats.append(bool(row["beats_trivial_deletion"]))
                slices += 1
            if m.get("adjacent_spearman") is not None:
                rhos.append(m["adjacent_spearman"])
        out[method] = {"slices": slices, "beats_trivial_share": mean_of(beats), "adjacent_spearman": mean_of(rhos)}
    return out


def _masks_text(result: Dict) -> str:
    by = rise_masks(result)
    if set(by.values()) <= {result.get("masks")}:
        return f"{result.get('masks')} masks"
    groups: Dict[Optional[int], List[str]] = {}
    for name, n in by.items():
        groups.setdefault(n, []).append(name)
    return "; ".join(f"{n} masks on {', '.join(names)}" for n, names in groups.items())


def _reliability_lines(maps: Dict) -> List[str]:
    """RISE's split-half reliability over the table's slices, and which structures' RISE rows an
    older early stop ended (rows without ``rise_stop``)."""
    from .explain.rise import RiseSettings

    values = [(v["reliability"], name, k) for name, entry in maps.items()
              for k, v in (((entry.get("methods") or {}).get("rise") or {}).get("per_slice") or {}).items()
              if isinstance(v.get("reliability"), (int, float))]
    old = [name for name, entry in maps.items()
           if "rise" in (entry.get("methods") or {}) and "rise_stop" not in (entry.get("versions") or {})]
    out = []
    if values:
        low = min(values)
        out += ["", f"RISE's split-half reliability (the share of its map's variance over the ROI that a second draw "
                    f"of as many masks would repeat; its early stop needs {RiseSettings().converge}): mean "
                    f"{_f(float(np.mean([v[0] for v in values])), 2)} over {len(values)} slices, lowest "
                    f"{_f(low[0], 2)} ({low[1]} {low[2]}); below 0.7 on "
                    f"{sum(v[0] < 0.7 for v in values)} of {len(values)}."]
    if old:
        out += ["", f"RISE's rows of {', '.join(old)} were ended by the early stop before stop 31 (the map against "
                    "the map 50 masks earlier), and record no reliability."]
    return out


def _slice_cascade_lines(rows: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """The ``cascade_slices`` part: each step's mean over the slices, how many slices and draws of the
    last step reach the goal's bar, then each slice's last step."""
    summary = slice_cascade_summary(rows)
    if not summary:
        return []
    bar = GOALS["randomised_similarity"]
    draws = max(cascade_draws(entry) for entry in rows.values())
    parts = next(iter(summary.values()))["parts"]
    lines = ["", f"Cascading randomisation on every slice the maps part explains ({', '.join(summary)} on "
             f"{', '.join(rows)}; the mean over the slices of "
             "each step's similarity, the last step the mean of its "
             f"{draws} draws on each slice, the same random models on every slice; goal: below {bar} once "
             "everything is re-drawn):", "",
             "| method | slices | " + " | ".join(parts) + f" | slices at {bar} or more | draws at {bar} or more "
             "| lowest - highest draw |", "|" + "---|" * (len(parts) + 5)]
    for method, m in summary.items():
        lines.append(f"| {method} | {m['slices']} | " + " | ".join(_f(v, 2) for v in m["mean"])
                     + f" | {m['slices_at_bar']} of {m['slices']} | {m['draws_at_bar']} of {m['draws']} | "
                     f"{_f(m['lowest'], 2)} - {_f(m['highest'], 2)} |")
    lines += ["", "| structure | slice | method | whole model re-drawn (mean) | each draw |", "|---|---|---|---|---|"]
    for name, entry in rows.items():
        for method, per in entry["methods"].items():
            for k, steps in per.items():
                if steps:
                    lines.append(f"| {name} | {k} | {method} | {_f(steps[-1]['similarity'], 2)} | "
                                 + ", ".join(_f(v, 2) for v in steps[-1].get("draws") or []) + " |")
    return lines


def _versions_of(result: Dict, method: str) -> List[int]:
    """The map versions of ``method`` that the table's maps rows and cascade parts record."""
    versions = [(entry.get("versions") or {}).get(method) for entry in (result.get("maps") or {}).values()]
    versions += [(result.get(f"{part}_versions") or {}).get(method) for part in ("cascade", "cascade_slices")]
    return [v for v in versions if isinstance(v, int)]


def _kind_text(known: Sequence[int], since: int, texts: Tuple[str, str, str, str]) -> str:
    """``texts`` (unknown, all from ``since`` on, all before it, both) for the versions ``known``."""
    if not known:
        return texts[0]
    if min(known) >= since:
        return texts[1]
    return texts[2] if max(known) < since else texts[3]


def _layers_text(result: Dict) -> str:
    """Which fused layer map the table's layer rows hold, from their map versions: the layers past the
    encoder's stem since stop 42, all 18 before."""
    return _kind_text(_versions_of(result, "layers"), LAYERS_DEEP_SINCE, (
        "the fused layer map", "the layer maps fused past the encoder's stem", "the layer maps of all 18 layers fused",
        "the fused layer map (rows of both kinds)"))


def _occlusion_text(result: Dict) -> str:
    """Which occlusion patches the table's occlusion rows hold, from their map versions: strips along the
    structure since stop 45, squares before."""
    return _kind_text(_versions_of(result, "occlusion"), OCCLUSION_STRIPS_SINCE, (
        "occlusion", "occlusion's strips along the structure", "occlusion's squares",
        "occlusion (rows of strips and of squares)"))


def _methods_text(result: Dict, held: Sequence[str]) -> str:
    """The methods of the table's maps (``held``; every method where it holds them all or no maps)."""
    if len(held) == len(METHODS):
        return (f"{_occlusion_text(result)} and RISE at their structure-sized defaults (RISE at most "
                f"{_masks_text(result)}), {_layers_text(result)}")
    words = {"occlusion": f"{_occlusion_text(result)} at its structure-sized default",
             "rise": f"RISE at its structure-sized default (at most {_masks_text(result)})",
             "layers": _layers_text(result)}
    return " and ".join(words[m] for m in held) + " alone"


def markdown(result: Dict) -> str:
    maps = result.get("maps") or {}
    held = [m for m in METHODS if any(m in entry["methods"] for entry in maps.values())] or list(METHODS)
    lines = ["# Faithfulness benchmark: maps against trivial maps, through the volume, and against a re-drawn model",
             "", f"Produced by `xaiseg bench faithfulness` on {result['machine'].get('platform', '?')} "
             f"({result['machine'].get('device', 'cpu')}). LiteMedSAM on MNI152, a tight box per axial slice from "
             "the Harvard-Oxford atlas; "
             + ("every slice with a mask" if result.get("pairs") is None else
                f"up to {result['pairs'] + 1} pairs of adjacent slices per structure, halfway between the "
                f"{result['pairs']} pair(s) of the middle sampling and the ends of the structure's inside, so no "
                "slice of the goal table's sampling (`--sampling between`)" if result.get("sampling") == "between" else
                f"{result.get('pairs')} pair(s) of adjacent slices per structure, "
                + ("each at the middle of its share of the structure's slices" if result.get("sampling") == "middle"
                   else "the first pair at the structure's first slices"))
             + f"; {_methods_text(result, held)}; 8 metric steps, the curves removing pixels by "
             + {"inpaint": "inpainting them from the kept pixels around them"}.get(
                 table_setting(result, "metric_fill"), f"{table_setting(result, 'metric_fill')} fill")
             + "; the trivial maps on the same engine and ROI"
             + (f"; seed {table_setting(result, 'seed')} for every random draw" if table_setting(result, "seed") else "")
             + (f"; RISE with {_variant_text(table_setting(result, 'rise'))} (`--rise`)" if table_setting(result, "rise")
                else "")
             + ".", ""]
    if len(held) < len(METHODS):
        lines += [f"This table holds {', '.join(held)} alone (`--methods` in a folder with no table).", ""]
    if maps:
        lines += ["| structure | method | slices | deletion AUC | best trivial | gain | beats all trivial | "
                  "insertion AUC | adjacent Spearman | evidence | passes/slice |", "|" + "---|" * 11]
        for name, entry in maps.items():
            for method, m in entry["methods"].items():
                ks = sorted(int(k) for k in m["per_slice"])
                lines.append(f"| {name} | {method} | {', '.join(map(str, ks))} | {_f(m['deletion_auc'])} | {_f(m['best_trivial_deletion_auc'])}"
                             f" | {_f(m['deletion_gain'])} | {_f(m['beats_trivial_share'], 2)} | "
                             f"{_f(m['insertion_auc'])} | {_f(m['adjacent_spearman'], 2)} | "
                             f"{_f(m['evidence_share'], 2)} | {_f(m['evaluations'], 0)} |")
        lines += ["", "Goals (issue: occlusion, RISE and layers beat every trivial map's deletion AUC on at least "
                  f"{GOALS['beats_trivial_share']:.0%} of slices; adjacent-slice Spearman at least "
                  f"{GOALS['adjacent_spearman']}):", "", "| method | slices | beats all trivial | goal met | "
                  "adjacent Spearman | goal met |", "|---|---|---|---|---|---|"]
        for method, g in goal_summary(maps).items():
            if not g["slices"]:  # a table of some methods alone (--methods in a folder with no table)
                continue
            b, r = g["beats_trivial_share"], g["adjacent_spearman"]
            lines.append(f"| {method} | {g['slices']} | {_f(b, 2)} | "
                         f"{'yes' if b is not None and b >= GOALS['beats_trivial_share'] else 'no'} | {_f(r, 2)} | "
                         f"{'yes' if r is not None and r >= GOALS['adjacent_spearman'] else 'no'} |")
        lines += _reliability_lines(maps)
        # (method, date) of the last re-run that measured each method of each structure
        again: Dict[Tuple[str, str], List[str]] = {}
        for name, entry in maps.items():
            last = {m: run["date"] for run in entry.get("remeasured") or [] for m in run["methods"]}
            for key in last.items():
                again.setdefault(key, []).append(name)
        if again:
            lines += ["", "Rows measured again on their own (`--methods`; the other methods' rows are from the "
                      "first run): " + "; ".join(f"{m} on {date} ({', '.join(names)})"
                                                for (m, date), names in sorted(again.items())) + "."]
    cascade = result.get("cascade") or {}
    for name, entry in cascade.items():
        draws = cascade_draws(entry)
        lines += ["", f"Cascading randomisation on {name}, slice {entry['slice']} (RISE at most "
                  f"{min(result.get('masks') or CASCADE_MASKS, CASCADE_MASKS)} masks; Spearman of the map with the "
                  "trained model's after re-drawing each part, cumulatively, from the output back; "
                  + (f"the last step, everything re-drawn, drawn {draws} times with their own seeds: the mean of "
                     "the draws, each in the last column; " if draws > 1 else "one draw; ")
                  + f"goal: below {GOALS['randomised_similarity']} once everything is re-drawn):", ""]
        methods = {m: steps for m, steps in entry["methods"].items() if steps}
        if methods:
            parts = [s["redrawn"] for s in next(iter(methods.values()))]
            each = ["each draw"] if draws > 1 else []
            lines += ["| method | " + " | ".join(parts + each) + " |", "|" + "---|" * (len(parts) + len(each) + 1)]
            for m, steps in methods.items():
                cells = [_f(s["similarity"], 2) for s in steps]
                if each:
                    cells.append(", ".join(_f(v, 2) for v in steps[-1].get("draws") or []))
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += _slice_cascade_lines(result.get("cascade_slices") or {})
    fills = result.get("fills") or {}
    if fills:
        versions = result.get("fills_versions") or {}
        older = "" if fills_current(versions) else (
            f"; measured with occlusion's removal map of stop "
            f"{versions.get('occlusion_remove', versions.get('occlusion', '?'))}, not the current one of stop "
            f"{FILLS_VERSION}")
        lines += ["", "What occlusion's square patches are filled with when it scores them by removal "
                  "(`--occlusion-aspect 1 --occlusion-mode remove`; restore inpaints the ROI whatever the fill); one "
                  "adjacent pair per structure; the curves "
                  f"remove pixels the same way for every fill{older}:", "",
                  "| structure | patch fill | deletion AUC | gain over best trivial | beats all trivial | insertion AUC |",
                  "|---|---|---|---|---|---|"]
        for name, entry in fills.items():
            for fill, f in entry.items():
                lines.append(f"| {name} | {fill} | {_f(f.get('deletion_auc'))} | {_f(f.get('deletion_gain'))} | "
                             f"{_f(f.get('beats_trivial_deletion'), 2)} | {_f(f.get('insertion_auc'))} |")
        lines += ["", "| patch fill | mean deletion AUC | structures where it is the lowest | mean beats all trivial |",
                  "|---|---|---|---|"]
        for fill, row in fill_summary(fills).items():
            lines.append(f"| {fill} | {_f(row['deletion_auc'])} | {row['lowest']} of {len(fills)} | "
                         f"{_f(row['beats_trivial_deletion'], 2)} |")
    if result.get("runs"):  # how the parts of a merged table were run
        lines += ["", f"How it was run: {result['runs']}."]
    if result.get("merged"):
        lines += ["", f"Merged from {result['merged']} runs (`xaiseg bench faithfulness --merge`); the total is their "
                  "wall times summed."]
    lines += ["", f"Total {result.get('seconds', 0):.0f} s.", ""]
    return "\n".join(lines)
