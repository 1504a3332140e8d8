"""Search after training: the best paths of a trained supernet, under a budget.

With the supernet's shared weights, a path is scored in a fraction of a
second (`PathScorer`: validation accuracy and loss, BatchNorm recalibrated
for the path), so many candidate paths can be compared under the costs the
user deploys to (`keras_supernet.costs`: parameters, FLOPs, latency), and
the winner exported (`keras_supernet.extract_path`).

`run_search` runs the loop with Optuna, a well-kept search library: each
choice is a categorical parameter, a trial proposes one path.

- `strategy="exhaustive"`: every path in index order; refused above
  `EXHAUSTIVE_MAX_PATHS` paths.
- `strategy="random"`: uniform proposals (Optuna's `RandomSampler`).
- `strategy="evolution"`: Optuna's `NSGAIISampler`, a genetic algorithm
  (selection of the best, uniform crossover, per-choice mutation) that is
  single-objective with one objective and NSGA-II with several, as SPOS and
  NNI search after training. Defaults: a population of `budget // 8`
  between 8 and 50 (at least 8 generations; SPOS's 50 x 20 for a budget
  of 1,000), each choice mutated with probability 1 / number of choices,
  crossover 0.9. Measured on trained supernets of 256 and 625 paths
  (docs/results/search.md, `strategy_study`, 10 seeds): with 10% of the
  paths, evolution found a top-1% path in 3/10 and 8/10 seeds, random
  search in 4/10 and 5/10; not a significant difference.
- `strategy="regularized"`: regularized ("aging") evolution (Real et al.
  2019, as NNI's `RegularizedEvolution`), one objective only: the
  population is the last `population_size` scored paths (default
  `budget // 4`, between 4 and 50; the first ones distinct random draws);
  each proposal
  mutates exactly one choice of the best of `tournament_size` members
  (default `population_size // 4`, at least 2) to an unproposed neighbour.
  Same study: a top-1% path in 4/10 and 8/10 seeds (best median rank on
  625 paths, 2.5), not significantly better than random search either, so
  `"evolution"` stays NSGA-II.
- `strategy="local"`: local search (best-first hill climbing; White et al.
  2021), one objective only: `population_size` random paths (default
  `budget // 10`, between 2 and 10), then each proposal an unproposed
  one-choice neighbour of the best scored path whose neighbours are not
  all proposed. Same study: a top-1% path in 7/10 and 10/10 seeds, the
  best path itself in 4/10 and 8/10; see docs/results/search.md for the
  held-out seeds. The default with one objective (NSGA-II with several).

`budget` is the number of distinct paths scored. A proposal that breaks a
constraint (`max_params`, `max_flops`, `max_latency_ms`) is first repaired:
it walks, one choice at a time, through neighbours that break the
constraints less, drawn at random, until it meets them (see
`_repair_function`; not where latency is measured per path, which is too
slow to walk with). Under a tight budget on a large space almost no
random path is feasible (0.015% of `mobile7`'s 2 million paths at the
report model's latency), and a search that only rejected proposals would
score none. A proposal that still breaks a constraint is not scored and
does not count, nor does one of a path already scored; proposals are capped
(`max_proposals`), and a search also stops after `stall_proposals` (default
1,000) proposals in a row that scored no new path, so a search under a tight
constraint still ends, and soon once the paths it can reach are spent. With a
budget of at least the space's size, every path is scored (in index order),
whatever the strategy.

`reference` names the path the search is to beat (the model deployed today,
if it is a path of the space). It is scored and costed as every proposal
is, outside the budget, and reported beside the best path; a constraint
given as `"reference"` (`max_latency_ms="reference"`) is that path's cost,
computed the same way as the proposals' (predicted by the same latency
table, or measured once and kept in the study), so that a budget read off
a model measured on a machine under other load cannot shift it.

A search lives in an Optuna study, stored by default in SQLite in the
output folder (`search.db`), or in any database given by URL. Rerun with the
same arguments, a search that was killed (kill -9 included) resumes and
ends with the result an uninterrupted search of the same seed gives: every
proposal draws from a seed that is a function of the search seed and the
trial's position (see `keras_supernet._search_samplers`), and depends
otherwise only on the trials finished before it, which the storage keeps.
A rerun with a larger budget continues the same search. Several processes,
on one machine or several, can run `run_search` on one storage at once and
score one study in parallel (exact reproducibility is then lost: which
process finishes first decides what the next proposals see).

Outputs, written atomically into `output_dir`: `search.json` (every scored
path with its costs, the best, the Pareto front, the settings and
versions), `search.md` (top paths, the front, the convergence) and
`pareto.png` (accuracy against a cost, the front highlighted).

Importing this module loads neither Optuna nor matplotlib; `run_search`
does.

Example:

```python
scorer_data = dict(x_val=x_val, y_val=y_val, x_train=x_train)
result = run_search(supernet, **scorer_data, output_dir="runs/big/search",
                    strategy="evolution", budget=1000, max_flops=5e6)
result["best"]["label"]
```
"""

import datetime
import json
import math
import os
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_supernet import costs as costs_lib
from keras_supernet import runs
from keras_supernet import validation

STRATEGIES = ("exhaustive", "random", "evolution", "regularized", "local")
# The strategies that take `population_size`, and those of one objective.
_POPULATION_STRATEGIES = ("evolution", "regularized", "local")
_SINGLE_OBJECTIVE = ("regularized", "local")
# What proposes the paths, per strategy (search.json's `settings.sampler`).
_SAMPLERS = {
    "random": "optuna RandomSampler",
    "evolution": "optuna NSGAIISampler",
    "regularized": "regularized evolution",
    "local": "local search",
}
# Exhaustive search (and any budget that covers the whole space) scores every
# path; at about a second per scored path on a CPU (BatchNorm recalibration
# plus a few thousand validation images), 4,096 paths is about an hour.
EXHAUSTIVE_MAX_PATHS = 4096
# Objectives: the field of a scored path and its direction.
DIRECTIONS = {
    "val_accuracy": "maximize",
    "val_loss": "minimize",
    "params": "minimize",
    "flops": "minimize",
    "latency_ms": "minimize",
}
COSTS = ("params", "flops", "latency_ms")
_ALIASES = {"accuracy": "val_accuracy", "loss": "val_loss", "latency": "latency_ms"}
CONSTRAINTS = {
    "max_params": "params",
    "max_flops": "flops",
    "max_latency_ms": "latency_ms",
}
# A constraint's value that means "the cost of the reference path".
REFERENCE = "reference"
# Without `max_proposals`, a search stops after this many proposals per unit
# of budget, however few of them it could score.
PROPOSALS_PER_BUDGET = 50
# A search also stops after this many proposals in a row that scored no new
# path: under a constraint that few paths meet, once the feasible paths the
# strategy reaches are scored, every further proposal is a repeat (each
# about 0.3 s of Optuna's bookkeeping), and `50 * budget` of them would run
# for hours without changing the result.
STALL_PROPOSALS = 1000
SEARCH_FORMAT = "keras_supernet.search"
# Settings a resumed search may change: they decide when it stops, not what
# it proposes.
_RESUMABLE_CHANGES = ("budget", "max_proposals", "stall_proposals")
_COST_TITLES = {
    "params": "parameters",
    "flops": "FLOPs (multiply-adds)",
    "latency_ms": "latency (ms)",
    "val_accuracy": "val accuracy",
    "val_loss": "val loss",
}


# === Scoring ===


