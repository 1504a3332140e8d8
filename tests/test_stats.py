"""Tests of keras_supernet.stats against hand-computed values."""

import math

import numpy as np
import pytest

from keras_supernet import stats

LABELS = ("3x3->3x3", "3x3->5x5", "5x5->3x3", "5x5->5x5")


def _runs(accuracies, epochs=None):
    """results.json runs from {(mode, path): [accuracy per seed]}."""
    runs = []
    for (mode, path), values in accuracies.items():
        for seed, accuracy in enumerate(values):
            runs.append(
                {
                    "mode": mode,
                    "seed": seed,
                    "path": path,
                    "label": LABELS[path],
                    "test_accuracy": accuracy,
                    "best_val_accuracy": accuracy,
                    "best_epoch": (epochs or {}).get((mode, path), [3] * len(values))[
                        seed
                    ],
                    "complete": True,
                }
            )
    return runs


# === Intervals ===


def test_t_interval_of_1_2_3_4():
    # mean 2.5, s = sqrt(5/3), sem = s / 2 = 0.645497; t(0.975, df=3) = 3.182446 (t table).
    result = stats.mean_interval([1, 2, 3, 4])
    half_width = 3.182446305 * math.sqrt(5 / 3) / 2
    assert result["n"] == 4
    assert result["mean"] == pytest.approx(2.5)
    assert result["std"] == pytest.approx(math.sqrt(5 / 3))
    assert result["half_width"] == pytest.approx(half_width, rel=1e-8)
    assert result["ci"] == pytest.approx((2.5 - half_width, 2.5 + half_width), rel=1e-8)
    assert result["ci"] == pytest.approx((0.44574, 4.55426), abs=1e-5)


def test_t_interval_three_values():
    # mean 0.92, s = 0.02, t(0.975, df=2) = 4.302653 -> half-width 0.049683.
    result = stats.mean_interval([0.90, 0.92, 0.94])
    assert result["half_width"] == pytest.approx(
        4.302653 * 0.02 / math.sqrt(3), rel=1e-6
    )


def test_single_value_has_no_interval():
    assert stats.mean_interval([0.97]) == {
        "n": 1,
        "mean": 0.97,
        "std": None,
        "ci": None,
        "half_width": None,
    }


def test_constant_values_have_a_zero_width_interval():
    result = stats.mean_interval([0.9, 0.9, 0.9])
    assert result["ci"] == (0.9, 0.9) and result["half_width"] == 0.0


def test_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        stats.mean_interval([])
    with pytest.raises(ValueError, match="`confidence`"):
        stats.mean_interval([1, 2], confidence=95)


# === Two-sample tests ===


def test_welch_statistic_and_degrees_of_freedom_by_hand():
    # a: mean 2.5, var 5/3, n 4; b: mean 6, var 10, n 5.
    # se^2 = 5/12 + 2 = 29/12; t = -3.5 / sqrt(29/12);
    # df = (29/12)^2 / ((5/12)^2 / 3 + 2^2 / 4) = 5.5208.
    result = stats.welch_test([1, 2, 3, 4], [2, 4, 6, 8, 10])
    se2 = 5 / 12 + 2
    assert result["statistic"] == pytest.approx(-3.5 / math.sqrt(se2), rel=1e-10)
    assert result["df"] == pytest.approx(se2**2 / ((5 / 12) ** 2 / 3 + 1), rel=1e-10)
    low, high = result["ci"]
    assert (low + high) / 2 == pytest.approx(-3.5)
    assert low < 0 < high  # p > 0.05 <=> the 95% interval holds 0
    assert 0.05 < result["p_value"] < 0.1


def test_welch_textbook_example():
    # Wikipedia, "Welch's t-test", example 1: t = -2.46, df = 25.0, p = 0.021.
    a1 = [
        27.5,
        21.0,
        19.0,
        23.6,
        17.0,
        17.9,
        16.9,
        20.1,
        21.9,
        22.6,
        23.1,
        19.6,
        19.0,
        21.7,
        21.4,
    ]
    a2 = [
        27.1,
        22.0,
        20.8,
        23.4,
        23.4,
        23.5,
        25.8,
        22.0,
        24.8,
        20.2,
        21.9,
        22.1,
        22.9,
        20.5,
        24.4,
    ]
    result = stats.welch_test(a1, a2)
    assert result["statistic"] == pytest.approx(-2.46, abs=0.005)
    assert result["df"] == pytest.approx(25.0, abs=0.05)
    assert result["p_value"] == pytest.approx(0.021, abs=0.0005)


