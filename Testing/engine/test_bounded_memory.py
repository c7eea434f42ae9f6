"""What keeps a large CT's run small gives the same answers: normalisation in place, a few slices at
a time, equals the whole-volume formula; a volume written from its explained planes equals the
full volume written the usual way, on every slicing axis and with a turned grid.  (The peak itself
is a benchmark: docs/benchmarks/memory.md.)"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from toys import make_image, rotation


def formula(volume: np.ndarray, prep) -> np.ndarray:
    """The normalisation as one float32 expression over the whole volume."""
    lo, hi = prep.bounds(volume)
    hi = hi if hi > lo else lo + 1.0
    return np.clip((volume.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("dtype, options", [
    (np.int16, {}), (np.float64, {"mode": "minmax"}), (np.int16, {"mode": "window", "window": "abdomen"}),
    (np.uint8, {"lower": 5.0, "upper": 95.0}), (np.float32, {})])
def test_normalising_a_few_slices_at_a_time_equals_the_whole_volume_formula(dtype, options, monkeypatch):
    import xaiseg.preprocess as prep_module
    from xaiseg.preprocess import Preprocessing, normalise

    monkeypatch.setattr(prep_module, "CHUNK_VOXELS", 3 * 41 * 29)  # chunks of 3 slices, the last one shorter
    volume = np.random.default_rng(1).normal(120, 300, (17, 41, 29)).astype(dtype)
    prep = Preprocessing(**options)
    out, bounds = normalise(volume, prep)
    assert out.dtype == np.float32 and np.array_equal(out, formula(volume, prep))
    assert 0.0 < out.mean() < 1.0 and out.min() == 0.0 and out.max() == 1.0
    flat = volume[0].astype(dtype)  # a 2D slice goes the same way
    assert np.array_equal(normalise(flat, prep)[0], formula(flat, prep))


def test_clahe_is_applied_slice_by_slice_in_place():
    from xaiseg.preprocess import Preprocessing, clahe, normalise

    volume = np.random.default_rng(2).normal(0, 1, (4, 40, 40)).astype(np.float32)
    out, _ = normalise(volume, Preprocessing(clahe=True))
    plain = formula(volume, Preprocessing())
    assert all(np.array_equal(out[k], clahe(plain[k])) for k in range(4))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_volume_written_from_its_planes_equals_the_full_volume(tmp_path, axis):
    from xaiseg.io import Volume, read_volume, write_planes, write_volume
    from xaiseg.volume import put_plane

    shape = (7, 9, 11)
    image = make_image(np.zeros(shape, np.float32), spacing=(0.7, 0.9, 1.3), origin=(4.0, -2.0, 9.0),
                       direction=rotation(1, 30.0))
    reference = Volume.from_sitk(image, "reference")
    rng = np.random.default_rng(axis)
    plane_shape = tuple(n for a, n in enumerate(shape) if a != axis)
    planes = {k: rng.random(plane_shape, dtype=np.float32) for k in (1, 3, 4)}
    full = np.zeros(shape, np.float32)
    for k, p in planes.items():
        put_plane(full, axis, k, p)
    for dtype, transform in ((np.float32, lambda p: p), (np.uint8, lambda p: p >= 0.5)):
        a = write_planes(reference, {k: transform(p) for k, p in planes.items()}, axis, tmp_path / f"a{axis}.nrrd",
                         dtype)
        b = write_volume(reference, np.asarray(transform(full), dtype), tmp_path / f"b{axis}.nrrd")
        x, y = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
        assert x.GetPixelID() == y.GetPixelID()
        assert (x.GetSpacing(), x.GetOrigin(), x.GetDirection()) == (y.GetSpacing(), y.GetOrigin(), y.GetDirection())
        assert np.array_equal(sitk.GetArrayFromImage(x), sitk.GetArrayFromImage(y))
        assert read_volume(a).array.any()