class PathScorer:
    """Scores paths with the supernet's shared weights, once per path.

    A path's score is its accuracy and mean cross-entropy on the validation
    arrays (or their first `num_examples`), computed by the supernet with
    that path active. Where the supernet has BatchNorm, its statistics are
    first recalibrated for the path (`Supernet.recalibrate_batchnorm`) on a
    fixed set of training batches drawn once with `seed`, so that a path
    always gets the same score, whatever was scored before it. Scores are
    cached by path index: a path asked twice is scored once. Nothing here
    lists the paths of the space, so any size of space works.

    With `refit_head_batches`, the path's head (the layers after its last
    choice, `Supernet.head_layers`) is also trained alone for a few batches
    before it is scored, then put back: the shared head was trained on the
    features of every sampled path, and misjudges a path whose features
    differ from most (docs/results/search.md measures it).

    Scoring changes the supernet's active path and, with BatchNorm, the
    statistics of the layers on the scored path.

    Args:
        supernet: A built, trained `keras_supernet.Supernet`.
        x_val: Validation inputs, as the supernet takes them (normalised).
        y_val: Integer class labels of `x_val`.
        x_train: Training inputs (normalised) to recalibrate BatchNorm on;
            needed when the supernet has BatchNorm and
            `recalibration_batches > 0`.
        num_examples: Optional positive int: score on the first
            `num_examples` validation examples only.
        batch_size: Positive int, examples per forward pass.
        recalibration_batches: Non-negative int, the training batches of
            the recalibration (0: keep the statistics of training). With
            the default, 16 x 128 = 2,048 images, as once-for-all's 2,000.
        recalibration_batch_size: Positive int.
        seed: Non-negative int, the draw of the recalibration images.
        from_logits: Whether the supernet outputs logits (else
            probabilities), for the loss.
        recalibration_data: Optional iterable of training batches (`x` or
            `(x, y)`, such as `training.Data(...).bn()`, the batches a run
            recalibrated its paths on): used, every batch, instead of
            drawing from `x_train`.
        refit_head_batches: Non-negative int: before a path is scored,
            its head (`Supernet.head_layers`) is trained alone for this many
            batches of `refit_data` (`Supernet.refit_head`), then put back
            as it was after scoring. 0 (the default): score with the shared
            head.
        refit_data: An iterable of `(x, y)` training batches, needed with
            `refit_head_batches > 0`; its first `refit_head_batches` batches
            are kept and used for every path.
        refit_learning_rate: Positive float, Adam's rate for the re-fit.

    Raises:
        ValueError: for arrays of the wrong shape, or an invalid argument.

    Example:

    >>> scorer = PathScorer(supernet, x_val, y_val, x_train, num_examples=1000)
    >>> scorer("conv3x3->skip->sep3x3")
    {'val_accuracy': 0.961, 'val_loss': 0.127}
    """

    def __init__(
        self,
        supernet,
        x_val,
        y_val,
        x_train=None,
        *,
        num_examples=None,
        batch_size=256,
        recalibration_batches=16,
        recalibration_batch_size=128,
        seed=0,
        from_logits=True,
        recalibration_data=None,
        refit_head_batches=0,
        refit_data=None,
        refit_learning_rate=1e-3,
    ):
        self.supernet = supernet
        self.refit_head_batches = validation.non_negative_int(
            "refit_head_batches", refit_head_batches
        )
        self.refit_learning_rate = validation.finite_float(
            "refit_learning_rate", refit_learning_rate, low=0.0, low_open=True
        )
        self._refit_batches = None
        if self.refit_head_batches:
            if refit_data is None:
                raise ValueError(
                    "Invalid value for argument `refit_data`. Re-fitting the "
                    "head per path (refit_head_batches="
                    f"{self.refit_head_batches}) trains on `(x, y)` training "
                    "batches: pass them. Received refit_data=None."
                )
            if not supernet.head_variables:
                raise ValueError(
                    "Invalid value for argument `refit_head_batches`: the "
                    "supernet has no trainable layer after its last choice, "
                    "so there is no head to re-fit. Received "
                    f"refit_head_batches={self.refit_head_batches}."
                )
            # Kept, so that every path is re-fitted on the same batches.
            self._refit_batches = []
            for batch in refit_data:
                if len(self._refit_batches) >= self.refit_head_batches:
                    break
                x, y = validation.labelled_batch("refit_data", batch)
                self._refit_batches.append((np.asarray(x), np.asarray(y)))
            if not self._refit_batches:
                raise ValueError(
                    "Invalid value for argument `refit_data`. Expected at "
                    "least one batch to re-fit the head on. Received an "
                    "empty dataset."
                )
        self.num_examples = validation.positive_int(
            "num_examples", num_examples, allow_none=True
        )
        self.batch_size = validation.positive_int("batch_size", batch_size)
        self.recalibration_batches = validation.non_negative_int(
            "recalibration_batches", recalibration_batches
        )
        self.recalibration_batch_size = validation.positive_int(
            "recalibration_batch_size", recalibration_batch_size
        )
        self.seed = validation.non_negative_int("seed", seed)
        self.from_logits = bool(from_logits)
        input_shape = tuple(supernet.inputs[0].shape[1:])
        x_val = self._images("x_val", x_val, input_shape)
        y_val = np.asarray(y_val)
        if (
            y_val.ndim != 1
            or len(y_val) != len(x_val)
            or not np.issubdtype(y_val.dtype, np.integer)
        ):
            raise ValueError(
                "Invalid value for argument `y_val`. Expected integer class "
                f"labels of shape ({len(x_val)},), one per example of "
                f"`x_val`. Received y_val of shape {y_val.shape} and dtype "
                f"{y_val.dtype}."
            )
        if self.num_examples is not None:
            x_val, y_val = x_val[: self.num_examples], y_val[: self.num_examples]
        if not len(x_val):
            raise ValueError(
                "Invalid value for argument `x_val`. Expected at least one "
                "validation example. Received an empty array."
            )
        self.x_val, self.y_val = x_val, y_val.astype("int64")
        self.recalibrate = bool(supernet.has_batchnorm and self.recalibration_batches)
        self._batches = None
        if self.recalibrate and recalibration_data is not None:
            # The caller's batches (training's own), as they are.
            self._batches = [
                np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch)
                for batch in recalibration_data
            ]
            if not self._batches:
                raise ValueError(
                    "Invalid value for argument `recalibration_data`. "
                    "Expected at least one batch of training images. "
                    "Received an empty dataset."
                )
        elif self.recalibrate:
            if x_train is None:
                raise ValueError(
                    "Invalid value for argument `x_train`. The supernet has "
                    "BatchNorm, whose statistics are recalibrated per path on "
                    "training images: pass them (or recalibration_batches=0 "
                    "to keep the statistics of training). Received "
                    "x_train=None."
                )
            x_train = self._images("x_train", x_train, input_shape)
            count = min(
                len(x_train),
                self.recalibration_batches * self.recalibration_batch_size,
            )
            chosen = np.random.default_rng(self.seed).choice(
                len(x_train), count, replace=False
            )
            images = x_train[chosen]
            self._batches = [
                images[i : i + self.recalibration_batch_size]
                for i in range(0, count, self.recalibration_batch_size)
            ]
        self.scores = {}
        # One trace for every path: the path lives in the choices' index
        # variables.
        self._forward = tf.function(
            lambda x: supernet(x, training=False), reduce_retracing=True
        )

    @staticmethod
    def _images(name, value, input_shape):
        array = np.asarray(value)
        if array.ndim != len(input_shape) + 1 or tuple(array.shape[1:]) != input_shape:
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected an array of "
                f"shape (N, {', '.join(map(str, input_shape))}), as the "
                f"supernet takes. Received {name} of shape {array.shape}."
            )
        return array.astype("float32", copy=False)

    @property
    def num_scored(self):
        """The number of distinct paths scored so far."""
        return len(self.scores)

    def __call__(self, path):
        return self.score(path)

    def score(self, path):
        """The score of `path` (any spelling).

        Returns:
            A dict: `val_accuracy` and `val_loss` (floats).
        """
        index = self.supernet.resolve_path(path)
        if index not in self.scores:
            self.scores[index] = self._score(index)
        return dict(self.scores[index])

    def _score(self, index):
        if self.recalibrate:
            self.supernet.recalibrate_batchnorm(
                self._batches, index, batches=len(self._batches)
            )
        else:
            self.supernet.set_path(index)
        if self._refit_batches is None:
            return self._evaluate()
        with self.supernet.head_refitted(
            self._refit_batches,
            batches=len(self._refit_batches),
            learning_rate=self.refit_learning_rate,
            from_logits=self.from_logits,
        ):
            return self._evaluate()

    def _evaluate(self):
        correct = 0
        loss = 0.0
        for start in range(0, len(self.x_val), self.batch_size):
            x = self.x_val[start : start + self.batch_size]
            y = self.y_val[start : start + self.batch_size]
            outputs = self._forward(tf.constant(x))
            losses = keras.losses.sparse_categorical_crossentropy(
                y, outputs, from_logits=self.from_logits
            )
            loss += float(np.sum(keras.ops.convert_to_numpy(losses), dtype="float64"))
            predicted = np.argmax(keras.ops.convert_to_numpy(outputs), axis=-1)
            correct += int(np.sum(predicted == y))
        return {
            "val_accuracy": correct / len(self.x_val),
            "val_loss": loss / len(self.x_val),
        }


# === Pareto front ===


def _objective_names(name, objectives, allow_any):
    if isinstance(objectives, str):
        objectives = [o for o in objectives.replace(" ", "").split(",") if o]
    try:
        names = [_ALIASES.get(o, o) for o in objectives]
    except TypeError:
        names = None
    valid = (
        names
        and all(n in DIRECTIONS for n in names)
        and len(set(names)) == len(names)
        and (
            allow_any
            or (names[0] == "val_accuracy" and all(n in COSTS for n in names[1:]))
        )
    )
    if not valid:
        expected = (
            f"distinct names among {tuple(DIRECTIONS)}"
            if allow_any
            else "'val_accuracy' (or 'accuracy') first, then any of 'params', "
            "'flops', 'latency_ms' (or 'latency'), distinct"
        )
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected {expected}. "
            f"Received {name}={objectives!r}."
        )
    return tuple(names)


