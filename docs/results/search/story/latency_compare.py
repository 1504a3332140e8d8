"""Measured latency of the report's 3x3->3x3 model against the search's winner.

Float TFLite, batch 1, 1 LiteRT thread, 200 timed runs each, the two models
interleaved over ROUNDS rounds (default 5; the shared machine's load changes
between rounds, so each round's ratio compares the two under one load).

    PYTHONPATH=. python docs/results/search/story/latency_compare.py \\
        PATH_INDEX TABLE.json OUTPUT.json [SPACE [ROUNDS]]

SPACE: the winner's space (default `mobile7`).
"""

import json
import sys
import time

import numpy as np

from keras_supernet import costs
from keras_supernet import presets


def main(path, table_path, output_path, space="mobile7", rounds=5):
    report = presets.build_supernet(presets.load_space("report"))
    mobile = presets.build_supernet(presets.load_space(space))
    winner = int(path)
    start, cpu = time.time(), time.process_time()
    rows = {
        "report_3x3_3x3": [],
        "winner": [],
        "table_prediction": costs.LatencyTable.load(table_path).predict(winner),
    }
    for _ in range(int(rounds)):
        rows["report_3x3_3x3"].append(
            costs.measure_latency(report, 0, threads=1, runs=200, warmup=20)
        )
        rows["winner"].append(
            costs.measure_latency(mobile, winner, threads=1, runs=200, warmup=20)
        )
    rows["median_ms"] = {
        k: float(np.median(rows[k])) for k in ("report_3x3_3x3", "winner")
    }
    ratios = np.array(rows["winner"]) / np.array(rows["report_3x3_3x3"])
    rows["winner_over_report"] = {
        "median": float(np.median(ratios)),
        "rounds_winner_faster": int((ratios < 1).sum()),
        "rounds": len(ratios),
    }
    rows["wall_s"], rows["cpu_s"] = time.time() - start, time.process_time() - cpu
    print(json.dumps(rows, indent=1))
    with open(output_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
