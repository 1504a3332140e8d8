"""Report of an experiment: the results table and the training curves.

`write_report` reads the `results.json` of one or more run folders (written
by `keras_supernet.experiment.run_experiment`), merges their runs and writes
`report.md` (the table of the original report, done right, plus the
wall-time comparison of joint and standalone training) and
`training_curves.png` (validation accuracy per epoch, a panel per mode with
a min-max band over seeds, and against training time; joint solid and
standalone dashed, best epochs marked, what lies below the axis stated).

Example:

```python
write_report(["runs/seed0", "runs/seed12"], output_dir="runs/merged")
```
"""

import json
import os

import numpy as np

from keras_supernet import stats

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CURVES_FILE = "training_curves.png"
_MODE_ORDER = ("standalone", "joint")
_MODE_TITLE = {"joint": "Joint", "standalone": "Standalone"}
# Config keys that make numbers from different folders comparable.
_KEY_SETTINGS = (
    "dataset",
    "kernel_sizes",
    "filters",
    "hidden_units",
    "padding",
    "epochs",
    "batch_size",
    "learning_rate",
    "train_size",
    "val_size",
    "test_size",
)


# === Loading ===


def load_results(run_dirs):
    """Reads and merges the `results.json` of several run folders.

    Args:
        run_dirs: a folder or a list of folders.

    Returns:
        `{"config": <first folder's config>, "configs": [...], "run_dirs":
        [...], "runs": [...]}` where every run has a `"run_dir"` key.

    Raises:
        ValueError: no folder, a folder without results, or the same
            (mode, seed, path) in two folders.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    unique = {}
    for d in run_dirs:
        unique.setdefault(os.path.normpath(os.fspath(d)), os.fspath(d))
    run_dirs = list(unique.values())
    if not run_dirs:
        raise ValueError(
            "Invalid value for argument `run_dirs`. Expected at least one folder. Received []."
        )
    configs, runs, seen = [], [], {}
    for run_dir in run_dirs:
        path = os.path.join(run_dir, RESULTS_FILE)
        try:
            with open(path) as f:
                results = json.load(f)
            config, dir_runs = results["config"], results["runs"]
        except FileNotFoundError as e:
            raise ValueError(
                f"No {RESULTS_FILE} in run folder {run_dir}."
            ) from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"Cannot read {path}: {e}.") from e
        configs.append(config)
        for run in dir_runs:
            key = (run["mode"], run["seed"], run["path"])
            if key in seen:
                raise ValueError(
                    f"Run {run['mode']} seed={run['seed']} path={run['path']} is in both "
                    f"{seen[key]} and {run_dir}: merge folders with distinct seeds."
                )
            seen[key] = run_dir
            runs.append(dict(run, run_dir=run_dir))
    return {
        "config": configs[0],
        "configs": configs,
        "run_dirs": run_dirs,
        "runs": runs,
    }


# === Statistics ===


def _mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def _fmt(values, digits=4, unit=""):
    mean, std = _mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}{unit}"


def _time_digits(seconds):
    return 0 if np.mean(seconds) >= 100 else 1


def _groups(runs):
    """Complete runs grouped by (mode, path), in table order."""
    groups = {}
    for run in runs:
        if run.get("complete"):
            groups.setdefault((run["mode"], run["path"]), []).append(run)
    order = sorted(groups, key=lambda k: (_MODE_ORDER.index(k[0]), k[1]))
    return {k: sorted(groups[k], key=lambda r: r["seed"]) for k in order}


def summarize(merged):
    """One summary row per (mode, path) over the seeds of complete runs."""
    rows = []
    for (mode, path), runs in _groups(merged["runs"]).items():
        rows.append(
            {
                "mode": mode,
                "path": path,
                "label": runs[0]["label"],
                "seeds": [r["seed"] for r in runs],
                "n": len(runs),
                "test_accuracy": [r["test_accuracy"] for r in runs],
                "best_val_accuracy": [r["best_val_accuracy"] for r in runs],
                "final_test_accuracy": [
                    r["final_test_accuracy"] for r in runs
                ],
                "best_epoch": [r["best_epoch"] for r in runs],
                "train_seconds": [r["train_seconds"] for r in runs],
            }
        )
    return rows


def wall_time_comparison(merged):
    """Joint run vs one standalone run vs the sum of the standalone runs.

    Only seeds that have a complete joint run and complete standalone runs
    count. Returns `None` when there is no such seed.
    """
    joint, standalone = {}, {}
    for run in merged["runs"]:
        if not run.get("complete"):
            continue
        if run["mode"] == "joint":
            joint[run["seed"]] = run["train_seconds"]
        else:
            standalone.setdefault(run["seed"], []).append(run["train_seconds"])
    seeds = sorted(set(joint) & set(standalone))
    if not seeds:
        return None
    return {
        "seeds": seeds,
        "num_standalone": [len(standalone[s]) for s in seeds],
        "joint": [joint[s] for s in seeds],
        "one_standalone": [float(np.mean(standalone[s])) for s in seeds],
        "sum_standalone": [float(np.sum(standalone[s])) for s in seeds],
    }


# === Markdown ===


def _version(config):
    """The keras_supernet version of a run's config (recorded since 0.2.0)."""
    return (config.get("versions") or {}).get("keras_supernet", "0.1.0")


