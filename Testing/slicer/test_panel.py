"""The panel's form, tested where the widget cannot run: the method list and every method's
settings come from the explainer classes (a toy method added here appears with its settings and
runs through the request), the same volume, prompt and settings give the same RunRequest from the
command line and from the panel, the ROI margin is the ROI's own default unless the user sets one,
explain slices are parsed by the request, and the CT window presets reach the request."""
import dataclasses
import sys
from dataclasses import dataclass

import numpy as np
import pytest

import slicer
from xaiseg.explain import Attribution, CommonSettings, Explainer, register
from xaiseg.explain.registry import unregister
from xaiseg.preprocess import CT_WINDOWS, Preprocessing
from xaiseg.settings import setting
from XAISegExtensionLib import mrml, panel
from XAISegExtensionLib.logic import RunSettings, XAISegLogic
from XAISegExtensionLib.run_settings import available_methods
from XAISegExtensionLib.mrml import InputError
from XAISegExtensionLib.parameters import PanelState, default_settings
from XAISegExtensionLib.selftest import roi_from_kji

PROMPT = {"type": "box", "lo_kji": [4, 10, 12], "hi_kji": [6, 30, 28]}


@dataclass(frozen=True)
class ToySettings(CommonSettings):
    radius: float = setting(4.0, "toy: radius of the disc in pixels", minimum=0.5, maximum=40.0, flag="--toy-radius")
    shape: str = setting("disc", "toy: shape of the map", choices=("disc", "square"), flag="--toy-shape")
    rings: int = setting(2, "toy: rings around the centre", minimum=1, flag="--toy-rings")


class Toy(Explainer):
    """A toy method: a disc at the prompt box's centre, whatever the model does."""

    name = "toy"
    title = "Toy disc"
    limits = "the toy disc shows the box centre, not the model's evidence"
    Settings = ToySettings

    def cost(self, roi_extent=None, grid=256):
        return 0

    def attribute(self, engine):
        x0, y0, x1, y1 = engine.prompt.box
        yy, xx = np.mgrid[0:engine.image.shape[0], 0:engine.image.shape[1]]
        inside = (xx - (x0 + x1) / 2) ** 2 + (yy - (y0 + y1) / 2) ** 2 <= self.radius ** 2
        return Attribution(inside.astype(np.float32), {"radius_px": self.radius})


@pytest.fixture
def toy():
    register(Toy)
    yield Toy
    unregister(Toy.name)


def request_of(values, **changes):
    values = dict(values, **changes)
    settings, _ = panel.from_form(values)
    return settings.request("/data/ct.nrrd", "/data/out", PROMPT, "case")


@pytest.fixture
def form():
    """The form as the panel opens (the panel's defaults), on the CPU."""
    values = panel.form_values(default_settings(), PanelState())
    values["device"] = "cpu"
    return values


def test_a_method_class_alone_gives_its_checkbox_and_its_settings_controls(toy, form):
    listed = {m["name"]: m for m in available_methods()}
    assert list(listed)[-1] == "toy" and listed["toy"]["title"] == "Toy disc"
    assert listed["toy"]["limits"] == Toy.limits and listed["toy"]["perturbs"] is True
    assert [(s["name"], s["type"], s["default"], s["minimum"], s["maximum"], s["choices"]) for s in
            listed["toy"]["settings"]] == [("radius", "float", 4.0, 0.5, 40.0, None),
                                           ("shape", "str", "disc", None, None, ("disc", "square")),
                                           ("rings", "int", 2, 1, None, None)]
    assert listed["toy"]["settings"][0]["help"] == "toy: radius of the disc in pixels"
    groups = {g: (title, controls) for g, title, controls in panel.control_groups()}
    title, controls = groups["toy"]
    assert title == "Toy disc"
    assert [(c.name, c.label, c.kind, c.default, c.minimum, c.maximum) for c in controls] == [
        ("radius", "toy radius", "float", 4.0, 0.5, 40.0), ("shape", "toy shape", "choice", "disc", -1e9, 1e9),
        ("rings", "toy rings", "int", 2, 1, 1e9)]
    assert controls[1].value(1) == "square" and controls[2].value(3.0) == 3
    assert [c.name for c in groups["common"][1]] == [f.name for f in dataclasses.fields(CommonSettings)]
    # checked in the panel, with its settings changed: the request carries it
    form = panel.form_values(default_settings())  # made while the toy is registered: it has its controls
    form["device"] = "cpu"
    assert form["settings"]["toy"] == {"radius": 4.0, "shape": "disc", "rings": 2}
    form["methods"] = ["toy"]
    form["settings"]["toy"].update(radius=2.5, shape="square")
    settings, _ = panel.from_form(form)
    assert settings.methods == ("toy",) and settings.method_settings["toy"] == {"radius": 2.5, "shape": "square",
                                                                                 "rings": 2}
    request = settings.request("/data/ct.nrrd", "/data/out", PROMPT, "case")
    (method,) = request.explain.methods
    assert method.name == "toy" and isinstance(method.settings, ToySettings)
    assert (method.settings.radius, method.settings.shape, method.settings.rings) == (2.5, "square", 2)
    direct = RunSettings(methods=("toy",), method_settings={"toy": {"radius": 2.5, "shape": "square"}},
                         common=form["settings"]["common"], preprocessing=settings.preprocessing, roi=settings.roi)
    assert direct.request("/data/ct.nrrd", "/data/out", PROMPT, "case") == request
    with pytest.raises(InputError, match="toy settings.radius 0.1 is too small; expected at least 0.5"):
        RunSettings(methods=("toy",), method_settings={"toy": {"radius": 0.1}}).check()


