"""Comparison of joint training across run folders of different settings.

`write_comparison` puts variants side by side (a variant is the folders
whose settings agree: typically one folder per seed of a sampling strategy
and batch size): per path, joint test accuracy and best epoch with their
intervals, the standalone reference, the spread of the paths' best epochs,
seconds per epoch, and the figure `comparison.png`.

Example:

```python
write_comparison(["runs/uniform", "runs/fair"], "runs/compare/comparison.md")
```
"""

import json
import os

import numpy as np

from keras_supernet import runs
from keras_supernet import stats
from keras_supernet.report import load_results
from keras_supernet.report import save_figure
from keras_supernet.report import stack_history
from keras_supernet.report import time_digits
from keras_supernet.report import version_of

_MODE_TITLE = {"joint": "Joint", "standalone": "Standalone"}


COMPARISON_FILE = "comparison.md"
COMPARISON_TITLE = "Joint training compared across sampling strategies and batch sizes"
# What defines a variant: the settings that make numbers comparable, the
# joint training recipe, and `keras_supernet`, the version that trained the
# runs (results.json records it since 0.2.0; older files come from 0.1.0).
# Folders with equal settings are merged (seeds of one variant).
_SETTINGS = tuple(
    dict.fromkeys(
        runs.RunConfig.COMPARABLE_KEYS
        + runs.RunConfig.RECIPE_KEYS
        + ("split_seed", "keras_supernet")
    )
)


def _variant_settings(config):
    settings = {key: config.get(key) for key in _SETTINGS}
    if not settings["space"].get("aggregation"):
        settings["path_dropout"] = None
    settings["branch_learning_rates"] = settings["branch_learning_rates"] or None
    settings["keras_supernet"] = version_of(config)
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
        for key in _SETTINGS
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
    full_seeds = sorted(s for s, found in by_seed.items() if len(found) == len(joint))
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
            "train": _interval([per_epoch(r, "train_seconds") for r in seed_runs]),
            "wall": _interval(wall) if wall else None,
            "standalone": (
                _interval([per_epoch(r, "train_seconds") for r in standalone_runs])
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


def format_comparison(variants, summaries, title=COMPARISON_TITLE, figure=None):
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
        for key in _SETTINGS
        if len({json.dumps(v["settings"][key]) for v in variants}) == 1
        and variants[0]["settings"][key] is not None
        and key not in ("batch_size", "sampling")
    ]
    if common:
        lines += [
            "",
            "Common settings: "
            + ", ".join(
                _setting_text(key, variants[0]["settings"][key]) for key in common
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
        label for label in labels if any(label in s["joint"] for s in summaries)
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
            f"{value} (seed {seed})" for seed, value in spread["per_seed"].items()
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
        digits = time_digits(seconds["train"]["values"])
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

    variant_colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(variants))]
    labels = []
    for summary in summaries:
        labels += [label for label in summary["joint"] if label not in labels]
    path_colors = {
        label: plt.get_cmap("Dark2")(i % 8) for i, label in enumerate(labels)
    }
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    path_markers = {label: markers[i % len(markers)] for i, label in enumerate(labels)}

    fig, (ax_acc, ax_best) = plt.subplots(
        1, 2, figsize=(14, max(5.0, 2.0 + 0.9 * len(variants)))
    )
    plotted = []
    for variant, color in zip(variants, variant_colors):
        joint = _by_path(variant["merged"]["runs"], "joint")
        curves = [
            stack_history(members, "val_accuracy").mean(axis=0)
            for members in joint.values()
        ]
        length = min(len(c) for c in curves)
        epochs = np.arange(1, length + 1)
        for curve in curves:
            ax_acc.plot(epochs, curve[:length], color=color, linewidth=0.8, alpha=0.45)
        mean = np.mean([c[:length] for c in curves], axis=0)
        ax_acc.plot(epochs, mean, color=color, linewidth=2.4, label=variant["label"])
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

    offsets = np.linspace(-0.22, 0.22, len(labels)) if len(labels) > 1 else [0.0]
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
    ax_best.set_title("Best epoch per path (large: mean over seeds; small: each seed)")
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
    save_figure(fig, path)
    plt.close(fig)


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
    runs.write_text(output_path, text)
    plot_comparison(variants, summaries, figure_path)
    return output_path, figure_path
