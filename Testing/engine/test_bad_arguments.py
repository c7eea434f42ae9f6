"""Every bad argument is refused before the model loads, through the command line and the worker.

One table: each row is a bad argument given both ways (command-line options and the worker's JSON
request), the error class it must raise and a phrase of its message.  For each row and each door
the test checks: exit status 2 and one line (the CLI) or one error event (the worker), the class
and the phrase, no output file afterwards, and - by the order of events, not by time - that the
segmenter was never loaded: the loader was not called, and no ``segmenter:`` log or segmentation
stage came before the error.  The file-level table of test_input_integrity.py runs through the
worker here too.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

import pytest

from xaiseg import errors
from xaiseg.lock import LOCK_NAME

from frontdoor import BOX, BOX_KJI, TOY_ARGS, TOY_SEGMENTER, cli, record_loads, worker, write_labels, write_volume

OCCLUSION = {"methods": [{"name": "occlusion", "settings": {"patch": 16, "stride": 16}}]}


@dataclass
class Row:
    command: str  # segment or explain
    args: List[str]  # options after VOLUME (BOX and the toy model are added unless the row has a prompt)
    request: Dict[str, Any]  # changes to the worker's request; "explain" changes go into OCCLUSION's copy
    error: Type[errors.XAISegError]
    phrase: str
    cli_error: Optional[str] = None  # argparse refuses it first: a phrase of its line
    needs: List[str] = field(default_factory=list)  # "small_disk", "busy"


def _explain(**changes) -> Dict[str, Any]:
    return {"explain": dict(OCCLUSION, **changes)}


REPORT = {"narrator": "template"}

ROWS = {
    "explained slice outside the volume": Row(
        "explain", ["--slices", "99"], _explain(slices=[99]), errors.InputError,
        "explain slice(s) [99] lie outside the volume, which has 6 slices (0..5) along axis 0"),
    "explained slice the prompt does not segment": Row(
        "explain", ["--slices", "5"], _explain(slices=[5]), errors.InputError,
        "explain slice(s) [5] are not segmented: the prompt covers slice(s) 1-3 along axis 0"),
    "unknown method": Row("explain", ["--method", "gradcam"], _explain(methods=["gradcam"]), errors.InputError,
                          "'gradcam' is unknown"),
    "method setting out of range": Row(
        "explain", ["--patch=-1"], _explain(methods=[{"name": "occlusion", "settings": {"patch": -1}}]),
        errors.InputError, "patch -1"),
    "CLIP ROI without weights": Row("explain", ["--roi", "clip"], _explain(roi={"source": "clip"}), errors.InputError,
                                    "the CLIP ROI needs CLIP weights"),
    "CLIP weights folder missing": Row(
        "explain", ["--roi", "clip", "--clip-model", "{tmp}/no-clip"],
        _explain(roi={"source": "clip", "clip_model": "{tmp}/no-clip"}), errors.WeightsMissingError,
        "CLIP model {tmp}/no-clip is not a folder"),
    "CLIP folder without a model": Row(
        "explain", ["--roi", "clip", "--clip-model", "{empty}"],
        _explain(roi={"source": "clip", "clip_model": "{empty}"}), errors.WeightsMissingError,
        "CLIP model folder {empty} has no config.json"),
    "CLIP name not in the cache": Row(
        "explain", ["--roi", "clip", "--clip-model", "nobody/no-such-clip"],
        _explain(roi={"source": "clip", "clip_model": "nobody/no-such-clip"}), errors.WeightsMissingError,
        "'nobody/no-such-clip' is neither a local folder nor in the Hugging Face cache"),
    "LLaVA narrator without a model": Row(
        "explain", ["--report", "--narrator", "llava"], _explain(report={"narrator": "llava"}), errors.InputError,
        "--narrator llava needs --llava-model FOLDER"),
    "LLaVA folder without a model": Row(
        "explain", ["--report", "--narrator", "llava", "--llava-model", "{empty}"],
        _explain(report={"narrator": "llava", "llava_model": "{empty}"}), errors.WeightsMissingError,
        "LLaVA model folder {empty} has no config.json"),
    "LLaVA with no tokens to write": Row(
        "explain", ["--report", "--narrator", "llava", "--llava-model", "{empty}", "--max-new-tokens", "0"],
        _explain(report={"narrator": "llava", "llava_model": "{empty}", "max_new_tokens": 0}), errors.InputError,
        "narrator max_new_tokens 0 must be at least 1"),
    "OpenAI narrator without an endpoint": Row(
        "explain", ["--report", "--narrator", "openai"], _explain(report={"narrator": "openai"}), errors.InputError,
        "the openai narrator is off until configured"),
    "OpenAI endpoint not http": Row(
        "explain", ["--report", "--narrator", "openai", "--openai-base-url", "ftp://host/v1", "--openai-model", "m"],
        _explain(report={"narrator": "openai", "openai_base_url": "ftp://host/v1", "openai_model": "m"}),
        errors.InputError, "narrator base URL 'ftp://host/v1' must be http(s)://"),
    "labels and atlas together": Row(
        "explain", ["--report", "--labels", "{labels}", "--atlas", "harvard-oxford"],
        _explain(report={"labels": "{labels}", "atlas": "harvard-oxford"}), errors.InputError,
        "give --labels or --atlas, not both"),
    "label map for the report missing": Row(
        "explain", ["--report", "--labels", "{tmp}/none.nii.gz"], _explain(report={"labels": "{tmp}/none.nii.gz"}),
        errors.InputError, "label map {tmp}/none.nii.gz does not exist"),
    "ground truth missing": Row(
        "explain", ["--ground-truth", "{tmp}/none.nrrd"], _explain(target="{tmp}/none.nrrd"), errors.FileFormatError,
        "{tmp}/none.nrrd does not exist"),
    "ground truth without its label": Row(
        "explain", ["--ground-truth", "{labels}", "--ground-truth-label", "7"],
        _explain(target="{labels}", target_label=7), errors.InputError, "has no label 7 on the volume's grid"),
    "output format": Row("segment", ["--format", "dicom"], {"format": "dicom"}, errors.InputError,
                         "output format 'dicom' is unknown", cli_error="invalid choice: 'dicom'"),
    "not a torch device": Row("segment", ["--device", "gpu0"], {"segmenter": dict(TOY_SEGMENTER, device="gpu0")},
                              errors.InputError, "device 'gpu0' is not a torch device"),
    "device this machine lacks": Row("segment", ["--device", "cuda:7"],
                                     {"segmenter": dict(TOY_SEGMENTER, device="cuda:7")}, errors.InputError,
                                     "device 'cuda:7'"),
    "point off the slice grid": Row("segment", ["--points=-0.4,5,2"],
                                    {"prompt": {"type": "points", "points_kji": [[2, 5, -0.4]]}}, errors.PromptError,
                                    "slice 2: point (-0.4, 5.0) lies outside the image of 32 x 32 pixels"),
    "label absent from the label-map prompt": Row(
        "segment", ["--box-from", "{labels}", "--label", "9"], {"prompt": {"type": "labelmap", "file": "{labels}",
                                                                          "label": 9}},
        errors.PromptError, "label 9 does not occur in the label map"),
    "slice range that misses the box": Row("segment", ["--slice-range", "4-5"], {"slice_range": [4, 5]},
                                           errors.PromptError, "slice range 4..5 does not overlap the box"),
    "replacement that is not finite": Row("segment", ["--replace-nonfinite", "nan"], {"replace_nonfinite": "nan"},
                                          errors.InputError, "replace_nonfinite 'nan' must be a finite number"),
    "disk too small for the outputs": Row("explain", ["--slices", "1-3"], _explain(slices=[1, 2, 3]),
                                          errors.DiskFullError, "this run needs about", needs=["small_disk"]),
    "output folder in use": Row("segment", [], {}, errors.OutputBusyError,
                                "is in use by another xaiseg run (pid {holder})", needs=["busy"]),
}


def _fill(value, names: Dict[str, str]):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@pytest.fixture
def place(tmp_path, request):
    """The row's files: a volume, a label map, an empty folder; its output folder (on a small disk
    or held by another run when the row needs it)."""
    row = ROWS[request.param]
    names = {"tmp": str(tmp_path), "volume": str(write_volume(tmp_path / "v.nrrd")),
             "labels": str(write_labels(tmp_path / "labels.nrrd")), "empty": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    holder = None
    if "small_disk" in row.needs:
        from test_disk_full import tmpfs

        with tmpfs(tmp_path / "disk", 64 << 10) as disk:
            yield row, names, disk
        return
    if "busy" in row.needs:
        from test_lock import Holder

        holder = Holder(tmp_path / "busy", "os")
        names["holder"] = str(holder.proc.pid)
        try:
            yield row, names, tmp_path
        finally:
            holder.release()
        return
    yield row, names, tmp_path


def _outputs(out: Path) -> List[str]:
    """Files in the output folder other than a lock another run holds."""
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) if out.exists() else []


def _skip_if_cuda(row: Row) -> None:
    if "cuda" in row.args and __import__("torch").cuda.is_available():  # pragma: no cover - GPU machines
        pytest.skip("this machine has CUDA")


@pytest.mark.parametrize("place", list(ROWS), ids=list(ROWS), indirect=True)
def test_refused_by_the_command_line_before_the_model(place, monkeypatch, capsys):
    row, names, root = place
    if "cuda:7" in row.args:
        _skip_if_cuda(row)
    loads = record_loads(monkeypatch)
    out = root / "busy" if "busy" in row.needs else root / "out"
    prompt = [] if any(a.startswith(("--points", "--box-from")) for a in row.args) else BOX
    argv = _fill([row.command, "{volume}", *prompt, *row.args, *TOY_ARGS, "-q", "-o", str(out)], names)
    code, lines = cli(argv, capsys)
    phrase = _fill(row.cli_error or row.phrase, names)
    assert code == 2 and len(lines) == 1 and phrase in lines[0], lines
    assert lines[0].startswith("xaiseg") and ": error: " in lines[0]
    assert _outputs(out) == [] and loads == []
    if row.cli_error is None:  # the same refusal, as the exception the command raises
        from xaiseg.cli import build_parser

        args = build_parser().parse_args(argv)
        with pytest.raises(row.error) as info:
            args.func(args)
        assert type(info.value) is row.error and phrase in str(info.value)
        assert _outputs(out) == [] and loads == []


@pytest.mark.parametrize("place", list(ROWS), ids=list(ROWS), indirect=True)
def test_refused_by_the_worker_before_the_model(place, monkeypatch, capfd):
    row, names, root = place
    if "cuda:7" in row.args:
        _skip_if_cuda(row)
    loads = record_loads(monkeypatch)
    out = root / "busy" if "busy" in row.needs else root / "out"
    request = {"input": "{volume}", "output_dir": str(out), "prompt": BOX_KJI, "segmenter": TOY_SEGMENTER}
    request.update(copy.deepcopy(row.request))
    code, events, err = worker(_fill(request, names), Path(names["tmp"]), capfd)
    last = events[-1]
    assert code == 2 and last["event"] == "error", (events, err)
    assert last["error"] == row.error.__name__ and _fill(row.phrase, names) in last["message"], last
    assert _outputs(out) == [] and loads == []
    before = events[:-1]
    assert not any(e["event"] == "log" and e["message"].startswith("segmenter:") for e in before), before
    assert not any(e["event"] == "stage" for e in before), before
    assert "Traceback" not in err


# -- the file-level table (test_input_integrity.py) through the worker -------------------------------

def _file_rows():
    from test_input_integrity import BAD_INPUTS

    return BAD_INPUTS


@pytest.mark.parametrize("row", list(_file_rows()), ids=list(_file_rows()))
def test_bad_files_refused_by_the_worker_before_the_model(tmp_path, monkeypatch, capfd, row):
    build, error, phrase = _file_rows()[row]
    path = build(tmp_path)
    loads = record_loads(monkeypatch)
    out = tmp_path / "out"
    code, events, err = worker({"input": str(path), "output_dir": str(out), "segmenter": TOY_SEGMENTER,
                                "prompt": {"type": "slice_box", "box": [1, 1, 4, 4], "slice": 0}}, tmp_path, capfd)
    last = events[-1]
    assert code == 2 and last["event"] == "error" and last["error"] == error.__name__, (events, err)
    assert phrase in last["message"] and loads == [] and not out.exists()


# -- what the flags let through, and what the run record then says ----------------------------------

def test_allow_gaps_goes_on_and_the_run_record_names_the_gap(tmp_path, capfd):
    import json

    from test_input_integrity import dicom_series

    series = dicom_series(tmp_path / "gap", drop=(3,))
    args = [str(series), "--box", "20,20,0,100,100,5", "--percentiles", "1,99", *TOY_ARGS, "-q"]
    code, lines = cli(["segment", *args, "-o", str(tmp_path / "refused")], capfd)
    assert code == 2 and "no slice between instance 3" in lines[0] and not (tmp_path / "refused").exists()
    code, lines = cli(["explain", *args, "--allow-gaps", "--slices", "2", "--patch", "32", "--stride", "32",
                       "--metric-steps", "0", "-o", str(tmp_path / "cli")], capfd)
    assert code == 0, lines
    for doc in (json.loads((tmp_path / "cli" / "gap_run.json").read_text()),
                json.loads((tmp_path / "cli" / "gap_metrics.json").read_text())["record"]):
        (gap,) = doc["input_integrity"]["gaps"]
        assert (gap["after_instance"], gap["before_instance"], gap["missing_slices"]) == (3, 5, 1)
        assert doc["input_integrity"]["filled_slices"] == [3]
    code, events, _ = worker({"input": str(series), "output_dir": str(tmp_path / "w"), "segmenter": TOY_SEGMENTER,
                              "allow_gaps": True, "prompt": {"type": "slice_box", "box": [20, 20, 100, 100],
                                                             "slice": 2}}, tmp_path, capfd)
    assert code == 0 and any("gap" in e.get("message", "") for e in events if e["event"] == "log"), events
    assert json.loads((tmp_path / "w" / "gap_run.json").read_text())["input_integrity"]["filled_slices"] == [3]


def test_replace_nonfinite_goes_on_and_the_run_record_counts_them(tmp_path, capsys):
    import json

    import numpy as np
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(write_volume(tmp_path / "v.nrrd"))))
    arr[2, 3, 4], arr[2, 5, 6] = np.nan, -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "bad.nii.gz"))
    args = ["segment", str(tmp_path / "bad.nii.gz"), *BOX, *TOY_ARGS, "-q"]
    code, lines = cli(args + ["-o", str(tmp_path / "refused")], capsys)
    assert code == 2 and "2 NaN or infinite voxel(s)" in lines[0] and "--replace-nonfinite VALUE" in lines[0]
    code, lines = cli(args + ["--replace-nonfinite", "0.25", "-o", str(tmp_path / "out")], capsys)
    assert code == 0, lines
    record = json.loads((tmp_path / "out" / "bad_run.json").read_text())
    assert record["nonfinite_replaced"] == {"replaced": 2, "value": 0.25, "nan": 1, "posinf": 0, "neginf": 1}
    assert record["input_integrity"]["nonfinite"] == {"nan": 1, "posinf": 0, "neginf": 1}


HOSTILE = ["../escaped", "/etc/passwd", "a/../../b", "..", ".hidden", "CON", "nul.txt", "x\x00y", "tab\tname",
           "évidence/../..", "\u202eevil", "a" * 400, "C:\\Windows\\system32", "~/home"]


@pytest.mark.parametrize("name", HOSTILE, ids=[repr(n)[:24] for n in HOSTILE])
def test_hostile_names_write_only_inside_the_output_folder(tmp_path, capfd, name):
    from frontdoor import tree

    src = write_volume(tmp_path / "in" / "v.nrrd")
    before = tree(tmp_path)
    code, lines = cli(["explain", str(src), *BOX, *TOY_ARGS, "--slices", "2", "--patch", "32", "--stride", "32",
                       "--metric-steps", "0", "--name", name, "-q", "-o", str(tmp_path / "cli")], capfd)
    assert code == 0, lines
    code, events, _ = worker({"input": str(src), "output_dir": str(tmp_path / "w"), "name": name,
                              "segmenter": TOY_SEGMENTER, "prompt": BOX_KJI}, tmp_path, capfd)
    assert code == 0, events
    after = tree(tmp_path)
    new = sorted(set(after) - set(before))
    assert all(p.startswith(("cli/", "w/")) for p in new), new
    assert not [p for p in new if "/." in p or p.count("/") > 1], new
    assert len([p for p in new if p.startswith("cli/") and p.endswith("_mask.nrrd")]) == 1