def test_unregistered_the_toy_is_gone_from_the_panel(form):
    assert "toy" not in {m["name"] for m in available_methods()}
    assert "toy" not in form["settings"]
    assert [g for g, _, _ in panel.control_groups()][1:] == [m["name"] for m in available_methods()]


def cli_request(argv):
    from xaiseg.cli import build_parser
    from xaiseg.cli_options import request_from_args

    return request_from_args(build_parser().parse_args(argv), explain=True)


def volume_file(scene, tmp_path):
    rng = np.random.default_rng(3)
    array = rng.normal(100, 10, (10, 40, 36)).astype(np.float32)
    volume = slicer.util.addVolumeFromArray(array, np.diag([-0.8, -0.9, 2.5, 1.0]), name="case")
    path = tmp_path / "case.nrrd"
    mrml.write_volume_file(volume, path)
    roi = roi_from_kji(scene, volume, (4, 10, 12), (6, 30, 28), "box")
    prompt, notes = mrml.box_prompt_from_roi(roi, volume)
    assert prompt == PROMPT and notes == []
    return volume, roi, path


def test_the_command_line_and_the_panel_make_the_same_request(scene, toy, tmp_path):
    volume, roi, path = volume_file(scene, tmp_path)
    out = tmp_path / "out"
    form = panel.form_values(default_settings())
    form["methods"] = ["occlusion", "rise", "toy"]
    form["settings"]["common"].update(seed=7, metric_steps=2, sanity=True)
    form["settings"]["occlusion"].update(patch=32, stride=16)
    form["settings"]["rise"].update(n_masks=100, early_stop=False)
    form["settings"]["toy"].update(radius=3.0)
    form.update(name="left caudate", device="cpu", roi_source="box", roi_margin=12, explain_slices="4-5",
                preprocessing_mode="window", window="brain", clahe=True, narrator="template", all_slices=False,
                slice_range=[4, 6])
    settings, _ = panel.from_form(form)
    from_panel = settings.request(str(path), str(out), mrml.box_prompt_from_roi(roi, volume)[0], "case left caudate")
    from_cli = cli_request(["explain", str(path), "--box", "12,10,4,28,30,6", "-o", str(out), "--name",
                            "case left caudate", "--method", "occlusion,rise,toy", "--seed", "7", "--metric-steps",
                            "2", "--sanity", "--patch", "32", "--stride", "16", "--masks", "100", "--no-early-stop",
                            "--toy-radius", "3", "--roi", "box", "--roi-margin", "12", "--slices", "4-5", "--window",
                            "brain", "--clahe", "--device", "cpu", "--slice-range", "4-6", "--report"])
    assert from_panel == from_cli
    assert from_panel.explain.slices == (4, 5) and from_panel.explain.roi.margin == 12
    assert from_panel.preprocessing == Preprocessing(mode="window", window="brain", clahe=True)


def test_the_panel_as_it_opens_makes_the_command_lines_default_request(scene, tmp_path):
    volume, roi, path = volume_file(scene, tmp_path)
    logic = XAISegLogic(scene, python=sys.executable)
    settings, _ = panel.from_form(panel.form_values(default_settings()))
    assert settings.device == "auto"
    settings = logic._resolved(settings)  # what start() does: auto becomes the device torch sees
    job = logic.buildJob(volume, roi, settings, write=False)  # the panel's own path: ROI node to request
    from_cli = cli_request(["explain", str(path), "--box", "12,10,4,28,30,6", "-o", str(tmp_path / "out"),
                            "--name", job.base_name, "--device", settings.device, "--report"])
    from_panel = job.request.replace(input=from_cli.input, output_dir=from_cli.output_dir)
    assert from_panel == from_cli
    # the command line's defaults won: the embedding ROI without margin, structure-sized occlusion
    assert from_panel.explain.roi.source == "embedding" and from_panel.explain.roi.margin == 0
    assert [m.name for m in from_panel.explain.methods] == ["occlusion"]
    assert from_panel.explain.methods[0].settings.patch == 0