def _config_lines(merged):
    config = merged["config"]
    kernel_sizes = " / ".join(
        ",".join(str(k) for k in layer) for layer in config["kernel_sizes"]
    )
    lines = [
        f"- Dataset: {config['dataset']} ({config['train_size']} training, "
        f"{config['val_size']} validation held out from the training set, "
        f"{config['test_size']} test examples)",
        f"- Supernet: kernel sizes per layer {kernel_sizes}, filters "
        f"{', '.join(str(f) for f in config['filters'])}, hidden units {config['hidden_units']}, "
        f"padding {config['padding']}",
        f"- Training: Adam, learning rate {config['learning_rate']:g} (fixed), batch size "
        f"{config['batch_size']}, {config['epochs']} epochs, seeds "
        f"{', '.join(str(s) for s in sorted({r['seed'] for r in merged['runs']}))}",
        f"- Normalisation (training split): mean {config['normalization']['mean']:.4f}, "
        f"std {config['normalization']['std']:.4f}",
        f"- Trained with keras_supernet {_version(config)}",
    ]
    differing = [
        key
        for key in _KEY_SETTINGS
        if any(
            json.dumps(c.get(key)) != json.dumps(config.get(key))
            for c in merged["configs"][1:]
        )
    ]
    if any(_version(c) != _version(config) for c in merged["configs"][1:]):
        differing.append("keras_supernet version")
    if differing:
        lines.append(
            f"- **Warning**: the merged folders differ in {', '.join(differing)}; the settings "
            f"above are those of {merged['run_dirs'][0]}."
        )
    return lines


def format_report(merged):
    """Returns the text of report.md for merged results."""
    rows = summarize(merged)
    seeds_total = max((row["n"] for row in rows), default=0)
    lines = ["# Joint vs standalone training of the supernet's paths", ""]
    lines.append(
        "Run folders: " + ", ".join(f"`{d}`" for d in merged["run_dirs"])
    )
    lines.append("")
    lines += _config_lines(merged)
    lines += ["", "## Results", ""]
    lines.append(
        "Accuracy: test accuracy at the best epoch, the epoch with the highest validation accuracy "
        "(the validation split is held out from the training set). Train time: seconds in "
        "`model.fit`, evaluation excluded; for joint rows it is the whole joint run, which trains "
        "all paths at once."
        + (
            " With several seeds: mean ± standard deviation over seeds, n = number of seeds; best "
            "epochs of each seed in brackets."
            if seeds_total > 1
            else ""
        )
    )
    lines.append("")
    lines.append(
        "| Experiment | Configuration | Accuracy | Best epoch | Train time | n |"
    )
    lines.append(
        "|------------|---------------|----------|------------|------------|---|"
    )
    for row in rows:
        epochs = row["best_epoch"]
        best = (
            f"{np.mean(epochs):.1f} ({', '.join(str(e) for e in epochs)})"
            if len(epochs) > 1
            else str(epochs[0])
        )
        train_time = _fmt(
            row["train_seconds"],
            digits=_time_digits(row["train_seconds"]),
            unit=" s",
        )
        lines.append(
            f"| {_MODE_TITLE[row['mode']]} | {row['label']} | {_fmt(row['test_accuracy'])} | "
            f"{best} | {train_time} | {row['n']} |"
        )
    if not rows:
        lines.append("| (no complete run yet) | | | | | |")
    complete = [r for r in merged["runs"] if r.get("complete")]
    if complete:
        honest = np.mean([r["test_accuracy"] for r in complete])
        peeked = np.mean(
            [
                max(row["test_accuracy"] for row in r["history"])
                for r in complete
            ]
        )
        if peeked - honest >= 0.00005:
            bias = (
                f"would report {peeked:.4f} on average instead of "
                f"{honest:.4f} ({peeked - honest:+.4f}): an optimistic bias, "
                "not a better model."
            )
        else:
            bias = (
                f"would report the same {honest:.4f} here: in these runs the "
                "epoch picked on validation is also the best on test (to four "
                "decimals), which in general it is not."
            )
        lines += [
            "",
            "Picking each run's epoch by its test accuracy instead, as a "
            f"single held-out set does, {bias}",
        ]

    by_key = {(row["mode"], row["path"]): row for row in rows}
    paired = []
    for (mode, path), row in by_key.items():
        other = by_key.get(("standalone", path))
        if mode != "joint" or other is None:
            continue
        joint_acc = dict(zip(row["seeds"], row["test_accuracy"]))
        alone_acc = dict(zip(other["seeds"], other["test_accuracy"]))
        common = sorted(set(joint_acc) & set(alone_acc))
        if common:
            diffs = [joint_acc[s] - alone_acc[s] for s in common]
            paired.append((row["label"], diffs))
    if paired:
        lines += ["", "## Joint minus standalone", ""]
        lines.append(
            "Test accuracy of the jointly trained path minus that of the same path trained alone, "
            "paired by seed (both start from the same initial weights)."
        )
        lines.append("")
        lines.append("| Configuration | Joint − standalone | n |")
        lines.append("|---------------|--------------------|---|")
        for label, diffs in paired:
            mean, std = _mean_std(diffs)
            text = (
                f"{mean:+.4f}"
                if len(diffs) == 1
                else f"{mean:+.4f} ± {std:.4f}"
            )
            lines.append(f"| {label} | {text} | {len(diffs)} |")

    wall = wall_time_comparison(merged)
    if wall is not None:
        count = (
            wall["num_standalone"][0]
            if len(set(wall["num_standalone"])) == 1
            else "all"
        )
        joint_mean = float(np.mean(wall["joint"]))
        seeds = ", ".join(str(s) for s in wall["seeds"])
        lines += ["", "## Training time", ""]
        lines.append(
            f"Seconds in `model.fit`, mean over seeds {seeds} "
            "(± standard deviation when several)."
        )
        lines.append("")
        lines.append("| Training | Seconds | Relative to joint |")
        lines.append("|----------|---------|-------------------|")
        for name, key in (
            ("Joint supernet (every path)", "joint"),
            ("One standalone path (mean over paths)", "one_standalone"),
            (f"All {count} standalone paths (sum)", "sum_standalone"),
        ):
            seconds = wall[key]
            text = _fmt(seconds, _time_digits(seconds))
            ratio = float(np.mean(seconds)) / joint_mean
            lines.append(f"| {name} | {text} | {ratio:.2f} |")

    complete_modes = {r["mode"] for r in merged["runs"] if r.get("complete")}
    complete_seeds = {r["seed"] for r in merged["runs"] if r.get("complete")}
    # Intervals and tests need several seeds; the ranking needs both modes.
    if len(complete_seeds) > 1 or len(complete_modes) == 2:
        lines += ["", stats.stats_markdown(merged).rstrip()]

    incomplete = [r for r in merged["runs"] if not r.get("complete")]
    if incomplete:
        lines += ["", "Incomplete runs, left out of the tables:"]
        for run in incomplete:
            lines.append(
                f"- {run['mode']} seed {run['seed']} path {run['path']} ({run['label']}): "
                f"{len(run['history'])} of {merged['config']['epochs']} epochs"
            )
    lines += ["", f"![Training curves]({CURVES_FILE})", ""]
    return "\n".join(lines)