def test_welch_undefined_cases():
    empty = {"statistic": None, "df": None, "p_value": None, "ci": None}
    assert stats.welch_test([0.9], [0.8, 0.85]) == empty
    assert stats.welch_test([0.9, 0.9], [0.9, 0.9]) == empty


def test_exact_permutation_test_by_hand():
    # {1,2,3} vs {4,5,6}: of the 20 splits of 1..6 into triples, only the
    # observed one and its mirror are as extreme -> p = 2/20.
    result = stats.permutation_test([1, 2, 3], [4, 5, 6])
    assert result == {
        "statistic": -3.0,
        "p_value": pytest.approx(0.1),
        "exact": True,
        "permutations": 20,
    }
    # {1,2,4} vs {3,5,6}: difference -7/3; triples with sum <= 7 ({1,2,3},
    # {1,2,4}) or >= 14 ({3,5,6}, {4,5,6}) are as extreme -> p = 4/20.
    result = stats.permutation_test([1, 2, 4], [3, 5, 6])
    assert result["statistic"] == pytest.approx(-7 / 3)
    assert result["p_value"] == pytest.approx(0.2)


def test_compare_reports_permutation_when_runs_are_few_and_welch_otherwise():
    few = stats.compare([0.90, 0.91, 0.92], [0.95, 0.96, 0.97])
    assert few["test"] == "permutation" and few["p_value"] == pytest.approx(0.1)
    assert (
        few["p_welch"] < 0.01
    )  # Welch would call it; 3 runs cannot show that without assumptions
    assert few["difference"] == pytest.approx(-0.05)

    many = stats.compare([0.90, 0.91, 0.92, 0.93, 0.94], [0.95, 0.96, 0.97, 0.98, 0.99])
    assert many["test"] == "welch" and many["p_value"] == many["p_welch"]
    assert many["p_permutation"] == pytest.approx(2 / 252)  # exact: C(10, 5) splits

    single = stats.compare([0.90], [0.95, 0.96])
    assert single["test"] is None and single["p_value"] is None


def test_holm_adjustment_by_hand():
    # Sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> raised to 0.06.
    assert stats.holm([0.01, 0.04, 0.03, None]) == pytest.approx(
        [0.03, 0.06, 0.06, None]
    )
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


# === Ranking correlation ===


def test_kendall_and_spearman_of_a_known_permutation():
    # [2, 1, 3, 5, 4] against 1..5: 2 of 10 pairs discordant -> tau = (8 - 2) / 10.
    # Exact two-sided p: 14 of 120 permutations have <= 2 inversions -> 28/120.
    # Spearman: sum d^2 = 4 -> rho = 1 - 6 * 4 / (5 * 24) = 0.8; 8 of 120
    # permutations have sum d^2 <= 4 -> exact two-sided p = 16/120.
    result = stats.rank_correlation([1, 2, 3, 4, 5], [2, 1, 3, 5, 4])
    assert result["n"] == 5
    assert result["kendall_tau"] == pytest.approx(0.6)
    assert result["kendall_p"] == pytest.approx(28 / 120)
    assert result["kendall_exact"] is True
    assert result["spearman_rho"] == pytest.approx(0.8)
    assert result["spearman_p"] == pytest.approx(16 / 120)
    assert result["spearman_exact"] is True


def test_reversed_ranking_has_tau_minus_one():
    result = stats.rank_correlation([0.91, 0.92, 0.93, 0.94], [0.99, 0.98, 0.97, 0.96])
    assert result["kendall_tau"] == pytest.approx(-1.0)
    assert result["spearman_rho"] == pytest.approx(-1.0)


def test_kendall_chance_level():
    # 4 items: perfect agreement is 1 ranking of 24 -> two-sided p = 2/24, never < 0.05.
    four = stats.kendall_chance(4)
    assert four == {
        "expected_tau": 0.0,
        "min_p_value": pytest.approx(2 / 24),
        "critical_tau": None,
    }
    # 5 items: tau = 1 has p = 2/120; tau = 0.8 (1 inversion) has p = 2 * 5/120 > 0.05.
    five = stats.kendall_chance(5)
    assert five["min_p_value"] == pytest.approx(2 / 120)
    assert five["critical_tau"] == pytest.approx(1.0)


