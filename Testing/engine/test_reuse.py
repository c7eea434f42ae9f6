"""Activation reuse: a perturbed slice encoded from the unperturbed pass's cached activations gives
the embedding of a full pass (real LiteMedSAM, a real MNI152 slice), and maps made with reuse equal
maps made without it."""
import copy

import numpy as np
import pytest
import torch

from xaiseg.errors import InputError
from xaiseg.explain import make_explainer
from xaiseg.explain.base import PerturbationEngine
from xaiseg.models.base import SlicePrompt, without_reuse
from xaiseg.models.tinyvit_reuse import conv_span, window_box
from xaiseg.preprocess import resize_longest

TOLERANCE = 1e-4  # of the features' largest magnitude


@pytest.fixture(scope="module")
def caudate_slice(litemedsam):
    """The preprocessed axial MNI152 slice through the left caudate (218 x 182: resized to 256 x 214
    and padded), the caudate's box as a prompt, and the slice's activation cache."""
    from xaiseg.bench_speed import caudate_slice as load

    _, image, prompt, _ = load(litemedsam)
    return image, prompt, litemedsam.embed_cache(image)


def occluded(image, box, value=0.0):
    out = image.copy()
    y0, x0, y1, x1 = box
    out[y0:y1, x0:x1] = value
    return out


def features_match(segmenter, image, embedding, reference=None):
    """The embedding's features equal ``reference`` (default: a full pass of ``image``) to TOLERANCE."""
    reference = segmenter.embed(image).features if reference is None else reference
    scale = float(reference.abs().max())
    err = float((embedding.features - reference).abs().max())
    assert err <= TOLERANCE * scale, f"max error {err} exceeds {TOLERANCE} x {scale}"
    return err / scale


def reused_pass_matches(segmenter, cache, image, box, value):
    """Occlude ``box`` of ``image`` with ``value``: the pass reuses the cache and equals a full pass."""
    perturbed = occluded(image, box, value)
    emb = segmenter.embed_changed(cache, perturbed, box)
    assert 0.0 < emb.pass_share < 1.0  # activations were reused, not a full pass
    return features_match(segmenter, perturbed, emb)


def test_conv_span_is_what_a_convolution_changes():
    """Known answer by brute force: change rows [a, b) of a signal and see which outputs of a
    3-tap convolution with positive weights (padding 1, stride 1 or 2) move."""
    import torch.nn.functional as F

    weight = torch.tensor([[[0.3, 0.5, 0.7]]])
    for stride in (1, 2):
        for n in (9, 10):
            x = torch.rand(1, 1, n, generator=torch.Generator().manual_seed(n))
            for a in range(n):
                for b in range(a + 1, n + 1):
                    y = x.clone()
                    y[..., a:b] += 1.0
                    moved = np.flatnonzero((F.conv1d(y, weight, None, stride, 1) -
                                            F.conv1d(x, weight, None, stride, 1)).abs().numpy()[0, 0] > 1e-6)
                    o0, o1, i0, i1 = conv_span(a, b, n, stride)
                    assert (moved.min(), moved.max() + 1) == (o0, o1), (stride, n, a, b)
                    assert (i0, i1) == (stride * o0 - 1, stride * (o1 - 1) + 2)


def test_window_box_takes_whole_windows_from_the_corner():
    assert window_box((8, 0, 9, 1), 7, (128, 128)) == (7, 0, 14, 7)
    assert window_box((127, 120, 128, 128), 7, (128, 128)) == (126, 119, 128, 128)
    assert window_box((0, 0, 64, 64), 14, (64, 64)) == (0, 0, 64, 64)


@pytest.mark.parametrize("shape", [(218, 182), (320, 290), (256, 256)])
def test_grid_box_contains_every_resized_change(litemedsam, shape):
    rng = np.random.default_rng(1)
    image = rng.random(shape).astype(np.float32)
    base, resized, _ = resize_longest(image, 256)
    for _ in range(40):
        y0, x0 = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        y1, x1 = y0 + int(rng.integers(1, 12)), x0 + int(rng.integers(1, 12))
        changed = resize_longest(occluded(image, (y0, x0, y1, x1), 2.0), 256)[0] != base
        rows, cols = np.nonzero(changed)
        g = litemedsam.grid_box((y0, x0, y1, x1), shape)
        assert g[0] <= rows.min() and g[1] <= cols.min() and rows.max() < g[2] and cols.max() < g[3]
        assert g[2] <= resized[0] and g[3] <= resized[1]


@pytest.mark.parametrize("box", [
    (100, 80, 116, 96),     # centre (16 px)
    (0, 0, 20, 20),         # top-left corner: the grid's zero padding on two sides
    (198, 162, 218, 182),   # bottom-right corner: the bottom grid border and the resize's edge at column 214
    (109, 91, 110, 92),     # one pixel
    (30, 20, 170, 150),     # large
])
def test_embed_changed_equals_a_full_pass(litemedsam, caudate_slice, box):
    image, _, cache = caudate_slice
    assert image.shape == (218, 182)
    reused_pass_matches(litemedsam, cache, image, box, 0.25)


def test_wide_slice_top_right_corner(litemedsam, caudate_slice):
    """182 x 218 (the axial slice transposed): resized to 214 x 256, so the right grid border is reached."""
    image = np.ascontiguousarray(caudate_slice[0].T)
    reused_pass_matches(litemedsam, litemedsam.embed_cache(image), image, (0, 190, 14, 218), 1.0)