# === Curves ===


def _stack(runs, key):
    """`[num_runs, epochs]` array of a history key, cut to the shortest run."""
    length = min(len(r["history"]) for r in runs)
    return np.array(
        [[row[key] for row in r["history"][:length]] for r in runs],
        dtype=np.float64,
    )


def _curve_groups(merged):
    """`{(mode, path): runs}` of every run with at least one epoch."""
    groups = {}
    for run in merged["runs"]:
        if run["history"]:
            groups.setdefault((run["mode"], run["path"]), []).append(run)
    return dict(
        sorted(
            groups.items(),
            key=lambda kv: (_MODE_ORDER.index(kv[0][0]), kv[0][1]),
        )
    )


def _accuracy_range(curves):
    """`(low, high)`: the y-range of the curve figure.

    The range covers every band (min-max over seeds) and every mean, except
    when the first epoch lies far below the rest (on MNIST, epoch 1 of joint
    training): covering it would flatten every later difference, so the
    range starts just below the other epochs, and the figure says which
    values it leaves out.
    """
    lows = [c["low"] for c in curves]
    highs = [c["high"] for c in curves]
    low = float(min(x.min() for x in lows))
    high = float(max(x.max() for x in highs))
    rest = [x[1:] for x in lows if len(x) > 3]
    core = float(min(x.min() for x in rest)) if rest else low
    margin = max(0.05 * (high - core), 0.0005)
    if low >= core - 3 * margin:
        margin = max(0.05 * (high - low), 0.0005)
        return low - margin, min(1.0, high + margin)
    return core - margin, min(1.0, high + margin)


