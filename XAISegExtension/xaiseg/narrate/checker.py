"""Check model-written text against findings: every number and anatomical name must come from them.

A number in the text is *supported* when some number in findings (outside the run record's
versions and timestamps) rounds to it at the text's precision, or, written as a percentage, when
some fraction in findings does after multiplying by 100.  An anatomical name (a term from
:data:`ANATOMY_TERMS`, with an optional "left"/"right" before it) is supported when one of the
names in findings - the structure, label names of the mask, peaks and clusters - contains its
words (and the same side).  Everything else is a claim findings do not back, and reports mark it.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Iterable, List, Set, Tuple

#: anatomical head words and phrases recognised in free text (lower case, singular)
ANATOMY_TERMS = frozenset("""
caudate putamen thalamus pallidum globus_pallidus hippocampus amygdala accumbens nucleus_accumbens brainstem brain_stem
midbrain pons medulla cerebellum cerebrum ventricle ventrical corpus_callosum internal_capsule external_capsule insula
insular cortex gyrus sulcus lobe lobule pole operculum opercular cingulate precuneus precuneous cuneus cuneal lingual
fusiform parahippocampal precentral postcentral supramarginal angular calcarine intracalcarine supracalcarine
paracingulate subcallosal juxtapositional planum heschl frontal parietal temporal occipital orbital white_matter
grey_matter gray_matter basal_ganglia claustrum hypothalamus pituitary fornix septum choroid_plexus meninges dura
skull brain spinal_cord vertebra vertebrae rib sternum clavicle clavicula scapula humerus femur hip pelvis sacrum
liver spleen kidney pancreas gallbladder stomach duodenum bowel colon rectum esophagus oesophagus trachea bronchus
lung heart atrium atrial_appendage myocardium aorta artery vein vena_cava portal_vein carotid iliac subclavian
brachiocephalic bladder urinary_bladder prostate uterus ovary adrenal adrenal_gland thyroid thyroid_gland
gluteus iliopsoas autochthon muscle lymph_node tumour tumor lesion mass cyst edema oedema infarct hemorrhage
haemorrhage
""".split())
SIDES = {"left": "left", "right": "right", "l": "left", "r": "right"}
_NUMBER = re.compile(r"(?<![\w.])([-+\u2212]?)(\d+(?:\.\d+)?)(\s*(?:%|percent\b|per cent\b))?(?![\w%])")
_WORD = re.compile(r"[A-Za-z]+(?:'s)?")


@dataclass(frozen=True)
class Claim:
    kind: str  # "number" | "anatomy"
    text: str
    start: int
    end: int
    supported: bool

    def as_dict(self) -> dict:
        return asdict(self)


# --- what findings contain -----------------------------------------------------------------------

_SKIP = {"versions", "created", "platform", "weights_sha256", "directory", "input", "seconds_embed",
         "seconds_decode"}


def findings_numbers(findings: dict) -> List[float]:
    out: List[float] = []

    def walk(v, key=""):
        if key in _SKIP:
            return
        if isinstance(v, bool) or v is None:
            return
        if isinstance(v, (int, float)):
            if math.isfinite(v):
                out.append(float(v))
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, str(k))
                if isinstance(k, str) and re.fullmatch(r"\d+", k):
                    out.append(float(k))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, key)

    walk(findings)
    return out


def _words(name: str) -> List[str]:
    return [_singular(w.lower()) for w in re.split(r"[^A-Za-z]+", name) if w]


def _singular(w: str) -> str:
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith("ae") and len(w) > 4:
        return w[:-1]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        return w[:-1]
    return w


def findings_names(findings: dict) -> List[Set[str]]:
    """Word sets of every anatomical name in findings."""
    names: List[str] = []
    st = findings.get("structure") or {}
    if st.get("name"):
        names.append(st["name"])
    for share in (findings.get("mask") or {}).get("labels") or []:
        names.append(share["name"])
    for info in (findings.get("methods") or {}).values():
        for p in info.get("peaks") or []:
            names += [p.get("label") or "", (p.get("nearest_label") or {}).get("name", "")]
        for c in info.get("clusters") or []:
            names += [s["name"] for s in c.get("labels") or []]
            names += [c.get("peak_label") or "", (c.get("peak_nearest_label") or {}).get("name", "")]
    return [set(_words(n)) for n in names if n and n != "unlabelled"]


# --- checking ------------------------------------------------------------------------------------

def _number_supported(text: str, percent: bool, values: Iterable[float]) -> bool:
    t = text.replace(",", ".")
    decimals = len(t.split(".")[1]) if "." in t else 0
    x = float(t)
    tol = 0.5 * 10 ** (-decimals) * (1 + 1e-9) + 1e-12
    for v in values:
        cand = v * 100.0 if percent else v
        if abs(cand - x) <= tol:
            return True
    return False


def _anatomy_spans(text: str) -> List[Tuple[int, int, List[str], str]]:
    """(start, end, term words, side) of every anatomical term in ``text``."""
    tokens = [(m.start(), m.end(), _singular(m.group(0).lower().replace("'s", ""))) for m in _WORD.finditer(text)]
    spans = []
    i = 0
    while i < len(tokens):
        hit = 0
        for n in (3, 2, 1):
            if i + n <= len(tokens) and "_".join(t[2] for t in tokens[i:i + n]) in ANATOMY_TERMS:
                hit = n
                break
        if not hit:
            i += 1
            continue
        start, end = tokens[i][0], tokens[i + hit - 1][1]
        side = ""
        if i > 0 and tokens[i - 1][2] in SIDES and len(tokens[i - 1][2]) > 1:
            side = SIDES[tokens[i - 1][2]]
            start = tokens[i - 1][0]
        spans.append((start, end, [t[2] for t in tokens[i:i + hit]], side))
        i += hit
    return spans


def check_text(text: str, findings: dict) -> List[Claim]:
    """Every number and anatomical name in ``text``, each marked supported or not by ``findings``."""
    values = findings_numbers(findings)
    names = findings_names(findings)
    claims: List[Claim] = []
    for m in _NUMBER.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        prefix = text[line_start:m.start()].strip()
        after = text[m.end():m.end() + 1]
        if prefix in ("", "-", "*") and after in (".", ")") and not m.group(3) and "." not in m.group(2) \
                and not text[m.end() + 1:m.end() + 2].isdigit():
            continue  # list numbering "1." / "2)"
        sign = "-" if m.group(1) in ("-", "\u2212") else ""
        supported = _number_supported(sign + m.group(2), bool(m.group(3)), values)
        start = m.start(1) if m.group(1) else m.start(2)
        claims.append(Claim("number", text[start:m.end()].strip(), start, m.end(), supported))
    for start, end, words, side in _anatomy_spans(text):
        need = set(words) | ({side} if side else set())
        supported = any(need <= n for n in names)
        claims.append(Claim("anatomy", text[start:end], start, end, supported))
    claims.sort(key=lambda c: c.start)
    return claims


def unsupported(claims: Iterable[Claim]) -> List[Claim]:
    return [c for c in claims if not c.supported]
