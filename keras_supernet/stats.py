"""Statistics over repeated runs: intervals, significance, ranking correlation.

Every number comes from `scipy.stats`; this module only decides which test
applies, handles the degenerate cases (one run, no variance, ties) and lays
the results out.

- **Mean ± 95% confidence interval** of a quantity over seeds: Student's t
  interval, `mean ± t(0.975, n - 1) · s / sqrt(n)` (`scipy.stats.t.interval`).
  With one run there is no interval (`None`).
- **Joint vs standalone, per path**: a two-sided test of "the jointly trained
  path and the same path trained alone have the same mean test accuracy".
  Both tests treat the seeds of each mode as independent samples.
  - *Welch's t-test* (`scipy.stats.ttest_ind(equal_var=False)`) when both
    modes have at least `WELCH_MIN_RUNS` (5) runs. It assumes roughly normal
    per-seed accuracies, which is reasonable for accuracies on thousands of
    test images, but cannot be checked on fewer runs.
  - An *exact permutation test* of the difference of means
    (`scipy.stats.permutation_test`, every split of the pooled runs into two
    groups) when either mode has 2 to 4 runs. It assumes nothing about the
    distribution; the price is honesty about how little few runs can show:
    with 3 runs per mode the smallest possible p-value is 2/20 = 0.1.
  - No test with a single run in either mode (`p = None`).
  Both p-values are kept in the summary; the one named in `test` is reported
  and marked significant when its Holm-adjusted value (family: all tested
  paths) is below `alpha` = 0.05.
- **Ranking correlation**: Kendall's tau (`scipy.stats.kendalltau`, tau-b;
  exact p-value when there are no ties and at most 33 paths, as scipy does) and
  Spearman's rho (`scipy.stats.spearmanr`; p-value from an exact permutation
  test up to 9 paths, Monte Carlo above) between each path's mean joint and
  mean standalone accuracy. A random ranking gives tau = 0 on average; the
  summary also gives the smallest p-value any tau can reach with that many
  paths and the tau needed for significance, since with 4 paths even a
  perfect agreement (p = 2/24 = 0.083) is not significant at 0.05.
- **Ranking metrics of a study** (`bin/rank`): Kendall's tau-b and Spearman's
  rho alone (`kendall_tau`, `spearman_rho`), the overlap of two top-k sets and
  the regret of a top-1 (ties shared as random tie-breaking would),
  percentile bootstrap intervals over items.

Example:

```python
with open("runs/mnist/results.json") as f:
    results = json.load(f)
summary = summarize_runs(results["runs"])
print(stats_markdown(results))
```
"""

import math

import numpy as np
from scipy import stats as scipy_stats

from keras_supernet import validation

ALPHA = 0.05
CONFIDENCE = 0.95
# Welch's t-test needs this many runs in both modes; below, the exact
# permutation test is reported.
WELCH_MIN_RUNS = 5
# Permutation tests enumerate every rearrangement up to this many, and draw
# `MONTE_CARLO_RESAMPLES` seeded ones above (e.g. Spearman with > 9 paths).
EXACT_PERMUTATIONS_LIMIT = 400_000
MONTE_CARLO_RESAMPLES = 99_999
# Kendall's tau p-values are exact (no ties) up to this many items, from the
# normal approximation above, as scipy's "auto" method does.
KENDALL_EXACT_MAX = 33
# Ranking metrics: the top-k overlap's k, bootstrap resamples of an interval.
TOP_K = 5
BOOTSTRAP_RESAMPLES = 2000
_MODE_ORDER = ("standalone", "joint")
_MODE_TITLE = {"joint": "Joint", "standalone": "Standalone"}


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _check_alpha(alpha):
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not 0 < alpha < 1
    ):
        raise ValueError(
            f"Invalid value for argument `alpha`. Expected a number in (0, 1). Received alpha={alpha!r}."
        )


# === Intervals ===


