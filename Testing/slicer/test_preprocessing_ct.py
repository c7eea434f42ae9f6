"""A CT window preset chosen in the panel reaches the worker and is stated in the run record:
pydicom's real CT slice (CT_small.dcm, read with SimpleITK), the abdomen preset (level 40, width
400 HU: the intensities -160..240 HU become the model's 0..1), LiteMedSAM on one slice.  The panel
takes 3D volumes only, so the slice is stacked three times along its own slice spacing and the
box covers the middle one."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

import slicer
from xaiseg.io import Geometry
from XAISegExtensionLib import panel
from XAISegExtensionLib.logic import RunSettings, XAISegLogic
from XAISegExtensionLib.parameters import default_settings
from XAISegExtensionLib.selftest import roi_from_kji

pydicom_data = pytest.importorskip("pydicom.data")
pytest.importorskip("torch")


def test_a_ct_window_preset_reaches_the_worker_and_the_run_record(scene):
    image = sitk.ReadImage(pydicom_data.get_testdata_file("CT_small.dcm"))
    array = sitk.GetArrayFromImage(image)
    assert array.shape == (1, 128, 128) and array.min() < -160 and array.max() > 240  # beyond the window
    volume = slicer.util.addVolumeFromArray(np.repeat(array, 3, axis=0), Geometry.of(image).ijk_to_ras,
                                            name="CT small")
    roi = roi_from_kji(scene, volume, (1, 40, 40), (1, 90, 90), "box")

    form = panel.form_values(default_settings())  # the panel, with the preset chosen
    form.update(device="cpu", methods=[], narrator="", preprocessing_mode="window", window="abdomen")
    settings, _ = panel.from_form(form, RunSettings(threads=2))
    logic = XAISegLogic(scene)
    logic.keepFiles = True
    result = logic.run(volume, roi, settings, timeout=600)
    job = logic.job
    try:
        sent = json.loads((job.workdir / "request.json").read_text())["preprocessing"]
        assert (sent["mode"], sent["window"], sent["clahe"]) == ("window", "abdomen", False)
        record = json.loads((job.workdir / "output" / f"{job.request.name}_run.json").read_text())
        stated = record["preprocessing"]
        assert (stated["mode"], stated["window"], stated["clahe"]) == ("window", "abdomen", False)
        assert stated["intensity_bounds"] == [-160.0, 240.0]  # level 40 -+ width 400 / 2
        shown = json.loads(result.record_text.GetText())
        assert shown["record"]["preprocessing"] == stated
        assert shown["request"]["preprocessing"]["window"] == "abdomen"
        assert record["evaluations"]["encoder_passes"] == 1
        assert result.segmentation is not None
    finally:
        import shutil

        shutil.rmtree(job.workdir, ignore_errors=True)