def pareto_front(points, objectives):
    """The points that no other point dominates.

    A point dominates another when it is at least as good in every
    objective and strictly better in one (`val_accuracy` is maximised; loss,
    parameters, FLOPs and latency are minimised). Points with equal values
    in every objective do not dominate each other: duplicates are all on
    the front.

    Args:
        points: A sequence of dicts holding every objective as a number
            (such as the `evaluated` entries of `search.json`).
        objectives: Names among `val_accuracy`, `val_loss`, `params`,
            `flops`, `latency_ms` (`accuracy`, `loss`, `latency` also), a
            sequence or a comma-separated string.

    Returns:
        The non-dominated points, in their input order.

    Raises:
        ValueError: for an unknown objective, or a point without a numeric
            value of one.

    Example:

    >>> pareto_front([{"val_accuracy": 0.9, "flops": 10},
    ...               {"val_accuracy": 0.8, "flops": 20},
    ...               {"val_accuracy": 0.95, "flops": 30}],
    ...              ["val_accuracy", "flops"])
    [{'val_accuracy': 0.9, 'flops': 10}, {'val_accuracy': 0.95, 'flops': 30}]
    """
    names = _objective_names("objectives", objectives, allow_any=True)
    points = list(points)
    if not points:
        return []
    rows = []
    for i, point in enumerate(points):
        row = []
        for name in names:
            value = point.get(name) if isinstance(point, dict) else None
            if not validation.is_number(value) or math.isnan(float(value)):
                raise ValueError(
                    f"Invalid value for argument `points`. Expected a number "
                    f"for every objective. Received points[{i}][{name!r}]="
                    f"{value!r}."
                )
            sign = -1.0 if DIRECTIONS[name] == "maximize" else 1.0
            row.append(sign * float(value))
        rows.append(row)
    values = np.asarray(rows)
    front = []
    for i, row in enumerate(values):
        dominated = np.any(np.all(values <= row, axis=1) & np.any(values < row, axis=1))
        if not dominated:
            front.append(points[i])
    return front


# === Files ===


def _fmt(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}"


def _ms(value):
    return "-" if value is None else f"{value:.4f}"