def mean_interval(values, confidence=CONFIDENCE):
    """Mean and Student's t confidence interval of a sample.

    Args:
        values: the sample, e.g. one test accuracy per seed.
        confidence: confidence level of the interval.

    Returns:
        A dict with `n`, `mean`, `std` (sample standard deviation, `None` for
        one value), `ci` (`(low, high)`, `None` for one value) and
        `half_width` (`(high - low) / 2`, `None` for one value). Without
        variance the interval is `(mean, mean)`.

    Raises:
        ValueError: an empty sample, or `confidence` outside (0, 1).

    Example:

    >>> mean_interval([1, 2, 3, 4])["ci"]  # 2.5 ± 3.182 * 0.6455
    (0.4457..., 4.5542...)
    """
    if not 0 < confidence < 1:
        raise ValueError(
            "Invalid value for argument `confidence`. Expected a number in (0, 1). "
            f"Received confidence={confidence!r}."
        )
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("Cannot compute a mean interval of an empty sample.")
    n = int(values.size)
    mean = float(values.mean())
    if n == 1:
        return {
            "n": 1,
            "mean": mean,
            "std": None,
            "ci": None,
            "half_width": None,
        }
    std = float(values.std(ddof=1))
    sem = float(scipy_stats.sem(values))
    if sem == 0.0:
        low = high = mean
    else:
        low, high = (
            float(v)
            for v in scipy_stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
        )
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "ci": (low, high),
        "half_width": (high - low) / 2,
    }


# === Two-sample tests ===


def welch_test(a, b, confidence=CONFIDENCE):
    """Welch's unequal-variance t-test of `mean(a) == mean(b)` (two-sided).

    Returns:
        A dict with `statistic` (t), `df` (Welch–Satterthwaite degrees of
        freedom), `p_value` and `ci` (confidence interval of
        `mean(a) - mean(b)`), each `None` when undefined (fewer than two
        values in a group, or no variance at all).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return {"statistic": None, "df": None, "p_value": None, "ci": None}
    if np.var(a) == 0.0 and np.var(b) == 0.0:
        # scipy divides by a zero standard error here; the test is undefined.
        return {"statistic": None, "df": None, "p_value": None, "ci": None}
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(confidence)
    return {
        "statistic": _finite_or_none(result.statistic),
        "df": _finite_or_none(result.df),
        "p_value": _finite_or_none(result.pvalue),
        "ci": (float(ci.low), float(ci.high)),
    }


def _difference_of_means(x, y, axis):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def permutation_test(a, b, seed=0):
    """Permutation test of `mean(a) == mean(b)` (two-sided).

    Every split of the pooled values into groups of the original sizes is
    enumerated when there are at most `EXACT_PERMUTATIONS_LIMIT` of them
    (an exact test); otherwise `MONTE_CARLO_RESAMPLES` seeded random splits.

    Returns:
        A dict with `statistic` (`mean(a) - mean(b)`), `p_value`, `exact`
        and `permutations` (number of rearrangements in the null
        distribution); all `None` with fewer than two values in a group.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return {
            "statistic": None,
            "p_value": None,
            "exact": None,
            "permutations": None,
        }
    total = math.comb(a.size + b.size, a.size)
    exact = total <= EXACT_PERMUTATIONS_LIMIT
    result = scipy_stats.permutation_test(
        (a, b),
        _difference_of_means,
        permutation_type="independent",
        vectorized=True,
        n_resamples=total if exact else MONTE_CARLO_RESAMPLES,
        alternative="two-sided",
        rng=seed,
    )
    return {
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "exact": exact,
        "permutations": int(result.null_distribution.size),
    }


