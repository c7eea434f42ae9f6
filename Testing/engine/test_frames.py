"""Adjacent slices share where perturbations are laid out while the ROI barely moves: the same
occlusion cells and patches and the same RISE masks, so their maps compare pixel for pixel; a
slice alone keeps its own frame (its ROI's bounding rectangle)."""
import numpy as np
import pytest

from toys import SquareEvidence, evidence_image
from xaiseg.explain import make_explainer
from xaiseg.explain.base import FRAME_GROW, Frame, PerturbationEngine, next_frame, own_frame, shares
from xaiseg.io import Geometry, Volume
from xaiseg.models.base import SlicePrompt
from xaiseg.pipeline import SegmentConfig, Session
from xaiseg.roi import RoiConfig
from xaiseg.volume import BoxPrompt

BOX = (20.0, 20.0, 39.0, 39.0)  # x0, y0, x1, y1: a 20-pixel box


def test_a_neighbour_inside_the_grown_frame_shares_it_a_moved_or_shrunk_one_does_not():
    own = Frame((20, 20, 40, 40), BOX)
    frame, new = next_frame(None, own, (64, 64))
    assert new and frame.rect == (18, 18, 42, 42) and frame.box == BOX  # grown by FRAME_GROW each side
    assert FRAME_GROW == 0.1
    nudged = Frame((21, 19, 41, 40), (21.0, 19.0, 40.0, 39.0))
    assert next_frame(frame, nudged, (64, 64)) == (frame, False)  # the same frame object: same cells
    assert not shares(frame, Frame((30, 30, 50, 50), BOX))  # moved out of the frame
    assert not shares(frame, Frame((24, 24, 36, 36), BOX))  # a much smaller ROI: its own, finer frame
    assert not shares(frame, Frame((20, 20, 40, 40), (20.0, 20.0, 31.0, 31.0)))  # a box 40 % smaller
    again, new = next_frame(frame, Frame((30, 30, 50, 50), BOX), (64, 64))
    assert new and again.rect == (28, 28, 52, 52)


def test_a_slice_alone_uses_its_own_frame():
    roi = np.zeros((64, 64), bool)
    roi[10:30, 12:40] = True
    engine = PerturbationEngine(SquareEvidence(), evidence_image(), SlicePrompt(box=BOX), roi)
    assert engine.frame == own_frame(roi, BOX) and engine.frame.rect == (10, 12, 30, 40)


def test_budgeted_cells_follow_the_frame():
    roi = np.ones((64, 64), bool)
    ex = make_explainer("occlusion", SquareEvidence(), passes=4, metric_steps=0, noise_passes=0, score="logit")
    frame = Frame((0, 0, 32, 32), BOX)
    e = ex.explain(evidence_image(), SlicePrompt(box=(36, 36, 55, 55)), roi=roi, frame=frame)
    # the four quadrants of the 32 x 32 frame: the evidence square (8..24) touches all four, nothing else moves
    assert not e.raw[32:, :].any() and not e.raw[:, 32:].any() and e.raw[:32, :32].min() > 0


def same_slices(n):
    """``n`` identical slices of the evidence image."""
    planes = []
    for _ in range(n):
        img = evidence_image(seed=0)
        img[8:24, 8:24] = 0.9
        planes.append(img)
    arr = (np.stack(planes) * 1000).astype(np.float32)
    return Volume(arr, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), arr.shape[::-1]), "toy")


@pytest.mark.parametrize("method, settings", [
    ("rise", {"n_masks": 40, "early_stop": False}),
    ("occlusion", {"passes": 5}),
])
def test_identical_slices_share_one_frame_and_give_one_map(method, settings):
    session = Session(same_slices(3), SquareEvidence(), SegmentConfig(orientation="array"))
    seg = session.segment(BoxPrompt((0, 36, 36), (2, 55, 55)), name="toy")
    run = session.explain(seg, [make_explainer(method, metric_steps=0, **settings)],
                          roi=RoiConfig("box", margin=30))
    per_slice = run.explanations[method]
    assert [per_slice[k].details["frame_slice"] for k in range(3)] == [0, 0, 0]
    for k in (1, 2):
        np.testing.assert_allclose(per_slice[k].raw, per_slice[0].raw)
    assert run.consistency[method]["adjacent_spearman"] == pytest.approx(1.0)


def test_a_structure_that_jumps_gets_a_new_frame():
    # the third slice's box is 20 pixels to the right: its ROI leaves the shared frame
    session = Session(same_slices(3), SquareEvidence(), SegmentConfig(orientation="array"))
    prompts = np.zeros(session.volume.shape, np.uint8)
    prompts[:2, 36:56, 20:40] = 1
    prompts[2, 36:56, 40:60] = 1
    from xaiseg.volume import LabelBoxPrompt

    seg = session.segment(LabelBoxPrompt(prompts, 1), name="toy")
    run = session.explain(seg, [make_explainer("occlusion", passes=4, metric_steps=0)],
                          roi=RoiConfig("box", margin=4))
    frames = [run.explanations["occlusion"][k].details["frame_slice"] for k in range(3)]
    assert frames == [0, 0, 2]
    assert run.metrics()["methods"]["occlusion"]["slices"]["2"]["frame_slice"] == 2
