"""In-plane orientations: the 8 turns of a slice and their prompt maps (known answers on drawn
images), physical layouts from direction matrices, the VolumeSegmenter's model view, TTA, and
with the real LiteMedSAM: a volume and its flipped, permuted copy give one mask in physical space."""
import numpy as np
import pytest
import SimpleITK as sitk

from toys import BoxToy, rotation
from xaiseg import errors
from xaiseg.io import Geometry, Volume
from xaiseg.models.base import Embedding, PromptableSegmenter, SlicePrompt
from xaiseg.orientation import (ALL, CANONICAL, IDENTITY, NAMES, InPlane, Layout, TTASegmenter, resolve,
                                slice_layout, tta_turns)
from xaiseg.pipeline import SegmentConfig, Session
from xaiseg.volume import LabelBoxPrompt, PointsPrompt, VolumeSegmenter

SHAPE = (5, 13, 20)  # (k, j, i): slices of 13 rows x 20 columns


def drawn_slice(box=(3, 2, 9, 5), shape=(13, 20)):
    """Dim texture with a bright rectangle on the inclusive pixel box (x0, y0, x1, y1)."""
    img = 0.1 * np.random.default_rng(0).random(shape)
    x0, y0, x1, y1 = box
    img[y0:y1 + 1, x0:x1 + 1] = 1.0
    return img


def bright_box(img):
    ys, xs = np.nonzero(img > 0.5)
    return (xs.min(), ys.min(), xs.max(), ys.max())


# --- the 8 turns ----------------------------------------------------------------------------

def test_eight_distinct_turns_with_names_and_exact_inverses():
    a = np.random.default_rng(1).random((13, 20, 3))  # a trailing channel axis is kept
    turned = [g.apply(a) for g in ALL]
    assert len(set(NAMES)) == 8 and len({t.tobytes() + bytes(t.shape) for t in turned}) == 8
    for g, t in zip(ALL, turned):
        assert t.shape[:2] == g.shape(a.shape) and t.flags.c_contiguous
        assert np.array_equal(g.invert(t), a), g.name
        assert g.inverse().inverse() == g and g.then(g.inverse()) == IDENTITY
        assert InPlane.named(g.name) == g


def test_turns_match_numpy_rotations_and_flips():
    a = np.arange(12).reshape(3, 4)
    assert np.array_equal(InPlane.named("rot90").apply(a), np.rot90(a))
    assert np.array_equal(InPlane.named("rot180").apply(a), np.rot90(a, 2))
    assert np.array_equal(InPlane.named("rot270").apply(a), np.rot90(a, -1))
    assert np.array_equal(InPlane.named("transpose").apply(a), a.T)
    assert np.array_equal(InPlane.named("flip_rows").apply(a), a[::-1])
    assert np.array_equal(InPlane.named("flip_cols").apply(a), a[:, ::-1])
    assert np.array_equal(InPlane.named("transpose_flip_both").apply(a), np.rot90(a, 2).T)
    for g in ALL:
        for h in ALL:
            assert np.array_equal(g.then(h).apply(a), h.apply(g.apply(a)))
    with pytest.raises(errors.InputError, match=r"'rot45' is unknown; expected one of identity"):
        InPlane.named("rot45")


@pytest.mark.parametrize("g", ALL, ids=NAMES)
def test_box_around_a_bright_rectangle_lands_on_it_after_turning(g):
    box = (3, 2, 9, 5)
    img = drawn_slice(box)
    assert bright_box(img) == box
    assert g.box(box, img.shape) == tuple(float(v) for v in bright_box(g.apply(img)))
    # a box reaching over the border maps like its clipped self
    wide = SlicePrompt(box=(-4, 2, 25, 5))
    assert g.prompt(wide.clipped(img.shape), img.shape) == g.prompt(wide, img.shape).clipped(g.shape(img.shape))