def compare(joint, standalone, confidence=CONFIDENCE):
    """Joint vs standalone accuracies of one path: the reported test and both p-values.

    Returns:
        A dict with `n_joint`, `n_standalone`, `difference` (mean joint minus
        mean standalone), `difference_ci` (Welch interval, `None` when
        undefined), `test` (`"welch"`, `"permutation"` or `None` when a mode
        has a single run), `p_value` (of that test), `p_welch`,
        `p_permutation`, `permutation_exact`.
    """
    joint = np.asarray(joint, dtype=np.float64)
    standalone = np.asarray(standalone, dtype=np.float64)
    welch = welch_test(joint, standalone, confidence)
    perm = permutation_test(joint, standalone)
    smallest = min(joint.size, standalone.size)
    if smallest < 2:
        test, p_value = None, None
    elif smallest >= WELCH_MIN_RUNS and welch["p_value"] is not None:
        test, p_value = "welch", welch["p_value"]
    else:
        test, p_value = "permutation", perm["p_value"]
    return {
        "n_joint": int(joint.size),
        "n_standalone": int(standalone.size),
        "difference": float(joint.mean() - standalone.mean()),
        "difference_ci": welch["ci"],
        "test": test,
        "p_value": p_value,
        "p_welch": welch["p_value"],
        "p_permutation": perm["p_value"],
        "permutation_exact": perm["exact"],
    }


def holm(p_values):
    """Holm–Bonferroni adjusted p-values (same order; `None` entries skipped).

    The i-th smallest of m p-values is multiplied by `m - i + 1`, then made
    non-decreasing and capped at 1; rejecting where the adjusted value is
    below alpha controls the family-wise error rate at alpha.
    """
    tested = [(i, p) for i, p in enumerate(p_values) if p is not None]
    adjusted = [None] * len(p_values)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(tested, key=lambda item: item[1])):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


# === Ranking correlation ===


def _permutation_with_inversions(n, k):
    """A permutation of `range(n)` with exactly `k` inversions (Lehmer code)."""
    remaining = list(range(n))
    order = []
    for i in range(n):
        code = min(k, n - 1 - i)
        k -= code
        order.append(remaining.pop(code))
    return order


def _kendall_method(n, ties):
    return "exact" if not ties and n <= KENDALL_EXACT_MAX else "asymptotic"


def kendall_chance(n, alpha=ALPHA):
    """What Kendall's tau does by chance with `n` items (no ties, two-sided).

    Returns:
        A dict with `expected_tau` (0: a random ranking is as often reversed
        as agreeing), `min_p_value` (the p-value of a perfect agreement, the
        smallest any ranking of `n` items can reach) and `critical_tau` (the
        smallest tau with p < alpha, `None` when no tau reaches it).
    """
    if n < 2:
        return {"expected_tau": 0.0, "min_p_value": None, "critical_tau": None}
    identity = np.arange(n)
    method = _kendall_method(n, ties=False)
    min_p = float(scipy_stats.kendalltau(identity, identity, method=method).pvalue)
    critical = None
    pairs = n * (n - 1) // 2
    for k in range(pairs + 1):  # p grows with the number of inversions
        ranking = _permutation_with_inversions(n, k)
        result = scipy_stats.kendalltau(identity, ranking, method=method)
        if not result.pvalue < alpha or result.statistic <= 0:
            break
        critical = float(result.statistic)
    return {"expected_tau": 0.0, "min_p_value": min_p, "critical_tau": critical}


def _spearman_p(x, y):
    ranks_x, ranks_y = scipy_stats.rankdata(x), scipy_stats.rankdata(y)
    total = math.factorial(len(x))
    exact = total <= EXACT_PERMUTATIONS_LIMIT

    def rho(rx, axis):
        # Spearman's rho is Pearson's r of the ranks.
        return scipy_stats.pearsonr(rx, ranks_y, axis=axis).statistic

    result = scipy_stats.permutation_test(
        (ranks_x,),
        rho,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=total if exact else MONTE_CARLO_RESAMPLES,
        rng=0,
    )
    return float(result.pvalue), exact