def test_unchanged_image_is_the_cached_pass_and_a_batch_shares_the_cache(litemedsam, caudate_slice):
    image, _, cache = caudate_slice
    same = litemedsam.embed_changed(cache, image.copy())
    assert same.pass_share == 0.0
    features_match(litemedsam, image, same)
    boxes = [(60, 60, 80, 80), (70, 90, 90, 110)]
    images = [occluded(image, b, 1.0) for b in boxes]
    embeddings = litemedsam.embed_changed_batch(cache, images, boxes)
    reference = litemedsam.embed_batch(images)
    for e, r in zip(embeddings, reference):
        assert e.pass_share < 1.0
        features_match(litemedsam, None, e, r.features)


def test_a_cache_written_to_disk_reads_back_to_the_same_passes(litemedsam, caudate_slice, tmp_path):
    """The volume pipeline keeps older slices' caches in files for the Dice drop after scaling
    (xaiseg.kept_caches): read back, a changed pass gives exactly the in-memory cache's features."""
    image, _, cache = caudate_slice
    litemedsam.save_cache(cache, tmp_path / "cache.pt")
    back = litemedsam.load_cache(tmp_path / "cache.pt")
    assert back.owner == cache.owner and back.nbytes == cache.nbytes
    box = (60, 60, 80, 80)
    perturbed = occluded(image, box)
    mine, theirs = litemedsam.embed_changed(back, perturbed, box), litemedsam.embed_changed(cache, perturbed, box)
    assert 0.0 < mine.pass_share == theirs.pass_share < 1.0
    assert torch.equal(mine.features, theirs.features)


def test_downscaled_slice(litemedsam, caudate_slice):
    """A slice larger than the grid (340 x 300) is area-resized down: a change spreads differently."""
    import cv2

    plane = cv2.resize(caudate_slice[0], (300, 340), interpolation=cv2.INTER_LINEAR)
    reused_pass_matches(litemedsam, litemedsam.embed_cache(plane), plane, (317, 150, 340, 190), 1.0)  # bottom border


def test_bad_changed_box_and_foreign_cache_are_refused(litemedsam, caudate_slice):
    image, _, cache = caudate_slice
    perturbed = occluded(image, (100, 100, 110, 110), 1.0)
    with pytest.raises(InputError, match="outside its changed box"):
        litemedsam.embed_changed(cache, perturbed, (0, 0, 10, 10))
    with pytest.raises(InputError, match="does not match the cached slice's shape"):
        litemedsam.embed_changed(cache, perturbed[:-1])
    other = copy.copy(litemedsam)
    other.weights_sha256 = "other weights"
    with pytest.raises(InputError, match="another segmenter or weights"):
        other.embed_changed(cache, perturbed)


def test_maps_with_reuse_equal_maps_without(litemedsam, caudate_slice):
    image, prompt, cache = caudate_slice
    full = without_reuse(litemedsam)
    x0, y0, x1, y1 = (int(v) for v in prompt.box)
    roi = np.zeros(image.shape, bool)
    roi[y0:y1 + 1, x0:x1 + 1] = True
    for method, settings in (("occlusion", dict(patch=32, stride=32)),
                             ("rise", dict(n_masks=3, early_stop=False, check_every=3))):
        maps = []
        for segmenter in (litemedsam, full):
            ex = make_explainer(method, segmenter, metric_steps=0, noise_passes=0, **settings)
            # both runs start from the slice's one cached pass (its embedding; the activations if reused)
            maps.append(ex.explain(image, prompt, roi=roi, measure=False, embedding=cache.embedding,
                                   reuse_cache=cache if segmenter is litemedsam else None))
        with_reuse, without = maps
        assert with_reuse.n_evaluations == without.n_evaluations > 0
        reuse = with_reuse.record["reuse"]
        assert reuse["reused_passes"] == with_reuse.n_evaluations and reuse["cache_passes"] == 0
        assert without.record["reuse"]["reused_passes"] == 0
        assert np.abs(without.raw).max() > 0  # the perturbations moved the score
        assert np.allclose(with_reuse.raw, without.raw, atol=1e-6), method


def test_segmenter_without_reuse_falls_back_to_full_passes():
    """A plain torch model (intensity > 0.5 is the mask) has no reuse: the engine makes full passes,
    with the same scores as encoding each perturbed image directly."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from toys import ramp

    from xaiseg.models.torch_model import TorchSegmenter

    seg = TorchSegmenter(ramp(), class_index=0)
    assert not seg.supports_reuse
    image = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (24, 1))
    cache = seg.embed_cache(image)
    perturbed = occluded(image, (4, 20, 12, 28), 0.0)
    assert np.array_equal(seg.embed_changed(cache, perturbed, (4, 20, 12, 28)).features, seg.embed(perturbed).features)
    roi = np.ones(image.shape, bool)
    engine = PerturbationEngine(seg, image, SlicePrompt((0, 0, 31, 23)), roi)
    keeps = [np.ones(image.shape, np.float32) for _ in range(3)]
    for i, k in enumerate(keeps):
        k[:, 16 + 4 * i:20 + 4 * i] = 0.0
    scores = engine.scores(keeps)
    direct = [engine.score_logits(seg.decode(seg.embed(engine.perturb(k)), engine.prompt)) for k in keeps]
    assert np.array_equal(scores, direct)
    # removing 4 of the 16 mask columns leaves 12: Dice 2 * 12 / (12 + 16)
    assert scores[0] == pytest.approx(24 / 28)
    assert engine.reuse_record()["reused_passes"] == 0 and engine.reuse_record()["full_passes"] == 3
