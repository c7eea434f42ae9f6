"""Anisotropic spacing, an oblique and flipped direction and a non-zero origin survive
read -> segment -> write -> read, and masks land where the prompt box is in physical (RAS) space.

Expected positions are computed with SimpleITK's own index <-> physical point transforms (LPS),
independently of the engine's Geometry matrices.
"""
import numpy as np
import pytest
import SimpleITK as sitk

from toys import BoxToy, expected_box_mask, make_image, rotation
from xaiseg.cli import main
from xaiseg.io import Geometry, axis_codes, read_volume
from xaiseg.pipeline import Session
from xaiseg.volume import BoxPrompt, slicing_axis

SHAPE = (20, 30, 40)  # (k, j, i)
SPACING = (0.7, 1.3, 2.5)  # (i, j, k)
ORIGIN = (12.5, -40.0, 73.2)  # LPS
DIRECTION = rotation(0, 30.0) @ np.diag([-1.0, 1.0, 1.0])  # 30 degrees about x, then i flipped
CUBOID_LO, CUBOID_HI = (5, 8, 10), (14, 21, 29)  # (k, j, i), inclusive
TOY = ["--model", "torch", "--factory", "toys:ramp", "--class-index", "0"]
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def phantom():
    rng = np.random.default_rng(0)
    arr = rng.uniform(0.0, 5.0, SHAPE).astype(np.float32)
    arr += expected_box_mask(SHAPE, CUBOID_LO, CUBOID_HI) * 100.0
    return arr


@pytest.fixture()
def oblique(tmp_path):
    img = make_image(phantom(), SPACING, ORIGIN, DIRECTION)
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(img, str(path))
    return path, img


def ras_of_index(img, ijk):
    """RAS mm of a continuous (i, j, k) index, via SimpleITK."""
    return np.array(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk])) * LPS_TO_RAS


def index_of_ras(img, ras):
    return np.array(img.TransformPhysicalPointToContinuousIndex([float(v) for v in np.asarray(ras) * LPS_TO_RAS]))


def assert_same_geometry(written, img, atol):
    assert written.GetSize() == img.GetSize()
    assert written.GetDimension() == 3
    assert np.allclose(written.GetSpacing(), img.GetSpacing(), rtol=0, atol=atol)
    assert np.allclose(written.GetOrigin(), img.GetOrigin(), rtol=0, atol=atol)
    assert np.allclose(written.GetDirection(), img.GetDirection(), rtol=0, atol=atol)


def ras_centroid(mask, geometry):
    kji = np.argwhere(mask).mean(axis=0)
    return geometry.ijk_to_ras_points(kji[::-1])[0]


def test_phantom_geometry_is_what_the_test_thinks():
    img = make_image(phantom(), SPACING, ORIGIN, DIRECTION)
    assert img.GetSize() == SHAPE[::-1]
    assert np.isclose(np.linalg.det(DIRECTION), -1.0)  # a flip is really in there
    assert not np.allclose(np.abs(DIRECTION), np.eye(3))  # and it is oblique


@pytest.mark.parametrize("fmt,suffix,atol", [("nrrd", ".nrrd", 1e-9), ("nifti", ".nii.gz", 1e-5)])
def test_threshold_mask_keeps_geometry_and_place(tmp_path, oblique, fmt, suffix, atol):
    path, img = oblique
    out = tmp_path / "out"
    # a box over the whole volume: propagation from slice 9 keeps going while the mask is non-empty
    assert main(["segment", str(path), "-o", str(out), "--box", "0,0,0,39,29,19", "--format", fmt, "-q",
                 *TOY]) == 0
    written = sitk.ReadImage(str(out / f"oblique_mask{suffix}"))
    assert_same_geometry(written, img, atol)
    mask = sitk.GetArrayFromImage(written)
    assert np.array_equal(mask, expected_box_mask(SHAPE, CUBOID_LO, CUBOID_HI))
    # in physical space: the mask's RAS centroid is the RAS centre of the cuboid
    centre_ijk = (np.array(CUBOID_LO[::-1]) + np.array(CUBOID_HI[::-1])) / 2.0
    expected = ras_of_index(img, centre_ijk)
    got = ras_centroid(mask, Geometry.of(written))
    assert np.linalg.norm(got - expected) < 1e-3 + min(SPACING)


