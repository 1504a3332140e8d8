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

from keras_supernet import presets
from keras_supernet import runs as runs_lib
from keras_supernet import stats

REPORT_FILE = runs_lib.REPORT_FILE
CURVES_FILE = runs_lib.CURVES_FILE
_MODE_ORDER = ("standalone", "joint")
_MODE_TITLE = {"joint": "Joint", "standalone": "Standalone"}


# === Loading ===


def load_results(run_dirs):
    """Reads and merges the `results.json` of several run folders.

    Configs of every keras_supernet version are read through
    `keras_supernet.runs.RunConfig`, so they come back in today's keys.

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
        folder = runs_lib.RunFolder(run_dir)
        if not os.path.isfile(folder.results_path):
            raise ValueError(f"No {runs_lib.RESULTS_FILE} in run folder {run_dir}.")
        config, dir_runs = folder.read_results()
        configs.append(config.to_json())
        for run in dir_runs:
            key = (run["mode"], run["seed"], run["path"])
            if key in seen:
                raise ValueError(
                    f"Run {run['mode']} seed={run['seed']} path={run['path']} is in both "
                    f"{seen[key]} and {run_dir}: merge folders with distinct seeds."
                )
            seen[key] = run_dir
            # Runs of 0.1.0/0.2.0 have no `label`-free form; all have labels.
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


def time_digits(seconds):
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
                "final_test_accuracy": [r["final_test_accuracy"] for r in runs],
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


def version_of(config):
    """The keras_supernet version of a run's config (recorded since 0.2.0)."""
    return (config.get("versions") or {}).get("keras_supernet", "0.1.0")


def _space_line(config):
    space = config["space"]
    if "preset" in space:
        kernel_sizes = " / ".join(
            ",".join(str(k) for k in layer) for layer in space["kernel_sizes"]
        )
        filters = space["filters"]
        filters = filters if isinstance(filters, list) else [filters]
        return (
            f"- Supernet: kernel sizes per layer {kernel_sizes}, filters "
            f"{', '.join(str(f) for f in filters)}, hidden units "
            f"{space.get('hidden_units', 128)}, padding {space.get('padding', 'valid')}"
            + (
                f", aggregation {space['aggregation']}"
                if space.get("aggregation")
                else ""
            )
        )
    return f"- Search space `{config.get('space_name')}`: {presets.describe(space)}"


def _config_lines(merged):
    config = merged["config"]
    lines = [
        f"- Dataset: {config['dataset']} ({config['train_size']} training, "
        f"{config['val_size']} validation held out from the training set, "
        f"{config['test_size']} test examples)",
        _space_line(config),
        f"- Training: Adam, learning rate {config['learning_rate']:g} (fixed), batch size "
        f"{config['batch_size']}, {config['epochs']} epochs, seeds "
        f"{', '.join(str(s) for s in sorted({r['seed'] for r in merged['runs']}))}",
        f"- Normalisation (training split): mean {config['normalization']['mean']:.4f}, "
        f"std {config['normalization']['std']:.4f}",
        f"- Trained with keras_supernet {version_of(config)}",
    ]
    differing = [
        key
        for key in runs_lib.RunConfig.COMPARABLE_KEYS
        if any(
            json.dumps(c.get(key)) != json.dumps(config.get(key))
            for c in merged["configs"][1:]
        )
    ]
    if any(version_of(c) != version_of(config) for c in merged["configs"][1:]):
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
    lines.append("Run folders: " + ", ".join(f"`{d}`" for d in merged["run_dirs"]))
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
            digits=time_digits(row["train_seconds"]),
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
            [max(row["test_accuracy"] for row in r["history"]) for r in complete]
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
            text = f"{mean:+.4f}" if len(diffs) == 1 else f"{mean:+.4f} ± {std:.4f}"
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
            text = _fmt(seconds, time_digits(seconds))
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


def stack_history(runs, key):
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
        acc = stack_history(runs, "val_accuracy")
        curves.append(
            {
                "mode": mode,
                "path": p,
                "n": len(runs),
                "mean": acc.mean(axis=0),
                "low": acc.min(axis=0),
                "high": acc.max(axis=0),
                "seconds": stack_history(runs, "seconds").mean(axis=0),
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
                ax.plot(epochs, edge, color=color, linewidth=0.6, alpha=0.7)

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
        Line2D([], [], color=colors[p], linewidth=2.5, label=labels[p]) for p in paths
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
        handles.append(Patch(facecolor="0.6", alpha=0.4, label=f"min–max over {seeds}"))
    # As many legend columns as fit the figure's width, at most 4: a long
    # path label in 4 (or 3) columns ran off both edges of the figure.
    renderer = fig.canvas.get_renderer()
    for ncol in range(min(len(handles), 4), 0, -1):
        legend = fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=ncol,
            frameon=False,
            fontsize=10,
        )
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            break
        legend.remove()
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
    save_figure(fig, path)
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
    runs_lib.write_text(report_path, text)
    plot_curves(merged, curves_path)
    return report_path, curves_path


def save_figure(fig, path):
    """Saves a matplotlib figure as PNG, atomically."""
    with runs_lib.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
