"""The faithfulness benchmark's bookkeeping: which slices it explains and how it scores the goals."""
import pytest

from xaiseg.bench_faithfulness import GOALS, adjacent_pairs, fill_summary, goal_summary, markdown


def test_adjacent_pairs_are_spread_through_the_structure():
    # one pair is the middle one, not the structure's end where it is a speck
    assert adjacent_pairs(range(10, 30), 1) == [19, 20]
    assert adjacent_pairs(range(10, 30), 3) == [14, 15, 19, 20, 24, 25]
    assert adjacent_pairs([5, 6, 8, 9], 2) == [5, 6, 8, 9]
    assert adjacent_pairs([5, 6, 8, 9, 11, 12], 2) == [5, 6, 11, 12]  # as many distinct pairs as asked
    assert adjacent_pairs([5, 6, 8, 9], 5) == [5, 6, 8, 9]  # never more than there are
    assert len(adjacent_pairs(range(10, 30), 30)) == 20  # every pair: every slice
    assert adjacent_pairs([5, 7, 9], 2) == [5]  # no adjacent slices: the first alone
    assert adjacent_pairs([3, 4, 5], None) == [3, 4, 5]


def test_the_between_sampling_holds_out_the_middle_samplings_slices():
    """``--sampling between``: the pairs halfway between the middle sampling's and the inside's ends,
    none of whose slices the goal table's sampling explains."""
    from xaiseg.errors import InputError

    # one pair asked: those at a quarter and three quarters, the three-pair sampling without its middle
    assert adjacent_pairs(range(10, 30), 1, "between") == [14, 15, 24, 25]
    assert adjacent_pairs(range(10, 30), 2) == [16, 17, 22, 23]
    assert adjacent_pairs(range(10, 30), 2, "between") == [13, 14, 19, 20, 25, 26]
    for pairs in (1, 2, 3):
        assert not set(adjacent_pairs(range(10, 60), pairs, "between")) & set(adjacent_pairs(range(10, 60), pairs))
    assert adjacent_pairs([5, 6, 8, 9], 1, "between") == [8, 9]  # the middle sampling took 5, 6
    assert adjacent_pairs([5, 6], 1, "between") == []  # no other pair: nothing held out
    # a small structure: the free pair nearest each place, so both sides keep a pair where they can
    assert adjacent_pairs(range(10, 16), 1) == [12, 13] and adjacent_pairs(range(10, 16), 1, "between") == [10, 11, 14, 15]
    assert adjacent_pairs(range(10, 21), 2, "between") == [11, 12, 18, 19]  # 11 slices: one pair each side
    for n in range(2, 40):
        for pairs in (1, 2, 3):
            held = adjacent_pairs(range(n), pairs, "between")
            assert not set(held) & set(adjacent_pairs(range(n), pairs)) and len(held) <= 2 * (pairs + 1)
            assert all(b == a + 1 for a, b in zip(held[::2], held[1::2])) and len(held) % 2 == 0  # whole pairs
    with pytest.raises(InputError, match="sampling 'ends': expected one of middle, between"):
        adjacent_pairs(range(10, 30), 1, "ends")
    with pytest.raises(InputError, match="expected a number of pairs"):
        adjacent_pairs(range(10, 30), None, "between")


def row(beats):
    return {"beats_trivial_deletion": beats}


def test_goal_summary_counts_slices_and_averages_spearman():
    maps = {"A": {"methods": {"occlusion": {"per_slice": {"1": row(True), "2": row(False)}, "adjacent_spearman": 0.9}}},
            "B": {"methods": {"occlusion": {"per_slice": {"5": row(True), "6": row(True)}, "adjacent_spearman": 0.5}}}}
    g = goal_summary(maps)["occlusion"]
    assert g == {"slices": 4, "beats_trivial_share": 0.75, "adjacent_spearman": 0.7}
    assert goal_summary(maps)["rise"]["slices"] == 0
    text = markdown({"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "maps": {}, "seconds": 1})
    assert "1 pair(s) of adjacent slices" in text and GOALS["beats_trivial_share"] == 0.8


def test_the_structure_bench_samples_inside_the_structure():
    from xaiseg.bench_structure import sample_slices

    ks = list(range(66, 99))  # 33 slices
    assert sample_slices(ks, 1) == [82] and sample_slices(ks, 2) == [77, 87]
    assert all(66 < k < 98 for k in sample_slices(ks, 5))  # not the end slices, where the structure is a speck
    assert sample_slices([3, 4], 3) == [3]  # never more slices than there are


def test_one_method_measured_again_needs_the_others_rows(tmp_path):
    """``--methods occlusion`` replaces only occlusion's rows, so it refuses a folder whose table lacks
    a structure of the run (or holds tables of other settings) before loading anything."""
    import json

    import pytest

    from xaiseg.bench_faithfulness import bench_faithfulness
    from xaiseg.errors import InputError

    with pytest.raises(InputError, match="expected some of occlusion,rise,layers"):
        bench_faithfulness(tmp_path, methods=["gradcam"])
    (tmp_path / "faithfulness.json").write_text(json.dumps({
        "pairs": 1, "masks": 300, "metric_fill": "inpaint", "sampling": "middle", "seed": 0, "rise": {},
        "maps": {"Right_Caudate": {"methods": {}}}}))
    with pytest.raises(InputError, match="it holds Right_Caudate .*expected every structure of this run "
                                         "\\(Left_Caudate\\).*or these in a folder with no table"):
        bench_faithfulness(tmp_path, structures=["Left_Caudate"], methods=["occlusion"])
    (tmp_path / "faithfulness.json").write_text(json.dumps({"pairs": 1, "masks": 300, "metric_fill": "inpaint",
                                                            "maps": {"Left_Caudate": {"methods": {}}}}))
    other = "holds Left_Caudate measured with pairs 1 \\(first\\), masks 300, .*masks 100"
    with pytest.raises(InputError, match=other):  # measured with other settings: not comparable
        bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, methods=["occlusion"])
    assert not list(tmp_path.glob("*.md"))  # nothing written


def test_rise_measured_again_everywhere_may_take_other_masks(tmp_path, monkeypatch):
    """Masks touch only RISE's rows: ``--methods rise`` with other masks replaces them when it covers
    every structure of the table (the cascade, at most 100 masks, unchanged), and the table then says
    the new masks; on part of the structures, or with the cascade's masks changed, it refuses."""
    import json

    import pytest

    import xaiseg.bench_faithfulness as bf
    from xaiseg.errors import InputError

    def method_row(auc):
        return {"deletion_auc": auc, "best_trivial_deletion_auc": 0.45, "deletion_gain": 0.45 - auc,
                "beats_trivial_share": 0.0, "insertion_auc": 0.6, "adjacent_spearman": 0.8, "evidence_share": 1.0,
                "evaluations": 30, "per_slice": {"1": {"beats_trivial_deletion": False}}}

    row = method_row(0.5)
    entry = {"slices": [1, 2], "methods": {"occlusion": row, "rise": row, "layers": row},
             "versions": bf.row_versions(bf.METHODS)}
    (tmp_path / "faithfulness.json").write_text(json.dumps({
        "pairs": 1, "masks": 100, "metric_fill": "inpaint", "sampling": bf.SAMPLING,
        "maps": {"Left_Caudate": entry, "Right_Caudate": entry},
        "cascade": {"Left_Caudate": {"slice": 81, "draws": bf.CASCADE_DRAWS, "methods": {}}}, "cascade_versions": dict(bf.MAP_VERSIONS)}))
    measured = []

    def rows(session, sample, name, pairs, masks, *args, **kwargs):
        measured.append((name, masks))
        return {"slices": [1, 2], "seconds": 1.0, "methods": {"rise": method_row(0.4)},
                "versions": bf.row_versions(["rise"])}

    monkeypatch.setattr(bf, "structure_rows", rows)
    held = "it holds Left_Caudate, Right_Caudate measured with pairs 1 .*masks 100"
    with pytest.raises(InputError, match=held + ".*masks 300"):  # the right caudate's RISE rows would stay at 100
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=300, methods=["rise"], parts=("maps",))
    with pytest.raises(InputError, match=held + ".*masks 50"):  # the kept cascade took 100
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate", "Right_Caudate"], masks=50, methods=["rise"],
                              parts=("maps",))
    assert not measured
    # only the maps part measures RISE's rows: a cascade or fills run with other masks keeps none of them
    previous = json.loads((tmp_path / "faithfulness.json").read_text())
    both = ["Left_Caudate", "Right_Caudate"]
    assert bf._same_masks(previous, 300, both, ["rise"], ("maps",))
    assert not bf._same_masks(previous, 300, both, ["rise"], ("cascade",))
    assert not bf._same_masks(previous, 300, both, ["rise", "occlusion", "layers"], ("maps",))

    def stopped(session, sample, name, *args, **kwargs):  # a run stopped after its first structure
        if name == "Right_Caudate":
            raise KeyboardInterrupt
        return rows(session, sample, name, *args, **kwargs)

    monkeypatch.setattr(bf, "structure_rows", stopped)
    with pytest.raises(KeyboardInterrupt):
        bf.bench_faithfulness(tmp_path, structures=both, masks=300, methods=["rise"], parts=("maps",))
    left = json.loads((tmp_path / "faithfulness.json").read_text())
    assert left["masks"] == 100 and left["maps"]["Left_Caudate"]["remeasured"][-1]["masks"] == 300
    assert bf.rise_masks(left) == {"Left_Caudate": 300, "Right_Caudate": 100}
    assert "(RISE at most 300 masks on Left_Caudate; 100 masks on Right_Caudate)" in \
        (tmp_path / "faithfulness.md").read_text()
    measured.clear()
    monkeypatch.setattr(bf, "structure_rows", rows)
    # a run of every method with 100 masks resumes the right caudate, not the left's 300-mask RISE rows
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "faithfulness.json").write_text(json.dumps(left))
    bf.bench_faithfulness(tmp_path / "full", structures=both, masks=100, parts=("maps",))
    assert measured == [("Left_Caudate", 100)]
    measured.clear()
    result = bf.bench_faithfulness(tmp_path, structures=["Left_Caudate", "Right_Caudate"], masks=300,
                                   methods=["rise"], parts=("maps",))
    assert measured == [("Left_Caudate", 300), ("Right_Caudate", 300)] and result["masks"] == 300
    assert result["maps"]["Right_Caudate"]["methods"]["rise"]["deletion_auc"] == 0.4
    assert result["maps"]["Right_Caudate"]["methods"]["occlusion"]["deletion_auc"] == 0.5
    assert result["maps"]["Left_Caudate"]["remeasured"][-1]["masks"] == 300
    assert "cascade" in result
    text = (tmp_path / "faithfulness.md").read_text()
    assert "(RISE at most 300 masks)," in text and "(RISE at most 100 masks; Spearman" in text


