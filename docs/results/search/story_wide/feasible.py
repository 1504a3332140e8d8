"""How many paths of a space fit a latency budget, by the space's table.

A path's predicted latency is `base_ms` plus one entry per choice, so the
predictions of every path are the outer sum of the choices' entries: this
counts them all (3.3 million here) without building a supernet.

    PYTHONPATH=. python docs/results/search/story_wide/feasible.py TABLE.json REFERENCE
"""

import sys

import numpy as np

from keras_supernet import costs


def main(table_path, reference):
    table = costs.LatencyTable.load(table_path)
    if table.path_shapes is not None:
        raise SystemExit("error: the table's input shapes depend on the path")
    budget = table.predict(reference)
    sums = np.zeros(1)
    for choice in table.choices:
        sums = np.add.outer(sums, np.asarray(choice["ms"][0])).ravel()
    sums += table.base_ms
    fit = int((sums <= budget).sum())
    print(
        f"budget {budget:.4f} ms (the reference's prediction): {fit:,} of {sums.size:,} paths fit"
    )
    print(
        f"predicted ms: min {sums.min():.4f}, median {np.median(sums):.4f}, max {sums.max():.4f}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
