"""LiteMedSAM with its shipped weights on real data: the MNI152 1 mm template, scored against the
Harvard-Oxford atlas (probability > 50 %).  Embeddings are cached in one session, so each axial
slice is encoded once for all structures and both prompting modes."""
import numpy as np
import pytest

from xaiseg.demo import atlas_box, dice
from xaiseg.volume import LabelBoxPrompt

pytest.importorskip("nibabel")

# Floors: measured values (docs/benchmarks/segmentation.md) minus a small margin.  The figures
# first quoted for this model (caudate 0.84, thalamus 0.79, putamen 0.73) were taken with the
# atlas volumes shifted by one (they match our thalamus, lateral ventricle and caudate), which
# test_atlas_labels_are_anatomically_placed guards against.
TIGHT_BOX_FLOOR = {"Left_Caudate": 0.70, "Left_Thalamus": 0.80, "Left_Putamen": 0.75}
PROPAGATED_FLOOR = {"Left_Caudate": 0.55, "Left_Thalamus": 0.75}


@pytest.fixture(scope="module")
def atlas():
    from xaiseg.sample_data import load_mni_atlas

    return load_mni_atlas(("Left_Caudate", "Left_Thalamus", "Left_Putamen"))


@pytest.fixture(scope="module")
def session(atlas, litemedsam):
    from xaiseg.pipeline import Session

    return Session(atlas.image, litemedsam)


# Centroids in MNI RAS mm of the >50 % Harvard-Oxford structures (textbook positions, +-6 mm).
EXPECTED_CENTROIDS = {"Left_Caudate": (-13, 10, 10), "Left_Thalamus": (-10, -19, 7), "Left_Putamen": (-25, 1, 1)}


def test_atlas_labels_are_anatomically_placed(atlas):
    geometry = atlas.labels.geometry
    for name, expected in EXPECTED_CENTROIDS.items():
        kji = np.argwhere(atlas.mask(name)).mean(axis=0)
        ras = geometry.ijk_to_ras_points(kji[::-1])[0]
        assert np.allclose(ras, expected, atol=6), f"{name} centroid at {ras.round(1)}, expected near {expected}"
    assert 2500 < atlas.mask("Left_Caudate").sum() < 5000  # about 3.6 mL


def test_shipped_weights_are_verified(litemedsam):
    from xaiseg.models.litemedsam import LITEMEDSAM_SHA256

    assert litemedsam.weights_sha256 == LITEMEDSAM_SHA256


@pytest.mark.parametrize("structure", sorted(TIGHT_BOX_FLOOR))
def test_tight_box_per_slice(session, atlas, structure):
    truth = atlas.mask(structure)
    result = session.segment(LabelBoxPrompt(atlas.labels.array, atlas.label_values[structure]), name=structure)
    score = dice(result.mask, truth)
    assert score >= TIGHT_BOX_FLOOR[structure], f"{structure}: Dice {score:.3f}"
    # every slice that holds the structure was prompted, no other slice was touched
    k_truth = set(np.where(truth.any(axis=(1, 2)))[0])
    assert {s.index for s in result.slices} == k_truth
    assert not result.mask[sorted(set(range(truth.shape[0])) - k_truth)].any()


@pytest.mark.parametrize("structure", sorted(PROPAGATED_FLOOR))
def test_one_3d_box_propagated(session, atlas, structure):
    truth = atlas.mask(structure)
    box = atlas_box(truth)
    result = session.segment(box, name=structure)
    score = dice(result.mask, truth)
    assert score >= PROPAGATED_FLOOR[structure], f"{structure}: Dice {score:.3f}"
    ks = [s.index for s in result.slices]
    assert min(ks) >= box.lo[0] and max(ks) <= box.hi[0]
    # the embedding cache made propagation cheap: the tight-box test already embedded these slices
    assert result.record["evaluations"]["decoder_passes"] == len(ks)


def test_random_weights_fail(atlas):
    from xaiseg.models.litemedsam import LiteMedSAM
    from xaiseg.pipeline import Session

    structure = "Left_Caudate"
    truth = atlas.mask(structure)
    # a third of the slices keeps this check short; random weights fail on every slice
    labels = np.where(np.arange(truth.shape[0])[:, None, None] % 3 == 0, atlas.labels.array, 0)
    random_session = Session(atlas.image, LiteMedSAM(weights="random", seed=0))
    result = random_session.segment(LabelBoxPrompt(labels, atlas.label_values[structure]), name="random")
    sub = truth & (labels > 0)
    assert dice(result.mask, sub) < 0.2
