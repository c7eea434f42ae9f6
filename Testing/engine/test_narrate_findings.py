"""findings.json from a real run: schema, numbers recomputed independently, labels, template text."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from test_narrate_runs import DICOM_NAME, MNI_NAME, copy_run, dicom_run, mni_run
from xaiseg.errors import FileFormatError, GeometryError, InputError
from xaiseg.io import Geometry
from xaiseg.narrate import ReportOptions, build_findings, build_report, check_text, validate
from xaiseg.narrate.checker import findings_numbers, unsupported
from xaiseg.narrate.labels import harvard_oxford, load_labelmap, read_name_table
from xaiseg.narrate.template import render_text


def _arr(path):
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), Geometry.of(img)


@pytest.fixture(scope="module")
def ho_findings():
    run = mni_run()
    mask, geom = _arr(run / f"{MNI_NAME}_mask.nrrd")
    labels = harvard_oxford(geom)
    findings = build_findings(run, labels=labels)
    return run, findings


def test_findings_from_a_real_run_validate_and_match_the_files(ho_findings):
    run, f = ho_findings
    validate(f)  # the schema shipped in the package
    mask, geom = _arr(run / f"{MNI_NAME}_mask.nrrd")
    m = mask > 0
    # volume in mL from the spacing, slice range, bounding box in RAS from the geometry
    assert f["mask"]["voxels"] == int(m.sum()) > 50
    assert f["mask"]["volume_ml"] == pytest.approx(m.sum() * np.prod(geom.spacing) / 1000, abs=1e-3)
    k = int(np.nonzero(m.any(axis=(1, 2)))[0][0])
    assert f["mask"]["slices"] == {"first": k, "last": k, "count": 1}
    kji = np.argwhere(m)
    ras = geom.ijk_to_ras_points(kji[:, ::-1])
    assert f["mask"]["bbox_ras_mm"]["min"] == pytest.approx(ras.min(axis=0).round(1).tolist())
    assert f["mask"]["bbox_ras_mm"]["max"] == pytest.approx(ras.max(axis=0).round(1).tolist())
    # MNI152 is LAS on disk: the left caudate has negative x (left) in RAS
    assert f["mask"]["bbox_ras_mm"]["max"][0] < 0
    # saliency mass inside the mask and the ROI, recomputed from the files
    sal, _ = _arr(run / f"{MNI_NAME}_occlusion_saliency.nrrd")
    roi, _ = _arr(run / f"{MNI_NAME}_roi.nrrd")
    mass = f["methods"]["occlusion"]["saliency_mass"]
    assert mass["in_mask"] == pytest.approx(sal[m].sum() / sal.sum(), abs=1e-3)
    assert mass["in_roi"] == pytest.approx(sal[roi > 0].sum() / sal.sum(), abs=1e-3)
    assert mass["in_mask"] + mass["outside_mask"] == pytest.approx(1.0, abs=2e-4)
    # the strongest peak is the saliency maximum, at its RAS position
    p = f["methods"]["occlusion"]["peaks"][0]
    assert p["value"] == pytest.approx(float(sal.max()), abs=1e-3)
    assert sal[tuple(p["ijk"][::-1])] == pytest.approx(sal.max())
    assert p["ras_mm"] == pytest.approx(geom.ijk_to_ras_points([p["ijk"]])[0].round(1).tolist())
    assert p["in_mask"] == bool(m[tuple(p["ijk"][::-1])])
    # metrics come through from NAME_metrics.json
    metrics = json.loads((run / f"{MNI_NAME}_metrics.json").read_text())
    summary = metrics["methods"]["occlusion"]["summary"]
    assert f["methods"]["occlusion"]["summary"]["deletion_auc"] == pytest.approx(summary["deletion_auc"], abs=1e-4)
    assert f["leading_method"]["method"] == "occlusion"
    assert f["record"]["explanation"]["model"]["name"] == "LiteMedSAM"


def test_harvard_oxford_names_the_caudate(ho_findings):
    _, f = ho_findings
    top = f["mask"]["labels"][0]
    assert top["name"] == "Left_Caudate" and top["fraction"] > 0.8, f["mask"]["labels"]
    assert f["labels"]["kind"] == "atlas"
    for c in f["methods"]["occlusion"]["clusters"]:
        assert c["labels"], "every high-saliency cluster gets its label composition"
        assert abs(sum(s["fraction"] for s in c["labels"]) - 1) < 0.35


def test_template_text_is_grounded(ho_findings):
    _, f = ho_findings
    text = render_text(f)
    occ = f["methods"]["occlusion"]
    assert MNI_NAME in text
    assert f"{f['mask']['volume_ml']:.2f} mL" in text
    assert f"deletion AUC {occ['summary']['deletion_auc']:.2f}" in text
    assert f"insertion AUC {occ['summary']['insertion_auc']:.2f}" in text
    assert f"{100 * occ['saliency_mass']['in_mask']:.0f}% of it lies inside the mask" in text
    assert "Left_Caudate" in text
    assert "Limits:" in text and "not where disease is" in text
    claims = check_text(text, f)
    assert len([c for c in claims if c.kind == "number"]) >= 8
    assert unsupported(claims) == [], [c.text for c in unsupported(claims)]
    assert len(text.split()) < 200, "a radiologist reads it in ten seconds"


def test_template_is_deterministic(ho_findings):
    _, f = ho_findings
    assert render_text(f) == render_text(json.loads(json.dumps(f)))


def test_checker_marks_what_findings_do_not_contain(ho_findings):
    _, f = ho_findings
    vol = f["mask"]["volume_ml"]
    # numbers findings do not hold: the run's figures differ in the last digits between machines,
    # so pick them from what this run's findings contain rather than fix them in the test
    values = findings_numbers(f)
    absent = [x / 10 for x in range(11, 1000) if all(abs(v - x / 10) > 0.051 for v in values)]
    absent_pct = [x / 10 for x in range(501, 1000) if all(abs(100 * v - x / 10) > 0.051 for v in values)]
    assert absent and absent_pct, "findings hold nearly every one-decimal number"
    num, pct = f"{absent[0]:.1f}", f"{absent_pct[-1]:.1f}%"
    text = (f"The left caudate measures {vol:.2f} mL. The right caudate and the liver are {num} mL; "
            f"{100 * f['methods']['occlusion']['saliency_mass']['in_mask']:.0f}% lies inside, {pct} outside.")
    claims = {c.text: c.supported for c in check_text(text, f)}
    assert claims["left caudate"] is True
    assert claims[f"{vol:.2f}"] is True
    assert claims["right caudate"] is False
    assert claims["liver"] is False
    assert claims[num] is False
    assert claims[pct] is False
    assert any(t.endswith("%") and ok for t, ok in claims.items())


def test_schema_rejects_broken_findings(ho_findings):
    _, f = ho_findings
    broken = json.loads(json.dumps(f))
    del broken["mask"]["volume_ml"]
    with pytest.raises(InputError, match="mask.*volume_ml"):
        validate(broken)
    broken = json.loads(json.dumps(f))
    broken["methods"]["occlusion"]["saliency_mass"]["in_mask"] = 1.7
    with pytest.raises(InputError, match="methods/occlusion/saliency_mass/in_mask"):
        validate(broken)


def test_user_label_map_with_csv_names(tmp_path):
    """A label volume on another grid plus a CSV name table (TotalSegmentator / Slicer export style)."""
    from xaiseg.sample_data import load_mni_atlas

    atlas = load_mni_atlas(("Left_Caudate", "Right_Caudate", "Left_Putamen"))
    img = atlas.image.to_sitk(atlas.labels.array)
    coarse = sitk.Resample(img, [91, 109, 91], sitk.Transform(), sitk.sitkNearestNeighbor, img.GetOrigin(),
                           [2.0, 2.0, 2.0], img.GetDirection(), 0, img.GetPixelID())
    sitk.WriteImage(coarse, str(tmp_path / "labels.nii.gz"))
    with open(tmp_path / "names.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label_value", "name"])
        for name, value in atlas.label_values.items():
            w.writerow([value, name.lower().replace("_", " ")])
    run = copy_run(mni_run(), tmp_path / "run")
    paths = build_report(run, ReportOptions(labels=str(tmp_path / "labels.nii.gz"),
                                            label_names=str(tmp_path / "names.csv")))
    f = json.loads(paths["findings"].read_text())
    assert f["labels"]["kind"] == "labelmap"
    assert f["mask"]["labels"][0]["name"] == "left caudate" and f["mask"]["labels"][0]["fraction"] > 0.7
    report = json.loads(paths["report_json"].read_text())
    assert "left caudate" in report["narrative"]["text"]


def test_slicer_segmentation_names_and_name_tables(tmp_path):
    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1:3, 1:4, 1:5] = 3
    arr[0, 0, 0] = 7
    img = sitk.GetImageFromArray(arr)
    for key, value in {"Segment0_Name": "liver", "Segment0_LabelValue": "3", "Segment0_Layer": "0",
                       "Segment1_Name": "spleen", "Segment1_LabelValue": "7", "Segment1_Layer": "0"}.items():
        img.SetMetaData(key, value)
    path = tmp_path / "organs.seg.nrrd"
    sitk.WriteImage(img, str(path))
    lm = load_labelmap(path)
    assert lm.kind == "segmentation" and lm.names == {3: "liver", 7: "spleen"}
    assert lm.at((1, 1, 1)) == "liver" and lm.at((0, 0, 0)) == "spleen" and lm.at((3, 4, 5)) is None
    assert lm.nearest((3, 4, 5), radius_mm=5.0) == ("liver", pytest.approx(np.sqrt(3.0)))
    # colour table and JSON name tables
    (tmp_path / "ct.txt").write_text("# Slicer colour table\n0 Background 0 0 0 0\n3 liver 200 0 0 255\n")
    assert read_name_table(tmp_path / "ct.txt") == {3: "liver"}
    (tmp_path / "n.json").write_text('{"1": "spleen", "2": "kidney_right"}')
    assert read_name_table(tmp_path / "n.json") == {1: "spleen", 2: "kidney_right"}
    (tmp_path / "bad.csv").write_text("value,name\nthree,liver\n")
    with pytest.raises(FileFormatError, match="'three' is not an integer"):
        read_name_table(tmp_path / "bad.csv")
    sitk.WriteImage(img, str(tmp_path / "plain.nrrd"))
    with pytest.raises(InputError, match="--label-names"):
        load_labelmap(tmp_path / "plain.nrrd")


def test_atlas_refuses_a_volume_outside_mni_space():
    from pydicom.data import get_testdata_file

    from xaiseg.io import read_image

    geom = Geometry.of(read_image(get_testdata_file("CT_small.dcm")))
    with pytest.raises(GeometryError, match="MNI152"):
        harvard_oxford(geom)


def test_segmentation_only_run(tmp_path):
    """The mask and run record of a run that was not explained still give valid findings and text."""
    run = tmp_path / "seg"
    run.mkdir()
    for suffix in ("_mask.nrrd", "_run.json"):
        (run / f"{DICOM_NAME}{suffix}").write_bytes((dicom_run() / f"{DICOM_NAME}{suffix}").read_bytes())
    f = build_findings(run)
    validate(f)
    assert f["methods"] == {} and f["run"]["explained"] is False and f["mask"]["voxels"] > 0
    text = render_text(f)
    assert "not explained" in text and DICOM_NAME in text
    assert unsupported(check_text(text, f)) == []


def test_bad_run_directories_name_the_problem(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        build_findings(tmp_path / "nope")
    with pytest.raises(FileFormatError, match=r"no \*_run.json"):
        build_findings(tmp_path)
    two = tmp_path / "two"
    copy_run(mni_run(), two)
    (two / "other_run.json").write_text("{}")
    (two / "other_metrics.json").write_text("{}")
    with pytest.raises(InputError, match="several runs.*--name"):
        build_findings(two)
    assert re.search("left_caudate", build_findings(two, name=MNI_NAME)["structure"]["name"])


def test_two_methods_lead_by_faithfulness_and_stay_grounded(tmp_path):
    """Occlusion and RISE on the DICOM slice (box toy): the leading method is the one with the larger
    insertion minus deletion AUC, and the template's 'other methods' sentence is grounded too."""
    from pydicom.data import get_testdata_file
    from toys import BoxToy

    from xaiseg.explain import make_explainer
    from xaiseg.io import read_volume
    from xaiseg.pipeline import Session
    from xaiseg.roi import RoiConfig
    from xaiseg.volume import BoxPrompt

    session = Session(read_volume(get_testdata_file("CT_small.dcm")), BoxToy(gate=True))
    seg = session.segment(BoxPrompt((0, 40, 40), (0, 90, 90)), name="two")
    run = session.explain(seg, [make_explainer("occlusion", seed=0, patch=16, stride=8, metric_steps=4),
                                make_explainer("rise", seed=0, n_masks=64, cells=4, early_stop=False,
                                               metric_steps=4)], roi=RoiConfig("box"))
    run.write(tmp_path)
    f = build_findings(tmp_path)
    validate(f)
    assert set(f["methods"]) == {"occlusion", "rise"}
    gap = {m: f["methods"][m]["summary"]["insertion_auc"] - f["methods"][m]["summary"]["deletion_auc"]
           for m in f["methods"]}
    assert f["leading_method"] == {"method": max(gap, key=gap.get),
                                   "basis": "largest insertion AUC minus deletion AUC"}
    text = render_text(f)
    assert "Other methods:" in text
    assert unsupported(check_text(text, f)) == [], [c.text for c in unsupported(check_text(text, f))]


