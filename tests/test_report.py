"""Tests of keras_supernet.report on hand-made results (no training)."""

import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from scipy import stats as scipy_stats

from keras_supernet import compare
from keras_supernet import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["3x3->3x3", "3x3->5x5", "5x5->3x3", "5x5->5x5"]


def _run(mode, seed, path, val, test, seconds_per_epoch, complete=True):
    history = [
        {
            "epoch": i + 1,
            "val_accuracy": v,
            "val_loss": 1 - v,
            "test_accuracy": t,
            "test_loss": 1 - t,
            "seconds": seconds_per_epoch * (i + 1),
        }
        for i, (v, t) in enumerate(zip(val, test))
    ]
    best = int(np.argmax(val)) + 1
    return {
        "mode": mode,
        "seed": seed,
        "path": path,
        "kernel_sizes": [
            3 if "3x3" in part else 5 for part in LABELS[path].split("->")
        ],
        "label": LABELS[path],
        "best_epoch": best,
        "best_val_accuracy": val[best - 1],
        "test_accuracy": test[best - 1],
        "final_test_accuracy": test[-1],
        "train_seconds": seconds_per_epoch * len(val),
        "history": history,
        "complete": complete,
    }


def _config(seeds):
    return {
        "dataset": "mnist",
        "kernel_sizes": [[3, 5], [3, 5]],
        "filters": [16, 32],
        "hidden_units": 128,
        "padding": "valid",
        "epochs": 3,
        "batch_size": 128,
        "learning_rate": 0.001,
        "seeds": seeds,
        "train_size": 55000,
        "val_size": 5000,
        "test_size": 10000,
        "normalization": {"mean": 0.1307, "std": 0.3081},
    }


def _write(folder, seeds, runs, **settings):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"config": dict(_config(seeds), **settings), "runs": runs}, f)
    return str(folder)


def _seed_runs(seed, offset):
    """Joint (40 s/epoch) and standalone (10 s/epoch) runs of every path."""
    runs = []
    for p in range(4):
        runs.append(
            _run(
                "joint",
                seed,
                p,
                [0.97, 0.98 + offset, 0.975],
                [0.96, 0.99 + offset, 0.97],
                40.0,
            )
        )
        runs.append(
            _run(
                "standalone",
                seed,
                p,
                [0.98 + offset, 0.97, 0.96],
                [0.985 + offset, 0.97, 0.96],
                10.0 + p,
            )
        )
    return runs


def _table_row(text, mode, label):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [mode, label]:
            return cells
    raise AssertionError(f"no row {mode} {label}")


def test_merged_report_table_and_times(tmp_path):
    first = _write(tmp_path / "a", [0], _seed_runs(0, 0.0))
    second = _write(tmp_path / "b", [1], _seed_runs(1, 0.002))
    report_path, curves_path = report.write_report([first, second], tmp_path / "merged")
    text = open(report_path).read()

    cells = _table_row(text, "Joint", "5x5->3x3")
    # Test accuracy at the best validation epoch (2): 0.99 and 0.992.
    assert cells[2] == f"0.9910 ± {np.std([0.99, 0.992], ddof=1):.4f}"
    assert cells[3] == "2.0 (2, 2)"
    assert cells[4] == "120 ± 0 s"
    assert cells[5] == "2"
    cells = _table_row(text, "Standalone", "3x3->3x3")
    assert cells[2] == f"0.9860 ± {np.std([0.985, 0.987], ddof=1):.4f}"
    assert cells[3] == "1.0 (1, 1)"
    assert cells[4] == "30.0 ± 0.0 s"
    assert text.index("| Standalone |") < text.index("| Joint |")

    # Joint 120 s; standalone 30, 33, 36, 39 s: one = 34.5 s, sum = 138 s.
    assert "| Joint supernet (every path) | 120 ± 0 | 1.00 |" in text
    assert "| One standalone path (mean over paths) | 34.5 ± 0.0 | 0.29 |" in text
    assert "| All 4 standalone paths (sum) | 138 ± 0 | 1.15 |" in text
    # Joint - standalone, paired by seed: 0.99 - 0.985 = +0.005 for every path.
    assert "| 3x3->3x3 | +0.0050 ± 0.0000 | 2 |" in text
    assert "seeds 0, 1" in text and "![Training curves](training_curves.png)" in text

    image = matplotlib.image.imread(curves_path)
    assert image.shape[0] > 400 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05  # not a blank canvas


# === Training curves ===


