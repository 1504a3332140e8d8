"""Does re-fitting each path's head raise the ranking study's Kendall tau?

The narrow study (docs/results/ranking/) trained 30 architectures alone (4
seeds each): its ground truth is kept in ranking.json. Its uniform
supernets (seeds 0, 1, 2) were trained again with `bin/rank
--stage=supernets --methods=uniform,refit_head` (commands.sh) into study
folders of their own, reusing the study's selection; this script compares
both methods' scores with that ground truth, with the metrics and the
bootstrap of `keras_supernet.rank.analyze`, and checks that the uniform
scores are the study's own, bit for bit (same seeds, same code path).

    PYTHONPATH=. python docs/results/ranking/refit_head/compare.py \\
        docs/results/ranking/ranking.json OUTPUT_DIR STUDY_DIR...
"""

import glob
import json
import os
import sys

import numpy as np

from keras_supernet import runs
from keras_supernet import stats

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
    top_half = truth >= np.median(truth)
    result = {
        "ground_truth": os.path.relpath(ranking_json),
        "architectures": len(paths),
        "supernet_seeds": seeds,
        "refit_batches": records["refit_head"][seeds[0]]["settings"]["refit_batches"],
        "uniform_scores_equal_the_studys": same,
        "methods": {},
    }
    draws = {}
    for method in METHODS:
        scores = np.stack(
            [np.asarray(records[method][s]["scores"], dtype=np.float64) for s in seeds]
        )
        draws[method] = scores

        def mean_tau(index, scores=scores):
            values = [stats.kendall_tau(s[index], truth[index]) for s in scores]
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        entry = {
            "kendall_tau": [stats.kendall_tau(s, truth) for s in scores],
            "spearman": [stats.spearman_rho(s, truth) for s in scores],
            "top5_overlap": [stats.top_k_overlap(s, truth) for s in scores],
            "regret_pp": [100 * stats.regret(s, truth) for s in scores],
            "top_half_kendall_tau": [
                stats.kendall_tau(s[top_half], truth[top_half]) for s in scores
            ],
            "kendall_tau_interval": stats.bootstrap_interval(
                mean_tau, len(paths), seed=0
            ),
            "score_cpu_seconds_per_architecture": float(
                np.mean([records[method][s]["score_cpu_seconds"] for s in seeds])
                / len(paths)
            ),
        }
        for key in list(entry):
            if isinstance(entry[key], list):
                entry[f"{key}_mean"] = float(np.mean(entry[key]))
        result["methods"][method] = entry

    def delta(index):
        def mean_tau(scores):
            return float(
                np.mean([stats.kendall_tau(s[index], truth[index]) for s in scores])
            )

        return mean_tau(draws["refit_head"]) - mean_tau(draws["uniform"])

    result["kendall_tau_delta"] = (
        result["methods"]["refit_head"]["kendall_tau_mean"]
        - result["methods"]["uniform"]["kendall_tau_mean"]
    )
    result["kendall_tau_delta_interval"] = stats.bootstrap_interval(
        delta, len(paths), seed=0
    )
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
