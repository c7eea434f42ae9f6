"""Corrupt, incomplete and inconsistent inputs are refused before any work, with one clear error.

Every file here is real: written by SimpleITK (or pydicom, from pydicom's CT_small.dcm) and then
damaged the way files get damaged - cut short, a byte flipped, a data file deleted, a slice lost.
Each row of the table is checked twice: through ``read_volume`` (the error class and a phrase of
its message) and through the CLI (exit 2, one line, nothing in the output folder).
"""
from __future__ import annotations

import copy
import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from xaiseg import errors
from xaiseg.cli import main
from xaiseg.io import read_volume, replace_nonfinite

TOY = ["--model", "torch", "--factory", "toys:threshold_net", "--class-index", "0"]
SHAPE = (6, 20, 24)  # (k, j, i)


def ramp(dtype=np.int16) -> np.ndarray:
    return (np.arange(np.prod(SHAPE)) % 251 + 1).reshape(SHAPE).astype(dtype)


def write(tmp_path: Path, name: str, array=None, compress=True) -> Path:
    img = sitk.GetImageFromArray(ramp() if array is None else array)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((10.0, -20.0, 30.0))
    path = tmp_path / name
    sitk.WriteImage(img, str(path), compress)
    return path


def cut(path: Path, keep) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])
    return path


def flip(path: Path, at: float = 0.6) -> Path:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))
    return path


def nonfinite_array(all_nan=False) -> np.ndarray:
    arr = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    if all_nan:
        return np.full(SHAPE, np.nan, np.float32)
    arr[1, 2, 3] = np.nan  # voxel (i, j, k) = (3, 2, 1)
    arr[4, 5, 6] = np.inf
    arr[4, 5, 7] = -np.inf
    return arr


# -- DICOM series built from pydicom's real CT slice ----------------------------------------------

