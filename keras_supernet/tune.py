"""Seeded random search of training hyperparameters, on the validation split.

`tune` searches the learning rate (log-uniform), the batch size and the
width of the hidden dense layer with KerasTuner's random search, for the
joint supernet or for one path trained alone, and writes the best values to
`<output_dir>/best_hparams.json` for `bin/train`.

Each trial trains a fresh model with `keras_supernet.training`'s recipe, as
`bin/train` does with its default uniform sampling (same validation split,
same training subset, normalisation from the training split, Adam at a fixed
learning rate, one seeded shuffle per epoch, the same initial weights for a
given seed and width), then scores it on the
**validation split only**; the test set is never read. The score of a trial
is the validation accuracy at its best epoch, the number `bin/train`
records as `best_val_accuracy`:

- standalone (`path=P`): the best validation accuracy of path P;
- joint: every path is made active in turn (`set_path`) and evaluated after
  every epoch; the score is the mean over paths of each path's best
  validation accuracy, so the search favours settings under which all paths
  of the supernet train well, not one.

The search is reproducible: the same `seed` draws the same hyperparameters
in the same order (KerasTuner's `RandomSearch(seed=...)`) and trains with
the same initial weights and data order. The tuner's state lives in
`<output_dir>/tuner/`; running the same search again resumes it (completed
trials are kept, an interrupted one is rerun), and a larger `trials`
extends it with the trials a longer search would have drawn.

Example:

```python
best = tune(mode="standalone", path="5x5,3x3", data_dir="../shared/data/mnist",
            trials=20, epochs=5, seed=0, output_dir="runs/tune_path2")
best["hparams"]  # {"learning_rate": ..., "batch_size": ..., "hidden_units": ...}
```
"""

import json
import math
import os
import time

import keras_tuner
import numpy as np

from keras_supernet import data
from keras_supernet import presets
from keras_supernet import runs
from keras_supernet import training
from keras_supernet import validation

MODES = ("joint", "standalone")
BEST_FILE = "best_hparams.json"
CONFIG_FILE = "tune_config.json"
OBJECTIVE = "val_accuracy"
HPARAMS = ("learning_rate", "batch_size", "hidden_units")
LEARNING_RATE_RANGE = (1e-4, 1e-2)
BATCH_SIZES = (32, 64, 128, 256)
HIDDEN_UNITS = (64, 128, 256)
# Keys of tune_config.json that may change when a search is resumed.
_RESUMABLE_KEYS = ("trials",)


# === Argument validation ===


def _choices(name, values):
    values = values if isinstance(values, (list, tuple)) else (values,)
    return tuple(sorted(validation.positive_ints(name, values, distinct=True)))


def _learning_rate_range(value):
    try:
        low, high = (float(v) for v in value)
        valid = 0 < low < high and math.isfinite(high)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "Invalid value for argument `learning_rate_range`. Expected (low, high) with "
            f"0 < low < high. Received learning_rate_range={value!r}."
        )
    return low, high


def search_space(
    learning_rate_range=LEARNING_RATE_RANGE,
    batch_sizes=BATCH_SIZES,
    hidden_units=HIDDEN_UNITS,
):
    """The `keras_tuner.HyperParameters` searched by `tune`.

    `learning_rate` is log-uniform in `learning_rate_range`; `batch_size`
    and `hidden_units` are drawn uniformly from their choices.
    """
    low, high = _learning_rate_range(learning_rate_range)
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", low, high, sampling="log")
    hp.Choice("batch_size", list(_choices("batch_sizes", batch_sizes)))
    hp.Choice("hidden_units", list(_choices("hidden_units", hidden_units)))
    return hp


# === Trials ===


def oracle_seed(seed):
    """The KerasTuner oracle seed used for the search seed `seed`.

    KerasTuner replaces a seed of 0 by a random one (`seed or randint(...)`),
    and draws value i of a search from `random.Random(seed + i)`, so searches
    with consecutive seeds would share most of their draws. Hashing the seed
    avoids both.
    """
    state = np.random.SeedSequence([int(seed), 0x7475]).generate_state(1)[0]
    return max(1, int(state) & 0x7FFFFFFF)


