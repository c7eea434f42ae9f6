"""The explainers on the real model and real anatomy: LiteMedSAM with its shipped weights on the
MNI152 slice through the middle of the left caudate (Harvard-Oxford > 50 %)."""
import numpy as np
import pytest

from xaiseg.explain import make_explainer
from xaiseg.pipeline import Session
from xaiseg.roi import RoiConfig
from xaiseg.sample_data import load_mni_atlas
from xaiseg.volume import BoxPrompt


@pytest.fixture(scope="module")
def caudate_run(litemedsam):
    sample = load_mni_atlas(["Left_Caudate"])
    truth = sample.mask("Left_Caudate")
    ks = np.unique(np.nonzero(truth)[0])
    k = int(np.median(ks))
    jj, ii = np.nonzero(truth[k])
    session = Session(sample.image, litemedsam)
    seg = session.segment(BoxPrompt((k, int(jj.min()), int(ii.min())), (k, int(jj.max()), int(ii.max()))),
                          name="left_caudate")
    return session, seg, truth, k


def test_roi_occlusion_on_the_caudate(caudate_run):
    session, seg, truth, k = caudate_run
    # seed 001 as published: 64 / 32 patches, curves removing pixels with the method's zero fill
    run = session.explain(seg, [make_explainer("occlusion", metric_steps=2, patch=64, stride=32,
                                               metric_fill="method")],
                          roi=RoiConfig("box"), target=truth)
    ex = run.explanations["occlusion"][k]
    # on LiteMedSAM's 256 grid, scaled to the slice's longest side
    side = max(session.volume_segmenter.slice_shape)
    assert (ex.details["patch_px"], ex.details["stride_px"]) == (round(64 * side / 256), round(32 * side / 256))
    # the ROI around one caudate needs a fraction of the full image's patches (DESIGN: 10-17 of ~50)
    assert ex.details["patches_evaluated"] <= ex.details["patches_full"] / 3
    assert ex.n_evaluations == ex.details["patches_evaluated"]
    assert not ex.saliency[~ex.roi].any() and ex.saliency.max() == pytest.approx(1.0)
    # removing the patches over the caudate destroys the mask; the curves say the map ranks well
    assert ex.metrics["dice_drop"] > 0.5
    assert ex.metrics["deletion_auc"] < ex.metrics["insertion_auc"]
    # the high-saliency region covers the structure it explains
    high = ex.saliency >= 0.5
    assert (high & truth[k]).sum() >= 0.5 * truth[k].sum()
    assert run.saliency["occlusion"].shape == session.volume.shape
    assert not np.delete(run.saliency["occlusion"], k, axis=0).any()


def test_default_occlusion_patch_is_sized_to_the_caudate(caudate_run):
    """The default patch follows the prompt box's short side (not the seed's 64 px), tiles it and
    refines the two hottest at half size, so the map can resolve a structure smaller than 64 px."""
    session, seg, truth, k = caudate_run
    # scored by removal, so that each pass changes one patch (the sizing is the same in every mode)
    # (the squares, --occlusion-aspect 1: the default strips are not refined)
    run = session.explain(seg, [make_explainer("occlusion", metric_steps=2, mode="remove", aspect=1.0)],
                          roi=RoiConfig("box"), target=truth)
    ex = run.explanations["occlusion"][k]
    jj, ii = np.nonzero(truth[k])
    short = min(jj.max() - jj.min() + 1, ii.max() - ii.min() + 1)
    side = max(session.volume_segmenter.slice_shape)
    assert ex.details["patch_px"] <= max(short, round(8 * side / 256)) + 1
    assert ex.details["patch_px"] < round(64 * side / 256)
    assert ex.details["stride_px"] == ex.details["patch_px"]        # tiled, then refined
    assert ex.details["patches_refined"] == 18                     # the two patches that lowered the score most
    # what the engine charged for these passes is what the estimate before a run counts for them
    from xaiseg.cost import reuse_share

    p = ex.details["patch_px"] * 256 / side
    coarse = ex.details["patches_evaluated"] - 18
    expected = (coarse * reuse_share((p, p)) + 18 * reuse_share((p / 2, p / 2))) / (coarse + 18)
    assert ex.record["reuse"]["reused_passes"] == ex.n_evaluations
    # (the table averages four positions; near the grid's centre, where the caudate is, a change costs up to 0.03 more)
    assert ex.record["reuse"]["mean_pass_share"] == pytest.approx(expected, abs=0.04)
    # inpainting the high-saliency region from its surroundings (the metrics' default removal, gentler
    # than zero fill) still takes a large part of the mask
    assert ex.metrics["dice_drop"] > 0.3
    assert ex.metrics["deletion_auc"] < ex.metrics["insertion_auc"]   # on inpainted removals (the default)
    peak = np.unravel_index(np.argmax(ex.saliency), ex.saliency.shape)
    yy, xx = np.nonzero(truth[k])
    # the strongest evidence lies on or right beside the caudate
    assert np.min(np.hypot(yy - peak[0], xx - peak[1])) <= ex.details["patch_px"]
    # scored by restore, the patches are put back into the inpainted ROI: every pass changes the ROI's
    # extent, and the estimate charges each at that share
    restored = session.explain(seg, [make_explainer("occlusion", metric_steps=0, mode="restore", aspect=1.0)],
                               roi=RoiConfig("box"),
                               slices=[k]).explanations["occlusion"][k]
    assert restored.details["mode"] == "restore" and restored.details["patch_px"] == ex.details["patch_px"]
    assert 0.0 <= restored.details["emptied_score"] < 1.0  # the inpainted ROI loses part of the mask
    rows, cols = np.nonzero(restored.roi)
    extent = ((rows.max() - rows.min() + 1) * 256 / side, (cols.max() - cols.min() + 1) * 256 / side)
    assert restored.record["reuse"]["mean_pass_share"] == pytest.approx(reuse_share(extent), abs=0.04)


def test_embedding_roi_hugs_the_caudate(caudate_run):
    session, seg, truth, k = caudate_run
    from xaiseg.explain_volume import slice_prompt as _slice_prompt
    from xaiseg.roi import RoiFinder

    image = session.volume_segmenter.slice(k)
    prompt = _slice_prompt(seg.slices[0].prompt)
    embedding, _ = session.volume_segmenter.embedding(k)
    mask = seg.mask[k].astype(bool)
    roi, source = RoiFinder(RoiConfig("embedding")).find(image, prompt, mask, embedding)
    assert source == "embedding"
    assert roi[truth[k]].mean() > 0.95          # covers the structure
    assert roi.mean() < 0.15                    # and stays a small part of the slice
    x0, y0, x1, y1 = (int(v) for v in prompt.box)
    assert roi[y0:y1 + 1, x0:x1 + 1].all()


def test_rise_shows_its_evidence_on_the_caudate(caudate_run):
    """RISE's map is a contrast of mean scores over many masks, far below any one pass's change and
    below the model's noise on this slice (jittering it moves the Dice by about 0.2), so its peak
    must not stand for the evidence: the largest fall one of its masks caused does."""
    session, seg, truth, k = caudate_run
    run = session.explain(seg, [make_explainer("rise", metric_steps=0, n_masks=20)], roi=RoiConfig("box"))
    ex = run.explanations["rise"][k]
    m = ex.metrics
    assert m["signal"] == ex.largest_drop and m["signal"] > 2 * m["noise_level"]
    assert ex.raw[ex.roi].max() < 2 * m["noise_level"]  # the map's peak alone would have read as noise
    assert m["evidence"] is True and ex.saliency.any()  # painted
