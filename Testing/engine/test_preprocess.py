"""Intensity normalisation (percentiles over the foreground, CT windows, CLAHE) and resizing."""
import re

import numpy as np
import pytest

from xaiseg.errors import InputError
from xaiseg.preprocess import CT_WINDOWS, Preprocessing, clahe, normalise, resize_longest, unpad_resize


def test_percentiles_ignore_the_zero_background():
    rng = np.random.default_rng(0)
    vol = np.zeros((10, 40, 40), np.float32)
    vol[2:8, 10:30, 10:30] = rng.uniform(100.0, 200.0, (6, 20, 20))  # 15 % foreground
    fg = vol[vol > 0]
    lo, hi = Preprocessing(lower=1.0, upper=99.0).bounds(vol)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(fg, [1.0, 99.0])))
    assert 100.0 < lo < 102.0 and 198.0 < hi < 200.0  # with the background, lo would be 0
    assert np.percentile(vol, 1.0) == 0.0
    out, bounds = normalise(vol, Preprocessing(lower=1.0, upper=99.0))
    assert out.dtype == np.float32 and bounds == pytest.approx((lo, hi))
    assert out.min() == 0.0 and out.max() == 1.0
    inside = (fg > lo) & (fg < hi)
    assert np.allclose(out[vol > 0][inside], (fg[inside] - lo) / (hi - lo), atol=1e-6)


def test_percentiles_use_the_whole_range_when_the_minimum_is_not_background():
    vol = np.linspace(-1000, 1000, 2001, dtype=np.float32).reshape(1, 1, -1)
    lo, hi = Preprocessing(lower=0.0, upper=100.0).bounds(vol)
    # voxels above the minimum: -999 .. 1000
    assert (lo, hi) == (-999.0, 1000.0)


def test_two_level_image_keeps_its_contrast():
    vol = np.zeros((4, 10, 10), np.float32)
    vol[1:3, 2:6, 3:7] = 100.0
    out, bounds = normalise(vol, Preprocessing())
    assert bounds == (0.0, 100.0)
    assert np.array_equal(out, vol / 100.0)


@pytest.mark.parametrize("name", sorted(CT_WINDOWS))
def test_window_presets_are_level_plus_minus_half_width(name):
    level, width = CT_WINDOWS[name]
    prep = Preprocessing(mode="window", window=name)
    assert prep.bounds(np.zeros(3)) == (level - width / 2.0, level + width / 2.0)
    hu = np.array([level - width, level - width / 2, level - width / 4, level, level + width / 4,
                   level + width / 2, level + 3000.0], np.float32)
    out, _ = normalise(hu, prep)
    assert np.allclose(out, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-6)


def test_known_presets_and_explicit_window():
    assert CT_WINDOWS["brain"] == (40.0, 80.0) and CT_WINDOWS["lung"] == (-600.0, 1500.0)
    assert CT_WINDOWS["bone"] == (400.0, 1800.0) and CT_WINDOWS["abdomen"] == (40.0, 400.0)
    prep = Preprocessing(mode="window", level=-100.0, width=50.0)
    assert prep.bounds(np.zeros(1)) == (-125.0, -75.0)
    assert prep.record() == {"mode": "window", "lower": 0.5, "upper": 99.5, "level": -100.0, "width": 50.0,
                             "clahe": False, "clahe_clip": 2.0, "clahe_tiles": 8}
    vol = np.array([[[-5.0, 0.0, 15.0]]], np.float32)
    assert Preprocessing(mode="minmax").bounds(vol) == (-5.0, 15.0)
    assert np.allclose(normalise(vol, Preprocessing(mode="minmax"))[0], [[[0.0, 0.25, 1.0]]])


def low_contrast_image():
    yy, xx = np.mgrid[0:128, 0:128]
    return (0.5 + 0.03 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + 0.02 * (xx > 64)).astype(np.float32)


def local_std(image, tile=16):
    h, w = image.shape
    return np.mean([image[y:y + tile, x:x + tile].std() for y in range(0, h, tile) for x in range(0, w, tile)])


