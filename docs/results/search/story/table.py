"""The latency budget of the user's story and its space's latency table.

Measures the report's 3x3->3x3 and 5x5->5x5 models before and after building
the per-candidate latency table of the space (default `mobile7`; float
TFLite, batch 1, 1 LiteRT thread, median of 200 runs), then predicts 20,000
seeded paths.

    PYTHONPATH=. python docs/results/search/story/table.py TABLE.json SUMMARY.json [SPACE]
"""

import json
import sys
import time

import numpy as np

from keras_supernet import costs
from keras_supernet import presets


def main(table_path, summary_path, space="mobile7"):
    start, cpu = time.time(), time.process_time()
    report = presets.build_supernet(presets.load_space("report"))
    before = costs.measure_latencies(report, [0, 3], threads=1, runs=200, warmup=20)
    mobile = presets.build_supernet(presets.load_space(space))
    table = costs.LatencyTable.build(
        mobile, threads=1, runs=200, warmup=20, calibration_paths=3, seed=0, verbose=1
    )
    table.save(table_path)
    after = costs.measure_latencies(report, [0, 3], threads=1, runs=200, warmup=20)
    sample = np.random.default_rng(0).integers(0, mobile.num_paths, 20000)
    predicted = np.array([table.predict(int(p)) for p in sample])
    summary = {
        "report_3x3_3x3_ms": [before[0], after[0]],
        "report_5x5_5x5_ms": [before[1], after[1]],
        "predicted_quantiles": np.quantile(predicted, [0, 0.01, 0.05, 0.5, 1]).tolist(),
        "all_skip_predicted": table.predict(mobile.num_paths - 1),
        "wall_s": time.time() - start,
        "cpu_s": time.process_time() - cpu,
    }
    for budget in (0.027, 0.031, 0.035, 0.04):
        summary[f"fraction_under_{budget}"] = float((predicted <= budget).mean())
    print(json.dumps(summary, indent=1))
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
