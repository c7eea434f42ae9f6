"""One slice's trust line (xaiseg.explain.trust), read from the rows a real run writes on
known-answer toys: a faithful map beats the trivial maps and carries no mark, a map where the model
looks at the box loses to the blob at the box centre, a slice where nothing moves the mask shows no
evidence, and a RISE map of a model whose score is noise is marked unreliable.  Every figure in the
text is the row's, as rounded there."""
import json

import numpy as np
import pytest

from toys import HashedEvidence, SquareEvidence, evidence_image
from xaiseg.errors import InputError
from xaiseg.explain import make_explainer
from xaiseg.explain.trust import LOW_RELIABILITY, RANDOMISED_SIMILAR, short_marks, slice_row, slice_trust, slices_marked
from xaiseg.io import Geometry, Volume
from xaiseg.models.base import SlicePrompt
from xaiseg.pipeline import SegmentConfig, Session
from xaiseg.roi import RoiConfig
from xaiseg.volume import BoxPrompt

PROMPT = SlicePrompt(box=(36, 36, 55, 55))
FINE = dict(patch=16, stride=8, grid="image", baselines=True, metric_steps=8)


class DrawnNoise(HashedEvidence):
    """The box is always drawn (so the run has a mask to explain), its logit noise as before."""

    def decode(self, embedding, prompt):
        out = super().decode(embedding, prompt)
        return np.where(out > -5.0, out + 6.0, out)


def slice_metrics(model, method="occlusion", **settings):
    """One slice explained; its metrics row as the volume run writes it."""
    return make_explainer(method, model, **dict(FINE, **settings)).explain(
        evidence_image(), PROMPT, roi=np.ones((64, 64), bool)).metrics


def volume_doc(tmp_path, model, explainer, n=2, roi_mask=None):
    """NAME_metrics.json of a real volume run on ``n`` copies of the evidence image."""
    arr = (np.stack([evidence_image(seed=k) for k in range(n)]) * 1000).astype(np.float32)
    volume = Volume(arr, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), arr.shape[::-1]), "toy")
    session = Session(volume, model, SegmentConfig(orientation="array"))
    seg = session.segment(BoxPrompt((0, 36, 36), (n - 1, 55, 55)), name="toy")
    roi = RoiConfig("box", margin=40) if roi_mask is None else RoiConfig("mask", margin=0)
    run = session.explain(seg, [explainer], roi=roi, roi_mask=roi_mask)
    return json.loads(run.write(tmp_path, pngs=False)["metrics"].read_text())


def test_a_faithful_map_carries_no_mark_and_quotes_its_figures():
    row = slice_metrics(SquareEvidence())
    trust = slice_trust(row, "occlusion", 4, "ROI occlusion")
    assert trust["explained"] and trust["marks"] == []
    best = min(row["trivial"], key=lambda n: row["trivial"][n]["deletion_auc"])
    assert trust["text"].startswith("Slice 4, ROI occlusion: ")
    assert f"deletion AUC {row['deletion_auc']:.3f} beats every trivial map" in trust["text"]
    assert f"{row['trivial'][best]['deletion_auc']:.3f}" in trust["text"]
    assert "reliability" not in trust["text"]  # occlusion measures none
    assert f"evidence beyond the model's noise (largest change {row['signal']:.3g}" in trust["text"]
    # without the trivial maps (off by default: they cost encoder passes) the line says so
    alone = slice_metrics(SquareEvidence(), baselines=False)
    assert "trivial" not in alone
    assert (f"deletion AUC {alone['deletion_auc']:.3f}, not compared with the trivial maps (turn on baselines)"
            in slice_trust(alone, "occlusion", 4)["text"])


def test_a_map_that_loses_to_the_box_centre_is_marked():
    # the evidence is the box itself: the blob at the box centre removes the mask at least as fast
    row = slice_metrics(SquareEvidence(square=(36, 36, 56, 56)), patch=32, stride=32)
    assert not row["beats_trivial_deletion"]
    trust = slice_trust(row, "occlusion", 0)
    assert "below_trivial" in trust["marks"]
    winner = min(row["trivial"], key=lambda n: row["trivial"][n]["deletion_auc"])
    title = {"blurred_mask": "the blurred mask", "box_centre": "a blob at the box centre", "random": "a random map"}
    assert f"does not beat {title[winner]} {row['best_trivial_deletion_auc']:.3f}" in trust["text"]