def _curves_figure(merged):
    """The training-curve figure (a matplotlib `Figure`), see `plot_curves`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    groups = _curve_groups(merged)
    paths = sorted({p for _, p in groups})
    colors = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(paths)}
    labels = {p: runs[0]["label"] for (_, p), runs in groups.items()}
    style = {"joint": "-", "standalone": "--"}
    marker = {"joint": "o", "standalone": "s"}

    curves = []
    for (mode, p), runs in groups.items():
        acc = _stack(runs, "val_accuracy")
        curves.append(
            {
                "mode": mode,
                "path": p,
                "n": len(runs),
                "mean": acc.mean(axis=0),
                "low": acc.min(axis=0),
                "high": acc.max(axis=0),
                "seconds": _stack(runs, "seconds").mean(axis=0),
            }
        )
    modes = [m for m in _MODE_ORDER if any(c["mode"] == m for c in curves)]
    num_seeds = max((c["n"] for c in curves), default=1)
    # One panel per mode, so that each holds four bands rather than eight,
    # then all means against time; one y-range for all of them.
    fig, axes = plt.subplots(
        1,
        len(modes) + 1,
        figsize=(5.6 * (len(modes) + 1), 6.0),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    axes = list(axes[0])
    by_mode = dict(zip(modes, axes))
    ax_time = axes[-1]
    ylow, yhigh = _accuracy_range(curves) if curves else (0.0, 1.0)
    # Per panel: the epochs with a value below the axis, and the lowest one.
    below = {ax: ({}, []) for ax in axes}
    best_note = "peak of the mean" if num_seeds > 1 else "best epoch"

    for c in curves:
        color, epochs = colors[c["path"]], np.arange(1, len(c["mean"]) + 1)
        best = int(np.argmax(c["mean"]))
        for ax, x in ((by_mode[c["mode"]], epochs), (ax_time, c["seconds"])):
            ax.plot(
                x,
                c["mean"],
                linestyle=style[c["mode"]],
                color=color,
                linewidth=1.8,
            )
            ax.plot(
                x[best],
                c["mean"][best],
                marker=marker[c["mode"]],
                markersize=8,
                color=color,
                markeredgecolor="black",
                linestyle="none",
            )
            # Where the mean leaves the axis, a mark on its lower edge.
            out = c["mean"] < ylow
            ax.plot(
                x[out],
                np.full(int(out.sum()), ylow),
                marker="v",
                color=color,
                linestyle="none",
                clip_on=False,
                in_layout=False,
            )
            values = c["low"] if ax is not ax_time else c["mean"]
            for e in np.flatnonzero(values < ylow):
                below[ax][0][int(e) + 1] = True
                below[ax][1].append(float(values[e]))
        if c["n"] > 1:
            ax = by_mode[c["mode"]]
            ax.fill_between(
                epochs,
                c["low"],
                c["high"],
                color=color,
                alpha=0.16,
                linewidth=0,
            )
            for edge in (c["low"], c["high"]):
                ax.plot(
                    epochs, edge, color=color, linewidth=0.6, alpha=0.7
                )

    seeds = f"{num_seeds} seeds" if num_seeds > 1 else "1 seed"
    for mode, ax in by_mode.items():
        ax.set_title(
            f"{_MODE_TITLE[mode]}: validation accuracy per epoch"
            + (f"\n(mean of {seeds}, band: min–max)" if num_seeds > 1 else "")
        )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_time.set_title(
        "All paths against training time"
        + (f"\n(mean of {seeds})" if num_seeds > 1 else "")
    )
    ax_time.set_xlabel("seconds in model.fit (joint: the whole supernet)")
    axes[0].set_ylabel("validation accuracy")
    for ax in axes:
        ax.set_ylim(ylow, yhigh)
        ax.grid(True, alpha=0.3)
        epochs, values = below[ax]
        if epochs:
            what = "means" if ax is ax_time else "values"
            ax.text(
                0.98,
                0.02,
                f"▼ {what} below the axis: epoch "
                f"{', '.join(str(e) for e in sorted(epochs))} "
                f"(down to {min(values):.3f})",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "0.6", "alpha": 0.9},
                in_layout=False,
            )

    handles = [
        Line2D([], [], color=colors[p], linewidth=2.5, label=labels[p])
        for p in paths
    ]
    for mode in modes:
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                linestyle=style[mode],
                marker=marker[mode],
                label=f"{mode} ({marker[mode]}: {best_note})",
            )
        )
    if num_seeds > 1:
        handles.append(
            Patch(facecolor="0.6", alpha=0.4, label=f"min–max over {seeds}")
        )
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(len(handles), 4),
            frameon=False,
            fontsize=10,
        )
    return fig


def plot_curves(merged, path):
    """Writes the training-curve figure to `path` (PNG).

    One panel per mode with the validation accuracy per epoch (mean over
    seeds, band from the lowest to the highest seed), then every mean
    against training time; one shared legend and one y-range, which covers
    every band unless the first epoch lies far below the rest, in which
    case each panel says how far (see `_accuracy_range`).
    """
    import matplotlib.pyplot as plt

    fig = _curves_figure(merged)
    _save_figure(fig, path)
    plt.close(fig)


# === Entry point ===


def write_report(run_dirs, output_dir=None):
    """Writes report.md and training_curves.png for one or more run folders.

    Args:
        run_dirs: a run folder or a list of run folders to merge.
        output_dir: where to write; defaults to the first run folder.

    Returns:
        `(report_path, curves_path)`.

    Raises:
        ValueError: unreadable results or duplicated runs (see `load_results`).
    """
    merged = load_results(run_dirs)
    output_dir = os.fspath(output_dir) if output_dir else merged["run_dirs"][0]
    os.makedirs(output_dir, exist_ok=True)
    report_path = os.path.join(output_dir, REPORT_FILE)
    curves_path = os.path.join(output_dir, CURVES_FILE)
    text = format_report(merged)
    _write_text_atomic(report_path, text)
    plot_curves(merged, curves_path)
    return report_path, curves_path


# === Comparison of variants ===

COMPARISON_FILE = "comparison.md"
COMPARISON_TITLE = (
    "Joint training compared across sampling strategies and batch sizes"
)
# Settings of the joint training recipe; with `_KEY_SETTINGS` they define a
# variant. Folders with equal settings are merged (seeds of one variant).
# `keras_supernet` is the version that trained the runs (results.json
# records it since 0.2.0; older files come from 0.1.0).
_RECIPE_SETTINGS = (
    "sampling",
    "aggregation",
    "path_dropout",
    "branch_learning_rates",
    "split_seed",
    "keras_supernet",
)


def _variant_settings(config):
    settings = {
        key: config.get(key) for key in _KEY_SETTINGS + _RECIPE_SETTINGS
    }
    # results.json written before sampling strategies existed has no
    # `sampling`: those runs drew one path per batch.
    settings["sampling"] = settings["sampling"] or "uniform"
    if not settings["aggregation"]:
        settings["aggregation"] = settings["path_dropout"] = None
    settings["branch_learning_rates"] = (
        settings["branch_learning_rates"] or None
    )
    settings["keras_supernet"] = _version(config)
    return settings


def _setting_text(key, value):
    if isinstance(value, float):
        value = f"{value:g}"
    elif not isinstance(value, str):
        value = json.dumps(value, separators=(",", ":"))
    return f"{key} {value}"


def load_variants(run_dirs):
    """Groups run folders into variants, one per distinct configuration.

    Folders whose settings are equal (e.g. one folder per seed) are merged
    with `load_results`; folders that differ in any setting are kept apart.
    Each variant is labelled by its sampling strategy and batch size, plus
    every other setting that differs between the variants, e.g.
    `"uniform, batch 128"` or `"adaptive, batch 512, epochs 10"`.

    Args:
        run_dirs: a list of run folders.

    Returns:
        A list of variants in the order of their first folder, each a dict
        with `label`, `settings`, `run_dirs` and `merged` (as returned by
        `load_results`).

    Raises:
        ValueError: unreadable results, duplicated runs within a variant, or
            fewer than two variants.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    unique = {}
    for d in run_dirs:
        unique.setdefault(os.path.normpath(os.fspath(d)), os.fspath(d))
    folders = list(unique.values())
    if not folders:
        raise ValueError(
            "Invalid value for argument `run_dirs`. Expected at least two folders. Received []."
        )
    groups = {}
    for run_dir in folders:
        settings = _variant_settings(load_results(run_dir)["config"])
        key = json.dumps(settings, sort_keys=True)
        groups.setdefault(key, (settings, []))[1].append(run_dir)
    if len(groups) < 2:
        raise ValueError(
            "Invalid value for argument `run_dirs`. Expected folders of at least two different "
            f"configurations to compare. Received {len(folders)} folder(s) with the same settings: "
            f"{', '.join(folders)}."
        )
    settings_list = [settings for settings, _ in groups.values()]
    differing = [
        key
        for key in _KEY_SETTINGS + _RECIPE_SETTINGS
        if key not in ("sampling", "batch_size")
        and len({json.dumps(s[key]) for s in settings_list}) > 1
    ]
    variants = []
    for settings, dirs in groups.values():
        label = ", ".join(
            [settings["sampling"], f"batch {settings['batch_size']}"]
            + [_setting_text(key, settings[key]) for key in differing]
        )
        variants.append(
            {
                "label": label,
                "settings": settings,
                "run_dirs": dirs,
                "merged": load_results(dirs),
            }
        )
    return variants


