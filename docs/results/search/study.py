"""The strategy study of docs/results/search.md: search strategies against
each other at 1%, 5% and 10% of a space, 10 search seeds each, the paths
found ranked among every path's score (an exhaustive bin/search).

    PYTHONPATH=. python docs/results/search/study.py runs/search256 \
        runs/search256/exhaustive docs/results/search/study256.json

Options after the three paths (any order):

- `strategies=random,regularized`: the strategies (default random and
  evolution);
- `population_size=4`, `tournament_size=2`: the evolutions' (default:
  `run_search`'s);
- `fractions=0.05,0.1`: the budgets (default 0.01, 0.05, 0.1);
- `seeds=10-39`: the search seeds (default 0-9).

A bare number as fourth argument is `population_size` with evolution alone
(the earlier form), e.g.

    PYTHONPATH=. python docs/results/search/study.py runs/search256 \
        runs/search256/exhaustive docs/results/search/study256_pop4.json 4
"""

import os
import sys
import time

from keras_supernet import runs
from keras_supernet import search


def main(run_dir, exhaustive_dir, output, *options):
    exhaustive = search.read_search(exhaustive_dir, run_dir)
    run = exhaustive["settings"]["run"]
    loaded = runs.RunFolder(run_dir).load(run["mode"], run["seed"], None, run["epoch"])
    variant = {}
    for option in options:
        if option.isdigit():
            variant.update(strategies=("evolution",), population_size=int(option))
            continue
        key, value = option.split("=", 1)
        if key in ("strategies", "fractions"):
            cast = str if key == "strategies" else float
            variant[key] = tuple(cast(v) for v in value.split(","))
        elif key in ("population_size", "tournament_size"):
            variant[key] = int(value)
        elif key == "seeds":
            first, last = value.split("-")
            variant[key] = range(int(first), int(last) + 1)
        else:
            raise ValueError(f"Unknown option {option!r}.")
    name = os.path.splitext(os.path.basename(output))[0]
    start = time.time(), time.process_time()
    study = search.strategy_study(
        loaded.supernet,
        exhaustive["evaluated"],
        os.path.join(run_dir, name),
        **{"seeds": range(10), **variant},
    )
    study["population_size"] = variant.get("population_size", "default")
    study["tournament_size"] = variant.get("tournament_size", "default")
    seeds = variant.get("seeds", range(10))
    study["seeds"] = [seeds[0], seeds[-1]]
    study["exhaustive"] = os.path.relpath(exhaustive_dir)
    study["wall_s"] = round(time.time() - start[0], 1)
    study["cpu_s"] = round(time.process_time() - start[1], 1)
    runs.write_json(output, study)
    for row in study["summary"]:
        print(
            f"{row['strategy']:>11} budget {row['budget']:>3}: ranks {row['ranks']} "
            f"median {row['median_rank']:g}, top-1% (rank <= {study['top1_rank']}) "
            f"in {row['top1_hits']}/{row['seeds']} seeds"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