@pytest.mark.parametrize("fmt,suffix", [("nrrd", ".nrrd"), ("nifti", ".nii.gz")])
def test_ras_box_limits_the_slices(tmp_path, oblique, fmt, suffix):
    """The torch toy ignores the in-plane box, but the box's k range (from RAS mm) bounds the slices run."""
    path, img = oblique
    lo_ijk, hi_ijk = (10, 8, 7), (29, 21, 12)  # in-plane = the cuboid; k 7..12 of its 5..14
    corners = np.array([ras_of_index(img, lo_ijk), ras_of_index(img, hi_ijk)])
    box = ",".join(f"{v:.6f}" for v in corners.ravel())
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--coords", "ras", f"--box={box}", "--format", fmt,
                 "--name", "ras", "-q", *TOY]) == 0
    written = sitk.ReadImage(str(out / f"ras_mask{suffix}"))
    assert_same_geometry(written, img, 1e-5)
    mask = sitk.GetArrayFromImage(written)
    assert np.array_equal(mask, expected_box_mask(SHAPE, (7, 8, 10), (12, 21, 29)))
    assert np.linalg.norm(ras_centroid(mask, Geometry.of(written)) - corners.mean(axis=0)) < min(SPACING)


def expected_from_ras(img, ras_corners):
    """The voxel box two RAS corners select, computed with SimpleITK (rounded to nearest voxel)."""
    ijk = np.array([index_of_ras(img, c) for c in ras_corners])
    lo = np.floor(ijk.min(axis=0) + 0.5).astype(int)[::-1]
    hi = np.floor(ijk.max(axis=0) + 0.5).astype(int)[::-1]
    return expected_box_mask(SHAPE, lo, hi), lo, hi


def test_prompted_toy_maps_a_ras_box_to_the_right_voxels(tmp_path, oblique):
    path, img = oblique
    vol = read_volume(path)
    # corners in RAS mm, a little off the voxel centres
    ras = np.array([ras_of_index(img, (6.2, 4.9, 3.3)), ras_of_index(img, (17.8, 12.1, 15.4))])
    expected, lo, hi = expected_from_ras(img, ras)
    assert tuple(lo) == (3, 5, 6) and tuple(hi) == (15, 12, 18)
    ijk = vol.geometry.ras_to_ijk(ras)
    box = BoxPrompt(tuple(np.floor(ijk.min(0) + 0.5).astype(int)[::-1]),
                    tuple(np.floor(ijk.max(0) + 0.5).astype(int)[::-1]))
    toy = BoxToy()
    session = Session(vol, toy)
    result = session.segment(box, name="toy")
    assert np.array_equal(result.mask, expected)
    # propagation ran exactly the box's slices: it stopped at both ends, not at the volume's
    assert sorted(r.index for r in result.slices) == list(range(3, 16))
    assert toy.embed_calls == 13
    for fmt, suffix in (("nrrd", ".nrrd"), ("nifti", ".nii.gz")):
        paths = result.write(tmp_path / fmt, fmt)
        assert paths["mask"].name == f"toy_mask{suffix}"
        written = sitk.ReadImage(str(paths["mask"]))
        assert_same_geometry(written, img, 1e-5)
        assert np.array_equal(sitk.GetArrayFromImage(written), expected)
        # every written voxel's centre maps (by SimpleITK) back into the RAS box's index range
        idx = np.argwhere(sitk.GetArrayFromImage(written))[:, ::-1]
        back = np.array([index_of_ras(written, np.array(written.TransformIndexToPhysicalPoint(
            [int(v) for v in p])) * LPS_TO_RAS) for p in idx[::97]])
        assert np.all(back >= lo[::-1] - 1e-6) and np.all(back <= hi[::-1] + 1e-6)


def test_cli_ras_box_with_prompted_toy(tmp_path, oblique, monkeypatch):
    path, img = oblique
    toy = BoxToy()
    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: toy)
    ras = np.array([ras_of_index(img, (30.4, 20.0, 16.0)), ras_of_index(img, (21.0, 2.6, 9.0))])
    expected, lo, hi = expected_from_ras(img, ras)
    assert tuple(lo) == (9, 3, 21) and tuple(hi) == (16, 20, 30)
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--coords", "ras",
                 "--box=" + ",".join(f"{v:.6f}" for v in ras.ravel()), "-q"]) == 0
    written = sitk.ReadImage(str(out / "oblique_mask.nrrd"))
    assert_same_geometry(written, img, 1e-9)
    assert np.array_equal(sitk.GetArrayFromImage(written), expected)
    assert toy.embed_calls == hi[0] - lo[0] + 1