def test_no_evidence_is_marked_on_the_slice_the_run_lists(tmp_path):
    # on slice 1 the ROI leaves the evidence square out: occluding inside it changes nothing there
    roi = np.ones((2, 64, 64), np.uint8)
    roi[1] = 0
    roi[1, 34:58, 34:58] = 1
    doc = volume_doc(tmp_path, SquareEvidence(), make_explainer("occlusion", **dict(FINE, metric_steps=2)),
                     roi_mask=roi)
    assert slices_marked(doc, "occlusion", "no_evidence") == doc["methods"]["occlusion"]["summary"][
        "no_evidence_slices"] == [1]
    quiet, fine = (slice_trust(slice_row(doc, "occlusion", k), "occlusion", k) for k in (1, 0))
    row = slice_row(doc, "occlusion", 1)
    assert "no_evidence" in quiet["marks"] and "not painted" in quiet["text"]
    assert f"largest change {row['signal']:.3g}, model noise {row['noise_level']:.3g}" in quiet["text"]
    assert "no_evidence" not in fine["marks"]
    # the same slice keeps its whole mask with the ROI's image removed (the evidence lies outside it):
    # the mask is not the ROI's doing, and the line says so before anything else
    assert row["kept_without_roi"] == pytest.approx(1.0)
    assert slices_marked(doc, "occlusion", "prompt_driven") == doc["methods"]["occlusion"]["summary"][
        "prompt_driven_slices"] == [1]
    assert quiet["marks"][0] == "prompt_driven"
    assert quiet["text"].startswith("Slice 1, occlusion: the prompt and the tissue around the ROI draw most of this "
                                    "mask (with the ROI's image removed the score keeps 1.00)")
    assert slice_row(doc, "occlusion", 0)["kept_without_roi"] < 0.5 and "prompt_driven" not in fine["marks"]


def test_kept_without_roi_is_the_deletion_curves_end_and_marks_by_its_rounding():
    row = slice_metrics(SquareEvidence())  # the ROI holds the evidence square: removing it removes the mask
    assert row["kept_without_roi"] == pytest.approx(row["deletion_curve"][-1] / row["baseline_score"], abs=1e-4)
    assert row["kept_without_roi"] < 0.5
    assert "prompt_driven" not in slice_trust(row, "occlusion", 0)["marks"]
    assert slice_trust({"kept_without_roi": 0.746}, "rise", 0)["marks"] == ["prompt_driven"]  # reads 0.75
    assert slice_trust({"kept_without_roi": 0.744}, "rise", 0)["marks"] == []  # reads 0.74
    assert short_marks({"kept_without_roi": 0.9}) == ["the prompt draws most of the mask"]
    # a PNG title is one line: the prompt's share comes after what says whether to read the map at all
    assert short_marks({"kept_without_roi": 0.9, "evidence": False}) == [
        "NO EVIDENCE: no change above the noise", "the prompt draws most of the mask"]
    # no mask drawn (the evidence square dark): Dice's baseline is 1 and the logit's negative, and a
    # share of either would read as "the prompt draws it all"; the row leaves the figure out
    dark = evidence_image()
    dark[8:24, 8:24] = 0.2
    for score in ("dice", "logit"):
        row = make_explainer("occlusion", SquareEvidence(), **dict(FINE, metric_steps=2, baselines=False,
                                                                   score=score)).explain(
            dark, PROMPT, roi=np.ones((64, 64), bool)).metrics
        assert "deletion_curve" in row and "kept_without_roi" not in row
        assert "prompt_driven" not in slice_trust(row, "occlusion", 0)["marks"]