def _by_path(runs, mode):
    """Complete runs of `mode` as `{label: [runs by seed]}`, in path order."""
    groups = {}
    for run in sorted(runs, key=lambda r: (r["path"], r["seed"])):
        if run["mode"] == mode and run.get("complete"):
            groups.setdefault(run["label"], []).append(run)
    return groups


def _interval(values, key=None):
    values = [v[key] for v in values] if key else list(values)
    return dict(stats.mean_interval(values), values=values)


def summarize_variant(variant):
    """Numbers of one variant for the comparison.

    Returns:
        A dict with `label`, `seeds` (of the complete joint runs),
        `joint` and `standalone` (per path label: `n`, `accuracy` and
        `best_epoch` as `stats.mean_interval` dicts with the per-seed
        `values`), `spread` (`path_means`, the per-path mean best epochs,
        `of_means`, their max - min, and `per_seed`, `{seed: max - min of
        that seed's best epochs over the paths}` for seeds whose joint run
        covers every path, with `interval`), `seconds_per_epoch`
        (`train`, `wall` for joint runs, one value per seed, and `standalone`,
        one value per standalone run; intervals, `None` when absent) and
        `probabilities` (per path label, the sampling probability per epoch
        averaged over seeds; `None` unless the strategy is adaptive).

    Raises:
        ValueError: the variant has no complete joint run.
    """
    runs = variant["merged"]["runs"]
    joint = _by_path(runs, "joint")
    if not joint:
        raise ValueError(
            f"No complete joint run in {', '.join(variant['run_dirs'])}: nothing to compare."
        )

    def rows(groups):
        return {
            label: {
                "n": len(members),
                "seeds": [r["seed"] for r in members],
                "accuracy": _interval(members, "test_accuracy"),
                "best_epoch": _interval(members, "best_epoch"),
            }
            for label, members in groups.items()
        }

    path_means = {
        label: float(np.mean([r["best_epoch"] for r in members]))
        for label, members in joint.items()
    }
    by_seed = {}
    for label, members in joint.items():
        for run in members:
            by_seed.setdefault(run["seed"], {})[label] = run
    full_seeds = sorted(
        s for s, found in by_seed.items() if len(found) == len(joint)
    )
    per_seed = {}
    for seed in full_seeds:
        epochs = [run["best_epoch"] for run in by_seed[seed].values()]
        per_seed[seed] = max(epochs) - min(epochs)

    def per_epoch(run, key):
        return run[key] / len(run["history"])

    seed_runs = [next(iter(by_seed[s].values())) for s in sorted(by_seed)]
    wall = [
        run["history"][-1]["wall_seconds"] / len(run["history"])
        for run in seed_runs
        if "wall_seconds" in run["history"][-1]
    ]
    standalone_runs = [
        r for members in _by_path(runs, "standalone").values() for r in members
    ]

    probabilities = None
    if variant["settings"]["sampling"] == "adaptive":
        probabilities = {}
        for label, members in joint.items():
            series = [
                [row["sampling_probability"] for row in r["history"]]
                for r in members
                if all("sampling_probability" in row for row in r["history"])
            ]
            if series:
                length = min(len(s) for s in series)
                probabilities[label] = np.mean(
                    [s[:length] for s in series], axis=0
                ).tolist()
    return {
        "label": variant["label"],
        "seeds": sorted(by_seed),
        "joint": rows(joint),
        "standalone": rows(_by_path(runs, "standalone")),
        "spread": {
            "path_means": path_means,
            "of_means": max(path_means.values()) - min(path_means.values()),
            "per_seed": per_seed,
            "interval": _interval(per_seed.values()) if per_seed else None,
        },
        "seconds_per_epoch": {
            "train": _interval(
                [per_epoch(r, "train_seconds") for r in seed_runs]
            ),
            "wall": _interval(wall) if wall else None,
            "standalone": (
                _interval(
                    [per_epoch(r, "train_seconds") for r in standalone_runs]
                )
                if standalone_runs
                else None
            ),
        },
        "probabilities": probabilities,
    }


