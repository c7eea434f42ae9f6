"""The faithfulness benchmark's bookkeeping: which slices it explains and how it scores the goals."""
from xaiseg.bench_faithfulness import GOALS, adjacent_pairs, goal_summary, markdown


def test_adjacent_pairs_are_spread_through_the_structure():
    assert adjacent_pairs(range(10, 30), 1) == [10, 11]
    assert adjacent_pairs(range(10, 30), 3) == [10, 11, 19, 20, 28, 29]
    assert adjacent_pairs([5, 7, 9], 2) == [5]  # no adjacent slices: the first alone
    assert adjacent_pairs([3, 4, 5], None) == [3, 4, 5]


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
