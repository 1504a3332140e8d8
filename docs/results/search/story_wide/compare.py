"""Retrained paths of the story's fifth part against the report model.

Reads each run folder's results.json (standalone runs), the report model's
3x3->3x3 standalone runs (docs/results/full_mnist_v030, seeds 0-2, the
recipe every path here was retrained with), and prints and writes per path:
the test accuracies, mean and 95% interval, and against the report model
Welch's t-test and the exact permutation test (keras_supernet.stats).

    PYTHONPATH=. python docs/results/search/story_wide/compare.py OUTPUT.json \\
        NAME=RUN_DIR[,RUN_DIR...] [NAME=...]
"""

import json
import os
import sys

from keras_supernet import stats

REPORT = "docs/results/full_mnist_v030/results.json"


def _accuracies(run_dirs):
    values, labels = [], set()
    for folder in run_dirs:
        with open(os.path.join(folder, "results.json")) as f:
            for run in json.load(f)["runs"]:
                if run["mode"] == "standalone" and run["complete"]:
                    values.append(run["test_accuracy"])
                    labels.add(run["label"])
    if len(labels) != 1:
        raise SystemExit(f"error: expected one path in {run_dirs}, found {labels}")
    return labels.pop(), values


def main(output, *specs):
    with open(REPORT) as f:
        report = [
            r["test_accuracy"]
            for r in json.load(f)["runs"]
            if r["mode"] == "standalone" and r["label"] == "3x3->3x3"
        ]
    rows = {"report 3x3->3x3": {"label": "3x3->3x3", "test_accuracy": report}}
    rows["report 3x3->3x3"].update(stats.mean_interval(report))
    for spec in specs:
        name, folders = spec.split("=", 1)
        label, values = _accuracies(folders.split(","))
        row = {"label": label, "test_accuracy": values, **stats.mean_interval(values)}
        row["welch_vs_report"] = stats.welch_test(values, report)
        row["permutation_vs_report"] = stats.permutation_test(values, report)
        rows[name] = row
    for name, row in rows.items():
        line = f"{name}: {', '.join(f'{v:.4f}' for v in row['test_accuracy'])}"
        if "welch_vs_report" in row and row["welch_vs_report"]["p_value"] is not None:
            welch = row["welch_vs_report"]
            line += (
                f"; Welch p = {welch['p_value']:.3f}, difference "
                f"{welch['ci'][0]:+.4f} to {welch['ci'][1]:+.4f}; permutation p = "
                f"{row['permutation_vs_report']['p_value']:.2f}"
            )
        print(line)
    with open(output, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
