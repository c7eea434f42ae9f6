"""Maps a reader can trust, on known-answer toys: a faithful map beats the trivial maps, a slice
where nothing moves the mask shows no evidence, one display scale per structure keeps a weak slice
weak, the raw map is in score units, adjacent slices are compared, and the randomisation cascade
re-draws the model from the output back."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from toys import SquareEvidence, evidence_image
from xaiseg.errors import InputError
from xaiseg.explain import make_explainer
from xaiseg.io import Geometry, Volume
from xaiseg.metrics import curve_auc
from xaiseg.models.base import SlicePrompt
from xaiseg.pipeline import SegmentConfig, Session
from xaiseg.roi import RoiConfig
from xaiseg.volume import BoxPrompt

PROMPT = SlicePrompt(box=(36, 36, 55, 55))
FINE = dict(patch=16, stride=8, grid="image")  # one patch covers the whole evidence square


def whole_slice():
    return np.ones((64, 64), bool)


def test_a_faithful_map_beats_every_trivial_map():
    ex = make_explainer("occlusion", SquareEvidence(), baselines=True, metric_steps=8, **FINE).explain(
        evidence_image(), PROMPT, roi=whole_slice())
    m = ex.metrics
    assert set(m["trivial"]) == {"blurred_mask", "box_centre", "random"}
    # the trivial maps point at the box, which the toy does not look at: deleting there changes nothing
    assert m["trivial"]["box_centre"]["deletion_auc"] > 0.5 and m["trivial"]["blurred_mask"]["deletion_auc"] > 0.5
    assert m["beats_trivial_deletion"] and m["deletion_gain"] > 0.2
    assert m["evidence"] and m["signal"] > 0.5  # only patches over the whole square remove the mask
    # each trivial map keeps its deletion curve beside its area, so the two can be drawn together
    for name, figures in m["trivial"].items():
        curve = figures["deletion_curve"]
        assert len(curve) == 9 and curve[0] == pytest.approx(m["baseline_score"], abs=1e-4)
        assert curve_auc(np.linspace(0, 1, 9), np.asarray(curve) / m["baseline_score"]) == pytest.approx(
            figures["deletion_auc"], abs=1e-3), name


def test_the_box_centre_wins_where_the_model_looks_at_the_box(monkeypatch):
    """The comparison is not rigged: when the evidence is the box itself, the trivial map at the box
    centre is as good as any, and a random map is worse than the method."""
    toy = SquareEvidence(square=(36, 36, 56, 56))
    ex = make_explainer("occlusion", toy, baselines=True, metric_steps=8, **FINE).explain(
        evidence_image(), PROMPT, roi=whole_slice())
    m = ex.metrics
    assert m["trivial"]["box_centre"]["deletion_auc"] < m["trivial"]["random"]["deletion_auc"]
    assert m["deletion_auc"] < m["trivial"]["random"]["deletion_auc"]


def test_a_slice_where_nothing_moves_the_mask_shows_no_evidence():
    roi = np.zeros((64, 64), bool)
    roi[34:58, 34:58] = True  # the box only: the evidence square is never perturbed
    ex = make_explainer("occlusion", SquareEvidence(), metric_steps=2, **FINE).explain(evidence_image(), PROMPT,
                                                                                       roi=roi)
    assert ex.metrics["evidence"] is False and ex.metrics["signal"] <= ex.metrics["noise_level"] * 2 + 1e-9
    assert not ex.saliency.any()  # not painted
    assert not np.any(ex.raw)  # and the raw map says why: nothing changed the score
    # its label map is empty, so is the region the Dice drop removes: no pass for it
    assert ex.metrics["dice_drop"] == 0.0 and ex.metrics["high_saliency_fraction"] == 0.0
    assert ex.metrics["metric_evaluations"] == 2 * 2 - 1 + 2  # the curves and the noise, no Dice-drop pass


def toy_volume(intensities):
    """Slices of the evidence image whose square has the given brightness each."""
    planes = []
    for k, v in enumerate(intensities):
        img = evidence_image(seed=k)
        img[8:24, 8:24] = v
        planes.append(img)
    arr = (np.stack(planes) * 1000).astype(np.float32)
    return Volume(arr, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), arr.shape[::-1]), "toy")


def explain_volume(intensities, scaling, roi_mask=None, **kw):
    # the toy looks at fixed pixels, so its slices must reach it unturned
    session = Session(toy_volume(intensities), SquareEvidence(), SegmentConfig(orientation="array"))
    n = len(intensities)
    seg = session.segment(BoxPrompt((0, 36, 36), (n - 1, 55, 55)), name="toy")
    settings = dict(FINE, metric_steps=2, score="logit", scaling=scaling)
    settings.update(kw)
    roi = RoiConfig("box", margin=40) if roi_mask is None else RoiConfig("mask", margin=0)
    return session.explain(seg, [make_explainer("occlusion", **settings)], roi=roi, roi_mask=roi_mask)


def test_one_scale_per_structure_keeps_a_weak_slice_weak():
    # the same square, dimmer on slice 1: removing it lowers the mean logit less there
    structure = explain_volume([0.9, 0.7], "structure")
    per_slice = explain_volume([0.9, 0.7], "slice")
    strong, weak = (structure.saliency["occlusion"][k].max() for k in (0, 1))
    assert strong == pytest.approx(1.0) and 0.3 < weak < 0.9
    assert per_slice.saliency["occlusion"][1].max() == pytest.approx(1.0)  # per-slice scaling hides it
    raw = structure.raw("occlusion")
    assert weak == pytest.approx(raw[1].max() / raw[0].max(), rel=1e-5)
    assert structure.record["display_scale"]["occlusion"] == pytest.approx(float(raw.max()))


def test_the_raw_map_is_written_in_score_units(tmp_path):
    # patches of 24 at stride 24: the square (8..24) lies in one patch, and only that patch covers it
    run = explain_volume([0.9, 0.9, 0.9], "structure", score="dice", patch=24, stride=24)
    paths = run.write(tmp_path, pngs=False)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["occlusion_raw"])))
    assert raw.max() == pytest.approx(1.0)  # a patch over the whole square takes the Dice from 1 to 0
    doc = json.loads(paths["metrics"].read_text())
    assert doc["methods"]["occlusion"]["files"]["raw"] == "toy_occlusion_raw.nrrd"
    # identical slices: the maps of adjacent slices agree perfectly
    summary = doc["methods"]["occlusion"]["summary"]
    assert summary["adjacent_pairs"] == 2 and summary["adjacent_spearman"] == pytest.approx(1.0)
    assert summary["no_evidence_slices"] == []


def test_no_evidence_is_listed_for_the_slice_and_not_painted(tmp_path):
    # on slice 1 the ROI leaves the evidence square out: occluding inside it changes nothing there
    roi = np.ones((3, 64, 64), np.uint8)
    roi[1] = 0
    roi[1, 34:58, 34:58] = 1
    run = explain_volume([0.9, 0.9, 0.9], "structure", roi_mask=roi, score="dice")
    paths = run.write(tmp_path)
    doc = json.loads(paths["metrics"].read_text())
    assert doc["methods"]["occlusion"]["summary"]["no_evidence_slices"] == [1]
    assert not run.saliency["occlusion"][1].any() and run.saliency["occlusion"][0].any()


def test_cascading_randomisation_redraws_from_the_output_back(litemedsam):
    from xaiseg.models.base import randomisation_cascade, randomized_copy

    parts = randomisation_cascade(litemedsam)
    assert parts == ["mask_decoder", "prompt_encoder", "image_encoder.neck", "image_encoder.layers.3",
                     "image_encoder.layers.2", "image_encoder.layers.1", "image_encoder.layers.0",
                     "image_encoder.patch_embed"]
    copy = randomized_copy(litemedsam, seed=1, part=parts[:3])
    before = dict(litemedsam.module.named_parameters())
    for name, p in copy.module.named_parameters():
        redrawn = name.startswith(("mask_decoder.", "prompt_encoder.", "image_encoder.neck."))
        assert (not np.array_equal(p.detach().numpy(), before[name].detach().numpy())) == redrawn or p.numel() == 0, name


def test_the_cascades_last_step_is_drawn_with_its_own_seeds(litemedsam):
    """One draw of random weights is one sample: with ``cascade_draws`` the last step (the whole model
    re-drawn) is drawn that many times, the first draw being the single draw's, and the final
    similarity is their mean; the cost counts the model's eight steps and the extra draws."""
    from xaiseg.sample_data import load_mni_atlas
    from xaiseg.volume import LabelBoxPrompt

    sample = load_mni_atlas(["Left_Caudate"])
    truth = sample.mask("Left_Caudate")
    ks = np.unique(np.nonzero(truth)[0])
    k = int(ks[len(ks) // 2])
    labels = np.zeros(truth.shape, np.uint8)
    labels[k] = truth[k]
    session = Session(sample.image, litemedsam)
    seg = session.segment(LabelBoxPrompt(labels, 1), name="caudate")

    def cascade(draws, **kw):
        ex = make_explainer("layers", cascade=True, cascade_draws=draws, **kw)
        return session.explain(seg, [ex], slices=[k]).metrics()["methods"]["layers"]["slices"][str(k)]

    once, thrice = cascade(1), cascade(3)
    # the default fuses the layers past the encoder's stem: with the same random model, the map of
    # every layer (the stem's maps survive re-drawn weights) stays closer to the trained one
    stem_too = cascade(1, layers="all")
    assert once["cascade"][-1]["similarity"] < stem_too["cascade"][-1]["similarity"]
    assert thrice["cascade_final_similarity"] < 0.3
    assert len(thrice["cascade"]) == 8 and thrice["cascade"][:-1] == once["cascade"][:-1]
    draws = thrice["cascade"][-1]["draws"]
    assert len(draws) == 3 and draws[0] == once["cascade"][-1]["similarity"] and len(set(draws)) == 3
    assert thrice["cascade_final_similarity"] == thrice["cascade"][-1]["similarity"] == round(float(np.mean(draws)), 4)
    assert "draws" not in once["cascade"][-1] and "cascade_draws" not in once and thrice["cascade_draws"] == 3
    ex = make_explainer("layers", litemedsam, cascade=True, cascade_draws=3)
    assert ex.total_cost() == 1 * (1 + 8 + 2) + ex.metric_cost()


def test_rise_draws_a_zero_map_where_no_mask_moved_the_model():
    """A model whose mask ignores the image (as a cascade's re-drawn decoder that draws no mask on
    any masked image) scores every mask the same: RISE's map is then 0, not float rounding that a
    rank correlation would read a pattern into, and its reliability is 0."""
    from toys import box_toy

    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    ex = make_explainer("rise", box_toy(), n_masks=40, metric_steps=0).explain(
        image, SlicePrompt((20, 20, 40, 40)), roi=whole_slice())
    assert not ex.raw.any() and ex.details["reliability"] == 0.0 and ex.details["masks_used"] == 40


def test_the_cascade_on_the_toy_ends_below_the_goal():
    ex = make_explainer("occlusion", SquareEvidence(), metric_steps=0, cascade=True, **FINE).explain(
        evidence_image(), PROMPT, roi=whole_slice())
    steps = ex.metrics["cascade"]
    assert [s["redrawn"] for s in steps] == ["mask_decoder"]
    assert ex.metrics["cascade_final_similarity"] < 0.3


def test_structure_sized_perturbations():
    toy = SquareEvidence()
    # scored by removal: on the whole slice there is nothing around the ROI to inpaint a restore from
    occ = make_explainer("occlusion", toy, grid="image", mode="remove")
    assert occ.pixel_sizes((64, 64), (36, 36, 55, 55)) == (20, 20)  # coarse level: the box's shorter side, tiled
    ex = occ.replace(metric_steps=0).explain(evidence_image(), PROMPT, roi=whole_slice())
    # only the coarse patch over most of the evidence square lowered the score; it alone is refined
    assert ex.details["patches_refined"] == 9 and ex.n_evaluations == ex.details["patches_full"] + 9
    assert all(v < 20 for v in np.unravel_index(np.argmax(ex.raw), ex.raw.shape))
    ex = make_explainer("rise", toy, n_masks=100, check_every=50, metric_steps=0).explain(
        evidence_image(), PROMPT, roi=whole_slice())
    assert ex.details["cells"] == 7  # cells of half the 20 px box over the 64 px ROI


def test_occlusion_ranks_the_pixels_of_a_patch_by_its_neighbours():
    """Structure-sized occlusion spreads each patch's drop with Gaussian weights (a quarter of the
    patch), so the map is no longer flat over a patch, whose pixels the curves would otherwise take
    in row order; it costs no pass, stays a weighted mean of drops (score units) and still peaks
    where the evidence is.  ``smooth=0`` gives the plain mean of the covering patches."""
    from xaiseg.explain.occlusion import smoothed

    occ = make_explainer("occlusion", SquareEvidence(), grid="image", metric_steps=0, noise_passes=0)
    flat = occ.replace(smooth=0.0).explain(evidence_image(), PROMPT, roi=whole_slice())
    soft = occ.explain(evidence_image(), PROMPT, roi=whole_slice())
    assert soft.n_evaluations == flat.n_evaluations
    assert flat.raw.min() - 1e-9 <= soft.raw.min() and soft.raw.max() <= flat.raw.max() + 1e-9
    assert len(np.unique(soft.raw)) > 20 * len(np.unique(flat.raw))
    # the peak stays in the coarse patch over most of the evidence square (rows and columns 0-19)
    assert all(v < 20 for v in np.unravel_index(np.argmax(soft.raw), soft.raw.shape))
    # only covered pixels are averaged: a covered pixel whose patches did not lower the score (0)
    # takes its neighbours' drops in part; a pixel no patch covered stays 0 and adds no weight
    raw = np.zeros((9, 9))
    raw[:, :4] = 1.0
    covered = np.zeros((9, 9), bool)
    covered[:, :6] = True
    out = smoothed(raw, covered, 2.0)
    assert not out[:, 6:].any() and np.all(out[:, :6] > 0) and np.all(out[:, :6] <= 1.0)
    assert np.all(np.diff(out[:, :6], axis=1) < 0)  # falling from the drops into the zero-drop patches
    # seed 001's fixed grid and the budgeted cells are never smoothed
    for fixed in (dict(patch=16, stride=8), dict(passes=8)):
        ex = occ.replace(**fixed)
        assert np.array_equal(ex.explain(evidence_image(), PROMPT, roi=whole_slice()).raw,
                              ex.replace(smooth=0.0).explain(evidence_image(), PROMPT, roi=whole_slice()).raw)


def test_the_two_patches_that_lowered_the_score_most_are_refined():
    """Refinement takes the two coarse patches with the largest drops (never one that did not lower
    the score), so a slice costs the coarse patches plus 18 passes whatever its map looks like."""
    occ = make_explainer("occlusion", SquareEvidence(), grid="image", aspect=1.0)  # the squares, coarse to fine
    coarse = [(0, 0, 20), (0, 20, 20), (20, 0, 20), (20, 20, 20), (40, 40, 20)]
    fine = occ.refined(coarse, np.array([0.1, 0.9, 0.5, 0.45, 0.0]), (64, 64))
    assert len(fine) == 18 and all(q == 10 for _, _, q in fine)
    inside = {(0, 20): 0, (20, 0): 0}
    for y, x, q in fine:   # each finer patch lies inside one of the two hottest coarse patches
        parent = next(c for c in inside if c[0] <= y and y + q <= c[0] + 20 and c[1] <= x and x + q <= c[1] + 20)
        inside[parent] += 1
    assert inside == {(0, 20): 9, (20, 0): 9}
    # three patches as hot as each other: still two refined (the first two, the order is stable)
    assert len(occ.refined(coarse, np.array([0.5, 0.5, 0.5, 0.0, 0.0]), (64, 64))) == 18
    assert len(occ.refined(coarse, np.array([0.7, 0.0, -0.1, 0.0, 0.0]), (64, 64))) == 9
    assert occ.refined(coarse, np.zeros(5), (64, 64)) == []
    # the estimate counts the same: the coarse patches plus 9 for each of two refined ones, twice when
    # scored both ways (the default), and (when the patches are put back) the pass with the ROI removed
    assert occ.cost((30.0, 30.0), grid=64) == 1 + 2 * (3 * 3 + 18)   # 20 px patches over a 30 px ROI: 3 x 3
    assert occ.cost((30.0, 30.0), grid=16) == 1 + 2 * (1 + 9)        # a single coarse patch: only it is refined
    assert occ.replace(mode="restore").cost((30.0, 30.0), grid=64) == 1 + 3 * 3 + 18
    assert occ.replace(mode="remove").cost((30.0, 30.0), grid=64) == 3 * 3 + 18


def test_inpainted_removal_does_not_reward_scattered_holes():
    """The curves remove pixels by inpainting them from their kept neighbours (default), so a
    random map's scattered removals leave the evidence square whole and rank last, while zero
    fill lets the same holes dim the square and rewards the random map; the faithful map is at the
    floor either way."""
    figures = {}
    for fill in ("zero", "inpaint"):
        ex = make_explainer("occlusion", SquareEvidence(), baselines=True, metric_steps=8, metric_fill=fill,
                            **FINE).explain(evidence_image(), PROMPT, roi=whole_slice())
        figures[fill] = ex.metrics
    assert figures["inpaint"]["deletion_auc"] == pytest.approx(1 / 16)        # one step removes the square
    assert figures["zero"]["deletion_auc"] == pytest.approx(1 / 16)
    random_zero = figures["zero"]["trivial"]["random"]["deletion_auc"]
    random_inpaint = figures["inpaint"]["trivial"]["random"]["deletion_auc"]
    assert random_inpaint > 0.9 > 0.5 > random_zero
    assert figures["inpaint"]["beats_trivial_deletion"]


def test_removed_pixels_are_inpainted_from_their_neighbours():
    from xaiseg.explain.base import removed

    yy, xx = np.mgrid[0:64, 0:64]
    ramp = ((yy + xx) / 126.0).astype(np.float32)
    rng = np.random.default_rng(0)
    holes = rng.random(ramp.shape) < 0.125
    assert np.abs(removed(ramp, holes, "inpaint") - ramp).max() < 0.05      # scattered: repaired
    assert np.abs(removed(ramp, holes, "zero") - ramp).max() > 0.5          # zero fill: holes stay
    block = np.zeros(ramp.shape, bool)
    block[20:40, 20:40] = True
    bright = ramp.copy()
    bright[block] = 1.0
    filled = removed(bright, block, "inpaint")
    assert filled[block].mean() < 0.6 and np.array_equal(filled[~block], bright[~block])  # the block is gone
    assert np.allclose(removed(bright, np.ones_like(block), "inpaint"), bright.mean())    # nothing to fill from
    assert np.array_equal(removed(bright, np.zeros_like(block), "inpaint"), bright)


def test_occlusion_with_inpainted_patches_finds_the_evidence():
    """Patches inpainted from their surroundings (``fill="inpaint"``): only a patch that covers the
    whole evidence square takes it away, and the map peaks there."""
    toy = SquareEvidence()
    ex = make_explainer("occlusion", toy, fill="inpaint", metric_steps=4, **FINE).explain(
        evidence_image(), PROMPT, roi=whole_slice())
    peak = np.unravel_index(np.argmax(ex.raw), ex.raw.shape)
    assert toy.square_mask()[peak] and ex.metrics["evidence"]
    assert ex.metrics["deletion_auc"] < 0.2


def test_restore_occlusion_puts_back_the_evidence_square():
    """``mode="restore"``: the ROI inpainted from around it, each patch put back on its own.  Only
    patches over the square bring the mask back, so the map is hot there and beats every trivial
    map; its raw map is the Dice regained, and the evidence check reads the largest rise (every pass
    removes the ROI, so the engine's largest fall would say nothing)."""
    toy = SquareEvidence()
    roi = np.zeros((64, 64), bool)
    roi[:34, :34] = True  # the square's quadrant: inpainted, it is filled from the dim background
    occ = make_explainer("occlusion", toy, mode="restore", baselines=True, metric_steps=8, metric_fill="method",
                         **FINE)
    ex = occ.explain(evidence_image(), PROMPT, roi=roi)
    square = toy.square_mask()
    # a patch over part of the square fills the rest of it from its bright pixels, so the patches
    # that reach into the square bring the mask back too: the map is at its top over the whole square
    assert ex.raw[square].min() == pytest.approx(ex.raw.max())
    assert ex.raw[square].mean() > 1.5 * ex.raw[roi & ~square].mean()
    assert ex.details["emptied_score"] == pytest.approx(0.0)  # the square inpainted away: no mask
    assert ex.metrics["evidence"] and ex.metrics["signal"] == pytest.approx(1.0)  # Dice 0 -> 1
    assert ex.metrics["beats_trivial_deletion"]
    patches = [(y, x, p) for y, x, p in occ.patches((64, 64)) if roi[y:y + p, x:x + p].any()]
    assert ex.n_evaluations == len(patches) + 1  # the ROI removed, then each patch put back
    assert ex.n_evaluations <= occ.cost((34.0, 34.0), 64)  # the estimate before a run: an upper bound
    # the fill setting is not used: the rest of the ROI is always inpainted
    zero = make_explainer("occlusion", toy, mode="restore", fill="zero", metric_steps=0, **FINE).explain(
        evidence_image(), PROMPT, roi=roi)
    np.testing.assert_array_equal(zero.raw, ex.raw)


def test_both_scores_each_patch_by_its_fall_and_its_rise():
    """``mode="both"``: a patch's score is the Dice lost when it alone is removed plus the Dice it
    brings back when it alone is kept in the inpainted ROI, two passes per patch and one for the
    inpainted ROI; the map is the sum of the two maps, and the signal the largest single change."""
    toy = SquareEvidence()
    roi = np.zeros((64, 64), bool)
    roi[:34, :34] = True
    settings = dict(FINE, metric_steps=0, smooth=0.0)
    maps = {mode: make_explainer("occlusion", toy, mode=mode, **settings).explain(evidence_image(), PROMPT, roi=roi)
            for mode in ("remove", "restore", "both")}
    both = maps["both"]
    np.testing.assert_allclose(both.raw, maps["remove"].raw + maps["restore"].raw, atol=1e-6)
    patches = maps["remove"].n_evaluations
    assert both.n_evaluations == 2 * patches + 1
    estimate = {mode: make_explainer("occlusion", mode=mode, patch=16, stride=8).cost((34.0, 34.0), 64)
                for mode in ("remove", "both")}
    assert estimate["both"] == 2 * estimate["remove"] + 1
    assert both.details["mode"] == "both" and both.metrics["signal"] == pytest.approx(1.0)
    assert toy.square_mask()[np.unravel_index(np.argmax(both.raw), both.raw.shape)]
    with pytest.raises(InputError, match="at least 9 with --occlusion-mode both"):
        make_explainer("occlusion", mode="both", passes=8)


def test_max_scores_each_patch_by_the_larger_of_its_fall_and_its_rise():
    """``mode="max"``: a patch's score is the larger of the Dice lost when it alone is removed and the
    Dice it brings back when it alone is kept in the inpainted ROI (evidence the mask needs, or evidence
    that draws it on its own), at both's passes; on patches that do not overlap, each pixel's score is
    its patch's, so the map is the larger of the removal and restore maps pixel by pixel.  Two ROIs:
    one holding the toy's square (a patch put back brings the mask back, removed it may leave a part
    that still draws it: restore is the larger), one holding a quarter of it (the ROI inpainted leaves
    the mask, so nothing put back raises it, while a whole patch removed over the square loses it:
    removal is the larger)."""
    toy = SquareEvidence()
    settings = dict(grid="image", patch=12, stride=12, metric_steps=0, smooth=0.0)
    larger = {}
    for side in (34, 16):
        roi = np.zeros((64, 64), bool)
        roi[:side, :side] = True
        maps = {mode: make_explainer("occlusion", toy, mode=mode, **settings).explain(evidence_image(), PROMPT, roi=roi)
                for mode in ("remove", "restore", "max")}
        top, removal, restore = maps["max"], maps["remove"].raw, maps["restore"].raw
        np.testing.assert_allclose(top.raw, np.maximum(removal, restore), atol=1e-6)
        larger[side] = (bool((removal > restore + 1e-6).any()), bool((restore > removal + 1e-6).any()))
        assert top.n_evaluations == 2 * maps["remove"].n_evaluations + 1
        assert top.details["mode"] == "max" and top.metrics["signal"] == pytest.approx(1.0)
        assert top.raw[toy.square_mask() & roi].mean() > top.raw[roi & ~toy.square_mask()].mean()
    assert larger == {34: (False, True), 16: (True, False)}
    estimate = {mode: make_explainer("occlusion", mode=mode, **settings).cost((34.0, 34.0), 64)
                for mode in ("remove", "max")}
    assert estimate["max"] == 2 * estimate["remove"] + 1
    # the structure-sized strips (the default patches; a long mask, as a round one keeps the squares)
    # scored the same way: the square still hottest
    roi = np.zeros((64, 64), bool)
    roi[:34, :34] = True
    strips = make_explainer("occlusion", toy, mode="max", grid="image", metric_steps=0).explain(
        evidence_image(), SlicePrompt(box=(36, 44, 60, 50)), roi=roi)
    assert strips.details["mode"] == "max" and strips.details["strip_aspect"] == 4.0
    assert strips.n_evaluations == 2 * strips.details["patches_evaluated"] + 1
    square = toy.square_mask()
    assert strips.raw[square].mean() > strips.raw[roi & ~square].mean()
    with pytest.raises(InputError, match="at least 9 with --occlusion-mode max"):
        make_explainer("occlusion", mode="max", passes=8)


def coarse_in_roi(occ, roi):
    """The coarse structure-sized patches of the toy's 64 x 64 slice that touch ``roi``: those occlusion scores."""
    return [(y, x, p) for y, x, p in occ.patches((64, 64), PROMPT.box) if roi[y:y + p, x:x + p].any()]


def test_structure_sized_restore_refines_the_patches_that_bring_the_mask_back():
    """Structure-sized patches scored by restore: the two coarse patches whose return brought the
    mask back are refined (9 finer patches each, all put back on their own)."""
    toy = SquareEvidence()
    roi = np.zeros((64, 64), bool)
    roi[:34, :34] = True
    occ = make_explainer("occlusion", toy, grid="image", metric_steps=0, noise_passes=0, mode="restore")
    ex = occ.explain(evidence_image(), PROMPT, roi=roi)
    assert ex.details["mode"] == "restore" and ex.details["patch_px"] == 20
    coarse = coarse_in_roi(occ, roi)
    assert ex.details["patches_refined"] == 18
    assert ex.n_evaluations == 1 + len(coarse) + ex.details["patches_refined"]
    # inpainting spreads a bright patch's value over the square, so every patch that reaches into it
    # brings the mask back (the toy reads the square's mean): the square is near the map's top, and
    # hotter on average than the rest of the ROI
    square = toy.square_mask()
    assert ex.raw[square].mean() > 0.9 and ex.raw[square].mean() > ex.raw[roi & ~square].mean()
    assert ex.details["emptied_score"] == 0.0 and ex.raw[roi].min() < 0.5


def test_the_default_scores_structure_sized_patches_both_ways():
    """``auto`` (the default) scores structure-sized patches both ways (stop 40): each patch removed
    and put back, its map the sum of removal's and restore's with the same patches, refined where
    that sum is highest; a fixed ``--patch`` and a pass budget keep removal."""
    toy = SquareEvidence()
    roi = np.zeros((64, 64), bool)
    roi[:34, :34] = True
    settings = dict(grid="image", metric_steps=0, noise_passes=0, smooth=0.0)
    default = make_explainer("occlusion", toy, **settings)
    assert default.scoring == "both" and default.scores_emptied
    ex = default.explain(evidence_image(), PROMPT, roi=roi)
    both = make_explainer("occlusion", toy, mode="both", **settings).explain(evidence_image(), PROMPT, roi=roi)
    assert ex.details["mode"] == "both" and ex.details["patch_px"] == 20
    np.testing.assert_array_equal(ex.raw, both.raw)
    coarse = coarse_in_roi(default, roi)
    assert ex.n_evaluations == 1 + 2 * (len(coarse) + ex.details["patches_refined"])
    # the square (what the toy reads) is where removing a patch loses the mask and putting it back
    # brings the mask back: hotter on average than the rest of the ROI
    square = toy.square_mask()
    assert ex.raw[square].mean() > ex.raw[roi & ~square].mean()
    assert make_explainer("occlusion", patch=16, stride=8).scoring == "remove"
    assert make_explainer("occlusion", passes=6).scoring == "remove"


@pytest.mark.parametrize("passes, used", [(9, 9), (10, 9), (13, 13)])
def test_budgeted_both_spends_two_passes_per_cell(passes, used):
    roi = np.zeros((64, 64), bool)
    roi[:40, :40] = True
    ex = make_explainer("occlusion", SquareEvidence(), mode="both", passes=passes, metric_steps=0,
                        noise_passes=0).explain(evidence_image(), PROMPT, roi=roi)
    # the inpainted ROI, then each cell removed and put back: an odd budget is spent whole
    assert ex.n_evaluations == used and ex.details["mode"] == "both"


def test_restore_occlusion_shows_no_evidence_where_nothing_moves_the_mask():
    roi = np.zeros((64, 64), bool)
    roi[34:58, 34:58] = True  # the box only: removing all of it leaves the toy's mask as it was
    ex = make_explainer("occlusion", SquareEvidence(), mode="restore", metric_steps=2, **FINE).explain(
        evidence_image(), PROMPT, roi=roi)
    assert ex.details["emptied_score"] == pytest.approx(1.0)
    assert ex.metrics["evidence"] is False and ex.metrics["signal"] == 0.0 and not ex.saliency.any()


def test_restore_occlusion_changes_when_the_weights_are_redrawn():
    roi = np.zeros((64, 64), bool)
    roi[:34, :34] = True
    ex = make_explainer("occlusion", SquareEvidence(), mode="restore", score="logit", sanity=True, metric_steps=0,
                        **FINE).explain(evidence_image(), PROMPT, roi=roi)
    assert ex.metrics["sanity_similarity"] < 0.5


@pytest.mark.parametrize("passes", [5, 9])
def test_budgeted_restore_occlusion_counts_the_removed_roi_in_its_passes(passes):
    toy = SquareEvidence()
    occ = make_explainer("occlusion", toy, mode="restore", passes=passes, metric_steps=0, noise_passes=0)
    roi = np.zeros((64, 64), bool)
    roi[:40, :40] = True
    ex = occ.explain(evidence_image(), PROMPT, roi=roi)
    assert ex.n_evaluations == passes == occ.cost()
    y, x = np.unravel_index(np.argmax(ex.raw), ex.raw.shape)
    assert y < 32 and x < 32, "the peak lies outside the evidence's quadrant"
    with pytest.raises(InputError, match="at least 5 with --occlusion-mode restore"):
        make_explainer("occlusion", mode="restore", passes=4)


def test_a_volume_measures_each_slice_as_a_single_slice_explanation_does():
    """The volume pipeline measures in two parts (what needs passes but not the scale while the slice's
    activations are in memory, the Dice drop after scaling); per-slice scaling gives the single-slice
    path's saliency, so every figure must be the same as explaining the slice alone."""
    run = explain_volume([0.9, 0.7], "slice", score="dice", baselines=True)
    session = Session(toy_volume([0.9, 0.7]), SquareEvidence(), SegmentConfig(orientation="array"))
    for k in (0, 1):
        e = run.explanations["occlusion"][k]
        image = session.volume_segmenter.model_slice(k)
        alone = make_explainer("occlusion", SquareEvidence(), **dict(FINE, metric_steps=2, score="dice",
                                                                     scaling="slice", baselines=True)).explain(
            image, PROMPT, roi=e.roi)
        for key in ("dice_drop", "deletion_auc", "insertion_auc", "noise_level", "evidence",
                    "best_trivial_deletion_auc", "metric_evaluations"):
            assert e.metrics[key] == pytest.approx(alone.metrics[key]), (k, key)
        np.testing.assert_allclose(e.raw, alone.raw)


def test_each_slice_builds_one_cache_and_its_dice_drop_reuses_it(litemedsam, monkeypatch, tmp_path):
    """Occlusion with the no-evidence check and no curves on real LiteMedSAM, two slices, segmented
    with ``keep_activations`` (as ``xaiseg explain`` does): each slice's activation cache is built
    once, by segmentation, and serves attribution, the noise and the Dice drop after scaling - the
    first slice's through files, as a structure's older slices are - so the explanation makes no
    full pass at all: every perturbed pass reuses."""
    import copy

    from xaiseg import kept_caches
    from xaiseg.sample_data import load_mni_atlas
    from xaiseg.volume import LabelBoxPrompt

    monkeypatch.setattr(kept_caches, "MEMORY_BYTES", 0)  # all but the newest cache go to disk
    monkeypatch.setenv("XAISEG_CACHE", str(tmp_path))
    calls = {"cache": 0, "full": 0, "loaded": 0}
    model = copy.copy(litemedsam)
    build, full, load = model.embed_cache, model.embed_batch, model.load_cache

    def counted(image):
        calls["cache"] += 1
        return build(image)

    def full_pass(images):
        calls["full"] += len(images)
        return full(images)

    def loaded(path):
        calls["loaded"] += 1
        return load(path)

    model.embed_cache, model.embed_batch, model.load_cache = counted, full_pass, loaded
    sample = load_mni_atlas(("Left_Caudate",))
    truth = sample.mask("Left_Caudate")
    two = np.zeros_like(truth, np.uint8)
    two[81:83] = truth[81:83]
    session = Session(sample.image, model, SegmentConfig())
    assert session.keep_activations()
    seg = session.segment(LabelBoxPrompt(two, 1), name="caudate")
    assert calls == {"cache": 2, "full": 0, "loaded": 0}  # segmentation encoded each slice through its cache
    passes = session.volume_segmenter.encoder_passes
    run = session.explain(seg, [make_explainer("occlusion", passes=4, metric_steps=0)], slices=[81, 82])
    session.release_activations()
    metrics = [run.explanations["occlusion"][k].metrics for k in (81, 82)]
    assert calls["cache"] == 2 and calls["full"] == 0
    # slice 81's cache read back for attribution, and again for its Dice drop where it has one
    assert calls["loaded"] == 1 + int(metrics[0]["evidence"])
    for m in metrics:
        # the jittered copies, the ROI inpainted whole (the share the prompt draws; this occlusion
        # removes patches, so it has not scored that image), and the Dice drop where the label map is not empty
        assert m["metric_evaluations"] == 2 + 1 + int(m["high_saliency_fraction"] > 0)
        assert m["evidence"] or m["dice_drop"] == 0.0  # no evidence: nothing painted, nothing removed
    assert run.record["evaluations"]["perturbed_encoder_passes"]["occlusion"] == 8
    assert session.volume_segmenter.encoder_passes == passes  # the slices' embeddings came from the session
    assert list((tmp_path / "activations").iterdir()) == []  # the kept caches' folder is gone


def test_curves_on_a_sample_of_slices_evidence_and_dice_drop_on_every_one():
    """``metric_slices`` 2 of 5 explained slices: the first and the last get the curves and the
    trivial maps; every slice keeps its evidence check and Dice drop; the summary says over how many
    slices its curve means are."""
    from xaiseg.explain.measure import curve_slices

    assert curve_slices(range(10), 3) == [0, 4, 9] and curve_slices([7, 3, 5], 1) == [5]
    assert curve_slices([1, 2], 0) == [1, 2] == curve_slices([1, 2], 5)
    run = explain_volume([0.9, 0.8, 0.7, 0.8, 0.9], "structure", metric_slices=2, baselines=True)
    doc = run.metrics()["methods"]["occlusion"]
    with_curves = sorted(int(k) for k, v in doc["slices"].items() if "deletion_auc" in v)
    assert with_curves == [0, 4] and doc["summary"]["curve_slices"] == 2
    for k, v in doc["slices"].items():
        assert "evidence" in v and "dice_drop" in v, k
        assert ("best_trivial_deletion_auc" in v) == (int(k) in (0, 4))
        # the noise passes and the Dice drop; the curves' 2 x 2 - 1 and the three trivial maps' as many
        # too, or without curves the ROI inpainted whole (the share the prompt draws, on every slice)
        assert v["metric_evaluations"] == 2 + 1 + (3 + 3 * 3 if int(k) in (0, 4) else 1), k
        assert "kept_without_roi" in v, k
    assert doc["summary"]["deletion_auc"] == pytest.approx(
        np.mean([doc["slices"][k]["deletion_auc"] for k in ("0", "4")]), abs=1e-4)


def test_a_structure_is_tiled_by_one_patch_grid_on_every_slice():
    """Structure-sized occlusion takes one patch size for the whole structure (the median shorter
    side of the explained slices' boxes), so neighbouring slices share one grid and their maps can
    be compared; ``sizing="slice"`` sizes each slice from its own box."""
    from xaiseg.volume import LabelBoxPrompt

    session = Session(toy_volume([0.9, 0.9, 0.9]), SquareEvidence(), SegmentConfig(orientation="array"))
    labels = np.zeros(session.volume.shape, np.uint8)
    for k, side in enumerate((12, 20, 28)):
        labels[k, 30:30 + side, 30:30 + side] = 1
    seg = session.segment(LabelBoxPrompt(labels, 1), name="toy")
    patch = {}
    for sizing in ("structure", "slice"):
        run = session.explain(seg, [make_explainer("occlusion", grid="image", metric_steps=0, sizing=sizing)],
                              roi=RoiConfig("box", margin=10))
        patch[sizing] = [run.explanations["occlusion"].light(k).details["patch_px"] for k in range(3)]
        side = run.record["methods"]["occlusion"]["side"]  # the size chosen, in the run record
        assert side == (20.0 if sizing == "structure" else 0.0)
        run.close()
    assert patch == {"structure": [20, 20, 20], "slice": [12, 20, 28]}
    # a single slice explained alone uses its own box
    ex = make_explainer("occlusion", SquareEvidence(), grid="image")
    assert ex.for_structure([(0, 0, 11, 11), (0, 0, 19, 19), (0, 0, 27, 27)]).side == 20.0
    assert ex.replace(patch=16).for_structure([(0, 0, 11, 11)]).side == 0.0  # a fixed patch is not resized
    assert ex.replace(sizing="slice", side=30.0).for_structure([(0, 0, 11, 11)]).side == 0.0
    assert ex.pixel_sizes((64, 64), (36, 36, 55, 55)) == (20, 20)


def test_rise_perturbs_every_slice_of_a_structure_with_the_same_masks():
    """Structure-sized RISE lays one lattice of cells (half the structure's median box side) over
    the whole slice, so two slices of one structure draw the same masks, whatever their own boxes;
    ``sizing="slice"`` lays each slice's own cells over its ROI.  On two identical slices with
    different ROIs the maps then agree on the common ROI."""
    from xaiseg.explain.base import PerturbationEngine

    image = evidence_image()  # the evidence square at rows and columns 8-23
    boxes = [(8, 8, 30, 30), (4, 4, 32, 32)]  # shorter sides 23 and 29
    ex = make_explainer("rise", SquareEvidence(), n_masks=60, early_stop=False, metric_steps=0)
    shared = ex.for_structure(boxes)
    assert shared.side == 26.0 and ex.replace(cells=7).for_structure(boxes).side == 0.0
    assert ex.replace(sizing="slice").for_structure(boxes).side == 0.0
    # a side copied from another run's record is not kept where this structure sets none
    assert ex.replace(sizing="slice", side=30.0).for_structure(boxes).side == 0.0
    maps = {}
    for sizing, explainer in (("structure", shared), ("slice", ex)):
        drawn, raw = [], []
        for (x0, y0, x1, y1) in boxes:
            roi = np.zeros(image.shape, bool)
            roi[max(0, y0 - 4):y1 + 5, max(0, x0 - 4):x1 + 5] = True
            engine = PerturbationEngine(explainer.segmenter, image, SlicePrompt(box=(x0, y0, x1, y1)), roi)
            make, cells = explainer.mask_maker(engine)
            drawn.append(make(np.random.default_rng(0), 3))
            raw.append(explainer.explain(image, SlicePrompt(box=(x0, y0, x1, y1)), roi=roi, measure=False).raw)
        maps[sizing] = raw
        assert np.array_equal(drawn[0], drawn[1]) == (sizing == "structure")
    # an end slice, where the structure is a speck (box side below half the structure's), keeps
    # cells of its own box: 4 px cells over its 16 px ROI, not the structure's lattice of 5 x 5
    roi = np.zeros(image.shape, bool)
    roi[4:20, 4:20] = True
    speck = PerturbationEngine(shared.segmenter, image, SlicePrompt(box=(8, 8, 15, 15)), roi)
    assert shared.mask_maker(speck)[1] == 4 and shared.mask_maker(engine)[1] == 5
    common = np.zeros(image.shape, bool)
    common[4:35, 4:35] = True
    from xaiseg.metrics import spearman

    same = spearman(maps["structure"][0], maps["structure"][1], common)
    assert same > 0.9 and same > spearman(maps["slice"][0], maps["slice"][1], common)


def test_rise_cells_on_one_lattice_stay_square_on_a_slice_that_is_not():
    """The structure's lattice is drawn over a square of the slice's longer side and cropped: on a
    40 x 96 slice its masks change as fast down the rows as along the columns (cells stretched to
    the slice's shape would change 2.4 times faster down the rows)."""
    from toys import BoxToy
    from xaiseg.explain.base import PerturbationEngine

    image = np.zeros((40, 96), np.float32)
    box = (40, 10, 59, 29)  # x0, y0, x1, y1: 20 x 20
    ex = make_explainer("rise", BoxToy(), metric_steps=0).for_structure([box])
    engine = PerturbationEngine(ex.segmenter, image, SlicePrompt(box=box), np.ones(image.shape, bool))
    make, lattice = ex.mask_maker(engine)
    assert lattice == 10  # 96 px / cells of half the box's 20 px side
    masks = make(np.random.default_rng(0), 200)
    assert masks.shape == (200, 40, 96)
    down = np.abs(np.diff(masks, axis=1)).mean()
    across = np.abs(np.diff(masks, axis=2)).mean()
    assert 0.85 < down / across < 1.15
