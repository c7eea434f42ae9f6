"""SHAP-to-SAM prompts (seed 000): a classifier's SHAP map becomes point prompts for MedSAM.

The toy classifier's probability rises with the brightness of square A and falls with that of
square B, so SHAP must put its positive evidence (and the positive points) in A and its negative
evidence in B; the real path runs MONAI's DenseNet121 with random weights and LiteMedSAM with its
shipped weights on an MNI152 slice."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from xaiseg.errors import InputError
from xaiseg.metrics import peak
from xaiseg.progress import CancelToken, Cancelled, Progress
from xaiseg.prompts import Classifier, load_classifier, points_from_map, shap_map, stability_score

SIZE = 48
A = (slice(8, 24), slice(26, 42))  # rows, columns: evidence for the class
B = (slice(30, 42), slice(6, 18))  # evidence against it


class TwoSquares(torch.nn.Module):
    """Toy classifier: logit of class 1 = 20 * (mean of square A - mean of square B)."""

    def forward(self, x):
        a = x[:, 0, A[0], A[1]].mean(dim=(1, 2))
        b = x[:, 0, B[0], B[1]].mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(a), 20.0 * (a - b)], dim=1)


def toy_image():
    img = 0.2 + 0.1 * np.random.default_rng(0).random((SIZE, SIZE)).astype(np.float32)
    img[A] += 0.5
    img[B] += 0.5
    return img


def region(s):
    m = np.zeros((SIZE, SIZE), bool)
    m[s] = True
    return m


def test_shap_points_lie_in_the_evidence_and_the_negative_ones_in_the_counter_evidence():
    clf = Classifier(TwoSquares(), class_index=1, name="two-squares toy")
    values = shap_map(clf, toy_image(), budget=400, blur=8, batch_size=64)
    assert region(A)[peak(values)] and region(B)[peak(-values)]  # peak: the centre of a plateau
    assert values[region(A)].sum() > 0 > values[region(B)].sum()
    points, labels = points_from_map(values, k=3, min_distance=5, negative=2)
    assert labels == [1, 1, 1, 0, 0]
    for (x, y), lab in zip(points, labels):
        assert region(A if lab == 1 else B)[int(y), int(x)], (x, y, lab)
    for i, (x1, y1) in enumerate(points):
        for x2, y2 in points[i + 1:]:
            assert (x1 - x2) ** 2 + (y1 - y2) ** 2 >= 25
    assert clf.evaluations <= 400 + 2  # within the budget (shap adds the unmasked and the fully masked image)
    # the partition explainer is deterministic: the same slice gives the same map
    assert np.array_equal(values, shap_map(clf, toy_image(), budget=400, blur=8, batch_size=64))


def test_points_from_a_map_with_known_peaks():
    v = np.zeros((40, 40))
    v[10, 10], v[11, 11], v[30, 25], v[20, 35] = 5.0, 4.0, 3.0, -2.0
    points, labels = points_from_map(v, k=3, min_distance=5, negative=1, smooth=0)
    # (11, 11) is too close to (10, 10); only two positive places remain
    assert points == [(10.0, 10.0), (25.0, 30.0), (35.0, 20.0)] and labels == [1, 1, 0]


def test_stability_score_of_sharp_and_soft_logits():
    sharp = np.where(region(A), 10.0, -10.0)
    soft = np.where(region(A), 0.5, -0.5)
    assert stability_score(sharp) == 1.0 and stability_score(soft) == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: points_from_map(np.ones((8, 8)), k=0), "positive points 0"),
    (lambda: points_from_map(np.ones((8, 8)), min_distance=-1), "minimum distance -1"),
    (lambda: points_from_map(-np.ones((8, 8))), "no positive value"),
    (lambda: shap_map(Classifier(TwoSquares()), toy_image(), budget=4), "budget 4"),
    (lambda: shap_map(Classifier(TwoSquares()), np.ones((SIZE, SIZE), np.float32)), "constant"),
    (lambda: load_classifier("monai-densenet121", classes=2, class_index=5), "class index 5"),
    (lambda: load_classifier("/nonexistent/model.pt"), "neither 'monai-densenet121' nor"),
])
def test_bad_input_names_the_value(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_the_same_seed_gives_the_same_random_densenet():
    a, b = load_classifier("monai-densenet121", seed=3), load_classifier("monai-densenet121", seed=3)
    c = load_classifier("monai-densenet121", seed=4)
    img = toy_image()[None]
    assert a(img) == pytest.approx(b(img)) and a(img) != pytest.approx(c(img))


def test_cancel_stops_shap():
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        shap_map(Classifier(TwoSquares()), toy_image(), budget=64, progress=Progress(token))


@pytest.fixture(scope="module")
def mni_files(tmp_path_factory):
    from xaiseg.io import write_volume
    from xaiseg.sample_data import load_mni_atlas

    sample = load_mni_atlas(["Left_Caudate"])
    folder = tmp_path_factory.mktemp("mni")
    src = write_volume(sample.image, sample.image.array, folder / "mni.nii.gz")
    lab = write_volume(sample.image, sample.mask("Left_Caudate").astype(np.uint8), folder / "caudate.nii.gz")
    return sample, src, lab


def read_markups_with_slicer(path):
    """The control points as Slicer's markups JSON storage node reads them (slicer-core, in a
    separate process as in test_explain_deps), or None when slicer-core is not installed."""
    code = textwrap.dedent(f"""
        import json, sys
        try:
            import slicer
            node, storage = slicer.vtkMRMLMarkupsFiducialNode(), slicer.vtkMRMLMarkupsJsonStorageNode()
        except (ImportError, AttributeError):
            print(json.dumps(None)); sys.exit(0)
        scene = slicer.vtkMRMLScene()
        scene.AddNode(node); scene.AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName({str(path)!r})
        assert storage.ReadData(node) == 1, "Slicer could not read the markups file"
        points = []
        for n in range(node.GetNumberOfControlPoints()):
            ras = [0.0, 0.0, 0.0]
            node.GetNthControlPointPosition(n, ras)
            points.append({{"label": node.GetNthControlPointLabel(n), "ras": ras,
                           "selected": bool(node.GetNthControlPointSelected(n))}})
        print(json.dumps(points))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_monai_densenet121_with_random_weights_through_shap_to_sam_on_mni152(mni_files, tmp_path, litemedsam,
                                                                            monkeypatch):
    from xaiseg.cli import main
    from xaiseg.io import read_volume

    sample, src, lab = mni_files
    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: litemedsam)
    out = tmp_path / "out"
    rc = main(["prompt-from-shap", str(src), "--classifier", "monai-densenet121", "--input-size", "64",
               "--budget", "64", "--points", "3", "--min-distance", "8", "--negative", "1", "--truth", str(lab),
               "--name", "lc", "-q", "-o", str(out)])
    assert rc == 0
    summary = json.loads((out / "lc_shap_prompts.json").read_text())
    truth = sample.mask("Left_Caudate")
    k = summary["slice"]
    assert k == int(np.argmax(truth.sum(axis=(1, 2))))  # the truth's largest axial slice
    assert "random init (seed 0" in summary["record"]["classifier"]["weights"]
    assert 0.0 <= summary["probability"] <= 1.0
    m = summary["metrics"]
    assert 0.0 <= m["iou"] <= m["dice"] <= 1.0 and 8 <= m["classifier_evaluations"] <= 64 + 3
    assert m["encoder_passes"] == 0 and m["decoder_passes"] == len(summary["candidates"])
    assert 0 <= summary["chosen"] < len(summary["candidates"])
    rec = summary["record"]  # the run record: segmenter, classifier with its seed, settings, versions
    assert rec["seed"] == 0 and rec["classifier"]["seed"] == 0 and rec["versions"]["shap"] and rec["versions"]["monai"]
    assert rec["model"]["weights_sha256"] == litemedsam.describe()["weights_sha256"] and rec["preprocessing"]
    assert rec["evaluations"]["classifier_evaluations"] == m["classifier_evaluations"]
    assert rec["settings"]["budget"] == 64 and rec["prompt"]["labels"] == [p["label"] for p in summary["points"]]
    # the markups file: Slicer's schema, LPS millimetres that map back onto the chosen voxels
    doc = json.loads((out / "lc_shap_points.mrk.json").read_text())
    assert doc["@schema"].endswith("markups-schema-v1.0.3.json#")
    mk = doc["markups"][0]
    assert mk["type"] == "Fiducial" and mk["coordinateSystem"] == "LPS"
    geo = sample.image.geometry
    import SimpleITK as sitk

    reader_lps = sitk.ReadImage(str(src))
    for cp, pt in zip(mk["controlPoints"], summary["points"]):
        ijk = np.linalg.solve(geo.ijk_to_lps, np.r_[cp["position"], 1.0])[:3]
        assert np.allclose(ijk[::-1], pt["kji"], atol=1e-3)
        assert cp["label"].startswith("lc-pos-" if pt["label"] == 1 else "lc-neg-")
        # and SimpleITK, reading the file we wrote, puts the voxel at the same LPS point
        i, j, kk = (float(v) for v in pt["kji"][::-1])
        assert np.allclose(cp["position"], reader_lps.TransformContinuousIndexToPhysicalPoint((i, j, kk)), atol=1e-3)
    # Slicer's own markups reader (slicer-core) loads it: same points in RAS, positives selected
    loaded = read_markups_with_slicer(out / "lc_shap_points.mrk.json")
    if loaded is not None:
        assert [p["label"] for p in loaded] == [cp["label"] for cp in mk["controlPoints"]]
        for p, cp, pt in zip(loaded, mk["controlPoints"], summary["points"]):
            lps = np.asarray(cp["position"])
            assert np.allclose(p["ras"], [-lps[0], -lps[1], lps[2]], atol=1e-3) and p["selected"] == (pt["label"] == 1)
    # the mask and the SHAP map: the input's geometry, only the explained slice filled
    mask = read_volume(out / "lc_shap_mask.nrrd")
    assert mask.array.shape == sample.image.shape and np.allclose(mask.geometry.origin, geo.origin)
    assert not np.delete(mask.array, k, axis=0).any()
    shap = read_volume(out / "lc_shap_map.nrrd").array
    assert np.abs(shap[k]).max() > 0 and not np.delete(shap, k, axis=0).any()
    assert (out / f"lc_shap_k{k:03d}.png").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_an_interrupted_run_writes_nothing(mni_files, tmp_path, monkeypatch, litemedsam):
    from xaiseg.cli import main

    sample, src, lab = mni_files
    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: litemedsam)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("xaiseg.prompts.shap_prompts", interrupted)
    out = tmp_path / "out"
    assert main(["prompt-from-shap", str(src), "--classifier", "monai-densenet121", "-q", "-o", str(out)]) == 130
    assert not out.exists() or not any(out.iterdir())
    # bad input is one line and exit status 2
    assert main(["prompt-from-shap", str(src), "--classifier", "monai-densenet121", "--slice", "999", "-q",
                 "-o", str(out)]) == 2


