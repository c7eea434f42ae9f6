"""Grounded narrative and structured report of a finished run (issue 7, seeds 000 and 004).

``build_report(run_dir, ReportOptions(...))`` writes NAME_findings.json (JSON Schema in
``findings.schema.json``), NAME_report.json and a self-contained NAME_report.html.  Narrators:
template (default, offline), LLaVA through transformers from a local folder, and any
OpenAI-compatible chat endpoint; model text is checked against findings.  Heavy dependencies
(jsonschema, transformers) are imported where used.
"""
from __future__ import annotations

from .base import Narrative, Narrator, ReportImage
from .checker import check_text
from .findings import build_findings, model_context, validate
from .report import ReportOptions, build_report

__all__ = ["build_report", "ReportOptions", "build_findings", "validate", "model_context", "check_text",
           "Narrator", "Narrative", "ReportImage"]