def test_rise_of_a_model_that_is_noise_is_marked_unreliable(tmp_path):
    rise = make_explainer("rise", n_masks=200, metric_steps=2, baselines=True, score="logit")
    doc = volume_doc(tmp_path, DrawnNoise(), rise, n=1)
    row = slice_row(doc, "rise", 0)
    assert row["reliability"] < LOW_RELIABILITY
    trust = slice_trust(row, "rise", 0, "RISE")
    assert "low_reliability" in trust["marks"]
    assert f"split-half reliability {row['reliability']:.2f}, low" in trust["text"]
    assert slices_marked(doc, "rise", "low_reliability") == [0]
    # the known-answer toy's RISE map is reliable: the same run there carries no such mark
    good = volume_doc(tmp_path / "good", SquareEvidence(), make_explainer("rise", n_masks=300, metric_steps=2,
                                                                         baselines=True, score="logit"), n=1)
    good_row = slice_row(good, "rise", 0)
    assert good_row["reliability"] >= LOW_RELIABILITY
    assert "low_reliability" not in slice_trust(good_row, "rise", 0)["marks"]


class WeightBlind(SquareEvidence):
    """The same evidence square, read through a fixed mask instead of the decoder's weights: re-drawing
    the weights changes nothing, so a map of this model survives the sanity check - the case of a map
    that shows the image, not the model."""

    def decode(self, embedding, prompt):
        w = self.square_mask().astype(np.float64)
        evidence = float((w * embedding.features).sum() / w.sum())
        out = np.full(embedding.image_shape, -5.0, dtype=np.float32)
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        out[y0:y1 + 1, x0:x1 + 1] = self.gain * (evidence - 0.5)
        return out


def test_a_map_that_survives_a_redrawn_model_is_marked(tmp_path):
    for model, survives in ((SquareEvidence(), False), (WeightBlind(), True)):
        occlusion = make_explainer("occlusion", **dict(FINE, metric_steps=2, baselines=False, sanity=True))
        doc = volume_doc(tmp_path / type(model).__name__, model, occlusion, n=1)
        row = slice_row(doc, "occlusion", 0)
        assert (row["sanity_similarity"] > 0.9) is survives and (row["sanity_similarity"] < 0.3) is not survives
        trust = slice_trust(row, "occlusion", 0)
        assert ("survives_randomisation" in trust["marks"]) is survives
        # the toys' weights are their mask decoder's: the line names what the sanity check re-drew
        assert row["sanity_redrawn"] == "mask_decoder"
        line = (f"with the mask decoder re-drawn (sanity check) its map has Spearman {row['sanity_similarity']:.2f} "
                "with this one")
        assert trust["text"].endswith(line + (": it depends little on the mask decoder." if survives else "."))
        summary = doc["methods"]["occlusion"]["summary"]
        assert summary["survives_randomisation_slices"] == slices_marked(doc, "occlusion", "survives_randomisation") \
            == ([0] if survives else [])
        assert summary["survives_randomisation_at"] == RANDOMISED_SIMILAR
    # the bar is read as the text rounds it; the cascade's last step counts as well
    assert slice_trust({"sanity_similarity": 0.296}, "layers", 0)["marks"] == ["survives_randomisation"]
    assert slice_trust({"sanity_similarity": 0.294}, "layers", 0)["marks"] == []
    both = slice_trust({"sanity_similarity": 0.1, "cascade_final_similarity": 0.41}, "rise", 0)
    assert both["marks"] == ["survives_randomisation"] and both["text"].endswith(
        "with part of the model re-drawn (sanity check) its map has Spearman 0.10 with this one; with the whole "
        "model re-drawn (cascade) its map has Spearman 0.41 with this one: it shows the image more than the model.")
    # each figure's verdict stays beside it, whichever of the two reaches the bar
    other = slice_trust({"sanity_similarity": 0.5, "cascade_final_similarity": 0.1, "sanity_redrawn": "image_encoder"},
                        "layers", 0)
    assert other["marks"] == ["survives_randomisation"] and other["text"].endswith(
        "with the image encoder re-drawn (sanity check) its map has Spearman 0.50 with this one: it depends little "
        "on the image encoder; with the whole model re-drawn (cascade) its map has Spearman 0.10 with this one.")
    assert slice_trust({"sanity_similarity": float("nan")}, "layers", 0)["text"].endswith("no trust figures were "
                                                                                          "measured on this slice.")
    assert short_marks({"cascade_final_similarity": 0.5}) == ["survives a re-drawn model"]
    # a cascade whose last step was drawn several times says its figure is their mean
    drawn = slice_trust({"cascade_final_similarity": 0.2, "cascade_draws": 3}, "layers", 0)
    assert drawn["marks"] == [] and drawn["text"].endswith(
        "with the whole model re-drawn (cascade, mean of 3 draws) its map has Spearman 0.20 with this one.")


