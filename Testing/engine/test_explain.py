"""Explainers on the known-answer toy: the mask depends only on a bright square away from the
mask, so a faithful map must peak in that square and must change when the toy's weights are
re-drawn.  Also: seeds, exact Shapley values, cancellation, ROI finders and the run files."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from toys import HashedEvidence, SquareEvidence, evidence_image
from xaiseg import errors
from xaiseg.explain import make_explainer, methods
from xaiseg.explain.base import PerturbationEngine
from xaiseg.explain.superpixels import keep_from_segments, superpixels
from xaiseg.explain.shap import exact_shapley
from xaiseg.io import Geometry, Volume
from xaiseg.metrics import peak, spearman
from xaiseg.models.base import SlicePrompt, randomized_copy
from xaiseg.pipeline import Session
from xaiseg.progress import CallbackProgress, CancelToken
from xaiseg.roi import RoiConfig, RoiFinder
from xaiseg.volume import BoxPrompt

METHODS = methods(perturbation_only=True)
PROMPT = SlicePrompt(box=(36, 36, 55, 55))
FAST = {
    "occlusion": dict(patch=16, stride=8, grid="image"),
    # zero fill: the toy reads the square's mean, which inpainting part of it from the rest keeps
    # (RISE's own fill, inpaint, is tested on a dot smaller than its cells below)
    "rise": dict(n_masks=400, check_every=50, fill="zero"),
    "lime": dict(n_samples=150),
    "shap": dict(budget=200),
}


def explain(method, toy=None, seed=0, **kw):
    toy = toy or SquareEvidence()
    # the toy reads the square's mean brightness: part of the square inpainted from the rest of it
    # (the metrics' default removal) keeps that mean, so these curves remove with the methods' zero fill
    settings = dict(FAST[method], seed=seed, metric_steps=4, metric_fill="method")
    settings.update(kw)
    return make_explainer(method, toy, **settings).explain(evidence_image(), PROMPT, target=toy.square_mask())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("score", ["dice", "logit"])
def test_peak_lies_in_the_evidence_square(method, score):
    toy = SquareEvidence()
    ex = explain(method, toy, score=score)
    assert toy.square_mask()[peak(ex.saliency)], f"{method}/{score} peak {peak(ex.saliency)} outside the square"
    assert ex.metrics["pointing_game"] is True
    # the square is 6 % of the slice; RISE's 7 x 7 cells blur the most, to about 4x that share
    assert ex.metrics["energy_in_target"] > 3 * toy.square_mask().mean()
    assert ex.metrics["dice_drop"] > 0 and ex.n_evaluations > 0
    assert ex.saliency.dtype == np.float32 and ex.saliency.min() >= 0 and ex.saliency.max() == pytest.approx(1.0)
    # faithful maps: deleting salient pixels first hurts more than inserting them first helps the baseline
    assert ex.metrics["deletion_auc"] < ex.metrics["insertion_auc"]


@pytest.mark.parametrize("method", METHODS)
def test_map_changes_when_the_weights_are_redrawn(method):
    toy = SquareEvidence()
    trained = explain(method, toy, score="logit")
    random = explain(method, randomized_copy(toy, seed=3, part="mask_decoder"), score="logit")
    assert spearman(trained.saliency, random.saliency) < 0.5
    assert not toy.square_mask()[peak(random.saliency)] or random.saliency[toy.square_mask()].mean() < 0.9
    # the built-in check reports the same thing
    checked = explain(method, toy, score="logit", sanity=True)
    assert checked.metrics["sanity_similarity"] < 0.5


@pytest.mark.parametrize("method", ["rise", "lime", "shap"])
def test_same_seed_same_map(method):
    a, b = explain(method, seed=7), explain(method, seed=7)
    np.testing.assert_array_equal(a.saliency, b.saliency)
    assert a.record["seed"] == 7 and a.settings["seed"] == 7


def test_rise_inpaints_what_it_removes_and_finds_a_dot_smaller_than_its_cells():
    # "auto" fill resolves per method, and the run record names the fill used
    dot = (14, 14, 18, 18)  # 4 x 4 pixels; RISE's cells are half the 20-pixel box: 10 pixels
    toy = SquareEvidence(square=dot)
    rise = make_explainer("rise", toy, n_masks=200, metric_steps=0)
    assert rise.fill == "inpaint" and rise.settings()["fill"] == "inpaint"
    assert make_explainer("occlusion").fill == "zero" and make_explainer("rise", fill="zero").fill == "zero"
    assert make_explainer("rise", fill="auto").replace(seed=3).fill == "inpaint"
    ex = rise.explain(evidence_image(square=dot), PROMPT, target=toy.square_mask())
    # a removed cell over the dot is filled from the dim texture around it, and the mask goes
    assert toy.square_mask()[peak(ex.saliency)], peak(ex.saliency)
    assert ex.record["settings"]["fill"] == "inpaint"


def test_another_seed_changes_the_rise_map():
    a, b = explain("rise", seed=1, score="logit"), explain("rise", seed=2, score="logit")
    assert not np.array_equal(a.saliency, b.saliency)


def test_rise_stops_early_and_says_so():
    stopped = explain("rise", n_masks=2000, score="logit")
    assert stopped.details["converged"] is True
    assert stopped.n_evaluations == stopped.details["stopped_at"] < 2000
    # it stopped because its two halves of masks drew the same map
    assert stopped.details["reliability"] >= 0.9 and stopped.details["convergence"][-1][1] >= 0.9
    full = explain("rise", n_masks=300, early_stop=False, score="logit")
    assert full.n_evaluations == 300 and full.details["converged"] is False


def rise_map(scores, masks):
    """RISE's map of ``masks`` with ``scores``, from its sums over all of them at once."""
    from xaiseg.explain.rise import RISE

    scores = np.asarray(scores)
    return RISE._map(np.tensordot(scores, masks, axes=1), masks.sum(axis=0), float(scores.sum()), len(scores))


