"""``xaiseg audit``: many cases from a CSV, in this process or on a Dask LocalCluster, one metrics
table, resumption, and failing cases (a bad row, a missing file, a worker that dies) recorded while
the others go on.  The segmenter is the real toy ``toys:ramp`` (mask = intensity above 0.5), which
the cluster's worker processes build from the same factory."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from frontdoor import child_env, cli, write_labels, write_volume

TOY = ["--model", "torch", "--factory", "toys:ramp", "--class-index", "0"]
SETTINGS = ["--method", "occlusion", "--metric-steps", "2", "--masks", "40", "--no-png"]
GOOD = ("v1_block", "v2_box")


def cases_file(folder: Path, crash: bool = False, missing: bool = False) -> Path:
    """Two good cases (a label-map prompt with a ground truth; a box prompt with its own methods),
    and optionally a case whose factory kills its process and one whose image is missing."""
    write_volume(folder / "v1.nrrd", seed=1)
    write_volume(folder / "v2.nrrd", seed=2)
    write_labels(folder / "labels.nrrd")
    rows = ["image,labels,label,box,structure,ground_truth,methods,segmenter",
            "v1.nrrd,labels.nrrd,1,,block,labels.nrrd,,",
            'v2.nrrd,,,"2,2,1,20,20,3",box,,occlusion;rise,']
    if crash:
        rows.append('v2.nrrd,labels.nrrd,1,,crash,,,"{""factory"": ""toys:crash""}"')
    if missing:
        rows.append("gone.nrrd,labels.nrrd,1,,block,,,")
    path = folder / "cases.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def table(outdir: Path) -> dict:
    with open(outdir / "audit_metrics.csv", newline="") as fh:
        return {(r["case"], r["method"]): r for r in csv.DictReader(fh)}


def without_timing(row: dict) -> dict:
    from xaiseg.audit_table import TIMING

    return {k: v for k, v in row.items() if k not in TIMING}


def saliency(outdir: Path, case: str, name: str, method: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(outdir / case / f"{name}_{method}_saliency.nrrd")))


def test_a_cluster_audit_equals_the_in_process_one_and_records_a_worker_that_died(tmp_path, capfd, monkeypatch):
    pytest.importorskip("distributed")
    cases = cases_file(tmp_path, crash=True)
    local, remote = tmp_path / "local", tmp_path / "cluster"
    good = tmp_path / "good.csv"  # in this process the crashing case would end the test run itself
    good.write_text("\n".join(cases.read_text().splitlines()[:3]) + "\n")
    code, err = cli(["audit", str(good), "-o", str(local), *TOY, *SETTINGS], capfd)
    assert code == 0, err
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])  # the workers build toys:ramp too
    code, err = cli(["audit", str(cases), "-o", str(remote), *TOY, *SETTINGS, "--local-cluster", "2",
                     "--worker-memory", "1.5GiB"], capfd)
    assert code == 1  # one case failed; the audit finished

    mine, theirs = table(local), table(remote)
    assert set(mine) == {("v1_block", "occlusion"), ("v2_box", "occlusion"), ("v2_box", "rise")}
    for key, row in mine.items():
        assert row["status"] == "done" and float(row["deletion_auc"]) >= 0
        assert without_timing(theirs[key]) == without_timing(row)
    assert mine[("v1_block", "occlusion")]["dice"] != "" and mine[("v2_box", "rise")]["dice"] == ""
    # Dice against the ground truth on the slices the label-map prompt segmented (those holding the label)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(local / "v1_block" / "block_mask.nrrd"))) > 0
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels.nrrd"))) == 1
    ks = np.nonzero(truth.any(axis=(1, 2)))[0]
    m, t = mask[ks], truth[ks]
    assert float(mine[("v1_block", "occlusion")]["dice"]) == pytest.approx(2 * (m & t).sum() / (m.sum() + t.sum()),
                                                                          abs=1e-4)
    crashed = theirs[("v2_crash", "occlusion")]
    assert crashed["status"] == "failed" and "died" in crashed["error"]
    for case, name, method in (("v1_block", "block", "occlusion"), ("v2_box", "box", "occlusion"),
                               ("v2_box", "box", "rise")):
        a, b = saliency(local, case, name, method), saliency(remote, case, name, method)
        assert a.any() and np.array_equal(a, b)
    state = json.loads((remote / "audit_state.json").read_text())["cases"]
    assert {n: s["status"] for n, s in state.items()} == {"v1_block": "done", "v2_box": "done", "v2_crash": "failed"}
    assert not list((remote / "v2_crash").glob(".xaiseg-*"))
    assert (remote / "audit_deletion_auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (remote / "audit_metrics.md").read_text()
    assert "| v1_block | block | occlusion | done |" in md and "- v2_crash: the worker running" in md


def test_an_audit_resumes_where_it_stopped_and_reruns_what_changed(tmp_path, capfd):
    cases = cases_file(tmp_path, missing=True)
    out = tmp_path / "out"
    code, err = cli(["audit", str(cases), "-o", str(out), *TOY, *SETTINGS], capfd)
    assert code == 1
    first = table(out)
    assert first[("gone_block", "occlusion")]["status"] == "failed"
    assert "gone.nrrd does not exist" in first[("gone_block", "occlusion")]["error"]
    v1_mask = out / "v1_block" / "block_mask.nrrd"
    stamp = v1_mask.stat().st_mtime_ns
    (out / "v2_box" / "box_rise_saliency.nrrd").unlink()  # case v2_box is no longer complete

    from xaiseg.audit import read_cases, run_audit
    from xaiseg.cli import build_parser
    from xaiseg.cli_options import explain_dict, run_dict

    args = build_parser().parse_args(["audit", str(cases), "-o", str(out), *TOY, *SETTINGS])
    again = run_audit(read_cases(cases, out, run_dict(args), lambda m: explain_dict(args, m)), out)
    assert again.skipped == ["v1_block"] and again.failed == ["gone_block"]
    assert v1_mask.stat().st_mtime_ns == stamp
    assert (out / "v2_box" / "box_rise_saliency.nrrd").is_file()
    assert {k: without_timing(v) for k, v in table(out).items()} == {k: without_timing(v) for k, v in first.items()}

    # other settings are another request: every case runs again
    code, _ = cli(["audit", str(cases), "-o", str(out), *TOY, *SETTINGS, "--metric-steps", "3"], capfd)
    assert code == 1 and v1_mask.stat().st_mtime_ns != stamp
    assert table(out)[("v1_block", "occlusion")]["encoder_passes"] != first[("v1_block", "occlusion")]["encoder_passes"]
    state = json.loads((out / "audit_state.json").read_text())
    assert state["cases"]["gone_block"]["status"] == "failed" and state["cases"]["v1_block"]["status"] == "done"
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.name != ".xaiseg.lock"]


@pytest.mark.parametrize("content, expected", [
    ("image,prompt\nv.nrrd,x\n", "unknown column(s) ['prompt']"),
    ("image,labels\n", "has no case rows"),
    ("name,image,labels\na,v1.nrrd,l.nrrd\na,v2.nrrd,l.nrrd\n", "rows 2 and 3 are both named 'a'"),
])
def test_a_bad_cases_file_is_refused_before_any_case_runs(tmp_path, capfd, content, expected):
    path = tmp_path / "cases.csv"
    path.write_text(content)
    code, err = cli(["audit", str(path), "-o", str(tmp_path / "out"), *TOY], capfd)
    assert code == 2 and expected in err[-1]
    assert not (tmp_path / "out").exists()


def test_a_bad_row_is_a_failed_case_named_with_its_reason(tmp_path):
    from xaiseg.audit import read_cases

    path = tmp_path / "cases.csv"
    path.write_text("name,image,labels,box,methods\na,v.nrrd,l.nrrd,,\nb,v.nrrd,,1 2 3,\nc,v.nrrd,l.nrrd,,nosuch\n"
                    "d,v.nrrd,,\"1,2,3,4,5,6\",occlusion\n")
    cases = read_cases(path, tmp_path / "out")
    assert [c.error is None for c in cases] == [True, False, False, True]
    assert "box '1 2 3' must be 6 numbers" in cases[1].error
    assert "method 'nosuch' is unknown" in cases[2].error
    prompt = cases[3].request["prompt"]
    assert prompt == {"type": "box", "lo_kji": [3, 2, 1], "hi_kji": [6, 5, 4]}  # voxel i, j, k -> array k, j, i
    assert cases[0].request["input"] == os.path.join(str(tmp_path), "v.nrrd")
    assert cases[0].request["output_dir"] == str((tmp_path / "out" / cases[0].name).resolve())


def test_a_spreadsheet_export_with_a_trailing_comma_reads(tmp_path):
    """An unnamed last column (``image,structure,``) drops out instead of being an unknown column."""
    from xaiseg.audit import read_rows

    path = tmp_path / "cases.csv"
    path.write_text("image,structure,\nv1.nrrd,block,\n")
    assert read_rows(path) == [{"image": "v1.nrrd", "structure": "block"}]
