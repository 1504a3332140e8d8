"""How trustworthy is the ranking study's ground truth with 8 standalone seeds?

The narrow study (docs/results/ranking/) trained its 30 architectures alone
with seeds 0 to 3; ranking.json keeps every seed's accuracies and every
method's supernet scores (its study folders are not kept). The same
standalone runs with seeds 4 to 7 (`bin/rank --stage=standalone`, the
study's flags and selection: commands.sh) go into study folders of their
own; one more folder re-runs seed 0 of the first architectures, to check
that a re-run reproduces the study's runs bit for bit (same seed, same code
path), so the two sets of seeds are one ground truth.

This script then measures, with `keras_supernet.rank`'s functions:
- the single-run noise ceiling (Kendall tau between two seeds, every pair)
  and the reliability r of one run, over 4 and over 8 seeds;
- the ceiling of a ground truth of 4 seeds (what the study compares
  supernets with): two such ground truths made from disjoint seeds agree at
  `split_half_tau` of the 8 seeds (every split into 4 and 4; among them
  seeds 0-3, the study's, against 4-7);
- every method's ranking metrics against the 8-seed ground truth, and
  against the study's 4-seed one (which must equal ranking.json's: checked).

    PYTHONPATH=. python docs/results/ranking/more_seeds/compare.py \\
        docs/results/ranking/ranking.json OUTPUT_DIR STUDY_DIR...
"""

import json
import os
import sys

import numpy as np

from keras_supernet import rank
from keras_supernet import runs
from keras_supernet import stats

METRIC_KEYS = (
    "kendall_tau",
    "spearman",
    "top5_overlap",
    "regret_pp",
    "top_half_kendall_tau",
    "kendall_tau_interval",
)


def ground_truth(per_seed):
    """The noise numbers of a ground truth made of `per_seed`'s rows
    (`rank.ground_truth_noise`, with the single-run tau it predicts)."""
    entry = {"seeds": len(per_seed), **rank.ground_truth_noise(per_seed)}
    entry["seed_tau_predicted"] = rank.predicted_seed_tau(entry["reliability"])
    return entry


def main(ranking_json, output_dir, *study_dirs):
    with open(ranking_json) as f:
        study = json.load(f)
    paths = study["paths"]
    if study["architecture_indices"] != list(range(len(paths))):
        raise SystemExit(f"{ranking_json}: not every selected architecture is complete")
    merged = rank.load_study(study_dirs)
    if merged["selection"]["paths"] != paths:
        raise SystemExit(f"{study_dirs}: other architectures than {ranking_json}")
    difference = rank.StudyConfig.from_json(study["config"]).mismatch(merged["config"])
    if difference is not None:
        raise SystemExit(f"{study_dirs}: another study ({difference[0]} differs)")
    new = rank.standalone_accuracies(merged)
    committed = {
        int(s): np.asarray(v) for s, v in study["standalone_accuracy_per_seed"].items()
    }

    # Re-runs of the study's own seeds: they must equal its numbers exactly.
    reproduced = []
    for seed in sorted(set(new) & set(committed)):
        done = np.flatnonzero(np.isfinite(new[seed]))
        reproduced.append(
            {
                "seed": seed,
                "architectures": [int(a) for a in done],
                "equal": bool(np.array_equal(new[seed][done], committed[seed][done])),
                "largest_difference": float(
                    np.max(np.abs(new[seed][done] - committed[seed][done]), initial=0.0)
                ),
            }
        )
    added = sorted(s for s in new if s not in committed)
    missing = [s for s in added if not np.all(np.isfinite(new[s]))]
    if not added or missing:
        raise SystemExit(f"seeds {missing or added} are not complete in {study_dirs}")
    old_seeds = sorted(committed)
    per_seed = np.stack([committed[s] for s in old_seeds] + [new[s] for s in added])
    seeds = old_seeds + added
    halves = [
        np.stack([committed[s] for s in old_seeds]),
        np.stack([new[s] for s in added]),
    ]
    truth4 = halves[0].mean(axis=0)
    truth = per_seed.mean(axis=0)
    result = {
        "ground_truth": os.path.relpath(ranking_json),
        "architectures": len(paths),
        "standalone_seeds": seeds,
        "reproduced": reproduced,
        "ground_truths": {
            "study (seeds %s)" % ",".join(map(str, old_seeds)): ground_truth(halves[0]),
            "added (seeds %s)" % ",".join(map(str, added)): ground_truth(halves[1]),
            "all (seeds %s)" % ",".join(map(str, seeds)): ground_truth(per_seed),
        },
        "study_against_added_tau": stats.kendall_tau(truth4, halves[1].mean(axis=0)),
        "standalone_accuracy": [float(v) for v in truth],
        "standalone_accuracy_per_seed": {
            str(s): [float(v) for v in row] for s, row in zip(seeds, per_seed)
        },
        "cpu_seconds": float(
            sum(
                sum(p["epoch_cpu"]) + sum(h.get("eval_cpu", 0.0) for h in p["history"])
                for p in merged["progress"]
            )
        ),
        "methods": {},
    }
    baseline = np.asarray(study["methods"]["uniform"]["scores"], dtype=np.float64)
    consistent = True
    for method, record in study["methods"].items():
        scores = np.asarray(record["scores"], dtype=np.float64)
        base = None if method == "uniform" else baseline
        # The study's 4-seed numbers, recomputed: the check that this script
        # measures what bin/rank's report measured.
        again = rank.ranking_metrics(scores, truth4, base, seed=0)
        consistent &= all(
            np.allclose(
                np.asarray(again[k], dtype=float), np.asarray(record[k], dtype=float)
            )
            for k in METRIC_KEYS
        )
        entry = rank.ranking_metrics(scores, truth, base, seed=0)
        entry["kendall_tau_study_truth"] = again["kendall_tau_mean"]
        entry["relative_cost"] = record["relative_cost"]
        result["methods"][method] = entry
    result["study_metrics_reproduced"] = bool(consistent)
    os.makedirs(output_dir, exist_ok=True)
    runs.write_json(os.path.join(output_dir, "more_seeds.json"), result)
    with open(os.path.join(output_dir, "table.md"), "w") as f:
        f.write("\n".join(table_lines(result)) + "\n")
    print("\n".join(table_lines(result)))


