"""One typed run request for the command line, the worker and Slicer; one description per method.

* A toy method defined in this file (one class) appears everywhere a method is listed: the
  command line's help and options, the cost, the findings' limits, the worker.
* The command line and the worker, given the same request, write identical maps.
* Parsers name the bad key and value; ``from_dict(to_dict(r)) == r``.
"""
import json
from dataclasses import dataclass

import numpy as np
import pytest
import SimpleITK as sitk

from xaiseg import errors
from xaiseg.explain import Attribution, CommonSettings, Explainer, register
from xaiseg.explain.registry import unregister
from xaiseg.settings import setting

from test_explain import write_toy_volume
from toys import SquareEvidence

BOX = ["--box", "36,36,1,55,55,1"]


@dataclass(frozen=True)
class BumpSettings(CommonSettings):
    radius: float = setting(4.0, "toy bump: radius of the bump in pixels", minimum=0.5, flag="--bump-radius")


class Bump(Explainer):
    """A toy method: a Gaussian bump at the prompt box's centre, whatever the model does."""

    name = "toy_bump"
    title = "Toy bump"
    limits = "the toy bump shows the box centre, not the model's evidence"
    Settings = BumpSettings

    def cost(self, roi_extent=None, grid=256):
        return 0

    def attribute(self, engine):
        x0, y0, x1, y1 = engine.prompt.box
        yy, xx = np.mgrid[0:engine.image.shape[0], 0:engine.image.shape[1]]
        d2 = (xx - (x0 + x1) / 2) ** 2 + (yy - (y0 + y1) / 2) ** 2
        return Attribution(np.exp(-d2 / (2 * self.radius ** 2)), {"radius_px": self.radius})


@pytest.fixture
def bump():
    register(Bump)
    yield Bump
    unregister(Bump.name)


@pytest.fixture
def toy_model(monkeypatch):
    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: SquareEvidence())


def test_a_method_described_once_appears_everywhere(bump, toy_model, tmp_path, capfd):
    from xaiseg.cli import build_parser, main
    from xaiseg.narrate import build_findings
    from xaiseg.request import RunRequest

    help_text = build_parser()._subparsers._group_actions[0].choices["explain"].format_help()
    assert "toy_bump" in help_text and "--bump-radius" in help_text and "radius of the bump" in help_text
    assert bump(radius=2).total_cost() == 0 + 16  # its own cost plus the metrics stage's 2 x 8 passes

    src = write_toy_volume(tmp_path / "toy.nrrd")
    out = tmp_path / "cli"
    assert main(["explain", str(src)] + BOX + ["--method", "toy_bump,occlusion", "--bump-radius", "3", "--patch",
                                              "32", "--metric-steps", "2", "-q", "-o", str(out)]) == 0
    doc = json.loads((out / "toy_metrics.json").read_text())
    assert doc["methods"]["toy_bump"]["settings"]["radius"] == 3.0
    assert doc["methods"]["toy_bump"]["slices"]["1"]["radius_px"] == 3.0
    findings = build_findings(out)
    assert findings["methods"]["toy_bump"]["limits"] == Bump.limits

    request = RunRequest.from_dict({"input": str(src), "output_dir": str(tmp_path / "worker"), "prompt": {
        "type": "box", "lo_kji": [1, 36, 36], "hi_kji": [1, 55, 55]},
        "explain": {"methods": [{"name": "toy_bump", "settings": {"radius": 3}}]}})
    assert request.explain.methods[0].settings.radius == 3.0
    assert _worker(tmp_path, request, capfd)["event"] == "result"
    assert (tmp_path / "worker" / "toy_toy_bump_saliency.nrrd").is_file()


def _worker(tmp_path, request, capfd):
    """Run the worker's main in this process on ``request`` (so it sees this file's toy method)."""
    from xaiseg.worker import main

    path = tmp_path / "request.json"
    path.write_text(json.dumps(request.to_dict()))
    capfd.readouterr()
    main([str(path)])
    events = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    return events[-1]


