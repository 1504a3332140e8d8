"""Retrained paths of the story's fifth and sixth parts against the report
model.

Reads each run folder's results.json (standalone runs), the report model's
3x3->3x3 standalone runs (docs/results/full_mnist_v030, seeds 0-2, the
recipe every path here was retrained with), and prints and writes per path:
the test accuracies, mean and 95% interval, and against the report model
Welch's t-test and the exact permutation test (keras_supernet.stats).
`--against=NAME` also tests every other path against the path NAME
(fields `welch_vs_NAME`, `permutation_vs_NAME`); `--report=FILE[,FILE...]`
reads the report model's runs from these results.json files instead (the
same recipe; docs/results/full_mnist_seeds34 holds its seeds 3 and 4).

    PYTHONPATH=. python docs/results/search/story_wide/compare.py OUTPUT.json \\
        NAME=RUN_DIR[,RUN_DIR...] [NAME=...] [--against=NAME] [--report=FILES]
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


def _test(row, name, baseline):
    """Welch's and the permutation test of `row` against `baseline`."""
    row[f"welch_vs_{name}"] = stats.welch_test(row["test_accuracy"], baseline)
    row[f"permutation_vs_{name}"] = stats.permutation_test(
        row["test_accuracy"], baseline
    )


def _line(row, against):
    tests = [("report", "vs_report")] + [(name, f"vs_{name}") for name in against]
    parts = []
    for name, suffix in tests:
        welch = row.get(f"welch_{suffix}")
        if welch and welch["p_value"] is not None:
            parts.append(
                f"against {name}: Welch p = {welch['p_value']:.3f}, difference "
                f"{welch['ci'][0]:+.4f} to {welch['ci'][1]:+.4f}; permutation p = "
                f"{row[f'permutation_{suffix}']['p_value']:.2f}"
            )
    return "; ".join(parts)


def main(output, *args):
    options = {"--against": [], "--report": [REPORT]}
    specs = []
    for arg in args:
        name, _, value = arg.partition("=")
        if name in options:
            options[name] = value.split(",")
        else:
            specs.append(arg)
    against = options["--against"]
    report = []
    for path in options["--report"]:
        with open(path) as f:
            report += [
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
        _test(row, "report", report)
        rows[name] = row
    for name in against:
        if name not in rows:
            raise SystemExit(f"error: --against={name} names no path given")
        for other, row in rows.items():
            if other not in (name, "report 3x3->3x3"):
                _test(row, name, rows[name]["test_accuracy"])
    for name, row in rows.items():
        line = f"{name}: {', '.join(f'{v:.4f}' for v in row['test_accuracy'])}"
        tests = _line(row, against)
        print(line + (f"; {tests}" if tests else ""))
    with open(output, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