def test_rows_without_figures_and_slices_not_explained():
    assert slice_trust(None, "rise", 7) == {"slice": 7, "method": "rise", "explained": False, "marks": [],
                                             "text": "Slice 7: not explained by rise."}
    assert slice_trust({}, "layers", 3)["text"] == "Slice 3, layers: no trust figures were measured on this slice."
    # the mark follows the rounding the text shows: 0.696 reads 0.70, not low
    assert slice_trust({"reliability": 0.696}, "rise", 0)["marks"] == []
    assert slice_trust({"reliability": 0.694}, "rise", 0)["marks"] == ["low_reliability"]
    # a win too close for three decimals is written with four, so it never reads as a tie
    close = {"deletion_auc": 0.2941, "best_trivial_deletion_auc": 0.2944, "beats_trivial_deletion": True,
             "trivial": {"blurred_mask": {"deletion_auc": 0.2944}, "random": {"deletion_auc": 0.8}}}
    assert "deletion AUC 0.2941 beats every trivial map (best: the blurred mask 0.2944)" in slice_trust(
        close, "rise", 0)["text"]
    assert slice_row({"methods": {"rise": {"slices": {"5": {"evidence": True}}}}}, "rise", 5) == {"evidence": True}
    assert slice_row({"methods": {}}, "rise", 5) is None
    with pytest.raises(InputError, match="mark 'noisy' is unknown; expected one of prompt_driven, no_evidence"):
        slices_marked({}, "rise", "noisy")


def test_occlusion_by_restore_gives_the_share_without_curves():
    """Occlusion scored by restore has already scored the ROI inpainted whole, the image the curves
    end on: the share needs no curves there, and where both exist they agree."""
    restore = dict(patch=16, stride=8, grid="image", mode="restore")
    inside, outside = np.ones((64, 64), bool), np.zeros((64, 64), bool)
    outside[34:58, 34:58] = True  # the evidence square (8..24) is left out
    for roi, drawn_by_prompt in ((inside, False), (outside, True)):
        explained = make_explainer("occlusion", SquareEvidence(), metric_steps=0, **restore).explain(
            evidence_image(), PROMPT, roi=roi)
        bare = explained.metrics
        assert "deletion_curve" not in bare and explained.details["emptied_score"] is not None
        assert ("prompt_driven" in slice_trust(bare, "occlusion", 0)["marks"]) is drawn_by_prompt
        kept = bare["kept_without_roi"]
        assert kept == pytest.approx(1.0) if drawn_by_prompt else kept < 0.5
        curved = make_explainer("occlusion", SquareEvidence(), metric_steps=2, **restore).explain(
            evidence_image(), PROMPT, roi=roi).metrics
        assert curved["kept_without_roi"] == pytest.approx(bare["kept_without_roi"], abs=1e-6)
    # scored by removal (or RISE) there is no such pass in attribution: one pass more gives the figure,
    # so the mark is there on every slice, not only where the curves are
    for name, options in (("occlusion", dict(restore, mode="remove")), ("rise", dict(n_masks=20, early_stop=False))):
        ex = make_explainer(name, SquareEvidence(), metric_steps=0, **options)
        bare = ex.explain(evidence_image(), PROMPT, roi=outside).metrics
        assert bare["kept_without_roi"] == pytest.approx(1.0), name
        assert "prompt_driven" in slice_trust(bare, name, 0)["marks"]
        assert bare["metric_evaluations"] == ex.noise_passes + 1  # the noise and that pass (nothing painted: no Dice drop)
    # the methods on a slice share that pass, and need none after a curve or occlusion putting patches back
    from xaiseg.explain.measure import shared_passes_of

    rise = make_explainer("rise", metric_steps=0, noise_passes=0)
    removal, back = (make_explainer("occlusion", metric_steps=0, noise_passes=0, mode=m) for m in ("remove", "restore"))
    assert shared_passes_of([(rise, False), (removal, False)]) == 1
    assert shared_passes_of([(back, False), (rise, False)]) == 0
    # the layer maps perturb nothing, but their inpainting curve ends on that image too
    assert shared_passes_of([(make_explainer("layers", metric_steps=2, noise_passes=0), True), (rise, False)]) == 0
    assert shared_passes_of([(make_explainer("rise", metric_steps=2, noise_passes=0), True), (rise, False)]) == 0
    assert shared_passes_of([(make_explainer("rise", metric_steps=0, noise_passes=0, metric_fill="zero"), False)]) == 0