class SupernetTuner(keras_tuner.RandomSearch):
    """Random search whose trial trains a supernet and returns its validation score.

    Args:
        score_fn: callable taking the hyperparameter values (a dict) and
            returning the metrics of the trial, including `OBJECTIVE`.
        seed: non-negative search seed; the same seed draws the same values.
        **kwargs: other `keras_tuner.RandomSearch` arguments.
    """

    def __init__(self, score_fn, seed, **kwargs):
        super().__init__(seed=oracle_seed(seed), **kwargs)
        self._score_fn = score_fn
        self.error = None

    def run_trial(self, trial, *args, **kwargs):
        try:
            return self._score_fn(dict(trial.hyperparameters.values))
        except Exception as e:
            # KerasTuner would log the failure and go on with the next trial;
            # every argument is checked before the search, so a failing
            # trial is a real problem: stop, and let `tune` raise it.
            self.error = e
            raise keras_tuner.errors.FatalError(str(e)) from e


def _make_score_fn(mode, path, splits, architecture, epochs, seed, verbose, counter):
    eval_paths = list(range(architecture["num_paths"])) if mode == "joint" else [path]

    def score(hparams):
        start = time.perf_counter()
        space = dict(architecture["space"], hidden_units=int(hparams["hidden_units"]))
        model = training.build_model(
            space,
            float(hparams["learning_rate"]),
            "uniform" if mode == "joint" else "fixed",
            seed,
            input_shape=architecture["input_shape"],
        )
        if mode == "standalone":
            model.set_path(path)
        trial_data = training.Data(splits, int(hparams["batch_size"]))
        best = {p: 0.0 for p in eval_paths}
        for epoch in range(epochs):
            training.train_epoch(model, trial_data.train(seed, epoch), epoch, epoch + 1)
            rows = training.evaluate_paths(model, eval_paths, {"val": trial_data.val})
            for p in eval_paths:
                best[p] = max(best[p], rows[p]["val_accuracy"])
            if mode == "standalone":
                model.set_path(path)
        metrics = {OBJECTIVE: float(np.mean([best[p] for p in eval_paths]))}
        metrics.update({f"{OBJECTIVE}_path{p}": best[p] for p in eval_paths})
        metrics["seconds"] = time.perf_counter() - start
        counter["done"] += 1
        if verbose:
            values = " ".join(
                (
                    f"{name}={hparams[name]:.3g}"
                    if name == "learning_rate"
                    else f"{name}={hparams[name]}"
                )
                for name in HPARAMS
            )
            print(
                f"[trial {counter['done']}/{counter['total']}] {values}: {OBJECTIVE}={metrics[OBJECTIVE]:.4f} "
                f"({metrics['seconds']:.1f} s)",
                flush=True,
            )
        return metrics

    return score


# === Search ===


def _check_existing(output_dir, config):
    """Raises if `output_dir` holds a search of another configuration."""
    validation.output_dir("output_dir", output_dir)
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"Cannot resume the search in {output_dir}: {path} is unreadable ({e})."
        ) from e
    new = json.loads(json.dumps(config))
    for key in sorted(set(new) | set(old)):
        if key not in _RESUMABLE_KEYS and new.get(key) != old.get(key):
            raise ValueError(
                f"Output folder {output_dir} holds a search with {key}={old.get(key)!r}, "
                f"this one has {key}={new.get(key)!r}: use another --output_dir."
            )


def _trial_rows(tuner, labels):
    rows = []
    # Trial ids are zero-padded to the budget's width: a search extended
    # from 9 to 10 trials mixes "8" and "09", so order by start instead.
    order = list(dict.fromkeys(tuner.oracle.start_order))
    order += sorted(set(tuner.oracle.trials) - set(order))
    for trial_id in order:
        trial = tuner.oracle.trials[trial_id]
        row = {
            "trial_id": trial_id,
            "status": trial.status,
            "hparams": {
                name: trial.hyperparameters.values.get(name) for name in HPARAMS
            },
            OBJECTIVE: trial.score,
        }
        per_path = {}
        for p, label in labels.items():
            name = f"{OBJECTIVE}_path{p}"
            if trial.metrics.exists(name):
                per_path[label] = trial.metrics.get_last_value(name)
        row[f"{OBJECTIVE}_per_path"] = per_path
        if trial.metrics.exists("seconds"):
            row["seconds"] = round(trial.metrics.get_last_value("seconds"), 3)
        rows.append(row)
    return rows


