"""The default narrator: offline and deterministic, every number and name copied from findings."""
from __future__ import annotations

import time
from typing import List, Sequence

from ..explain import title_of
from ..explain.trust import PROMPT_DRIVEN, RANDOMISED_SIMILAR, low_reliability, number, survives_randomisation
from .base import Narrative, Narrator, ReportImage


def _pct(fraction: float) -> str:
    return f"{100.0 * float(fraction):.0f}%"


def _num(v, nd: int = 2) -> str:
    return f"{float(v):.{nd}f}"


def _ras(p: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.1f}" for v in p) + ") mm"


def _slices(ks: List[int]) -> str:
    if not ks:
        return "no slices"
    if len(ks) == 1:
        return f"slice {ks[0]}"
    if ks == list(range(ks[0], ks[-1] + 1)):
        return f"slices {ks[0]}-{ks[-1]}"
    return "slices " + ", ".join(str(k) for k in ks)


def _where(entry: dict, prefix: str = "") -> str:
    label = entry.get(prefix + "label")
    if label and label != "unlabelled":
        return f"in {label}"
    near = entry.get(prefix + "nearest_label")
    if near:
        return f"{float(near['distance_mm']):.1f} mm from {near['name']}"
    return ""


def _prompt(prompt: dict) -> str:
    kind = prompt.get("type")
    return {"box": "a box prompt", "points": "point prompts", "labelmap-boxes": "boxes from a label map"}.get(
        kind, "a prompt")


def _metrics(summary: dict, hints: bool = True) -> str:
    parts = []
    for key, title, hint in (("deletion_auc", "deletion AUC", " (lower is better)"),
                             ("insertion_auc", "insertion AUC", " (higher is better)"),
                             ("dice_drop", "Dice drop", " when its high-saliency region is removed")):
        v = summary.get(key)
        if number(v) is not None:
            parts.append(f"{title} {_num(v)}{hint if hints else ''}")
    v = summary.get("energy_in_target")
    if number(v) is not None:
        parts.append(f"{_pct(v)} of the saliency in the reference mask")
    pg = summary.get("pointing_game")
    if isinstance(pg, bool):
        parts.append("pointing game " + ("hit" if pg else "missed"))
    elif number(pg) is not None:
        parts.append(f"pointing game hit on {_pct(pg)} of slices" if summary.get("slices", 2) != 1
                     else "pointing game " + ("hit" if pg >= 0.5 else "missed"))
    return ", ".join(parts)


RELIABILITY_LOW = (" - much of its detail is the draw's noise, so compare its broad shape only (more masks, "
                   "--masks, steady it).")


def _trust(summary: dict, title: str) -> List[str]:
    """Sentences on whether the map can be trusted: against trivial maps, noise, flicker, randomisation."""
    out = []
    share = summary.get("beats_trivial_deletion")
    if number(share) is not None:
        gain = summary.get("deletion_gain")
        gain_text = f" (mean deletion-AUC gain {_num(gain, 3)})" if number(gain) is not None else ""
        if share >= 0.5:
            out.append(f"Against trivial maps (the mask blurred, a blob at the box centre, a random map), the {title} "
                       f"map removes the mask faster on {_pct(share)} of the explained slices{gain_text}.")
        else:
            out.append(f"The {title} map does not beat the trivial maps (the mask blurred, a blob at the box centre, "
                       f"a random map): it removes the mask faster than all of them on only {_pct(share)} of the "
                       f"explained slices{gain_text}, so it shows little more than where the structure is.")
    driven = summary.get("prompt_driven_slices")
    if isinstance(driven, list) and driven:
        bar = summary.get("prompt_driven_at", PROMPT_DRIVEN)  # in the findings, so the figure is grounded
        out.append(f"On {_slices([int(k) for k in driven])} the prompt and the tissue around the ROI draw most of "
                   f"the mask: with the image in the ROI removed the score keeps about {_pct(bar)} of its value or "
                   f"more, so the {title} map explains only the rest there.")
    quiet = summary.get("no_evidence_slices")
    if isinstance(quiet, list) and quiet:
        out.append(f"On {_slices([int(k) for k in quiet])}, {title} found no score change above the model's noise: "
                   "no evidence is shown there.")
    behind = summary.get("below_trivial_slices")
    if isinstance(behind, list) and behind and number(share) is not None and share >= 0.5:
        out.append(f"On {_slices([int(k) for k in behind])} a trivial map removes the mask at least as fast as the "
                   f"{title} map: read it there as little more than where the structure is.")
    rel = summary.get("reliability")
    if number(rel) is not None:
        out.append(f"Two halves of its random masks draw the {title} map alike to a split-half reliability of "
                   f"{_num(rel)}" + (RELIABILITY_LOW if low_reliability(rel) else "."))
        noisy = summary.get("low_reliability_slices")
        if isinstance(noisy, list) and noisy and not low_reliability(rel):
            out.append(f"On {_slices([int(k) for k in noisy])} the two halves agree far less: there the map's "
                       "detail is mostly the draw's noise.")
    rho = summary.get("adjacent_spearman")
    if number(rho) is not None:
        out.append(f"Maps of adjacent slices agree with a mean Spearman of {_num(rho)}"
                   + (" (they flicker from slice to slice)." if rho < 0.5 else "."))
    kept = summary.get("survives_randomisation_slices")
    if isinstance(kept, list) and kept:
        bar = summary.get("survives_randomisation_at", RANDOMISED_SIMILAR)  # in the findings: grounded
        out.append(f"On {_slices([int(k) for k in kept])} the {title} map keeps a Spearman of {_num(bar)} or more "
                   "with the map of a model whose weights were partly or wholly re-drawn (the sanity or cascade "
                   "check): there it follows the image more than those weights.")
    final = summary.get("cascade_final_similarity")
    if number(final) is not None:
        draws = number(summary.get("cascade_draws"))
        drawn = f" (the mean of {int(draws)} draws of random weights)" if draws is not None and draws > 1 else ""
        out.append(f"With the whole model re-drawn, the map's similarity to the trained model's is {_num(final)}{drawn}"
                   + (" - it depends on the image more than on the model." if survives_randomisation(final) else "."))
    return out