def test_ras_ijk_round_trip_matches_simpleitk():
    img = make_image(np.zeros(SHAPE, np.float32), SPACING, ORIGIN, DIRECTION)
    geom = Geometry.of(img)
    rng = np.random.default_rng(4)
    ijk = rng.uniform(-2, 45, size=(25, 3))
    ras = geom.ijk_to_ras_points(ijk)
    assert ras.shape == (25, 3)
    assert np.allclose(ras, [ras_of_index(img, p) for p in ijk], atol=1e-9)
    assert np.allclose(geom.ras_to_ijk(ras), ijk, atol=1e-9)
    # single points come back as (1, 3); the 4x4 matrix is Slicer's IJKToRAS
    assert geom.ras_to_ijk(ras[0]).shape == (1, 3)
    assert np.allclose(geom.ijk_to_ras @ np.r_[ijk[0], 1.0], np.r_[ras[0], 1.0])
    # one voxel step along i moves spacing[0] mm along the direction's first column
    step = geom.ijk_to_ras_points([[1, 0, 0]]) - geom.ijk_to_ras_points([[0, 0, 0]])
    assert np.isclose(np.linalg.norm(step), SPACING[0])


def test_axis_codes_and_slicing_axis_for_permuted_oblique_direction(tmp_path):
    # LPS columns: i runs superior, j runs to the patient's right (-L), k runs posterior;
    # then tilted 15 degrees about x and 20 about z, so nothing is axis-aligned any more
    permutation = np.array([[0.0, -1.0, 0.0],
                            [0.0, 0.0, 1.0],
                            [1.0, 0.0, 0.0]])
    direction = rotation(2, 20.0) @ rotation(0, 15.0) @ permutation
    assert not np.any(np.isclose(np.abs(direction), 1.0))
    geom = Geometry((1.0, 1.5, 2.0), (0.0, 0.0, 0.0), tuple(direction.ravel()), (12, 14, 16))
    assert list(axis_codes(geom)) == ["P", "R", "S"]  # array axes k, j, i
    assert slicing_axis(geom, "axial") == 2
    assert slicing_axis(geom, "sagittal") == 1
    assert slicing_axis(geom, "coronal") == 0
    assert slicing_axis(geom, 1) == 1 and slicing_axis(geom, "0") == 0
    # identity: k is axial (S), j anterior->posterior (P in LPS+), i right->left (L)
    ident = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), (4, 4, 4))
    assert list(axis_codes(ident)) == ["S", "P", "L"]
    assert slicing_axis(ident, "axial") == 0

    # end to end: a volume stored this way is cut along i (array axis 2) and the box comes back whole
    shape = (16, 14, 12)
    arr = np.random.default_rng(5).random(shape).astype(np.float32)
    path = tmp_path / "perm.nrrd"
    sitk.WriteImage(make_image(arr, (1.0, 1.5, 2.0), (3.0, 4.0, 5.0), direction), str(path))
    toy = BoxToy()
    session = Session(read_volume(path), toy)
    assert session.axis == 2
    result = session.segment(BoxPrompt((2, 3, 4), (9, 10, 8)), name="perm")
    assert np.array_equal(result.mask, expected_box_mask(shape, (2, 3, 4), (9, 10, 8)))
    assert {im.shape for im in toy.embedded_images} == {(16, 14)}  # slices are (k, j) planes
    assert sorted(r.index for r in result.slices) == [4, 5, 6, 7, 8]


def test_written_files_get_the_usual_permissions_not_the_temporary_files_0600(tmp_path):
    import os
    import stat

    from xaiseg.io import FILE_MODE, write_text_atomic

    path = write_text_atomic(tmp_path / "a.json", "{}")
    assert stat.S_IMODE(os.stat(path).st_mode) == FILE_MODE
    mask = os.umask(0)
    os.umask(mask)
    assert FILE_MODE == 0o666 & ~mask  # as open() would create it; tempfile's 0600 would hide it from others