def test_the_table_says_which_rows_were_measured_again():
    per = {"1": row(True)}
    m = {"deletion_auc": 0.2, "best_trivial_deletion_auc": 0.3, "deletion_gain": 0.1, "beats_trivial_share": 1.0,
         "insertion_auc": 0.5, "adjacent_spearman": None, "evidence_share": 1.0, "evaluations": 27, "per_slice": per}
    again = [{"methods": ["rise"], "seconds": 9.0, "machine": {}, "date": "2026-11-30"},
             {"methods": ["occlusion"], "seconds": 12.0, "machine": {}, "date": "2026-12-02"}]
    maps = {"A": {"methods": {"occlusion": m, "rise": m}, "remeasured": again},
            "B": {"methods": {"occlusion": m, "rise": m}, "remeasured": again[1:]},
            "C": {"methods": {"occlusion": m, "rise": m}}}
    text = markdown({"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "maps": maps, "seconds": 1})
    # each method's last re-run on each structure, grouped: A's RISE rows are from its first re-run
    assert "first run): occlusion on 2026-12-02 (A, B); rise on 2026-11-30 (A)." in text
    assert text.count("| A |") == 2


def test_the_fill_summary_says_which_fill_is_lowest_where():
    def f(auc, beats):
        return {"deletion_auc": auc, "beats_trivial_deletion": beats}

    fills = {"A": {"zero": f(0.4, 0.0), "blur": f(0.5, 0.0), "inpaint": f(0.3, 1.0)},
             "B": {"zero": f(0.6, 0.5), "blur": f(0.7, 0.0), "inpaint": f(0.8, 0.0)}}
    s = fill_summary(fills)
    assert s["zero"] == {"deletion_auc": 0.5, "lowest": 1, "beats_trivial_deletion": 0.25}
    assert s["inpaint"]["lowest"] == 1 and s["blur"]["lowest"] == 0
    assert s["inpaint"]["deletion_auc"] == pytest.approx(0.55)
    text = markdown({"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "fills": fills, "seconds": 1})
    assert "| inpaint | 0.550 | 1 of 2 | 0.50 |" in text


def test_rows_of_an_older_engine_are_neither_resumed_nor_kept(tmp_path):
    """Each row records the version of every method's map (``MAP_VERSIONS``, the stop at which it
    last changed).  ``--methods occlusion`` refuses to keep RISE's and the layer maps' rows when they
    were made by another engine (or recorded none), before loading anything; the fills table says
    when it was measured with an older occlusion map."""
    import json

    from xaiseg.bench_faithfulness import MAP_VERSIONS, SAMPLING, bench_faithfulness, current, row_versions
    from xaiseg.errors import InputError

    assert current(row_versions(["occlusion", "rise", "layers"])) and not current({}) and not current(None, ["rise"])
    assert current({"occlusion": MAP_VERSIONS["occlusion"]}, ["occlusion"])
    # RISE's rows also record where its early stop ended them (stop 31: split-half reliability); rows
    # of the older stop are another engine's, the cascade (never cut short) is not
    assert not current(dict(MAP_VERSIONS)) and current(dict(MAP_VERSIONS), rows=False)
    assert row_versions(["rise"]) == {"rise": MAP_VERSIONS["rise"], "rise_stop": 31}
    # ... which holds because the cascade's RISE draws no more masks than any early stop lets pass
    from xaiseg.bench_faithfulness import CASCADE_MASKS
    from xaiseg.explain.rise import RiseSettings

    assert RiseSettings().min_masks >= CASCADE_MASKS
    older = dict(MAP_VERSIONS, rise=MAP_VERSIONS["rise"] - 1)
    for versions in (older, dict(MAP_VERSIONS), None):
        entry = {"methods": {}} if versions is None else {"methods": {}, "versions": versions}
        (tmp_path / "faithfulness.json").write_text(json.dumps({
            "pairs": 1, "masks": 100, "metric_fill": "inpaint", "sampling": SAMPLING,
            "maps": {"Left_Caudate": entry}}))
        with pytest.raises(InputError, match="would keep rows of rise,layers .*made by another engine"):
            bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, methods=["occlusion"])
    assert not list(tmp_path.glob("*.md"))  # nothing written
    fills = {"A": {"zero": {"deletion_auc": 0.5, "insertion_auc": 0.8, "deletion_gain": 0.0,
                            "beats_trivial_deletion": 0.0}}}
    base = {"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "maps": {}, "seconds": 1, "fills": fills}
    # the fills part measures occlusion scored by removal, whose map has its own version; before stop
    # 27 it was recorded as occlusion's
    from xaiseg.bench_faithfulness import FILLS_VERSION, fills_current

    old = dict(base, fills_versions={"occlusion_remove": FILLS_VERSION - 1})
    assert f"removal map of stop {FILLS_VERSION - 1}, not the current one of stop {FILLS_VERSION}" in markdown(old)
    for versions in ({"occlusion_remove": FILLS_VERSION}, {"occlusion": FILLS_VERSION}):
        assert fills_current(versions) and "not the current one" not in markdown(dict(base, fills_versions=versions))
    assert not fills_current({"occlusion": MAP_VERSIONS["occlusion"]}) and not fills_current(None)


def test_a_rerun_resumes_only_the_current_engines_structures(tmp_path, monkeypatch):
    """A run into a folder with earlier tables resumes the structures measured with the same
    settings and the current map versions; a structure measured by an older engine is measured
    again, and parts of an older engine are left out rather than shown as current."""
    import json

    import xaiseg.bench_faithfulness as bf

    fresh = {"slices": [1, 2], "seconds": 1.0, "methods": {}, "versions": bf.row_versions(bf.METHODS)}
    measured = []

    def rows(session, sample, name, *args, **kwargs):
        measured.append(name)
        return dict(fresh)

    monkeypatch.setattr(bf, "structure_rows", rows)
    old = dict(bf.row_versions(bf.METHODS), occlusion=bf.MAP_VERSIONS["occlusion"] - 1)
    (tmp_path / "faithfulness.json").write_text(json.dumps({
        "pairs": 1, "masks": 100, "metric_fill": "inpaint", "sampling": bf.SAMPLING,
        "maps": {"Left_Caudate": dict(fresh, slices=[81, 82]), "Right_Caudate": dict(fresh, versions=old)},
        "fills": {"Left_Caudate": {}}, "fills_versions": {"occlusion_remove": bf.FILLS_VERSION - 1},
        "cascade": {"Left_Caudate": {"slice": 81, "draws": bf.CASCADE_DRAWS, "methods": {}}}, "cascade_versions": dict(bf.MAP_VERSIONS)}))
    result = bf.bench_faithfulness(tmp_path, structures=["Left_Caudate", "Right_Caudate"], masks=100,
                                   parts=("maps",))
    assert measured == ["Right_Caudate"] and result["maps"]["Left_Caudate"]["slices"] == [81, 82]
    assert "fills" not in result and result["cascade_versions"] == bf.MAP_VERSIONS
    # a cascade row whose last step was drawn another number of times (older rows: once) is left out too
    table = json.loads((tmp_path / "faithfulness.json").read_text())
    del table["cascade"]["Left_Caudate"]["draws"]
    (tmp_path / "faithfulness.json").write_text(json.dumps(table))
    assert "cascade" not in bf.bench_faithfulness(tmp_path, structures=["Left_Caudate", "Right_Caudate"], masks=100,
                                                  parts=("maps",))


def test_one_methods_cascade_drawn_again_keeps_the_others_steps(tmp_path, monkeypatch):
    """``--methods occlusion --parts cascade`` draws occlusion's cascade again and keeps the other methods'
    steps of the table's row, where they are the current engine's and drawn as often; otherwise it draws
    every method, and a row of another central slice is refused by name."""
    import json

    import pytest

    import xaiseg.bench_faithfulness as bf
    from xaiseg.errors import InputError

    drawn = []

    def rows(session, sample, name, masks, methods, *args, **kwargs):
        drawn.append(tuple(methods))
        return {"slice": 81, "draws": bf.CASCADE_DRAWS, "methods": {m: steps(0.1) for m in methods}}

    def steps(similarity):
        return [{"redrawn": "mask_decoder", "similarity": similarity},
                {"redrawn": "image_encoder.patch_embed", "similarity": similarity, "draws": [similarity] * 5}]

    monkeypatch.setattr(bf, "cascade_rows", rows)
    monkeypatch.setattr(bf, "cascade_slice", lambda *args: (None, 81))  # the segmentation's central slice
    old = {m: steps(0.9) for m in bf.METHODS}
    stale = dict(bf.MAP_VERSIONS, occlusion=bf.MAP_VERSIONS["occlusion"] - 1)

    def table(versions, slice_=81, draws=bf.CASCADE_DRAWS):
        (tmp_path / "faithfulness.json").write_text(json.dumps({
            "pairs": 1, "masks": 100, "metric_fill": "inpaint", "sampling": bf.SAMPLING, "maps": {},
            "cascade": {"Left_Caudate": {"slice": slice_, "draws": draws, "methods": old}},
            "cascade_versions": versions}))

    table(stale)  # occlusion's steps of an older map: occlusion drawn again, the others' kept
    result = bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("cascade",),
                                   methods=["occlusion"])
    assert drawn == [("occlusion",)] and result["cascade_versions"] == bf.MAP_VERSIONS
    assert result["cascade"]["Left_Caudate"]["methods"] == dict(old, occlusion=steps(0.1))
    assert [r["methods"] for r in result["cascade"]["Left_Caudate"]["remeasured"]] == [["occlusion"]]
    for versions, draws in ((dict(bf.MAP_VERSIONS, rise=bf.MAP_VERSIONS["rise"] - 1), bf.CASCADE_DRAWS),
                            (stale, 1)):  # a kept method's steps stale, or the last step drawn once: all drawn
        drawn.clear()
        table(versions, draws=draws)
        result = bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("cascade",),
                                       methods=["occlusion"])
        fresh = result["cascade"]["Left_Caudate"]["methods"]
        assert drawn == [bf.METHODS] and all(v == steps(0.1) for v in fresh.values())
    table(stale, slice_=80)
    drawn.clear()
    with pytest.raises(InputError, match="central slice 81 is not the table's 80"):
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("cascade",),
                              methods=["occlusion"])
    assert drawn == []  # refused before anything is drawn


def test_the_cascade_table_shows_each_draw_of_its_last_step():
    from xaiseg.bench_faithfulness import markdown

    steps = [{"redrawn": "mask_decoder", "similarity": 0.9},
             {"redrawn": "image_encoder", "similarity": 0.2, "draws": [0.34, -0.08, 0.34]}]
    base = {"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "maps": {}, "seconds": 1}
    text = markdown(dict(base, cascade={"A": {"slice": 3, "draws": 3, "methods": {"layers": steps}}}))
    assert "drawn 3 times with their own seeds" in text
    assert "| method | mask_decoder | image_encoder | each draw |" in text
    assert "| layers | 0.90 | 0.20 | 0.34, -0.08, 0.34 |" in text
    once = markdown(dict(base, cascade={"A": {"slice": 3, "methods": {"layers": steps[:1]}}}))
    assert "one draw;" in once and "each draw" not in once


def test_summary_means_leave_out_missing_figures():
    """The benchmarks' summary rows (faithfulness, structure, consistency) share one mean: the
    figures a slice or structure lacks are left out, and nothing left gives None, not NaN."""
    from xaiseg.metrics import mean_of

    assert mean_of([0.2, None, 0.4]) == pytest.approx(0.3) and mean_of(v for v in (1, 2)) == 1.5
    assert mean_of([]) is None and mean_of([None, None]) is None


def test_runs_of_some_structures_each_merge_into_one_table(tmp_path):
    """``xaiseg bench faithfulness --merge A B -o OUT``: the rows of runs that each measured some
    structures become one table (goals and shares over all of them), measuring nothing; runs with
    other settings, or with other rows of one structure, are refused and nothing is written."""
    import json

    import xaiseg.bench_faithfulness as bf
    from xaiseg.cli import main
    from xaiseg.errors import InputError

    def table(names, auc, beats, **extra):
        row = {"deletion_auc": auc, "best_trivial_deletion_auc": 0.45, "deletion_gain": 0.45 - auc,
               "beats_trivial_share": beats, "insertion_auc": 0.6, "adjacent_spearman": 0.8, "evidence_share": 1.0,
               "evaluations": 30, "per_slice": {"1": {"beats_trivial_deletion": bool(beats)},
                                                "2": {"beats_trivial_deletion": bool(beats)}}}
        entry = {"slices": [1, 2], "methods": {m: row for m in bf.METHODS}, "versions": bf.row_versions(bf.METHODS)}
        return dict({"machine": {"platform": "test"}, "pairs": 1, "masks": 300, "metric_fill": "inpaint",
                     "sampling": bf.SAMPLING, "goals": bf.GOALS, "parts": ["maps"], "structures": list(names),
                     "maps": {n: entry for n in names}, "seconds": 10.0}, **extra)

    def folder(name, doc):
        (tmp_path / name).mkdir()
        (tmp_path / name / "faithfulness.json").write_text(json.dumps(doc))
        return str(tmp_path / name)

    a = folder("a", table(["Left_Amygdala"], 0.3, 1.0))
    b = folder("b", table(["Right_Amygdala", "Left_Pallidum"], 0.6, 0.0,
                          cascade={"Right_Amygdala": {"slice": 50, "draws": bf.CASCADE_DRAWS, "methods": {}}},
                          cascade_versions=dict(bf.MAP_VERSIONS)))
    out = tmp_path / "out"
    assert main(["bench", "faithfulness", "--merge", a, b, "-o", str(out)]) == 0
    merged = json.loads((out / "faithfulness.json").read_text())
    assert merged["structures"] == ["Left_Amygdala", "Right_Amygdala", "Left_Pallidum"]
    assert merged["seconds"] == 20.0 and merged["merged"] == 2 and "Right_Amygdala" in merged["cascade"]
    goals = bf.goal_summary(merged["maps"])
    assert goals["rise"]["slices"] == 6 and goals["rise"]["beats_trivial_share"] == pytest.approx(1 / 3)
    assert "Merged from 2 runs" in (out / "faithfulness.md").read_text()
    # the same rows of a structure in two runs (copies of one table) are kept once; a folder named
    # twice is one run; a merged table counts its runs
    copy = folder("copy", table(["Left_Amygdala"], 0.3, 1.0, runs="one process"))
    same = bf.merge_faithfulness([a, copy], tmp_path / "same")
    assert same["structures"] == ["Left_Amygdala"] and same["parts"] == ["maps"] and same["runs"] == "one process"
    assert bf.merge_faithfulness([out, copy], tmp_path / "three")["merged"] == 3
    # what the table holds, not what the runs asked for: a run stopped before its second structure
    stopped = folder("stopped", table(["Left_Thalamus"], 0.3, 1.0, structures=["Left_Thalamus", "Right_Thalamus"],
                                      parts=["maps", "cascade", "fills"]))
    held = bf.merge_faithfulness([a, stopped], tmp_path / "held")
    assert held["structures"] == ["Left_Amygdala", "Left_Thalamus"] and held["parts"] == ["maps"]
    assert "sampling" in held and held["goals"] == bf.GOALS

    refused = [
        (folder("masks", table(["Left_Caudate"], 0.3, 1.0, masks=100)), "measured with masks 100 and .* with 300"),
        (folder("other", table(["Left_Amygdala"], 0.5, 1.0)), "other maps rows of Left_Amygdala"),
        (folder("engine", table(["Left_Caudate"], 0.3, 1.0, cascade={"Left_Caudate": {}},
                                cascade_versions={"rise": 1})), "cascade with map versions"),
        (str(tmp_path / "nothing"), "expected faithfulness.json there"),
        (folder("threads", table(["Left_Caudate"], 0.3, 1.0, machine={"platform": "test", "threads": 2})),
         "measured with machine"),
    ]
    older = table(["Left_Caudate"], 0.3, 1.0)
    older["maps"]["Left_Caudate"]["versions"] = dict(bf.row_versions(bf.METHODS), rise=bf.MAP_VERSIONS["rise"] - 1)
    refused.append((folder("older", older), "different engines .*Left_Caudate"))
    alone = table(["Left_Caudate"], 0.3, 1.0)  # a held-out run of occlusion alone beside a full table
    alone["maps"]["Left_Caudate"]["methods"] = {"occlusion": alone["maps"]["Left_Caudate"]["methods"]["occlusion"]}
    alone["maps"]["Left_Caudate"]["versions"] = bf.row_versions(["occlusion"])
    refused.append((folder("alone", alone), r"hold different methods \(Left_Amygdala occlusion, rise, layers; "
                                            r"Left_Caudate occlusion\); expected every run to measure the same"))
    unversioned = table(["Left_Caudate"], 0.3, 1.0, cascade={"Left_Caudate": {}})  # an older table's cascade
    refused.append((folder("once", dict(unversioned, cascade_versions=dict(bf.MAP_VERSIONS))),
                    "cascade row of Left_Caudate whose last step was drawn 1 time"))
    refused.append((folder("unversioned", unversioned), "cascade with map versions unrecorded"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "faithfulness.json").write_text("{")
    refused.append((str(tmp_path / "broken"), "is not a faithfulness table"))
    for bad, reason in refused:
        with pytest.raises(InputError, match=reason):
            bf.merge_faithfulness([b, bad] if "cascade" in reason else [a, bad], tmp_path / "refused")
    with pytest.raises(InputError, match="at least two"):
        bf.merge_faithfulness([a, a], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    assert main(["bench", "explain", "--merge", a, b, "-o", str(tmp_path / "refused")]) == 2
    assert main(["bench", "faithfulness", "--merge", a, b, "--structures", "Left_Caudate", "-o",
                 str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()


def rows_slices(rows):
    return sorted({r["slice"] for r in rows})


@pytest.mark.parametrize("orientation", ["auto", "transpose"])
def test_kept_maps_score_again_as_the_bench_measured_them(tmp_path, capsys, orientation):
    """``--keep-maps``: every explained slice's maps, ROI and prompt are kept, and scoring the kept
    maps again on the kept slice gives the bench's own figures exactly, also where the model sees
    the slices turned (transposed: the kept slice, ROI and maps are the model's view, the table's
    rows come from maps turned back); a map of one's own is scored on the same curves (known answer: the toy's mask needs only its evidence square, so the square
    first beats every trivial map and the square last does not).  Bad maps, another model and other
    files are refused by name, and a bench other than faithfulness does not take the option."""
    import json
    import sys
    from pathlib import Path

    import numpy as np

    import xaiseg.bench_faithfulness as bf
    from xaiseg.cli import main
    from xaiseg.errors import InputError
    from xaiseg import kept_maps
    from xaiseg.kept_maps import kept_name, load_kept, rescore
    from xaiseg.pipeline import SegmentConfig, Session
    from xaiseg.progress import ensure

    sys.path.insert(0, str(Path(__file__).parent))
    from test_explain import toy_volume
    from toys import SquareEvidence

    # the toy reads its evidence at a fixed place of the model's grid: the square (8:24, 8:24) is
    # where it was in the transposed slice too
    session = Session(toy_volume(), SquareEvidence(), SegmentConfig(orientation=orientation))
    truth = np.zeros(session.volume.shape, bool)
    truth[:, 20:40, 22:42] = True  # boxed beside the evidence square (8:24), which the ROI reaches

    class Atlas:
        def mask(self, name):
            return truth

    # zero fill: the toy's evidence is the square's mean, which inpainting from the square itself keeps
    rows = bf.structure_rows(session, Atlas(), "toy", 1, 60, ensure(None), "zero", ("occlusion", "rise"),
                             keep=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept_name("toy", k) for k in rows["slices"]]
    for k in rows["slices"]:
        kept = load_kept(tmp_path / kept_name("toy", k))
        assert set(kept.maps) == {"occlusion", "rise"} and kept.meta["slice"] == k and kept.meta["metric_fill"] == "zero"
        square = np.zeros(kept.image.shape, np.float32)
        square[8:24, 8:24] = 1.0
        again = rescore(kept, dict(kept.maps, square=square, elsewhere=1.0 - square), session.segmenter)
        best = min(c["deletion_auc"] for c in again["trivial"].values())
        for method in ("occlusion", "rise"):
            measured = rows["methods"][method]["per_slice"][str(k)]
            assert again[method]["deletion_auc"] == pytest.approx(measured["deletion_auc"], abs=1e-12)
            assert again[method]["deletion_curve"] == pytest.approx(measured["deletion_curve"], abs=1e-12)
            assert best == pytest.approx(measured["best_trivial_deletion_auc"], abs=1e-12)
            assert kept.meta["measured"][method]["deletion_auc"] == measured["deletion_auc"]
        assert again["square"]["deletion_auc"] < best <= again["elsewhere"]["deletion_auc"]
        with pytest.raises(InputError, match=r"map 'small' of shape \(3, 3\): expected the kept slice's \(64, 64\)"):
            rescore(kept, {"small": np.zeros((3, 3))}, session.segmenter)
    assert kept.meta["versions"] == bf.row_versions(["occlusion", "rise"])
    assert kept.meta["settings"]["rise"]["n_masks"] == 60
    other = SquareEvidence()
    other.name = "another model"
    with pytest.raises(InputError, match="measured with name square-evidence toy.*expected the same model"):
        rescore(kept, {}, other)
    (tmp_path / "notes.npz").write_bytes(b"not a kept slice")
    with pytest.raises(InputError, match="notes.npz: not a kept slice"):
        load_kept(tmp_path / "notes.npz")
    assert main(["bench", "audit", "--keep-maps", str(tmp_path), "-o", str(tmp_path)]) == 2
    assert "--keep-maps: only the faithfulness bench keeps maps, not audit" in capsys.readouterr().err
    assert json.loads(str(np.load(tmp_path / kept_name("toy", k))["meta"]))["structure"] == "toy"
    # the check scores every kept map again, beside the recorded figures: all agree
    rows = kept_maps.check(tmp_path, session.segmenter)
    assert len(rows) == 2 * len(rows_slices(rows)) == 4 and kept_maps.largest_difference(rows) < 1e-12
    # with LiteMedSAM, the command's model, these files (measured with the toy) are refused by name
    assert kept_maps.main([str(tmp_path)]) == 2
    assert "was measured with name square-evidence toy" in capsys.readouterr().err
    assert kept_maps.main([str(tmp_path / "none")]) == 2
    assert "none: no kept slices (STRUCTURE_kNNN.npz)" in capsys.readouterr().err
    assert kept_maps.main([str(tmp_path), "--threads", "0"]) == 2
    assert "--threads 0: expected 1 or more" in capsys.readouterr().err
    import zipfile

    with zipfile.ZipFile(tmp_path / "image_only.npz", "w") as z:  # an npz without a kept slice's parts
        z.writestr("image.npy", b"")
    (tmp_path / "cut_k001.npz").write_bytes((tmp_path / kept_name("toy", k)).read_bytes()[:200])  # half copied
    for bad, needle in (("image_only.npz", "not a kept slice"), ("cut_k001.npz", "not a kept slice")):
        with pytest.raises(InputError, match=needle):
            load_kept(tmp_path / bad)
    assert [p.name for p in kept_maps.kept_files(tmp_path)] == ["cut_k001.npz"] + [kept_name("toy", s) for s in
                                                                                  rows_slices(rows)]
    with pytest.raises(InputError, match="a map named 'trivial'"):
        rescore(load_kept(tmp_path / kept_name("toy", k)), {"trivial": np.zeros((64, 64))}, session.segmenter)
    assert main(["bench", "faithfulness", "--keep-maps", str(tmp_path), "--parts", "cascade", "-o",
                 str(tmp_path)]) == 2
    assert "--keep-maps with --parts cascade: only the maps part explains slices" in capsys.readouterr().err


@pytest.mark.parametrize("orientation", ["auto", "transpose"])
def test_a_kept_slice_explained_again_with_a_setting_changed(tmp_path, capsys, orientation):
    """``python -m xaiseg.kept_maps DIR --method M --set NAME=VALUE``: the method runs again on each
    kept slice with its recorded settings and the change.  Unchanged, the map and its deletion AUC
    are the kept ones; changed, the map differs and still peaks on the toy's evidence square (known
    answer), scored on the same curves beside the recorded best trivial map, also where the model
    sees the slices turned.  Bad changes, changes of the curves, a method the bench did not keep,
    another model, a file of an older map version and --set without --method are refused by name."""
    import sys
    from pathlib import Path

    import numpy as np

    import xaiseg.bench_faithfulness as bf
    from xaiseg import kept_maps
    from xaiseg.errors import InputError
    from xaiseg.kept_maps import changed_map, changed_rows, kept_name, load_kept, parse_changes, wins
    from xaiseg.pipeline import SegmentConfig, Session
    from xaiseg.progress import ensure

    sys.path.insert(0, str(Path(__file__).parent))
    from test_explain import toy_volume
    from toys import SquareEvidence

    session = Session(toy_volume(), SquareEvidence(), SegmentConfig(orientation=orientation))
    truth = np.zeros(session.volume.shape, bool)
    truth[:, 20:40, 22:42] = True

    class Atlas:
        def mask(self, name):
            return truth

    rows = bf.structure_rows(session, Atlas(), "toy", 1, 60, ensure(None), "zero", ("occlusion",), keep=tmp_path)
    kept = load_kept(tmp_path / kept_name("toy", rows["slices"][0]))
    same = changed_map(kept, "occlusion", {}, session.segmenter)
    assert np.array_equal(same["map"], kept.maps["occlusion"])
    assert same["figures"]["deletion_auc"] == pytest.approx(kept.meta["measured"]["occlusion"]["deletion_auc"], abs=1e-12)
    assert same["best_trivial_deletion_auc"] == kept.meta["measured"]["occlusion"]["best_trivial_deletion_auc"]
    other = changed_map(kept, "occlusion", parse_changes(["smooth=0"]), session.segmenter)
    assert not np.array_equal(other["map"], kept.maps["occlusion"]) and other["passes"] > 0
    peak = np.unravel_index(np.argmax(other["map"]), other["map"].shape)
    assert 8 <= peak[0] < 24 and 8 <= peak[1] < 24
    # a fixed patch drops the structure's recorded side, as a run does
    assert changed_map(kept, "occlusion", {"patch": "16", "stride": "8"}, session.segmenter)["details"]["patch_px"] == 16
    seen = []
    changed = changed_rows(tmp_path, "occlusion", {"smooth": "0"}, session.segmenter, report=seen.append)
    assert seen == changed and [r["slice"] for r in changed] == rows["slices"]
    assert changed[0]["changed"] == pytest.approx(other["figures"]["deletion_auc"], abs=1e-12)
    # the unsmoothed map still ranks the evidence square first, which beats every trivial map on the toy
    assert wins(changed, "changed") == 2
    # the second slice of the pair carries the pair's Spearman: recorded, as the bench measured it, and
    # unchanged settings give the same again
    unchanged = changed_rows(tmp_path, "occlusion", {}, session.segmenter)
    assert changed[0]["spearman_recorded"] is None and len(changed) == 2
    assert changed[1]["spearman_recorded"] == pytest.approx(rows["methods"]["occlusion"]["adjacent_spearman"], abs=1e-4)
    assert unchanged[1]["spearman_changed"] == pytest.approx(changed[1]["spearman_recorded"], abs=1e-12)
    with pytest.raises(InputError, match="no recorded settings of 'lime'; expected one of occlusion"):
        changed_map(kept, "lime", {}, session.segmenter)
    with pytest.raises(InputError, match="no kept slice holds a 'rise' map"):
        changed_rows(tmp_path, "rise", {}, session.segmenter)
    with pytest.raises(InputError, match="unknown setting.*bogus"):
        changed_map(kept, "occlusion", {"bogus": "1"}, session.segmenter)
    with pytest.raises(InputError, match="--set 'smooth': expected NAME=VALUE"):
        parse_changes(["smooth"])
    with pytest.raises(InputError, match="--set 'smooth=2': smooth is already set to 1; expected each setting once"):
        parse_changes(["smooth=1", "smooth=2"])
    with pytest.raises(InputError, match="--set metric_steps: the curves are the kept file's .*8 steps"):
        changed_map(kept, "occlusion", {"metric_steps": "4"}, session.segmenter)
    stranger = SquareEvidence()
    stranger.name = "another model"
    with pytest.raises(InputError, match="measured with name square-evidence toy.*expected the same model"):
        changed_map(kept, "occlusion", {}, stranger)
    # a file kept with an older occlusion map: its recorded settings no longer make the kept map
    import json as _json

    with np.load(kept.path) as data:
        arrays = {key: data[key] for key in data.files}
    meta = _json.loads(str(arrays["meta"]))
    meta["versions"]["occlusion"] = 27
    arrays["meta"] = np.array(_json.dumps(meta))
    (tmp_path / "old").mkdir()
    np.savez(tmp_path / "old" / kept.path.name, **arrays)
    with pytest.raises(InputError, match="its occlusion map is version 27; this engine makes version 4"):
        changed_map(load_kept(tmp_path / "old" / kept.path.name), "occlusion", {}, session.segmenter)
    assert kept_maps._print_changed(tmp_path, "occlusion", {"smooth": "0"}, session.segmenter) == 0
    out = capsys.readouterr().out
    assert f"Spearman with slice {rows['slices'][0]}" in out and "2 slices: beats every trivial map on" in out
    assert f"{changed[1]['changed']:.6f}" in out and "with smooth=0" in out
    assert kept_maps.main([str(tmp_path), "--set", "smooth=1"]) == 2
    assert "--set smooth=1: expected --method too" in capsys.readouterr().err


def test_a_method_the_bench_did_not_keep_runs_fresh_on_the_kept_slices(tmp_path, capsys):
    """``python -m xaiseg.kept_maps DIR --method rise --fresh`` on a folder that kept only occlusion:
    RISE runs with the bench's settings, its seed, curves and the structure's side from the files,
    and gives exactly the map, deletion AUC and adjacent-slice Spearman the bench gives when it runs
    RISE itself, scored against the same trivial maps; with nothing recorded, the recorded figures
    are '-'.  A method the bench does not measure and --fresh without --method are refused."""
    import sys
    from pathlib import Path

    import numpy as np

    import xaiseg.bench_faithfulness as bf
    from xaiseg import kept_maps
    from xaiseg.errors import InputError
    from xaiseg.kept_maps import changed_map, changed_rows, kept_name, load_kept
    from xaiseg.pipeline import Session
    from xaiseg.progress import ensure

    sys.path.insert(0, str(Path(__file__).parent))
    from test_explain import toy_volume
    from toys import SquareEvidence

    # a mask that gives way to a slightly dimmed square, so that RISE's inpainted cells move it and its
    # map depends on the masks drawn (their seed, number and cell size)
    session = Session(toy_volume(), SquareEvidence(level=0.88))
    # boxes of other sizes on each slice, so the structure's side (the median of the explained slices')
    # is no slice's own; and a seed other than the default, so both must come from the kept files
    truth = np.zeros(session.volume.shape, bool)
    truth[0, 20:40, 22:42] = True
    truth[1, 21:37, 22:44] = True
    truth[2, 19:41, 21:39] = True

    class Atlas:
        def mask(self, name):
            return truth

    both = bf.structure_rows(session, Atlas(), "toy", 1, 60, ensure(None), "zero", ("occlusion", "rise"),
                             keep=tmp_path / "both", seed=3)
    bf.structure_rows(session, Atlas(), "toy", 1, 60, ensure(None), "zero", ("occlusion",), keep=tmp_path / "occ",
                      seed=3)
    sides = {load_kept(f).meta["settings"]["occlusion"]["side"] for f in kept_maps.kept_files(tmp_path / "occ")}
    boxes = [load_kept(f).meta["prompt"]["box"] for f in kept_maps.kept_files(tmp_path / "occ")]
    assert len(sides) == 1 and sides.pop() not in {min(b[2] - b[0] + 1, b[3] - b[1] + 1) for b in boxes}
    assert all("rise" not in load_kept(f).maps for f in kept_maps.kept_files(tmp_path / "occ"))
    fresh = changed_rows(tmp_path / "occ", "rise", {"n_masks": "60"}, session.segmenter, fresh=True)
    assert [r["slice"] for r in fresh] == both["slices"]
    informative = 0
    for r in fresh:
        kept = load_kept(tmp_path / "both" / kept_name("toy", r["slice"]))
        measured = both["methods"]["rise"]["per_slice"][str(r["slice"])]
        assert r["changed"] == pytest.approx(measured["deletion_auc"], abs=1e-12)
        assert r["best_trivial"] == pytest.approx(measured["best_trivial_deletion_auc"], abs=1e-12)
        assert r["recorded"] is None and r["spearman_recorded"] is None
        again = changed_map(load_kept(tmp_path / "occ" / kept_name("toy", r["slice"])), "rise", {"n_masks": "60"},
                            session.segmenter, fresh=True)
        assert np.array_equal(again["map"], kept.maps["rise"])
        # known answer: where the map carries anything, it is highest on the evidence square inside the ROI
        square = np.zeros(kept.roi.shape, bool)
        square[8:24, 8:24] = True
        roi = kept.roi.astype(bool)
        if again["map"].any():
            informative += 1
            assert again["map"][roi & square].mean() > 2 * again["map"][roi & ~square].mean()
    assert informative >= 1
    assert fresh[1]["spearman_changed"] == pytest.approx(both["methods"]["rise"]["adjacent_spearman"], abs=1e-4)
    # where the folder kept RISE's map, its recorded figures stand beside the fresh ones
    beside = changed_rows(tmp_path / "both", "rise", {"n_masks": "60"}, session.segmenter, fresh=True)
    assert [r["recorded"] for r in beside] == [r["changed"] for r in beside]
    assert beside[1]["spearman_recorded"] == pytest.approx(beside[1]["spearman_changed"], abs=1e-12)
    # but not where it kept one made with other settings (60 masks there, the bench's 300 here)
    other = changed_rows(tmp_path / "both", "rise", {}, session.segmenter, fresh=True)
    assert all(r["recorded"] is None and r["spearman_recorded"] is None for r in other)
    kept = load_kept(kept_maps.kept_files(tmp_path / "occ")[0])
    with pytest.raises(InputError, match="--method lime: the bench does not measure it; expected one of"):
        changed_map(kept, "lime", {}, session.segmenter, fresh=True)
    with pytest.raises(InputError, match="no recorded settings of 'rise'.*or --fresh"):
        changed_map(kept, "rise", {}, session.segmenter)
    assert kept_maps._print_changed(tmp_path / "occ", "rise", {"n_masks": "60"}, session.segmenter, fresh=True) == 0
    out = capsys.readouterr().out
    assert "deletion AUC recorded -, with the bench's settings and n_masks=60" in out
    assert f"60 passes, split-half reliability {fresh[0]['reliability']:.2f}); best trivial map" in out
    assert "beats every trivial map on 0 of the 0 recorded" in out
    assert kept_maps.main([str(tmp_path / "occ"), "--fresh"]) == 2
    assert "--fresh: expected --method too" in capsys.readouterr().err


def _recorded_rows(folder, monkeypatch, setting):
    """The bench's structures measured from here on, as (name, the ``setting`` it was given), with
    ``folder`` holding a table of Left_Caudate written before that setting existed."""
    import json

    import xaiseg.bench_faithfulness as bf

    measured = []

    def rows(session, sample, name, *args, **kwargs):
        measured.append((name, kwargs.get(setting)))
        return {"slices": [1, 2], "seconds": 1.0, "methods": {}, "versions": bf.row_versions(bf.METHODS)}

    monkeypatch.setattr(bf, "structure_rows", rows)
    entry = {"slices": [81, 82], "methods": {}, "versions": bf.row_versions(bf.METHODS)}
    (folder / "faithfulness.json").write_text(json.dumps({
        "pairs": 1, "masks": 100, "metric_fill": "inpaint", "sampling": bf.SAMPLING, "maps": {"Left_Caudate": entry}}))
    return measured


def test_the_bench_seed_reaches_every_draw_and_labels_its_table(tmp_path, monkeypatch):
    """``--seed``: every explainer of the bench draws from it (RISE's masks, the random trivial map);
    a table keeps only rows of its own seed (an older table without one reads as seed 0), the table
    says a seed other than 0, and runs of different seeds do not merge."""
    import xaiseg.bench_faithfulness as bf
    from xaiseg.errors import InputError

    assert {ex.seed for ex in bf._explainers(100, seed=3)} == {3} and {ex.seed for ex in bf._explainers(100)} == {0}
    measured = _recorded_rows(tmp_path, monkeypatch, "seed")  # a table written before the bench had a seed
    bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("maps",))
    assert measured == []  # seed 0: resumed
    result = bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("maps",), seed=1)
    assert measured == [("Left_Caudate", 1)] and result["seed"] == 1
    assert "seed 1 for every random draw" in (tmp_path / "faithfulness.md").read_text()
    with pytest.raises(InputError, match="seed 1.*expected every structure of this run.*seed 2"):
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("maps",), seed=2,
                              methods=["rise"])
    (tmp_path / "zero").mkdir()
    bf.bench_faithfulness(tmp_path / "zero", structures=["Right_Caudate"], masks=100, parts=("maps",))
    assert "for every random draw" not in (tmp_path / "zero" / "faithfulness.md").read_text()
    with pytest.raises(InputError, match="was measured with seed 1 and .* with 0; expected the same seed"):
        bf.merge_faithfulness([tmp_path, tmp_path / "zero"][::-1], tmp_path / "merged")


def test_the_bench_measures_a_rise_variant_and_keeps_its_rows_apart(tmp_path, monkeypatch, capsys):
    """``--rise KEY=VALUE,...``: RISE's own settings reach its explainer (in the maps and the cascade),
    are typed and checked, and label the table; defaults are left out, so ``strata=1`` is the
    default table; a table keeps only rows of its own variant, and runs of two variants do not merge."""
    import xaiseg.bench_faithfulness as bf
    from xaiseg.cli import main
    from xaiseg.errors import InputError

    assert bf.rise_variant("strata=5, p=0.5") == {"strata": 5} and bf.rise_variant({"strata": "1"}) == {}
    assert bf.rise_variant(None) == {} and bf.rise_variant("cell_aspect=3,p=0.25") == {"cell_aspect": 3.0, "p": 0.25}
    rise = [ex for ex in bf._explainers(100, rise={"strata": 5}, cascade=True) if ex.name == "rise"][0]
    assert rise.strata == 5 and rise.n_masks == 100 and rise.cascade
    for bad, message in (("n_masks=50", "n_masks: expected RISE's own settings.*--masks"),
                         ("seed=3", "seed: expected RISE's own settings"), ("strata", "'strata': expected KEY=VALUE"),
                         ("strata=x", "must be an integer"), ("strata=0", "too small"),
                         ("strata=5,p=0.3", r"keep probability \(--keep-probability\) 0.3 with 5 strata"),
                         ("strata=5,strata=1", "sets strata twice")):
        with pytest.raises(InputError, match=message):
            bf.rise_variant(bad)
    measured = _recorded_rows(tmp_path, monkeypatch, "rise")  # a table written before the bench took RISE's
    bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("maps",), rise="strata=1")
    assert measured == []  # the defaults: resumed
    result = bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("maps",), rise="strata=5")
    assert measured == [("Left_Caudate", {"strata": 5})] and result["rise"] == {"strata": 5}
    assert "RISE with strata 5 (`--rise`)" in (tmp_path / "faithfulness.md").read_text()
    with pytest.raises(InputError, match="RISE strata 5.*expected every structure of this run.*RISE its defaults"):
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("maps",), methods=["rise"])
    with pytest.raises(InputError, match="--rise strata 5 with --parts maps and --methods occlusion: this run "
                                         "measures no RISE map"):
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("maps",), rise="strata=5",
                              methods=["occlusion"])
    (tmp_path / "plain").mkdir()
    bf.bench_faithfulness(tmp_path / "plain", structures=["Right_Caudate"], masks=100, parts=("maps",))
    assert "`--rise`" not in (tmp_path / "plain" / "faithfulness.md").read_text()
    with pytest.raises(InputError, match=r"plain.* was measured with rise \{\} and .* with \{'strata': 5\}; expected the same rise"):
        bf.merge_faithfulness([tmp_path, tmp_path / "plain"], tmp_path / "merged")
    # the command line: only the faithfulness bench takes it, and a bad one is named before any work
    assert main(["bench", "explain", "--rise", "strata=5", "-o", str(tmp_path / "x")]) == 2
    assert "--rise: only the faithfulness bench takes RISE's settings, not explain" in capsys.readouterr().err
    assert main(["bench", "faithfulness", "--rise", "bogus=1", "-o", str(tmp_path / "y")]) == 2
    assert "--rise bogus: expected RISE's own settings" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_the_cascade_runs_on_every_slice_the_maps_part_explains(tmp_path):
    """``--parts cascade_slices``: the cascade, its last step drawn ``CASCADE_DRAWS`` times, on each
    slice of the structure's pair (known answer: the toy's decoder is its only part, so the whole
    model is re-drawn at once; re-drawn, its evidence lies elsewhere and the map's similarity stays
    well below 1).  The summary counts slices and draws against the goal's bar."""
    import sys
    from pathlib import Path

    import numpy as np

    import xaiseg.bench_faithfulness as bf
    from xaiseg.models.base import randomisation_cascade
    from xaiseg.pipeline import SegmentConfig, Session
    from xaiseg.progress import ensure

    sys.path.insert(0, str(Path(__file__).parent))
    from test_explain import toy_volume
    from toys import SquareEvidence

    session = Session(toy_volume(), SquareEvidence(), SegmentConfig())
    truth = np.zeros(session.volume.shape, bool)
    truth[:, 20:40, 22:42] = True

    class Atlas:
        def mask(self, name):
            return truth

    # the cascade alone: no curves, no trivial maps
    assert all(ex.metric_steps == 0 and not ex.baselines and ex.cascade_draws == bf.CASCADE_DRAWS
               for ex in bf._explainers(100, cascade=True, curves=False))
    rows = bf.slice_cascade_rows(session, Atlas(), "toy", 1, ensure(None), methods=("occlusion",))
    assert rows["slices"] == [0, 1] and rows["draws"] == bf.CASCADE_DRAWS
    assert randomisation_cascade(session.segmenter) == ["mask_decoder"]
    for k in rows["slices"]:
        (step,) = rows["methods"]["occlusion"][str(k)]
        assert step["redrawn"] == "mask_decoder" and len(step["draws"]) == bf.CASCADE_DRAWS
        assert step["similarity"] == pytest.approx(np.mean(step["draws"]), abs=1e-4) and step["similarity"] < 0.9
    summary = bf.slice_cascade_summary({"toy": rows})["occlusion"]
    assert summary["slices"] == 2 and summary["draws"] == 2 * bf.CASCADE_DRAWS and summary["parts"] == ["mask_decoder"]
    text = bf.markdown({"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "seconds": 1,
                        "cascade_slices": {"toy": rows}})
    assert "Cascading randomisation on every slice the maps part explains (occlusion on toy;" in text and "| toy | 1 | occlusion |" in text


