"""How well a latency table predicts measured latencies (docs/results/search.md).

Builds the per-candidate LiteRT latency table of a run's supernet (1 thread,
written to the run folder, where `bin/search --latency_table` reads it) and
compares its predictions with whole-path measurements on 20 seeded paths.

    PYTHONPATH=. python docs/results/search/latency.py runs/search256 \
        docs/results/search/latency256.json
"""

import os
import sys
import time

from keras_supernet import costs
from keras_supernet import runs


def main(run_dir, output):
    loaded = runs.RunFolder(run_dir).load("joint", 0, None, "best")
    start = time.perf_counter()
    table = costs.LatencyTable.build(loaded.supernet, threads=1)
    build_s = time.perf_counter() - start
    table.save(os.path.join(run_dir, "latency_table.json"))
    start = time.perf_counter()
    quality = costs.evaluate_latency_table(loaded.supernet, table, num_paths=20)
    quality.update(
        build_seconds=build_s,
        evaluate_seconds=time.perf_counter() - start,
        base_ms=table.base_ms,
        threads=1,
    )
    runs.write_json(output, quality)
    print(
        f"pearson {quality['pearson']:.3f} spearman {quality['spearman']:.3f} "
        f"mean abs error {quality['mape_percent']:.1f}% max "
        f"{quality['max_ape_percent']:.1f}% (build {build_s:.0f} s)"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