def test_correlation_of_constant_scores_is_undefined():
    result = stats.rank_correlation([0.9, 0.9, 0.9], [0.8, 0.9, 0.95])
    assert result["kendall_tau"] is None and result["spearman_rho"] is None


# === Summary and markdown ===


def test_summarize_runs_groups_tests_and_ranks():
    runs = _runs(
        {
            ("joint", 0): [0.90, 0.92, 0.94],
            ("standalone", 0): [0.95, 0.96, 0.97],
            ("joint", 1): [0.93, 0.94, 0.95],
            ("standalone", 1): [0.96, 0.97, 0.98],
            ("joint", 2): [0.96, 0.96, 0.97],
        }
    )
    runs.append(dict(runs[0], seed=7, test_accuracy=0.1, complete=False))
    summary = stats.summarize_runs(runs)
    keys = [(g["mode"], g["path"]) for g in summary["groups"]]
    assert keys == [
        ("standalone", 0),
        ("joint", 0),
        ("standalone", 1),
        ("joint", 1),
        ("joint", 2),
    ]
    joint0 = summary["groups"][1]
    assert joint0["n"] == 3 and joint0["seeds"] == [
        0,
        1,
        2,
    ]  # the incomplete run is left out
    assert joint0["accuracy"]["mean"] == pytest.approx(0.92)
    assert [c["path"] for c in summary["comparisons"]] == [
        0,
        1,
    ]  # path 2 has no standalone run
    assert all(c["test"] == "permutation" for c in summary["comparisons"])
    assert summary["ranking"]["n"] == 2


def test_stats_markdown_on_a_multi_seed_run():
    runs = _runs(
        {
            ("joint", 0): [0.90, 0.92, 0.94],
            ("standalone", 0): [0.95, 0.96, 0.97],
            ("joint", 1): [0.93, 0.94, 0.95],
            ("standalone", 1): [0.965, 0.97, 0.975],
            ("joint", 2): [0.951, 0.952, 0.953],
            ("standalone", 2): [0.975, 0.98, 0.985],
            ("joint", 3): [0.96, 0.962, 0.964],
            ("standalone", 3): [0.985, 0.99, 0.995],
        },
        epochs={("joint", 0): [2, 3, 4]},
    )
    text = stats.stats_markdown({"config": {}, "runs": runs})
    assert text.startswith("## Statistics over seeds")
    # Joint path 0: 0.92 ± 4.302653 * 0.02 / sqrt(3) = 0.0497; best epoch 3.0 ± 2.5.
    assert (
        "| 3x3->3x3 | Joint | 3 | 0.9200 ± 0.0497 [0.8703, 0.9697] | 3.0 ± 2.5 [0.5, 5.5] |"
        in text
    )
    # 3 runs per mode: exact permutation test, p = 2/20, Holm p = min(1, 4 * 0.1).
    assert "| 3x3->3x3 | -0.0400 [" in text
    assert "| permutation (exact) | 0.100 | 0.400 | no |" in text
    assert "alpha = 0.05" in text and "Holm" in text
    # Joint and standalone rank the 4 paths identically.
    assert "Kendall's tau = **+1.000** (p = 0.083, exact)" in text
    assert "Spearman's rho = **+1.000**" in text
    assert "Number of paths: 4" in text and "tau is 0 on average" in text
    assert "no tau can be significant" in text


def test_stats_markdown_marks_significant_differences_with_welch():
    five = [0.970, 0.971, 0.972, 0.973, 0.974]
    runs = _runs(
        {
            ("joint", 0): [v - 0.02 for v in five],
            ("standalone", 0): five,
            ("joint", 1): five,
            ("standalone", 1): [0.971, 0.974, 0.970, 0.973, 0.972][::-1],
        }
    )
    summary = stats.summarize_runs(runs)
    first, second = summary["comparisons"]
    assert first["test"] == "welch" and first["significant"] is True
    assert first["p_holm"] == pytest.approx(min(1.0, 2 * first["p_value"]))
    assert second["significant"] is False and second["p_value"] == pytest.approx(1.0)
    text = stats.stats_markdown({"runs": runs})
    assert "| Welch |" in text and "**yes**" in text