def table_lines(result):
    lines = [
        "| ground truth | seeds | spread (pp) | seed sd (pp) | single-run tau (seed-to-seed) "
        "| r | two ground truths of half the seeds each: tau (predicted) | a noise-free ranking can expect |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, g in result["ground_truths"].items():
        half = (
            f"{g['split_half_tau']:+.2f} ({g['split_half_predicted']:+.2f}), "
            f"{g['seeds'] // 2} and {g['seeds'] - g['seeds'] // 2} seeds"
            if "split_half_predicted" in g
            else "n/a"
        )
        lines.append(
            f"| {name} | {g['seeds']} | {g['spread_pp']:.2f} | {g['seed_sd_pp']:.2f} | "
            f"{g['seed_tau']:+.2f} | {g['reliability']:.3f} | {half} | {g['truth_tau']:+.2f} |"
        )
    lines += [
        "",
        f"The study's ground truth (seeds 0-3) against the added one (seeds 4-7): Kendall tau "
        f"**{result['study_against_added_tau']:+.2f}**.",
        "",
        "| method | tau against 4 seeds (the study's) | tau against 8 seeds, mean [95% CI] | tau per seed "
        "| Spearman rho | top-5 overlap per seed | regret (pp) per seed | tau, better half "
        "| Δtau vs uniform [95% CI] | training cost vs uniform |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, e in result["methods"].items():
        low, high = e["kendall_tau_interval"]
        delta = (
            f"{e['kendall_tau_delta']:+.2f} [{e['kendall_tau_delta_interval'][0]:+.2f}, "
            f"{e['kendall_tau_delta_interval'][1]:+.2f}]"
            if "kendall_tau_delta" in e
            else ""
        )
        lines.append(
            f"| `{method}` | {e['kendall_tau_study_truth']:+.2f} | **{e['kendall_tau_mean']:+.2f}** "
            f"[{low:+.2f}, {high:+.2f}] | "
            + ", ".join(f"{v:+.2f}" for v in e["kendall_tau"])
            + f" | {e['spearman_mean']:+.2f} | "
            + ", ".join(f"{v:g}" for v in e["top5_overlap"])
            + " | "
            + ", ".join(f"{v:.2f}" for v in e["regret_pp"])
            + f" | {e['top_half_kendall_tau_mean']:+.2f} | {delta} | {e['relative_cost']:.2f}x |"
        )
    checks = ", ".join(
        f"seed {r['seed']} (architectures {r['architectures']}): "
        + (
            "equal bit for bit"
            if r["equal"]
            else f"DIFFERENT by up to {r['largest_difference']:.2g}"
        )
        for r in result["reproduced"]
    )
    lines += [
        "",
        f"Re-runs of the study's seeds: {checks or 'none'}. The study's 4-seed metrics recomputed "
        f"equal ranking.json's: {'yes' if result['study_metrics_reproduced'] else 'NO'}. "
        f"CPU of the runs read (the added seeds and any check): "
        f"{result['cpu_seconds'] / 60:.0f} minutes.",
    ]
    return lines


if __name__ == "__main__":
    main(*sys.argv[1:])