def test_rise_says_how_many_masks_would_reach_its_reliability():
    """A RISE run cut short by --masks records about how many masks its early stop needed (the
    Spearman-Brown prophecy); on the known-answer toy a fresh draw of that many masks gets there
    (within a draw's width), and the trust line quotes it."""
    from xaiseg.explain.rise import masks_for_reliability
    from xaiseg.models.base import SlicePrompt

    assert masks_for_reliability(0.8, 300, 0.9) == 675 and masks_for_reliability(0.95, 300, 0.9) == 300
    assert masks_for_reliability(0.0, 300, 0.9) is None and masks_for_reliability(float("nan"), 300, 0.9) is None
    assert masks_for_reliability(0.05, 50, 0.8) == 3800  # exact answers are not rounded up
    r, k = 0.7, masks_for_reliability(0.7, 100, 0.9) / 100  # the prophecy, run forward, reaches the bar
    assert k * r / (1 + (k - 1) * r) >= 0.9 > (k - 0.1) * r / (1 + (k - 1.1) * r)
    for seed in (0, 1, 2):
        short = make_explainer("rise", SquareEvidence(), n_masks=100, metric_steps=0,
                               score="logit", seed=seed).explain(evidence_image(), SlicePrompt(box=(36, 36, 55, 55)))
        need = short.details["masks_for_reliability"]
        assert short.details["reliability"] < 0.9 and not short.details["converged"] and need > 100
        again = make_explainer("rise", SquareEvidence(), n_masks=need, early_stop=False, metric_steps=0,
                               score="logit", seed=seed + 10).explain(evidence_image(), SlicePrompt(box=(36, 36, 55, 55)))
        assert again.details["reliability"] >= 0.85, (seed, need, again.details["reliability"])
    row = dict(short.metrics, **{k: v for k, v in short.details.items() if not isinstance(v, list)})
    assert (f"split-half reliability {row['reliability']:.2f} after 100 masks (about {need} would reach the early "
            "stop's bar)" in slice_trust(row, "rise", 0)["text"])
    low = dict(row, reliability=0.55)
    assert (f"split-half reliability 0.55 after 100 masks (about {need} would reach the early stop's bar), low: much "
            "of its detail is the random masks' noise" in slice_trust(low, "rise", 0)["text"])
    # a run that stopped, or whose early stop was off, records no prediction
    off = make_explainer("rise", SquareEvidence(), n_masks=100, early_stop=False, metric_steps=0, score="logit",
                         seed=0).explain(evidence_image(), SlicePrompt(box=(36, 36, 55, 55)))
    done = make_explainer("rise", SquareEvidence(), n_masks=2000, metric_steps=0, score="logit",
                          seed=0).explain(evidence_image(), SlicePrompt(box=(36, 36, 55, 55)))
    assert done.details["converged"]
    assert "masks_for_reliability" not in off.details and "masks_for_reliability" not in done.details


def test_a_slice_figure_title_carries_its_marks():
    assert short_marks(None) == [] and short_marks({"evidence": True, "reliability": 0.93}) == []
    assert short_marks({"evidence": False, "reliability": 0.41, "deletion_auc": 0.5,
                        "best_trivial_deletion_auc": 0.4, "beats_trivial_deletion": False}) == [
        "NO EVIDENCE: no change above the noise", "a trivial map does as well", "reliability 0.41: mostly noise"]
