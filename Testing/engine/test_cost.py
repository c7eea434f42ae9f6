"""The cost estimate in the engine (:mod:`xaiseg.cost`): it counts the encoder passes a run really
makes, ``xaiseg explain --estimate`` prints it without running the model, ``--calibrate`` times this
machine's passes and keeps them, and a normal run prints one line before it starts.  (How close
the minutes are is a benchmark: docs/benchmarks/cost.md.)"""
from __future__ import annotations

import json

import pytest

from frontdoor import BOX_KJI, TOY_ARGS, TOY_SEGMENTER, cli, record_loads, write_labels, write_volume


@pytest.fixture()
def case(tmp_path, monkeypatch):
    monkeypatch.setenv("XAISEG_CACHE", str(tmp_path / "cache"))
    return write_volume(tmp_path / "v.nrrd"), write_labels(tmp_path / "labels.nrrd")


def real_passes(outcome) -> int:
    """Encoder passes the run made: one per segmented slice, then each method's attribution and
    metrics (with the noise passes the methods on a slice share)."""
    doc = outcome.explanation.metrics()
    return outcome.segmentation.record["evaluations"]["encoder_passes"] + sum(
        int(s["evaluations"]) + int(s["metric_evaluations"]) for m in doc["methods"].values()
        for s in m["slices"].values())


@pytest.mark.parametrize("methods, common", [
    ([{"name": "rise", "settings": {"n_masks": 30, "early_stop": False}}], {"metric_steps": 2}),
    ([{"name": "rise", "settings": {"n_masks": 12, "early_stop": False}},
      {"name": "occlusion", "settings": {"patch": 256, "stride": 256}}], {"metric_steps": 3, "noise_passes": 1}),
    # the curves and the trivial maps on 2 of the 3 slices only
    ([{"name": "rise", "settings": {"n_masks": 12, "early_stop": False}},
      {"name": "occlusion", "settings": {"patch": 256, "stride": 256}}],
     {"metric_steps": 2, "baselines": True, "metric_slices": 2}),
    # curves removing with each method's own fill: RISE's (inpaint) and occlusion's (zero) trivial
    # maps are measured once each per slice
    ([{"name": "rise", "settings": {"n_masks": 12, "early_stop": False}},
      {"name": "occlusion", "settings": {"patch": 256, "stride": 256}}],
     {"metric_steps": 2, "baselines": True, "metric_fill": "method"}),
])
def test_the_estimate_counts_the_passes_a_run_makes(case, tmp_path, methods, common):
    from xaiseg.cost import estimate_plan
    from xaiseg.pipeline import read_input, run
    from xaiseg.preflight import preflight
    from xaiseg.request import RunRequest

    volume_path, labels = case
    request = RunRequest.from_dict({"input": str(volume_path), "output_dir": str(tmp_path / "out"),
                                    "prompt": {"type": "labelmap", "file": str(labels), "label": 1},
                                    "segmenter": TOY_SEGMENTER, "explain": {"methods": methods, "common": common,
                                                                            "pngs": False}})
    volume = read_input(request, lambda text: None)
    estimate = estimate_plan(request, preflight(request, volume), volume.shape)
    outcome = run(request)
    assert estimate["slices"] == 3 and estimate["explained_slices"] == 3
    assert estimate["encoder_passes"] == real_passes(outcome)
    assert not estimate["calibrated"] and estimate["seconds"] > 0


def test_estimate_prints_and_exits_before_the_model_loads(case, tmp_path, capfd, monkeypatch):
    volume_path, labels = case
    loads = record_loads(monkeypatch)
    argv = ["explain", str(volume_path), "-o", str(tmp_path / "out"), "--box-from", str(labels), "--label", "1",
            *TOY_ARGS, "--method", "rise", "--masks", "20", "--no-early-stop", "--metric-steps", "2"]
    capfd.readouterr()
    code, err = cli(argv + ["--estimate"], capfd)
    assert code == 0 and loads == [] and not (tmp_path / "out").exists()
    code, err = cli(argv + ["--calibrate"], capfd)
    assert code == 2 and "--calibrate goes with --estimate" in err[-1]

    from xaiseg.cli import main

    capfd.readouterr()
    assert main(argv + ["--estimate", "--calibrate"]) == 0
    first = capfd.readouterr().out.splitlines()[0]
    # 3 slices: 3 segmentation passes, and per slice 20 masks + 4 metric passes + 2 noise passes
    assert first.startswith("estimated 81 encoder passes, about ") and "(calibrated on this machine)" in first
    assert loads == ["torch"]
    saved = json.loads((tmp_path / "cache" / "calibration.json").read_text())
    (timing,) = saved.values()
    assert timing["seconds_encoder"] > 0 and timing["seconds_write_mb"] > 0

    assert main(argv + ["-q"]) == 0 and capfd.readouterr().out == ""  # quiet: no line
    assert main(argv + ["-o", str(tmp_path / "again")]) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == first and out[-1].startswith("-> ")  # the line comes first