def test_the_command_line_and_the_worker_write_identical_maps(toy_model, tmp_path, capfd):
    from xaiseg.cli import build_parser, main
    from xaiseg.cli_options import request_from_args

    src = write_toy_volume(tmp_path / "toy.nrrd")
    argv = ["explain", str(src)] + BOX + ["--method", "occlusion,rise", "--patch", "32", "--stride", "16",
                                         "--masks", "100", "--seed", "7", "--metric-steps", "2", "--roi", "box",
                                         "--roi-margin", "20", "-q", "-o", str(tmp_path / "cli")]
    assert main(argv) == 0
    request = request_from_args(build_parser().parse_args(argv), explain=True)
    final = _worker(tmp_path, request.replace(output_dir=str(tmp_path / "worker")), capfd)
    assert final["event"] == "result", final
    assert final["files"]["occlusion_saliency"] == "toy_occlusion_saliency.nrrd"
    for method in ("occlusion", "rise"):
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / f"toy_{method}_saliency.nrrd")))
                for d in ("cli", "worker"))
        assert np.array_equal(a, b) and (a.any() or method == "rise")  # RISE finds no evidence here


def test_the_request_round_trips_and_holds_every_default(tmp_path):
    from xaiseg.cli import build_parser
    from xaiseg.cli_options import request_from_args
    from xaiseg.request import RunRequest

    src = write_toy_volume(tmp_path / "toy.nrrd")
    args = build_parser().parse_args(["explain", str(src)] + BOX + ["-o", str(tmp_path / "o"), "--slices", "0-2"])
    request = request_from_args(args, explain=True)
    assert RunRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    # the defaults come from the request's dataclasses: the embedding ROI, structure-sized occlusion
    assert request.explain.roi.source == "embedding" and request.explain.roi.margin == 0
    occlusion = request.explain.methods[0]
    assert (occlusion.name, occlusion.settings.patch, occlusion.settings.stride) == ("occlusion", 0, 0)
    assert request.explain.slices == (0, 1, 2) and request.name == "toy"
    assert request.prompt.to_dict() == {"type": "box", "lo_kji": [1, 36, 36], "hi_kji": [1, 55, 55]}


@pytest.mark.parametrize("change, message", [
    ({"explain": {"methods": [{"name": "occlusion", "settings": {"patch": "big"}}]}}, "occlusion settings.patch 'big'"),
    ({"explain": {"methods": [{"name": "rise", "settings": {"masks": 10}}]}}, "unknown setting(s) masks"),
    ({"explain": {"methods": [{"name": "layers", "settings": {"stage": 4}}]}}, "layers settings.stage 4"),
    ({"explain": {"methods": ["gradcam"]}}, "'gradcam' is unknown"),
    ({"explain": {"methods": ["occlusion"], "common": {"sanity": "maybe"}}}, "sanity 'maybe' must be true or false"),
    ({"explain": {"methods": ["occlusion"], "roi": {"source": "clip"}}}, "clip_model"),
    ({"segmenter": {"kind": "medsam"}}, "needs a checkpoint"),
    ({"segmenter": {"kind": "litemedsam", "device": 3}}, None),
    ({"preprocessing": {"mode": "window", "window": "brian"}}, "CT window 'brian'"),
    ({"slice_range": [9, 3]}, "slice range 9..3"),
    ({"margin": -1}, "margin -1"),
    ({"threads": 0}, "threads 0"),
    ({"format": "dicom"}, "output format 'dicom'"),
    ({"prompt": {"type": "box", "lo_kji": [0, 0]}}, "prompt lo_kji [0, 0] must be 3 numbers"),
    ({"prompt": {"type": "points", "points_kji": [[1, 2, 3]], "labels": [0]}}, "at least one positive point"),
    ({"colour": "red"}, "unknown key(s) colour"),
])
def test_parsers_name_the_bad_key_and_value(tmp_path, change, message):
    from xaiseg.request import RunRequest

    data = {"input": "v.nrrd", "output_dir": "out", "prompt": {"type": "box", "lo_kji": [0, 0, 0], "hi_kji": [1, 1, 1]}}
    data.update(change)
    if message is None:  # a number where text is expected is read as text
        assert RunRequest.from_dict(data, tmp_path).segmenter.device == "3"
        return
    with pytest.raises(errors.XAISegError) as info:
        RunRequest.from_dict(data, tmp_path)
    assert message in str(info.value)


def test_hostile_names_stay_inside_the_output_folder(tmp_path):
    from xaiseg.request import RunRequest

    for name in ("../escaped", "/etc/passwd", "a/../../b", "..", "", ".hidden"):
        request = RunRequest.from_dict({"input": "v.nrrd", "output_dir": "out", "name": name, "prompt": {
            "type": "box", "lo_kji": [0, 0, 0], "hi_kji": [1, 1, 1]}}, tmp_path)
        assert "/" not in request.name and not request.name.startswith(".") and request.name