def test_the_slice_cascade_summary_counts_slices_and_draws_at_the_bar():
    """Known answer: two slices, the last step's draws given; the means per step, the slices whose
    mean reaches 0.3, the draws that do, and the extremes."""
    from xaiseg.bench_faithfulness import markdown, slice_cascade_summary

    def steps(first, draws):
        return [{"redrawn": "mask_decoder", "similarity": first},
                {"redrawn": "image_encoder", "similarity": sum(draws) / len(draws), "draws": draws}]

    rows = {"A": {"slices": [3, 4], "draws": 3, "methods": {"layers": {"3": steps(1.0, [0.5, 0.4, 0.3]),
                                                                      "4": steps(0.8, [0.2, -0.1, 0.5])}}},
            "B": {"slices": [7, 8], "draws": 3, "methods": {"layers": {"7": None, "8": steps(0.9, [0.0, 0.0, 0.0])}}}}
    s = slice_cascade_summary(rows)["layers"]
    assert s["slices"] == 3 and s["mean"] == pytest.approx([0.9, (0.4 + 0.2 + 0.0) / 3], abs=1e-4)
    assert (s["slices_at_bar"], s["draws_at_bar"], s["draws"]) == (1, 4, 9)
    assert (s["lowest"], s["highest"]) == (-0.1, 0.5)
    text = markdown({"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "seconds": 1, "cascade_slices": rows})
    assert "| layers | 3 | 0.90 | 0.20 | 1 of 3 | 4 of 9 | -0.10 - 0.50 |" in text
    assert "| A | 4 | layers | 0.20 | 0.20, -0.10, 0.50 |" in text and "| B | 7 |" not in text
    # the header says which fused layer map the rows hold, from their versions
    assert "the fused layer map;" in text
    for version, said in ((42, "the layer maps fused past the encoder's stem;"),
                          (23, "the layer maps of all 18 layers fused;")):
        assert said in markdown({"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "seconds": 1,
                                 "cascade_slices": rows, "cascade_slices_versions": {"layers": version}})
    # and which occlusion patches: strips since stop 45, squares before
    assert "; occlusion and RISE at their" in text
    for versions, said in (([45, 45], "occlusion's strips along the structure and"), ([40], "occlusion's squares and"),
                           ([40, 45], "occlusion (rows of strips and of squares) and")):
        maps = {f"S{i}": {"methods": {}, "versions": {"occlusion": v}} for i, v in enumerate(versions)}
        assert said in markdown({"machine": {"platform": "test"}, "pairs": 1, "masks": 100, "seconds": 1, "maps": maps})
    other = {"C": {"slices": [1], "draws": 3, "methods": {"layers": {"1": steps(1.0, [0.1, 0.1, 0.1])[1:]}}}}
    from xaiseg.errors import InputError

    with pytest.raises(InputError, match="re-draw image_encoder on one slice and mask_decoder, image_encoder"):
        slice_cascade_summary(dict(rows, **other))


def test_the_slice_cascade_is_kept_only_when_current_and_merges(tmp_path, monkeypatch, capsys):
    """A re-run of other parts keeps the ``cascade_slices`` part only when it was measured with the
    current layer maps and as many draws; runs of other structures merge into one; an unknown part
    is refused by name before anything is measured."""
    import json

    import xaiseg.bench_faithfulness as bf
    from xaiseg.errors import InputError

    with pytest.raises(InputError, match="faithfulness parts cascades: expected some of maps,cascade,cascade_slices"):
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], parts=("maps", "cascades"))
    from xaiseg.cli import main

    assert main(["bench", "faithfulness", "--parts", "maps,bogus", "-o", str(tmp_path)]) == 2
    assert "faithfulness parts bogus: expected some of maps,cascade,cascade_slices,fills" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written
    monkeypatch.setattr(bf, "structure_rows", lambda *a, **k: {"slices": [1, 2], "seconds": 1.0, "methods": {},
                                                               "versions": bf.row_versions(bf.METHODS)})
    entry = {"slices": [81, 82], "draws": bf.CASCADE_DRAWS, "seconds": 1.0, "methods": {"layers": {}}}
    table = {"pairs": 1, "masks": 100, "metric_fill": "inpaint", "sampling": bf.SAMPLING, "seconds": 1,
             "machine": {"platform": "test"}, "cascade_slices": {"Left_Caudate": entry},
             "cascade_slices_versions": {"layers": bf.MAP_VERSIONS["layers"]}}
    for versions, draws, kept in (({"layers": bf.MAP_VERSIONS["layers"]}, bf.CASCADE_DRAWS, True),
                                  ({"layers": bf.MAP_VERSIONS["layers"] - 1}, bf.CASCADE_DRAWS, False),
                                  ({}, bf.CASCADE_DRAWS, False), ({"layers": bf.MAP_VERSIONS["layers"]}, 1, False)):
        (tmp_path / "faithfulness.json").write_text(json.dumps(dict(
            table, cascade_slices={"Left_Caudate": dict(entry, draws=draws)}, cascade_slices_versions=versions)))
        result = bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100, parts=("maps",))
        assert ("cascade_slices" in result) is kept and result.get("cascade_slices_versions") == (
            versions if kept else None)
    (tmp_path / "faithfulness.json").write_text(json.dumps(table))  # measured with other pairs: left out
    assert "cascade_slices" not in bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], masks=100,
                                                         parts=("maps",), pairs=2)
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "faithfulness.json").write_text(json.dumps(table))
    (other / "faithfulness.json").write_text(json.dumps(dict(table, cascade_slices={"Right_Caudate": entry})))
    merged = bf.merge_faithfulness([tmp_path, other], tmp_path / "merged")
    assert list(merged["cascade_slices"]) == ["Left_Caudate", "Right_Caudate"] and "cascade_slices" in merged["parts"]
    (other / "faithfulness.json").write_text(json.dumps(dict(table, cascade_slices={"Right_Caudate": dict(
        entry, draws=1)})))
    with pytest.raises(InputError, match="a cascade_slices row of Right_Caudate whose last step was drawn 1"):
        bf.merge_faithfulness([tmp_path, other], tmp_path / "merged")