def test_clahe_stays_in_unit_range_and_raises_local_contrast():
    image = low_contrast_image()
    out = clahe(image, clip=2.0, tiles=8)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert local_std(out) > 2.0 * local_std(image)
    # it stretches the structure rather than replacing it: output follows the input
    assert np.corrcoef(image.ravel(), out.ravel())[0, 1] > 0.8
    # inputs outside [0, 1] are clipped first; output is still in range
    wild = clahe(image * 3.0 - 1.0)
    assert 0.0 <= wild.min() and wild.max() <= 1.0


def test_clahe_in_normalise_is_per_slice():
    vol = np.stack([low_contrast_image(), low_contrast_image()[::-1]]) * 1000.0
    out, _ = normalise(vol, Preprocessing(mode="minmax", clahe=True))
    plain, _ = normalise(vol, Preprocessing(mode="minmax"))
    assert out.shape == vol.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    for k in range(2):
        assert np.allclose(out[k], clahe(plain[k]), atol=1e-6)
        assert local_std(out[k]) > local_std(plain[k])


@pytest.mark.parametrize("shape,target,resized", [((40, 50), 64, (51, 64)), ((300, 200), 64, (64, 43)),
                                                  ((64, 64), 64, (64, 64)), ((1, 90), 32, (1, 32))])
def test_resize_longest_and_back_shapes(shape, target, resized):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    padded, got, scale = resize_longest(image, target)
    assert padded.shape == (target, target) and padded.dtype == np.float32
    assert got == resized and scale == pytest.approx(target / max(shape))
    assert not padded[resized[0]:].any() and not padded[:, resized[1]:].any()  # zero padding
    assert padded[:resized[0], :resized[1]].any()
    back = unpad_resize(padded, got, shape)
    assert back.shape == shape and back.dtype == np.float32


@pytest.mark.parametrize("shape,target", [((40, 50), 64), ((90, 60), 48)])
def test_resize_round_trip_values_for_a_smooth_image(shape, target):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    image = (0.5 + 0.4 * np.sin(xx / shape[1] * np.pi) * np.cos(yy / shape[0] * np.pi)).astype(np.float32)
    padded, resized, _ = resize_longest(image, target)
    back = unpad_resize(padded, resized, shape)
    assert np.abs(back - image).max() < 0.03
    assert np.abs(back - image).mean() < 0.005


def test_resize_keeps_channels():
    image = np.random.default_rng(1).random((20, 30, 3)).astype(np.float32)
    padded, resized, _ = resize_longest(image, 60)
    assert padded.shape == (60, 60, 3) and resized == (40, 60)


@pytest.mark.parametrize("kwargs,text", [
    (dict(mode="zscore"), "preprocessing mode 'zscore' is unknown; expected percentile, window or minmax"),
    (dict(lower=50.0, upper=50.0), "percentiles 50.0/50.0 are invalid; expected 0 <= lower < upper <= 100"),
    (dict(lower=-1.0, upper=99.0), "percentiles -1.0/99.0 are invalid"),
    (dict(lower=1.0, upper=101.0), "percentiles 1.0/101.0 are invalid"),
    (dict(mode="window", window="kidney"), "CT window 'kidney' is unknown; expected one of brain, subdural"),
    (dict(mode="window"), "window mode needs a preset or a level and a positive width (got level=None, width=None)"),
    (dict(mode="window", level=40.0, width=0.0), "(got level=40.0, width=0.0)"),
    (dict(clahe=True, clahe_tiles=0), "CLAHE needs tiles >= 1 and clip > 0 (got 0, 2.0)"),
    (dict(clahe=True, clahe_clip=-1.0), "CLAHE needs tiles >= 1 and clip > 0 (got 8, -1.0)"),
])
def test_invalid_settings_name_the_value(kwargs, text):
    with pytest.raises(InputError, match=re.escape(text)):
        Preprocessing(**kwargs)
