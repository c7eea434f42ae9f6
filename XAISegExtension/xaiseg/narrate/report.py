"""Report writers and the one call that builds a report from a finished run directory.

``build_report(run_dir, ReportOptions(...))`` writes, all together (staged, then moved into place):

* ``NAME_findings.json`` - findings, validated against ``findings.schema.json``;
* ``NAME_report.json`` - findings, the narrative with every checked claim, the images used;
* ``NAME_report.html`` - one self-contained page: overlay images inlined as base64, metrics table,
  narrative (unsupported claims marked), peaks and clusters, limits and the run record.

If a model narrator fails (endpoint down, timeout, HTTP error), the report is still written with
the template narrative and a note saying what failed, and then :class:`NarratorError` is raised
so the caller sees a clear message while every other output is kept.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import InputError, XAISegError
from ..io import write_bytes_atomic, write_text_atomic
from .base import Narrative, Narrator, NarratorError, ReportImage
from .findings import RunDir, build_findings, validate
from .labels import LabelMap, harvard_oxford, load_labelmap
from ..explain import title_of
from .template import TemplateNarrator

NARRATORS = ("template", "llava", "openai")
#: metrics shown in the HTML table (every other figure is in findings.json and the run record)
TABLE_METRICS = ("deletion_auc", "insertion_auc", "best_trivial_deletion_auc", "deletion_gain",
                 "beats_trivial_deletion", "evidence", "adjacent_spearman", "dice_drop", "roi_ratio", "pointing_game",
                 "energy_in_target", "iou_target", "sanity_similarity", "cascade_final_similarity", "evaluations",
                 "seconds")


@dataclass
class ReportOptions:
    """What ``xaiseg report`` / ``xaiseg explain --report`` do. Defaults: template narrator, no labels."""

    name: Optional[str] = None
    narrator: str = "template"
    labels: Optional[str] = None  # label volume or .seg.nrrd
    label_names: Optional[str] = None  # CSV / colour table / JSON
    atlas: Optional[str] = None  # "harvard-oxford"
    atlas_threshold: float = 25.0
    llava_model: Optional[str] = None
    device: str = "cpu"
    max_new_tokens: int = 200
    openai_base_url: Optional[str] = None
    openai_model: Optional[str] = None
    openai_api_key: Optional[str] = None
    timeout: float = 120.0
    max_images: int = 2
    output: Optional[str] = None  # default: the run directory
    html: bool = True
    extra: Dict[str, Any] = field(default_factory=dict)

    def check(self) -> Narrator:
        """Every option checked without reading the run (the narrator is built, not loaded): the
        narrator, its numbers, the label sources and their files.  Returns the narrator."""
        if self.narrator not in NARRATORS:
            raise InputError(f"narrator {self.narrator!r} is unknown; expected one of {', '.join(NARRATORS)}")
        for value, what, least in ((self.max_new_tokens, "max_new_tokens", 1), (self.max_images, "max_images", 1)):
            if value < least:
                raise InputError(f"narrator {what} {value} must be at least {least}")
        if not self.timeout > 0:
            raise InputError(f"narrator timeout {self.timeout} must be a positive number of seconds")
        if not 0.0 <= self.atlas_threshold <= 100.0:
            raise InputError(f"atlas threshold {self.atlas_threshold} must be a probability in percent (0 to 100)")
        if self.labels and self.atlas:
            raise InputError("give --labels or --atlas, not both")
        if self.label_names and not self.labels:
            raise InputError("--label-names goes with --labels LABELMAP")
        if self.atlas and self.atlas.lower().replace("_", "-") != "harvard-oxford":
            raise InputError(f"atlas {self.atlas!r} is unknown; expected harvard-oxford")
        for path, what in ((self.labels, "label map"), (self.label_names, "label names table")):
            if path and not Path(path).is_file():
                raise InputError(f"{what} {path} does not exist; expected a file")
        if self.narrator == "llava":
            from ..requirements import TRANSFORMERS_LLAVA

            if not TRANSFORMERS_LLAVA.installed():
                TRANSFORMERS_LLAVA.load()  # raises DependencyError naming the pip extra
        return self.make_narrator()

    def make_narrator(self) -> Narrator:
        if self.narrator == "template":
            return TemplateNarrator()
        if self.narrator == "llava":
            if not self.llava_model:
                raise InputError("--narrator llava needs --llava-model FOLDER (a LLaVA model and processor saved "
                                 "with save_pretrained)")
            from .llava import LlavaNarrator

            return LlavaNarrator(self.llava_model, device=self.device, max_new_tokens=self.max_new_tokens,
                                 generate_kwargs=self.extra.get("generate_kwargs"))
        if self.narrator == "openai":
            from .openai_http import OpenAINarrator

            return OpenAINarrator(self.openai_base_url, self.openai_model, self.openai_api_key,
                                  timeout=self.timeout, max_images=self.max_images)
        raise InputError(f"narrator {self.narrator!r} is unknown; expected one of {', '.join(NARRATORS)}")


def load_labels(options: ReportOptions, run: RunDir) -> Optional[LabelMap]:
    from ..io import Geometry, read_image

    if not options.labels and not options.atlas:
        return None  # options.check() has refused the combinations that make no sense
    geometry = Geometry.of(read_image(run.mask_path))
    if options.atlas:
        return harvard_oxford(geometry, options.atlas_threshold)
    return load_labelmap(options.labels, options.label_names, geometry)


# --- images --------------------------------------------------------------------------------------

def report_images(findings: dict, run: RunDir, folder: Optional[Path] = None) -> List[ReportImage]:
    """The run's overlay PNGs, leading method first and its strongest peak's slice first; a run
    without any gets the mask's outline, written into ``folder`` (default: the run directory)."""
    methods = findings.get("methods") or {}
    lead = (findings.get("leading_method") or {}).get("method")
    order = ([lead] if lead else []) + [m for m in methods if m != lead]
    out: List[ReportImage] = []
    for m in order:
        info = methods[m]
        peak_slice = info["peaks"][0]["slice"] if info["peaks"] else None
        imgs = sorted(info["images"], key=lambda d: (d["slice"] != peak_slice, d["slice"]))
        for d in imgs:
            out.append(ReportImage(run.file(d["file"]), m, d["slice"],
                                   f"{title_of(m)}, slice {d['slice']}"))
    if not out:
        im = _mask_overlay(findings, run, folder or run.path)
        if im is not None:
            out.append(im)
    return out