@pytest.mark.parametrize("g", ALL, ids=NAMES)
def test_points_follow_their_pixels_and_continuous_points_stay_affine(g):
    img = np.zeros((13, 20))
    pts = [(0, 0), (19, 12), (4, 9)]
    for x, y in pts:
        img[y, x] = 1.0
    turned = g.apply(img)
    for (x, y), (u, v) in zip(pts, g.points(pts, img.shape)):
        assert turned[int(v), int(u)] == 1.0 and float(u).is_integer() and float(v).is_integer()
        assert g.apply(_marker(img.shape, x, y))[int(v), int(u)] == 1.0
    # pixel centres sit on integers: the midpoint of two points maps to the midpoint of their images
    (a, b), (c, d), (e, f) = g.points([(4, 9), (5, 10), (4.5, 9.5)], img.shape)
    assert (e, f) == ((a + c) / 2, (b + d) / 2)
    prompt = SlicePrompt(points=((4.0, 9.0), (19.0, 0.0)), labels=(1, 0))
    mapped = g.prompt(prompt, img.shape)
    assert mapped.labels == (1, 0) and mapped.box is None


def _marker(shape, x, y):
    m = np.zeros(shape)
    m[y, x] = 1.0
    return m


# --- physical layouts -----------------------------------------------------------------------

def geometry(direction=np.eye(3), shape=SHAPE):
    return Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.asarray(direction, float).ravel()), shape[::-1])


MNI_DIRECTION = np.diag([1.0, -1.0, 1.0])  # the FSL template: i towards L, j towards A, k towards S (LPS)


def test_layouts_of_known_direction_matrices():
    # identity LPS: i runs towards the patient's left, j towards posterior
    assert slice_layout(geometry(), 0) == Layout("A->P", "R->L")
    assert slice_layout(geometry(MNI_DIRECTION), 0) == Layout("P->A", "R->L")
    assert slice_layout(geometry(MNI_DIRECTION), 1) == Layout("I->S", "R->L")
    assert slice_layout(geometry(MNI_DIRECTION), 2) == Layout("I->S", "P->A")
    # 30 degrees oblique about the S axis: still the same layout
    assert slice_layout(geometry(rotation(2, 30) @ MNI_DIRECTION), 0) == Layout("P->A", "R->L")
    # 45 degrees exactly: rows and columns still get two different axes
    lay = slice_layout(geometry(rotation(2, 45)), 0)
    assert {lay.rows[0], lay.cols[0]} <= set("RLAP") and lay.plane == "axial"
    for g in ALL:
        lay = Layout("P->A", "R->L")
        assert lay.to(lay.after(g)) == g
    with pytest.raises(errors.GeometryError, match=r"rows run P->A and columns R->L cannot be turned into rows I->S, columns R->L"):
        Layout("P->A", "R->L").to(Layout("I->S", "R->L"))
    with pytest.raises(errors.InputError, match=r"direction 'up' is not one of"):
        Layout("up", "R->L")


def test_measured_orders_cover_each_plane_once_and_start_with_the_canonical_layout():
    from xaiseg.orientation import TTA_ORDER

    for plane, order in TTA_ORDER.items():
        assert len(set(order)) == 8 and all(lay.plane == plane for lay in order) and order[0] == CANONICAL[plane]
    # on MNI152 (i towards L, j towards A, k towards S) the measured best layouts are these turns
    mni = geometry(MNI_DIRECTION)
    assert [resolve("auto", mni, a).turn.name for a in range(3)] == ["identity", "flip_rows", "flip_both"]


def test_auto_orientation_reaches_the_canonical_layout_from_every_direction_matrix():
    base = np.diag([-1.0, -1.0, 1.0])  # RAS-aligned axes, as LPS columns
    perms = [(0, 1, 2), (1, 0, 2), (2, 0, 1), (0, 2, 1)]
    for perm in perms:
        for signs in [(1, 1, 1), (-1, 1, 1), (1, -1, -1), (-1, -1, 1)]:
            direction = base[:, perm] * np.asarray(signs)[None, :]
            g = geometry(direction)
            for axis in range(3):
                o = resolve("auto", g, axis)
                assert o.layout == CANONICAL[o.array_layout.plane]
                assert resolve("array", g, axis).turn == IDENTITY
    o = resolve("transpose", geometry(), 0)
    assert o.turn == InPlane(True) and o.record()["rows"] == "R->L" and o.record()["orientation"] == "transpose"
    with pytest.raises(errors.InputError, match=r"orientation 'sideways' is unknown; expected auto, array or"):
        resolve("sideways", geometry(), 0)


