"""The deletion order found by search (:mod:`xaiseg.explain.search`) and the bound benchmark's
tables (:mod:`xaiseg.bench_bound`): on the known-answer toy the search must remove the evidence
square first and beat every trivial map, the same input must give the same order, and the
benchmark's summary must count what its rows say.  The polish (local search from a given order) must
never end above where it started, must report the AUC the curves measure for its order, and on the
toy must lift a trivial map's order to one that removes the evidence square first."""
import json

import numpy as np
import pytest

from toys import SquareEvidence, evidence_image
from xaiseg import bench_bound
from xaiseg.errors import InputError
from xaiseg.explain import baselines as trivial
from xaiseg.explain.base import PerturbationEngine
from xaiseg.explain.measure import faithfulness
from xaiseg.explain.search import backward_search, polish, roi_blocks
from xaiseg.models.base import SlicePrompt

PROMPT = SlicePrompt(box=(36, 36, 55, 55))


def engine(toy=None):
    # the toy reads the square's mean brightness: inpainting part of the square from the rest of it
    # keeps that mean, so the search and the curves remove with zero fill; the logit score is smooth
    return PerturbationEngine(toy or SquareEvidence(), evidence_image(), PROMPT, np.ones((64, 64), bool),
                              score="logit")


def test_search_removes_the_evidence_square_first_and_beats_the_trivial_maps():
    toy = SquareEvidence()
    e = engine(toy)
    found = backward_search(e, steps=4, blocks=16, fill="zero")
    square = toy.square_mask()
    first = found.ranking >= np.sort(found.ranking.ravel())[-64 * 64 // 4]  # what the curve removes first
    assert first.sum() == 64 * 64 // 4
    assert (first & square).sum() == square.sum(), "the first quarter removed leaves part of the square"
    auc = faithfulness(e, found.ranking, 4, fill="zero")["deletion_auc"]
    maps = trivial.trivial_maps(e.reference, PROMPT.box, 0, e.roi)
    for name, m in maps.items():
        assert auc < faithfulness(e, m, 4, fill="zero")["deletion_auc"], name
    assert found.block_px == 16


def test_search_is_deterministic_and_counts_its_passes():
    e = engine()
    before = e.evaluations
    a = backward_search(e, steps=4, blocks=16, fill="zero")
    assert a.passes == e.evaluations - before > 0
    b = backward_search(engine(), steps=4, blocks=16, fill="zero")
    np.testing.assert_array_equal(a.ranking, b.ranking)
    # every ROI pixel gets its own place in the order
    assert sorted(a.ranking.ravel()) == list(range(1, 64 * 64 + 1))


def test_search_ranks_only_the_roi():
    roi = np.zeros((64, 64), bool)
    roi[4:40, 4:40] = True
    e = PerturbationEngine(SquareEvidence(), evidence_image(), PROMPT, roi, score="logit")
    found = backward_search(e, steps=3, blocks=9, fill="zero")
    assert (found.ranking[~roi] == 0).all() and (found.ranking[roi] > 0).all()
    parts, side = roi_blocks(roi, 9)
    assert side == 12 and len(parts) == 9 and sum(len(v) for v in parts.values()) == roi.sum()


def test_search_on_a_roi_that_neither_blocks_nor_steps_divide():
    # 2421 pixels: the curve's fractions round, edge blocks are partial, and blocks are split
    # where a fraction falls inside one; the pixels the curve removes first must still be the
    # evidence square's (its 256 pixels lie in 9 blocks of 8 px, 576 pixels, under 2421 / 4)
    toy = SquareEvidence()
    roi = np.zeros((64, 64), bool)
    roi[2:51, 2:53] = True
    roi[45:51, 40:53] = False
    e = PerturbationEngine(toy, evidence_image(), PROMPT, roi, score="logit")
    found = backward_search(e, steps=4, blocks=40, fill="method")  # the engine's own fill: zero
    n = int(roi.sum())
    assert n == 2421 and found.block_px == 8
    assert sorted(found.ranking[roi]) == list(range(1, n + 1))
    first = found.ranking > n - int(round(n / 4))
    assert first.sum() == 605 and (first & toy.square_mask()).sum() == toy.square_mask().sum()


@pytest.mark.parametrize("steps, blocks", [(0, 16), (4, 0)])
def test_search_refuses_what_it_cannot_do(steps, blocks):
    with pytest.raises(InputError, match=f"steps {steps} and blocks {blocks}"):
        backward_search(engine(), steps=steps, blocks=blocks)


def test_polish_improves_a_trivial_order_to_the_evidence_square_and_reports_its_curve():
    toy = SquareEvidence()
    e = engine(toy)
    maps = trivial.trivial_maps(e.reference, PROMPT.box, 0, e.roi)
    square = toy.square_mask()
    for name, m in maps.items():
        start = faithfulness(e, m, 4, fill="zero")["deletion_auc"]
        done = polish(e, m, steps=4, blocks=16, fill="zero")
        assert done.start_auc == pytest.approx(start), name
        # the AUC it reports is the curves' own for the order it returns
        measured = faithfulness(e, done.ranking, 4, fill="zero")
        assert done.deletion_auc == pytest.approx(measured["deletion_auc"])
        np.testing.assert_allclose(done.curve, measured["deletion_curve"], atol=1e-4)
        assert done.deletion_auc < start - 0.5 and done.moves > 0 and done.passes > 0, name
        assert sorted(done.ranking.ravel()) == list(range(1, 64 * 64 + 1))
        first = done.ranking > 64 * 64 - 64 * 64 // 4  # what the curve removes first
        assert (first & square).sum() == square.sum(), name
    # the same start gives the same order
    again = polish(engine(), maps["random"], steps=4, blocks=16, fill="zero")
    np.testing.assert_array_equal(again.ranking, polish(e, maps["random"], steps=4, blocks=16, fill="zero").ranking)


def test_polish_keeps_an_order_no_move_improves_and_ranks_only_the_roi():
    roi = np.zeros((64, 64), bool)
    roi[4:40, 4:40] = True
    toy = SquareEvidence()
    e = PerturbationEngine(toy, evidence_image(), PROMPT, roi, score="logit")
    found = backward_search(e, steps=4, blocks=16, fill="zero")
    once = polish(e, found.ranking, steps=4, blocks=16, fill="zero")
    assert once.deletion_auc <= once.start_auc
    assert (once.ranking[~roi] == 0).all() and sorted(once.ranking[roi]) == list(range(1, roi.sum() + 1))
    # polishing the polished order again: no sweep keeps a move, and the order comes back as it was
    twice = polish(e, once.ranking, steps=4, blocks=16, fill="zero")
    assert twice.moves == 0 and twice.deletion_auc == pytest.approx(once.deletion_auc)
    np.testing.assert_array_equal(twice.ranking, once.ranking)
    # no sweep at all: the start, measured once
    still = polish(e, found.ranking, steps=4, blocks=16, fill="zero", sweeps=0)
    assert still.moves == 0 and still.deletion_auc == still.start_auc


@pytest.mark.parametrize("steps, blocks, sweeps, bad", [(1, 16, 1, "steps 1"), (4, 0, 1, "blocks 0"),
                                                        (4, 16, -1, "sweeps -1")])
def test_polish_refuses_what_it_cannot_do(steps, blocks, sweeps, bad):
    with pytest.raises(InputError, match=f"^polish {bad} \\(expected at least [0-2]\\)$"):
        polish(engine(), np.ones((64, 64)), steps=steps, blocks=blocks, sweeps=sweeps)
    with pytest.raises(InputError, match=r"shape \(32, 64\); expected the slice's \(64, 64\)"):
        polish(engine(), np.ones((32, 64)))


def test_polish_reports_the_inpainted_curve_of_its_order():
    # the benchmark's curves inpaint what they remove
    e = engine()
    m = trivial.trivial_maps(e.reference, PROMPT.box, 0, e.roi)["box_centre"]
    done = polish(e, m, steps=4, blocks=9, sweeps=1)
    assert done.start_auc == pytest.approx(faithfulness(e, m, 4)["deletion_auc"])
    assert done.deletion_auc == pytest.approx(faithfulness(e, done.ranking, 4)["deletion_auc"])
    assert done.deletion_auc <= done.start_auc


def _toy_session(square):
    from xaiseg.io import Geometry, Volume
    from xaiseg.pipeline import SegmentConfig, Session
    from xaiseg.volume import BoxPrompt

    arr = (np.stack([evidence_image(square=square, seed=k) for k in range(2)]) * 1000).astype(np.float32)
    volume = Volume(arr, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), arr.shape[::-1]), "toy")
    session = Session(volume, SquareEvidence(square=square), SegmentConfig(orientation="array"))
    return session, session.segment(BoxPrompt((0, 36, 36), (1, 55, 55)), name="toy")