def _curve_runs(first_epoch_low):
    """3 seeds x both modes x 4 paths over 6 epochs; seed 2 of joint path 1
    dips at epoch 4, far below every mean. With `first_epoch_low`, epoch 1
    of every joint run is at 0.5."""
    runs = []
    for seed in range(3):
        for p in range(4):
            for mode, start in (("joint", 0.95), ("standalone", 0.97)):
                val = [start + 0.004 * e + 0.001 * seed for e in range(6)]
                if mode == "joint" and p == 1 and seed == 2:
                    val[3] = 0.90
                if mode == "joint" and first_epoch_low:
                    val[0] = 0.5
                runs.append(_run(mode, seed, p, val, val, 10.0))
    return {"config": _config([0, 1, 2]), "runs": runs}


def _band_extremes(ax):
    values = [
        path.vertices[:, 1]
        for collection in ax.collections
        for path in collection.get_paths()
    ]
    return (min(v.min() for v in values), max(v.max() for v in values))


def test_curves_cover_the_bands_and_share_one_legend():
    figure = report._curves_figure(_curve_runs(first_epoch_low=False))
    standalone, joint, time_axis = figure.axes
    for ax in (standalone, joint):
        low, high = _band_extremes(ax)
        assert ax.get_ylim()[0] <= low and high <= ax.get_ylim()[1]
        # One band per path in each panel, not eight in one.
        assert len(ax.collections) == 4
    assert joint.get_ylim()[0] < 0.90 and time_axis.get_ylim() == joint.get_ylim()
    assert not any(t.get_text().startswith("▼") for ax in figure.axes for t in ax.texts)
    assert [ax.get_legend() for ax in figure.axes] == [None, None, None]
    (legend,) = figure.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:4] == LABELS and "min–max over 3 seeds" in labels


def test_a_long_path_label_keeps_the_legend_inside_the_figure():
    # A path of an 11-choice space retrained alone: its label, the mode's
    # line and the seeds' band in one row of the legend ran off both edges.
    label = "conv3x3_bn->skip->skip->sep3x3_bn->sep3x3->skip->skip->sep3x3->skip->skip->skip"
    val = [0.97 + 0.004 * e for e in range(6)]
    runs = [_run("standalone", seed, 0, val, val, 10.0) for seed in range(3)]
    for run in runs:
        run["label"] = label
    figure = report._curves_figure({"config": _config([0, 1, 2]), "runs": runs})
    (legend,) = figure.legends
    assert label in [t.get_text() for t in legend.get_texts()]
    width = legend.get_window_extent(figure.canvas.get_renderer()).width
    assert width <= figure.bbox.width


def test_curves_say_what_they_leave_below_the_axis():
    figure = report._curves_figure(_curve_runs(first_epoch_low=True))
    standalone, joint, time_axis = figure.axes
    # Epoch 1 at 0.5 would flatten every later difference: left out, said.
    assert 0.5 < joint.get_ylim()[0] < 0.90
    notes = {ax: [t.get_text() for t in ax.texts] for ax in figure.axes}
    assert notes[standalone] == []
    assert notes[joint] == ["▼ values below the axis: epoch 1 (down to 0.500)"]
    assert notes[time_axis] == ["▼ means below the axis: epoch 1 (down to 0.500)"]


def test_single_seed_has_no_spread(tmp_path):
    folder = _write(tmp_path / "a", [0], _seed_runs(0, 0.0))
    text = open(report.write_report(folder)[0]).read()
    cells = _table_row(text, "Joint", "3x3->3x3")
    assert cells[2] == "0.9900" and cells[3] == "2" and cells[5] == "1"
    assert os.path.isfile(os.path.join(folder, "training_curves.png"))


def test_incomplete_runs_are_listed_not_tabled(tmp_path):
    runs = _seed_runs(0, 0.0)
    runs[-1] = _run("standalone", 0, 3, [0.9], [0.9], 10.0, complete=False)
    folder = _write(tmp_path / "a", [0], runs)
    text = open(report.write_report(folder)[0]).read()
    assert "standalone seed 0 path 3 (5x5->5x5): 1 of 3 epochs" in text
    with pytest.raises(AssertionError):
        _table_row(text, "Standalone", "5x5->5x5")
    assert "| All 3 standalone paths (sum) |" in text