def _mask_overlay(findings: dict, run: RunDir, folder: Path) -> Optional[ReportImage]:
    """For a run without saliency PNGs: the mask outlined on its central slice of the input volume."""
    import SimpleITK as sitk
    from PIL import Image
    import io

    from ..io import Geometry, read_image
    from ..render import display_flips, overlay

    rec = (findings.get("record") or {}).get("segmentation") or {}
    src = rec.get("input")
    sl = findings["mask"]["slices"]
    if not src or sl["count"] == 0:
        return None
    try:
        image = read_image(src)
    except XAISegError:
        return None
    mask_img = read_image(run.mask_path)
    if image.GetSize() != mask_img.GetSize():
        return None
    vol, mask = sitk.GetArrayFromImage(image).astype(np.float32), sitk.GetArrayFromImage(mask_img) > 0
    axis = findings["volume"]["slicing_axis"]
    counts = np.moveaxis(mask, axis, 0).sum(axis=(1, 2))
    k = int(np.argmax(counts))
    img2d, m2d = np.take(vol, k, axis=axis), np.take(mask, k, axis=axis)
    bounds = (rec.get("preprocessing") or {}).get("intensity_bounds")
    lo, hi = (bounds if bounds and bounds[1] > bounds[0] else np.percentile(img2d, [0.5, 99.5]))
    img01 = np.clip((img2d - lo) / max(hi - lo, 1e-6), 0, 1)
    zoom = max(1, int(round(384 / max(img01.shape))))
    rgb = overlay(img01, [(m2d, (255, 225, 25))], display_flips(Geometry.of(image), axis), zoom=zoom)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    path = write_bytes_atomic(Path(folder) / f"{run.name}_report_k{k:03d}.png", buf.getvalue())
    return ReportImage(path, None, k, f"mask outline, slice {k}")