def dicom_series(folder: Path, n=6, drop=(), change=None) -> Path:
    """``n`` copies of CT_small.dcm 5 mm apart along z (one series), minus ``drop``; ``change(z, ds)``
    may alter a slice."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for z in range(n):
        if z in drop:
            continue
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = z + 1
        x, y, z0 = (float(v) for v in base.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z0 + 5.0 * z]
        pixels = ds.pixel_array.copy()
        pixels += z
        ds.PixelData = pixels.tobytes()
        if change:
            change(z, ds)
        ds.save_as(str(folder / f"slice{z:02d}.dcm"))
    return folder


def other_orientation(z, ds):
    if z == 2:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.435889894]


def other_spacing(z, ds):
    if z == 2:
        ds.PixelSpacing = [0.5, 0.5]


def other_size(z, ds):
    if z == 2:
        pixels = ds.pixel_array[:64, :64].copy()
        ds.Rows, ds.Columns = 64, 64
        ds.PixelData = pixels.tobytes()


def same_position(z, ds):
    if z == 3:
        ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
            float(ds.ImagePositionPatient[2]) - 5.0]


def uneven(z, ds):
    if z == 3:
        ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
            float(ds.ImagePositionPatient[2]) + 2.0]


# -- the table ------------------------------------------------------------------------------------

def _nhdr_without_data(tmp_path):
    path = write(tmp_path, "vol.nhdr", compress=False)
    (tmp_path / "vol.raw").unlink()
    return path


def _nhdr_short_data(tmp_path):
    path = write(tmp_path, "vol.nhdr", compress=False)
    cut(tmp_path / "vol.raw", lambda n: n - 100)
    return path


def _nhdr_corrupt_gzip(tmp_path):
    path = write(tmp_path, "vol.nhdr", compress=True)
    flip(tmp_path / "vol.raw.gz")
    return path


def _analyze_pair_without_img(tmp_path):
    path = write(tmp_path, "vol.hdr", compress=False)
    (tmp_path / "vol.img").unlink()
    return path


def _mni_half(tmp_path):
    from xaiseg.sample_data import mni152_path

    try:
        src = mni152_path()
    except errors.DependencyError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "mni_half.nii.gz"
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _multi_gzip_member_damaged(tmp_path):
    """A .nii.gz of two gzip members (legal), the second one with a wrong CRC."""
    raw = gzip.decompress(write(tmp_path, "src.nii.gz").read_bytes())
    second = bytearray(gzip.compress(raw[1000:], mtime=0))
    second[-8] ^= 0xFF  # CRC-32 field of the second member's trailer
    path = tmp_path / "two.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000], mtime=0) + bytes(second))
    return path


BAD_INPUTS = {
    "nii.gz cut in half": (lambda t: cut(write(t, "v.nii.gz"), lambda n: n // 2),
                           errors.CorruptFileError, "is truncated: its gzip data end"),
    "MNI152 nii.gz cut in half": (_mni_half, errors.CorruptFileError, "is truncated"),
    "nii.gz byte flipped": (lambda t: flip(write(t, "v.nii.gz")), errors.CorruptFileError, "is damaged"),
    "nii.gz without its gzip trailer": (lambda t: cut(write(t, "v.nii.gz"), lambda n: n - 4),
                                        errors.CorruptFileError, "is truncated"),
    "nii.gz second member CRC wrong": (_multi_gzip_member_damaged, errors.CorruptFileError,
                                       "fail their CRC-32 check"),
    "nii cut short": (lambda t: cut(write(t, "v.nii", compress=False), lambda n: n - 10),
                      errors.CorruptFileError, "is incomplete: its header (24x20x6 voxels"),
    "nii header only": (lambda t: cut(write(t, "v.nii", compress=False), lambda n: 200),
                        errors.CorruptFileError, "too short for a NIfTI header"),
    "nrrd gzip cut": (lambda t: cut(write(t, "v.nrrd"), lambda n: n - 50),
                      errors.CorruptFileError, "is truncated"),
    "nrrd gzip byte flipped": (lambda t: flip(write(t, "v.nrrd"), 0.8), errors.CorruptFileError, "is damaged"),
    "nrrd raw cut": (lambda t: cut(write(t, "v.nrrd", compress=False), lambda n: n - 2),
                     errors.CorruptFileError, "needs 5760 bytes of voxel data, but the file holds 5758"),
    "nhdr data file deleted": (_nhdr_without_data, errors.CorruptFileError, "vol.raw is missing"),
    "nhdr data file short": (_nhdr_short_data, errors.CorruptFileError, "vol.raw is incomplete"),
    "nhdr gzip data damaged": (_nhdr_corrupt_gzip, errors.CorruptFileError, "vol.raw.gz is damaged"),
    "hdr/img pair without img": (_analyze_pair_without_img, errors.CorruptFileError, "data file (.img) is missing"),
    "mha cut": (lambda t: cut(write(t, "v.mha", compress=False), lambda n: n - 8),
                errors.CorruptFileError, "is incomplete"),
    "mha zlib byte flipped": (lambda t: flip(write(t, "v.mha"), 0.9), errors.CorruptFileError, "is damaged"),
    "NIfTI all NaN": (lambda t: write(t, "nan.nii.gz", nonfinite_array(all_nan=True)),
                      errors.NonFiniteImageError, "every voxel is NaN"),
    "NRRD all NaN": (lambda t: write(t, "nan.nrrd", nonfinite_array(all_nan=True)),
                     errors.NonFiniteImageError, "every voxel is NaN"),
    "NIfTI some NaN/inf": (lambda t: write(t, "some.nii.gz", nonfinite_array()), errors.NonFiniteImageError,
                           "3 NaN or infinite voxel(s) of 2880 (1 NaN, 1 +inf, 1 -inf), first at voxel "
                           "(i, j, k) (3, 2, 1), (6, 5, 4), (7, 5, 4)"),
    "NRRD some NaN/inf": (lambda t: write(t, "some.nrrd", nonfinite_array()), errors.NonFiniteImageError,
                          "(1 NaN, 1 +inf, 1 -inf), first at voxel (i, j, k) (3, 2, 1)"),
    "DICOM series missing a slice": (lambda t: dicom_series(t / "gap", drop=(3,)), errors.SliceGapError,
                                     "no slice between instance 3 (slice02.dcm) at 10 mm and instance 5 "
                                     "(slice04.dcm) at 20 mm (10 mm apart)"),
    "DICOM series two slices missing": (lambda t: dicom_series(t / "gap2", n=8, drop=(2, 5)),
                                        errors.SliceGapError, "2 gap(s), 2 missing slice(s)"),
    "DICOM mixed orientation": (lambda t: dicom_series(t / "orient", change=other_orientation),
                                errors.SeriesError, "mixes orientations: instance 3 (slice02.dcm) has "
                                                    "ImageOrientationPatient (1, 0, 0, 0, 0.9, 0.43589)"),
    "DICOM mixed pixel spacing": (lambda t: dicom_series(t / "spacing", change=other_spacing),
                                  errors.SeriesError, "mixes pixel spacings: instance 3 (slice02.dcm) has "
                                                      "PixelSpacing (0.5, 0.5)"),
    "DICOM mixed slice size": (lambda t: dicom_series(t / "size", change=other_size),
                               errors.SeriesError, "mixes slice sizes: instance 3 (slice02.dcm) is 64x64"),
    "DICOM two slices at one position": (lambda t: dicom_series(t / "dup", change=same_position),
                                         errors.SeriesError, "at the same position"),
    "DICOM unevenly spaced": (lambda t: dicom_series(t / "uneven", change=uneven),
                              errors.SeriesError, "unevenly spaced: instance 3 (slice02.dcm) and instance 4 "
                                                  "(slice03.dcm) are 7.000 mm apart along the slice normal where "
                                                  "the other slices are 5.000 mm apart"),
}


@pytest.mark.parametrize("row", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_refused(tmp_path, capsys, row):
    build, error, phrase = BAD_INPUTS[row]
    path = build(tmp_path)
    with pytest.raises(error) as info:
        read_volume(path)
    assert phrase in str(info.value)
    out = tmp_path / "out"
    code = main(["segment", str(path), "--box", "1,1,4,4@0", *TOY, "-o", str(out), "-q"])
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("xaiseg: error: ") and phrase in lines[0], captured.err
    assert not out.exists() or not list(out.iterdir())


# -- what must still read, and read right ---------------------------------------------------------

@pytest.mark.parametrize("name,compress", [("v.nii", False), ("v.nii.gz", True), ("v.nrrd", False),
                                           ("v.nrrd", True), ("v.nhdr", False), ("v.nhdr", True),
                                           ("v.mha", False), ("v.mha", True), ("v.hdr", False)])
def test_whole_files_read_unchanged(tmp_path, name, compress):
    path = write(tmp_path, name, compress=compress)
    vol = read_volume(path)
    assert np.array_equal(vol.array, ramp())
    assert np.allclose(vol.geometry.spacing, (0.8, 0.9, 2.5))
    assert "data length" in vol.integrity["checked"]
    assert vol.integrity.get("data_bytes") == ramp().nbytes


def test_real_template_and_two_member_gzip(tmp_path):
    from xaiseg.sample_data import mni152_path

    try:
        src = mni152_path()
    except errors.DependencyError as exc:
        pytest.skip(str(exc))
    mni = read_volume(src)
    assert mni.integrity["format"] == "NIfTI-1" and "gzip CRC-32 and length" in mni.integrity["checked"]
    raw = gzip.decompress(src.read_bytes())
    two = tmp_path / "two.nii.gz"  # the same bytes as two gzip members: legal, and read the same
    two.write_bytes(gzip.compress(raw[:5000], mtime=0) + gzip.compress(raw[5000:], mtime=0))
    assert np.array_equal(read_volume(two).array, mni.array)


def test_nifti_nonfinite_voxels_are_where_the_file_has_them(tmp_path):
    """SimpleITK's NIfTI reader turns NaN/inf into 0; read_volume puts them back, so replace_nonfinite
    replaces exactly the file's non-finite voxels and says how many."""
    arr = nonfinite_array()
    path = write(tmp_path, "some.nii.gz", arr)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # what ITK alone gives
    vol = read_volume(path, check=False)
    assert np.array_equal(np.isnan(vol.array), np.isnan(arr))
    assert np.array_equal(np.isposinf(vol.array), np.isposinf(arr))
    assert np.array_equal(np.isneginf(vol.array), np.isneginf(arr))
    assert vol.integrity["nonfinite"] == {"nan": 1, "posinf": 1, "neginf": 1}
    fixed, record = replace_nonfinite(vol, -1.0)
    assert record == {"replaced": 3, "value": -1.0, "nan": 1, "posinf": 1, "neginf": 1}
    bad = ~np.isfinite(arr)
    assert np.all(fixed[bad] == -1.0) and np.array_equal(fixed[~bad], arr[~bad])
    assert np.isnan(vol.array[1, 2, 3])  # the volume itself is left as read
    with pytest.raises(errors.InputError, match="not finite"):
        replace_nonfinite(vol, float("nan"))


