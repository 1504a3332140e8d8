"""The strategy study of docs/results/search.md: evolution against random
search at 1%, 5% and 10% of a 256-path space, 10 search seeds each, the
paths found ranked among every path's score (an exhaustive bin/search).

    PYTHONPATH=. python docs/results/search/study.py runs/search256 \
        runs/search256/exhaustive docs/results/search/study256.json

A variant: evolution alone with another population size (the default is
`budget // 8`, at least 8), e.g. 4:

    PYTHONPATH=. python docs/results/search/study.py runs/search256 \
        runs/search256/exhaustive docs/results/search/study256_pop4.json 4
"""

import os
import sys

from keras_supernet import runs
from keras_supernet import search


def main(run_dir, exhaustive_dir, output, population_size=None):
    exhaustive = search.read_search(exhaustive_dir, run_dir)
    run = exhaustive["settings"]["run"]
    loaded = runs.RunFolder(run_dir).load(run["mode"], run["seed"], None, run["epoch"])
    variant = {}
    if population_size is not None:
        variant = {
            "strategies": ("evolution",),
            "population_size": int(population_size),
        }
    study = search.strategy_study(
        loaded.supernet,
        exhaustive["evaluated"],
        os.path.join(run_dir, f"study{population_size or ''}"),
        seeds=range(10),
        **variant,
    )
    study["population_size"] = variant.get("population_size", "default")
    study["exhaustive"] = os.path.relpath(exhaustive_dir)
    runs.write_json(output, study)
    for row in study["summary"]:
        print(
            f"{row['strategy']:>9} budget {row['budget']:>3}: ranks {row['ranks']} "
            f"median {row['median_rank']:g}, top-1% (rank <= {study['top1_rank']}) "
            f"in {row['top1_hits']}/{row['seeds']} seeds"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