def _fmt_ci(interval, digits, unit=""):
    """`mean ± half-width` of a `stats.mean_interval` dict (mean alone for n = 1)."""
    if interval is None:
        return "—"
    if interval["half_width"] is None:
        return f"{interval['mean']:.{digits}f}{unit}"
    return f"{interval['mean']:.{digits}f} ± {interval['half_width']:.{digits}f}{unit}"


def _fmt_number(value, digits=1):
    return f"{value:.{digits}f}"


def format_comparison(
    variants, summaries, title=COMPARISON_TITLE, figure=None
):
    """Returns the text of comparison.md (see `write_comparison`)."""
    confidence = round(stats.CONFIDENCE * 100)
    lines = [f"# {title}", ""]
    lines.append("| Variant | Run folders | Seeds (joint) | Epochs |")
    lines.append("|---------|-------------|---------------|--------|")
    for variant, summary in zip(variants, summaries):
        lines.append(
            f"| {variant['label']} | {', '.join(f'`{d}`' for d in variant['run_dirs'])} | "
            f"{', '.join(str(s) for s in summary['seeds'])} | {variant['settings']['epochs']} |"
        )
    common = [
        key
        for key in _KEY_SETTINGS + _RECIPE_SETTINGS
        if len({json.dumps(v["settings"][key]) for v in variants}) == 1
        and variants[0]["settings"][key] is not None
        and key not in ("batch_size", "sampling")
    ]
    if common:
        lines += [
            "",
            "Common settings: "
            + ", ".join(
                _setting_text(key, variants[0]["settings"][key])
                for key in common
            )
            + ".",
        ]
    lines += [
        "",
        f"Mean over seeds ± half-width of the {confidence}% Student's t confidence interval "
        "(`keras_supernet.stats.mean_interval`; the mean alone with a single seed; with few "
        "seeds an interval can reach past 1 or past the epochs trained).",
    ]

    labels = []
    for summary in summaries:
        for label in list(summary["joint"]) + list(summary["standalone"]):
            if label not in labels:
                labels.append(label)

    lines += ["", "## Test accuracy and best epoch per path", ""]
    lines.append(
        "Test accuracy at the path's best epoch (highest validation accuracy). Joint: the path "
        "evaluated in the jointly trained supernet. Standalone: the path trained alone, as a "
        "reference; it uses no sampling strategy, only the folder's other settings (batch size...)."
    )
    lines += [
        "",
        "| Path | Variant | Mode | n | Test accuracy | Best epoch |",
        "|------|---------|------|---|---------------|------------|",
    ]
    for label in labels:
        for mode in ("joint", "standalone"):
            for summary in summaries:
                row = summary[mode].get(label)
                if row is not None:
                    lines.append(
                        f"| {label} | {summary['label']} | {_MODE_TITLE[mode]} | {row['n']} | "
                        f"{_fmt_ci(row['accuracy'], 4)} | {_fmt_ci(row['best_epoch'], 1)} |"
                    )

    lines += ["", "## Do the paths peak together?", ""]
    lines.append(
        "Best epoch of each path in joint training, mean over seeds. Spread of the means: the "
        "latest minus the earliest of these means. Per seed: the latest minus the earliest best "
        "epoch among the paths of that seed's joint run, then their mean ± interval. A strategy "
        "that brings the paths' peaks together has small spreads."
    )
    joint_labels = [
        label
        for label in labels
        if any(label in s["joint"] for s in summaries)
    ]
    lines += [
        "",
        "| Variant | "
        + " | ".join(joint_labels)
        + " | Spread of the means | Spread per seed | Mean spread per seed |",
        "|---|" + "---|" * len(joint_labels) + "---|---|---|",
    ]
    for summary in summaries:
        spread = summary["spread"]
        means = [
            (
                _fmt_number(spread["path_means"][label])
                if label in spread["path_means"]
                else "—"
            )
            for label in joint_labels
        ]
        per_seed = ", ".join(
            f"{value} (seed {seed})"
            for seed, value in spread["per_seed"].items()
        )
        lines.append(
            f"| {summary['label']} | "
            + " | ".join(means)
            + f" | {_fmt_number(spread['of_means'])} | {per_seed or '—'} | "
            f"{_fmt_ci(spread['interval'], 1)} |"
        )

    base = summaries[0]["seconds_per_epoch"]["train"]["mean"]
    lines += ["", "## Time per epoch", ""]
    lines.append(
        "Seconds per epoch, one value per seed. Train: in `model.fit` (the joint run trains every "
        "path). Wall: training plus the per-epoch evaluation of every path on the validation and "
        f"test sets. Relative: mean train time over that of {summaries[0]['label']}. Standalone: "
        "train seconds per epoch of one path trained alone, one value per run (paths × seeds)."
    )
    lines += [
        "",
        "| Variant | n | Train s/epoch (joint) | Wall s/epoch (joint) | Relative | Standalone train s/epoch |",
        "|---------|---|-----------------------|----------------------|----------|--------------------------|",
    ]
    for summary in summaries:
        seconds = summary["seconds_per_epoch"]
        digits = _time_digits(seconds["train"]["values"])
        lines.append(
            f"| {summary['label']} | {seconds['train']['n']} | {_fmt_ci(seconds['train'], digits)} | "
            f"{_fmt_ci(seconds['wall'], digits)} | {seconds['train']['mean'] / base:.2f} | "
            f"{_fmt_ci(seconds['standalone'], digits)} |"
        )

    for summary in summaries:
        probabilities = summary["probabilities"]
        if probabilities is None:
            continue
        lines += ["", f"## Sampling probabilities: {summary['label']}", ""]
        if not probabilities:
            lines.append("The runs recorded no sampling probability.")
            continue
        uniform = 1 / len(summary["joint"])
        lines.append(
            "Probability with which each path was drawn during an epoch, mean over seeds (the "
            f"adaptive sampler sets it after each epoch from the validation losses; uniform: "
            f"{uniform:.3f}). Mean over epochs, lowest and highest epoch (first epoch on ties), "
            "first and last epoch."
        )
        lines += [
            "",
            "| Path | Mean over epochs | Lowest (epoch) | Highest (epoch) | First epoch | Last epoch |",
            "|------|------------------|----------------|-----------------|-------------|------------|",
        ]
        for label, series in probabilities.items():
            low, high = int(np.argmin(series)), int(np.argmax(series))
            lines.append(
                f"| {label} | {np.mean(series):.3f} | {series[low]:.3f} ({low + 1}) | "
                f"{series[high]:.3f} ({high + 1}) | {series[0]:.3f} | {series[-1]:.3f} |"
            )

    incomplete = [
        (variant["label"], run)
        for variant in variants
        for run in variant["merged"]["runs"]
        if not run.get("complete")
    ]
    if incomplete:
        lines += ["", "Incomplete runs, left out:"]
        for label, run in incomplete:
            lines.append(
                f"- {label}: {run['mode']} seed {run['seed']} path {run['path']} ({run['label']}), "
                f"{len(run['history'])} epochs"
            )
    if figure:
        lines += ["", f"![Comparison]({figure})"]
    lines.append("")
    return "\n".join(lines)


