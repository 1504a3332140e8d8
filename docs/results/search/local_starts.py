"""How many random starts local search needs: a plain-Python simulation of
`strategy="local"` on the exhaustive scores of docs/results/search.md, over
search seeds 100..299 (not the seeds the study reports), at 1%, 5% and 10% of
each space. It draws from its own generator (not the sampler's), so its
paths differ from `run_search`'s; it only compares the numbers of starts.

    PYTHONPATH=. python docs/results/search/local_starts.py \
        runs/search256/exhaustive runs/search625/exhaustive

Prints, per space and budget, the share of seeds whose best path is in the
top 1%, for random search and for local search from 1, 2, 3, 4, 6 and 8
random paths.
"""

import json
import math
import sys

import numpy as np


def _scores(folder):
    with open(f"{folder}/search.json") as f:
        records = json.load(f)["evaluated"]
    return {int(r["path"]): (r["val_accuracy"], -r["val_loss"]) for r in records}


def _neighbours(path, choices, candidates):
    # Paths are mixed-radix numbers, one digit per choice.
    digits = [(path // candidates**j) % candidates for j in range(choices)]
    out = []
    for j in range(choices):
        for k in range(candidates):
            if k != digits[j]:
                out.append(path + (k - digits[j]) * candidates**j)
    return out


def _local(score, n, budget, rng, starts, choices, candidates):
    order = rng.permutation(n)
    scored = [int(p) for p in order[:starts]]
    seen = set(scored)
    while len(scored) < budget:
        child = None
        for parent in sorted(scored, key=score.__getitem__, reverse=True):
            free = [
                q for q in _neighbours(parent, choices, candidates) if q not in seen
            ]
            if free:
                child = free[rng.integers(len(free))]
                break
        if child is None:
            child = int(next(q for q in rng.permutation(n) if q not in seen))
        scored.append(child)
        seen.add(child)
    return scored


def main(*folders, choices=4):
    for folder in folders:
        score = _scores(folder)
        n = len(score)
        candidates = round(n ** (1 / choices))
        order = sorted(score, key=score.__getitem__, reverse=True)
        rank = {p: i + 1 for i, p in enumerate(order)}
        top1 = math.ceil(0.01 * n)
        for fraction in (0.01, 0.05, 0.1):
            budget = max(1, round(fraction * n))
            line = f"{n} paths, budget {budget}:"
            for starts in ("random", 1, 2, 3, 4, 6, 8):
                hits = 0
                for seed in range(100, 300):
                    rng = np.random.default_rng(seed)
                    if starts == "random":
                        found = [int(p) for p in rng.permutation(n)[:budget]]
                    else:
                        found = _local(
                            score,
                            n,
                            budget,
                            rng,
                            min(starts, budget),
                            choices,
                            candidates,
                        )
                    best = max(found, key=score.__getitem__)
                    hits += rank[best] <= top1
                line += f" {starts}: {hits / 2:.0f}%"
            print(line)


if __name__ == "__main__":
    main(*sys.argv[1:])