def test_bound_row_polishes_only_where_the_search_lost_and_reports_the_curves_figure():
    # the evidence square overlaps the box: the trivial maps remove the box's middle first, and the
    # mask stays until the whole square is gone
    session, seg = _toy_session((26, 26, 46, 46))
    keep = {}
    row = bench_bound.slice_row(session, seg, 0, [1], keep=keep, polish_blocks=4)
    best = min(row["trivial"].values())
    assert row["search"] >= best  # one block: no order at all
    p = row["polished"]
    assert p["from"] == "blurred_mask" and p["moves"] > 0 and p["passes"] > 0
    assert p["deletion_auc"] == pytest.approx(p["polish_auc"]) and p["deletion_auc"] < best
    assert keep["lowest"]["name"] == "polished from the blurred mask"
    assert keep["lowest"]["deletion_auc"] == p["deletion_auc"] and len(keep["lowest"]["curve"]) == 9
    # where a search beats the trivial maps, no polish
    assert "polished" not in bench_bound.slice_row(session, seg, 0, [4], polish_blocks=4)


def test_bound_row_keeps_the_start_figure_where_polish_moved_nothing():
    # the square under the box: the blurred mask already takes it first, and no one-block move helps
    session, seg = _toy_session((36, 36, 56, 56))
    row = bench_bound.slice_row(session, seg, 0, [1], polish_blocks=16)
    p = row["polished"]
    assert p["moves"] == 0 and p["deletion_auc"] == row["trivial"][p["from"]] == min(row["trivial"].values())
    assert bench_bound._polished_cells(row).endswith("| no | ")