def test_duplicate_runs_cannot_be_merged(tmp_path):
    first = _write(tmp_path / "a", [0], _seed_runs(0, 0.0))
    second = _write(tmp_path / "b", [0], _seed_runs(0, 0.0))
    with pytest.raises(ValueError, match="joint seed=0 path=0 is in both"):
        report.load_results([first, second])


def test_missing_results(tmp_path):
    with pytest.raises(ValueError, match="No results.json in run folder"):
        report.load_results([str(tmp_path)])


def test_differing_settings_are_flagged(tmp_path):
    first = _write(tmp_path / "a", [0], _seed_runs(0, 0.0))
    second = _write(tmp_path / "b", [1], _seed_runs(1, 0.0))
    results = json.load(open(os.path.join(second, "results.json")))
    results["config"]["batch_size"] = 64
    json.dump(results, open(os.path.join(second, "results.json"), "w"))
    text = open(report.write_report([first, second], tmp_path / "m")[0]).read()
    assert "the merged folders differ in batch_size" in text


def test_cli_merges_comma_list_and_rejects_bad_folder(tmp_path):
    first = _write(tmp_path / "a", [0], _seed_runs(0, 0.0))
    second = _write(tmp_path / "b", [1], _seed_runs(1, 0.0))
    out = tmp_path / "merged"
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "bin", "report"),
            f"--run_dir={first},{second}",
            f"--output_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "| 3x3->3x3 |" in (out / "report.md").read_text()
        and (out / "training_curves.png").is_file()
    )
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "bin", "report"),
            f"--run_dir={tmp_path / 'nothing'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: No results.json in run folder {tmp_path / 'nothing'}."
    ]


def test_reports_the_bias_of_picking_the_epoch_on_test(tmp_path):
    runs = []
    for p in range(4):
        # Validation peaks at epoch 1 (test 0.98), test peaks at epoch 2 (0.99).
        runs.append(_run("joint", 0, p, [0.99, 0.98], [0.98, 0.99], 10.0))
    folder = _write(tmp_path / "a", [0], runs)
    text = open(report.write_report(folder)[0]).read()
    assert "would report 0.9900 on average instead of 0.9800 (+0.0100)" in text


def test_no_selection_bias_is_not_reported_as_plus_zero(tmp_path):
    runs = [_run("joint", 0, p, [0.98, 0.99], [0.98, 0.99], 10.0) for p in range(4)]
    folder = _write(tmp_path / "a", [0], runs)
    text = open(report.write_report(folder)[0]).read()
    assert "instead of" not in text and "+0.0000" not in text
    assert (
        "would report the same 0.9900 here: in these runs the epoch picked on "
        "validation is also the best on test (to four decimals)"
    ) in text


def test_single_seed_report_says_once_that_intervals_need_two_seeds(tmp_path):
    folder = _write(tmp_path / "a", [0], _seed_runs(0, 0.0))
    text = open(report.write_report(folder)[0]).read()
    assert text.count("need at least two") == 1
    assert "no interval" not in text and "n = 1)" not in text
    assert "### Ranking of paths" in text  # the ranking needs one seed


# === Comparison of variants ===


def _joint_runs(
    seed, best_epochs, tests, seconds_per_epoch, probabilities=None, epochs=4
):
    """A joint run of every path; path p peaks (validation) at best_epochs[p]."""
    runs = []
    for p, (best, test) in enumerate(zip(best_epochs, tests)):
        val = [
            0.95 + 0.01 * min(e, best) - 0.002 * max(0, e - best)
            for e in range(1, epochs + 1)
        ]
        tst = [test if e == best else test - 0.01 for e in range(1, epochs + 1)]
        run = _run("joint", seed, p, val, tst, seconds_per_epoch)
        for i, row in enumerate(run["history"]):
            row["wall_seconds"] = (seconds_per_epoch + 1) * row["epoch"]
            if probabilities is not None:
                row["sampling_probability"] = probabilities[p][i]
        runs.append(run)
    return runs


def _standalone_runs(seed):
    return [
        _run(
            "standalone",
            seed,
            p,
            [0.97, 0.98, 0.975, 0.97],
            [0.98, 0.985 + 0.002 * seed, 0.98, 0.98],
            8.0,
        )
        for p in range(4)
    ]


def _probabilities(seed):
    first = [0.25, 0.4, 0.3, 0.25] if seed == 0 else [0.25, 0.2, 0.3, 0.25]
    return [first, [0.5 - v for v in first], [0.25] * 4, [0.25] * 4]