def render_text(findings: dict) -> str:
    """The template narrative: a few sentences, each figure taken from ``findings``."""
    st, mask, vol = findings["structure"], findings["mask"], findings["volume"]
    name = st["name"]
    model = (st.get("model") or {}).get("name") or "the segmenter"
    out: List[str] = []
    if mask["voxels"] == 0:
        out.append(f"{name}: {model} found no voxels from {_prompt(st.get('prompt') or {})}; the mask is empty.")
    else:
        sl = mask["slices"]
        bb = mask["bbox_ras_mm"]
        out.append(
            f"{name} was segmented by {model} from {_prompt(st.get('prompt') or {})}: "
            f"{float(mask['volume_ml']):.2f} mL ({mask['voxels']} voxels) on {vol['plane']} "
            + (f"slice {sl['first']}" if sl['count'] == 1 else f"slices {sl['first']}-{sl['last']} ({sl['count']} slices)")
            + f", RAS bounding box x {bb['min'][0]:.1f} to "
            f"{bb['max'][0]:.1f}, y {bb['min'][1]:.1f} to {bb['max'][1]:.1f}, z {bb['min'][2]:.1f} to "
            f"{bb['max'][2]:.1f} mm.")
        shares = [s for s in mask.get("labels") or [] if s["fraction"] >= 0.05]
        if shares:
            src = (findings.get("labels") or {}).get("source", "the label map")
            out.append(f"By {src}, the mask lies " +
                       ", ".join(f"{_pct(s['fraction'])} in {s['name']}" for s in shares) + ".")
    methods = findings.get("methods") or {}
    lead = (findings.get("leading_method") or {}).get("method")
    if not methods or lead is None:
        out.append("This run was not explained: there is no saliency to report, only the mask.")
    else:
        info = methods[lead]
        title = title_of(lead)
        mass = info["saliency_mass"]
        ks = findings.get("explained_slices") or []
        sent = f"{title} saliency on {_slices(ks)}: {_pct(mass['in_mask'])} of it lies inside the mask"
        if "mask_share_of_roi" in mass:
            sent += f", which covers {_pct(mass['mask_share_of_roi'])} of the region that was perturbed"
        if mass.get("outside_roi", 0) >= 0.005:
            sent += f"; {_pct(mass['outside_roi'])} lies outside that region"
        out.append(sent + ".")
        figures = _metrics(info.get("summary") or {})
        if figures:
            out.append(f"Faithfulness of the {title} map: {figures}.")
        out += _trust(info.get("summary") or {}, title)
        if info["peaks"]:
            p = info["peaks"][0]
            where = _where(p)
            out.append(f"Its strongest peak ({_num(p['value'])}) is at {_ras(p['ras_mm'])} on slice {p['slice']}, "
                       f"{'inside' if p['in_mask'] else 'outside'} the mask{', ' + where if where else ''}.")
        if info["clusters"]:
            c = info["clusters"][0]
            top = (c.get("labels") or [{}])[0]
            lab = f", mostly {top['name']}" if top.get("name") and top["name"] != "unlabelled" else ""
            out.append(f"The largest high-saliency cluster holds {_pct(c['saliency_share'])} of the saliency "
                       f"over {c['area_mm2']:.1f} mm2 and lies {_pct(c['in_mask_fraction'])} inside the mask{lab}.")
        others = [m for m in methods if m != lead]
        if others:
            bits = []
            for m in others:
                s = methods[m]
                fig = _metrics({k: s["summary"].get(k) for k in ("deletion_auc", "insertion_auc")}, hints=False)
                bits.append(f"{title_of(m)} {_pct(s['saliency_mass']['in_mask'])} inside the mask"
                            + (f" ({fig})" if fig else ""))
            out.append("Other methods: " + "; ".join(bits) + f" ({title} leads: "
                       f"{findings['leading_method']['basis']}).")
        out.append(f"Limits: {info['limits']}.")
    n, total = findings.get("explained_slice_count", 0), mask["slices"]["count"]
    if methods and n < total:
        out.append(f"Only {n} of the mask's {total} slices were explained. Saliency shows what changes this "
                   "model's mask, not where disease is.")
    else:
        out.append("Saliency shows what changes this model's mask, not where disease is.")
    return " ".join(out)


class TemplateNarrator(Narrator):
    """Deterministic sentences from findings; nothing is generated, so nothing is unsupported."""

    name = "template"
    model_written = False

    def narrate(self, findings: dict, images: Sequence[ReportImage] = ()) -> Narrative:
        t0 = time.perf_counter()
        text = render_text(findings)
        return self.finish(text, findings, model={"name": "template", "version": "1"},
                           seconds=time.perf_counter() - t0)
