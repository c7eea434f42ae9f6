"""Anisotropic spacing and an oblique, flipped direction survive segment -> write -> read, and the
mask lies where the box was in physical (RAS) space."""
import numpy as np
import pytest
import SimpleITK as sitk

from toys import BoxToy
from xaiseg.cli import main
from xaiseg.io import Geometry, Volume, read_volume
from xaiseg.pipeline import Session
from xaiseg.volume import BoxPrompt, slicing_axis


def oblique_volume(tmp_path):
    arr = np.zeros((20, 30, 40), np.float32)  # (k, j, i)
    arr[6:14, 10:20, 12:30] = 200.0  # bright cuboid
    arr += np.random.default_rng(0).random(arr.shape).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 1.3, 2.5))
    img.SetOrigin((-31.0, 12.5, 40.0))
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1, -1, 1])  # rotation plus a flip
    img.SetDirection(tuple(rot.ravel()))
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(img, str(path))
    return path, img


@pytest.mark.parametrize("fmt,suffix", [("nrrd", ".nrrd"), ("nifti", ".nii.gz")])
def test_geometry_round_trip_and_ras_box(tmp_path, capsys, fmt, suffix):
    path, img = oblique_volume(tmp_path)
    geom = Geometry.of(img)
    # the RAS corners of voxel box i 12..29, j 10..19, k 6..13
    corners = geom.ijk_to_ras_points([[12, 10, 6], [29, 19, 13]])
    box = ",".join(f"{v:.4f}" for v in corners.ravel())
    out = tmp_path / "out"
    args = ["segment", str(path), "-o", str(out), "--coords", "ras", f"--box={box}", "--format", fmt, "-q",
            "--model", "torch", "--factory", "toys:ramp", "--class-index", "0"]
    assert main(args) == 0
    written = sitk.ReadImage(str(out / f"oblique_mask{suffix}"))
    assert written.GetSize() == img.GetSize()
    assert np.allclose(written.GetSpacing(), img.GetSpacing(), atol=1e-5)
    assert np.allclose(written.GetOrigin(), img.GetOrigin(), atol=1e-4)
    assert np.allclose(written.GetDirection(), img.GetDirection(), atol=1e-5)
    mask = sitk.GetArrayFromImage(written).astype(bool)
    # the threshold toy ignores the prompt but only the slices inside the box were run
    assert set(np.where(mask.any(axis=(1, 2)))[0]) <= set(range(6, 14))
    centre = geom.ijk_to_ras_points(np.argwhere(mask).mean(0)[::-1])[0]
    assert np.linalg.norm(centre - corners.mean(0)) < 2.5  # within a voxel of the box centre


def test_prompted_mask_follows_the_ras_box(tmp_path):
    path, img = oblique_volume(tmp_path)
    vol = read_volume(path)
    session = Session(vol, BoxToy(gate=True))
    ijk = vol.geometry.ras_to_ijk(vol.geometry.ijk_to_ras_points([[14, 11, 7], [20, 16, 12]]))
    lo, hi = np.round(ijk.min(0)).astype(int)[::-1], np.round(ijk.max(0)).astype(int)[::-1]
    result = session.segment(BoxPrompt(tuple(lo), tuple(hi)), name="toy")
    expected = np.zeros(vol.shape, bool)
    expected[7:13, 11:17, 14:21] = True
    assert np.array_equal(result.mask.astype(bool), expected)
    paths = result.write(tmp_path / "o")
    back = read_volume_mask(paths["mask"])
    assert np.array_equal(back, expected)


def read_volume_mask(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(bool)


def test_ras_ijk_round_trip_and_axial_axis():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    geom = Geometry((0.5, 2.0, 3.0), (10.0, -4.0, 7.0), tuple(q.ravel()), (10, 11, 12))
    pts = rng.uniform(0, 10, size=(5, 3))
    assert np.allclose(geom.ras_to_ijk(geom.ijk_to_ras_points(pts)), pts)
    # a volume stored sagittally (k runs left-right) is sliced axially along its j axis
    perm = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # columns: i->A(LPS y), j->-S, k->-L
    g2 = Geometry((1, 1, 1), (0, 0, 0), tuple(perm.ravel()), (8, 8, 8))
    assert slicing_axis(g2, "axial") == 1
    assert slicing_axis(g2, "sagittal") == 0
    assert slicing_axis(g2, "coronal") == 2