def _comparison_folders(tmp_path):
    """uniform at batch 128 (joint + standalone), adaptive at batch 512 (joint only)."""
    uniform = _write(
        tmp_path / "uniform_b128",
        [0, 1],
        _joint_runs(0, [2, 3, 4, 4], [0.98, 0.985, 0.99, 0.99], 10.0)
        + _joint_runs(1, [1, 3, 4, 3], [0.99, 0.987, 0.99, 0.99], 12.0)
        + _standalone_runs(0)
        + _standalone_runs(1),
        epochs=4,
        sampling="uniform",
    )
    adaptive = _write(
        tmp_path / "adaptive_b512",
        [0, 1],
        _joint_runs(0, [3, 3, 3, 4], [0.97, 0.98, 0.99, 0.99], 5.0, _probabilities(0))
        + _joint_runs(
            1, [3, 4, 3, 3], [0.97, 0.98, 0.99, 0.99], 6.0, _probabilities(1)
        ),
        epochs=4,
        batch_size=512,
        sampling="adaptive",
    )
    return uniform, adaptive


def _rows(text, first):
    """Table rows (lists of cells) whose first cell is `first`."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            rows.append(cells)
    return rows


def _half_width(values):
    # Hand-computed Student's t interval: t(0.975, n - 1) * s / sqrt(n).
    values = np.asarray(values, dtype=np.float64)
    return (
        scipy_stats.t.ppf(0.975, len(values) - 1)
        * values.std(ddof=1)
        / np.sqrt(len(values))
    )


def test_comparison_of_sampling_and_batch_size(tmp_path):
    uniform, adaptive = _comparison_folders(tmp_path)
    md_path, png_path = compare.write_comparison(
        [uniform, adaptive], tmp_path / "out" / "comparison.md"
    )
    assert png_path == str(tmp_path / "out" / "comparison.png")
    text = open(md_path).read()

    # Per path and variant: joint rows of both variants, then the standalone reference.
    rows = _rows(text, "3x3->3x3")[:3]
    assert [r[1:3] for r in rows] == [
        ["uniform, batch 128", "Joint"],
        ["adaptive, batch 512", "Joint"],
        ["uniform, batch 128", "Standalone"],
    ]
    # uniform joint, path 0: test 0.98 and 0.99 (t(0.975, 1) = 12.71, s/sqrt(2) = 0.005), best epochs 2 and 1.
    assert abs(_half_width([0.98, 0.99]) - 0.0635) < 1e-4
    assert rows[0][3:] == ["2", "0.9850 ± 0.0635", "1.5 ± 6.4"]
    # adaptive joint, path 0: equal test accuracies and best epochs, a zero-width interval.
    assert rows[1][3:] == ["2", "0.9700 ± 0.0000", "3.0 ± 0.0"]
    # standalone: test 0.985 and 0.987 at epoch 2 in both seeds.
    assert rows[2][3:] == [
        "2",
        f"0.9860 ± {_half_width([0.985, 0.987]):.4f}",
        "2.0 ± 0.0",
    ]

    # Best epoch per path (mean over seeds), spread of the means, spread per seed.
    # uniform: paths [2, 3, 4, 4] and [1, 3, 4, 3] -> means 1.5, 3, 4, 3.5 (spread 2.5);
    # per seed 4 - 2 = 2 and 4 - 1 = 3, mean 2.5 ± 12.71 * 0.5.
    assert _rows(text, "uniform, batch 128")[1] == [
        "uniform, batch 128",
        "1.5",
        "3.0",
        "4.0",
        "3.5",
        "2.5",
        "2 (seed 0), 3 (seed 1)",
        "2.5 ± 6.4",
    ]
    # adaptive: [3, 3, 3, 4] and [3, 4, 3, 3] -> means 3, 3.5, 3, 3.5 (spread 0.5); per seed 1 and 1.
    assert _rows(text, "adaptive, batch 512")[1] == [
        "adaptive, batch 512",
        "3.0",
        "3.5",
        "3.0",
        "3.5",
        "0.5",
        "1 (seed 0), 1 (seed 1)",
        "1.0 ± 0.0",
    ]

    # Seconds per epoch: uniform 10 and 12 (wall 11 and 13), standalone 8; adaptive 5 and 6.
    assert _rows(text, "uniform, batch 128")[2] == [
        "uniform, batch 128",
        "2",
        "11.0 ± 12.7",
        "12.0 ± 12.7",
        "1.00",
        "8.0 ± 0.0",
    ]
    assert _rows(text, "adaptive, batch 512")[2] == [
        "adaptive, batch 512",
        "2",
        "5.5 ± 6.4",
        "6.5 ± 6.4",
        "0.50",
        "—",
    ]

    # Only the adaptive variant has a probability table: path 0 averages to
    # [0.25, 0.3, 0.3, 0.25] over the seeds, path 1 to [0.25, 0.2, 0.2, 0.25].
    assert "## Sampling probabilities: adaptive, batch 512" in text
    assert "Sampling probabilities: uniform" not in text
    assert _rows(text, "3x3->3x3")[-1] == [
        "3x3->3x3",
        "0.275",
        "0.250 (1)",
        "0.300 (2)",
        "0.250",
        "0.250",
    ]
    assert _rows(text, "3x3->5x5")[-1] == [
        "3x3->5x5",
        "0.225",
        "0.200 (2)",
        "0.250 (1)",
        "0.250",
        "0.250",
    ]
    assert "![Comparison](comparison.png)" in text

    image = matplotlib.image.imread(png_path)
    assert image.shape[0] > 400 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05


def test_comparison_merges_equal_settings_and_needs_two_variants(tmp_path):
    runs = _joint_runs(0, [2, 3, 4, 4], [0.98] * 4, 10.0)
    first = _write(tmp_path / "s0", [0], runs, epochs=4, sampling="uniform")
    second = _write(
        tmp_path / "s1",
        [1],
        _joint_runs(1, [1, 3, 4, 3], [0.98] * 4, 10.0),
        epochs=4,
        sampling="uniform",
    )
    with pytest.raises(ValueError, match="at least two different configurations"):
        compare.write_comparison([first, second], tmp_path / "out.md")
    assert not (tmp_path / "out.md").exists()
    other = _write(
        tmp_path / "pe",
        [0],
        runs,
        epochs=4,
        sampling="per_example",
        learning_rate=0.01,
    )
    variants = compare.load_variants([first, other, second])
    # Seeds of one setting are merged; any other differing setting joins the label.
    assert [v["label"] for v in variants] == [
        "uniform, batch 128, learning_rate 0.001",
        "per_example, batch 128, learning_rate 0.01",
    ]
    assert variants[0]["run_dirs"] == [first, second]
    assert compare.summarize_variant(variants[0])["spread"]["per_seed"] == {
        0: 2,
        1: 3,
    }


def test_cli_compare_writes_files_and_rejects_one_variant(tmp_path):
    uniform, adaptive = _comparison_folders(tmp_path)
    out = tmp_path / "compare"
    command = [
        sys.executable,
        os.path.join(REPO, "bin", "report"),
        "--compare",
    ]
    done = subprocess.run(
        command
        + [
            f"--run_dir={uniform},{adaptive}",
            f"--output_dir={out}",
            "--title=Uniform against adaptive",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    text = (out / "comparison.md").read_text()
    assert text.startswith("# Uniform against adaptive\n")
    assert "| 5x5->5x5 | adaptive, batch 512 | Joint |" in text
    assert (out / "comparison.png").is_file() and not (out / "report.md").exists()
    done = subprocess.run(
        command + [f"--run_dir={uniform}", f"--output_dir={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: Invalid value for argument `run_dirs`. Expected folders of at least two different"
    )


def test_versions_are_told_apart(tmp_path):
    # results.json records the keras_supernet version since 0.2.0; older
    # files count as 0.1.0. Same settings, other version: two variants.
    runs = _joint_runs(0, [2, 3, 4, 4], [0.98] * 4, 10.0)
    old = _write(tmp_path / "old", [0], runs, epochs=4, sampling="uniform")
    new = _write(
        tmp_path / "new",
        [0],
        runs,
        epochs=4,
        sampling="uniform",
        versions={"keras_supernet": "0.2.0"},
    )
    variants = compare.load_variants([old, new])
    assert [v["label"] for v in variants] == [
        "uniform, batch 128, keras_supernet 0.1.0",
        "uniform, batch 128, keras_supernet 0.2.0",
    ]
    other = _write(
        tmp_path / "other",
        [1],
        _seed_runs(1, 0.0),
        versions={"keras_supernet": "0.2.0"},
    )
    first = _write(tmp_path / "first", [0], _seed_runs(0, 0.0))
    text = open(report.write_report([first, other], tmp_path / "m")[0]).read()
    assert "- Trained with keras_supernet 0.1.0" in text
    assert "the merged folders differ in keras_supernet version" in text
