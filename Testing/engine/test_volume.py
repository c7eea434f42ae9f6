"""Volume prompts -> per-slice prompts, propagation, the embedding cache and cancellation, with
the known-answer box toy (mask = prompt box)."""
import numpy as np
import pytest
import SimpleITK as sitk

from toys import BoxToy, expected_box_mask
from xaiseg import errors
from xaiseg.cli import main
from xaiseg.io import Geometry, Volume
from xaiseg.models.base import SlicePrompt
from xaiseg.pipeline import SegmentConfig, SegmentResult, Session
from xaiseg.progress import CallbackProgress, CancelToken, Progress
from xaiseg.volume import BoxPrompt, LabelBoxPrompt, PointsPrompt, VolumeSegmenter, mask_box

SHAPE = (12, 16, 20)  # (k, j, i)


def volume(array=None):
    arr = np.random.default_rng(0).random(SHAPE).astype(np.float32) if array is None else array
    geom = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), arr.shape[::-1])
    return Volume(arr, geom, "memory")


def image01():
    return np.random.default_rng(1).random(SHAPE).astype(np.float32)


class CancelAfter(Progress):
    """Cancels its own token after ``n`` steps (as a user pressing Cancel mid-run)."""

    def __init__(self, n=2):
        super().__init__(CancelToken())
        self.n, self.steps = n, 0

    def step(self, n=1, **info):
        self.steps += n
        if self.steps >= self.n:
            self.cancel.cancel()


# --- prompts per slice ----------------------------------------------------------------------

def test_label_box_prompt_one_box_per_labelled_slice():
    labels = np.zeros(SHAPE, np.uint8)
    labels[3, 2:5, 7:9] = 2
    labels[4, 6, 1:11] = 2
    labels[4, 10:12, 15] = 2  # a second blob on slice 4: the box covers both
    labels[6, 0:16, 19] = 2
    labels[8, 5:9, 5:9] = 1  # another label: ignored
    prompts = LabelBoxPrompt(labels, label=2).per_slice(0)
    assert sorted(prompts) == [3, 4, 6]
    assert prompts[3].box == (7, 2, 8, 4)  # (x0, y0, x1, y1) = (i, j) corners
    assert prompts[4].box == (1, 6, 15, 11)
    assert prompts[6].box == (19, 0, 19, 15)
    # along axis 2 (slices are (k, j) planes: x = j, y = k)
    along_i = LabelBoxPrompt(labels, label=2).per_slice(2)
    assert sorted(along_i) == list(range(1, 11)) + [15, 19]
    assert along_i[15].box == (10, 4, 11, 4)
    # a margin grows the box (clipped later by the slice)
    assert LabelBoxPrompt(labels, label=2, margin=2).per_slice(0)[3].box == (5, 0, 10, 6)
    with pytest.raises(errors.PromptError, match=r"label 5 does not occur .*labels present: \[1, 2\]"):
        LabelBoxPrompt(labels, label=5).per_slice(0)


def test_label_box_prompt_through_session_gives_union_of_slice_boxes():
    labels = np.zeros(SHAPE, np.uint8)
    labels[3, 2:5, 7:9] = 1
    labels[4, 6, 1:11] = 1
    labels[4, 10:12, 15] = 1
    toy = BoxToy()
    result = Session(volume(), toy).segment(LabelBoxPrompt(labels, 1, margin=1), name="lab")
    expected = np.zeros(SHAPE, np.uint8)
    expected[3, 1:6, 6:10] = 1
    expected[4, 5:13, 0:17] = 1
    assert np.array_equal(result.mask, expected)
    assert toy.embed_calls == 2 and [r.index for r in result.slices] == [3, 4]
    with pytest.raises(errors.GeometryError, match=r"label map of shape \(2, 2, 2\)"):
        Session(volume(), toy).segment(LabelBoxPrompt(np.ones((2, 2, 2), np.uint8), 1))


def test_points_prompt_groups_by_slice_and_drops_negative_only_slices():
    pts = PointsPrompt(points=((2.0, 5.0, 7.0), (2.2, 9.0, 3.0), (5.0, 1.0, 1.0), (7.4, 8.0, 9.0), (6.6, 2.0, 2.0)),
                       labels=(1, 0, 0, 1, 1)).check(SHAPE)
    per = pts.per_slice(0)
    assert sorted(per) == [2, 7]  # slice 5 has only a negative point
    assert per[2].points == ((7.0, 5.0), (3.0, 9.0)) and per[2].labels == (1, 0)  # (x, y) = (i, j)
    assert per[7].points == ((9.0, 8.0), (2.0, 2.0)) and per[7].labels == (1, 1)
    # along axis 1 the points regroup by j
    per_j = pts.per_slice(1)
    assert sorted(per_j) == [2, 5, 8]
    assert per_j[5].points == ((7.0, 2.0),)  # (x, y) = (i, k)
    with pytest.raises(errors.PromptError, match="at least one positive point"):
        PointsPrompt(((1.0, 1.0, 1.0),), (0,)).per_slice(0)
    # end to end with the toy: discs around positive points, negative point carved out
    toy = BoxToy()
    result = Session(volume(), toy).segment(pts, name="pts")
    assert sorted(np.unique(np.nonzero(result.mask)[0])) == [2, 7]
    assert result.mask[2, 5, 7] == 1 and result.mask[2, 9, 3] == 0 and result.mask[5].sum() == 0
    assert toy.embed_calls == 2