def test_rise_sums_deal_masks_alternately_and_keep_the_whole_map():
    """The halves take masks by their place in the whole stream, whatever the chunks; the whole map
    is the sum over every mask, as it was before the halves existed."""
    from xaiseg.explain.rise import RISE, RiseSums, spearman_brown
    from xaiseg.metrics import pearson

    rng = np.random.default_rng(3)
    masks = rng.random((15, 6, 5)).astype(np.float32)
    scores = rng.random(15)
    sums = RiseSums((6, 5))
    kept, weight, total = np.zeros((6, 5)), np.zeros((6, 5)), 0.0  # the sums as RISE kept them before
    for a, b in ((0, 3), (3, 8), (8, 9), (9, 15)):  # odd chunks
        sums.add(scores[a:b], masks[a:b])
        kept += np.tensordot(scores[a:b], masks[a:b], axes=1)
        weight += masks[a:b].sum(axis=0)
        total += float(scores[a:b].sum())
    assert sums.used == 15 and [h[3] for h in sums.halves] == [8, 7]
    assert np.array_equal(sums.map(), RISE._map(kept, weight, total, 15))
    even = rise_map(scores[::2], masks[::2])
    assert np.allclose(RISE._map(*sums.halves[0]), even, rtol=0, atol=1e-6)  # float32 masks summed by chunk
    # reliability stays in [0, 1]: a negative correlation is noise, a ROI of a few pixels has none
    assert spearman_brown(-0.8) == 0.0 and spearman_brown(1.0) == 1.0 and spearman_brown(0.5) == pytest.approx(2 / 3)
    assert sums.reliability(np.eye(6, 5, dtype=bool)) == 0.0
    a = rng.random((6, 5))
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0) and pearson(a, np.ones_like(a)) == 0.0


def test_rise_does_not_call_noise_converged():
    """The early stop compares the maps of two halves of the masks, which share none: on a model
    whose score is noise they disagree however many masks are drawn, so the run uses every mask and
    says it did not converge (until stop 31 the map was compared with the map 50 masks earlier,
    which shares most of its masks and agrees whatever the noise)."""
    ex = explain("rise", HashedEvidence(), n_masks=400, score="logit")
    assert ex.details["converged"] is False and ex.n_evaluations == 400
    assert 0.0 <= ex.details["reliability"] < 0.5, ex.details["convergence"]
    # the old criterion: the map against the map 50 masks earlier agrees although it is noise
    from xaiseg.explain.rise import RiseSums

    rise = make_explainer("rise", HashedEvidence(), n_masks=400, fill="zero", score="logit")
    engine = PerturbationEngine(rise.segmenter, evidence_image(), PROMPT, np.ones((64, 64), bool), score="logit",
                                fill="zero")
    make, _ = rise.mask_maker(engine)
    rng = np.random.default_rng(0)
    sums, maps = RiseSums(engine.image.shape), []
    for _ in range(8):
        masks = make(rng, 50)
        sums.add(engine.scores(masks, total=0), masks)
        maps.append(sums.map())
    assert spearman(maps[-1], maps[-2], engine.roi) > 0.8 > sums.reliability(engine.roi)