# --- the volume segmenter's model view -------------------------------------------------------------

class RowRamp(PromptableSegmenter):
    """Not orientation-equivariant: logits are the row index of the image it is given, minus 6."""

    name = "row-ramp toy"

    def __init__(self):
        self.embed_calls = 0

    def embed(self, image):
        self.embed_calls += 1
        return Embedding(np.asarray(image, np.float32), image.shape, image.shape, 1.0)

    def decode(self, embedding, prompt):
        h, w = embedding.image_shape
        return np.repeat(np.arange(h, dtype=np.float32)[:, None] - 6.0, w, axis=1)


@pytest.mark.parametrize("g", ALL, ids=NAMES)
def test_volume_segmenter_shows_the_model_turned_slices_and_writes_masks_back(g):
    image = np.random.default_rng(2).random(SHAPE).astype(np.float32)
    toy = BoxToy()
    vs = VolumeSegmenter(toy, image, axis=0, orientation=g)
    prompt = SlicePrompt(box=(3, 2, 9, 5))
    mask, run = vs.segment_slice(2, prompt)
    assert np.array_equal(toy.embedded_images[0], g.apply(image[2])) and np.array_equal(vs.model_slice(2), g.apply(image[2]))
    assert toy.prompts[0].box == g.box(prompt.box, (13, 20)) == vs.to_model_prompt(prompt).box
    expected = np.zeros((13, 20), bool)
    expected[2:6, 3:10] = True
    assert np.array_equal(mask, expected) and run.prompt == {"box": [3.0, 2.0, 9.0, 5.0]}
    assert vs.model_shape == g.shape((13, 20))
    out = np.zeros(SHAPE, np.uint8)
    vs.put(out, 2, vs.from_model(toy.decode(vs.embedding(2)[0], vs.to_model_prompt(prompt)) > 0))
    assert np.array_equal(out[2], expected) and not out[[0, 1, 3, 4]].any() and toy.embed_calls == 1
    # points and propagation along another axis go through the same turns
    pts = PointsPrompt(((1.0, 6.0, 4.0),), (1,))
    vol, _ = VolumeSegmenter(BoxToy(), image, axis=1, orientation=g).run(pts)
    ref, _ = VolumeSegmenter(BoxToy(), image, axis=1).run(pts)
    assert np.array_equal(vol, ref) and vol.sum() > 0
    # a model that is not equivariant sees the turned slice: its logits come back turned
    logits, _ = VolumeSegmenter(RowRamp(), image, orientation=g).logits(0, prompt)
    assert np.array_equal(logits, g.invert(RowRamp().decode(Embedding(None, g.shape((13, 20)), None, 1.0), prompt)))


def test_volume_segmenter_refuses_an_orientation_that_is_not_an_inplane():
    with pytest.raises(errors.InputError, match=r"orientation 'flip_rows' is not an InPlane"):
        VolumeSegmenter(BoxToy(), np.zeros(SHAPE, np.float32), orientation="flip_rows")


# --- TTA -----------------------------------------------------------------------------------------

def test_tta_averages_back_turned_logits():
    image = np.random.default_rng(3).random((13, 20)).astype(np.float32)
    base = RowRamp()
    tta = TTASegmenter(base, [IDENTITY, InPlane.named("flip_rows")])
    emb = tta.embed(image)
    assert base.embed_calls == 2 and emb.nbytes == 2 * image.nbytes
    # row index y and, flipped, 12 - y: their mean is 6 everywhere, minus 6
    assert np.array_equal(tta.decode(emb, SlicePrompt(box=(1, 1, 3, 3))), np.zeros((13, 20), np.float32))
    one = TTASegmenter(base, [IDENTITY])
    e1 = one.embed(image)
    assert np.array_equal(one.decode(e1, SlicePrompt(box=(1, 1, 3, 3))), base.decode(e1, SlicePrompt(box=(1, 1, 3, 3))))
    # an equivariant model gives the same mask whatever the turns
    toy = BoxToy()
    all8 = TTASegmenter(toy, ALL)
    p = SlicePrompt(box=(3, 2, 9, 5), points=((12.0, 8.0),), labels=(1,))
    assert np.array_equal(all8.decode(all8.embed(image), p), toy.decode(toy.embed(image), p))
    assert [len(e.parts) for e in all8.embed_batch([image, image])] == [8, 8]
    with pytest.raises(errors.InputError, match=r"must start with identity"):
        TTASegmenter(toy, [InPlane.named("flip_rows")])