def test_template_says_when_a_rise_map_is_mostly_noise(ho_findings):
    """RISE records its map's split-half reliability; the text gives it, and below 0.7 says that the
    map's detail is the draw's noise.  Every figure stays grounded in findings."""
    _, f = ho_findings
    for rel, noisy in ((0.42, True), (0.93, False)):
        g = json.loads(json.dumps(f))
        g["methods"]["occlusion"]["summary"]["reliability"] = rel
        text = render_text(g)
        assert f"split-half reliability of {rel:.2f}" in text
        assert ("draw's noise" in text) is noisy
        assert unsupported(check_text(text, g)) == [], [c.text for c in unsupported(check_text(text, g))]
    assert "split-half" not in render_text(f)  # occlusion records none


def test_template_names_the_slices_a_mark_flags(ho_findings):
    """A map that beats the trivial maps on most slices but not all names the others; a reliable
    RISE map names its slices of low reliability.  The slices come from the summary's lists, which
    the run fills from the same rule as the Slicer panel's trust line."""
    _, f = ho_findings
    summary = f["methods"]["occlusion"]["summary"]
    assert {"prompt_driven_slices", "no_evidence_slices", "below_trivial_slices", "low_reliability_slices",
            "survives_randomisation_slices"} <= set(summary)
    g = json.loads(json.dumps(f))
    s = g["methods"]["occlusion"]["summary"]
    s.update(beats_trivial_deletion=0.6, below_trivial_slices=[81], reliability=0.83,
             low_reliability_slices=[80, 82], prompt_driven_slices=[79, 83], survives_randomisation_slices=[84])
    text = render_text(g)
    # the bar it quotes is in the findings (prompt_driven_at), so the grounding check finds it
    assert s["prompt_driven_at"] == 0.75
    assert ("On slices 79, 83 the prompt and the tissue around the ROI draw most of the mask: with the image in the "
            "ROI removed the score keeps about 75% of its value or more") in text
    assert "On slice 81 a trivial map removes the mask at least as fast as the" in text
    assert "On slices 80, 82 the two halves agree far less" in text
    assert s["survives_randomisation_at"] == 0.3
    assert ("On slice 84 the Occlusion map keeps a Spearman of 0.30 or more with the map of a model whose weights "
            "were partly or wholly re-drawn (the sanity or cascade check): there it follows the image more than "
            "those weights.") in text
    # the cascade's sentence reads its figure as rounded, as the mark does
    s.update(cascade_final_similarity=0.296)
    assert "is 0.30 - it depends on the image more than on the model." in render_text(g)
    # drawn several times, the figure says it is their mean, the count grounded in the findings
    s.update(cascade_draws=5.0)
    drawn = render_text(g)
    assert "is 0.30 (the mean of 5 draws of random weights) - it depends on the image" in drawn
    assert unsupported(check_text(drawn, g)) == [], [c.text for c in unsupported(check_text(drawn, g))]
    del s["cascade_draws"]
    assert unsupported(check_text(text, g)) == [], [c.text for c in unsupported(check_text(text, g))]
    # a map that loses on most slices says so once; a noisy map's mean says so once
    s.update(beats_trivial_deletion=0.25, reliability=0.5)
    text = render_text(g)
    assert "a trivial map removes the mask" not in text and "the two halves agree far less" not in text
    assert "does not beat the trivial maps" in text and "draw's noise" in text


def test_model_context_withholds_paths_and_dates(ho_findings):
    """What a model sees: the figures and names, not the checkpoint path, input path or timestamps."""
    from xaiseg.narrate import model_context

    _, f = ho_findings
    assert f["structure"]["model"]["checkpoint"].startswith("/")  # LiteMedSAM records where its weights are
    ctx = model_context(f)
    text = json.dumps(ctx)
    assert "checkpoint" not in text and "created" not in text and "record" not in ctx
    assert str(mni_run()) not in text and '"/' not in text and "site-packages" not in text
    assert ctx["mask"]["volume_ml"] == f["mask"]["volume_ml"]
    assert ctx["methods"]["occlusion"]["peaks"] == f["methods"]["occlusion"]["peaks"]
    assert "per_slice" not in ctx["methods"]["occlusion"]