def test_dicom_gap_allowed_keeps_every_slice_where_it_was(tmp_path):
    full = read_volume(dicom_series(tmp_path / "full"))
    gap = read_volume(dicom_series(tmp_path / "gap", drop=(3,)), allow_gaps=True)
    assert gap.shape == full.shape
    assert gap.geometry.same_grid(full.geometry)
    real = [0, 1, 2, 4, 5]
    assert np.array_equal(gap.array[real], full.array[real])
    assert np.all(gap.array[3] == gap.array.min())
    rec = gap.integrity
    assert rec["filled_slices"] == [3] and rec["slice_spacing_mm"] == pytest.approx(5.0)
    (g,) = rec["gaps"]
    assert (g["after_instance"], g["before_instance"], g["missing_slices"]) == (3, 5, 1)
    assert g["distance_mm"] == pytest.approx(10.0)
    assert full.integrity["gaps"] == [] and "slice positions" in full.integrity["checked"]


@pytest.mark.parametrize("z,expect,missing", [
    ([0, 5, 15], "gap", 1),  # two steps: the smaller is the spacing, the other a whole multiple
    ([0, 2.5, 5, 7.5, 15, 17.5], "gap", 2),
    ([0, 5, 10, 17, 20, 25], "uneven", 0),
    ([0, 5.01, 9.99, 15, 20.02], "ok", 0),  # rounding in the files is not a gap
])
def test_slice_positions(z, expect, missing):
    from xaiseg.dicom_series import SliceInfo, check_positions

    slices = [SliceInfo(f"s{i}.dcm", i + 1, (1.0, 2.0, v), (1, 0, 0, 0, 1, 0), (1, 1), 8, 8) for i, v in enumerate(z)]
    if expect == "ok":
        assert check_positions(slices, (0, 0, 1), Path("f"))["gaps"] == []
    elif expect == "gap":
        with pytest.raises(errors.SliceGapError, match=rf"1 gap\(s\), {missing} missing slice"):
            check_positions(slices, (0, 0, 1), Path("f"))
        assert check_positions(slices, (0, 0, 1), Path("f"), allow_gaps=True)["gaps"][0]["missing_slices"] == missing
    else:
        with pytest.raises(errors.SeriesError, match="instance 3 .* and instance 4 .* 7.000 mm apart"):
            check_positions(slices, (0, 0, 1), Path("f"))


def test_check_streams_in_chunks(tmp_path):
    """The check never holds the volume: its peak memory is a small fraction of the data."""
    import tracemalloc

    from xaiseg.integrity import check_file

    arr = np.add.outer(np.arange(96 * 256, dtype=np.float32), np.arange(256, dtype=np.float32) / 7)
    arr = arr.reshape(96, 256, 256)
    arr[-1, -1, -1] = np.nan  # found at the very end of the stream
    path = write(tmp_path, "big.nii.gz", arr)
    tracemalloc.start()
    try:
        record = check_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert record["nonfinite"] == {"nan": 1, "posinf": 0, "neginf": 0}
    assert peak < arr.nbytes / 4, f"peak {peak} bytes for {arr.nbytes} bytes of data"