def rank_correlation(x, y, alpha=ALPHA):
    """Kendall's tau and Spearman's rho between two scores of the same items.

    Args:
        x, y: one score per item, e.g. each path's mean joint and mean
            standalone accuracy.
        alpha: significance level used for `kendall_chance`.

    Returns:
        A dict with `n`, `kendall_tau`, `kendall_p`, `kendall_exact`,
        `spearman_rho`, `spearman_p`, `spearman_exact`, `ties` and `chance`
        (see `kendall_chance`). Correlations are `None` when undefined (fewer
        than two items, or a constant score).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"`x` and `y` must be 1-D of the same length. Received shapes {x.shape} and {y.shape}."
        )
    n = int(x.size)
    ties = bool(len(np.unique(x)) < n or len(np.unique(y)) < n)
    result = {
        "n": n,
        "kendall_tau": None,
        "kendall_p": None,
        "kendall_exact": None,
        "spearman_rho": None,
        "spearman_p": None,
        "spearman_exact": None,
        "ties": ties,
        "chance": kendall_chance(n, alpha),
    }
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return result
    kendall = scipy_stats.kendalltau(x, y, method=_kendall_method(n, ties))
    spearman = scipy_stats.spearmanr(x, y)
    spearman_p, spearman_exact = _spearman_p(x, y)
    result.update(
        kendall_tau=float(kendall.statistic),
        kendall_p=float(kendall.pvalue),
        kendall_exact=_kendall_method(n, ties) == "exact",
        spearman_rho=float(spearman.statistic),
        spearman_p=spearman_p,
        spearman_exact=spearman_exact,
    )
    return result


# === Ranking metrics of a study (bin/rank) ===


def _pair(x, y):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            "Invalid scores. Expected two 1-D sequences of the same length. "
            f"Received shapes {x.shape} and {y.shape}."
        )
    return x, y


def kendall_tau(x, y):
    """Kendall's tau-b between two scores of the same items (ties count as
    in `scipy.scipy_stats.kendalltau`); None where undefined (a constant score or
    fewer than two items)."""
    x, y = _pair(x, y)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(scipy_stats.kendalltau(x, y).statistic)


def spearman_rho(x, y):
    """Spearman's rho (Pearson's r of the average ranks); None where
    undefined."""
    x, y = _pair(x, y)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(scipy_stats.spearmanr(x, y).statistic)


def top_k_membership(scores, k=TOP_K):
    """Per item, the probability that it is among the `k` best (highest
    scores) when ties are broken uniformly at random.

    Items above a tie group that straddles the k-th place are in for sure;
    each member of that group gets the places left over, shared equally.

    Example:

    >>> top_k_membership([4, 3, 3, 1], k=2).tolist()
    [1.0, 0.5, 0.5, 0.0]
    """
    scores = np.asarray(scores, dtype=np.float64)
    k = validation.positive_int("k", k)
    membership = np.zeros(len(scores))
    left = min(k, len(scores))
    for value in sorted(set(scores.tolist()), reverse=True):
        if left <= 0:
            break
        group = scores == value
        size = int(group.sum())
        membership[group] = min(1.0, left / size)
        left -= size
    return membership


def top_k_overlap(predicted, truth, k=TOP_K):
    """How many of the `k` best items by `truth` are among the `k` best by
    `predicted`: an integer without ties at the k-th place, the expected
    count under random tie-breaking otherwise."""
    predicted, truth = _pair(predicted, truth)
    return float(np.sum(top_k_membership(predicted, k) * top_k_membership(truth, k)))


def regret(predicted, truth):
    """`truth` of the best item minus `truth` of the item `predicted` ranks
    first (the mean over items tied for first: the expected regret under
    random tie-breaking). In the units of `truth`."""
    predicted, truth = _pair(predicted, truth)
    if not len(predicted):
        raise ValueError("Cannot compute the regret of no items.")
    chosen = predicted == predicted.max()
    return float(truth.max() - truth[chosen].mean())


def bootstrap_interval(
    statistic, n, resamples=BOOTSTRAP_RESAMPLES, seed=0, confidence=CONFIDENCE
):
    """Percentile bootstrap interval of `statistic` over `n` items.

    Args:
        statistic: a function of an index array (a resample of `range(n)`,
            drawn with replacement) returning a number or None (undefined on
            that resample, e.g. a constant score: left out).
        n: the number of items.
        resamples: bootstrap resamples, drawn with `seed`.

    Returns:
        `(low, high)`, or None if the statistic is undefined on every
        resample.
    """
    n = validation.positive_int("n", n)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(validation.positive_int("resamples", resamples)):
        value = statistic(rng.integers(0, n, size=n))
        if value is not None:
            values.append(value)
    if not values:
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


# === Summary of a results.json ===


def _groups(runs):
    groups = {}
    for run in runs:
        if run.get("complete", True):
            groups.setdefault((run["mode"], run["path"]), []).append(run)
    order = sorted(groups, key=lambda key: (key[1], _MODE_ORDER.index(key[0])))
    return {key: sorted(groups[key], key=lambda r: r["seed"]) for key in order}


def summarize_runs(runs, alpha=ALPHA, confidence=CONFIDENCE, metric="test_accuracy"):
    """Intervals, joint-vs-standalone tests and ranking correlation of runs.

    Args:
        runs: the `runs` list of a results.json (entries with `mode`, `seed`,
            `path`, `label`, `test_accuracy`, `best_epoch`, `complete`).
            Incomplete runs are left out.
        alpha: significance level of the tests.
        confidence: confidence level of the intervals.
        metric: the accuracy compared and ranked (`"test_accuracy"`, or
            e.g. `"best_val_accuracy"`).

    Returns:
        A dict:
        - `alpha`, `confidence`, `metric`, `welch_min_runs`;
        - `groups`: per (path, mode): `mode`, `path`, `label`, `seeds`, `n`,
          `accuracy` and `best_epoch` (each a `mean_interval` dict with the
          per-seed `values`);
        - `comparisons`: per path with both modes: `path`, `label`, the
          `compare` dict, `p_holm` and `significant` (Holm-adjusted p < alpha);
        - `ranking`: `rank_correlation` of the paths' mean joint and mean
          standalone `metric`, plus `paths`, `labels`, `joint`, `standalone`
          and `per_seed` (tau per seed with both modes for every path);
          `None` with fewer than two such paths.
    """
    _check_alpha(alpha)
    groups = []
    by_key = {}
    for (mode, path), members in _groups(runs).items():
        accuracy = dict(
            mean_interval([r[metric] for r in members], confidence),
            values=[r[metric] for r in members],
        )
        epochs = [r["best_epoch"] for r in members]
        group = {
            "mode": mode,
            "path": path,
            "label": members[0]["label"],
            "seeds": [r["seed"] for r in members],
            "n": len(members),
            "accuracy": accuracy,
            "best_epoch": dict(mean_interval(epochs, confidence), values=epochs),
        }
        groups.append(group)
        by_key[(mode, path)] = group

    paths = sorted(
        {
            path
            for mode, path in by_key
            if ("joint", path) in by_key and ("standalone", path) in by_key
        }
    )
    comparisons = []
    for path in paths:
        joint, alone = by_key[("joint", path)], by_key[("standalone", path)]
        comparisons.append(
            dict(
                compare(
                    joint["accuracy"]["values"],
                    alone["accuracy"]["values"],
                    confidence,
                ),
                path=path,
                label=joint["label"],
            )
        )
    for comparison, adjusted in zip(
        comparisons, holm([c["p_value"] for c in comparisons])
    ):
        comparison["p_holm"] = adjusted
        comparison["significant"] = adjusted is not None and adjusted < alpha

    ranking = None
    if len(paths) >= 2:
        joint = [by_key[("joint", p)]["accuracy"]["mean"] for p in paths]
        alone = [by_key[("standalone", p)]["accuracy"]["mean"] for p in paths]
        ranking = dict(
            rank_correlation(joint, alone, alpha),
            paths=paths,
            labels=[by_key[("joint", p)]["label"] for p in paths],
            joint=joint,
            standalone=alone,
            per_seed=_per_seed_ranking(runs, paths, metric),
        )
    return {
        "alpha": alpha,
        "confidence": confidence,
        "metric": metric,
        "welch_min_runs": WELCH_MIN_RUNS,
        "groups": groups,
        "comparisons": comparisons,
        "ranking": ranking,
    }


def _per_seed_ranking(runs, paths, metric):
    scores = {}
    for run in runs:
        if run.get("complete", True):
            scores[(run["mode"], run["seed"], run["path"])] = run[metric]
    rows = []
    for seed in sorted({seed for _, seed, _ in scores}):
        keys = [(mode, seed, p) for p in paths for mode in ("joint", "standalone")]
        if all(key in scores for key in keys):
            joint = [scores[("joint", seed, p)] for p in paths]
            alone = [scores[("standalone", seed, p)] for p in paths]
            if np.ptp(joint) > 0 and np.ptp(alone) > 0:
                result = scipy_stats.kendalltau(joint, alone)
                rows.append(
                    {
                        "seed": seed,
                        "kendall_tau": float(result.statistic),
                        "kendall_p": float(result.pvalue),
                    }
                )
    return rows


# === Markdown ===


def _fmt_p(p):
    if p is None:
        return "—"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _fmt_interval(interval, digits):
    if interval["ci"] is None:
        return f"{interval['mean']:.{digits}f} (no interval, n = 1)"
    low, high = interval["ci"]
    return f"{interval['mean']:.{digits}f} ± {interval['half_width']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _test_name(comparison):
    if comparison["test"] == "welch":
        return "Welch"
    if comparison["test"] == "permutation":
        return (
            "permutation (exact)"
            if comparison["permutation_exact"]
            else "permutation (Monte Carlo)"
        )
    return "none (n = 1)"


def stats_markdown(results, alpha=ALPHA):
    """The statistics section of report.md for a results.json dict.

    Args:
        results: a dict with a `runs` list, as in results.json or as merged
            by `keras_supernet.report.load_results`.
        alpha: significance level.

    Returns:
        Markdown starting with a `## Statistics over seeds` heading: per path
        and mode, mean ± 95% t-interval of test accuracy and best epoch; per
        path, joint minus standalone with its interval, the test used, its
        p-value, the Holm-adjusted p-value and whether it is significant;
        then Kendall's tau and Spearman's rho between the paths' joint and
        standalone mean accuracies, with the chance level.
    """
    summary = summarize_runs(results["runs"], alpha=alpha)
    confidence = round(summary["confidence"] * 100)
    lines = ["## Statistics over seeds", ""]
    if not summary["groups"]:
        lines += ["No complete run yet.", ""]
        return "\n".join(lines)
    if all(group["n"] == 1 for group in summary["groups"]):
        # Said once, rather than "no interval" in every cell of two tables.
        lines.append(
            "One seed per path and mode: confidence intervals and tests of "
            "joint vs standalone need at least two (train more seeds, e.g. "
            "`--seeds=0,1,2`, or merge run folders with `bin/report`)."
            + (
                " The ranking of the paths needs one."
                if summary["ranking"] is not None
                else ""
            )
        )
        if summary["ranking"] is not None:
            lines += ["", "### Ranking of paths: joint vs standalone", ""]
            lines += _ranking_lines(summary["ranking"], alpha)
        lines.append("")
        return "\n".join(lines)
    lines.append(
        f"Mean over seeds ± half-width of the {confidence}% Student's t confidence interval "
        f"(interval in brackets; none with a single seed; with few seeds a best-epoch interval "
        f"may reach past the epochs trained). Accuracy: test accuracy at the best epoch "
        f"(highest validation accuracy)."
    )
    lines += [
        "",
        "| Configuration | Mode | n | Test accuracy | Best epoch |",
        "|---|---|---|---|---|",
    ]
    for group in summary["groups"]:
        lines.append(
            f"| {group['label']} | {_MODE_TITLE.get(group['mode'], group['mode'])} | {group['n']} | "
            f"{_fmt_interval(group['accuracy'], 4)} | {_fmt_interval(group['best_epoch'], 1)} |"
        )

    comparisons = summary["comparisons"]
    if comparisons:
        lines += ["", "### Joint vs standalone", ""]
        lines.append(
            f"Two-sided test of equal mean test accuracy per path, the seeds of each mode taken as "
            f"independent samples: Welch's t-test when both modes have at least {WELCH_MIN_RUNS} runs, "
            f"otherwise an exact permutation test of the difference of means (no normality "
            f"assumption; with few runs it cannot reach small p-values, e.g. 0.1 at best with 3 "
            f"runs per mode); no test with a single run. Significance level alpha = {alpha:g}. "
            f"Testing {len(comparisons)} paths at once inflates false positives, so p-values are "
            f"also Holm-adjusted (family-wise error rate alpha over all paths) and **yes** marks "
            f"adjusted p < {alpha:g}; *(unadjusted only)* marks p < {alpha:g} before adjustment only."
        )
        lines += [
            "",
            f"| Configuration | Joint − standalone [{confidence}% Welch CI] | Test | p | Holm p | Significant |",
            "|---|---|---|---|---|---|",
        ]
        for c in comparisons:
            diff = f"{c['difference']:+.4f}"
            if c["difference_ci"] is not None:
                diff += f" [{c['difference_ci'][0]:+.4f}, {c['difference_ci'][1]:+.4f}]"
            if c["significant"]:
                mark = "**yes**"
            elif c["p_value"] is not None and c["p_value"] < alpha:
                mark = "*(unadjusted only)*"
            elif c["p_value"] is None:
                mark = "—"
            else:
                mark = "no"
            lines.append(
                f"| {c['label']} | {diff} | {_test_name(c)} | {_fmt_p(c['p_value'])} | "
                f"{_fmt_p(c['p_holm'])} | {mark} |"
            )

    ranking = summary["ranking"]
    if ranking is not None:
        lines += ["", "### Ranking of paths: joint vs standalone", ""]
        lines += _ranking_lines(ranking, alpha)
    lines.append("")
    return "\n".join(lines)


def _ranking_lines(ranking, alpha):
    n = ranking["n"]
    lines = [
        f"Does the supernet rank the paths the way standalone training does? Correlation between "
        f"each path's mean joint and mean standalone test accuracy over {n} paths "
        f"(two-sided p-values).",
        "",
    ]
    if ranking["kendall_tau"] is None:
        lines.append(
            "Undefined: every path has the same mean accuracy in one of the modes."
        )
        return lines
    if ranking["kendall_exact"]:
        kendall_kind = "exact"
    else:
        kendall_kind = "normal approximation" + (
            ", tied accuracies" if ranking["ties"] else ""
        )
    spearman_kind = (
        "exact permutation" if ranking["spearman_exact"] else "Monte Carlo permutation"
    )
    lines.append(
        f"- Kendall's tau = **{ranking['kendall_tau']:+.3f}** (p = {_fmt_p(ranking['kendall_p'])}, {kendall_kind})"
    )
    lines.append(
        f"- Spearman's rho = **{ranking['spearman_rho']:+.3f}** (p = {_fmt_p(ranking['spearman_p'])}, "
        f"{spearman_kind})"
    )
    chance = ranking["chance"]
    text = f"- Number of paths: {n}. By chance (a random ranking) tau is 0 on average"
    if chance["critical_tau"] is None:
        text += (
            f"; with {n} paths even a perfect agreement has p = {_fmt_p(chance['min_p_value'])}, so no "
            f"tau can be significant at alpha = {alpha:g}."
        )
    else:
        text += f"; with {n} paths tau ≥ {chance['critical_tau']:.3f} is needed for p < {alpha:g}."
    lines.append(text)
    if ranking["per_seed"]:
        taus = ", ".join(
            f"{row['kendall_tau']:+.2f} (seed {row['seed']})"
            for row in ranking["per_seed"]
        )
        lines.append(f"- Kendall's tau within each seed: {taus}.")
    joint_rank = scipy_stats.rankdata([-v for v in ranking["joint"]], method="min")
    alone_rank = scipy_stats.rankdata([-v for v in ranking["standalone"]], method="min")
    lines += [
        "",
        "| Configuration | Joint accuracy | Joint rank | Standalone accuracy | Standalone rank |",
        "|---|---|---|---|---|",
    ]
    for i, label in enumerate(ranking["labels"]):
        lines.append(
            f"| {label} | {ranking['joint'][i]:.4f} | {int(joint_rank[i])} | "
            f"{ranking['standalone'][i]:.4f} | {int(alone_rank[i])} |"
        )
    return lines
