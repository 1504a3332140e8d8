"""Does re-fitting each path's head raise the ranking study's Kendall tau?

The narrow study (docs/results/ranking/) trained 30 architectures alone (4
seeds each): its ground truth is kept in ranking.json. Its uniform
supernets (seeds 0, 1, 2) were trained again with `bin/rank
--stage=supernets --methods=uniform,refit_head` (commands.sh) into study
folders of their own, reusing the study's selection; this script compares
both methods' scores with that ground truth, with the metrics and the
bootstrap of `keras_supernet.rank.analyze` (`rank.ranking_metrics`), and checks that the uniform
scores are the study's own, bit for bit (same seeds, same code path).

    PYTHONPATH=. python docs/results/ranking/refit_head/compare.py \\
        docs/results/ranking/ranking.json OUTPUT_DIR STUDY_DIR...
"""

import glob
import json
import os
import sys

import numpy as np

from keras_supernet import rank
from keras_supernet import runs

METHODS = ("uniform", "refit_head")


def main(ranking_json, output_dir, *study_dirs):
    with open(ranking_json) as f:
        study = json.load(f)
    truth = np.asarray(study["standalone_accuracy"], dtype=np.float64)
    paths = study["paths"]
    records = {m: {} for m in METHODS}
    for folder in study_dirs:
        for method in METHODS:
            for path in glob.glob(os.path.join(folder, "scores", method, "seed*.json")):
                record = runs.read_json(path)
                if record["paths"] != paths:
                    raise SystemExit(f"{path}: other architectures than {ranking_json}")
                records[method][record["seed"]] = record
    seeds = sorted(records["uniform"])
    if not seeds or sorted(records["refit_head"]) != seeds:
        raise SystemExit("every seed needs both methods' scores")
    committed = study["methods"]["uniform"]
    same = all(
        records["uniform"][seed]["scores"]
        == committed["scores"][committed["seeds"].index(seed)]
        for seed in seeds
    )
    result = {
        "ground_truth": os.path.relpath(ranking_json),
        "architectures": len(paths),
        "supernet_seeds": seeds,
        "refit_batches": records["refit_head"][seeds[0]]["settings"]["refit_batches"],
        "uniform_scores_equal_the_studys": same,
        "methods": {},
    }
    draws = {
        method: np.stack(
            [np.asarray(records[method][s]["scores"], dtype=np.float64) for s in seeds]
        )
        for method in METHODS
    }
    for method in METHODS:
        entry = rank.ranking_metrics(draws[method], truth, seed=0)
        entry["score_cpu_seconds_per_architecture"] = float(
            np.mean([records[method][s]["score_cpu_seconds"] for s in seeds])
            / len(paths)
        )
        result["methods"][method] = entry
    # The same bootstrap resamples as each method's interval (seed 0).
    compared = rank.ranking_metrics(
        draws["refit_head"], truth, baseline=draws["uniform"], seed=0
    )
    result["kendall_tau_delta"] = compared["kendall_tau_delta"]
    result["kendall_tau_delta_interval"] = compared["kendall_tau_delta_interval"]
    os.makedirs(output_dir, exist_ok=True)
    runs.write_json(os.path.join(output_dir, "refit_head.json"), result)
    lines = [
        "| method | Kendall tau, mean [95% CI] | tau per seed | Spearman rho | top-5 overlap per seed "
        "| regret (pp) per seed | tau, better half | scoring CPU s per architecture |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, e in result["methods"].items():
        low, high = e["kendall_tau_interval"]
        lines.append(
            f"| `{method}` | **{e['kendall_tau_mean']:+.2f}** [{low:+.2f}, {high:+.2f}] | "
            + ", ".join(f"{v:+.2f}" for v in e["kendall_tau"])
            + f" | {e['spearman_mean']:+.2f} | "
            + ", ".join(f"{v:g}" for v in e["top5_overlap"])
            + " | "
            + ", ".join(f"{v:.2f}" for v in e["regret_pp"])
            + f" | {e['top_half_kendall_tau_mean']:+.2f} | "
            f"{e['score_cpu_seconds_per_architecture']:.2f} |"
        )
    low, high = result["kendall_tau_delta_interval"]
    lines += [
        "",
        f"Delta tau (refit_head - uniform): {result['kendall_tau_delta']:+.2f} "
        f"[{low:+.2f}, {high:+.2f}] (95% bootstrap over architectures, the same "
        "resamples for both). Uniform scores equal the study's: "
        f"{'yes' if same else 'NO'}.",
    ]
    with open(os.path.join(output_dir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
