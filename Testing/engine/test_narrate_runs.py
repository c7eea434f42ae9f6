"""Real run directories for the narrate tests, made by the engine (built once per test process).

* :func:`mni_run` - LiteMedSAM on the MNI152 template, a 2D box around the left caudate (from the
  Harvard-Oxford atlas) on its largest axial slice, explained by occlusion inside the box ROI (its
  squares, ``aspect=1``: about half the passes of the default strips; these tests read the report,
  not the map).
* :func:`dicom_run` - pydicom's CT_small.dcm (which carries a patient name, IDs and dates) read by
  the engine, segmented by the known-answer box toy and explained by occlusion.

Tests copy a run with :func:`copy_run` before writing reports into it.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

MNI_NAME = "left_caudate"
DICOM_NAME = "ct_body"


def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="xaiseg-narrate-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.lru_cache(maxsize=None)
def mni_run() -> Path:
    """``explain`` output for the left caudate on MNI152 (one slice, occlusion, box ROI)."""
    from xaiseg.explain import make_explainer
    from xaiseg.models.litemedsam import LiteMedSAM
    from xaiseg.pipeline import Session
    from xaiseg.roi import RoiConfig
    from xaiseg.sample_data import load_mni_atlas, mni152_path
    from xaiseg.volume import BoxPrompt

    atlas = load_mni_atlas(("Left_Caudate",))
    truth = atlas.mask("Left_Caudate")
    k = int(np.argmax(truth.sum(axis=(1, 2))))
    ys, xs = np.nonzero(truth[k])
    atlas.image.source = str(mni152_path())
    session = Session(atlas.image, LiteMedSAM())
    seg = session.segment(BoxPrompt((k, int(ys.min()), int(xs.min())), (k, int(ys.max()), int(xs.max()))),
                          name=MNI_NAME)
    run = session.explain(seg, [make_explainer("occlusion", seed=0, aspect=1.0, metric_steps=2)],
                          roi=RoiConfig("box"),
                          target=truth.astype(np.uint8))
    out = _scratch() / "mni"
    run.write(out)
    return out


@functools.lru_cache(maxsize=None)
def dicom_run() -> Path:
    """``explain`` output for a box on pydicom's CT_small.dcm, read through xaiseg.io.read_volume."""
    from pydicom.data import get_testdata_file
    from toys import BoxToy

    from xaiseg.explain import make_explainer
    from xaiseg.io import read_volume
    from xaiseg.pipeline import Session
    from xaiseg.roi import RoiConfig
    from xaiseg.volume import BoxPrompt

    volume = read_volume(get_testdata_file("CT_small.dcm"))
    session = Session(volume, BoxToy(gate=True))
    seg = session.segment(BoxPrompt((0, 40, 40), (0, 90, 90)), name=DICOM_NAME)
    run = session.explain(seg, [make_explainer("occlusion", seed=0, patch=16, stride=8, metric_steps=2)],
                          roi=RoiConfig("box"))
    out = _scratch() / "dicom"
    run.write(out)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_mni_run_has_the_contract_files():
    run = mni_run()
    for suffix in ("_mask.nrrd", "_run.json", "_roi.nrrd", "_metrics.json", "_occlusion_saliency.nrrd",
                   "_occlusion_label.nrrd"):
        assert (run / f"{MNI_NAME}{suffix}").is_file(), f"{MNI_NAME}{suffix} missing from {sorted(run.iterdir())}"


def test_dicom_run_has_the_contract_files():
    run = dicom_run()
    for suffix in ("_mask.nrrd", "_run.json", "_roi.nrrd", "_metrics.json", "_occlusion_saliency.nrrd"):
        assert (run / f"{DICOM_NAME}{suffix}").is_file(), f"{DICOM_NAME}{suffix} missing"
