"""How far one slice's map can be trusted, in a line a reader takes in while paging through the volume.

:func:`slice_trust` reads what the metrics stage recorded for one method on one slice (its row in
``NAME_metrics.json``) and returns *marks* (codes a viewer can colour or filter by) and a short
text.  The marks, each only where its figure was measured:

* ``prompt_driven``: with every pixel of the ROI removed (the deletion curve's end) the score keeps at
  least :data:`PROMPT_DRIVEN` of its value, so the prompt and the tissue around the ROI draw most of
  the mask and any map of the ROI explains only the rest (``kept_without_roi``, :mod:`.measure`);
* ``no_evidence``: nothing the method removed changed the score by more than the model's own noise;
  the slice is not painted (:mod:`.measure`);
* ``below_trivial``: a trivial map (the blurred mask, a blob at the box centre, a random map)
  removes the mask at least as fast as the method's map on the deletion curve, so the map shows
  little more than where the structure is;
* ``low_reliability`` (RISE): the maps of the two halves of its random masks agree so little that
  much of the map's detail is the draw's noise (split-half reliability below
  :data:`LOW_RELIABILITY`, :mod:`.rise`).  A RISE run that ended at ``--masks`` before its early stop
  also says about how many masks would have reached the stop's reliability (Spearman-Brown);
* ``survives_randomisation``: with the method's randomised part re-drawn (``--sanity``: the mask
  decoder for the perturbation methods, the image encoder for the layer maps, the whole model where
  it has no such part; ``sanity_redrawn`` says which), or the whole model (the last step of
  ``--cascade``), the map keeps a Spearman of at least :data:`RANDOMISED_SIMILAR` with this one, so
  it depends little on those weights (Adebayo et al.'s model-randomisation check).

Every number in the text is copied from the row, rounded as shown; nothing is computed again.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

from ..errors import InputError

#: a RISE map whose split-half reliability (rounded to two decimals) is below this is mostly the
#: draw's noise in its detail
LOW_RELIABILITY = 0.7

#: a slice whose score keeps at least this share with the ROI's image removed is drawn mostly by the
#: prompt (and the tissue around the ROI), not by what a map of the ROI can point at
PROMPT_DRIVEN = 0.75

#: a map that keeps at least this Spearman (rounded to two decimals) with the map of a re-drawn model
#: shows the image more than the model (issue 13's bar for the similarity after the full cascade)
RANDOMISED_SIMILAR = 0.3

#: the trivial maps' names as a reader reads them
TRIVIAL_TITLES = {"blurred_mask": "the blurred mask", "box_centre": "a blob at the box centre",
                  "random": "a random map"}

MARKS = ("prompt_driven", "no_evidence", "below_trivial", "low_reliability", "survives_randomisation")


def _draws_text(row: Mapping[str, Any]) -> str:
    """", mean of N draws" where the cascade's last step was drawn N > 1 times, else nothing."""
    draws = number(row.get("cascade_draws"))
    return f", mean of {int(draws)} draws" if draws is not None and draws > 1 else ""


#: what the sanity check re-drew (``sanity_redrawn`` in a row), as a reader reads it
REDRAWN_TITLES = {"mask_decoder": "the mask decoder", "image_encoder": "the image encoder", "all": "the whole model"}


def number(v: Any) -> Optional[float]:
    """A finite number, or None (booleans, text, NaN and infinities are no figure): how the trust
    marks and the narrative read a figure of the metrics."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def survives_randomisation(value: Any) -> bool:
    """Whether a similarity to a re-drawn model's map (None: not measured) reaches
    :data:`RANDOMISED_SIMILAR`, as the text rounds it."""
    v = number(value)
    return v is not None and round(v, 2) >= RANDOMISED_SIMILAR


def low_reliability(value: Any) -> bool:
    """Whether a split-half reliability (None: not measured) is low, as the report rounds it."""
    v = number(value)
    return v is not None and round(v, 2) < LOW_RELIABILITY


def slice_row(metrics: Mapping[str, Any], method: str, k: int) -> Optional[Dict[str, Any]]:
    """Method ``method``'s row for slice ``k`` in a ``NAME_metrics.json`` document, or None."""
    info = (metrics.get("methods") or {}).get(method) or {}
    slices = info.get("slices") or {}
    row = slices.get(str(int(k)), slices.get(int(k)))
    return dict(row) if isinstance(row, Mapping) else None