def plot_comparison(variants, summaries, path):
    """Writes the two-panel comparison figure to `path` (PNG).

    Left: joint validation accuracy per epoch, one thick line per variant
    (mean over paths and seeds) and a thin line per path (mean over seeds).
    Right: each path's best epoch per variant (mean over seeds, per-seed
    best epochs as small dots), a band spanning the earliest to the latest
    per-path mean.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    variant_colors = [
        plt.get_cmap("tab10")(i % 10) for i in range(len(variants))
    ]
    labels = []
    for summary in summaries:
        labels += [label for label in summary["joint"] if label not in labels]
    path_colors = {
        label: plt.get_cmap("Dark2")(i % 8) for i, label in enumerate(labels)
    }
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    path_markers = {
        label: markers[i % len(markers)] for i, label in enumerate(labels)
    }

    fig, (ax_acc, ax_best) = plt.subplots(
        1, 2, figsize=(14, max(5.0, 2.0 + 0.9 * len(variants)))
    )
    plotted = []
    for variant, color in zip(variants, variant_colors):
        joint = _by_path(variant["merged"]["runs"], "joint")
        curves = [
            _stack(members, "val_accuracy").mean(axis=0)
            for members in joint.values()
        ]
        length = min(len(c) for c in curves)
        epochs = np.arange(1, length + 1)
        for curve in curves:
            ax_acc.plot(
                epochs, curve[:length], color=color, linewidth=0.8, alpha=0.45
            )
        mean = np.mean([c[:length] for c in curves], axis=0)
        ax_acc.plot(
            epochs, mean, color=color, linewidth=2.4, label=variant["label"]
        )
        plotted += [c[1:length] if length > 3 else c[:length] for c in curves]
    values = np.concatenate(plotted)
    low, high = float(values.min()), float(values.max())
    margin = max(0.1 * (high - low), 0.001)
    ax_acc.set_ylim(low - margin, min(1.0, high + margin))
    ax_acc.set_title(
        "Joint validation accuracy (thick: mean over paths; thin: each path)"
    )
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy (mean over seeds)")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(loc="lower right", fontsize=9)

    offsets = (
        np.linspace(-0.22, 0.22, len(labels)) if len(labels) > 1 else [0.0]
    )
    offset = dict(zip(labels, offsets))
    for y, summary in enumerate(summaries):
        spread = summary["spread"]
        means = spread["path_means"]
        ax_best.fill_betweenx(
            [y - 0.32, y + 0.32],
            min(means.values()),
            max(means.values()),
            color="0.5",
            alpha=0.15,
            linewidth=0,
        )
        for label, row in summary["joint"].items():
            yy = y + offset[label]
            ax_best.plot(
                row["best_epoch"]["values"],
                [yy] * row["n"],
                linestyle="none",
                marker=path_markers[label],
                markersize=4,
                color=path_colors[label],
                alpha=0.35,
            )
            ax_best.plot(
                means[label],
                yy,
                linestyle="none",
                marker=path_markers[label],
                markersize=9,
                color=path_colors[label],
                markeredgecolor="black",
            )
        ax_best.annotate(
            f"spread {spread['of_means']:.1f}",
            (max(means.values()), y),
            xytext=(12, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    max_epochs = max(v["settings"]["epochs"] or 1 for v in variants)
    ax_best.set_xlim(0.5, max_epochs + 0.5 + 0.15 * max_epochs)
    ax_best.set_ylim(len(summaries) - 0.5, -0.5)
    ax_best.set_yticks(range(len(summaries)))
    ax_best.set_yticklabels([s["label"] for s in summaries])
    ax_best.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_best.set_xlabel("best epoch (highest validation accuracy)")
    ax_best.set_title(
        "Best epoch per path (large: mean over seeds; small: each seed)"
    )
    ax_best.grid(True, axis="x", alpha=0.3)
    handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=path_markers[label],
            markersize=8,
            color=path_colors[label],
            markeredgecolor="black",
            label=label,
        )
        for label in labels
    ]
    handles.append(
        Patch(color="0.5", alpha=0.15, label="spread of the\nper-path means")
    )
    ax_best.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=9,
    )
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def _save_figure(fig, path):
    tmp = _tmp_path(path)
    fig.savefig(tmp, dpi=120, format="png")
    os.replace(tmp, path)


def _tmp_path(path):
    # One temporary name per process: a report rewritten by bin/report while
    # bin/train writes its own must not share (and truncate) the other's.
    folder, name = os.path.split(path)
    return os.path.join(folder or ".", f".tmp-{os.getpid()}-{name}")


def _write_text_atomic(path, text):
    tmp = _tmp_path(path)
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_comparison(run_dirs, output_path, title=COMPARISON_TITLE):
    """Compares joint training across run folders of different settings.

    Run folders with different settings (typically the sampling strategy
    and/or the batch size) are variants, compared side by side; folders with
    the same settings are merged into one variant (see `load_variants`).
    Writes a markdown file with, per path and variant, the joint test
    accuracy and best epoch (mean ± 95% t-interval over seeds) and the
    standalone reference where the folder has standalone runs; per variant,
    the spread of the paths' best epochs (of the per-path means, and per
    seed), seconds per epoch, and for the adaptive strategy the sampling
    probability of each path over the epochs. The figure (same name, `.png`)
    shows the joint validation accuracy per epoch and each path's best
    epoch per variant.

    Args:
        run_dirs: a list of run folders.
        output_path: the markdown file to write, e.g.
            `"runs/compare/comparison.md"`; its folder is created.
        title: the document's heading.

    Returns:
        `(markdown_path, figure_path)`.

    Raises:
        ValueError: unreadable results, duplicated runs, fewer than two
            variants, or a variant without a complete joint run.

    Example:

    ```python
    write_comparison(
        ["runs/uniform_b128", "runs/per_example_b128", "runs/uniform_b512"],
        "docs/results/sampling.md",
    )
    ```
    """
    if not output_path:
        raise ValueError(
            f"Invalid value for argument `output_path`. Expected a file path. Received output_path={output_path!r}."
        )
    output_path = os.fspath(output_path)
    figure_path = os.path.splitext(output_path)[0] + ".png"
    if figure_path == output_path:
        raise ValueError(
            "Invalid value for argument `output_path`. Expected a markdown file path, not a PNG. "
            f"Received output_path={output_path!r}."
        )
    variants = load_variants(run_dirs)
    summaries = [summarize_variant(variant) for variant in variants]
    folder = os.path.dirname(output_path) or "."
    os.makedirs(folder, exist_ok=True)
    text = format_comparison(
        variants, summaries, title=title, figure=os.path.basename(figure_path)
    )
    _write_text_atomic(output_path, text)
    plot_comparison(variants, summaries, figure_path)
    return output_path, figure_path