def _row(trivials, search, methods):
    return {"mask_px": 10, "roi_px": 80, "trivial": dict(zip(trivial.NAMES, trivials)), "search": min(search),
            "searches": {str(n): {"deletion_auc": v, "block_px": 3, "passes": 20, "curve": []}
                         for n, v in zip((4, 12), search)},
            "methods": dict(zip(("occlusion", "rise", "layers"), methods))}


def test_bound_summary_counts_slices_beating_every_trivial_map():
    result = {"machine": {"platform": "test"}, "blocks": [4, 12], "seconds": 1.0, "structures": {
        "A": {"slices": [1, 2], "rows": {"1": _row((0.3, 0.4, 0.8), (0.35, 0.25), (0.5, 0.2, None)),
                                         "2": _row((0.5, 0.6, 0.9), (0.45, 0.55), (0.4, 0.6, None))}}}}
    s = bench_bound.summary(result)
    assert s["best_trivial"] == pytest.approx(0.4)
    assert s["search"] == {"deletion_auc": pytest.approx(0.35), "beats_trivial": 1.0}
    assert s["search, 4 blocks"]["beats_trivial"] == 0.5 and s["search, 12 blocks"]["beats_trivial"] == 0.5
    assert s["occlusion"]["beats_trivial"] == 0.5 and s["rise"]["beats_trivial"] == 0.5
    assert s["layers"] == {"deletion_auc": None, "beats_trivial": None}
    text = bench_bound.markdown(result)
    assert "| A | 1 | 10 | 10 | 0.300 | 0.400 | 0.800 | 0.350 (3, 20) | 0.250 (3, 20) | yes |" in text
    assert "| search | 0.350 | 100% |" in text


def test_bound_reads_the_methods_and_checks_the_trivial_maps(tmp_path):
    result = {"blocks": [4], "structures": {"A": {"slices": [1], "rows": {"1": _row((0.3, 0.4, 0.8), (0.2,), ())}}}}
    faith = {"maps": {"A": {"methods": {"occlusion": {
        "per_slice": {"1": {"deletion_auc": 0.33}},
        "trivial": {"1": {n: {"deletion_auc": v} for n, v in zip(trivial.NAMES, (0.3, 0.4, 0.8))}}}}}}}
    row = bench_bound.with_methods(result, faith)["structures"]["A"]["rows"]["1"]
    assert row["methods"] == {"occlusion": 0.33, "rise": None, "layers": None}
    assert "method_curves" not in row  # a table that kept no curves
    faith["maps"]["A"]["methods"]["occlusion"]["per_slice"]["1"]["deletion_curve"] = [1.0, 0.5, 0.2]
    row = bench_bound.with_methods(result, faith)["structures"]["A"]["rows"]["1"]
    assert row["method_curves"] == {"occlusion": [1.0, 0.5, 0.2]}
    assert row["trivial_as_faithfulness"] is True
    faith["maps"]["A"]["methods"]["occlusion"]["trivial"]["1"]["random"]["deletion_auc"] = 0.7
    row = bench_bound.with_methods(result, faith)["structures"]["A"]["rows"]["1"]
    assert row["trivial_as_faithfulness"] is False
    assert "method_curves" not in row  # other trivial curves there: the methods' are not floored beside these
    # two runs' folders merge into one table; runs with other block counts do not
    for name, blocks in (("a", [4]), ("b", [4]), ("c", [12])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bound.json").write_text(json.dumps(dict(result, blocks=blocks, seconds=2.0,
                                                                    structures={name: result["structures"]["A"]})))
    merged = bench_bound.merge([tmp_path / "a", tmp_path / "b"])
    assert list(merged["structures"]) == ["a", "b"] and merged["seconds"] == 4.0
    with pytest.raises(SystemExit, match="--blocks"):
        bench_bound.merge([tmp_path / "a", tmp_path / "c"])