def slice_trust(row: Optional[Mapping[str, Any]], method: str, k: int, title: Optional[str] = None) -> Dict[str, Any]:
    """``{"slice", "method", "explained", "marks", "text"}`` for method ``method``'s ``row`` on slice
    ``k`` (None: the slice was not explained by it).  ``title``: the method's name in the text."""
    name = title or method
    out: Dict[str, Any] = {"slice": int(k), "method": method, "explained": row is not None, "marks": []}
    if row is None:
        out["text"] = f"Slice {int(k)}: not explained by {name}."
        return out
    marks: List[str] = out["marks"]
    parts: List[str] = []
    kept = number(row.get("kept_without_roi"))
    if kept is not None and round(kept, 2) >= PROMPT_DRIVEN:
        marks.append("prompt_driven")
        parts.append("the prompt and the tissue around the ROI draw most of this mask (with the ROI's image removed "
                     f"the score keeps {kept:.2f}), so the map explains only the rest")
    signal, noise = number(row.get("signal")), number(row.get("noise_level"))
    sizes = (f" (largest change {signal:.3g}, model noise {noise:.3g})"
             if signal is not None and noise is not None else "")
    if row.get("evidence") is False:
        marks.append("no_evidence")
        parts.append(f"no evidence{sizes}: nothing it removed moved the mask beyond the model's noise; not painted")
    elif row.get("evidence") is True:
        parts.append(f"evidence beyond the model's noise{sizes}")
    auc, best = number(row.get("deletion_auc")), number(row.get("best_trivial_deletion_auc"))
    if auc is not None and best is not None:
        trivial = row.get("trivial") or {}
        winner = min((n for n in trivial if number((trivial[n] or {}).get("deletion_auc")) is not None),
                     key=lambda n: float(trivial[n]["deletion_auc"]), default=None)
        # the run's verdict (taken on unrounded figures); four decimals where three would read as a tie
        nd = 4 if f"{auc:.3f}" == f"{best:.3f}" and auc != best else 3
        against = f"{TRIVIAL_TITLES.get(winner, winner)} {best:.{nd}f}" if winner else f"best trivial map {best:.{nd}f}"
        beats = row.get("beats_trivial_deletion")
        beats = bool(beats) if isinstance(beats, bool) else auc < best
        if beats:
            parts.append(f"deletion AUC {auc:.{nd}f} beats every trivial map (best: {against})")
        else:
            marks.append("below_trivial")
            parts.append(f"deletion AUC {auc:.{nd}f} does not beat {against}: the map shows little more than "
                         "where the structure is")
    elif auc is not None:
        parts.append(f"deletion AUC {auc:.3f}, not compared with the trivial maps (turn on baselines)")
    rel = number(row.get("reliability"))
    if rel is not None:
        text = f"split-half reliability {rel:.2f}"
        need, used = number(row.get("masks_for_reliability")), number(row.get("stopped_at"))
        if need is not None and used is not None and need > used:  # --masks ended it before its early stop
            text += f" after {int(used)} masks (about {int(need)} would reach the early stop's bar)"
        if low_reliability(rel):
            marks.append("low_reliability")
            text += ", low: much of its detail is the random masks' noise"
        parts.append(text)
    whole = REDRAWN_TITLES["all"]
    part = REDRAWN_TITLES.get(row.get("sanity_redrawn"), "part of the model")
    checks = [(f"{part} re-drawn (sanity check)", row.get("sanity_similarity"), part),
              (f"{whole} re-drawn (cascade{_draws_text(row)})", row.get("cascade_final_similarity"), whole)]
    for what, value, redrawn in checks:
        v = number(value)
        if v is None:
            continue
        text = f"with {what} its map has Spearman {v:.2f} with this one"
        if survives_randomisation(v):
            text += ": it shows the image more than the model" if redrawn == whole \
                else f": it depends little on {redrawn}"
        parts.append(text)
    if any(survives_randomisation(value) for _, value, _ in checks):
        marks.append("survives_randomisation")
    if not parts:
        parts.append("no trust figures were measured on this slice")
    out["text"] = f"Slice {int(k)}, {name}: " + "; ".join(parts) + "."
    return out


def short_marks(row: Optional[Mapping[str, Any]], method: str = "", k: int = 0) -> List[str]:
    """The marks of ``row`` as the few words a figure's title holds (the PNG of each explained slice)."""
    if row is None:
        return []
    words = {"prompt_driven": "the prompt draws most of the mask", "no_evidence": "NO EVIDENCE: no change above the noise",
             "below_trivial": "a trivial map does as well",
             "survives_randomisation": "survives a re-drawn model"}
    out = []
    # the title is one line: what decides whether the map is read at all comes before the prompt's share
    for mark in sorted(slice_trust(row, method, k)["marks"], key=lambda m: m == "prompt_driven"):
        if mark == "low_reliability":
            out.append(f"reliability {float(row['reliability']):.2f}: mostly noise")
        else:
            out.append(words[mark])
    return out


def slices_by_mark(slices: Mapping[Any, Any]) -> Dict[str, List[int]]:
    """For one method's rows by slice (the ``slices`` of its ``NAME_metrics.json`` entry): the slices
    each of :data:`MARKS` flags, in order (each row read once)."""
    out: Dict[str, List[int]] = {mark: [] for mark in MARKS}
    for k in sorted(slices, key=int):
        if isinstance(slices[k], Mapping):
            for mark in slice_trust(slices[k], "", int(k))["marks"]:
                out[mark].append(int(k))
    return out


def slices_marked(metrics: Mapping[str, Any], method: str, mark: str) -> List[int]:
    """The slices whose row for ``method`` in a ``NAME_metrics.json`` document carries ``mark`` (one
    of :data:`MARKS`), in order."""
    if mark not in MARKS:
        raise InputError(f"mark {mark!r} is unknown; expected one of {', '.join(MARKS)}")
    return slices_by_mark(((metrics.get("methods") or {}).get(method) or {}).get("slices") or {})[mark]