def test_the_roi_margin_is_the_rois_own_unless_the_user_sets_one(form):
    assert form["roi_margin"] == panel.NO_MARGIN and form["roi_source"] == "embedding"
    margins = {(source, margin): request_of(form, roi_source=source, roi_margin=margin).explain.roi.margin
               for source in ("embedding", "box", "mask") for margin in (panel.NO_MARGIN, 0, 3)}
    assert margins == {("embedding", -1): 0, ("embedding", 0): 0, ("embedding", 3): 3,
                       ("box", -1): 8, ("box", 0): 0, ("box", 3): 3, ("mask", -1): 8, ("mask", 0): 0, ("mask", 3): 3}
    settings, _ = panel.from_form(dict(form, roi_source="box"))
    assert settings.roi == {"source": "box"}
    assert panel.form_values(settings)["roi_margin"] == panel.NO_MARGIN


def test_explain_slices_are_text_the_request_parses(form):
    assert request_of(form, explain_slices="80,82").explain.slices == (80, 82)
    assert request_of(form, explain_slices=" 80-84 ").explain.slices == (80, 81, 82, 83, 84)
    assert request_of(form, explain_slices="84, 80-81; 90").explain.slices == (80, 81, 84, 90)
    assert request_of(form, explain_slices="").explain.slices is None
    with pytest.raises(InputError, match="explain.slices 'eighty' must list slice indices like '80,82' or '80-84'"):
        request_of(form, explain_slices="eighty")
    settings, _ = panel.from_form(dict(form, explain_slices="80-84"))
    assert settings.explain_slices == "80-84" and panel.form_values(settings)["explain_slices"] == "80-84"


def test_preprocessing_choices_come_from_the_engine_and_reach_the_request(form):
    assert panel.choices("window") == tuple(CT_WINDOWS) and {"brain", "abdomen", "lung", "bone"} <= set(CT_WINDOWS)
    assert panel.choice_label("window", "lung") == "lung (level -600, width 1500 HU)"
    assert (form["preprocessing_mode"], form["lower"], form["upper"], form["clahe"]) == ("percentile", 0.5, 99.5,
                                                                                       False)
    assert request_of(form).preprocessing == Preprocessing()
    cases = {"window": dict(preprocessing_mode="window", window="bone"),
             "level_width": dict(preprocessing_mode="level_width", level=50.0, width=350.0, clahe=True),
             "minmax": dict(preprocessing_mode="minmax"),
             "percentile": dict(preprocessing_mode="percentile", lower=1.0, upper=99.0)}
    expected = {"window": Preprocessing(mode="window", window="bone"),
                "level_width": Preprocessing(mode="window", level=50.0, width=350.0, clahe=True),
                "minmax": Preprocessing(mode="minmax"), "percentile": Preprocessing(lower=1.0, upper=99.0)}
    for name, change in cases.items():
        request = request_of(form, **change)
        assert request.preprocessing == expected[name], name
        settings, _ = panel.from_form(dict(form, **change))
        back = panel.form_values(settings)
        assert {k: back[k] for k in change} == change, name  # the panel shows what was chosen
    with pytest.raises(InputError, match="percentiles 99.0/1.0 are invalid"):
        request_of(form, lower=99.0, upper=1.0)


def test_disabled_controls_are_not_sent_and_script_fields_survive_the_form(form):
    settings, _ = panel.from_form(dict(form, checkpoint="/models/x.pth", url="https://x", clip_prompts="a; b",
                                       clip_model="/clip", llava_model="/llava", sha256="00"))
    assert (settings.checkpoint, settings.url, settings.sha256, settings.report_options) == ("", "", "", {})
    assert settings.roi == {"source": "embedding"}
    settings, _ = panel.from_form(dict(form, roi_source="clip", clip_prompts="caudate nucleus; grey matter",
                                       clip_model="/clip", narrator="llava", llava_model="/llava"))
    assert settings.roi == {"source": "clip", "clip_model": "/clip", "clip_prompts": ["caudate nucleus", "grey matter"]}
    assert settings.report_options == {"llava_model": "/llava"}
    base = RunSettings(axis="coronal", margin=3, threads=2, class_index=4)
    settings, _ = panel.from_form(form, base)
    assert (settings.axis, settings.margin, settings.threads, settings.class_index) == ("coronal", 3, 2, 4)


def test_every_bound_key_is_a_form_value(form):
    keys = {key for key, _, _ in panel.BINDINGS}
    assert keys | {"methods", "settings"} == set(form)
    for key, _, kind in panel.BINDINGS:
        if kind == "choice":
            assert form[key] in panel.choices(key), key


def test_float_controls_step_by_their_scale():
    """A share (default within 1, no maximum above 1) steps by 0.05; an aspect, whose default 0 means
    "the method's own" and whose range is 1 - 10, steps by whole units, so one click from 0 is not refused."""
    controls = {(c.group, c.name): c for _, _, group in panel.control_groups() for c in group}
    assert controls[("occlusion", "smooth")].step == 0.05
    aspect = controls[("occlusion", "aspect")]
    assert (aspect.default, aspect.minimum, aspect.maximum, aspect.step) == (0.0, 0.0, 10.0, 1.0)
    assert controls[("rise", "cell_aspect")].step == 1.0