def test_a_floored_curve_earns_nothing_below_the_emptied_roi():
    # the baseline first, the whole ROI removed last: the dip to 0.2 counts as 0.5, the end
    assert bench_bound.floored_auc([1.0, 0.2, 0.5]) == pytest.approx((1.0 + 0.5) / 4 + (0.5 + 0.5) / 4)
    assert bench_bound.floored_auc([2.0, 1.5, 1.0]) == pytest.approx((1.0 + 0.75) / 4 + (0.75 + 0.5) / 4)  # scaled
    assert bench_bound.floored_auc([]) is None and bench_bound.floored_auc(None) is None


def test_the_bound_table_floors_every_stored_curve_the_trivial_maps_too():
    row = _row((0.3, 0.4, 0.8), (0.35, 0.25), (0.5, None, None))
    # the blurred mask's curve and the 4-block search's dip below their end, the 12-block search's does not
    row["trivial_curves"] = {"blurred_mask": [1.0, 0.0, 0.6], "box_centre": [1.0, 0.7, 0.6],
                             "random": [1.0, 1.0, 0.6]}
    row["searches"]["4"]["curve"] = [1.0, 0.5, 0.6]
    row["searches"]["12"]["curve"] = [1.0, 0.4, 0.2]
    row["method_curves"] = {"occlusion": [1.0, 0.5, 0.3]}
    bare = _row((0.5, 0.6, 0.9), (0.45, 0.55), ())  # a run that stored no trivial curves: left out
    result = {"machine": {"platform": "test"}, "blocks": [4, 12], "seconds": 1.0,
              "structures": {"A": {"slices": [1, 2], "rows": {"1": row, "2": bare}}}}
    f = bench_bound.floored_summary(result)
    assert f["slices"] == 1 and f["best_trivial"] == pytest.approx(0.25 * (1.6 + 1.2))  # the blurred mask, floored
    assert f["rise"]["best_trivial"] is None  # compared over the slices with a curve: none
    assert f["search, 4 blocks"] == {"deletion_auc": pytest.approx(0.25 * (1.6 + 1.2)), "measured": 1,
                                     "best_trivial": pytest.approx(0.7), "beats_trivial": 0.0}  # ties it: no win
    assert f["search"]["deletion_auc"] == pytest.approx(0.25 * (1.4 + 0.6))            # the 12-block search
    assert f["occlusion"]["beats_trivial"] == 1.0 and f["rise"]["measured"] == 0
    text = bench_bound.markdown(result)
    assert "Over the 1 slices whose curves the run stored (the best trivial map's mean: 0.700)" in text
    assert "| occlusion | 0.575 | 0.700 | 100% | 1 |" in text and "| rise | - | - | - | 0 |" in text
    assert "No faithfulness.json lay in the output folder" not in text  # it holds an occlusion figure
    # one block count: no separate row for the lowest search; no method figure: the header says so
    one = {"machine": {"platform": "test"}, "blocks": [4], "seconds": 1.0, "structures": {
        "A": {"slices": [2], "rows": {"2": _row((0.5, 0.6, 0.9), (0.45,), (None, None, None))}}}}
    text = bench_bound.markdown(one)
    assert "| search, 4 blocks |" in text and "| search |" not in text and "`search` is the lowest" not in text
    assert "No faithfulness.json lay in the output folder: no method figures." in text
    # a polished order lower than the search is floored with its own curve; unstored, it is not measured
    row["polished"] = {"deletion_auc": 0.1, "from": "blurred_mask", "start_auc": 0.3, "moves": 3, "passes": 40,
                       "block_px": 2, "seconds": 1.0, "curve": [1.0, 0.2, 0.4]}
    polished = dict(result, polish=48)
    assert bench_bound.floored_summary(polished)[bench_bound.BEST_ORDER]["deletion_auc"] == pytest.approx(
        0.25 * (1.4 + 0.8))
    del row["polished"]["curve"]
    assert bench_bound.floored_summary(polished)[bench_bound.BEST_ORDER]["measured"] == 0