def tune(
    mode,
    path=None,
    dataset="mnist",
    data_dir=None,
    trials=10,
    epochs=3,
    train_size=None,
    val_size=5000,
    seed=0,
    output_dir="runs/tune",
    kernel_sizes=((3, 5), (3, 5)),
    filters=(16, 32),
    padding="valid",
    learning_rate_range=LEARNING_RATE_RANGE,
    batch_sizes=BATCH_SIZES,
    hidden_units=HIDDEN_UNITS,
    split_seed=0,
    verbose=1,
):
    """Random search of learning rate, batch size and hidden units.

    Every argument and the data are checked before anything is written.

    Args:
        mode: `"joint"` (score: mean over all paths of the supernet) or
            `"standalone"` (score: the one path `path`, trained alone).
        path: the standalone path (index, kernel tuple or string like
            `"5x5,3x3"`); must be `None` in joint mode.
        dataset: `"mnist"` or `"fashion_mnist"`.
        data_dir: folder with the four IDX files; `None` loads the dataset
            with tensorflow-datasets.
        trials: budget, the number of hyperparameter settings tried.
        epochs: epochs of every trial; the score is taken at the best one.
        train_size: training examples used after the validation split
            (`None`: all), as `bin/train --train_size`.
        val_size: examples held out from the training set for validation, as
            `bin/train --val_size` (the same seeded split).
        seed: seed of the search (hyperparameter draws) and of every trial
            (initial weights, path sampling, shuffling).
        output_dir: folder for `best_hparams.json`, `tune_config.json` and
            the tuner state (`tuner/`); an existing search is resumed.
        kernel_sizes, filters, padding: the supernet, as in `bin/train`.
        learning_rate_range: `(low, high)` of the log-uniform learning rate.
        batch_sizes: batch size choices.
        hidden_units: hidden dense layer width choices.
        split_seed: seed of the validation split (`bin/train` uses 0).
        verbose: 0 silent, 1 one line per trial and the result.

    Returns:
        The dict written to `best_hparams.json`: `hparams` (the best
        `learning_rate`, `batch_size`, `hidden_units`), `train_flags` (the
        same as `bin/train` flags), `objective` (name, value, description),
        `mode`, `path`, `label`, `best_trial`, `trials` (every trial with its
        values and scores), `search_space` and `config`.

    Raises:
        ValueError: an invalid argument, an unknown path, or an `output_dir`
            holding a search with other settings.
        keras_supernet.data.DataError: missing or malformed data files.
    """
    if mode not in MODES:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of {MODES}. Received mode={mode!r}."
        )
    if mode == "joint" and path is not None:
        raise ValueError(
            "Invalid value for argument `path`. Expected no path in joint mode (every path is scored). "
            f"Received path={path!r}."
        )
    if mode == "standalone" and (path is None or path == ""):
        raise ValueError(
            "Invalid value for argument `path`. Expected the path to tune in standalone mode, e.g. "
            f"2 or '5x5,3x3'. Received path={path!r}."
        )
    trials = validation.positive_int("trials", trials)
    epochs = validation.positive_int("epochs", epochs)
    train_size = validation.positive_int("train_size", train_size, allow_none=True)
    val_size = validation.positive_int("val_size", val_size)
    seed = validation.non_negative_int("seed", seed)
    output_dir = validation.output_dir("output_dir", output_dir)
    low, high = _learning_rate_range(learning_rate_range)
    batch_sizes = _choices("batch_sizes", batch_sizes)
    hidden_units = _choices("hidden_units", hidden_units)
    hp = search_space((low, high), batch_sizes, hidden_units)

    # The test split is never scored.
    splits = data.load_splits(dataset, data_dir, val_size, train_size, split_seed)
    (x_tr, _), (x_val, _), _ = splits
    input_shape = tuple(x_tr.shape[1:]) + (1,)
    spec = presets.check_spec(
        dict(
            presets.REPORT,
            kernel_sizes=[list(k) for k in kernel_sizes],
            filters=list(filters) if not validation.is_int(filters) else filters,
            padding=padding,
            hidden_units=hidden_units[0],
        )
    )
    # Builds once: every architecture error is raised before anything is
    # written; the space names the paths.
    search = presets.build_supernet(spec, input_shape=input_shape).space
    index = search.index(path) if mode == "standalone" else None
    labels = {p: search.label(p) for p in range(search.num_paths)}
    if mode == "standalone":
        labels = {index: labels[index]}
    architecture = {
        "space": spec,
        "input_shape": input_shape,
        "num_paths": search.num_paths,
    }
    space = {
        "learning_rate": {"sampling": "log", "min": low, "max": high},
        "batch_size": {"choices": list(batch_sizes)},
        "hidden_units": {"choices": list(hidden_units)},
    }
    config = {
        "mode": mode,
        "path": index,
        "label": labels[index] if index is not None else None,
        "dataset": dataset,
        "data_dir": os.path.abspath(data_dir) if data_dir is not None else None,
        "kernel_sizes": spec["kernel_sizes"],
        "filters": spec["filters"],
        "padding": padding,
        "epochs": epochs,
        "train_size": int(len(x_tr)),
        "val_size": int(len(x_val)),
        "split_seed": split_seed,
        "seed": seed,
        "trials": trials,
        "search_space": space,
    }
    _check_existing(output_dir, config)

    # Everything is valid: from here on the output folder is written, by one
    # process at a time.
    os.makedirs(output_dir, exist_ok=True)
    with runs.folder_lock(output_dir):
        return _search(
            mode,
            index,
            labels,
            splits,
            architecture,
            epochs,
            seed,
            trials,
            hp,
            space,
            config,
            output_dir,
            verbose,
        )