class CaudateEvidence(torch.nn.Module):
    """Known-answer classifier: its logit is the mean brightness inside the caudate's outline on
    the (resized) slice, so SHAP must find the caudate and the points must lead MedSAM there."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("w", torch.from_numpy(mask.astype(np.float32)) / float(mask.sum()))

    def forward(self, x):
        s = (x[:, 0] * self.w).sum(dim=(1, 2))
        return torch.stack([torch.zeros_like(s), 12.0 * (s - 0.4)], dim=1)


def test_a_torchscript_classifier_that_reads_the_caudate_leads_litemedsam_to_it(mni_files, tmp_path, litemedsam,
                                                                                monkeypatch):
    import cv2

    from xaiseg.cli import main

    sample, src, lab = mni_files
    truth = sample.mask("Left_Caudate")
    k = int(np.argmax(truth.sum(axis=(1, 2))))
    outline = cv2.resize(truth[k].astype(np.float32), (96, 96), interpolation=cv2.INTER_AREA) > 0.5
    scripted = tmp_path / "caudate_evidence.pt"
    torch.jit.script(CaudateEvidence(outline)).save(str(scripted))
    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: litemedsam)
    out = tmp_path / "out"
    assert main(["prompt-from-shap", str(src), "--classifier", str(scripted), "--truth", str(lab), "--name", "ce",
                 "-q", "-o", str(out)]) == 0
    summary = json.loads((out / "ce_shap_prompts.json").read_text())
    assert summary["slice"] == k and summary["record"]["classifier"]["name"] == "torchscript:caudate_evidence.pt"
    m = summary["metrics"]
    # measured: 2 of 3 points inside the caudate, Dice 0.68 of the kept mask (3 points, stability 0.86)
    assert m["positive_points_in_truth"] >= 2 and m["dice"] >= 0.5, m
