"""Tests of docs/results/search.md: two strategies of strategy-study files
at one budget, paired by search seed.

    PYTHONPATH=. python docs/results/search/compare.py \
        docs/results/search/study625_heldout.json random local 62

Prints each strategy's top-1% hits and median rank, Fisher's exact test on
the hits (two-sided) and the Wilcoxon signed-rank test on the ranks, paired
by seed (two-sided; ties between the pair dropped, scipy's default). Rows
may come from several files (`a.json,b.json`): the first row of a strategy,
budget and seed wins.
"""

import json
import sys

import numpy as np
from scipy import stats


def main(files, first, second, budget):
    budget = int(budget)
    ranks, top1 = {}, None
    for name in files.split(","):
        with open(name) as f:
            study = json.load(f)
        top1 = study["top1_rank"]
        for row in study["runs"]:
            if row["budget"] == budget and row["strategy"] in (first, second):
                key = (row["strategy"], row["search_seed"])
                ranks.setdefault(key, row["rank"])
    seeds = sorted(s for (st, s) in ranks if st == first and (second, s) in ranks)
    a = np.array([ranks[(first, s)] for s in seeds])
    b = np.array([ranks[(second, s)] for s in seeds])
    hits = [int((a <= top1).sum()), int((b <= top1).sum())]
    n = len(seeds)
    fisher = stats.fisher_exact([[hits[0], n - hits[0]], [hits[1], n - hits[1]]])
    wilcoxon = stats.wilcoxon(a, b) if np.any(a != b) else None
    print(
        f"budget {budget}, seeds {seeds[0]}..{seeds[-1]} ({n}), top 1% = rank <= {top1}"
    )
    for name, r, h in ((first, a, hits[0]), (second, b, hits[1])):
        print(
            f"  {name}: top-1% {h}/{n}, median rank {np.median(r):g}, mean {r.mean():.1f}, worst {r.max()}"
        )
    print(f"  Fisher exact p = {fisher.pvalue:.3g}")
    if wilcoxon is not None:
        print(f"  Wilcoxon signed-rank p = {wilcoxon.pvalue:.3g}")


if __name__ == "__main__":
    main(*sys.argv[1:])