# --- writers -------------------------------------------------------------------------------------

def report_dict(findings: dict, narrative: Narrative, images: List[ReportImage]) -> dict:
    return {"findings": findings, "narrative": narrative.as_dict(),
            "images": [{"file": im.path.name, "method": im.method, "slice": im.slice, "caption": im.caption}
                       for im in images]}


def write_json_report(path, findings: dict, narrative: Narrative, images: List[ReportImage]) -> Path:
    return write_text_atomic(path, json.dumps(report_dict(findings, narrative, images), indent=2))


def marked_html(text: str, narrative: Narrative) -> str:
    """``text`` escaped, unsupported claims wrapped in <mark class="unsupported">."""
    out, pos = [], 0
    for c in sorted(narrative.unsupported, key=lambda c: c.start):
        if c.start < pos:
            continue
        out.append(html.escape(text[pos:c.start]))
        out.append(f'<mark class="unsupported" title="not in findings: {html.escape(c.kind)}">'
                   f'{html.escape(text[c.start:c.end])}</mark>')
        pos = c.end
    out.append(html.escape(text[pos:]))
    return "".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#1b1f24;
max-width:1100px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #d0d7de;
padding-bottom:4px}.sub{color:#57606a;font-size:13px}.narrative{font-size:16px;line-height:1.5;background:#f6f8fa;
border-left:4px solid #0969da;padding:12px 16px}.warn{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;
margin:8px 0;font-size:14px}.err{background:#ffebe9;border:1px solid #cf222e;padding:8px 12px;margin:8px 0;font-size:14px}
mark.unsupported{background:#ffd8d3;text-decoration:underline wavy #cf222e}figure{display:inline-block;margin:0 12px 12px 0;
vertical-align:top}figure img{max-width:100%;border:1px solid #d0d7de;image-rendering:pixelated}figcaption{font-size:13px;
color:#57606a}table{border-collapse:collapse;font-size:13px;margin:4px 0 12px}th,td{border:1px solid #d0d7de;
padding:4px 8px;text-align:right}th{background:#f6f8fa}td.l,th.l{text-align:left}pre{background:#f6f8fa;padding:10px;
font-size:12px;overflow:auto;max-height:420px}ul{margin:4px 0}
"""


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) >= 1 else f"{v:.3f}"
    if isinstance(v, list):
        return "(" + ", ".join(f"{x:.1f}" if isinstance(x, float) else _fmt(x) for x in v) + ")"
    return html.escape(str(v))


def _table(header: List[str], rows: List[List[Any]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_fmt(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _html_narrative(narrative: Narrative, fallback_note: Optional[str]) -> List[str]:
    parts = ["<h2>Narrative</h2>"]
    if fallback_note:
        parts.append(f'<div class="err">{html.escape(fallback_note)}</div>')
    if narrative.model_written:
        n = len(narrative.unsupported)
        parts.append(f'<div class="warn">Written by a language model ({html.escape(narrative.narrator)}). '
                     f'{n} number(s) or anatomical name(s) that the findings do not contain are '
                     f'<mark class="unsupported">marked</mark>; do not read them as fact.</div>')
    parts.append(f'<div class="narrative" id="narrative">{marked_html(narrative.text, narrative)}</div>')
    return parts


def _html_images(images: List[ReportImage]) -> List[str]:
    if not images:
        return []
    parts = ["<h2>Overlay images</h2><div>"]
    for im in images:
        data = base64.b64encode(im.png_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{html.escape(im.caption)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(im.caption)}</figcaption></figure>")
    return parts + ["</div>"]


def _html_mask(mask: dict, vol: dict) -> List[str]:
    bb = mask.get("bbox_ras_mm") or {}
    rows = [["volume", f"{mask['volume_ml']:.3f} mL ({mask['voxels']} voxels)"],
            ["slices", f"{mask['slices']['first']}-{mask['slices']['last']} ({mask['slices']['count']})"],
            ["bounding box RAS min (mm)", bb.get("min")], ["bounding box RAS max (mm)", bb.get("max")],
            ["centroid RAS (mm)", mask.get("centroid_ras_mm")],
            ["spacing (mm)", vol["spacing_mm"]]]
    for s in mask.get("labels") or []:
        rows.append([f"label share: {s['name']}", f"{100 * s['fraction']:.1f}%"])
    return ["<h2>Mask</h2>", _table(["", "value"], rows, left=2)]


def _html_methods(findings: dict, methods: dict, lead: Optional[str]) -> List[str]:
    """The metrics table of every method, then their saliency peaks and high-saliency clusters."""
    keys = [k for k in TABLE_METRICS if any(k in info["summary"] for info in methods.values())]
    mass_keys = ["in_mask", "outside_mask", "in_roi", "mask_share_of_roi"]
    rows = [[title_of(m) + (" (leading)" if m == lead else "")] + [info["saliency_mass"].get(k) for k in mass_keys]
            + [info["summary"].get(k) for k in keys] for m, info in methods.items()]
    parts = ["<h2>Saliency and faithfulness</h2>",
             '<div id="metrics">' + _table(["method", "saliency in mask", "outside mask", "in ROI", "mask share of ROI"]
                                           + [k.replace("_", " ") for k in keys], rows) + "</div>",
             f'<div class="sub">leading method: {html.escape(str(lead))} '
             f'({html.escape(findings["leading_method"]["basis"])}); saliency mass = share of the saliency '
             f'summed over explained slices {html.escape(str(findings["explained_slices"]))}</div>']
    prow, crow = [], []
    for m, info in methods.items():
        for p in info["peaks"]:
            prow.append([m, p["rank"], p["slice"], p["value"], p["ras_mm"], p["in_mask"],
                         p.get("label", "-"), (p.get("nearest_label") or {}).get("name", "-")])
        for c in info["clusters"]:
            lab = ", ".join(f"{s['name']} {100 * s['fraction']:.0f}%" for s in c.get("labels") or [])
            crow.append([m, c["rank"], c["slice"], c["area_mm2"], c["saliency_share"], c["in_mask_fraction"],
                         c["peak_ras_mm"], lab or "-"])
    if prow:
        parts.append("<h2>Saliency peaks</h2>" + _table(["method", "rank", "slice", "value", "RAS (mm)", "in mask",
                                                          "label", "nearest label"], prow))
    if crow:
        parts.append("<h2>High-saliency clusters</h2>" + _table(
            ["method", "rank", "slice", "area (mm2)", "saliency share", "in mask", "peak RAS (mm)", "labels"], crow))
    return parts


def _html_limits_and_record(findings: dict, narrative: Narrative) -> List[str]:
    parts = ["<h2>Limits</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in findings["limits"]) + "</ul>"]
    if findings.get("labels"):
        lab = findings["labels"]
        parts.append(f'<div class="sub">labels: {html.escape(lab["source"])} ({html.escape(lab["kind"])}) '
                     f'{html.escape(lab.get("note") or "")}</div>')
    record = {"record": findings["record"], "narrator": {
        k: v for k, v in narrative.as_dict().items() if k not in ("text", "claims", "prompt")}}
    parts.append("<h2>Run record</h2><details><summary>segmentation and explanation records, narrator</summary><pre>" +
                 html.escape(json.dumps(record, indent=2)) + "</pre></details>")
    return parts


def render_html(findings: dict, narrative: Narrative, images: List[ReportImage],
                fallback_note: Optional[str] = None) -> str:
    """The self-contained HTML report: narrative, images, mask, methods, limits and run record."""
    st, vol = findings["structure"], findings["volume"]
    methods = findings.get("methods") or {}
    lead = (findings.get("leading_method") or {}).get("method")
    model = (st.get("model") or {}).get("name", "")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>XAISeg report: {html.escape(st['name'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>XAISeg report: {html.escape(st['name'])}</h1>",
             f'<div class="sub">segmenter {html.escape(str(model))} &middot; {html.escape(vol["plane"])} slices'
             f' &middot; {len(methods)} explanation method(s) &middot; narrative: '
             f'{html.escape(narrative.narrator)}</div>']
    parts += _html_narrative(narrative, fallback_note)
    parts += _html_images(images)
    parts += _html_mask(findings["mask"], vol)
    if methods:
        parts += _html_methods(findings, methods, lead)
    parts += _html_limits_and_record(findings, narrative)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html_report(path, findings: dict, narrative: Narrative, images: List[ReportImage],
                      fallback_note: Optional[str] = None) -> Path:
    return write_text_atomic(path, render_html(findings, narrative, images, fallback_note))


# --- the one call ---------------------------------------------------------------------------------

def build_report(run_dir, options: Optional[ReportOptions] = None, progress=None) -> Dict[str, Path]:
    """Findings, narrative and report files for a finished run; returns {"findings", "report_json", "html"}.

    Every option is checked before the run is read.  The files are written into a staging folder
    and moved into place together, under the output folder's lock (:mod:`xaiseg.lock`), so an
    interrupted report leaves the previous report files or the new ones, never a mix.  A failing
    model narrator still leaves all files written (with the template narrative and a note) and then
    raises :class:`NarratorError`, whose ``paths`` are the files written.
    """
    from ..io import move_into, staged
    from ..lock import output_lock
    from ..progress import ensure

    options = options or ReportOptions()
    progress = ensure(progress)
    narrator = options.check()  # configuration errors stop here, before anything is read or written
    run = RunDir(run_dir, options.name)
    out = Path(options.output) if options.output else run.path
    with output_lock(out):
        progress.stage("report", 3)
        labels = load_labels(options, run)
        findings = build_findings(run.path, run.name, labels)
        validate(findings)
        progress.step(step="findings")
        with staged(out) as stage:
            paths: Dict[str, Path] = {"findings": write_text_atomic(stage / f"{run.name}_findings.json",
                                                                    json.dumps(findings, indent=2))}
            images = report_images(findings, run, stage)
            paths.update({"overlay": im.path for im in images if im.path.parent == stage})  # the mask outline
            failure: Optional[XAISegError] = None
            try:
                narrative = narrator.narrate(findings, images)
            except XAISegError as exc:
                if options.narrator == "template":
                    raise
                failure = exc
                narrative = TemplateNarrator().narrate(findings, images)
                narrative.error = f"{options.narrator} narrator failed: {exc}"
            progress.step(step="narrative")
            paths["report_json"] = write_json_report(stage / f"{run.name}_report.json", findings, narrative, images)
            if options.html:
                paths["html"] = write_html_report(stage / f"{run.name}_report.html", findings, narrative, images,
                                                  narrative.error and (narrative.error + " - the template narrative "
                                                                       "is shown instead."))
            progress.check()
            paths = move_into(paths, out)
        progress.step(step="written")
        progress.done()
    if failure is not None:
        written = ", ".join(p.name for p in paths.values())
        error = NarratorError(f"{failure} (the report was written with the template narrative: {written})")
        error.paths = paths
        raise error from failure
    return paths