def test_a_calibration_is_kept_per_segmenter_device_and_threads(tmp_path):
    from xaiseg.cost import load_calibration, save_calibration
    from xaiseg.request import RunRequest

    def request(**changes):
        data = {"input": "v.nrrd", "output_dir": "out", "prompt": {"type": "slice_box", "box": [1, 1, 4, 4],
                                                                   "slice": 0}, "segmenter": TOY_SEGMENTER}
        data.update(changes)
        return RunRequest.from_dict(data, tmp_path)

    path = tmp_path / "calibration.json"
    save_calibration(request(), {"seconds_encoder": 0.5, "seconds_decoder": 0.01, "seconds_load": 1.0}, path)
    save_calibration(request(threads=1), {"seconds_encoder": 0.9}, path)
    assert load_calibration(request(), path) == {"seconds_encoder": 0.5, "seconds_decoder": 0.01, "seconds_load": 1.0}
    assert load_calibration(request(threads=1), path) == {"seconds_encoder": 0.9}
    assert load_calibration(request(segmenter=dict(TOY_SEGMENTER, device="cuda")), path) is None
    path.write_text("not json")
    assert load_calibration(request(), path) is None


def test_reused_passes_and_a_calibration_without_write_timing():
    """LiteMedSAM's perturbed passes reuse the slice's activations, so they are charged at the
    share of a full pass that what they change costs (a patch less than the ROI); a torch model's
    are full passes; a calibration that did not time writing keeps the reference write figure."""
    from xaiseg.cost import REFERENCE_WRITE, estimate_counts, reuse_share
    from xaiseg.explain import make_explainer
    from xaiseg.request import RunRequest

    def request(segmenter):
        return RunRequest.from_dict({"input": "v.nrrd", "output_dir": "out", "segmenter": segmenter,
                                     "prompt": BOX_KJI,
                                     "explain": {"methods": [{"name": "occlusion"}], "common": {"metric_steps": 2}}})

    cal = {"seconds_encoder": 1.0, "seconds_decoder": 0.0, "seconds_load": 0.0}
    lite = estimate_counts(request({"kind": "litemedsam"}), 3, [(40.0, 40.0)] * 2, cal, output_bytes=10 ** 6)
    torch_ = estimate_counts(request(TOY_SEGMENTER), 3, [(40.0, 40.0)] * 2, cal, output_bytes=10 ** 6)
    assert lite["encoder_passes"] == torch_["encoder_passes"]          # the same passes are counted
    perturbed = lite["encoder_passes"] - 3
    write = REFERENCE_WRITE["seconds_write_mb"]
    assert lite["reuse"] and not torch_["reuse"]
    # the two explained slices' activation caches come from their segmentation passes
    reused = lite["full_pass_equivalents"] - 3
    assert lite["seconds"] == pytest.approx(3 + reused + write)
    assert torch_["seconds"] == pytest.approx(3 + perturbed + write)
    # per slice: the occlusion patches by their size, the curves' and the noise level's passes change the ROI
    # (scored by restore, every pass changes the whole ROI: it is inpainted but one patch)
    restore = make_explainer("occlusion", metric_steps=2, mode="restore")
    restored = restore.cost((40.0, 40.0))
    assert restore.cost_equivalents((40.0, 40.0), 256, reuse_share) == pytest.approx(reuse_share((40.0, 40.0)) * restored)
    # both (the default): each patch removed (its own share) and put back (the ROI's), and the inpainted
    # ROI once; with a budget of 9: the inpainted ROI and four cells, each removed and put back
    occlusion = make_explainer("occlusion", metric_steps=2)
    assert occlusion.scoring == "both"
    attribution = occlusion.cost((40.0, 40.0))
    patches = occlusion.cost_equivalents((40.0, 40.0), 256, reuse_share)
    assert attribution == 2 * (restored - 1) + 1
    assert patches == pytest.approx(
        make_explainer("occlusion", mode="remove").cost_equivalents((40.0, 40.0), 256, reuse_share)
        + restored * reuse_share((40.0, 40.0)))
    budget = make_explainer("occlusion", mode="both", passes=9)
    assert budget.cost_equivalents((40.0, 40.0), 256, reuse_share) == pytest.approx(
        4 * reuse_share((20.0, 20.0)) + 5 * reuse_share((40.0, 40.0)))
    removal = make_explainer("occlusion", metric_steps=2, mode="remove")
    assert removal.cost((40.0, 40.0)) == restored - 1  # no pass with the ROI removed
    # the default strips are each priced by their bounding box at 45 degrees; squares (aspect 1) by their side,
    # the refined ones by half of it
    width, length = removal.strip_sizes(removal._levels((40.0, 40.0), 256)[2])
    turned = (width + length) / 2 ** 0.5
    assert removal.cost_equivalents((40.0, 40.0), 256, reuse_share) == pytest.approx(
        (restored - 1) * reuse_share((turned, turned)))
    squares = make_explainer("occlusion", metric_steps=2, mode="remove", aspect=1.0)
    cells = squares.cost((40.0, 40.0))
    assert 2 * cells == restored - 1  # the estimate counts twice the squares' cells as strips
    assert reuse_share((8.0, 8.0)) * cells < squares.cost_equivalents((40.0, 40.0), 256, reuse_share) \
        < reuse_share((40.0, 40.0)) * cells
    assert reused == pytest.approx(2 * (patches + (perturbed / 2 - attribution) * reuse_share((40.0, 40.0))))
    # a larger ROI's passes cost more each, up to a full pass
    large = estimate_counts(request({"kind": "litemedsam"}), 3, [(150.0, 150.0)] * 2, cal)
    assert (large["full_pass_equivalents"] - 3) / (large["encoder_passes"] - 3) > reused / perturbed