def test_bound_counts_the_polished_order_where_the_search_lost():
    lost = _row((0.3, 0.4, 0.8), (0.35, 0.32), ())
    lost["polished"] = {"deletion_auc": 0.28, "from": "blurred_mask", "start_auc": 0.3, "moves": 3, "passes": 40,
                        "block_px": 2, "seconds": 1.0}
    tied = _row((0.5, 0.6, 0.9), (0.55, 0.52), ())
    tied["polished"] = dict(lost["polished"], deletion_auc=0.5, moves=0, passes=7)
    won = _row((0.5, 0.6, 0.9), (0.45, 0.55), ())  # the search beat them: not polished
    result = {"machine": {"platform": "test"}, "blocks": [4, 12], "pairs": 2, "polish": 48, "seconds": 1.0,
              "structures": {"A": {"slices": [1, 2, 3], "rows": {"1": lost, "2": tied, "3": won}}}}
    s = bench_bound.summary(result)
    assert s["search"]["beats_trivial"] == pytest.approx(1 / 3)
    assert s[bench_bound.BEST_ORDER] == {"deletion_auc": pytest.approx((0.28 + 0.5 + 0.45) / 3),
                                         "beats_trivial": pytest.approx(2 / 3)}
    text = bench_bound.markdown(result)
    assert "--blocks 4,12 --pairs 2 --polish 48 --structures A`" in text and "2 adjacent pairs" in text
    assert "| 0.280 (blurred mask; 3, 40) | yes |" in text and "| 0.500 (blurred mask; 0, 7) | no |" in text
    assert "| - (the search beats them) | - |" in text
    assert f"| {bench_bound.BEST_ORDER} | 0.410 | 67% |" in text
    # without --polish the tables keep their columns
    assert bench_bound.BEST_ORDER not in bench_bound.markdown(dict(result, polish=0))


def test_bound_runs_with_other_pairs_or_polish_do_not_merge(tmp_path):
    result = {"machine": {}, "blocks": [4], "seconds": 1.0,
              "structures": {"A": {"slices": [1], "rows": {"1": _row((0.3, 0.4, 0.8), (0.2,), ())}}}}
    for name, extra in (("a", {"pairs": 1}), ("b", {"pairs": 2}), ("c", {"pairs": 1, "polish": 48})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bound.json").write_text(json.dumps(dict(result, **extra)))
    with pytest.raises(SystemExit, match="--pairs 2 and 1"):
        bench_bound.merge([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(SystemExit, match="--polish 48 and 0"):
        bench_bound.merge([tmp_path / "a", tmp_path / "c"])
    # a run before --pairs and --polish (neither key) is a default run's
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "bound.json").write_text(json.dumps(dict(result, structures={"B": result["structures"]["A"]})))
    assert list(bench_bound.merge([tmp_path / "a", tmp_path / "old"])["structures"]) == ["A", "B"]


@pytest.mark.parametrize("argv", [["--pairs", "0"], ["--polish", "-1"]])
def test_bound_pairs_and_polish_options_name_the_bad_value(argv):
    with pytest.raises(SystemExit, match=f"{argv[0]} {argv[1]}"):
        bench_bound.main(argv + ["-o", "unused"])


@pytest.mark.parametrize("text", ["0", "4,x", ""])
def test_bound_blocks_option_names_the_bad_value(text):
    with pytest.raises(SystemExit, match=f"--blocks {text!r}"):
        bench_bound.blocks(text)


def test_bound_figure_draws_one_slice():
    pytest.importorskip("matplotlib")
    import io

    from PIL import Image

    roi = np.zeros((40, 40), bool)
    roi[5:35, 8:30] = True
    mask = np.zeros_like(roi)
    mask[12:24, 12:22] = True
    row = _row((0.3, 0.4, 0.8), (0.35, 0.25), ())
    row["trivial_curves"] = {n: [1.0] + [0.5] * 7 + [0.1] for n in trivial.NAMES}
    row["searches"]["12"]["curve"] = [1.0] + [0.2] * 7 + [0.1]
    keep = {"slice": 7, "image": np.random.default_rng(0).random((40, 40)).astype(np.float32), "roi": roi,
            "mask": mask, "row": row,
            "lowest": {"name": "search, 12 blocks", "curve": row["searches"]["12"]["curve"], "deletion_auc": 0.25},
            "rankings": {"blurred mask": mask.astype(float), "search, 12 blocks": roi * np.arange(40.0)[None, :]}}
    png = bench_bound.figure(keep, "toy")
    assert Image.open(io.BytesIO(png)).size == (1200, 340)