def test_session_records_orientation_and_tta_cost():
    arr = np.random.default_rng(4).random(SHAPE).astype(np.float32) * 100
    vol = Volume(arr, geometry(MNI_DIRECTION), "memory")
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:3, 4:8, 5:12] = 1
    prompt = LabelBoxPrompt(labels, 1)
    plain = Session(vol, BoxToy()).segment(prompt, name="plain")
    rec = plain.record["settings"]["orientation"]
    canonical = CANONICAL["axial"]
    assert (rec["rows"], rec["cols"]) == (canonical.rows, canonical.cols) and rec["requested"] == "auto"
    assert (rec["array_rows"], rec["array_cols"]) == ("P->A", "R->L") and rec["encoder_passes_per_slice"] == 1
    assert rec["orientation"] == Layout("P->A", "R->L").to(canonical).name
    assert plain.record["evaluations"] == {"encoder_passes": 2, "decoder_passes": 2}
    toy = BoxToy()
    session = Session(vol, toy, SegmentConfig(tta=4))
    with_tta = session.segment(prompt, name="tta")
    assert np.array_equal(with_tta.mask, plain.mask) and toy.embed_calls == 8
    assert with_tta.record["evaluations"] == {"encoder_passes": 8, "decoder_passes": 8, "slices_encoded": 2,
                                              "prompts_decoded": 2}
    trec = with_tta.record["settings"]["orientation"]
    assert trec["encoder_passes_per_slice"] == 4 and len({(t["rows"], t["cols"]) for t in trec["tta"]}) == 4
    assert trec["tta"][0]["orientation"] == "identity" and with_tta.record["model"]["tta"]["encoder_passes_per_slice"] == 4
    eight = tta_turns(session.orientation, 8)
    assert len(set(eight)) == 8 and eight[0] == IDENTITY and tta_turns(session.orientation, 3) == eight[:3]
    array = Session(vol, BoxToy(), SegmentConfig(orientation="array")).segment(prompt, name="array")
    assert array.record["settings"]["orientation"]["orientation"] == "identity"
    for bad in (0, 9, 2.5, True):
        with pytest.raises(errors.InputError, match=r"tta .* is invalid; expected a whole number"):
            SegmentConfig(tta=bad)


# --- real LiteMedSAM: one physical image, two direction matrices ---------------------------------

def flipped_permuted(image: sitk.Image) -> sitk.Image:
    """The same physical image with its i axis reversed and then its axes permuted: the voxels
    are stored in another order and the direction matrix and origin say so."""
    arr = sitk.GetArrayFromImage(image)[:, :, ::-1]
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(image.TransformIndexToPhysicalPoint((image.GetSize()[0] - 1, 0, 0)))
    d = np.asarray(image.GetDirection()).reshape(3, 3).copy()
    d[:, 0] *= -1
    out.SetDirection(tuple(d.ravel()))
    return sitk.PermuteAxes(out, [2, 0, 1])  # new i runs along the old k (superior), new k along the old j


