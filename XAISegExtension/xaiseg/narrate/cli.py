"""``xaiseg report RUN_DIR`` and ``xaiseg explain --report``: argparse wiring used by :mod:`xaiseg.cli`.

``add_report_parser(subparsers)`` adds the ``report`` command; ``add_report_options(parser)``
adds the narrator and label options alone, for ``xaiseg explain --report``; and
``options_from_args(args)`` turns either into :class:`~xaiseg.narrate.report.ReportOptions`.
"""
from __future__ import annotations

import argparse

from ..settings import defaults
from .report import NARRATORS, ReportOptions, build_report

D = defaults(ReportOptions)  # the defaults live in ReportOptions

EPILOG = """\
narrators:
  template  (default) offline and deterministic; every number and name comes from findings.json
  llava     LLaVA through transformers from a local folder (--llava-model), e.g. a copy of
            llava-hf/llava-1.5-7b-hf saved with save_pretrained; nothing is downloaded
  openai    an OpenAI-compatible /v1/chat/completions endpoint that accepts images, e.g. Ollama:
            --openai-base-url http://127.0.0.1:11434/v1 --openai-model llava
            (or XAISEG_OPENAI_BASE_URL / XAISEG_OPENAI_MODEL; key in XAISEG_OPENAI_API_KEY).
            Only the rendered overlay slices and findings are sent - no DICOM tags, paths or dates.
  Text written by a model is checked against findings: numbers and anatomical names that findings
  do not contain are marked as unsupported in the report. If a model narrator fails, the report is
  written with the template text and the command exits with status 2 and the reason.

labels (optional; names the places where saliency peaks):
  --labels LABELMAP --label-names CSV   a label volume in the run's space (Slicer label map,
                                        TotalSegmentator multi-label output, ...) with a table
                                        'value,name' (CSV/TSV, colour table, or JSON {"1": "liver"})
  --labels SEGMENTATION.seg.nrrd        a single-layer Slicer segmentation (names from its header)
  --atlas harvard-oxford                Harvard-Oxford cortical/subcortical atlas; only for volumes
                                        in MNI152 space

outputs (in RUN_DIR unless -o): NAME_findings.json, NAME_report.json, NAME_report.html

examples:
  xaiseg report out/
  xaiseg report out/ --atlas harvard-oxford
  xaiseg report out/ --labels seg.nii.gz --label-names names.csv --narrator openai \\
      --openai-base-url http://127.0.0.1:11434/v1 --openai-model llava
"""


def add_report_options(p: argparse.ArgumentParser) -> None:
    """Narrator and label options (shared by ``report`` and ``explain --report``)."""
    g = p.add_argument_group("report: narrator")
    g.add_argument("--narrator", choices=NARRATORS, default=D["narrator"],
                   help="who writes the text: template (default, offline), llava, openai")
    g.add_argument("--llava-model", metavar="FOLDER", help="--narrator llava: local model + processor folder")
    g.add_argument("--llava-device", default=D["device"], help=f"--narrator llava: torch device (default {D['device']})")
    g.add_argument("--max-new-tokens", type=int, default=D["max_new_tokens"],
                   help=f"--narrator llava: tokens to generate ({D['max_new_tokens']})")
    g.add_argument("--openai-base-url", metavar="URL", help="--narrator openai: e.g. http://127.0.0.1:11434/v1")
    g.add_argument("--openai-model", help="--narrator openai: model name, e.g. llava")
    g.add_argument("--openai-timeout", type=float, default=D["timeout"],
                   help=f"--narrator openai: seconds (default {D['timeout']:g})")
    g.add_argument("--openai-max-images", type=int, default=D["max_images"],
                   help=f"--narrator openai: slices sent (default {D['max_images']})")
    lg = p.add_argument_group("report: anatomical labels")
    lg.add_argument("--labels", metavar="LABELMAP", help="label volume or .seg.nrrd in the run's space")
    lg.add_argument("--label-names", metavar="TABLE", help="names of --labels values: CSV value,name / colour "
                                                            "table / JSON")
    lg.add_argument("--atlas", choices=["harvard-oxford"], help="atlas labels for volumes in MNI152 space")
    lg.add_argument("--atlas-threshold", type=float, default=D["atlas_threshold"],
                    help=f"--atlas: minimum probability in percent for a label (default {D['atlas_threshold']:g})")


def options_from_args(args: argparse.Namespace) -> ReportOptions:
    def get(key: str, field: str):
        return getattr(args, key, D[field])

    return ReportOptions(
        name=get("name", "name"), narrator=get("narrator", "narrator"), labels=get("labels", "labels"),
        label_names=get("label_names", "label_names"), atlas=get("atlas", "atlas"),
        atlas_threshold=get("atlas_threshold", "atlas_threshold"), llava_model=get("llava_model", "llava_model"),
        device=get("llava_device", "device"), max_new_tokens=get("max_new_tokens", "max_new_tokens"),
        openai_base_url=get("openai_base_url", "openai_base_url"), openai_model=get("openai_model", "openai_model"),
        timeout=get("openai_timeout", "timeout"), max_images=get("openai_max_images", "max_images"),
        output=get("report_output", "output"), html=not getattr(args, "no_html", False))


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    r = subparsers.add_parser(
        "report", help="findings.json, a grounded narrative and an HTML report from a finished run",
        description="Build NAME_findings.json (validated against the shipped JSON Schema), a short narrative and "
                    "a self-contained HTML report from the output folder of 'xaiseg segment' or 'xaiseg explain'.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("run_dir", metavar="RUN_DIR", help="output folder of a finished run")
    r.add_argument("--name", help="run name (NAME_*) when RUN_DIR holds several runs")
    r.add_argument("-o", "--output", dest="report_output", metavar="DIR", help="write the report here (default "
                                                                                 "RUN_DIR)")
    r.add_argument("--no-html", action="store_true", help="write findings and report JSON only")
    r.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    add_report_options(r)
    r.set_defaults(func=cmd_report)
    return r


def cmd_report(args: argparse.Namespace) -> int:
    from ..progress import Progress, TqdmProgress

    quiet = getattr(args, "quiet", False)
    paths = build_report(args.run_dir, options_from_args(args), Progress() if quiet else TqdmProgress())
    if not quiet:
        for key, path in paths.items():
            print(f"{key}: {path}")
    return 0


def add_explain_report_options(p: argparse.ArgumentParser) -> None:
    """``--report`` plus the narrator and label options, for ``xaiseg explain``."""
    p.add_argument("--report", action="store_true", help="after the run, write NAME_findings.json, "
                   "NAME_report.json and NAME_report.html (see 'xaiseg report --help')")
    add_report_options(p)
