"""Real DICOM through SimpleITK: pydicom's CT slice, and a series folder written slice by slice."""
import numpy as np
import pytest
import SimpleITK as sitk

from xaiseg.cli import main
from xaiseg.io import read_volume

pydicom_data = pytest.importorskip("pydicom.data")


def test_segment_real_ct_slice_keeps_geometry(tmp_path, capsys):
    ct = pydicom_data.get_testdata_file("CT_small.dcm")
    volume = read_volume(ct)
    assert volume.shape == (1, 128, 128)
    out = tmp_path / "out"
    # a 2D box on the only slice; the default soft-tissue-like percentile window
    assert main(["segment", ct, "-o", str(out), "--box", "40,40,90,90@0", "--name", "ct", "-q"]) == 0
    mask_img = sitk.ReadImage(str(out / "ct_mask.nrrd"))
    src = sitk.ReadImage(ct)
    assert mask_img.GetSize() == src.GetSize()
    assert np.allclose(mask_img.GetSpacing(), src.GetSpacing())
    assert np.allclose(mask_img.GetOrigin(), src.GetOrigin())
    assert np.allclose(mask_img.GetDirection(), src.GetDirection())
    mask = sitk.GetArrayFromImage(mask_img)[0]
    assert mask.any(), "LiteMedSAM found nothing in a box on a real CT slice"
    ys, xs = np.nonzero(mask)
    # the mask stays near the prompt box (SAM may spill a little over its edges)
    assert xs.min() >= 30 and xs.max() <= 100 and ys.min() >= 30 and ys.max() <= 100


def test_dicom_series_folder_round_trip(tmp_path):
    from xaiseg.sample_data import mni152_path

    pytest.importorskip("nibabel")
    mni = sitk.ReadImage(str(mni152_path()))
    crop = sitk.Cast(mni[60:90, 80:120, 70:74], sitk.sitkInt16)
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1"
    for z in range(crop.GetDepth()):
        sl = crop[:, :, z]
        sl.SetMetaData("0020|000e", uid)  # SeriesInstanceUID
        sl.SetMetaData("0020|0013", str(z + 1))  # InstanceNumber
        sl.SetMetaData("0020|0032", "\\".join(str(v) for v in crop.TransformIndexToPhysicalPoint((0, 0, z))))
        sl.SetMetaData("0020|0037", "\\".join(str(v) for v in (1, 0, 0, 0, 1, 0)))
        sl.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(sl)
    volume = read_volume(folder)
    assert volume.shape == (4, 40, 30)
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(crop))
    assert np.allclose(volume.geometry.spacing, crop.GetSpacing(), atol=1e-3)