def test_some_methods_in_a_folder_with_no_table_write_a_table_of_their_own(tmp_path, monkeypatch, capsys):
    """``--methods occlusion`` in a folder with no table measures occlusion alone (held-out slices with
    ``--sampling between``, say); ``--methods rise`` then adds RISE's rows and occlusion's stay; the
    sampling reaches the slices' choice and is recorded, so a middle run does not resume those rows."""
    import json

    import xaiseg.bench_faithfulness as bf
    from xaiseg.errors import InputError

    calls = []

    def rows(session, sample, name, pairs, masks, progress, metric_fill="inpaint", methods=bf.METHODS, **kwargs):
        calls.append((name, tuple(methods), kwargs["sampling"]))
        per = {m: {"per_slice": {k: {"beats_trivial_deletion": m == "occlusion"} for k in ("14", "15")},
                   "deletion_auc": 0.1 * len(calls),  # which call made a row
                   "best_trivial_deletion_auc": 0.6, "deletion_gain": 0.1, "beats_trivial_share": 1.0,
                   "insertion_auc": 0.7, "adjacent_spearman": 0.8, "evidence_share": 1.0, "evaluations": 9}
               for m in methods}
        return {"slices": [14, 15], "seconds": 1.0, "methods": per, "versions": bf.row_versions(methods)}

    monkeypatch.setattr(bf, "structure_rows", rows)
    for bad, reason in (({"pairs": None}, "expected a number of pairs"),
                        ({"parts": ("maps", "cascade")}, "with --parts cascade: .*expected --parts maps or "
                                                         "cascade_slices"),
                        ({"sampling": "ends"}, "sampling 'ends': expected one of middle, between")):
        with pytest.raises(InputError, match=reason):
            bf.bench_faithfulness(tmp_path, **dict({"structures": ["Left_Caudate"], "methods": ["occlusion"],
                                                    "sampling": "between", "parts": ("maps",)}, **bad))
    assert not list(tmp_path.iterdir()) and not calls  # refused before anything is measured or written
    # a structure with no pair outside the middle sampling's is refused before the first is measured
    with pytest.raises(InputError, match=r"sampling between of Left_Putamen: its \d+ slices hold no pair of adjacent "
                                         r"slices outside the middle sampling's 16 pair\(s\); expected a larger "
                                         r"structure, or fewer --pairs"):
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate", "Left_Putamen"], methods=["occlusion"],
                              sampling="between", parts=("maps",), pairs=16)
    cascades = []
    monkeypatch.setattr(bf, "slice_cascade_rows", lambda *a, **k: cascades.append(a[2]) or {})
    with pytest.raises(InputError, match=r"sampling between of Left_Putamen: its \d+ slices hold no pair"):
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate", "Left_Putamen"], sampling="between",
                              parts=("cascade_slices",), pairs=16)
    assert not list(tmp_path.iterdir()) and not calls and not cascades
    run = dict(structures=["Left_Caudate"], parts=("maps",), sampling="between")
    first = bf.bench_faithfulness(tmp_path, methods=["occlusion"], **run)
    assert calls == [("Left_Caudate", ("occlusion",), "between")]
    assert list(first["maps"]["Left_Caudate"]["methods"]) == ["occlusion"] and first["sampling"] == "between"
    text = (tmp_path / "faithfulness.md").read_text()
    assert "halfway between the 1 pair(s) of the middle sampling" in text
    assert "| occlusion | 2 | 1.00 | yes |" in text and "| rise |" not in text  # no goal row of an unmeasured method
    assert "This table holds occlusion alone" in text
    assert "occlusion's strips along the structure at its structure-sized default alone; 8 metric steps" in text
    said = text.split("\n\n")[1]  # the sentence on how the table was made: nothing of the methods it does not hold
    assert said.startswith("Produced by") and "RISE" not in said and "layer map" not in said
    grown = bf.bench_faithfulness(tmp_path, methods=["rise"], **run)
    assert list(grown["maps"]["Left_Caudate"]["methods"]) == ["occlusion", "rise"]
    assert grown["maps"]["Left_Caudate"]["versions"] == bf.row_versions(["occlusion", "rise"])
    assert calls[-1] == ("Left_Caudate", ("rise",), "between")
    assert "remeasured" not in grown["maps"]["Left_Caudate"]  # RISE was added, not measured again
    bf.bench_faithfulness(tmp_path, methods=["occlusion"], **run)  # measured again: RISE's rows stay
    table = json.loads((tmp_path / "faithfulness.json").read_text())
    assert list(table["maps"]["Left_Caudate"]["methods"]) == ["occlusion", "rise"] and len(calls) == 3
    aucs = {m: v["deletion_auc"] for m, v in table["maps"]["Left_Caudate"]["methods"].items()}
    assert aucs == {"occlusion": pytest.approx(0.3), "rise": pytest.approx(0.2)}  # the third call's, the second's
    assert [r["methods"] for r in table["maps"]["Left_Caudate"]["remeasured"]] == [["occlusion"]]
    # the goal table's sampling does not resume the held-out rows: it refuses to keep them beside its own
    with pytest.raises(InputError, match="pairs 1 \\(between\\).*this run's pairs 1 \\(middle\\)"):
        bf.bench_faithfulness(tmp_path, structures=["Left_Caudate"], parts=("maps",), methods=["occlusion"])
    assert len(calls) == 3
    # the command line: only the faithfulness bench samples pairs, and every slice cannot be held out
    from xaiseg.cli import main

    assert main(["bench", "explain", "--sampling", "between", "-o", str(tmp_path / "x")]) == 2
    assert "--sampling: only the faithfulness bench samples pairs, not explain" in capsys.readouterr().err
    assert main(["bench", "faithfulness", "--sampling", "between", "--pairs", "0", "-o", str(tmp_path / "y")]) == 2
    assert "sampling between takes pairs between the middle sampling's" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and len(calls) == 3