# --- propagation ----------------------------------------------------------------------------

def test_propagation_stops_at_the_box_ends():
    toy = BoxToy()
    seg = VolumeSegmenter(toy, image01(), axis=0)
    mask, runs = seg.run(BoxPrompt((3, 4, 5), (8, 10, 15)))
    assert np.array_equal(mask, expected_box_mask(SHAPE, (3, 4, 5), (8, 10, 15)))
    assert [r.index for r in runs] == [3, 4, 5, 6, 7, 8]
    assert toy.embed_calls == 6 and seg.encoder_passes == 6 and seg.decoder_passes == 6
    # the centre slice got the box itself; every other slice the box of its neighbour's mask
    assert toy.prompts[0].box == (5, 4, 15, 10)
    assert all(p.box == (5, 4, 15, 10) for p in toy.prompts)


def test_propagation_margin_grows_the_box_each_slice():
    toy = BoxToy()
    mask, runs = VolumeSegmenter(toy, image01(), axis=0).propagate(BoxPrompt((2, 6, 8), (8, 9, 11)), margin=1)
    centre = 5
    for k in range(2, 9):
        d = abs(k - centre)
        y0, y1 = max(0, 6 - d), min(SHAPE[1] - 1, 9 + d)
        x0, x1 = max(0, 8 - d), min(SHAPE[2] - 1, 11 + d)
        expected = np.zeros(SHAPE[1:], np.uint8)
        expected[y0:y1 + 1, x0:x1 + 1] = 1
        assert np.array_equal(mask[k], expected), k
    assert mask[:2].sum() == 0 and mask[9:].sum() == 0


def test_propagation_stops_when_the_mask_vanishes():
    img = np.full(SHAPE, 0.1, np.float32)
    img[3:7] = 0.9  # bright only on slices 3..6; the gated toy finds nothing elsewhere
    toy = BoxToy(gate=True)
    seg = VolumeSegmenter(toy, img, axis=0)
    mask, runs = seg.run(BoxPrompt((0, 2, 2), (11, 12, 14)))  # centre slice (0 + 11) // 2 = 5
    assert np.array_equal(mask, expected_box_mask(SHAPE, (3, 2, 2), (6, 12, 14)))
    # slices 7 and 2 came back empty, so 8..11 and 0..1 were never run
    assert [r.index for r in runs] == [2, 3, 4, 5, 6, 7]
    assert [r.voxels for r in runs] == [0, 11 * 13, 11 * 13, 11 * 13, 11 * 13, 0]
    assert toy.embed_calls == 6


def test_one_slice_box_is_a_2d_box_and_mask_box():
    toy = BoxToy()
    mask, runs = VolumeSegmenter(toy, image01(), axis=1).run(BoxPrompt((2, 7, 3), (9, 7, 6)))
    assert np.array_equal(mask, expected_box_mask(SHAPE, (2, 7, 3), (9, 7, 6)))
    assert len(runs) == 1 and runs[0].index == 7 and toy.prompts[0].box == (3, 2, 6, 9)
    assert mask_box(np.zeros((3, 3))) is None
    assert mask_box(np.pad(np.ones((2, 3)), ((1, 0), (4, 1)))) == (4, 1, 6, 2)


# --- embedding cache ------------------------------------------------------------------------

def test_same_slices_twice_do_not_run_the_encoder_again():
    toy = BoxToy()
    session = Session(volume(), toy)
    box = BoxPrompt((2, 3, 3), (6, 9, 12))
    first = session.segment(box, name="a")
    assert toy.embed_calls == 5 and first.record["evaluations"] == {"encoder_passes": 5, "decoder_passes": 5}
    second = session.segment(BoxPrompt((3, 0, 0), (5, 4, 4)), name="b")  # slices 3..5: all cached
    assert toy.embed_calls == 5
    assert second.record["evaluations"] == {"encoder_passes": 0, "decoder_passes": 3}
    assert all(not r.encoded for r in second.slices) and all(r.encoded for r in first.slices)
    assert np.array_equal(second.mask, expected_box_mask(SHAPE, (3, 0, 0), (5, 4, 4)))