def test_reuse_shares_follow_the_encoder(litemedsam):
    """The estimate's table of reuse shares by change size is LiteMedSAM's own cost model
    (tinyvit_reuse.relative_cost, the mean over four positions); unknown extents take the measured
    ROI-sized share, changes above the reuse limit a full pass."""
    from xaiseg.cost import REUSE_LIMIT, REUSE_SHARE, REUSE_SHARES, reuse_share
    from xaiseg.models import tinyvit_reuse as tr

    enc = litemedsam.module.image_encoder
    assert REUSE_LIMIT == litemedsam.reuse_limit
    for side, share in REUSE_SHARES[:-1]:
        starts = {max(0, min(256 - side, y)) for y in (0, 37, 128 - side // 2, 256 - side)}
        costs = [tr.relative_cost(enc, (y, y, y + side, y + side), (256, 256)) for y in sorted(starts)]
        assert sum(costs) / len(costs) == pytest.approx(share, abs=0.01), side
    shares = [s for _, s in REUSE_SHARES]
    assert shares == sorted(shares)
    assert reuse_share(None) == REUSE_SHARE and reuse_share((256.0, 256.0)) == 1.0
    assert reuse_share((230.0, 230.0)) == 1.0       # 0.92 > the limit: a full pass
    assert reuse_share((16.0, 64.0)) == pytest.approx(reuse_share((32.0, 32.0)))   # by area


def test_the_estimate_knows_which_segmenters_reuse_activations():
    """The estimate decides reuse by the segmenter's kind (it must not load a model to estimate);
    that list must agree with the models' own ``supports_reuse``."""
    from xaiseg.cost import REUSING_KINDS
    from xaiseg.models.litemedsam import LiteMedSAM
    from xaiseg.models.medsam import MedSAMViT
    from xaiseg.models.torch_model import TorchSegmenter

    classes = {"litemedsam": LiteMedSAM, "medsam": MedSAMViT, "torch": TorchSegmenter}
    assert {k for k, c in classes.items() if c.supports_reuse} == set(REUSING_KINDS)


def test_budgeted_occlusion_costs_its_passes_whatever_the_roi():
    from xaiseg.explain import make_explainer

    occ = make_explainer("occlusion", passes=6)
    assert occ.cost((10.0, 10.0)) == occ.cost((200.0, 150.0)) == occ.cost() == 6
    assert make_explainer("occlusion", passes=6, metric_steps=0).total_cost((40.0, 40.0)) == 6 + 1  # + Dice drop


def test_the_estimate_counts_the_models_own_cascade_steps_and_draws(litemedsam):
    """The estimate knows each kind's cascade without loading the model: LiteMedSAM's is its eight
    parts, and the last step's extra draws cost one attribution each."""
    from xaiseg.cost import CASCADE_STEPS, estimate_counts
    from xaiseg.explain import make_explainer
    from xaiseg.models.base import randomisation_cascade
    from xaiseg.request import RunRequest

    assert CASCADE_STEPS["litemedsam"] == len(randomisation_cascade(litemedsam)) == 8
    ex = make_explainer("layers", metric_steps=0, cascade=True, cascade_draws=3)
    assert ex.total_cost(cascade_steps=8) == 1 + 8 + 2
    assert ex.total_cost(cascade_steps=0) == 1  # a model without parts to re-draw: no cascade at all
    request = RunRequest.from_dict({"input": "v.nrrd", "output_dir": "out", "segmenter": {"kind": "litemedsam"},
                                    "prompt": BOX_KJI, "explain": {"methods": [{"name": "layers"}], "common": {
                                        "metric_steps": 0, "cascade": True, "cascade_draws": 3}}})
    cal = {"seconds_encoder": 1.0, "seconds_decoder": 0.0, "seconds_load": 0.0}
    assert estimate_counts(request, 2, [(40.0, 40.0)] * 2, cal)["per_method"]["layers"] == 2 * (1 + 8 + 2)