def _table(records, limit=None, ranked=True):
    lines = [
        "| rank | path | label | val accuracy | val loss | params | FLOPs "
        "| latency (ms) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for rank, r in enumerate(records[:limit] if limit else records, 1):
        lines.append(
            f"| {rank if ranked else '-'} | {r['path']} | `{r['label']}` "
            f"| {r['val_accuracy']:.4f} "
            f"| {r['val_loss']:.4f} | {r['params']:,} | {r['flops']:,} | "
            f"{_ms(r.get('latency_ms'))} |"
        )
    return lines


def format_markdown(result):
    """`search.md`: the settings, top paths, Pareto front and convergence."""
    s = result["settings"]
    limits = _limits(result)
    constraints = [
        f"{k}={v:g}" + (" (the reference path's)" if s.get(k) == REFERENCE else "")
        for k, v in limits.items()
    ]
    lines = [
        "# Search after training",
        "",
        f"Space: {result['space']}. Strategy `{s['strategy']}`, budget "
        f"{_fmt(s['budget'])} distinct paths, search seed {s['search_seed']}, "
        f"objectives {', '.join(s['objectives'])}"
        + (f", constraints {', '.join(constraints)}" if constraints else "")
        + ".",
        "",
        f"Scored {result['num_scored']:,} distinct paths out of "
        f"{result['num_proposals']:,} proposals "
        f"({result['proposals']['infeasible']:,} broke a constraint, "
        f"{result['proposals']['duplicate']:,} were paths already scored); "
        f"stopped: {result['stopped']}.",
        "",
    ]
    if s.get("scorer") == "PathScorer":
        lines += [
            f"Scores: accuracy and loss on {s['validation_examples']:,} "
            "validation examples with the supernet's shared weights"
            + (
                f", BatchNorm recalibrated per path on "
                f"{s['recalibration_batches']} x {s['recalibration_batch_size']}"
                " training images"
                if s.get("recalibrated")
                else ""
            )
            + (
                f", the head re-fitted per path ({s['refit_head_batches']} "
                f"training batch{'es' if s['refit_head_batches'] != 1 else ''}, "
                f"Adam at {s['refit_learning_rate']:g})"
                if s.get("refit_head_batches")
                else ""
            )
            + ".",
            "",
        ]
    if s.get("latency"):
        lines += [f"Latency: {s['latency']}.", ""]
    lines += ["## Best path", ""] + _table([result["best"]]) + [""]
    if result.get("reference"):
        lines += _reference_lines(result["best"], result["reference"])
    ranked = sorted(
        result["evaluated"],
        key=lambda r: (-r["val_accuracy"], r["val_loss"], r["path"]),
    )
    lines += [f"## Top {min(10, len(ranked))} paths", ""]
    lines += _table(ranked, 10) + [""]
    front = result["pareto"]
    lines += [
        f"## Pareto front ({' against '.join(result['pareto_objectives'])})",
        "",
    ]
    lines += _table(front) + [""]
    lines += [
        "## Convergence",
        "",
        "Best val accuracy against the number of distinct paths scored.",
        "",
        "| paths scored | best val accuracy | best path |",
        "|---:|---:|---|",
    ]
    best_by_n = {}
    best = None
    for n, r in enumerate(result["evaluated"], 1):
        if best is None or (r["val_accuracy"], -r["val_loss"]) > (
            best["val_accuracy"],
            -best["val_loss"],
        ):
            best = r
        best_by_n[n] = best
    marks = sorted(
        {n for n in best_by_n if n in (1, 2, 5) or _round_mark(n)} | {len(best_by_n)}
    )
    for n in marks:
        if n in best_by_n:
            lines.append(
                f"| {n:,} | {best_by_n[n]['val_accuracy']:.4f} | "
                f"`{best_by_n[n]['label']}` |"
            )
    lines += [
        "",
        "![Accuracy against cost](pareto.png)",
        "",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def _limits(result):
    """The constraints as numbers (search.json files older than
    `constraints` hold them in the settings only)."""
    if "constraints" in result:
        return result["constraints"]
    s = result["settings"]
    return {k: s[k] for k in CONSTRAINTS if s.get(k) is not None}


def _reference_lines(best, reference):
    """search.md's reference section: the path and how the best compares."""

    def ratio(cost):
        if best.get(cost) is None or not reference.get(cost):
            return None
        return f"{cost} {best[cost] / reference[cost]:.2f}x"

    ratios = [r for r in map(ratio, COSTS) if r is not None]
    return (
        ["## Reference path", ""]
        + _table([reference], ranked=False)
        + [
            "",
            "The best path against it: val accuracy "
            f"{best['val_accuracy'] - reference['val_accuracy']:+.4f} with the "
            "shared weights"
            + (", " + ", ".join(ratios) if ratios else "")
            + ". Scores with shared weights rank paths; retrain the best path "
            "alone (bin/train --mode=standalone) to compare accuracies.",
            "",
        ]
    )


def _round_mark(n):
    """1, 2, 5, 10, 20, 50, 100, ..."""
    digits = 10 ** int(math.log10(n))
    return n in (digits, 2 * digits, 5 * digits)


def plot_pareto(result, path):
    """`pareto.png`: val accuracy against a cost for every scored path,
    the Pareto front highlighted, the best path and constraints marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = result["plot_cost"]
    evaluated = [r for r in result["evaluated"] if r.get(cost) is not None]
    front = sorted(
        (r for r in result["pareto"] if r.get(cost) is not None),
        key=lambda r: r[cost],
    )
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter(
        [r[cost] for r in evaluated],
        [r["val_accuracy"] for r in evaluated],
        s=14,
        color="#9aa5b1",
        alpha=0.6,
        linewidths=0,
        label=f"scored paths ({len(evaluated):,})",
    )
    if front:
        ax.step(
            [r[cost] for r in front],
            [r["val_accuracy"] for r in front],
            where="post",
            color="#d1495b",
            linewidth=1.2,
            alpha=0.8,
        )
        ax.scatter(
            [r[cost] for r in front],
            [r["val_accuracy"] for r in front],
            s=36,
            color="#d1495b",
            zorder=3,
            label=f"Pareto front ({len(front)})",
        )
        if len(front) <= 12:
            # Path indices, to find the points in search.md's tables; paths
            # of equal values share one label.
            labels = {}
            for r in front:
                labels.setdefault((r[cost], r["val_accuracy"]), []).append(
                    str(r["path"])
                )
            for (x, y), paths in labels.items():
                ax.annotate(
                    ", ".join(paths),
                    (x, y),
                    textcoords="offset points",
                    xytext=(5, -10),
                    fontsize=7,
                    color="#8c2f39",
                )
    for name, record, style in (
        (
            "best",
            result["best"],
            dict(s=160, marker="*", color="#edae49", linewidths=0.6),
        ),
        (
            "reference",
            result.get("reference"),
            dict(s=90, marker="D", color="white", linewidths=1.0),
        ),
    ):
        if record and record.get(cost) is not None:
            ax.scatter(
                [record[cost]],
                [record["val_accuracy"]],
                edgecolors="black",
                zorder=4,
                label=f"{name}: {_short(record['label'])}",
                **style,
            )
    limit_name = {v: k for k, v in CONSTRAINTS.items()}.get(cost)
    limit = _limits(result).get(limit_name) if limit_name else None
    if limit is not None:
        ax.axvline(
            limit,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"{limit_name} = {limit:g}",
        )
    values = [r[cost] for r in evaluated]
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(_COST_TITLES[cost])
    s = result["settings"]
    ax.set_ylabel(
        "validation accuracy (shared weights"
        + (", head re-fitted" if s.get("refit_head_batches") else "")
        + ")"
    )
    paths = result["num_paths"]
    ax.set_title(
        f"{s['strategy']} search: {result['num_scored']:,} paths scored of "
        + (f"{paths:,}" if paths < 10**7 else f"{paths:.2e}")
        + f" ({s['space'].split(' candidates')[0]} candidates)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    try:
        with runs.atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)


def _short(label, width=40):
    return label if len(label) <= width else label[: width - 3] + "..."


# === Search ===


def _check_constraint(name, value, reference):
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == REFERENCE:
        if reference is None:
            raise ValueError(
                f"Invalid value for argument `{name}`. A limit of "
                "'reference' is the cost of the `reference` path, and none "
                f"was given. Received {name}={value!r}, reference=None."
            )
        return REFERENCE
    return validation.positive_float(name, value)


def _check_reference(reference, space):
    """The index of the reference path (any spelling of a path), or None."""
    if reference is None:
        return None
    try:
        return space.index(reference)
    except ValueError as error:
        raise ValueError(f"Invalid value for argument `reference`: {error}") from None


def _reference_record(study, reference, cost, scorer):
    """The reference path's record (costs and score), computed once per
    study and kept in it: a measured latency is not measured again on
    resume, so the limits it gives stay those the search started with."""
    stored = study.user_attrs.get("reference")
    if stored is not None and stored.get("path") == reference:
        return stored
    record = cost(reference)
    score = scorer(reference)
    record["val_accuracy"] = float(score["val_accuracy"])
    record["val_loss"] = float(score["val_loss"])
    study.set_user_attr("reference", record)
    # Another process may have stored its own first: all use the stored one.
    return study.user_attrs["reference"]


def _default_population(budget, strategy="evolution"):
    # See the module docstring.
    if strategy == "regularized":
        return max(4, min(50, budget // 4))
    if strategy == "local":
        # The random starting paths: the climb does the work, and how many
        # starts mattered little (docs/results/search.md).
        return max(2, min(10, budget // 10))
    # At least 8 generations within the budget.
    return max(8, min(50, budget // 8))


def _versions():
    import optuna

    return runs.versions(optuna=optuna.__version__)


def _storage(url, output_dir):
    import optuna
    import sqlalchemy.exc

    if url is None:
        url = "sqlite:///" + os.path.join(os.path.abspath(output_dir), "search.db")
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # Processes sharing one SQLite file wait for each other's writes.
        engine_kwargs = {"connect_args": {"timeout": 120}}

    for attempt in range(10):
        try:
            with warnings.catch_warnings():
                # Optuna calls heartbeats experimental; they are the
                # documented way to fail the trials of a dead worker.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return url, optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    # Trials of a worker that died on another machine are
                    # failed after the grace period (this machine's are
                    # found at once, by pid).
                    heartbeat_interval=30,
                    grace_period=120,
                )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            # Workers started together race to create the tables of a new
            # database; the loser finds them on its next try.
            if attempt == 9:
                raise
            time.sleep(0.2 * (attempt + 1))


def _records(study, space):
    """Per outcome, the records of the finished trials, in trial order, and
    how many proposals in a row, up to the last, scored no new path (0
    before the first path is scored: until then `max_proposals` decides,
    and its error names the constraints that no proposal met)."""
    from optuna.trial import TrialState

    scored, infeasible, duplicate = [], [], []
    seen = set()
    since_new = 0
    for trial in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
    ):
        record = trial.user_attrs.get("record")
        if not record:
            continue
        outcome = record.get("outcome")
        if outcome == "scored" and record["path"] not in seen:
            seen.add(record["path"])
            scored.append(record)
            since_new = 0
            continue
        if seen:
            since_new += 1
        if outcome == "infeasible":
            infeasible.append(record)
        else:
            # A repeat, or a path two processes scored at once: the first
            # record of a path is the one kept.
            duplicate.append(record)
    return scored, infeasible, duplicate, since_new


def _public(record):
    keys = (
        "path",
        "label",
        "val_accuracy",
        "val_loss",
        "params",
        "flops",
        "latency_ms",
    )
    return {k: record[k] for k in keys if record.get(k) is not None}


def _infeasible_error(constraints, minima, proposed=None, num_proposals=0):
    """One line: the constraints no path meets and the smallest costs.

    Without `proposed`, the constraints are below the cheapest path of the
    space (`minima`, exact). With `proposed`, the search ended without
    finding a path that meets them all: the smallest costs proposed are
    named, and the cheapest of the space where known.
    """
    stated = " and ".join(f"{k}={v:g}" for k, v in constraints.items())
    parts = []
    for limit_name in constraints:
        cost = CONSTRAINTS[limit_name]
        known = minima.get(cost)
        values = [r for r in proposed or () if r.get(cost) is not None]
        if values:
            r = min(values, key=lambda r: r[cost])
            parts.append(
                f"the smallest {cost} proposed is {_cost_text(cost, r[cost])} "
                f"(path {r['path']}, {_short(r['label'], 60)})"
                + (
                    f", of any path {_cost_text(cost, known[1])} (path {known[0]})"
                    if known
                    else ""
                )
            )
        elif known:
            parts.append(
                f"the smallest {cost} of any path is "
                f"{_cost_text(cost, known[1])} (path {known[0]}, "
                f"{_short(known[2], 60)})"
            )
    if proposed is None:
        return ValueError(f"No path satisfies {stated}: " + "; ".join(parts) + ".")
    return ValueError(
        f"No path satisfying {stated} was found in {num_proposals:,} "
        "proposals: " + "; ".join(parts) + ". Relax the constraints or raise "
        "`max_proposals`."
    )


def _cost_text(cost, value):
    return f"{value:.4f} ms" if cost == "latency_ms" else f"{int(value):,}"


def _check_budget(strategy, budget, space):
    """`(budget, enumerate_all)`: the distinct paths to score, and whether
    that is every path (then scored in index order)."""
    if strategy == "exhaustive":
        if budget is not None and budget < space.num_paths:
            raise ValueError(
                "Invalid value for argument `budget`. Exhaustive search "
                f"scores every path ({space.num_paths:,}); leave the budget "
                "out or use strategy='random' or 'evolution'. Received "
                f"budget={budget}."
            )
        budget = space.num_paths
    elif budget is None:
        raise ValueError(
            "Invalid value for argument `budget`. Expected the number of "
            f"distinct paths to score with strategy={strategy!r}. "
            "Received budget=None."
        )
    enumerate_all = budget >= space.num_paths
    if enumerate_all and space.num_paths > EXHAUSTIVE_MAX_PATHS:
        if strategy == "exhaustive":
            argument, what = "strategy", "Exhaustive search scores"
        else:
            argument, what = "budget", f"A budget of {budget:,} scores"
        raise ValueError(
            f"Invalid value for argument `{argument}`. "
            f"{what} every path, and the space has {space.describe()} "
            f"(more than {EXHAUSTIVE_MAX_PATHS:,}): use strategy='random' or "
            "'evolution' with a smaller budget."
        )
    return min(budget, space.num_paths), enumerate_all


def _check_latency_table(latency_table, supernet):
    if isinstance(latency_table, (str, os.PathLike)):
        latency_table = costs_lib.LatencyTable.load(latency_table)
    if latency_table is not None:
        if not isinstance(latency_table, costs_lib.LatencyTable):
            raise ValueError(
                "Invalid value for argument `latency_table`. Expected a "
                "`LatencyTable` or the path of its JSON file. Received "
                f"latency_table={latency_table!r}."
            )
        latency_table.check(supernet)
    return latency_table


def _check_feasible(supernet, constraints, latency_table):
    """The cheapest path of each constrained cost where known exactly
    (`{cost: (index, value, label)}`); raises where a constraint is below
    it."""
    space = supernet.space
    minima = {}
    for limit_name in constraints:
        cost = CONSTRAINTS[limit_name]
        cheapest = costs_lib.cheapest_path(supernet, cost, latency_table)
        if cheapest is not None:
            minima[cost] = (cheapest[0], cheapest[1], space.label(cheapest[0]))
    broken = {
        k: v
        for k, v in constraints.items()
        if CONSTRAINTS[k] in minima and minima[CONSTRAINTS[k]][1] > v
    }
    if broken:
        raise _infeasible_error(broken, minima)
    return minima


def _cost_function(supernet, latency_table, latency_needed, latency_threads):
    """`cost(index)`: the record of a path's costs (`path`, `label`,
    `params`, `flops`, `latency_ms` where needed), computed once per path."""
    space = supernet.space
    cache = {}

    def cost(index):
        if index not in cache:
            record = {"path": index, "label": space.label(index)}
            record.update(costs_lib.path_costs(supernet, index))
            if latency_table is not None:
                record["latency_ms"] = latency_table.predict(index)
            elif latency_needed:
                record["latency_ms"] = costs_lib.measure_latency(
                    supernet, index, threads=latency_threads
                )
            cache[index] = record
        return dict(cache[index])

    return cost


def _repairable(constraints, latency_table):
    return bool(constraints) and not (
        "max_latency_ms" in constraints and latency_table is None
    )


def _repair_function(space, cost, constraints, latency_table):
    """`repair(index, rng, taken=())`: a path that meets `constraints`,
    reached from `index` by changing one choice at a time; None where a
    constrained cost is measured per path (too slow to walk with).

    Each step moves to a one-choice neighbour drawn uniformly among those
    that break the constraints less (the sum over broken constraints of
    cost / limit - 1), until none is broken. Drawing among all the
    improving neighbours rather than taking the cheapest keeps the repaired
    paths varied and close to the budget (a greedy walk would fall to the
    cheapest candidates); a path no neighbour improves is left as it is
    (and not scored). A feasible path in `taken` (already proposed) moves
    to a feasible neighbour not in it, where there is one.
    """
    if not _repairable(constraints, latency_table):
        return None
    limits = [(CONSTRAINTS[k], v) for k, v in constraints.items()]

    def value(index, name):
        # A walk looks at many neighbours: a latency budget alone is a
        # table lookup, not the parameter and FLOPs count of a plain graph
        # per neighbour (which, where a choice's output width varies, means
        # extracting the path).
        if name == "latency_ms" and latency_table is not None:
            return latency_table.predict(index)
        return cost(index)[name]

    def excess(index):
        return sum(max(0.0, value(index, c) / v - 1.0) for c, v in limits)

    def repair(index, rng, taken=()):
        current = excess(index)
        while current > 0:
            better = [
                (n, v) for n in space.neighbours(index) if (v := excess(n)) < current
            ]
            if not better:
                return index
            index, current = better[int(rng.integers(len(better)))]
        if index in taken:
            # The walks of many proposals end on the same few paths near
            # the budget: step on to a feasible one not proposed yet.
            free = [
                n for n in space.neighbours(index) if n not in taken and not excess(n)
            ]
            if free:
                index = free[int(rng.integers(len(free)))]
        return index

    return repair


def _open_study(
    storage,
    storage_url,
    study_name,
    settings,
    space,
    objectives,
    enumerate_all,
    samplers_lib,
):
    """Loads the study (checking its settings) or creates it, with the
    sampler of `settings`; fills in the default population."""
    import optuna

    def check_settings(stored):
        changed = sorted(
            k
            for k in set(stored) | set(settings)
            if k not in _RESUMABLE_CHANGES
            and stored.get(k) != json.loads(json.dumps(settings.get(k)))
        )
        if changed:
            raise ValueError(
                f"The study {study_name!r} in {storage_url} holds a search "
                "with other settings ("
                + ", ".join(
                    f"{k}: {stored.get(k)!r} there, {settings.get(k)!r} now"
                    for k in changed
                    if k != "space_config"
                )
                + (", another search space" if "space_config" in changed else "")
                + "). Rerun with the same settings to resume it, or use "
                "another `output_dir` (or `storage`)."
            )

    try:
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(),
        )
        stored = study.user_attrs.get("settings")
    except KeyError:
        study, stored = None, None
    if (
        settings["strategy"] in _POPULATION_STRATEGIES
        and settings["population_size"] is None
    ):
        # The default depends on the budget; a search resumed with a larger
        # budget keeps the population it started with.
        settings["population_size"] = (stored or {}).get(
            "population_size"
        ) or _default_population(settings["budget"], settings["strategy"])
    if settings["strategy"] == "regularized" and settings["tournament_size"] is None:
        settings["tournament_size"] = samplers_lib.default_tournament(
            settings["population_size"]
        )
    if stored is not None:
        check_settings(stored)
    seed = settings["search_seed"]
    if enumerate_all:
        sampler = samplers_lib.EnumerationSampler(space)
    elif settings["strategy"] == "random":
        sampler = samplers_lib.KeyedSampler(
            lambda s: optuna.samplers.RandomSampler(seed=s), seed
        )
    elif settings["strategy"] == "regularized":
        sampler = samplers_lib.RegularizedEvolutionSampler(
            space, seed, settings["population_size"], settings["tournament_size"]
        )
    elif settings["strategy"] == "local":
        sampler = samplers_lib.LocalSearchSampler(
            space, seed, settings["population_size"]
        )
    else:
        sampler = samplers_lib.KeyedSampler(
            lambda s: optuna.samplers.NSGAIISampler(
                population_size=settings["population_size"],
                mutation_prob=settings["mutation_prob"],
                crossover_prob=settings["crossover_prob"],
                seed=s,
            ),
            seed,
        )
    if study is not None:
        study.sampler = sampler
        return study
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        directions=[DIRECTIONS[o] for o in objectives],
        load_if_exists=True,
    )
    # Another process may have created it meanwhile.
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    else:
        check_settings(stored)
    return study


def _result(
    space,
    settings,
    objectives,
    constraints,
    scored,
    infeasible,
    duplicate,
    stopped,
    storage,
    study_name,
    reference=None,
):
    """The content of search.json."""
    evaluated = [_public(r) for r in scored]
    best = min(evaluated, key=lambda r: (-r["val_accuracy"], r["val_loss"], r["path"]))
    if len(objectives) > 1:
        pareto_objectives = list(objectives)
        plot_cost = objectives[1]
    else:
        # One objective: the front of accuracy against the constrained cost
        # (FLOPs without constraints), which pareto.png plots.
        plot_cost = next((CONSTRAINTS[k] for k in constraints), "flops")
        pareto_objectives = ["val_accuracy", plot_cost]
    pareto = pareto_front(
        [r for r in evaluated if all(r.get(o) is not None for o in pareto_objectives)],
        pareto_objectives,
    )
    pareto.sort(key=lambda r: (r[pareto_objectives[1]], -r["val_accuracy"]))
    convergence = []
    running = None
    for n, r in enumerate(evaluated, 1):
        if running is None or r["val_accuracy"] > running:
            running = r["val_accuracy"]
            convergence.append({"scored": n, "best_val_accuracy": running})
    result = {
        "format": SEARCH_FORMAT,
        "version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "space": space.describe(),
        "num_paths": space.num_paths,
        "settings": {k: v for k, v in settings.items() if k != "space_config"},
        "storage": storage,
        "study_name": study_name,
        "versions": _versions(),
        "num_scored": len(evaluated),
        "num_proposals": len(scored) + len(infeasible) + len(duplicate),
        "proposals": {
            "scored": len(scored),
            "infeasible": len(infeasible),
            "duplicate": len(duplicate),
        },
        "stopped": stopped,
        "best": best,
        "reference": None if reference is None else _public(reference),
        "constraints": dict(constraints),
        "pareto_objectives": pareto_objectives,
        "plot_cost": plot_cost,
        "pareto": pareto,
        "convergence": convergence,
        "evaluated": evaluated,
    }
    return result


def run_search(
    supernet,
    x_val=None,
    y_val=None,
    x_train=None,
    *,
    output_dir,
    strategy=None,
    budget=None,
    search_seed=0,
    objectives=("val_accuracy",),
    max_params=None,
    max_flops=None,
    max_latency_ms=None,
    reference=None,
    latency_table=None,
    latency_threads=1,
    num_examples=None,
    batch_size=256,
    recalibration_batches=16,
    recalibration_batch_size=128,
    recalibration_data=None,
    refit_head_batches=0,
    refit_data=None,
    refit_learning_rate=1e-3,
    population_size=None,
    tournament_size=None,
    mutation_prob=None,
    crossover_prob=0.9,
    max_proposals=None,
    stall_proposals=None,
    storage=None,
    study_name="search",
    scorer=None,
    run=None,
    verbose=1,
):
    """Searches the paths of a trained supernet; writes and returns the result.

    Args:
        supernet: A built, trained `keras_supernet.Supernet`.
        x_val: Validation inputs as the supernet takes them (normalised).
        y_val: Integer labels of `x_val`.
        x_train: Training inputs for BatchNorm recalibration (see
            `PathScorer`).
        output_dir: Folder of `search.json`, `search.md`, `pareto.png` and,
            by default, the study's `search.db`; created if missing.
        strategy: `"exhaustive"`, `"random"`, `"evolution"`,
            `"regularized"` or `"local"` (these two: one objective only).
            Default: `"local"` with one objective, `"evolution"` with
            several (the best measured, docs/results/search.md).
        budget: Positive int, the distinct paths to score; None (default)
            for exhaustive search, which scores every path.
        search_seed: Non-negative int; the same seed gives the same search.
        objectives: `("val_accuracy",)`, or val_accuracy and costs
            (`"params"`, `"flops"`, `"latency_ms"`) for a multi-objective
            search that returns the Pareto front (a sequence or a
            comma-separated string; `accuracy`, `latency` also).
        max_params: Optional limit on a path's parameters, or
            `"reference"`: the reference path's.
        max_flops: Optional limit on a path's FLOPs (multiply-adds), or
            `"reference"`.
        max_latency_ms: Optional limit on a path's latency, or
            `"reference"` (computed as the proposals' latencies are).
        reference: Optional path to compare with (an index or any spelling
            of a path, e.g. a label): scored and costed outside the
            budget, reported as `reference`, and the cost a `"reference"`
            limit stands for.
        latency_table: A `keras_supernet.costs.LatencyTable` (or the path of
            its JSON file) to predict latencies with; without one, a
            latency that is needed is measured per path
            (`costs.measure_latency`, seconds per path, and not
            reproducible: prefer a table).
        latency_threads: Positive int, LiteRT threads of measured latency.
        num_examples: Optional positive int: score on the first
            `num_examples` validation examples.
        batch_size: Positive int, validation batch size.
        recalibration_batches: Non-negative int (see `PathScorer`).
        recalibration_batch_size: Positive int.
        recalibration_data: Optional training batches to recalibrate on
            instead of a draw from `x_train` (see `PathScorer`).
        refit_head_batches: Non-negative int: re-fit the head for this many
            batches of `refit_data` before each path is scored (see
            `PathScorer`); 0 (default): score with the shared head.
        refit_data: `(x, y)` training batches of the re-fit.
        refit_learning_rate: Positive float, Adam's rate of the re-fit.
        population_size: Evolution: individuals per generation. Default:
            `budget // 8`, between 8 and 50. Regularized evolution: the
            paths kept (the last scored). Default: `budget // 4`, between 4
            and 50. Local search: the random paths it starts from. Default:
            `budget // 10`, between 2 and 10.
        tournament_size: Regularized evolution: population members sampled
            per proposal, the best of which is mutated. Default:
            `population_size // 4`, at least 2.
        mutation_prob: Evolution: per-choice probability of a random
            candidate in a child. Default: 1 / number of choices (Optuna's).
        crossover_prob: Evolution: probability that a child is a uniform
            crossover of two parents (else a copy of one), in [0, 1].
        max_proposals: Positive int, the most proposals (scored or not) of
            the study; default `50 * budget`.
        stall_proposals: Positive int: the search stops after this many
            proposals in a row that scored no new path (repeats, or paths
            that break a constraint). Raise it for a constraint that few
            paths meet in a large space, where the strategy needs longer to
            reach the next feasible path; default `STALL_PROPOSALS` (1,000).
            Exhaustive enumeration never stalls.
        storage: Optional database URL of the Optuna study (such as
            `"sqlite:///search.db"`, `"postgresql://..."`); default: SQLite
            `output_dir/search.db`.
        study_name: The study's name in the storage.
        scorer: Optional callable taking a path index and returning a dict
            with `val_accuracy` and `val_loss`, used instead of a
            `PathScorer` of the arrays (then not needed).
        run: Optional JSON-able dict naming where the supernet comes from
            (`search_run` gives the run folder, mode, seed and epoch);
            kept in the settings, so a search resumes only on the same
            run and `bin/export --from_search` can check it.
        verbose: 0 (silent) or 1 (a progress bar).

    Returns:
        The content of `search.json`: `evaluated` (every scored path, in
        scoring order: `path`, `label`, `val_accuracy`, `val_loss`,
        `params`, `flops`, `latency_ms` when known), `best` (the highest
        val accuracy; ties: lower loss, then lower index), `reference`
        (the reference path's record, or None), `constraints` (the limits
        as numbers), `pareto` (the
        front of `pareto_objectives`: the objectives, or val accuracy
        against `plot_cost` for one objective), `convergence`, counts of
        proposals, `stopped`, `settings`, `versions`.

    Raises:
        ValueError: an invalid argument (an unknown strategy, a budget of 0,
            exhaustive search of a space above `EXHAUSTIVE_MAX_PATHS`
            paths, unknown objectives), an output folder holding a search
            with other settings, or constraints no path satisfies (the
            message names the smallest cost found).
    """
    # === Arguments, before anything slow ===
    space = supernet.space
    objectives = _objective_names("objectives", objectives, allow_any=False)
    if strategy is None:
        strategy = "local" if len(objectives) == 1 else "evolution"
    strategy = validation.one_of("strategy", strategy, STRATEGIES)
    budget = validation.positive_int("budget", budget, allow_none=True)
    search_seed = validation.non_negative_int("search_seed", search_seed)
    reference = _check_reference(reference, space)
    constraints = {
        name: _check_constraint(name, value, reference)
        for name, value in (
            ("max_params", max_params),
            ("max_flops", max_flops),
            ("max_latency_ms", max_latency_ms),
        )
        if value is not None
    }
    output_dir = validation.output_dir("output_dir", output_dir)
    latency_threads = validation.positive_int("latency_threads", latency_threads)
    verbose = validation.one_of("verbose", verbose, (0, 1, True, False))
    latency_table = _check_latency_table(latency_table, supernet)
    budget, enumerate_all = _check_budget(strategy, budget, space)
    max_proposals = validation.positive_int(
        "max_proposals", max_proposals, allow_none=True
    ) or max(PROPOSALS_PER_BUDGET * budget, 2 * space.num_paths if enumerate_all else 0)
    stall_proposals = (
        validation.positive_int("stall_proposals", stall_proposals, allow_none=True)
        or STALL_PROPOSALS
    )
    population_size = validation.positive_int(
        "population_size", population_size, allow_none=True
    )
    if population_size is not None and population_size < 2:
        raise ValueError(
            "Invalid value for argument `population_size`. Expected at "
            f"least 2. Received population_size={population_size}."
        )
    tournament_size = validation.positive_int(
        "tournament_size", tournament_size, allow_none=True
    )
    if (
        tournament_size is not None
        and population_size is not None
        and tournament_size > population_size
    ):
        raise ValueError(
            "Invalid value for argument `tournament_size`. Expected at most "
            f"population_size ({population_size}). Received "
            f"tournament_size={tournament_size}."
        )
    for name, value, users in (
        ("population_size", population_size, _POPULATION_STRATEGIES),
        ("tournament_size", tournament_size, ("regularized",)),
        ("mutation_prob", mutation_prob, ("evolution",)),
    ):
        # A setting the strategy would ignore is a mistake, not a no-op.
        if value is not None and strategy not in users:
            raise ValueError(
                f"Invalid value for argument `{name}`: strategy={strategy!r} "
                f"does not use it (only {', '.join(map(repr, users))}). "
                f"Received {name}={value!r}."
            )
    if strategy in _SINGLE_OBJECTIVE and len(objectives) > 1:
        raise ValueError(
            "Invalid value for argument `strategy`. "
            f"{_SAMPLERS[strategy].capitalize()} "
            "searches one objective; use strategy='evolution' (NSGA-II) for "
            f"several. Received objectives={list(objectives)}."
        )
    if mutation_prob is not None:
        mutation_prob = validation.finite_float(
            "mutation_prob", mutation_prob, low=0.0, high=1.0
        )
    crossover_prob = validation.finite_float(
        "crossover_prob", crossover_prob, low=0.0, high=1.0
    )
    if scorer is not None and not callable(scorer):
        raise ValueError(
            "Invalid value for argument `scorer`. Expected a callable taking "
            f"a path index. Received scorer={scorer!r}."
        )
    latency_needed = "latency_ms" in objectives or "max_latency_ms" in constraints
    latency_source = None
    if latency_table is not None:
        latency_source = (
            f"predicted by a latency table (threads "
            f"{latency_table.info.get('threads', '?')})"
        )
    elif latency_needed:
        latency_source = f"measured per path with LiteRT, {latency_threads} thread(s)"

    # Constraints below the cheapest path: one clear error before searching
    # (a limit set by the reference path is met by that path).
    minima = _check_feasible(
        supernet,
        {k: v for k, v in constraints.items() if v != REFERENCE},
        latency_table,
    )

    if scorer is None:
        if x_val is None or y_val is None:
            raise ValueError(
                "Invalid arguments: give the validation arrays `x_val` and "
                "`y_val` (or a `scorer`). Received x_val="
                f"{'None' if x_val is None else 'an array'}, y_val="
                f"{'None' if y_val is None else 'an array'}."
            )
        scorer = PathScorer(
            supernet,
            x_val,
            y_val,
            x_train,
            num_examples=num_examples,
            batch_size=batch_size,
            recalibration_batches=recalibration_batches,
            recalibration_batch_size=recalibration_batch_size,
            recalibration_data=recalibration_data,
            refit_head_batches=refit_head_batches,
            refit_data=refit_data,
            refit_learning_rate=refit_learning_rate,
        )
        scorer_settings = {
            "scorer": "PathScorer",
            "validation_examples": len(scorer.x_val),
            "num_examples": num_examples,
            "batch_size": scorer.batch_size,
            "recalibrated": scorer.recalibrate,
            "recalibration_batches": scorer.recalibration_batches,
            "recalibration_batch_size": scorer.recalibration_batch_size,
            "recalibration_data": (
                None
                if scorer._batches is None
                else "given"
                if recalibration_data is not None
                else "drawn"
            ),
        }
        if scorer.refit_head_batches:
            # Only when on: searches written before the re-fit existed keep
            # their settings, and resume.
            scorer_settings.update(
                refit_head_batches=len(scorer._refit_batches),
                refit_learning_rate=scorer.refit_learning_rate,
            )
    else:
        scorer_settings = {"scorer": "custom"}

    cost = _cost_function(supernet, latency_table, latency_needed, latency_threads)
    repairs = not enumerate_all and _repairable(constraints, latency_table)
    repair_text = (
        "a proposal breaking a constraint walks to a feasible neighbour"
        if repairs
        else None
    )
    settings = {
        "strategy": strategy,
        "sampler": "every path in index order"
        if enumerate_all
        else _SAMPLERS[strategy],
        "budget": budget,
        "search_seed": search_seed,
        "objectives": list(objectives),
        "max_params": constraints.get("max_params"),
        "max_flops": constraints.get("max_flops"),
        "max_latency_ms": constraints.get("max_latency_ms"),
        "reference": reference,
        "latency": latency_source,
        "latency_table_base_ms": (
            latency_table.base_ms if latency_table is not None else None
        ),
        "population_size": (
            population_size if strategy in _POPULATION_STRATEGIES else None
        ),
        "tournament_size": tournament_size if strategy == "regularized" else None,
        "mutation_prob": mutation_prob if strategy == "evolution" else None,
        "crossover_prob": crossover_prob if strategy == "evolution" else None,
        "max_proposals": max_proposals,
        "stall_proposals": stall_proposals,
        "repair": repair_text,
        "space": space.describe(),
        "space_config": space.get_config(),
        **scorer_settings,
    }
    if run is not None:
        settings["run"] = dict(run)

    # === The study ===
    import optuna
    from optuna.trial import TrialState

    from keras_supernet import _search_samplers as samplers_lib

    os.makedirs(output_dir, exist_ok=True)
    storage_url, storage_obj = _storage(storage, output_dir)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _open_study(
            storage_obj,
            storage_url,
            study_name,
            settings,
            space,
            objectives,
            enumerate_all,
            samplers_lib,
        )
        for number in samplers_lib.stale_trials(study):
            study.tell(number, state=TrialState.FAIL)
        reference_record = None
        if reference is not None:
            reference_record = _reference_record(study, reference, cost, scorer)
            constraints = {
                k: reference_record[CONSTRAINTS[k]] if v == REFERENCE else v
                for k, v in constraints.items()
            }
        repair = (
            _repair_function(space, cost, constraints, latency_table)
            if repairs
            else None
        )
        if repair is not None:
            study.sampler = samplers_lib.RepairingSampler(
                study.sampler, space, repair, search_seed
            )

        stopped = _optimize(
            study,
            space,
            cost,
            scorer,
            objectives,
            constraints,
            budget,
            max_proposals,
            stall_proposals,
            enumerate_all,
            verbose,
            samplers_lib,
        )
        scored, infeasible, duplicate, _ = _records(study, space)
    finally:
        optuna.logging.set_verbosity(verbosity)

    if not scored:
        if constraints:
            raise _infeasible_error(
                constraints, minima, infeasible, len(infeasible) + len(duplicate)
            )
        raise ValueError(f"The search scored no path in {max_proposals:,} proposals.")

    result = _result(
        space,
        settings,
        objectives,
        constraints,
        scored,
        infeasible,
        duplicate,
        stopped,
        storage_url if storage is not None else "search.db",
        study_name,
        reference_record,
    )
    runs.write_json(os.path.join(output_dir, "search.json"), result)
    runs.write_text(os.path.join(output_dir, "search.md"), format_markdown(result))
    plot_pareto(result, os.path.join(output_dir, "pareto.png"))
    return result


def _optimize(
    study,
    space,
    cost,
    scorer,
    objectives,
    constraints,
    budget,
    max_proposals,
    stall_proposals,
    enumerate_all,
    verbose,
    samplers_lib,
):
    """Runs Optuna's loop until the budget is scored; returns why it
    stopped."""
    import optuna
    from optuna.trial import TrialState

    names = space.choice_names
    labels = space.candidate_labels

    def counts():
        scored, infeasible, duplicate, since_new = _records(study, space)
        return (
            len(scored),
            len(scored) + len(infeasible) + len(duplicate),
            (len(scored) + len(infeasible)),
            scored,
            since_new,
        )

    def reason():
        num_scored, num_proposals, num_done, _, since_new = counts()
        if num_scored >= budget:
            return "budget" if not enumerate_all else "every path scored"
        if enumerate_all and num_done >= space.num_paths:
            return "every path proposed"
        if num_proposals >= max_proposals:
            return f"max_proposals ({max_proposals:,}) reached"
        # Enumeration proposes each path once: it never stalls.
        if not enumerate_all and since_new >= stall_proposals:
            return f"no new path in the last {stall_proposals:,} proposals"
        return None

    def objective(trial):
        choice = tuple(
            trial.suggest_categorical(name, list(options))
            for name, options in zip(names, labels)
        )
        index = space.index(choice)
        record = cost(index)
        broken = [
            limit_name
            for limit_name, limit in constraints.items()
            if record[CONSTRAINTS[limit_name]] > limit
        ]
        if broken:
            record["outcome"] = "infeasible"
            trial.set_user_attr("record", record)
            raise optuna.TrialPruned()
        # Scored, or being scored by another process sharing the study.
        taken = {
            samplers_lib.trial_path(space, t)
            for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)
            )
            if t.number != trial.number
        }
        if index in taken:
            record["outcome"] = "duplicate"
            trial.set_user_attr("record", record)
            raise optuna.TrialPruned()
        score = scorer(index)
        record["val_accuracy"] = float(score["val_accuracy"])
        record["val_loss"] = float(score["val_loss"])
        record["outcome"] = "scored"
        trial.set_user_attr("record", record)
        return [record["val_accuracy"]] + [record[o] for o in objectives[1:]]

    progress = None
    if verbose:
        progress = keras.utils.Progbar(
            budget,
            unit_name="path",
            stateful_metrics=["best_val_accuracy", "proposals"],
        )

    def report():
        if progress is None:
            return
        num_scored, num_proposals, _, scored, _ = counts()
        values = [("proposals", num_proposals)]
        if scored:
            values.append(("best_val_accuracy", max(r["val_accuracy"] for r in scored)))
        progress.update(min(num_scored, budget), values=values)

    def callback(study_, trial):
        report()
        if reason() is not None:
            study_.stop()

    report()
    if reason() is None:
        study.optimize(objective, callbacks=[callback], gc_after_trial=False)
    return reason() or "stopped"


# === Run folders: bin/search and bin/export --from_search ===


def search_run(
    run_dir,
    *,
    mode="joint",
    seed=0,
    epoch="best",
    output_dir=None,
    data_dir=None,
    latency_table=None,
    build_latency_table=False,
    **kwargs,
):
    """Searches the paths of a training run's supernet (`bin/search`).

    The run and epoch are picked as `bin/export` picks them
    (`runs.RunFolder.load`; `epoch="best"` is the epoch where the mean
    validation accuracy of the paths the run evaluated peaked). Paths are
    scored on the run's validation split (or its first `num_examples`);
    a supernet with BatchNorm is recalibrated per path on the training
    batches the run recalibrated its evaluations on
    (`training.run_data(config).bn()`). With `refit_head_batches`, each
    path's head is re-fitted on the first batches of the run's training
    data (in the order of seed 0, epoch after epoch) at the run's learning
    rate.

    Args:
        run_dir: A run folder written by `bin/train`.
        mode: `"joint"`: only a jointly trained supernet has weights
            shared by every path.
        seed: The run's seed.
        epoch: `"best"`, `"last"` or an epoch number whose checkpoint was
            kept.
        output_dir: Default `<run_dir>/search`.
        data_dir: Folder of the dataset's IDX files; default the run's.
        latency_table: Optional `costs.LatencyTable` or the path of its
            JSON file, to predict latencies with (see `run_search`).
        build_latency_table: With `latency_table` a path to a file that
            does not exist yet: measure the table first
            (`costs.LatencyTable.build`, with `latency_threads`) and save
            it there. An existing file is used as it is, so a rerun
            resumes the same search.
        **kwargs: Other arguments of `run_search` (`strategy`, `budget`,
            `max_flops`, `latency_threads`, ...).

    Returns:
        The content of `search.json` (see `run_search`); its
        `settings["run"]` names the run folder, mode, seed and epoch.

    Raises:
        ValueError: an unknown run folder, seed or epoch, a standalone
            mode, or any error of `run_search`.
    """
    from keras_supernet import training

    if mode != "joint":
        raise ValueError(
            "Invalid value for argument `mode`. A search scores paths with "
            "the weights a joint run's paths share; a standalone run trained "
            f"one path. Expected 'joint'. Received mode={mode!r}."
        )
    folder = runs.RunFolder(run_dir)
    loaded = folder.load(mode, seed, None, epoch)
    if build_latency_table:
        if not isinstance(latency_table, (str, os.PathLike)):
            raise ValueError(
                "Invalid value for argument `latency_table`. Building a "
                "latency table needs the path of the JSON file to write. "
                f"Received latency_table={latency_table!r}."
            )
        if not os.path.exists(latency_table):
            costs_lib.LatencyTable.build(
                loaded.supernet, threads=kwargs.get("latency_threads", 1)
            ).save(latency_table)
    data = training.run_data(loaded.config, data_dir)
    refit = validation.non_negative_int(
        "refit_head_batches", kwargs.get("refit_head_batches", 0)
    )
    if refit:
        # The same batches whatever the search seed, at the run's
        # learning rate.
        kwargs.setdefault("refit_data", data.refit_batches(refit))
        kwargs.setdefault("refit_learning_rate", loaded.config.learning_rate)
    x_val = np.concatenate([x for x, _ in data.val.as_numpy_iterator()])
    y_val = np.concatenate([y for _, y in data.val.as_numpy_iterator()])
    if output_dir is None:
        output_dir = os.path.join(folder.path, "search")
    run = {
        "run_dir": os.path.realpath(folder.path),
        "mode": mode,
        "seed": loaded.seed,
        "epoch": loaded.epoch,
    }
    return run_search(
        loaded.supernet,
        x_val,
        y_val,
        output_dir=output_dir,
        recalibration_data=data.bn() if loaded.recalibrates else None,
        latency_table=latency_table,
        run=run,
        **kwargs,
    )


def read_search(search_dir, run_dir=None):
    """The `search.json` of a search folder, checked against a run folder.

    Args:
        search_dir: A folder written by `search_run` / `bin/search` (or the
            path of its search.json).
        run_dir: Optional run folder the search must belong to.

    Raises:
        ValueError: no readable search.json there, or a search of another
            run folder (or of no run folder).
    """
    search_dir = os.fspath(search_dir)
    path = search_dir
    if os.path.isdir(search_dir):
        path = os.path.join(search_dir, "search.json")
    if not os.path.isfile(path):
        raise ValueError(
            "Invalid value for argument `from_search`. Expected a folder "
            f"written by bin/search, with a search.json. Received "
            f"from_search={search_dir!r}."
        )
    result = runs.read_json(path, "search result")
    if not isinstance(result, dict) or result.get("format") != SEARCH_FORMAT:
        raise ValueError(
            f"Invalid value for argument `from_search`. {path} is not a "
            f"search result (format {SEARCH_FORMAT!r}). Received "
            f"from_search={search_dir!r}."
        )
    if run_dir is not None:
        run = result.get("settings", {}).get("run")
        if not run or os.path.realpath(run["run_dir"]) != os.path.realpath(run_dir):
            where = run["run_dir"] if run else "no run folder (a library search)"
            raise ValueError(
                f"Invalid value for argument `from_search`. The search in "
                f"{search_dir} scored the supernet of {where}, not of "
                f"run_dir={os.fspath(run_dir)!r}."
            )
    return result


def export_best(
    run_dir,
    from_search,
    mode=None,
    seed=None,
    epoch=None,
    refit_head_batches=None,
    **kwargs,
):
    """Exports the best path of a search (`bin/export --from_search`).

    The path is exported from the run, seed and epoch the search scored,
    like any path (`export.export_path`), and as it was scored: its
    BatchNorm recalibrated, and its head re-fitted where the search
    re-fitted heads (`refit_head_batches`).

    Args:
        run_dir: The run folder the search belongs to.
        from_search: The search's folder (see `read_search`).
        mode, seed, epoch, refit_head_batches: None for the search's;
            given values must be the search's.
        **kwargs: Other arguments of `export.export_path` (`export_dir`,
            `name`, `formats`, `quantize`, `data_dir`).

    Returns:
        `export.export_path`'s report.

    Raises:
        ValueError: see `read_search`; a mode, seed, epoch or re-fit other
            than the search's.
    """
    from keras_supernet import export

    result = read_search(from_search, run_dir)
    settings = result["settings"]
    run = settings["run"]
    for name, given in (("mode", mode), ("seed", seed), ("epoch", epoch)):
        if given is not None and str(given) != str(run[name]):
            raise ValueError(
                f"Invalid value for argument `{name}`. The search in "
                f"{os.fspath(from_search)} scored {run['mode']} seed "
                f"{run['seed']} at epoch {run['epoch']}: its best path is "
                f"exported from there. Received {name}={given!r}."
            )
    # Absent from searches without a re-fit (and from those written before
    # it existed).
    refit = settings.get("refit_head_batches", 0)
    if refit_head_batches is not None and refit_head_batches != refit:
        raise ValueError(
            "Invalid value for argument `refit_head_batches`. The search in "
            f"{os.fspath(from_search)} scored its paths with the head "
            + (f"re-fitted on {refit} batches" if refit else "not re-fitted")
            + ": its best path is exported the same way. Received "
            f"refit_head_batches={refit_head_batches!r}."
        )
    return export.export_path(
        run_dir,
        result["best"]["path"],
        mode=run["mode"],
        seed=run["seed"],
        epoch=run["epoch"],
        refit_head_batches=refit,
        refit_learning_rate=settings.get("refit_learning_rate"),
        **kwargs,
    )


# === Does the search work? ===


def strategy_study(
    supernet,
    scores,
    output_dir,
    strategies=("random", "evolution"),
    fractions=(0.01, 0.05, 0.1),
    seeds=range(5),
    **kwargs,
):
    """Ranks the paths that searches find, against every path's score.

    With `scores` holding every path's score (an exhaustive search's
    `evaluated`), each search of `strategies` x budgets (`fractions` of the
    space, at least 1 path) x `seeds` runs `run_search` with a scorer that
    looks the scores up, and the path it returns as best is ranked among
    all paths (1 = the best; by val accuracy, then lower val loss).

    Args:
        supernet: The `Supernet` scored (its space and costs).
        scores: Every path's score: a list of records with `path`,
            `val_accuracy`, `val_loss` (search.json's `evaluated`).
        output_dir: Folder of one sub-folder per search.
        strategies: Strategies of `run_search` to compare.
        fractions: Budgets as fractions of the space's size.
        seeds: Search seeds of each strategy and budget.
        **kwargs: Other arguments of `run_search`.

    Returns:
        A dict: `num_paths`, `top1_rank` (the ranks that are in the top
        1%), `runs` (per search: `strategy`, `budget`, `search_seed`,
        `path`, `label`, `rank`, `val_accuracy`) and `summary` (per
        strategy and budget: the ranks, their median, and `top1_hits`, the
        seeds whose path is in the top 1%).

    Raises:
        ValueError: `scores` without every path of the space.
    """
    space = supernet.space
    table = {
        int(r["path"]): {"val_accuracy": r["val_accuracy"], "val_loss": r["val_loss"]}
        for r in scores
    }
    if sorted(table) != list(range(space.num_paths)):
        raise ValueError(
            "Invalid value for argument `scores`. Expected the score of every "
            f"one of the {space.num_paths} paths. Received {len(table)} paths."
        )
    order = sorted(
        table, key=lambda p: (-table[p]["val_accuracy"], table[p]["val_loss"], p)
    )
    rank = {p: i + 1 for i, p in enumerate(order)}
    top1 = max(1, math.ceil(0.01 * space.num_paths))
    rows, summary = [], []
    for strategy in strategies:
        for fraction in fractions:
            budget = max(1, round(fraction * space.num_paths))
            ranks = []
            for seed in seeds:
                result = run_search(
                    supernet,
                    output_dir=os.path.join(
                        output_dir, f"{strategy}_budget{budget}_seed{seed}"
                    ),
                    strategy=strategy,
                    budget=budget,
                    search_seed=seed,
                    scorer=table.__getitem__,
                    verbose=0,
                    **kwargs,
                )
                best = result["best"]
                ranks.append(rank[best["path"]])
                rows.append(
                    {
                        "strategy": strategy,
                        "budget": budget,
                        "search_seed": seed,
                        "path": best["path"],
                        "label": best["label"],
                        "rank": rank[best["path"]],
                        "val_accuracy": best["val_accuracy"],
                        "num_scored": result["num_scored"],
                    }
                )
            summary.append(
                {
                    "strategy": strategy,
                    "budget": budget,
                    "fraction": fraction,
                    "ranks": ranks,
                    "median_rank": float(np.median(ranks)),
                    "top1_hits": sum(r <= top1 for r in ranks),
                    "seeds": len(ranks),
                }
            )
    return {
        "num_paths": space.num_paths,
        "top1_rank": top1,
        "best_path": order[0],
        "best_val_accuracy": table[order[0]]["val_accuracy"],
        "runs": rows,
        "summary": summary,
    }