def test_stats_markdown_with_a_single_seed_says_so_once():
    runs = _runs(
        {
            ("joint", 0): [0.95],
            ("standalone", 0): [0.96],
            ("joint", 1): [0.97],
            ("standalone", 1): [0.98],
        }
    )
    text = stats.stats_markdown({"runs": runs})
    assert text.count("need at least two") == 1
    assert "no interval" not in text and "none (n = 1)" not in text
    assert "Kendall's tau = **+1.000** (p = 1.000, exact)" in text


def test_stats_markdown_with_some_single_runs_keeps_the_tables():
    runs = _runs(
        {
            ("joint", 0): [0.95, 0.96],
            ("standalone", 0): [0.96],
            ("joint", 1): [0.97, 0.98],
            ("standalone", 1): [0.98],
        }
    )
    text = stats.stats_markdown({"runs": runs})
    assert "0.9600 (no interval, n = 1)" in text
    assert "| 3x3->3x3 | Joint | 2 | 0.9550 ± " in text
    assert "### Joint vs standalone" in text and "need at least two" not in text


def test_stats_markdown_without_runs():
    assert "No complete run yet." in stats.stats_markdown({"runs": []})


def test_bad_alpha():
    with pytest.raises(ValueError, match="Received alpha=5"):
        stats.summarize_runs([], alpha=5)


# === Ranking metrics of a study, against values computed by hand ===


def test_kendall_tau_b_counts_ties_as_scipy_does():
    # One discordant pair of six.
    assert stats.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # Pairs: 4 concordant, 1 tied in x only, 1 tied in y only:
    # tau-b = 4 / sqrt((6 - 1) * (6 - 1)) = 0.8.
    assert stats.kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert stats.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert stats.kendall_tau([1, 1, 1], [1, 2, 3]) is None


def test_spearman_uses_average_ranks():
    # Ranks (1, 2.5, 2.5, 4) and (1, 2, 3.5, 3.5): Pearson r = 3.75 / 4.5.
    assert stats.spearman_rho([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(3.75 / 4.5)
    assert stats.spearman_rho([4, 3, 2, 1], [1, 2, 3, 4]) == pytest.approx(-1.0)


def test_top_k_overlap_shares_tied_places():
    assert stats.top_k_membership([4, 3, 3, 1], k=2).tolist() == [1.0, 0.5, 0.5, 0.0]
    assert stats.top_k_membership([1, 1, 1, 1], k=2).tolist() == [0.5] * 4
    truth = [6, 5, 4, 3, 2, 1]
    # Item 0 is in both top-2s; items 1 and 2 tie for the predicted second
    # place, and item 1 is in the true top 2: 1 + 0.5.
    assert stats.top_k_overlap([0.9, 0.8, 0.8, 0.1, 0.5, 0.7], truth, k=2) == 1.5
    assert stats.top_k_overlap(truth, truth, k=5) == 5
    assert stats.top_k_overlap([1, 2, 3, 4, 5, 6], truth, k=3) == 0


def test_regret_of_the_top_one_averages_ties():
    truth = [0.99, 0.97, 0.95, 0.90]
    assert stats.regret([0.9, 0.2, 0.1, 0.0], truth) == 0.0
    assert stats.regret([0.1, 0.2, 0.3, 0.4], truth) == pytest.approx(0.09)
    # Items 1 and 2 tie for first: (0.97 + 0.95) / 2 is expected.
    assert stats.regret([0.2, 0.9, 0.9, 0.1], truth) == pytest.approx(0.03)


def test_bootstrap_interval_is_seeded_and_brackets_the_statistic():
    values = np.arange(20.0)
    interval = stats.bootstrap_interval(
        lambda i: values[i].mean(), 20, resamples=500, seed=3
    )
    assert interval == stats.bootstrap_interval(
        lambda i: values[i].mean(), 20, resamples=500, seed=3
    )
    assert interval[0] < 9.5 < interval[1] and interval[1] - interval[0] < 8
    assert stats.bootstrap_interval(lambda i: None, 5, resamples=10) is None