def test_rise_cells_can_follow_the_structures_main_axis():
    """``cell_aspect``: structure-sized cells that many times longer along the mask's main axis (a
    wide box draws a wide mask, so the cells lie along the rows); the keep share stays p, the same
    seed draws the same masks, the map still finds the evidence, and 1 keeps the square cells'
    masks exactly."""
    from xaiseg.explain.rise import main_axis, oriented_masks, rise_masks

    bar = np.zeros((64, 64), bool)
    for i in range(40):  # down two pixels for each one across: 63.4 degrees from the columns' axis
        bar[10 + i, 10 + i // 2:14 + i // 2] = True
    assert main_axis(bar) == pytest.approx(np.degrees(np.arctan2(2, 1)), abs=2.0)
    assert main_axis(np.eye(64, dtype=bool)[:2]) is None  # two pixels: no axis
    disc = np.hypot(*np.mgrid[-20:21, -20:21]) <= 15
    assert main_axis(disc) is None  # round: no axis, square cells
    for degrees in (-89, -60, -20, 0, 10, 20, 40, 89):  # an axis, not a direction: always in [-90, 90)
        line = np.zeros((101, 101), bool)
        t = np.radians(degrees)
        for r in np.linspace(-45, 45, 400):
            for d in (-2, -1, 0, 1, 2):  # five pixels wide
                line[int(round(50 + r * np.sin(t) + d * np.cos(t))), int(round(50 + r * np.cos(t) - d * np.sin(t)))] = True
        assert main_axis(line) == pytest.approx(degrees, abs=2.0), degrees
    # two slices whose axes differ by a few degrees get nearly the same masks
    near = [oriented_masks(np.random.default_rng(0), 100, (64, 64), 5.0, 15.0, a, 0.5) for a in (10.0, 14.0)]
    assert np.corrcoef(near[0].ravel(), near[1].ravel())[0, 1] > 0.8
    toy, wide = SquareEvidence(), SlicePrompt(box=(26, 40, 62, 50))  # 37 x 11: its mask lies along the rows
    image = evidence_image()
    engine = PerturbationEngine(toy, image, wide, np.ones((64, 64), bool), fill="zero")
    assert engine.reference.sum() == 37 * 11 and main_axis(engine.reference) == pytest.approx(0.0, abs=1e-6)

    def drawn(**kw):
        make, _ = make_explainer("rise", toy, side=11.0, **kw).mask_maker(engine)
        return make(np.random.default_rng(0), 200)

    def lagged(masks, dy, dx):  # correlation of the keep maps with themselves shifted by (dy, dx)
        a, b = masks[:, 16:48, 16:48], masks[:, 16 + dy:48 + dy, 16 + dx:48 + dx]
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    long = drawn(cell_aspect=3.0)
    assert long.shape == (200, 64, 64) and abs(long.mean() - 0.5) < 0.03
    assert lagged(long, 0, 8) > 0.6 > 0.2 > lagged(long, 8, 0)  # cells 5.5 across, 16.5 along the rows
    np.testing.assert_array_equal(long, drawn(cell_aspect=3.0))
    lattice = int(np.ceil(64 / 5.5))
    np.testing.assert_array_equal(drawn(), rise_masks(np.random.default_rng(0), 200, (64, 64), lattice, 0.5))
    ex = make_explainer("rise", toy, side=11.0, cell_aspect=3.0, **dict(FAST["rise"], metric_steps=0)).explain(
        image, wide, target=toy.square_mask())
    assert toy.square_mask()[peak(ex.saliency)] and ex.settings["cell_aspect"] == 3.0
    assert ex.details["cell_angle"] == 0.0 and "cell_angle" not in explain("rise").details
    with pytest.raises(errors.InputError, match="cell_aspect"):
        make_explainer("rise", cell_aspect=0.5)
    with pytest.raises(errors.InputError, match=r"cell aspect \(--cell-aspect\) 3.0 with a fixed grid \(--cells 7\)"):
        make_explainer("rise", cells=7, cell_aspect=3.0)

def test_rise_keep_strata_estimate_shapley_values_where_one_probability_gives_banzhaf():
    """``--keep-strata``: on a game whose values are known (four pixels that matter only together,
    a fifth worth 0.2 alone), masks in five keep-probability strata give each pixel about its
    Shapley value (1/4 for each of the four), where one probability of 0.5 gives its Banzhaf value
    (1/8): the two rank the lone pixel on opposite sides of the four.  All strata's masks pooled into
    one map would give about 0.28, so the strata must be kept apart."""
    from xaiseg.explain.rise import RiseSums, StrataSums, keep_probabilities

    def game(coalitions):
        c = np.asarray(coalitions).reshape(len(coalitions), -1) > 0.5
        return c[:, :4].all(axis=1).astype(float) + 0.2 * c[:, 4]

    assert keep_probabilities(1, 0.3) == (0.3,) and keep_probabilities(5, 0.5) == (0.1, 0.3, 0.5, 0.7, 0.9)
    rng = np.random.default_rng(0)

    def estimate(strata, n=200000):
        sums, pooled = StrataSums((1, 5), strata), RiseSums((1, 5))
        for j, p in enumerate(keep_probabilities(strata, 0.5)):
            masks = (rng.random((n // strata, 1, 5)) < p).astype(np.float32)
            sums.add(j, game(masks), masks)
            pooled.add(game(masks), masks)
        return sums.map().ravel(), pooled.map().ravel()

    (shapley, pooled), (banzhaf, _) = estimate(5), estimate(1)
    np.testing.assert_allclose(exact_shapley(game, 5), [0.25] * 4 + [0.2], atol=1e-12)
    # the midpoint rule over five strata: the mean of t^3 at 0.1 ... 0.9 is 0.245 (1/4 as K grows)
    np.testing.assert_allclose(shapley, [0.245] * 4 + [0.2], atol=0.01)
    np.testing.assert_allclose(banzhaf, [0.125] * 4 + [0.2], atol=0.01)
    assert np.all(pooled[:4] > 0.265)  # what one pooled map of the same masks would say
    assert shapley[:4].min() > shapley[4] and banzhaf[:4].max() < banzhaf[4]
    # a stratum whose masks all kept (or all removed) a pixel says nothing about it: left out of its mean
    sums = StrataSums((1, 2), 2)
    sums.add(0, np.array([1.0, 0.0]), np.array([[[1, 1]], [[0, 1]]], np.float32))  # pixel 1 never removed
    sums.add(1, np.array([0.5, 0.1]), np.array([[[1, 0]], [[0, 1]]], np.float32))
    np.testing.assert_allclose(sums.map(), [[(1.0 + 0.4) / 2, -0.4]])
    assert not StrataSums((1, 2), 2).every_half_drawn() and sums.every_half_drawn()
    # one stratum is RiseSums itself: the same map and reliability
    masks = rng.random((30, 6, 5)).astype(np.float32)
    scores = rng.random(30)
    one, plain = StrataSums((6, 5)), RiseSums((6, 5))
    one.add(0, scores, masks)
    plain.add(scores, masks)
    roi = np.ones((6, 5), bool)
    assert np.array_equal(one.map(), plain.map()) and one.reliability(roi) == plain.reliability(roi)


def test_rise_with_keep_strata_finds_the_evidence_and_records_its_probabilities():
    toy = SquareEvidence()
    ex = explain("rise", toy, strata=5, n_masks=300, early_stop=False)
    assert toy.square_mask()[peak(ex.saliency)], peak(ex.saliency)
    assert ex.details["keep_probabilities"] == [0.1, 0.3, 0.5, 0.7, 0.9] and ex.n_evaluations == 300
    assert ex.settings["strata"] == 5 and "keep_probabilities" not in explain("rise", toy).details
    again = explain("rise", toy, strata=5, n_masks=300, early_stop=False)
    np.testing.assert_array_equal(ex.raw, again.raw)  # the same seed draws the same map
    assert not np.array_equal(ex.raw, explain("rise", toy, seed=1, strata=5, n_masks=300, early_stop=False).raw)
    # the default's masks are drawn as before the strata: one probability, the same stream
    one = explain("rise", toy, strata=1, n_masks=100, early_stop=False)
    rng, engine = np.random.default_rng(0), PerturbationEngine(toy, evidence_image(), PROMPT, one.roi, fill="zero")
    make, _ = make_explainer("rise", toy, **FAST["rise"]).mask_maker(engine)
    masks = np.concatenate([make(rng, 50), make(rng, 50)])
    expected = rise_map(engine.scores(masks, total=0), masks)
    np.testing.assert_allclose(one.raw, np.where(one.roi, expected, 0.0), rtol=0, atol=1e-6)
    with pytest.raises(errors.InputError, match=r"keep probability \(--keep-probability\) 0.3 with 5 strata"):
        make_explainer("rise", p=0.3, strata=5)
    with pytest.raises(errors.InputError, match="strata"):
        make_explainer("rise", strata=0)
    with pytest.raises(errors.InputError, match=r"RISE masks \(--masks\) 9 for 5 keep-probability strata.*at least 10"):
        make_explainer("rise", strata=5, n_masks=9)


def test_rise_keep_strata_deal_masks_in_turn_and_stop_only_with_every_half_drawn(monkeypatch):
    """Mask i is drawn in stratum i mod K, each block scored in one call; the early stop waits until
    every stratum has masks in both its halves, and the reliability stays in [0, 1]."""
    from xaiseg.explain.rise import RISE

    toy, drawn, calls = SquareEvidence(), [], []
    plain_maker, plain_scores = RISE.mask_maker, PerturbationEngine.scores

    def maker(self, engine):
        make, cells = plain_maker(self, engine)

        def recording(rng, n, p=self.p):
            drawn.append((n, p))
            return make(rng, n, p)
        return recording, cells

    def scores(self, masks, **kw):
        calls.append(len(masks))
        return plain_scores(self, masks, **kw)

    monkeypatch.setattr(RISE, "mask_maker", maker)
    monkeypatch.setattr(PerturbationEngine, "scores", scores)
    ex = explain("rise", toy, strata=3, n_masks=7, check_every=2, min_masks=0, converge=0.01, metric_steps=0)
    # blocks of 2: masks 0 1 | 2 3 | 4 5 | 6 in strata 0 1 | 2 0 | 1 2 | 0, each block drawn by stratum
    assert drawn[:7] == [(1, 1 / 6), (1, 0.5), (1, 1 / 6), (1, 5 / 6), (1, 0.5), (1, 5 / 6), (1, 1 / 6)]
    assert calls == [2, 2, 2, 1] and ex.details["stopped_at"] == 7 and 0.0 <= ex.details["reliability"] <= 1.0
    # a map reliable at once still waits for strata 1 and 2's second halves (masks 4 and 5)
    from xaiseg.explain.rise import StrataSums

    monkeypatch.setattr(StrataSums, "reliability", lambda self, roi: 1.0)
    held = explain("rise", toy, strata=3, n_masks=7, check_every=2, min_masks=0, metric_steps=0)
    assert held.details["stopped_at"] == 6 and held.details["converged"] is True
    assert explain("rise", toy, n_masks=7, check_every=2, min_masks=0, metric_steps=0).details["stopped_at"] == 2


def test_occlusion_evaluates_only_patches_that_touch_the_roi():
    toy = SquareEvidence()
    roi = np.zeros((64, 64), bool)
    roi[8:24, 8:24] = True
    ex = make_explainer("occlusion", toy, patch=16, stride=8, grid="image", metric_steps=0).explain(
        evidence_image(), PROMPT, roi=roi)
    assert ex.details["patches_full"] == 49
    assert ex.n_evaluations == ex.details["patches_evaluated"] == 9  # 3 x 3 starts overlap rows/cols 8..23
    assert ex.metrics["roi_ratio"] == pytest.approx(9 / 49)
    assert not ex.saliency[~roi].any()
    # unperturbed slice, 9 patches, the two jittered copies that set the noise level; every patch
    # here covers the square (the same drop everywhere), so the display map is flat, no pixel is
    # high-saliency and the Dice drop needs no pass; and the ROI inpainted whole, for the share of
    # the mask the prompt draws
    assert ex.metrics["high_saliency_fraction"] == 0.0 and ex.metrics["dice_drop"] == 0.0
    assert toy.embed_calls == 1 + 9 + 2 + 1 and "kept_without_roi" in ex.metrics


def test_roi_occlusion_equals_full_image_occlusion_inside_the_roi():
    toy = SquareEvidence()
    roi = np.zeros((64, 64), bool)
    roi[4:20, 4:20] = True
    occ = make_explainer("occlusion", toy, patch=16, stride=8, grid="image", score="logit", metric_steps=0)
    part = occ.explain(evidence_image(), PROMPT, roi=roi)
    full = occ.explain(evidence_image(), PROMPT)
    np.testing.assert_allclose(part.raw[roi], full.raw[roi], rtol=1e-6)
    assert part.n_evaluations < full.n_evaluations


def test_occlusion_patch_is_measured_on_the_model_grid():
    toy = SquareEvidence()
    toy.model_grid = 32  # a 64-pixel slice is shown to the model at 32: patch 8 on the model is 16 here
    occ = make_explainer("occlusion", toy, patch=8, stride=4)
    assert occ.pixel_sizes((64, 64)) == (16, 8)


def test_occlusion_holds_a_few_cells_images_at_once(monkeypatch):
    """The perturbed images are built a few cells at a time (whole batches), whatever the number of
    cells, and the map is the one scoring every cell at once gives."""
    import xaiseg.explain.occlusion as occlusion

    toy, wide = SquareEvidence(), SlicePrompt(box=(26, 40, 62, 50))
    sizes = []
    seen = PerturbationEngine.score_images

    def counted(self, images, *args, **kwargs):
        sizes.append(len(images))
        return seen(self, images, *args, **kwargs)

    monkeypatch.setattr(PerturbationEngine, "score_images", counted)
    maps = []
    for at_once in (10 ** 6, 5):
        monkeypatch.setattr(occlusion, "CELLS_AT_ONCE", at_once)
        sizes.clear()
        ex = make_explainer("occlusion", toy, side=11.0, batch_size=2, score="logit", metric_steps=0,
                            noise_passes=0).explain(evidence_image(), wide, roi=np.ones((64, 64), bool))
        maps.append(ex.raw)
    cells = ex.details["patches_evaluated"]
    assert ex.details["mode"] == "both" and cells > 6 and max(sizes) == 6 and sum(sizes) > 2 * cells
    np.testing.assert_array_equal(maps[0], maps[1])


def test_occlusion_strips_follow_the_structures_main_axis():
    """``aspect``: structure-sized strips that many times longer along the mask's main axis than
    across it, of the square patch's area, on a lattice turned with the axis: each strip touches the
    ROI, the ROI's inner pixels lie in four strips, the map still finds the evidence, the estimate
    counts twice the squares' patches, and a fixed grid refuses strips.  The default is strips 4 x longer."""
    from xaiseg.explain.occlusion import strips

    roi = np.zeros((64, 64), bool)
    roi[20:44, 12:52] = True
    for angle in (0.0, 90.0, 30.0):
        cells = strips((64, 64), roi, angle, 4.0, 16.0)
        assert cells and all((c & roi).any() for c in cells)
        cover = np.sum(cells, axis=0)
        assert (cover[24:40, 16:48] == 4).all(), angle  # half a strip's steps both ways
    assert strips((64, 64), np.zeros((64, 64), bool), 30.0, 4.0, 16.0) == []
    rows, cols = np.nonzero(strips((64, 64), roi, 0.0, 4.0, 16.0)[0])
    assert np.ptp(rows) + 1 == 4 and np.ptp(cols) + 1 == 16  # along the columns' axis at 0 degrees
    rows, cols = np.nonzero(strips((64, 64), roi, 90.0, 4.0, 16.0)[0])
    assert np.ptp(rows) + 1 == 16 and np.ptp(cols) + 1 <= 5  # along the rows' axis at 90

    toy, wide = SquareEvidence(), SlicePrompt(box=(26, 40, 62, 50))  # 37 x 11: its mask lies along the rows
    occ = make_explainer("occlusion", toy, side=11.0, aspect=4.0, mode="remove", score="logit", metric_steps=0,
                         noise_passes=0)
    ex = occ.explain(evidence_image(), wide, roi=np.ones((64, 64), bool))
    assert ex.details["strip_angle"] == 0.0 and ex.details["strip_px"] == [5.5, 22.0] and ex.details["strip_aspect"] == 4
    assert toy.square_mask()[peak(ex.saliency)]
    # the estimate counts twice the squares' cells (measured on the bench's slices; not a bound: this toy's
    # whole-slice ROI, tiled by strips of a structure of side 11, makes more)
    squares = make_explainer("occlusion", toy, side=11.0, aspect=1.0, mode="remove")
    for extent in ((16.5, 64), None):
        assert occ.cost(extent, 64) == 2 * squares.cost(extent, 64)
    assert ex.details["patches_evaluated"] == ex.n_evaluations
    again = occ.explain(evidence_image(), wide, roi=np.ones((64, 64), bool))
    np.testing.assert_array_equal(ex.raw, again.raw)
    # a round mask has no axis: the squares, coarse to fine
    assert "strip_angle" not in occ.explain(evidence_image(), PROMPT, roi=np.ones((64, 64), bool)).details
    with pytest.raises(errors.InputError, match=r"occlusion aspect \(--occlusion-aspect\) 4.0 .* --patch 16"):
        make_explainer("occlusion", patch=16, aspect=4.0)
    with pytest.raises(errors.InputError, match=r"expected 0 or 1 \(squares\) with --stride 4: the strips step half"):
        make_explainer("occlusion", stride=4, aspect=4.0)
    # the default (aspect 0) is strips 4 x longer for the structure-sized patches, the same map; 1 is the squares;
    # a fixed grid, a pass budget or a stride keep the squares by default rather than refusing
    default = make_explainer("occlusion", toy, side=11.0, mode="remove", score="logit", metric_steps=0, noise_passes=0)
    assert default.aspect == 0.0 and default.strip_aspect == 4.0
    np.testing.assert_array_equal(default.explain(evidence_image(), wide, roi=np.ones((64, 64), bool)).raw, ex.raw)
    squares = make_explainer("occlusion", toy, side=11.0, aspect=1.0, mode="remove", score="logit", metric_steps=0,
                             noise_passes=0).explain(evidence_image(), wide, roi=np.ones((64, 64), bool))
    assert "strip_angle" not in squares.details and squares.details["patches_refined"] > 0
    for fixed in (dict(patch=16), dict(passes=8), dict(stride=4)):
        assert not make_explainer("occlusion", **fixed).uses_strips, fixed
    with pytest.raises(errors.InputError, match=r"occlusion aspect \(--occlusion-aspect\) 0.5: expected 0 \(the "
                                                r"default, 4 for the structure-sized patches\), 1 \(squares\) or more"):
        make_explainer("occlusion", aspect=0.5)


def test_occlusion_shifts_score_several_lattices_of_strips():
    """``shifts`` N: N lattices of strips, each moved a further 1/N of a step along and across; every
    pixel takes the mean of all strips covering it, so the map steps N times finer across the slice,
    still peaks on the evidence, costs N times the strips' passes, and refuses squares."""
    from xaiseg.explain.occlusion import strips

    roi = np.zeros((64, 64), bool)
    roi[20:44, 12:52] = True
    one = strips((64, 64), roi, 30.0, 4.0, 16.0)
    half = strips((64, 64), roi, 30.0, 4.0, 16.0, 0.5)
    assert not any(any((a == b).all() for b in one) for a in half)  # every strip moved
    # at 0 degrees the strips run along the columns: half a step is a quarter strip along, a quarter width across
    starts = {(np.nonzero(c)[0].min(), np.nonzero(c)[1].min()) for c in strips((64, 64), roi, 0.0, 4.0, 16.0)
              if c[:, 0].sum() == 0 and c[0].sum() == 0}
    moved = {(np.nonzero(c)[0].min(), np.nonzero(c)[1].min()) for c in strips((64, 64), roi, 0.0, 4.0, 16.0, 0.5)
             if c[:, 0].sum() == 0 and c[0].sum() == 0}
    assert {(y + 1, x + 4) for y, x in starts} & moved and not starts & moved
    cover = np.sum(one + half, axis=0)
    assert (cover[24:40, 16:48] == 8).all()  # four strips of each lattice over the inner pixels
    # a whole step is the same lattice again
    assert sorted(c.tobytes() for c in strips((64, 64), roi, 30.0, 4.0, 16.0, 1.0)) == sorted(c.tobytes() for c in one)

    toy, wide = SquareEvidence(), SlicePrompt(box=(26, 40, 62, 50))
    maps = {}
    for n in (1, 2, 4):
        occ = make_explainer("occlusion", toy, side=11.0, shifts=n, mode="remove", smooth=0.0, score="logit",
                             metric_steps=0, noise_passes=0)
        ex = occ.explain(evidence_image(), wide, roi=np.ones((64, 64), bool))
        assert toy.square_mask()[peak(ex.saliency)], n
        assert ex.details["strip_shifts"] == n
        maps[n] = ex
    single = maps[1].details["patches_evaluated"]
    for n in (2, 4):
        assert abs(maps[n].details["patches_evaluated"] - n * single) <= 0.1 * n * single  # about N lattices' strips
        assert maps[n].n_evaluations == maps[n].details["patches_evaluated"]
        # finer steps: more distinct values over the slice than one lattice's
        assert len(np.unique(maps[n].raw)) > len(np.unique(maps[1].raw)), n
        for mode, emptied in (("both", 1), ("restore", 1), ("remove", 0)):  # the estimate: N times the strips
            shifted, base = (make_explainer("occlusion", toy, side=11.0, shifts=k, mode=mode) for k in (n, 1))
            assert shifted.cost((16.5, 64), 64) - emptied == n * (base.cost((16.5, 64), 64) - emptied), mode
            share = lambda extent: 1.0 if extent is None else extent[0] * extent[1] / 64.0 ** 2
            assert shifted.cost_equivalents((16.5, 64), 64, share) > \
                (n - 0.5) * base.cost_equivalents((16.5, 64), 64, share), mode
        assert maps[n].details["stride_px"] == max(1, round(maps[1].details["strip_px"][0] / (2 * n)))
    again = make_explainer("occlusion", toy, side=11.0, shifts=2, mode="remove", smooth=0.0, score="logit",
                           metric_steps=0, noise_passes=0).explain(evidence_image(), wide, roi=np.ones((64, 64), bool))
    np.testing.assert_array_equal(again.raw, maps[2].raw)
    for fixed, flag in ((dict(patch=16), "--patch 16"), (dict(passes=8), "--occlusion-passes 8"),
                        (dict(stride=4), "--stride 4"), (dict(aspect=1.0), "--occlusion-aspect 1")):
        with pytest.raises(errors.InputError, match=r"occlusion shifts \(--occlusion-shifts\) 2 move the strips' "
                                                    r"lattice; expected 1 with " + flag + r".*which use no strips"):
            make_explainer("occlusion", shifts=2, **fixed)
    with pytest.raises(errors.InputError, match="shifts.* 5.*at most 4"):
        make_explainer("occlusion", shifts=5)
    # a round mask has no axis: the squares, which the shifts leave as they are
    round_map = make_explainer("occlusion", toy, side=11.0, shifts=2, mode="remove", score="logit", metric_steps=0,
                               noise_passes=0).explain(evidence_image(), PROMPT, roi=np.ones((64, 64), bool))
    squares = make_explainer("occlusion", toy, side=11.0, mode="remove", score="logit", metric_steps=0,
                             noise_passes=0).explain(evidence_image(), PROMPT, roi=np.ones((64, 64), bool))
    assert "strip_shifts" not in round_map.details
    np.testing.assert_array_equal(round_map.raw, squares.raw)


def test_occlusion_removal_roi_takes_away_only_the_rois_pixels():
    """``removal`` roi: a removed strip takes away only its pixels inside the ROI (those the curves
    remove), so a ROI beside the evidence, whose strips reach into it, scores nothing, where whole
    strips credit the ROI with the evidence outside it; over the whole slice the two are the same."""
    toy, wide = SquareEvidence(), SlicePrompt(box=(26, 40, 62, 50))  # a wide box: strips along the rows

    def run(roi, removal, **kw):
        settings = dict(side=11.0, mode="remove", smooth=0.0, score="logit", metric_steps=0, noise_passes=0)
        settings.update(kw)
        occ = make_explainer("occlusion", toy, removal=removal, **settings)
        return occ.explain(evidence_image(), wide, roi=roi)

    beside = np.zeros((64, 64), bool)
    beside[8:24, 24:44] = True  # right of the evidence square (columns 8 - 23), not overlapping it
    whole, inside = run(beside, "whole"), run(beside, "roi")
    assert whole.raw[beside].max() > 1.0  # whole strips reach into the square
    assert np.abs(inside.raw).max() == 0.0  # nothing inside this ROI moves the mask
    assert inside.n_evaluations == whole.n_evaluations
    everywhere = np.ones((64, 64), bool)
    np.testing.assert_array_equal(run(everywhere, "roi").raw, run(everywhere, "whole").raw)
    half = np.zeros((64, 64), bool)
    half[:, :16] = True  # the square's left half inside
    both = {r: run(half, r, mode="both") for r in ("roi", "whole")}
    removed = {r: run(half, r) for r in ("roi", "whole")}
    for removal, ex in both.items():
        assert (toy.square_mask() & half)[peak(ex.saliency)], removal
    # scored both ways, only the removal half changes: both minus remove is the restore half, the same for both
    rises = {r: both[r].raw - removed[r].raw for r in both}
    np.testing.assert_allclose(rises["roi"], rises["whole"], atol=1e-5)  # float32 logits
    assert np.abs(removed["roi"].raw - removed["whole"].raw).max() > 0.1  # and the removal half does change
    with pytest.raises(errors.InputError, match=r"occlusion removal \(--occlusion-removal\) roi .*expected whole with "
                                                r"--occlusion-mode restore, which removes no patch"):
        make_explainer("occlusion", removal="roi", mode="restore")
    with pytest.raises(errors.InputError, match="removal.*'inside'.*whole, roi"):
        make_explainer("occlusion", removal="inside")


def test_settings_built_directly_check_every_fields_choices_and_bounds():
    """build() checks the command line's and a record's values; a settings object made directly
    (as code and tests do) gets the same checks from the field's own choices and bounds."""
    from xaiseg.explain.occlusion import OcclusionSettings
    from xaiseg.explain.rise import RiseSettings

    with pytest.raises(errors.InputError, match=r"OcclusionSettings.removal 'inside' is unknown; expected one of "
                                                r"whole, roi"):
        OcclusionSettings(removal="inside")
    with pytest.raises(errors.InputError, match=r"OcclusionSettings.mode 'add' is unknown; expected one of auto"):
        OcclusionSettings(mode="add")
    with pytest.raises(errors.InputError, match=r"RiseSettings.metric_fill 'black' is unknown"):
        RiseSettings(metric_fill="black")
    with pytest.raises(errors.InputError, match=r"RiseSettings.batch_size -1 is too small; expected at least 0"):
        RiseSettings(batch_size=-1)
    with pytest.raises(errors.InputError, match=r"OcclusionSettings.shifts 5 is too large; expected at most 4"):
        OcclusionSettings(shifts=5)
    assert OcclusionSettings(removal="roi").removal == "roi"  # a good value passes
    # a finite number in every numeric field (NaN fails no bound, inf no minimum); a bounded field takes
    # neither a truth value (True == 1) nor text
    with pytest.raises(errors.InputError, match=r"OcclusionSettings.side nan must be a finite number"):
        OcclusionSettings(side=float("nan"))
    with pytest.raises(errors.InputError, match=r"OcclusionSettings.smooth inf must be a finite number"):
        OcclusionSettings(smooth=float("inf"))  # no maximum to fail
    with pytest.raises(errors.InputError, match=r"OcclusionSettings.shifts True must be a number, not a truth value"):
        OcclusionSettings(shifts=True)
    with pytest.raises(errors.InputError, match=r"RiseSettings.batch_size '8' must be a number; expected at least 0"):
        RiseSettings(batch_size="8")


@pytest.mark.parametrize("passes", [4, 6, 9, 20])
def test_budgeted_occlusion_spends_at_most_its_passes_and_finds_the_evidence_quadrant(passes):
    toy = SquareEvidence()
    occ = make_explainer("occlusion", toy, passes=passes, metric_steps=0, noise_passes=0, score="logit")
    ex = occ.explain(evidence_image(), PROMPT, target=toy.square_mask())
    assert ex.n_evaluations == passes == occ.cost()
    # the unperturbed slice, the cells, the ROI inpainted whole (the prompt's share), the Dice-drop check
    assert toy.embed_calls == 1 + passes + 1 + 1
    square = toy.square_mask()
    # the square lies in the top-left quadrant: only cells over it move the score
    assert ex.raw[square].mean() > 2 * ex.raw[~square].mean()
    y, x = peak(ex.saliency)
    assert y < 32 and x < 32, f"peak {(y, x)} outside the evidence's quadrant"
    assert ex.raw[:32, :32].mean() > 10 * max(ex.raw[32:, 32:].mean(), 1e-3)  # the box's quadrant: no evidence
    assert ex.details["budget_rounds"] >= 1
    again = occ.explain(evidence_image(), PROMPT, target=toy.square_mask())
    np.testing.assert_array_equal(ex.raw, again.raw)


def test_budgeted_occlusion_cells_tile_the_roi_coarse_to_fine():
    from xaiseg.explain.occlusion import budget_rounds

    rounds = list(budget_rounds((10, 20, 50, 100), levels=2))
    assert [len(r) for r in rounds] == [4, 5, 16, 33]
    quadrants = rounds[0]
    cover = np.zeros((60, 110), int)
    for y0, x0, y1, x1 in quadrants:
        cover[y0:y1, x0:x1] += 1
    assert (cover[10:50, 20:100] == 1).all() and cover.sum() == 40 * 80  # a tiling of the rectangle
    assert (30, 60, 50, 100) in quadrants and (20, 40, 40, 80) in rounds[1]  # the centre cell, half a cell off


def test_budgeted_occlusion_only_evaluates_cells_that_touch_the_roi():
    toy = SquareEvidence()
    roi = np.zeros((64, 64), bool)
    roi[4:30, 4:30] = True
    roi[40:44, 40:44] = True  # a second part: the ROI's bounding rectangle spans both
    ex = make_explainer("occlusion", toy, passes=8, metric_steps=0, noise_passes=0).explain(
        evidence_image(), PROMPT, roi=roi)
    assert ex.n_evaluations <= 8 and not ex.saliency[~roi].any()


@pytest.mark.parametrize("settings, message", [
    (dict(passes=3), "at least 4"), (dict(passes=6, patch=16), "no --patch")])
def test_budgeted_occlusion_rejects_what_it_cannot_do(settings, message):
    with pytest.raises(errors.InputError, match=message):
        make_explainer("occlusion", **settings)


def test_shap_equals_exact_shapley_values_with_few_superpixels():
    toy = SquareEvidence()
    image, roi = evidence_image(), np.ones((64, 64), bool)
    segments = superpixels(image, roi)
    m = len(segments)
    assert 2 <= m <= 12
    ex = make_explainer("shap", toy, budget=2 ** m, score="logit", metric_steps=0).explain(image, PROMPT, roi=roi)
    engine = PerturbationEngine(toy, image, PROMPT, roi, score="logit")
    exact = exact_shapley(lambda z: engine.scores(keep_from_segments(segments, row) for row in z), m)
    shap_values = np.array([ex.raw[seg].mean() for seg in segments])
    np.testing.assert_allclose(shap_values, exact, atol=1e-4 * max(1.0, np.abs(exact).max()))
    # efficiency: the values add up to f(all) - f(none)
    none = engine.scores([keep_from_segments(segments, np.zeros(m))])[0]
    assert exact.sum() == pytest.approx(engine.baseline - none, rel=1e-6)


def test_lime_reports_its_surrogate_fit():
    ex = explain("lime")
    assert 0.0 <= ex.details["r2"] <= 1.0 and ex.details["superpixels"] >= 2


def test_bad_settings_name_the_value():
    with pytest.raises(errors.InputError, match="'gradcam'"):
        make_explainer("gradcam")
    with pytest.raises(errors.InputError, match="score 'auc'"):
        make_explainer("occlusion", score="auc")
    with pytest.raises(errors.InputError, match="threshold 1.5"):
        make_explainer("rise", threshold=1.5)
    with pytest.raises(errors.ModelError, match="no segmenter"):
        make_explainer("lime").explain(evidence_image(), PROMPT)
    with pytest.raises(errors.InputError, match="ROI of shape"):
        PerturbationEngine(SquareEvidence(), evidence_image(), PROMPT, np.ones((3, 3), bool))


# --- volumes: Session.explain, ROI sources, cancellation and the written files ---------------------

def toy_volume(n=3):
    arr = np.stack([evidence_image(seed=k) for k in range(n)]).astype(np.float32) * 1000
    # stored in the canonical axial layout (rows P->A, cols R->L, as MNI152), so the engine's automatic
    # turn is the identity and the position-dependent toy sees each slice as drawn
    geom = Geometry((0.8, 0.8, 2.0), (10.0, -5.0, 3.0), (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0), arr.shape[::-1])
    return Volume(arr, geom, "toy-volume")


def toy_session():
    session = Session(toy_volume(), SquareEvidence())
    seg = session.segment(BoxPrompt((0, 36, 36), (2, 55, 55)), name="toy")
    return session, seg


def test_session_explains_every_masked_slice_and_writes_the_contract(tmp_path):
    session, seg = toy_session()
    target = np.zeros(session.volume.shape, bool)
    target[:, 8:24, 8:24] = True
    run = session.explain(seg, [make_explainer("occlusion", patch=16, stride=8, grid="image", metric_steps=2)],
                          roi=RoiConfig("box", margin=40), target=target)
    assert run.slices == [0, 1, 2]
    paths = run.write(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["toy_mask.nrrd", "toy_run.json", "toy_roi.nrrd", "toy_occlusion_saliency.nrrd",
                            "toy_occlusion_label.nrrd", "toy_occlusion_raw.nrrd", "toy_metrics.json"]
                           + [f"toy_occlusion_k{k:03d}.png" for k in range(3)])
    sal = sitk.ReadImage(str(paths["occlusion_saliency"]))
    assert sal.GetSpacing() == pytest.approx((0.8, 0.8, 2.0)) and sal.GetOrigin() == pytest.approx((10.0, -5.0, 3.0))
    arr = sitk.GetArrayFromImage(sal)
    assert arr.dtype == np.float32 and arr.max() == pytest.approx(1.0)
    assert target[np.unravel_index(np.argmax(arr[1]), arr[1].shape) and (1,) + peak(arr[1])]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["occlusion_label"])))
    np.testing.assert_array_equal(label, (arr >= 0.5).astype(np.uint8))
    doc = json.loads(paths["metrics"].read_text())
    assert doc["slices"] == [0, 1, 2] and doc["roi"]["fallback_slices"] == []
    entry = doc["methods"]["occlusion"]
    assert entry["files"]["saliency"] == "toy_occlusion_saliency.nrrd" and len(entry["files"]["png"]) == 3
    assert entry["summary"]["pointing_game"] == 1.0
    for key in ("seconds", "evaluations", "roi_ratio", "dice_drop", "deletion_auc", "insertion_auc",
                "energy_in_target", "iou_target"):
        assert key in entry["slices"]["1"], key
    assert doc["record"]["model"]["name"] == "square-evidence toy" and doc["record"]["roi"]["source"] == "box"


def test_cancel_during_a_run_raises_and_writes_nothing(tmp_path):
    session, seg = toy_session()
    token = CancelToken()
    seen = []

    def on_event(event):
        seen.append(event)
        if event["event"] == "step" and len([e for e in seen if e["event"] == "step"]) == 2:
            token.cancel()

    with pytest.raises(errors.Cancelled):
        run = session.explain(seg, [make_explainer("rise", n_masks=400, batch_size=8)], roi=RoiConfig("box"),
                              progress=CallbackProgress(on_event, token))
        run.write(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert any(e.get("stage", "").startswith("rise slice 0") for e in seen)


def test_empty_roi_falls_back_to_the_box_and_says_so():
    session, seg = toy_session()
    empty = np.zeros(session.volume.shape, bool)
    run = session.explain(seg, [make_explainer("occlusion", patch=16, stride=8, grid="image", metric_steps=0)],
                          roi=RoiConfig("mask", margin=2), roi_mask=empty, slices=[1])
    assert run.roi_sources == {1: "box (fallback: empty mask ROI)"}
    assert run.metrics()["roi"]["fallback_slices"] == [1]
    assert run.roi[1, 34:58, 34:58].all() and not run.roi[1, :30].any()


def test_roi_sources_box_mask_and_embedding():
    image = evidence_image()
    mask = np.zeros(image.shape, bool)
    mask[40:50, 40:50] = True
    toy = SquareEvidence()
    box = RoiFinder(RoiConfig("box", margin=3)).find(image, PROMPT, mask)[0]
    assert box.sum() == (20 + 6) ** 2
    dilated = RoiFinder(RoiConfig("mask", margin=2)).find(image, PROMPT, mask)[0]
    assert dilated.sum() == 14 * 14
    emb, source = RoiFinder(RoiConfig("embedding", margin=0)).find(image, PROMPT, mask, toy.embed(image))
    assert source == "embedding" and emb[36:56, 36:56].all() and emb.sum() < image.size / 2


def test_clip_roi_without_weights_says_how_to_configure():
    with pytest.raises(errors.InputError, match="--clip-model"):
        RoiFinder(RoiConfig("clip", clip_prompts=("caudate",)))
    with pytest.raises(errors.WeightsMissingError, match="not a local folder"):
        RoiFinder(RoiConfig("clip", clip_model="/nonexistent/clip", clip_prompts=("caudate",))).find(
            evidence_image(), PROMPT, np.zeros((64, 64), bool))


# --- the command line ------------------------------------------------------------------------------

def write_toy_volume(path):
    vol = toy_volume()
    sitk.WriteImage(vol.to_sitk(), str(path))
    return path


def test_cli_explain_writes_every_method_and_prints_a_summary(tmp_path, monkeypatch, capsys):
    from xaiseg.cli import main

    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: SquareEvidence())
    src = write_toy_volume(tmp_path / "toy.nrrd")
    out = tmp_path / "out"
    rc = main(["explain", str(src), "--box", "36,36,1,55,55,1", "--method", "all", "--roi", "box",
               "--roi-margin", "40", "--patch", "32", "--stride", "16", "--masks", "100", "--samples", "40",
               "--shap-budget", "64", "--metric-steps", "2", "--percentiles", "0,100", "-q", "-o", str(out)])
    assert rc == 0
    doc = json.loads((out / "toy_metrics.json").read_text())
    assert set(doc["methods"]) == {"occlusion", "rise", "lime", "shap"} and doc["slices"] == [1]
    for method in doc["methods"]:
        assert (out / f"toy_{method}_saliency.nrrd").exists() and (out / f"toy_{method}_k001.png").exists()
    assert doc["methods"]["rise"]["settings"]["n_masks"] == 100
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


@pytest.mark.parametrize("argv, message", [
    (["--method", "gradcam"], "'gradcam' is unknown"),
    (["--slices", "a-b"], "--slices 'a-b'"),
    (["--slices", "9"], "explain slice(s) [9] lie outside the volume"),  # refused before the model loads
    (["--roi", "clip"], "--clip-model"),
    (["--threshold", "2"], "threshold 2.0"),
])
def test_cli_explain_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, message):
    from xaiseg.cli import main

    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: SquareEvidence())
    src = write_toy_volume(tmp_path / "toy.nrrd")
    out = tmp_path / "out"
    rc = main(["explain", str(src), "--box", "36,36,1,55,55,1", "-q", "-o", str(out)] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_budgeted_occlusion_evaluates_each_cell_once_on_a_thin_roi():
    from xaiseg.explain.occlusion import budget_rounds

    rect = (10, 4, 15, 44)  # 5 x 40 pixels: finer cells round to the same rows
    rounds = list(budget_rounds(rect, levels=3))
    assert any(len(set(r)) < len(r) for r in rounds)  # the hazard: one round names a cell twice
    distinct = set(c for r in rounds for c in r)
    roi = np.zeros((64, 64), bool)
    roi[10:15, 4:44] = True
    toy = SquareEvidence()
    big = 10 ** 4  # more than there are cells: every distinct cell once, no more
    occ = make_explainer("occlusion", toy, passes=big, metric_steps=0, noise_passes=0)
    occ_rounds = list(budget_rounds(rect))
    ex = occ.explain(evidence_image(), PROMPT, roi=roi)
    assert ex.n_evaluations == len(set(c for r in occ_rounds for c in r)) >= len(distinct)


def test_rise_early_stop_rule_is_one_method_of_its_settings():
    """The rule RISE stops by (and the explain bench replays): checks in a row at or above the
    reliability, from ``min_masks`` on, never with the early stop off."""
    from xaiseg.explain.rise import RiseSettings

    s = RiseSettings(converge=0.9, min_masks=100, patience=2)
    assert s.next_streak(0, 0.95, 50) == (1, False)  # before min_masks
    assert s.next_streak(1, 0.95, 100) == (2, True)
    assert s.next_streak(1, 0.89, 150) == (0, False)  # a check below the bar resets the streak
    assert RiseSettings(early_stop=False).next_streak(5, 1.0, 10_000) == (6, False)
    assert make_explainer("rise").config.next_streak(0, 0.9, 100) == (1, True)  # the defaults: patience 1