def test_lru_limit_drops_the_least_recently_used_embedding():
    toy = BoxToy()
    img = image01()
    per_slice = SHAPE[1] * SHAPE[2] * 4  # float32 embedding of one slice
    seg = VolumeSegmenter(toy, img, axis=0, cache_bytes=2 * per_slice)
    assert seg.embedding(0)[1] and seg.embedding(1)[1]
    assert not seg.embedding(0)[1]  # hit; 0 is now the most recent
    assert seg.embedding(2)[1]  # over the limit: 1 (least recent) is dropped
    assert not seg.embedding(0)[1] and not seg.embedding(2)[1]
    assert seg.embedding(1)[1]  # had to be recomputed ...
    assert seg.embedding(0)[1]  # ... which pushed out 0
    assert toy.embed_calls == 5 and seg.encoder_passes == 5
    assert np.array_equal(seg.embedding(1)[0].features, img[1])
    # a limit smaller than one embedding still keeps the latest one
    tiny = VolumeSegmenter(BoxToy(), img, axis=0, cache_bytes=1)
    tiny.embedding(4)
    assert not tiny.embedding(4)[1] and tiny.embedding(5)[1] and tiny.embedding(4)[1]


# --- cancellation ---------------------------------------------------------------------------

def test_cancel_after_two_steps_raises_and_writes_nothing(tmp_path, monkeypatch):
    toy = BoxToy()
    session = Session(volume(), toy)
    progress = CancelAfter(2)
    with pytest.raises(errors.Cancelled, match="cancelled; no output was written"):
        session.segment(BoxPrompt((1, 1, 1), (10, 10, 10)), progress=progress)
    assert progress.steps == 2 and toy.embed_calls == 2
    # the same run through the CLI: exit 130, one line, write() never called, no files
    img = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(volume().array), str(img))
    writes = []
    monkeypatch.setattr(SegmentResult, "write", lambda self, *a, **k: writes.append(a))
    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: BoxToy())
    monkeypatch.setattr("xaiseg.progress.Progress", CancelAfter)
    out = tmp_path / "out"
    assert main(["segment", str(img), "-o", str(out), "--box", "1,1,1,10,10,10", "-q"]) == 130
    assert writes == [] and not out.exists()


def test_cli_cancel_message_and_no_output(tmp_path, capsys, monkeypatch):
    img = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(volume().array), str(img))
    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: BoxToy())
    monkeypatch.setattr("xaiseg.progress.Progress", CancelAfter)
    out = tmp_path / "out"
    assert main(["segment", str(img), "-o", str(out), "--points", "1,1,1;2,2,2;3,3,3;4,4,4", "-q"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err == ["xaiseg: cancelled: the run was cancelled; no output was written"]
    assert not out.exists()


def test_progress_events_count_the_slices():
    events = []
    session = Session(volume(), BoxToy())
    session.segment(BoxPrompt((4, 2, 2), (7, 5, 5)), progress=CallbackProgress(events.append))
    assert events[0] == {"event": "stage", "stage": "segment segment", "total": 4}
    steps = [e for e in events if e["event"] == "step"]
    assert [e["slice"] for e in steps] == [5, 6, 7, 4] and steps[-1]["done"] == 4
    assert events[-1]["event"] == "done"


def test_result_write_and_record(tmp_path):
    vol = volume()
    session = Session(vol, BoxToy(), SegmentConfig(axis=0))
    result = session.segment(BoxPrompt((1, 2, 3), (2, 4, 6)), name="rec")
    assert result.voxel_count == 2 * 3 * 4
    paths = result.write(tmp_path, "mha")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec_mask.mha", "rec_run.json"]
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["mask"])))
    assert back.dtype == np.uint8 and np.array_equal(back, result.mask)
    import json

    rec = json.loads(paths["record"].read_text())
    assert rec["prompt"] == {"type": "box", "lo_kji": [1, 2, 3], "hi_kji": [2, 4, 6]}
    assert rec["outputs"] == {"mask": "rec_mask.mha"} and rec["model"]["name"] == "box-toy"
    assert [s["index"] for s in rec["slices"]] == [1, 2]
    with pytest.raises(errors.InputError, match="output format 'png' is unknown"):
        result.write(tmp_path / "x", "png")
    assert not (tmp_path / "x").exists()


def test_slice_prompt_outside_a_slice_is_refused_before_encoding():
    toy = BoxToy()
    seg = VolumeSegmenter(toy, image01(), axis=0)
    with pytest.raises(errors.PromptError, match="lies outside the image of 20 x 16 pixels"):
        seg.segment_slice(3, SlicePrompt(box=(25, 1, 30, 4)))
    with pytest.raises(errors.PromptError, match=r"slice\(s\) \[12\] lie outside"):
        seg.run_slices({12: SlicePrompt(box=(1, 1, 3, 3))})
    assert toy.embed_calls == 0
    with pytest.raises(errors.DimensionError):
        VolumeSegmenter(toy, np.zeros((4, 4), np.float32))