def _search(
    mode,
    index,
    labels,
    splits,
    architecture,
    epochs,
    seed,
    trials,
    hp,
    space,
    config,
    output_dir,
    verbose,
):
    runs.write_json(os.path.join(output_dir, CONFIG_FILE), config)
    counter = {"done": 0, "total": trials}
    score_fn = _make_score_fn(
        mode, index, splits, architecture, epochs, seed, verbose, counter
    )
    tuner = SupernetTuner(
        score_fn,
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        max_trials=trials,
        seed=seed,
        hyperparameters=hp,
        tune_new_entries=False,
        allow_new_entries=False,
        directory=output_dir,
        project_name="tuner",
        overwrite=False,
    )
    counter["done"] = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    try:
        tuner.search(verbose=0)
    except keras_tuner.errors.FatalError as e:
        if tuner.error is not None:
            raise tuner.error from None
        raise ValueError(f"The search in {output_dir} failed: {e}") from e

    completed = [
        t
        for t in tuner.oracle.trials.values()
        if t.status == "COMPLETED" and t.score is not None
    ]
    if not completed:
        raise ValueError(f"No trial of the search in {output_dir} completed.")
    best = tuner.oracle.get_best_trials(1)[0]
    hparams = {
        "learning_rate": float(best.hyperparameters.get("learning_rate")),
        "batch_size": int(best.hyperparameters.get("batch_size")),
        "hidden_units": int(best.hyperparameters.get("hidden_units")),
    }
    description = (
        "validation accuracy at the best epoch"
        if mode == "standalone"
        else "mean over paths of each path's validation accuracy at its best epoch"
    )
    result = {
        "hparams": hparams,
        "train_flags": " ".join(f"--{name}={value}" for name, value in hparams.items()),
        "objective": {
            "name": OBJECTIVE,
            "value": best.score,
            "direction": "max",
            "description": description,
        },
        "mode": mode,
        "path": index,
        "label": config["label"],
        "best_trial": best.trial_id,
        "trials": _trial_rows(tuner, labels),
        "search_space": space,
        "config": config,
    }
    runs.write_json(os.path.join(output_dir, BEST_FILE), result)
    if verbose:
        print(
            f"best of {len(completed)} trials: {result['train_flags']} "
            f"({OBJECTIVE}={best.score:.4f}) -> {os.path.join(output_dir, BEST_FILE)}",
            flush=True,
        )
    return result


def load_hparams(path):
    """The `hparams` dict of a `best_hparams.json` written by `tune`.

    Raises:
        ValueError: if the file is missing, unreadable or has no valid
            `hparams` with the searched keys.
    """
    try:
        with open(path) as f:
            hparams = json.load(f)["hparams"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"Invalid value for argument `hparams`: cannot read the "
            f"`hparams` of {path!r} ({e.__class__.__name__}: {e})."
        ) from None
    expected = {"learning_rate", "batch_size", "hidden_units"}
    if not isinstance(hparams, dict) or set(hparams) != expected:
        raise ValueError(
            f"Invalid value for argument `hparams`: {path!r} should hold "
            f"`hparams` with keys {sorted(expected)}. Received {hparams!r}."
        )
    return hparams