def on_grid(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def test_flipped_permuted_copy_gives_the_same_mask_in_physical_space(litemedsam):
    pytest.importorskip("nibabel")
    from xaiseg.sample_data import load_mni_atlas

    sample = load_mni_atlas(("Left_Caudate",))
    truth = sample.mask("Left_Caudate")
    ks = np.where(truth.any(axis=(1, 2)))[0]
    chosen = [int(ks[len(ks) // 2]), int(ks[len(ks) // 2]) + 4]
    labels = np.zeros_like(sample.labels.array)
    labels[chosen] = sample.labels.array[chosen]
    original = sample.image.to_sitk()
    copy = flipped_permuted(original)
    assert np.array_equal(on_grid(copy, original), sample.image.array)  # the same physical image
    copy_labels = flipped_permuted(sample.labels.to_sitk(labels))
    assert np.array_equal(on_grid(copy_labels, original), labels)

    a = Session(sample.image, litemedsam)
    b = Session(Volume.from_sitk(copy, "copy"), litemedsam)
    assert a.segmenter is litemedsam and b.segmenter is litemedsam  # tta=1: the model itself, no wrapper
    assert (a.axis, b.axis) == (0, 2) and a.orientation.array_layout != b.orientation.array_layout
    assert a.orientation.layout == b.orientation.layout == CANONICAL["axial"]
    copy_label_array = sitk.GetArrayFromImage(copy_labels)
    assert sorted(LabelBoxPrompt(copy_label_array, 1).per_slice(2)) == chosen  # the copy's i is the old k
    for k in chosen:  # the model sees the same pixels from both volumes
        assert np.array_equal(a.volume_segmenter.model_slice(k), b.volume_segmenter.model_slice(k))
    ma = a.segment(LabelBoxPrompt(labels, 1), name="original")
    mb = b.segment(LabelBoxPrompt(copy_label_array, 1), name="copy")
    for result in (ma, mb):
        rec = result.record["settings"]["orientation"]
        assert (rec["rows"], rec["cols"]) == (CANONICAL["axial"].rows, CANONICAL["axial"].cols)
    assert ma.record["settings"]["orientation"]["orientation"] != mb.record["settings"]["orientation"]["orientation"]
    back = on_grid(b.volume.to_sitk(mb.mask), original)
    assert ma.mask.sum() > 100 and np.array_equal(back, ma.mask)

    # orientation "array" is the engine as it was: each array slice straight into the model
    array = Session(sample.image, litemedsam, SegmentConfig(orientation="array")).segment(LabelBoxPrompt(labels, 1))
    prompts = LabelBoxPrompt(labels, 1).per_slice(0)
    for k in chosen:
        image = np.ascontiguousarray(a.image01[k])
        assert np.array_equal(array.mask[k], litemedsam.segment(image, prompts[k]))


def test_orientation_bench_with_an_equivariant_toy_scores_every_turn_alike(tmp_path):
    pytest.importorskip("nibabel")
    from xaiseg.bench_orientation import markdown, measure_plane
    from xaiseg.sample_data import load_mni_atlas

    sample = load_mni_atlas(("Left_Caudate",))
    toy = BoxToy()
    result = measure_plane(toy, sample, "axial", ("Left_Caudate",), step=8, cache=tmp_path / "axial", log=lambda m: None)
    # the toy's mask is the box: Dice of the union of per-slice atlas boxes, whatever the turn
    truth = sample.mask("Left_Caudate")
    kept = [k for k in range(truth.shape[0]) if truth[k].any() and k % 8 == 0]
    boxes = np.zeros_like(truth)
    for k in kept:
        ys, xs = np.nonzero(truth[k])
        boxes[k, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    sub = np.zeros_like(truth)
    sub[kept] = truth[kept]
    expected = 2 * (boxes & sub).sum() / (boxes.sum() + sub.sum())
    assert result["slices"] == kept and toy.embed_calls == 8 * len(kept) == result["encoder_passes"]
    assert all(r["mean"] == pytest.approx(expected) for r in result["rows"] + result["tta"])
    assert result["engine"]["canonical"] == "identity" and {s["gain"] for s in result["storage"]} == {0.0}
    assert "| identity (array) **canonical** | P->A | R->L |" in "\n".join(markdown(result))
    again = measure_plane(toy, sample, "axial", ("Left_Caudate",), step=8, cache=tmp_path / "axial", log=lambda m: None)
    assert again["encoder_passes"] == 0 and again["rows"] == result["rows"]  # resumed from the cache
