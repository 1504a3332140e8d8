"""The ranking study: does a supernet rank architectures as training alone does?

`run_study` measures, on one search space, how well the scores a weight-sharing
supernet gives its paths agree with the accuracies of the same architectures
trained alone, and which supernet training methods raise that agreement. Every
training goes through `keras_supernet.training` (one recipe for everything).

The study, in its order:

1. **Selection.** A supernet of its own (uniform sampling, `selection_seed`,
   scored nowhere else) scores a seeded pool of random architectures; the
   architectures are drawn from the pool by `stratified_sample`, equal numbers
   from equal-width bins of that score (as DYNAS and SUMNAS sample
   NAS-Bench-201 by accuracy bins), so that the whole range is covered. They are
   listed bin by bin in turn, so every prefix of the list is stratified too
   (what `pilot` trains).
2. **Ground truth.** Every architecture trained alone (`sampling="fixed"`,
   the space's initial weights for that seed), per seed of `standalone_seeds`;
   after every epoch its BatchNorm statistics are recalibrated on fixed
   training batches and the test set is evaluated. The standalone accuracy of
   an architecture is the mean, over seeds, of its test accuracy averaged over
   the last `average_epochs` epochs; the seed-to-seed Kendall tau is the noise
   ceiling.
3. **Supernets.** Per method and seed, a supernet is trained and scores every
   architecture: its validation accuracy with the shared weights (see
   `METHODS`).
4. **Report.** `write_report` merges study folders (shards) and writes
   `ranking.json`, `ranking.md` and `ranking.png`: Kendall tau, Spearman rho,
   top-5 overlap and the regret of the supernet's top-1 per method and seed,
   bootstrap intervals over architectures, and each method's cost relative to
   uniform training.

Every step is resumable: trainings save their state after every epoch, and
results are written atomically once complete, so a killed study started again
with the same arguments continues and ends with the numbers of an
uninterrupted one. `shard=(i, n)` trains every n-th unit of work (a standalone
run, or a supernet with its scores), so that several processes share a study;
`write_report` merges their folders as `bin/report` merges run folders.

Example:

```python
run_study("runs/rank", data_dir="../shared/data/mnist")
write_report(["runs/rank"], "docs/results/ranking")
```
"""

import copy
import dataclasses
import itertools
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

import keras_supernet
from keras_supernet import data as data_lib
from keras_supernet import presets
from keras_supernet import runs
from keras_supernet import sampling as sampling_lib
from keras_supernet import stats
from keras_supernet import training
from keras_supernet import validation

STAGES = ("all", "select", "standalone", "supernets", "report")
ARCHITECTURES_FILE = "architectures.json"
CONFIG_FILE = "study.json"
REPORT_JSON = "ranking.json"
REPORT_MD = "ranking.md"
REPORT_PNG = "ranking.png"
COMMANDS_FILE = "commands.sh"
# Pool scores are saved after every this many architectures.
_POOL_CHUNK = 16

# The methods, in report order. `unit` is the training that produces the
# scores (one per seed): several methods share the uniform supernets.
METHODS = {
    "uniform": "uniform sampling (SPOS): one path drawn per batch; BatchNorm recalibrated before each score",
    "no_recalibration": "the uniform supernets, scored with the BatchNorm statistics of supernet training",
    "fair": "FairNAS strict fairness: every candidate of every choice trained once per step",
    "longer": "uniform sampling, trained `longer_epochs` epochs instead of `supernet_epochs`",
    "few_shot": "few-shot NAS: one sub-supernet per candidate of the split choice, each initialised from the uniform supernet and trained on its own share of the space",
    "warmup": "full-depth warm-up: no skip drawn in the first `warmup_epochs` epochs, then uniform",
    "angle": "angle-based score (ABS): the angle between a path's initial and trained weights, on the uniform supernets",
    "refit_head": "the uniform supernets, each path's head (the layers after the last choice) re-fitted alone for `refit_batches` training batches before its score, BatchNorm recalibrated",
}
METHOD_UNIT = {
    "uniform": "uniform",
    "no_recalibration": "uniform",
    "longer": "uniform",
    "few_shot": "uniform",
    "angle": "uniform",
    "refit_head": "uniform",
    "fair": "fair",
    "warmup": "warmup",
}
UNITS = ("uniform", "fair", "warmup")


class StudyError(ValueError):
    """A study folder or setting that cannot be used."""


# === Metrics ===


def stratified_sample(scores, count, bins, rng):
    """Indices of `count` items drawn evenly across equal-width score bins.

    The range of `scores` is cut into `bins` bins of equal width (the top
    score falls in the last); each bin gets `count // bins` draws, the
    highest bins one more until `count` is reached. A bin with fewer items
    than its quota gives all it has, and the places left go, one at a time,
    to the bins that still have items, from the highest down. Within a bin
    the items are drawn with `rng` without replacement.

    Args:
        scores: one score per item.
        count: positive int, at most the number of items.
        bins: positive int.
        rng: a `numpy.random.Generator`.

    Returns:
        A list of `count` distinct indices, ordered bin by bin in turn
        (the first draw of every bin from the highest down, then the second
        ...), so that every prefix covers the range as well as it can.
    """
    scores = np.asarray(scores, dtype=np.float64)
    count = validation.positive_int("count", count)
    bins = validation.positive_int("bins", bins)
    if scores.ndim != 1 or not np.all(np.isfinite(scores)):
        raise ValueError(
            "Invalid value for argument `scores`. Expected finite numbers. "
            f"Received scores={scores.tolist()!r}."
        )
    if count > len(scores):
        raise ValueError(
            f"Invalid value for argument `count`. Expected at most the "
            f"{len(scores)} items. Received count={count}."
        )
    low, width = scores.min(), np.ptp(scores)
    if width == 0:
        which = np.zeros(len(scores), dtype=int)
    else:
        which = np.minimum(((scores - low) / width * bins).astype(int), bins - 1)
    members = [list(np.flatnonzero(which == b)) for b in range(bins)]
    quota = [
        count // bins + (1 if b >= bins - count % bins else 0) for b in range(bins)
    ]
    taken = [min(q, len(m)) for q, m in zip(quota, members)]
    left = count - sum(taken)
    while left:
        for b in reversed(range(bins)):
            if left and taken[b] < len(members[b]):
                taken[b] += 1
                left -= 1
    drawn = [
        [int(i) for i in rng.permutation(m)[:t]] if t else []
        for m, t in zip(members, taken)
    ]
    order = []
    for position in range(max(taken)):
        for b in reversed(range(bins)):
            if position < len(drawn[b]):
                order.append(drawn[b][position])
    return order


# === BatchNorm and scores ===


def score_paths(model, paths, dataset, bn_data=None, refit_data=None, refit=None):
    """Each path's accuracy and loss on `dataset` with the shared weights.

    Args:
        model: a compiled supernet.
        paths: path indices.
        dataset: `(x, y)` batches (the validation split).
        bn_data: recalibration batches (`training.Data.bn()`), or None to
            score with the BatchNorm statistics as they are.
        refit_data, refit: re-fit each path's head first (see
            `training.evaluate_paths`).

    Returns:
        `{path: {"accuracy": ..., "loss": ...}}`.
    """
    rows = training.evaluate_paths(
        model,
        paths,
        {"val": dataset},
        bn_data=bn_data,
        refit_data=refit_data,
        refit=refit,
    )
    return {
        path: {"accuracy": row["val_accuracy"], "loss": row["val_loss"]}
        for path, row in rows.items()
    }


def _candidate_variables(model):
    """Per choice, per candidate, the ids of its trainable variables."""
    return [
        [
            {id(v) for v in candidate.trainable_variables}
            for candidate in choice.candidates
        ]
        for choice in model.choices
    ]


def angle_scores(model, initial, paths):
    """The angle-based score (Hu et al. 2020, ABS) of each path.

    The angle, in radians, between the vector of the path's trainable
    weights at initialisation and after training: the shared layers and the
    candidates the path takes (a skip has no weights and adds nothing). ABS
    found that paths whose weights moved further rank higher.

    Args:
        model: the trained supernet.
        initial: the initial values of `model.trainable_variables`, in order.
        paths: path indices.

    Returns:
        `{path: angle}`.
    """
    variables = model.trainable_variables
    if len(initial) != len(variables):
        raise ValueError(
            f"Expected {len(variables)} initial values, received {len(initial)}."
        )
    owners = _candidate_variables(model)
    inside = set().union(*(ids for choice in owners for ids in choice))
    # Dot products and squared norms per variable, summed per path.
    dot = np.array([float(np.vdot(w0, v.numpy())) for w0, v in zip(initial, variables)])
    n0 = np.array([float(np.vdot(w0, w0)) for w0 in initial])
    n1 = np.array([float(np.vdot(v.numpy(), v.numpy())) for v in variables])
    position = {id(v): i for i, v in enumerate(variables)}
    shared = [position[id(v)] for v in variables if id(v) not in inside]
    result = {}
    for path in paths:
        chosen = list(shared)
        for choice, k in zip(owners, model.space.resolve(path)):
            chosen += [position[i] for i in choice[k]]
        cosine = dot[chosen].sum() / math.sqrt(n0[chosen].sum() * n1[chosen].sum())
        result[path] = float(math.acos(max(-1.0, min(1.0, cosine))))
    return result


# === State files ===


def save_state(model, path, sampler=True):
    """Saves every variable of `model` and its optimizer to `path` (npz),
    atomically; sampler variables are marked so that `load_state` can move
    a state between supernets of different samplers."""
    sampler_ids = {id(v) for v in model.sampler.variables}
    arrays = {}
    for i, v in enumerate(model.variables):
        kind = "sampler" if id(v) in sampler_ids else "model"
        if kind == "model" or sampler:
            arrays[f"{kind}_{i:05d}"] = np.asarray(v.numpy())
    for i, v in enumerate(model.optimizer.variables):
        arrays[f"optimizer_{i:05d}"] = np.asarray(v.numpy())
    with runs.atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_state(model, path, sampler=True):
    """Restores what `save_state` saved. With `sampler=False` the sampler's
    variables are left as they are (a supernet initialised from another
    supernet, whose sampler differs).

    Raises:
        runs.CorruptStateError: an unreadable file.
        StudyError: a state of another model.
    """
    try:
        with np.load(path) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except (OSError, ValueError, EOFError, KeyError) as e:
        raise runs.CorruptStateError(
            f"Resume state {path} is unreadable ({runs.describe_error(e)}): "
            "delete it and run the same command again (that training then "
            "starts again from its beginning)."
        ) from None
    sampler_ids = {id(v) for v in model.sampler.variables}
    own = [v for v in model.variables if id(v) not in sampler_ids]
    stored_model = [arrays[k] for k in sorted(arrays) if k.startswith("model_")]
    stored_optimizer = [arrays[k] for k in sorted(arrays) if k.startswith("optimizer_")]
    pairs = list(zip(stored_model, own)) + list(
        zip(stored_optimizer, model.optimizer.variables)
    )
    if (
        len(stored_model) != len(own)
        or len(stored_optimizer) != len(model.optimizer.variables)
        or any(tuple(a.shape) != tuple(v.shape) for a, v in pairs)
    ):
        raise StudyError(
            f"Resume state {path} belongs to another model (variables or "
            "shapes differ): the study folder holds another configuration."
        )
    if sampler:
        stored_sampler = [arrays[k] for k in sorted(arrays) if k.startswith("sampler_")]
        samplers = [v for v in model.variables if id(v) in sampler_ids]
        if len(stored_sampler) != len(samplers):
            raise StudyError(f"Resume state {path} holds another sampler's state.")
        pairs += list(zip(stored_sampler, samplers))
    for value, v in pairs:
        v.assign(value)


def _snapshot(model):
    return [np.array(v.numpy()) for v in runs.state_variables(model)]


def _restore(model, snapshot):
    for value, v in zip(snapshot, runs.state_variables(model)):
        v.assign(value)


# === The study's settings ===


@dataclasses.dataclass
class StudyConfig:
    """The settings of a study (`study.json`).

    Attributes:
        space, space_name: the search space spec and how it was named.
        dataset, data_dir, train_size, val_size, split_seed: the data; the
            validation split (held out from the training set) gives the
            supernet scores, the test set the standalone accuracies.
        batch_size, learning_rate, supernet_learning_rate, bn_batches: the
            training recipe (Adam's rate for standalone runs and for
            supernets), and the BatchNorm recalibration batches before every
            evaluation.
        selection_seed, selection_epochs, pool_size, architectures, bins:
            the supernet that selects the architectures, the pool it scores
            and the stratified draw.
        standalone_seeds, standalone_epochs, average_epochs: the ground
            truth (test accuracy averaged over the last `average_epochs`
            epochs of `standalone_epochs`).
        standalone_schedule: `"constant"` (Adam at `learning_rate`
            throughout) or `"cosine"` (the rate of epoch e is
            `standalone_learning_rate(learning_rate, e, standalone_epochs)`).
        supernet_seeds, supernet_epochs, longer_epochs, few_shot_epochs,
            warmup_epochs, methods: the supernets.
        refit_batches: `refit_head`'s training batches per path (Adam at
            `learning_rate`; the first batches of the data order of seed 0,
            epoch after epoch).
    """

    space: dict
    space_name: str = "ranking"
    dataset: str = "mnist"
    data_dir: str = None
    train_size: int = 10000
    val_size: int = 5000
    split_seed: int = 0
    batch_size: int = 128
    learning_rate: float = 1e-3
    supernet_learning_rate: float = 3e-3
    bn_batches: int = training.DEFAULT_BN_BATCHES
    selection_seed: int = 1000
    selection_epochs: int = 16
    pool_size: int = 256
    architectures: int = 32
    bins: int = 8
    standalone_seeds: list = (0, 1)
    standalone_epochs: int = 8
    average_epochs: int = 1
    standalone_schedule: str = "constant"
    supernet_seeds: list = (0, 1, 2)
    supernet_epochs: int = 16
    longer_epochs: int = 32
    few_shot_epochs: int = 2
    warmup_epochs: int = 4
    refit_batches: int = 200
    methods: list = tuple(METHODS)
    data_fingerprint: dict = None
    versions: dict = None

    # Keys that may differ between runs of one folder, and between merged
    # folders: seeds and methods add work, epochs extend the standalone
    # runs (whose every epoch is kept).
    FREE_KEYS = (
        "data_dir",
        "standalone_seeds",
        "supernet_seeds",
        "methods",
        "standalone_epochs",
        "average_epochs",
        "versions",
    )

    def to_json(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data):
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in fields})
        except TypeError as e:
            raise StudyError(f"Invalid study config: {e}.") from None

    def mismatch(self, other):
        """The first key outside `FREE_KEYS` on which two configs differ, with
        (other's, this one's) values, or None."""
        mine, theirs = self.to_json(), other.to_json()
        free = self.FREE_KEYS
        if self.standalone_schedule != "constant":
            # A decaying rate is a function of the run's length: more epochs
            # would be another training, not the same one extended.
            free = tuple(k for k in free if k != "standalone_epochs")
        for key in mine:
            if key not in free and mine[key] != theirs.get(key):
                return key, theirs.get(key), mine[key]
        return None


STANDALONE_SCHEDULES = ("constant", "cosine")


def standalone_learning_rate(learning_rate, epoch, epochs, schedule="cosine"):
    """Adam's rate during 0-based `epoch` of a standalone run of `epochs`.

    `"cosine"` decays it per epoch from `learning_rate` towards 0
    (`learning_rate * (1 + cos(pi * epoch / epochs)) / 2`): a run that ends at
    a small rate ends near a minimum rather than wherever its last steps
    threw it, so two seeds of one architecture agree more (the ground
    truth's noise ceiling).
    """
    if schedule == "constant":
        return learning_rate
    return learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _check_config(settings):
    """Checks every setting that needs no data (`StudyConfig`'s fields, by
    keyword; the others take its defaults); returns a `StudyConfig`."""
    # The study fills these in; a caller does not choose them.
    filled_in = {"data_fingerprint", "versions", "space_name"}
    accepted = {f.name for f in dataclasses.fields(StudyConfig)} - filled_in
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise TypeError(
            f"run_study() got an unexpected keyword argument {unknown[0]!r}."
        )
    config = StudyConfig(**{"space": "ranking", **settings})
    space = config.space
    config.space = (
        presets.load_space(space)
        if isinstance(space, str)
        else presets.check_spec(space)
    )
    config.space_name = space if isinstance(space, str) else space.get("name", "custom")
    config.methods = validation.distinct_choices(
        "methods", config.methods, tuple(METHODS)
    )
    config.dataset = validation.one_of("dataset", config.dataset, data_lib.DATASETS)
    if config.data_dir is not None:
        config.data_dir = os.path.abspath(config.data_dir)
    config.train_size = validation.positive_int(
        "train_size", config.train_size, allow_none=True
    )
    for name in (
        "val_size",
        "batch_size",
        "bn_batches",
        "selection_epochs",
        "pool_size",
        "architectures",
        "bins",
        "standalone_epochs",
        "average_epochs",
        "supernet_epochs",
        "longer_epochs",
        "few_shot_epochs",
        "refit_batches",
    ):
        setattr(config, name, validation.positive_int(name, getattr(config, name)))
    for name in ("split_seed", "selection_seed", "warmup_epochs"):
        setattr(config, name, validation.non_negative_int(name, getattr(config, name)))
    for name in ("learning_rate", "supernet_learning_rate"):
        setattr(config, name, validation.positive_float(name, getattr(config, name)))
    for name in ("standalone_seeds", "supernet_seeds"):
        setattr(config, name, list(validation.seeds(name, getattr(config, name))))
    config.standalone_schedule = validation.one_of(
        "standalone_schedule", config.standalone_schedule, STANDALONE_SCHEDULES
    )
    validation.compared(
        "architectures", config.architectures, "<=", "pool_size", config.pool_size
    )
    validation.compared(
        "average_epochs",
        config.average_epochs,
        "<=",
        "standalone_epochs",
        config.standalone_epochs,
    )
    validation.compared(
        "longer_epochs",
        config.longer_epochs,
        ">",
        "supernet_epochs",
        config.supernet_epochs,
    )
    validation.compared(
        "warmup_epochs",
        config.warmup_epochs,
        "<",
        "supernet_epochs",
        config.supernet_epochs,
    )
    return config


# === The study folder ===


class StudyFolder:
    """The files of a study folder.

    ```
    study.json, architectures.json         the settings; the selection
    selection/                             the selection supernet's run and pool scores
    standalone/seed<S>/arch<AAA>/          progress.json (history), epoch_<NNN>.npz
    supernets/<unit>/seed<S>/[sub<J>/]     progress.json, epoch_<NNN>.npz
    scores/<method>/seed<S>.json           one supernet's scores of the architectures
    ```
    """

    def __init__(self, path):
        self.path = validation.output_dir("output_dir", path)

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def standalone_dir(self, seed, arch):
        return self.file("standalone", f"seed{seed}", f"arch{arch:03d}")

    def supernet_dir(self, unit, seed, sub=None):
        parts = ["supernets", unit, f"seed{seed}"] + (
            [f"sub{sub}"] if sub is not None else []
        )
        return self.file(*parts)

    def scores_path(self, method, seed):
        os.makedirs(self.file("scores", method), exist_ok=True)
        return self.file("scores", method, f"seed{seed}.json")

    def read_config(self):
        path = self.file(CONFIG_FILE)
        if not os.path.isfile(path):
            return None
        try:
            return StudyConfig.from_json(runs.read_json(path, CONFIG_FILE))
        except runs.RunFolderError as e:
            raise StudyError(str(e)) from None

    def read_architectures(self):
        path = self.file(ARCHITECTURES_FILE)
        if not os.path.isfile(path):
            return None
        try:
            return runs.read_json(path, ARCHITECTURES_FILE)
        except runs.RunFolderError as e:
            raise StudyError(str(e)) from None


# === Training ===


def _say(verbose, text):
    if verbose:
        print(text, flush=True)


def _train_run(
    model,
    run_dir,
    data,
    seed,
    epochs,
    before_epoch=None,
    after_epoch=None,
    keep=(),
    epoch_offset=0,
    info=None,
    verbose=0,
    name="",
):
    """Trains `model` to `epochs` epochs in `run_dir`, resuming from its
    saved state; returns the progress (per-epoch CPU seconds and rows).

    The model must be in its initial state (the state of epoch 0). After each
    epoch `after_epoch(model, epoch)` may return a row of numbers for the
    history; then the state is saved, then progress.json (a kill between
    the two replays that epoch exactly). The state of every epoch in `keep`
    stays on disk; with more epochs done than `epochs`, the state of epoch
    `epochs` (kept) is loaded. The data of epoch `e` is
    `data.train(seed, e + epoch_offset)`. `info` (settings, path...) is
    recorded in progress.json and must agree on resume.
    """
    os.makedirs(run_dir, exist_ok=True)
    progress_path = os.path.join(run_dir, "progress.json")
    info = info or {}
    progress = _read_progress(run_dir, info)
    if progress is None:
        progress = {
            "info": info,
            "epochs": 0,
            "epoch_cpu": [],
            "train_loss": [],
            "history": [],
        }

    def state(epoch):
        return os.path.join(run_dir, f"epoch_{epoch:03d}.npz")

    done = progress["epochs"]
    if done > epochs:
        if not os.path.isfile(state(epochs)):
            raise StudyError(
                f"{run_dir} holds {done} epochs but not the state of epoch "
                f"{epochs}: delete the folder and run the same command again."
            )
        load_state(model, state(epochs))
        return progress
    if done:
        load_state(model, state(done))
    for epoch in range(done, epochs):
        if before_epoch is not None:
            before_epoch(model, epoch)
        start = time.process_time()
        loss, accuracy, _ = training.train_epoch(
            model, data.train(seed, epoch + epoch_offset), epoch, epochs
        )
        if not math.isfinite(loss) or training.first_non_finite(model):
            raise StudyError(
                f"The training loss of {name} became {loss} at epoch {epoch + 1}; "
                "a lower learning rate may help."
            )
        progress["epoch_cpu"].append(time.process_time() - start)
        row = {"epoch": epoch + 1, "train_loss": loss, "train_accuracy": accuracy}
        if after_epoch is not None:
            start = time.process_time()
            row.update(after_epoch(model, epoch))
            row["eval_cpu"] = time.process_time() - start
        progress["history"].append(row)
        progress["train_loss"].append(loss)
        save_state(model, state(epoch + 1))
        progress["epochs"] = epoch + 1
        runs.write_json(progress_path, progress)
        previous = state(epoch)
        if epoch and epoch not in keep and os.path.exists(previous):
            os.remove(previous)
        _say(
            verbose,
            f"{name}: epoch {epoch + 1}/{epochs} loss={loss:.4f} "
            f"({progress['epoch_cpu'][-1]:.1f} s CPU)"
            + "".join(f" {k}={v:.4f}" for k, v in row.items() if k == "test_accuracy"),
        )
    return progress


def _read_progress(run_dir, info):
    """A run's progress.json, or None; raises if it records other `info`."""
    path = os.path.join(run_dir, "progress.json")
    if not os.path.isfile(path):
        return None
    progress = runs.read_json(path)
    if progress.get("info") != info:
        raise StudyError(
            f"{run_dir} holds a run of other settings; use another --output_dir "
            "(or delete that folder to train it again)."
        )
    return progress


def _build(config, sampling, seed):
    """A compiled supernet of the study's space: standalone (`"fixed"`) at
    `learning_rate`, any other sampling at `supernet_learning_rate`."""
    rate = (
        config.learning_rate if sampling == "fixed" else config.supernet_learning_rate
    )
    return training.build_model(
        config.space,
        rate,
        sampling,
        seed,
        input_shape=(28, 28, 1),
        num_classes=data_lib.NUM_CLASSES,
    )


def _pool(space, size, seed):
    """`size` distinct random paths of `space`, drawn with `seed`."""
    if size > space.num_paths:
        raise ValueError(
            f"Invalid value for argument `pool_size`: the space has "
            f"{space.describe()}. Received pool_size={size}."
        )
    return space.sample_distinct(size, seed)


def _split_choice(space, paths, scores):
    """The choice whose candidates' mean scores differ most (the variance of
    the per-candidate means over the pool): where few-shot splitting
    separates the most different sub-spaces."""
    resolved = [space.resolve(p) for p in paths]
    spread = []
    for position, count in enumerate(space.candidate_counts):
        means = [
            np.mean([s for r, s in zip(resolved, scores) if r[position] == k])
            for k in range(count)
            if any(r[position] == k for r in resolved)
        ]
        spread.append(float(np.var(means)))
    return int(np.argmax(spread))


def _selection_settings(config):
    keys = (
        "space",
        "dataset",
        "train_size",
        "val_size",
        "split_seed",
        "batch_size",
        "supernet_learning_rate",
        "bn_batches",
        "selection_seed",
        "selection_epochs",
        "pool_size",
        "architectures",
        "bins",
    )
    data = config.to_json()
    settings = {k: data[k] for k in keys}
    settings["data_sha256"] = (config.data_fingerprint or {}).get("sha256")
    return settings


def _select(folder, config, data, verbose):
    """The selection stage: returns architectures.json's content."""
    existing = folder.read_architectures()
    settings = _selection_settings(config)
    if existing is not None:
        if existing.get("settings") != settings:
            raise StudyError(
                f"{folder.file(ARCHITECTURES_FILE)} was selected with other "
                "settings: use another --output_dir."
            )
        return existing
    model = _build(config, "uniform", config.selection_seed)
    run_dir = folder.file("selection")
    progress = _train_run(
        model,
        run_dir,
        data,
        config.selection_seed,
        config.selection_epochs,
        verbose=verbose,
        name="selection supernet",
    )
    pool = _pool(model.space, config.pool_size, config.selection_seed)
    scores_path = os.path.join(run_dir, "pool_scores.json")
    scored = (
        runs.read_json(scores_path)
        if os.path.isfile(scores_path)
        else {"accuracy": [], "cpu_seconds": 0.0}
    )
    while len(scored["accuracy"]) < len(pool):
        chunk_start = time.process_time()
        chunk = pool[len(scored["accuracy"]) : len(scored["accuracy"]) + _POOL_CHUNK]
        result = score_paths(model, chunk, data.val, data.bn())
        scored["accuracy"] += [result[p]["accuracy"] for p in chunk]
        scored["cpu_seconds"] += time.process_time() - chunk_start
        runs.write_json(scores_path, scored)
        _say(
            verbose,
            f"selection: scored {len(scored['accuracy'])}/{len(pool)} pool architectures",
        )
    chosen = stratified_sample(
        scored["accuracy"],
        config.architectures,
        config.bins,
        np.random.default_rng(config.selection_seed),
    )
    paths = [pool[i] for i in chosen]
    selection = {
        "settings": settings,
        "paths": paths,
        "labels": [model.space.label(p) for p in paths],
        "selection_scores": [scored["accuracy"][i] for i in chosen],
        "pool": pool,
        "pool_scores": scored["accuracy"],
        "split_choice": _split_choice(model.space, pool, scored["accuracy"]),
        "cpu_seconds": float(sum(progress["epoch_cpu"]) + scored["cpu_seconds"]),
    }
    runs.write_json(folder.file(ARCHITECTURES_FILE), selection)
    return selection


def _base_settings(config):
    data = config.to_json()
    settings = {
        k: data[k]
        for k in (
            "space",
            "dataset",
            "train_size",
            "val_size",
            "split_seed",
            "batch_size",
            "learning_rate",
            "bn_batches",
        )
    }
    settings["data_sha256"] = (config.data_fingerprint or {}).get("sha256")
    return settings


def _standalone(folder, config, data, selection, units, verbose, every_epoch=True):
    """Trains the standalone runs `units` (`(seed, arch)` pairs), evaluated
    after every epoch, or (`every_epoch=False`) after the last
    `average_epochs` only (evaluation does not change training: the
    statistics it recalibrates are not used by training-mode passes)."""
    settings = _base_settings(config)
    model, model_seed = None, None
    for seed, arch in sorted(units):
        path = selection["paths"][arch]
        run_dir = folder.standalone_dir(seed, arch)
        info = {"settings": settings, "seed": seed, "arch": arch, "path": path}
        if config.standalone_schedule != "constant":
            # Recorded only when it is not the rate of earlier folders, so
            # that their runs still resume.
            info["schedule"] = [config.standalone_schedule, config.standalone_epochs]
        progress = _read_progress(run_dir, info)
        if progress is not None and progress["epochs"] >= config.standalone_epochs:
            continue
        if model_seed != seed:
            model = _build(config, "fixed", seed)
            initial, model_seed = _snapshot(model), seed
        else:
            _restore(model, initial)
        model.set_path(path)

        def evaluate(model, epoch, path=path):
            if (
                not every_epoch
                and epoch < config.standalone_epochs - config.average_epochs
            ):
                return {}
            row = training.evaluate_paths(
                model, [path], {"test": data.test}, bn_data=data.bn()
            )[path]
            return {
                "test_accuracy": row["test_accuracy"],
                "test_loss": row["test_loss"],
            }

        def set_rate(model, epoch):
            model.optimizer.learning_rate.assign(
                standalone_learning_rate(
                    config.learning_rate,
                    epoch,
                    config.standalone_epochs,
                    config.standalone_schedule,
                )
            )

        _train_run(
            model,
            run_dir,
            data,
            seed,
            config.standalone_epochs,
            before_epoch=set_rate,
            after_epoch=evaluate,
            info=info,
            verbose=verbose,
            name=f"standalone seed={seed} arch={arch} ({selection['labels'][arch]})",
        )


def _supernet_settings(config, unit, selection):
    settings = dict(
        _base_settings(config),
        supernet_epochs=config.supernet_epochs,
        supernet_learning_rate=config.supernet_learning_rate,
    )
    if unit == "uniform":
        settings.update(
            longer_epochs=config.longer_epochs,
            few_shot_epochs=config.few_shot_epochs,
            split_choice=selection["split_choice"],
        )
    if unit == "warmup":
        settings["warmup_epochs"] = config.warmup_epochs
    settings["paths"] = selection["paths"]
    return settings


def _score_record(method, seed, settings, paths, scores, losses, phases, cpu):
    return {
        "method": method,
        "seed": seed,
        "settings": settings,
        "paths": list(paths),
        "scores": [float(s) for s in scores],
        "losses": None if losses is None else [float(v) for v in losses],
        "phases": phases,
        "score_cpu_seconds": cpu,
    }


def _existing_scores(folder, method, seed, settings):
    path = folder.scores_path(method, seed)
    if not os.path.isfile(path):
        return None
    record = runs.read_json(path)
    if record.get("settings") != settings:
        raise StudyError(
            f"{path} holds scores of other settings: use another --output_dir "
            "(or delete it to score again)."
        )
    return record


def _scored(model, paths, data, recalibrate=True, refit=None):
    """Scores, losses and CPU seconds; with `refit` (a `StudyConfig`), each
    path's head re-fitted first."""
    start = time.process_time()
    refit_data = None
    if refit is not None:
        # The same batches for every path, and for every seed.
        refit_data = list(data.refit_batches(refit.refit_batches))
    result = score_paths(
        model,
        paths,
        data.val,
        data.bn() if recalibrate else None,
        refit_data=refit_data,
        refit=None
        if refit is None
        else {"batches": refit.refit_batches, "learning_rate": refit.learning_rate},
    )
    return (
        [result[p]["accuracy"] for p in paths],
        [result[p]["loss"] for p in paths],
        time.process_time() - start,
    )


def _phase(name, progress, epochs):
    return {"name": name, "epochs": epochs, "epoch_cpu": progress["epoch_cpu"][:epochs]}


def _set_candidate_probabilities(model, allowed):
    """Sets an adaptive sampler's probabilities: per choice, uniform over
    the candidates `allowed[c]` (None: all)."""
    for position, (variable, count) in enumerate(
        zip(model.sampler.probabilities, model.space.candidate_counts)
    ):
        chosen = allowed[position] if allowed[position] is not None else range(count)
        values = np.zeros(count, "float32")
        values[list(chosen)] = 1.0 / len(chosen)
        variable.assign(values)


def _uniform_unit(folder, config, data, selection, seed, methods, verbose):
    """Uniform supernet of one seed and what is made of it: `uniform`,
    `no_recalibration`, `angle`, `refit_head` (at `supernet_epochs`), `longer` (the same
    run continued to `longer_epochs`), `few_shot` (from the state at
    `supernet_epochs`)."""
    settings = _supernet_settings(config, "uniform", selection)
    # The re-fit's scores also depend on its batches (kept apart, so that
    # the other methods' scores stay valid whatever `refit_batches` is).
    refit_settings = dict(settings, refit_batches=config.refit_batches)
    need = [
        m
        for m in (
            "no_recalibration",
            "angle",
            "uniform",
            "refit_head",
            "longer",
            "few_shot",
        )
        if m in methods
        and _existing_scores(
            folder, m, seed, refit_settings if m == "refit_head" else settings
        )
        is None
    ]
    if not need:
        return
    paths, epochs = selection["paths"], config.supernet_epochs
    model = _build(config, "uniform", seed)
    initial = [np.array(v.numpy()) for v in model.trainable_variables]
    run_dir = folder.supernet_dir("uniform", seed)
    name = f"uniform seed={seed}"
    info = {"settings": settings, "seed": seed}
    if set(need) & {"no_recalibration", "angle", "uniform", "refit_head", "few_shot"}:
        progress = _train_run(
            model,
            run_dir,
            data,
            seed,
            epochs,
            keep=(epochs,),
            info=info,
            verbose=verbose,
            name=name,
        )
        phases = [_phase("uniform", progress, epochs)]
        if "no_recalibration" in need:
            scores, losses, cpu = _scored(model, paths, data, recalibrate=False)
            runs.write_json(
                folder.scores_path("no_recalibration", seed),
                _score_record(
                    "no_recalibration",
                    seed,
                    settings,
                    paths,
                    scores,
                    losses,
                    phases,
                    cpu,
                ),
            )
        if "angle" in need:
            start = time.process_time()
            angles = angle_scores(model, initial, paths)
            runs.write_json(
                folder.scores_path("angle", seed),
                _score_record(
                    "angle",
                    seed,
                    settings,
                    paths,
                    [angles[p] for p in paths],
                    None,
                    phases,
                    time.process_time() - start,
                ),
            )
        if "uniform" in need:
            scores, losses, cpu = _scored(model, paths, data)
            runs.write_json(
                folder.scores_path("uniform", seed),
                _score_record(
                    "uniform", seed, settings, paths, scores, losses, phases, cpu
                ),
            )
        if "refit_head" in need:
            scores, losses, cpu = _scored(model, paths, data, refit=config)
            runs.write_json(
                folder.scores_path("refit_head", seed),
                _score_record(
                    "refit_head",
                    seed,
                    refit_settings,
                    paths,
                    scores,
                    losses,
                    phases,
                    cpu,
                ),
            )
        _say(
            verbose,
            f"{name}: scored {', '.join(m for m in need if m != 'longer' and m != 'few_shot')}",
        )
    if "longer" in need:
        progress = _train_run(
            model,
            run_dir,
            data,
            seed,
            config.longer_epochs,
            keep=(epochs,),
            info=info,
            verbose=verbose,
            name=name,
        )
        scores, losses, cpu = _scored(model, paths, data)
        runs.write_json(
            folder.scores_path("longer", seed),
            _score_record(
                "longer",
                seed,
                settings,
                paths,
                scores,
                losses,
                [_phase("uniform", progress, config.longer_epochs)],
                cpu,
            ),
        )
    if "few_shot" in need:
        progress = _read_progress(run_dir, info)
        _few_shot(
            folder,
            config,
            data,
            selection,
            seed,
            settings,
            os.path.join(run_dir, f"epoch_{epochs:03d}.npz"),
            [_phase("uniform", progress, epochs)],
            verbose,
        )


def few_shot_owner(space, path, split_choice):
    """The sub-supernet that scores `path`: its candidate of the split
    choice."""
    return space.resolve(path)[split_choice]


def _few_shot(
    folder,
    config,
    data,
    selection,
    seed,
    settings,
    parent_state,
    parent_phases,
    verbose,
):
    """Few-shot NAS (Zhao et al. 2021): one sub-supernet per candidate of
    the split choice, each initialised from the uniform supernet's state
    (weights and optimizer) and trained on the paths through its candidate
    only; a path is scored by its own sub-supernet."""
    split = selection["split_choice"]
    model = _build(config, sampling_lib.AdaptiveSampler(), seed)
    space, paths = model.space, selection["paths"]
    count = space.candidate_counts[split]
    scores, losses = [None] * len(paths), [None] * len(paths)
    phases, cpu = list(parent_phases), 0.0
    for sub in range(count):
        sub_dir = folder.supernet_dir("few_shot", seed, sub)
        info = {"settings": settings, "seed": seed, "sub": sub}
        result_path = os.path.join(sub_dir, "scores.json")
        mine = [
            i for i, p in enumerate(paths) if few_shot_owner(space, p, split) == sub
        ]
        if os.path.isfile(result_path):
            result = runs.read_json(result_path)
            if result.get("info") != info:
                raise StudyError(f"{result_path} holds scores of other settings.")
        else:
            init_sub_supernet(model, parent_state, split, sub, seed)
            progress = _train_run(
                model,
                sub_dir,
                data,
                seed,
                config.few_shot_epochs,
                epoch_offset=config.supernet_epochs,
                info=info,
                verbose=verbose,
                name=f"few_shot seed={seed} sub={sub}",
            )
            sub_scores, sub_losses, sub_cpu = _scored(
                model, [paths[i] for i in mine], data
            )
            result = {
                "info": info,
                "indices": mine,
                "scores": sub_scores,
                "losses": sub_losses,
                "score_cpu_seconds": sub_cpu,
                "phase": _phase(f"sub{sub}", progress, config.few_shot_epochs),
            }
            runs.write_json(result_path, result)
        for i, s, loss in zip(result["indices"], result["scores"], result["losses"]):
            scores[i], losses[i] = s, loss
        phases.append(result["phase"])
        cpu += result["score_cpu_seconds"]
    runs.write_json(
        folder.scores_path("few_shot", seed),
        _score_record("few_shot", seed, settings, paths, scores, losses, phases, cpu),
    )


def init_sub_supernet(model, parent_state, split_choice, candidate, seed):
    """Makes `model` (a supernet with an `AdaptiveSampler`) sub-supernet
    `candidate` of few-shot splitting: the parent's weights and optimizer
    state from `parent_state`, paths drawn uniformly among those whose
    choice `split_choice` takes `candidate`, and a draw seed of its own."""
    load_state(model, parent_state, sampler=False)
    allowed = [None] * model.space.num_choices
    allowed[split_choice] = [candidate]
    _set_candidate_probabilities(model, allowed)
    model.sampler.seed_generator.state.assign(
        np.array([sampling_lib.derived_seed(seed, 7919, candidate), 0], "int64")
    )


def _warmup_allowed(space, warm):
    """Per choice, the candidates drawn: every one but `skip` while `warm`."""
    return [
        [k for k, label in enumerate(labels) if label != "skip"]
        if warm and "skip" in labels
        else None
        for labels in space.candidate_labels
    ]


def _single_unit(folder, config, data, selection, unit, seed, verbose):
    """`fair` or `warmup`: one supernet, scored with recalibration."""
    settings = _supernet_settings(config, unit, selection)
    if _existing_scores(folder, unit, seed, settings) is not None:
        return
    paths, epochs = selection["paths"], config.supernet_epochs
    before = None
    if unit == "fair":
        model = _build(config, "fair", seed)
    else:
        model = _build(config, sampling_lib.AdaptiveSampler(), seed)

        def before(model, epoch):
            _set_candidate_probabilities(
                model, _warmup_allowed(model.space, epoch < config.warmup_epochs)
            )

    progress = _train_run(
        model,
        folder.supernet_dir(unit, seed),
        data,
        seed,
        epochs,
        before_epoch=before,
        info={"settings": settings, "seed": seed},
        verbose=verbose,
        name=f"{unit} seed={seed}",
    )
    scores, losses, cpu = _scored(model, paths, data)
    runs.write_json(
        folder.scores_path(unit, seed),
        _score_record(
            unit,
            seed,
            settings,
            paths,
            scores,
            losses,
            [_phase(unit, progress, epochs)],
            cpu,
        ),
    )


# === The study ===


def standalone_units(config, pilot=None):
    """The standalone grid, `(seed, arch)` in shard order; `pilot` keeps the
    first architectures only."""
    units = [
        (seed, arch)
        for arch in range(config.architectures)
        for seed in config.standalone_seeds
    ]
    return units, [u for u in units if pilot is None or u[1] < pilot]


def supernet_units(config):
    """The supernet grid, `(unit, seed)` in shard order."""
    needed = [u for u in UNITS if any(METHOD_UNIT[m] == u for m in config.methods)]
    return [(unit, seed) for seed in config.supernet_seeds for unit in needed]


def _in_shard(units, selected, shard):
    if shard is None:
        return list(selected)
    index = {u: i for i, u in enumerate(units)}
    return [u for u in selected if index[u] % shard[1] == shard[0]]


def set_threads(threads):
    """Runs TensorFlow's ops on `threads` threads (None: its default).

    On a machine shared with other jobs, one thread per process wastes the
    least CPU time on threads waiting for each other; several processes
    (shards) then use several cores. Must be called before TensorFlow runs
    anything.
    """
    if threads is None:
        return
    threads = validation.positive_int("threads", threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            raise ValueError(
                "Invalid value for argument `threads`: TensorFlow already "
                "runs with another thread count in this process. Received "
                f"threads={threads}."
            ) from None


def run_study(
    output_dir,
    stage="all",
    architectures_file=None,
    pilot=None,
    shard=None,
    threads=None,
    standalone_eval="every",
    verbose=1,
    **settings,
):
    """Runs (or resumes) the ranking study in `output_dir`.

    Every argument and the data are checked before anything is written.
    Calling again with the same arguments resumes: finished parts are
    skipped, interrupted trainings continue from their last epoch, and the
    numbers are those of an uninterrupted study. One process writes a
    folder at a time.

    Args:
        output_dir: the study folder.
        stage: `"all"` (selection, standalone runs, supernets, then the
            report when not sharded), `"select"`, `"standalone"` or
            `"supernets"` (each runs the selection first if it is missing).
        architectures_file: an architectures.json of another folder of the
            same settings, so that shards share one selection.
        pilot: with `stage="standalone"`, train the first `pilot`
            architectures only (a stratified prefix).
        shard: None or `(i, n)`: the i-th of n slices of the work.
        threads: TensorFlow threads (see `set_threads`); None for its
            default.
        standalone_eval: `"every"` evaluates a standalone run after every
            epoch (the noise ceiling epoch by epoch), `"last"` after the
            last `average_epochs` only (the same accuracies, less CPU).
        verbose: 0 silent, 1 a line per epoch.
        **settings: the study's settings, by keyword: the fields of
            `StudyConfig` (whose defaults the others take), but
            `space_name`, `data_fingerprint` and `versions`, which the
            study fills in. `space` is a name or file of
            `keras_supernet.presets` or a spec (default `"ranking"`);
            `dataset`, `data_dir`, `train_size`, `val_size`, `split_seed`
            the data (see `keras_supernet.data.load_splits`); the others
            the recipe, the selection, the ground truth and the supernets
            (see `StudyConfig` and the module docstring).

    Returns:
        The selection (architectures.json's content).

    Raises:
        ValueError (StudyError): a bad argument, or a folder holding a study
            of other settings.
        keras_supernet.data.DataError: missing or malformed data.
        keras_supernet.runs.OutputDirBusyError: another process writes the
            folder.
    """
    validation.one_of("stage", stage, STAGES[:-1])
    validation.one_of("standalone_eval", standalone_eval, ("every", "last"))
    # Before anything runs TensorFlow (building a space's candidates does).
    set_threads(threads)
    shard = validation.shard(shard)
    pilot = validation.positive_int("pilot", pilot, allow_none=True)
    if pilot is not None and stage != "standalone":
        raise ValueError(
            "Invalid value for argument `pilot`: a pilot trains standalone "
            f"runs only; use it with stage='standalone'. Received stage={stage!r}."
        )
    config = _check_config(settings)
    folder = StudyFolder(output_dir)
    given = None
    if architectures_file is not None:
        try:
            given = runs.read_json(architectures_file, ARCHITECTURES_FILE)
        except runs.RunFolderError as e:
            raise StudyError(
                f"Invalid value for argument `architectures_file`. {e}"
            ) from None
    splits = data_lib.load_splits(
        config.dataset,
        config.data_dir,
        config.val_size,
        config.train_size,
        config.split_seed,
    )
    config.data_fingerprint = data_lib.fingerprint(splits)
    config.versions = {
        "keras_supernet": keras_supernet.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
    }
    # The space must build (and take the fair sampler if asked) before
    # anything is written.
    if "fair" in config.methods:
        presets.build_supernet(config.space, seed=0, sampling="fair")
    else:
        presets.build_supernet(config.space, seed=0)
    if given is not None and given.get("settings") != _selection_settings(config):
        raise StudyError(
            f"Invalid value for argument `architectures_file`: {architectures_file} "
            "was selected with other settings than this study's."
        )
    _check_folder(folder, config)
    os.makedirs(folder.path, exist_ok=True)
    # This call's seeds and methods; the folder's config records every call's.
    current = copy.copy(config)
    with runs.folder_lock(folder.path):
        _check_folder(folder, config)
        old = folder.read_config()
        if old is not None:
            # Seeds and methods of earlier calls stay recorded.
            config.standalone_seeds = sorted(
                set(old.standalone_seeds) | set(config.standalone_seeds)
            )
            config.supernet_seeds = sorted(
                set(old.supernet_seeds) | set(config.supernet_seeds)
            )
            config.methods = [
                m for m in METHODS if m in set(old.methods) | set(config.methods)
            ]
        runs.write_json(folder.file(CONFIG_FILE), config.to_json())
        data = training.Data(splits, config.batch_size, bn_batches=config.bn_batches)
        if given is not None and folder.read_architectures() is None:
            runs.write_json(folder.file(ARCHITECTURES_FILE), given)
        selection = _select(folder, config, data, verbose)
        if stage in ("all", "standalone"):
            grid, selected = standalone_units(current, pilot)
            _standalone(
                folder,
                config,
                data,
                selection,
                _in_shard(grid, selected, shard),
                verbose,
                every_epoch=standalone_eval == "every",
            )
        if stage in ("all", "supernets"):
            grid = supernet_units(current)
            for unit, seed in _in_shard(grid, grid, shard):
                if unit == "uniform":
                    _uniform_unit(
                        folder, config, data, selection, seed, current.methods, verbose
                    )
                else:
                    _single_unit(folder, config, data, selection, unit, seed, verbose)
    if stage == "all" and shard is None:
        write_report([folder.path], folder.path)
    return selection


def _check_folder(folder, config):
    old = folder.read_config()
    if old is None:
        return
    difference = config.mismatch(old)
    if difference is not None:
        key, old_value, new_value = difference
        if key == "space":
            old_value, new_value = "another space", "this one"
        raise StudyError(
            f"Output folder {folder.path} holds a study with {key}={old_value!r}, "
            f"this one has {key}={new_value!r}: use another --output_dir."
        )


# === Report ===


def _scan(pattern_parts, root):
    import glob

    return sorted(glob.glob(os.path.join(root, *pattern_parts)))


def load_study(run_dirs):
    """Reads and merges study folders (shards of one study).

    Returns:
        A dict: `config` (the first folder's), `selection`, `standalone`
        (`{(seed, arch): progress}`), `scores` (`{(method, seed): record}`),
        `progress` (every training's progress, for the CPU total),
        `score_cpu` and `run_dirs`.

    Raises:
        StudyError: no study in a folder, folders of different settings or
            selections, or the same run or score in two folders.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    run_dirs = list(dict.fromkeys(os.fspath(d) for d in run_dirs))
    if not run_dirs:
        raise StudyError(
            "Invalid value for argument `run_dirs`. Expected at least one folder. Received []."
        )
    merged = {
        "config": None,
        "selection": None,
        "standalone": {},
        "scores": {},
        "progress": [],
        "score_cpu": 0.0,
        "run_dirs": run_dirs,
    }
    seen = {}
    for run_dir in run_dirs:
        folder = StudyFolder(run_dir)
        config = folder.read_config()
        if config is None:
            raise StudyError(
                f"No {CONFIG_FILE} in {run_dir}: not a study folder (bin/rank writes one)."
            )
        if merged["config"] is None:
            merged["config"] = config
        else:
            difference = merged["config"].mismatch(config)
            if difference is not None:
                raise StudyError(
                    f"{run_dir} holds a study with {difference[0]}={difference[1]!r}, "
                    f"{run_dirs[0]} one with {difference[0]}={difference[2]!r}: only "
                    "shards of one study merge."
                )
        selection = folder.read_architectures()
        if selection is not None:
            if merged["selection"] is None:
                merged["selection"] = selection
                merged["selection_dir"] = run_dir
            elif (selection["paths"], selection["settings"]) != (
                merged["selection"]["paths"],
                merged["selection"]["settings"],
            ):
                raise StudyError(
                    f"{run_dir} and {run_dirs[0]} selected other architectures: "
                    "shards must share one selection (--architectures_file)."
                )
        for path in _scan(["standalone", "seed*", "arch*", "progress.json"], run_dir):
            progress = runs.read_json(path)
            key = ("standalone", progress["info"]["seed"], progress["info"]["arch"])
            _claim(seen, key, run_dir, f"Standalone run seed={key[1]} arch={key[2]}")
            merged["standalone"][key[1:]] = progress
            merged["progress"].append(progress)
        for path in _scan(
            ["supernets", "*", "seed*", "progress.json"], run_dir
        ) + _scan(["supernets", "*", "seed*", "sub*", "progress.json"], run_dir):
            key = ("supernet", os.path.relpath(path, run_dir))
            _claim(seen, key, run_dir, f"Supernet run {key[1]}")
            merged["progress"].append(runs.read_json(path))
        for path in _scan(["scores", "*", "seed*.json"], run_dir):
            record = runs.read_json(path)
            key = ("scores", record["method"], record["seed"])
            _claim(
                seen,
                key,
                run_dir,
                f"Scores of {record['method']} seed={record['seed']}",
            )
            merged["scores"][key[1:]] = record
            if record["method"] != "few_shot":
                merged["score_cpu"] += record["score_cpu_seconds"]
        for path in _scan(
            ["supernets", "few_shot", "seed*", "sub*", "scores.json"], run_dir
        ):
            merged["score_cpu"] += runs.read_json(path)["score_cpu_seconds"]
    if merged["selection"] is None:
        raise StudyError(
            f"No {ARCHITECTURES_FILE} in {', '.join(run_dirs)}: run the selection first."
        )
    # The selection's training and pool scoring, recorded with it (also in
    # folders that were given the selection by --architectures_file).
    merged["score_cpu"] += float(merged["selection"].get("cpu_seconds", 0.0))
    return merged


def _claim(seen, key, run_dir, what):
    if key in seen:
        raise StudyError(
            f"{what} is in both {seen[key]} and {run_dir}: merge shards, not copies."
        )
    seen[key] = run_dir


def standalone_accuracies(merged, epochs=None, average=None):
    """`{seed: array over architectures}` of standalone test accuracies at
    `epochs` (default: the study's), averaged over the last `average`
    epochs; NaN where a run has not reached `epochs`."""
    config = merged["config"]
    epochs = epochs or config.standalone_epochs
    average = average or config.average_epochs
    count = len(merged["selection"]["paths"])
    result = {}
    for (seed, arch), progress in merged["standalone"].items():
        row = result.setdefault(seed, np.full(count, np.nan))
        history = progress["history"]
        if len(history) >= epochs:
            row[arch] = float(
                np.mean(
                    [
                        h.get("test_accuracy", np.nan)
                        for h in history[epochs - average : epochs]
                    ]
                )
            )
    return result


def _complete(accuracies):
    """Architectures with an accuracy for every seed."""
    if not accuracies:
        return np.array([], dtype=int)
    stacked = np.stack(list(accuracies.values()))
    return np.flatnonzero(np.all(np.isfinite(stacked), axis=0))


def seed_to_seed_tau(per_seed):
    """The noise ceiling of single runs: Kendall's tau between two seeds'
    standalone accuracies (`per_seed`: one row per seed, one column per
    architecture), averaged over every pair of seeds; None below 2 seeds."""
    per_seed = np.asarray(per_seed, dtype=np.float64)
    taus = [
        stats.kendall_tau(per_seed[a], per_seed[b])
        for a, b in itertools.combinations(range(len(per_seed)), 2)
    ]
    taus = [t for t in taus if t is not None]
    return float(np.mean(taus)) if taus else None


def _seed_tau(accuracies, archs):
    return seed_to_seed_tau([accuracies[s][archs] for s in sorted(accuracies)])


def _seed_variance(per_seed):
    """The mean variance between seeds of one architecture (`per_seed`: one
    row per seed, one column per architecture)."""
    return float(np.mean(np.asarray(per_seed).var(axis=0, ddof=1)))


def ground_truth_reliability(per_seed):
    """How much of the standalone accuracies' spread is the architectures'.

    `per_seed`: accuracies, one row per seed, one column per architecture.
    Returns `r = a / (a + e)`, where `e` is the mean variance between seeds
    of one architecture and `a` the variance of the architectures' seed
    means less `e / seeds` (what the seeds' noise adds to it), clipped to
    [0, 1]; None with fewer than 2 seeds or 2 architectures. For normal
    noise, two seeds' Kendall tau is about `(2 / pi) * arcsin(r)` (Greiner's
    relation), so `r` says how far a ground truth is from a given noise
    ceiling, and whether more seeds or more spread is what it lacks.
    """
    per_seed = np.asarray(per_seed, dtype=np.float64)
    seeds, archs = per_seed.shape
    if seeds < 2 or archs < 2:
        return None
    noise = _seed_variance(per_seed)
    spread = float(per_seed.mean(axis=0).var(ddof=1)) - noise / seeds
    if spread + noise <= 0:
        return None
    return float(min(1.0, max(0.0, spread / (spread + noise))))


def predicted_seed_tau(reliability):
    """Greiner's relation: Kendall's tau of two normal variables whose
    correlation is `reliability`."""
    return 2.0 / math.pi * math.asin(reliability)


def _mean_reliability(reliability, seeds):
    # Spearman-Brown: the reliability of the mean of `seeds` runs.
    return seeds * reliability / (1 + (seeds - 1) * reliability)


def predicted_truth_tau(reliability, seeds):
    """The Kendall tau to expect between the architectures' true order and
    the mean of `seeds` standalone runs: what a ranking free of noise (a
    perfect supernet) can reach against this ground truth.

    Averaging `k` seeds makes the mean's reliability `k r / (1 + (k - 1) r)`
    (Spearman-Brown), and the truth correlates with the mean at its square
    root; Greiner's relation turns that correlation into tau. The seed-to-seed
    tau bounds a comparison of two single runs; this bounds the one the
    study makes, a supernet's scores against the seeds' mean.
    """
    seeds = validation.positive_int("seeds", seeds)
    return predicted_seed_tau(math.sqrt(_mean_reliability(reliability, seeds)))


def split_half_tau(per_seed):
    """The agreement of two ground truths of this study, each the mean of
    half the seeds: Kendall's tau between the means of two disjoint halves
    of the seeds (`per_seed`: one row per seed, one column per
    architecture), averaged over every split. With k seeds, the halves have
    k // 2 and k - k // 2 of them. None below 4 seeds.

    Measured, this checks the reliability model that `predicted_truth_tau`
    rests on: for normal noise the two halves' means correlate at
    sqrt(r1 r2), r1 and r2 their reliabilities by Spearman-Brown
    (`predicted_split_half_tau`).
    """
    per_seed = np.asarray(per_seed, dtype=np.float64)
    k = len(per_seed)
    if k < 4:
        return None
    half = k // 2
    if k % 2:
        # Halves of different sizes: each split is one choice of the smaller.
        firsts = itertools.combinations(range(k), half)
    else:
        # The first half holds seed 0, so that no split is counted twice.
        firsts = ((0,) + r for r in itertools.combinations(range(1, k), half - 1))
    taus = []
    for first in firsts:
        second = [i for i in range(k) if i not in first]
        tau = stats.kendall_tau(
            per_seed[list(first)].mean(axis=0), per_seed[second].mean(axis=0)
        )
        if tau is not None:
            taus.append(tau)
    return float(np.mean(taus)) if taus else None


def predicted_split_half_tau(reliability, seeds):
    """The tau `split_half_tau` expects for normal noise with `seeds` seeds
    of reliability `reliability` (Spearman-Brown, then Greiner)."""
    first = _mean_reliability(reliability, seeds // 2)
    second = _mean_reliability(reliability, seeds - seeds // 2)
    return predicted_seed_tau(math.sqrt(first * second))


def ground_truth_noise(per_seed):
    """How noisy a ground truth is (`per_seed`: standalone accuracies, one
    row per seed, one column per architecture; the ground truth is their
    mean over seeds).

    Returns:
        A dict: `spread_pp` and `sd_pp` of the mean across architectures,
        `seed_sd_pp` (between seeds of one architecture; None for 1 seed),
        `seed_tau` (`seed_to_seed_tau`), `reliability`
        (`ground_truth_reliability`), `split_half_tau`; and where the
        reliability is defined, `truth_tau` (`predicted_truth_tau`) and, with
        a split-half tau, `split_half_predicted`.
    """
    per_seed = np.asarray(per_seed, dtype=np.float64)
    seeds = len(per_seed)
    truth = per_seed.mean(axis=0)
    reliability = ground_truth_reliability(per_seed)
    result = {
        "spread_pp": float(100 * np.ptp(truth)),
        "seed_tau": seed_to_seed_tau(per_seed),
        "seed_sd_pp": 100 * math.sqrt(_seed_variance(per_seed)) if seeds > 1 else None,
        "sd_pp": float(100 * truth.std(ddof=1)),
        "reliability": reliability,
    }
    if reliability is not None:
        result["truth_tau"] = predicted_truth_tau(reliability, seeds)
    result["split_half_tau"] = split_half_tau(per_seed)
    if result["split_half_tau"] is not None and reliability is not None:
        result["split_half_predicted"] = predicted_split_half_tau(reliability, seeds)
    return result


def _mean_tau(scores, truth, index):
    values = [stats.kendall_tau(s[index], truth[index]) for s in scores]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def ranking_metrics(
    scores, truth, baseline=None, resamples=stats.BOOTSTRAP_RESAMPLES, seed=0
):
    """How one method's supernets rank the architectures against a ground truth.

    Args:
        scores: supernet scores, one row per supernet seed, one column per
            architecture.
        truth: the architectures' standalone accuracies (the seeds' mean).
        baseline: another method's scores of the same shape (`uniform`'s), to
            compare with; None: no comparison.
        resamples: bootstrap resamples over architectures.
        seed: the bootstrap's seed: give every method the same one, so that
            they are compared on the same resamples.

    Returns:
        A dict: per supernet seed `kendall_tau`, `spearman`, `top5_overlap`,
        `regret_pp` (the best standalone accuracy minus that of the score's
        first, in percentage points) and `top_half_kendall_tau` (tau within
        the architectures at or above the median truth); each one's
        `<key>_mean` over seeds; `kendall_tau_interval` (95% percentile
        bootstrap of the mean tau); with a baseline, `kendall_tau_delta` and
        its interval on the same resamples.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    truth = np.asarray(truth, dtype=np.float64)
    if scores.shape[1] != len(truth):
        raise StudyError(
            f"Invalid value for argument `scores`. Expected one score per "
            f"architecture of `truth` ({len(truth)}). Received {scores.shape[1]}."
        )
    top_half = truth >= np.median(truth)
    entry = {
        "kendall_tau": [stats.kendall_tau(s, truth) for s in scores],
        "spearman": [stats.spearman_rho(s, truth) for s in scores],
        "top5_overlap": [stats.top_k_overlap(s, truth) for s in scores],
        "regret_pp": [100 * stats.regret(s, truth) for s in scores],
        "top_half_kendall_tau": [
            stats.kendall_tau(s[top_half], truth[top_half]) for s in scores
        ],
    }
    for key in list(entry):
        values = [v for v in entry[key] if v is not None]
        entry[f"{key}_mean"] = float(np.mean(values)) if values else None
    entry["kendall_tau_interval"] = stats.bootstrap_interval(
        lambda index: _mean_tau(scores, truth, index), len(truth), resamples, seed=seed
    )
    if baseline is not None:
        baseline = np.atleast_2d(np.asarray(baseline, dtype=np.float64))

        def delta(index):
            mine, base = (
                _mean_tau(scores, truth, index),
                _mean_tau(baseline, truth, index),
            )
            return None if mine is None or base is None else mine - base

        entry["kendall_tau_delta"] = delta(np.arange(len(truth)))
        entry["kendall_tau_delta_interval"] = stats.bootstrap_interval(
            delta, len(truth), resamples, seed=seed
        )
    return entry


def _median_cost(phases):
    """CPU seconds of training: per group of phases, the median epoch's CPU
    (robust to the one-off graph trace in a process's first epoch) times
    the epochs."""
    groups = {}
    for phase in phases:
        group = "sub" if phase["name"].startswith("sub") else phase["name"]
        cpu, epochs = groups.get(group, ([], 0))
        groups[group] = (cpu + list(phase["epoch_cpu"]), epochs + phase["epochs"])
    return float(sum(np.median(cpu) * epochs for cpu, epochs in groups.values() if cpu))


def _nominal_epochs(phases):
    return int(sum(p["epochs"] for p in phases))


def analyze(merged, resamples=stats.BOOTSTRAP_RESAMPLES):
    """The numbers of the report, as JSON data (see `write_report`)."""
    config, selection = merged["config"], merged["selection"]
    accuracies = standalone_accuracies(merged)
    archs = _complete(accuracies)
    seeds = sorted(accuracies)
    result = {
        "architectures": int(len(archs)),
        "architectures_selected": len(selection["paths"]),
        "standalone_seeds": seeds,
        "standalone_epochs": config.standalone_epochs,
        "average_epochs": config.average_epochs,
        "standalone_spread_pp": None,
        "standalone_seed_tau": None,
        "methods": {},
    }
    if len(archs) < 2 or len(seeds) < 1:
        return result
    per_seed = np.stack([accuracies[s][archs] for s in seeds])
    truth = per_seed.mean(axis=0)
    result.update(
        {f"standalone_{k}": v for k, v in ground_truth_noise(per_seed).items()}
    )
    result.update(
        architecture_indices=[int(a) for a in archs],
        labels=[selection["labels"][a] for a in archs],
        paths=[selection["paths"][a] for a in archs],
        standalone_accuracy=[float(t) for t in truth],
        standalone_accuracy_per_seed={
            str(s): [float(v) for v in accuracies[s][archs]] for s in seeds
        },
    )
    # The noise ceiling epoch by epoch (and over the pilot's prefix).
    common = min(len(p["history"]) for p in merged["standalone"].values())
    by_epoch = []
    for epoch in range(1, common + 1):
        at = standalone_accuracies(merged, epochs=epoch, average=1)
        ok = _complete(at)
        if len(ok) < 2:  # epochs not evaluated (standalone_eval="last")
            continue
        row = {
            "epoch": epoch,
            "architectures": int(len(ok)),
            "seed_tau": _seed_tau(at, ok),
            "spread_pp": float(100 * np.ptp(np.mean([at[s][ok] for s in at], axis=0))),
        }
        if epoch >= 2:
            at2 = standalone_accuracies(merged, epochs=epoch, average=2)
            row["seed_tau_last2"] = _seed_tau(at2, _complete(at2))
        by_epoch.append(row)
    result["noise_ceiling_by_epoch"] = by_epoch
    # Supernet methods.
    uniform_draws = None
    rng_seed = 0
    for method in METHODS:
        records = sorted(
            (r for (m, _), r in merged["scores"].items() if m == method),
            key=lambda r: r["seed"],
        )
        if not records:
            continue
        scores = np.stack(
            [np.asarray(r["scores"], dtype=np.float64)[archs] for r in records]
        )
        entry = {
            "description": METHODS[method],
            "seeds": [r["seed"] for r in records],
            **ranking_metrics(
                scores, truth, uniform_draws, resamples=resamples, seed=rng_seed
            ),
            "cost_cpu_seconds": float(
                np.mean([_median_cost(r["phases"]) for r in records])
            ),
            "epochs": _nominal_epochs(records[0]["phases"]),
            "score_cpu_seconds_per_architecture": float(
                np.mean([r["score_cpu_seconds"] for r in records])
                / len(records[0]["scores"])
            ),
            "scores": [[float(v) for v in s] for s in scores],
        }
        if method == "uniform":
            uniform_draws = scores
        result["methods"][method] = entry
    base = result["methods"].get("uniform")
    for entry in result["methods"].values():
        entry["relative_cost"] = (
            entry["cost_cpu_seconds"] / base["cost_cpu_seconds"] if base else None
        )
        entry["relative_epochs"] = entry["epochs"] / base["epochs"] if base else None
    cpu = sum(
        sum(p["epoch_cpu"]) + sum(h.get("eval_cpu", 0.0) for h in p["history"])
        for p in merged["progress"]
    )
    result["cpu_seconds"] = float(cpu + merged["score_cpu"])
    return result


# === ranking.md, ranking.png ===

_COLOURS = {
    "uniform": "#1f77b4",
    "no_recalibration": "#7f7f7f",
    "fair": "#ff7f0e",
    "longer": "#2ca02c",
    "few_shot": "#d62728",
    "warmup": "#9467bd",
    "angle": "#8c564b",
    "refit_head": "#e377c2",
}


def plot_scatter(analysis, path):
    """ranking.png: per method, each architecture's supernet score (every
    seed) against its standalone accuracy, one colour per method; the last
    panel is the ground truth's own noise (seed against seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(analysis["methods"])
    panels = len(methods) + 1
    columns = min(4, panels)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 3.3 * rows), squeeze=False
    )
    truth = 100 * np.asarray(analysis["standalone_accuracy"])
    for ax, method in zip(axes.flat, methods):
        entry = analysis["methods"][method]
        for seed, scores in zip(entry["seeds"], entry["scores"]):
            values = np.asarray(scores) * (1 if method == "angle" else 100)
            ax.scatter(
                truth,
                values,
                s=12,
                alpha=0.6,
                color=_COLOURS[method],
                label=f"seed {seed}",
            )
        ax.set_title(f"{method}: tau {entry['kendall_tau_mean']:+.2f}", fontsize=10)
        ax.set_ylabel(
            "angle (rad)" if method == "angle" else "supernet val. accuracy (%)",
            fontsize=8,
        )
    ax = axes.flat[len(methods)]
    per_seed = analysis["standalone_accuracy_per_seed"]
    seeds = sorted(per_seed, key=int)
    if len(seeds) >= 2:
        ax.scatter(
            100 * np.asarray(per_seed[seeds[0]]),
            100 * np.asarray(per_seed[seeds[1]]),
            s=12,
            color="black",
            alpha=0.7,
        )
        # The tau of the pair drawn; with more seeds, the ceiling (the mean
        # over every pair) beside it.
        pair_tau = stats.kendall_tau(per_seed[seeds[0]], per_seed[seeds[1]])
        title = f"standalone seed {seeds[1]} vs {seeds[0]}: tau {_fmt(pair_tau)}"
        if len(seeds) > 2:
            pairs = len(seeds) * (len(seeds) - 1) // 2
            title += (
                f"\n(mean of all {pairs} pairs {_fmt(analysis['standalone_seed_tau'])})"
            )
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(f"standalone test accuracy, seed {seeds[1]} (%)", fontsize=8)
    for ax in axes.flat[:panels]:
        ax.set_xlabel("standalone test accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if len(seeds) >= 2:
        axes.flat[len(methods)].set_xlabel(
            f"standalone test accuracy, seed {seeds[0]} (%)", fontsize=8
        )
    for ax in axes.flat[panels:]:
        ax.axis("off")
    n = analysis["architectures"]
    fig.suptitle(
        f"Supernet score against standalone accuracy, {n} architectures\n"
        "(one point per architecture and supernet seed)"
        if methods
        # A pilot: the ground truth alone, one narrow panel.
        else f"Ground truth, {n} architectures",
        fontsize=11,
    )
    fig.tight_layout()
    from keras_supernet import report

    report.save_figure(fig, path)
    plt.close(fig)


def _fmt(value, digits=2, signed=True):
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(interval, digits=2):
    if interval is None:
        return "n/a"
    return f"[{interval[0]:+.{digits}f}, {interval[1]:+.{digits}f}]"


def _space_lines(space_spec, selection):
    lines = []
    stem = space_spec.get("stem", {})
    lines.append(
        f"- Stem: `Conv2D` {stem.get('kernel_size', 3)}x{stem.get('kernel_size', 3)}, "
        f"{stem.get('filters', 16)} filters, stride {stem.get('strides', 1)}, BatchNorm, ReLU."
    )
    for i, stage in enumerate(space_spec.get("stages", [])):
        lines.append(
            f"- Stage {i + 1}: {stage['blocks']} choices of {stage['filters']} filters"
            + (
                f" after a fixed 3x3 stride-{stage.get('strides', 1)} reduction"
                if stage.get("strides", 1) != 1
                else ""
            )
            + ", each among "
            + ", ".join(f"`{c}`" for c in stage["candidates"])
            + "."
        )
    lines.append("- Head: global average pooling, `Dense(10)`.")
    return lines


def _command_lines(config, output="runs/rank"):
    defaults = StudyConfig(space={})
    flags = []
    for key in (
        "train_size",
        "val_size",
        "batch_size",
        "learning_rate",
        "supernet_learning_rate",
        "bn_batches",
        "selection_seed",
        "selection_epochs",
        "pool_size",
        "architectures",
        "bins",
        "standalone_epochs",
        "average_epochs",
        "supernet_epochs",
        "longer_epochs",
        "few_shot_epochs",
        "warmup_epochs",
        "refit_batches",
        "standalone_schedule",
    ):
        if getattr(config, key) != getattr(defaults, key):
            flags.append(f"--{key}={getattr(config, key)}")
    for key in ("standalone_seeds", "supernet_seeds"):
        if list(getattr(config, key)) != list(getattr(defaults, key)):
            flags.append(f"--{key}={','.join(map(str, getattr(config, key)))}")
    if list(config.methods) != list(METHODS):
        flags.append(f"--methods={','.join(config.methods)}")
    if config.space_name != "ranking":
        flags.append(f"--space={config.space_name}")
    return " ".join(flags)


# What the issue asks of a study whose conclusions can be trusted.
TARGET = {
    "architectures": 30,
    "standalone_spread_pp": 2.0,
    "standalone_seeds": 2,
    "noise_ceiling": 0.85,
    "supernet_seeds": 3,
    "methods": 6,
}


def _limits_lines(analysis, config):
    """What this study falls short of (`TARGET`), said plainly."""
    short = []
    n, ceiling = analysis["architectures"], analysis["standalone_seed_tau"]
    if n < TARGET["architectures"]:
        short.append(f"{n} architectures (target: at least {TARGET['architectures']})")
    spread = analysis["standalone_spread_pp"]
    if spread is not None and spread < TARGET["standalone_spread_pp"]:
        short.append(
            f"standalone accuracies {spread:.2f} pp apart (target: at least "
            f"{TARGET['standalone_spread_pp']:g}, architectures that really differ)"
        )
    if len(analysis["standalone_seeds"]) < TARGET["standalone_seeds"]:
        short.append(
            f"{len(analysis['standalone_seeds'])} standalone seed (target: at least 2)"
        )
    seeds = max((len(e["seeds"]) for e in analysis["methods"].values()), default=0)
    if seeds < TARGET["supernet_seeds"]:
        short.append(
            f"{seeds} supernet seed(s) per method (target: at least {TARGET['supernet_seeds']})"
        )
    if len(analysis["methods"]) < TARGET["methods"]:
        short.append(
            f"{len(analysis['methods'])} methods: "
            + ", ".join(f"`{m}`" for m in analysis["methods"])
            + f" (target: {TARGET['methods']}; not run: "
            + ", ".join(f"`{m}`" for m in METHODS if m not in analysis["methods"])
            + ")"
        )
    lines = ["## Limits of this study", ""]
    halves = analysis.get("standalone_split_half_tau")
    seeds = len(analysis["standalone_seeds"])
    if ceiling is not None and ceiling >= TARGET["noise_ceiling"]:
        lines.append(
            f"The standalone runs agree with each other at Kendall tau {_fmt(ceiling)} (target "
            f"{TARGET['noise_ceiling']}): the ground truth is trustworthy enough to rank against."
        )
    elif halves is not None and halves >= TARGET["noise_ceiling"]:
        # Single runs are noisier than the target, but the ground truth is
        # the mean of the seeds: what a supernet is compared with is as
        # reproducible as two such means, made from disjoint seeds, agree.
        lines.append(
            f"Single standalone runs agree with each other at Kendall tau {_fmt(ceiling)}, below "
            f"the {TARGET['noise_ceiling']} this study aims at; but the ground truth is the mean of "
            f"{seeds} seeds, and two ground truths made from disjoint halves of them "
            f"({seeds // 2} and {seeds - seeds // 2} seeds) agree at tau {_fmt(halves)}: the mean "
            "of all of them is trustworthy enough to rank against"
            + (
                f" (a ranking free of noise can expect {_fmt(analysis['standalone_truth_tau'])})"
                if analysis.get("standalone_truth_tau") is not None
                else ""
            )
            + "."
        )
    else:
        lines.append(
            f"**The ground truth is noisy: the standalone runs agree with each other at Kendall tau "
            f"{_fmt(ceiling)}, below the {TARGET['noise_ceiling']} this study aims at.** Two single runs "
            "of one architecture disagree about as much as a supernet and the ground truth do (the ground "
            "truth is the mean of the seeds, a little less noisy than one run, so a method can score "
            "above that tau"
            + (
                f": a ranking free of noise can expect {_fmt(analysis['standalone_truth_tau'])} against it"
                if analysis.get("standalone_truth_tau") is not None
                else ""
            )
            + "); differences between methods inside the bootstrap intervals below "
            "mean nothing. Read the numbers as a rough ordering, not as a verdict."
        )
    lines.append("")
    if short:
        lines.append("Short of the full protocol: " + "; ".join(short) + ".")
        lines.append("")
    lines.append(
        f"Training budget: {config.train_size:,} training images, {config.standalone_epochs} standalone "
        f"epochs, {config.supernet_epochs} supernet epochs (about "
        f"{analysis['cpu_seconds'] / 60:.0f} CPU-minutes in all)."
    )
    lines.append("")
    return lines


def format_report(
    analysis, merged, pilot=None, commands=None, output_dir="docs/results/ranking"
):
    """The text of ranking.md."""
    config, selection = merged["config"], merged["selection"]
    methods = analysis["methods"]
    n = analysis["architectures"]
    lines = ["# Does the supernet rank architectures right?", ""]
    uniform = methods.get("uniform")
    best = max(
        (m for m in methods if m != "uniform"),
        key=lambda m: (
            methods[m]["kendall_tau_mean"]
            if methods[m]["kendall_tau_mean"] is not None
            else -9
        ),
        default=None,
    )
    if uniform is not None:
        lines.append(
            f"On {n} architectures of the `{config.space_name}` space whose standalone test accuracies "
            f"spread over {analysis['standalone_spread_pp']:.1f} percentage points, a uniformly trained "
            f"supernet ranks them with Kendall tau **{_fmt(uniform['kendall_tau_mean'])}** (mean of "
            f"{len(uniform['seeds'])} supernet seeds: "
            + ", ".join(_fmt(t) for t in uniform["kendall_tau"])
            + f"); the standalone runs agree with each other at tau {_fmt(analysis['standalone_seed_tau'])} "
            "(the noise ceiling)."
            + (
                f" The best other method, `{best}`, reaches **{_fmt(methods[best]['kendall_tau_mean'])}** "
                f"at {methods[best]['relative_cost']:.2f}x the training cost."
                if best is not None
                else ""
            )
        )
        lines.append("")
    lines += _limits_lines(analysis, config)
    lines += ["## The space", ""]
    lines.append(
        f"`{config.space_name}` ({presets.describe(config.space) if config.space_name not in presets.SPACES else 'keras_supernet.presets.SPACES'}): "
        f"{len(selection['labels'][0].split('->'))} choices, "
        f"{len(config.space['stages'][0]['candidates']) if 'stages' in config.space else '?'} candidates each "
        "(depth through `skip`; `mbKxK_eE`: an inverted-residual block of kernel K and expansion E), "
        "on MNIST:"
    )
    lines.append("")
    lines += _space_lines(config.space, selection)
    lines.append("")
    lines += ["## Protocol", ""]
    lines += [
        f"- **Data.** {config.train_size:,} training images (the first after a {config.val_size:,}-image "
        f"validation split, seed {config.split_seed}); supernet scores on the validation split, standalone "
        "accuracies on the 10,000 test images. Batch size "
        f"{config.batch_size}, Adam at {config.learning_rate:g}: `keras_supernet.training`'s recipe for "
        "every training, the per-epoch data order a function of (seed, epoch).",
        f"- **BatchNorm.** Before every evaluation, standalone or supernet, the BatchNorm statistics of the "
        f"evaluated path are re-estimated on {config.bn_batches} fixed training batches "
        f"({config.bn_batches * config.batch_size:,} images); only `no_recalibration` scores with the "
        "statistics that training left. The moving averages (momentum 0.99) never decide a number: a "
        f"few hundred steps leave them far from the weights' statistics.",
        f"- **Selection.** A uniform supernet of its own (seed {config.selection_seed}, "
        f"{config.selection_epochs} epochs, used nowhere else) scores a seeded pool of {config.pool_size} random "
        f"architectures; {config.architectures} are drawn from {config.bins} equal-width bins of that score, "
        "equal numbers per bin (a bin short of architectures gives its places to the others), so the whole "
        "range of supernet scores is covered.",
        f"- **Ground truth.** Each architecture trained alone, seeds {', '.join(map(str, analysis['standalone_seeds']))}, "
        f"{config.standalone_epochs} epochs, from the supernet's initial weights for that seed"
        + (
            ", Adam's rate decayed per epoch along a cosine from "
            f"{config.learning_rate:g} towards 0 (epoch e of E at "
            "rate x (1 + cos(pi e / E)) / 2)"
            if config.standalone_schedule == "cosine"
            else ""
        )
        + "; its accuracy is "
        + (
            f"the mean test accuracy of its last {config.average_epochs} epochs, "
            if config.average_epochs > 1
            else "the test accuracy after the last epoch, "
        )
        + "averaged over the seeds. The noise ceiling is Kendall's tau between the seeds.",
        f"- **Supernets.** Seeds {', '.join(map(str, config.supernet_seeds))} per method; "
        f"{config.supernet_epochs} epochs unless the method says otherwise; each scores every architecture by "
        "its validation accuracy with the shared weights.",
        f"- **Metrics** against the ground truth: Kendall's tau-b and Spearman's rho (scipy), the overlap of "
        f"the top {stats.TOP_K} (expected overlap under random tie-breaking), the regret of the supernet's top-1 "
        "(the best standalone accuracy minus that of the architecture the supernet ranks first, in percentage "
        "points), and tau within the better half of the architectures (by standalone accuracy), where search "
        f"decides. Intervals: 95% percentile bootstrap over architectures ({stats.BOOTSTRAP_RESAMPLES} resamples, "
        "the same resamples for every method), of the mean tau over seeds.",
        "",
    ]
    lines += ["## Ground truth", ""]
    lines.append(
        f"{n} architectures (of {analysis['architectures_selected']} selected) with every seed: standalone "
        f"accuracies from {100 * min(analysis['standalone_accuracy']):.2f}% to "
        f"{100 * max(analysis['standalone_accuracy']):.2f}% (spread **{analysis['standalone_spread_pp']:.2f} pp**, "
        f"standard deviation {analysis['standalone_sd_pp']:.2f} pp across architectures, "
        + (
            f"{analysis['standalone_seed_sd_pp']:.2f} pp between seeds of one architecture); "
            if analysis.get("standalone_seed_sd_pp") is not None
            else "); "
        )
        + f"seed-to-seed Kendall tau **{_fmt(analysis['standalone_seed_tau'])}**."
    )
    reliability = analysis.get("standalone_reliability")
    if reliability is not None:
        target = TARGET["noise_ceiling"]
        needed = math.sin(math.pi * target / 2)  # Greiner's relation, inverted
        lines[-1] += (
            f" Of one run's variance across architectures, r = {reliability:.2f} is the architecture's "
            f"(the rest the seed's); for normal noise two seeds agree at about (2/pi) arcsin(r) = "
            f"{_fmt(predicted_seed_tau(reliability))} (Greiner's relation), and a noise ceiling of {target} "
            f"needs r >= {needed:.2f}: seed noise under "
            f"{math.sqrt(1 / needed - 1):.2f} of the architectures' own standard "
            "deviation. Against the mean of its "
            f"{len(analysis['standalone_seeds'])} seeds (the ground truth the supernets are compared "
            "with), a ranking free of noise can expect tau "
            f"{_fmt(analysis['standalone_truth_tau'])} (the mean's reliability by Spearman-Brown)."
        )
    if analysis.get("standalone_split_half_tau") is not None:
        k = len(analysis["standalone_seeds"])
        lines[-1] += (
            f" Two ground truths made the same way from disjoint halves of the seeds ({k // 2} and "
            f"{k - k // 2} seeds) agree at tau **{_fmt(analysis['standalone_split_half_tau'])}** "
            "(mean over every split"
            + (
                f"; predicted {_fmt(analysis['standalone_split_half_predicted'])})."
                if analysis.get("standalone_split_half_predicted") is not None
                else ")."
            )
        )
    lines += [
        "",
        "The noise ceiling as training goes on (test accuracy after that epoch; and averaged "
        "with the epoch before):",
        "",
    ]
    header = "| epoch | seed-to-seed tau | tau, mean of 2 epochs | spread (pp) |"
    if pilot:
        header += f" tau, first {pilot} (pilot) |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for row in analysis["noise_ceiling_by_epoch"]:
        line = (
            f"| {row['epoch']} | {_fmt(row['seed_tau'])} | {_fmt(row.get('seed_tau_last2'))} | "
            f"{row['spread_pp']:.2f} |"
        )
        if pilot:
            line += f" {_fmt(row.get('pilot_seed_tau'))} |"
        lines.append(line)
    lines.append("")
    if methods:
        lines += ["## Methods", ""]
        lines += [
            "| method | Kendall tau, mean [95% CI] | tau per seed | Spearman rho | top-5 overlap per seed | "
            "regret (pp) per seed | tau, better half | Δtau vs uniform [95% CI] | training cost vs uniform "
            "(CPU; epochs) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method, entry in methods.items():
            lines.append(
                f"| `{method}` | **{_fmt(entry['kendall_tau_mean'])}** {_interval(entry['kendall_tau_interval'])} | "
                + ", ".join(_fmt(t) for t in entry["kendall_tau"])
                + " | "
                + f"{_fmt(entry['spearman_mean'])} | "
                + ", ".join(f"{v:g}" for v in entry["top5_overlap"])
                + " | "
                + ", ".join(f"{v:.2f}" for v in entry["regret_pp"])
                + " | "
                + f"{_fmt(entry['top_half_kendall_tau_mean'])} | "
                + (
                    f"{_fmt(entry['kendall_tau_delta'])} {_interval(entry['kendall_tau_delta_interval'])}"
                    if "kendall_tau_delta" in entry
                    else ""
                )
                + " | "
                + f"{entry['relative_cost']:.2f}x; {entry['epochs']} |"
            )
        lines.append("")
        lines += ["What each method is:", ""]
        for method, entry in methods.items():
            description = (
                entry["description"]
                .replace("`longer_epochs`", str(config.longer_epochs))
                .replace("`supernet_epochs`", str(config.supernet_epochs))
                .replace("`warmup_epochs`", str(config.warmup_epochs))
                .replace("`refit_batches`", str(config.refit_batches))
            )
            if method == "few_shot":
                choice = selection["split_choice"]
                description += (
                    f" (split choice `choice_{choice}`, the one whose candidates' mean selection scores differ "
                    f"most; {config.few_shot_epochs} epochs per sub-supernet)"
                )
            lines.append(f"- `{method}`: {description}.")
        lines += [
            "",
            "Training cost: CPU seconds of training (per group of epochs, the median epoch times the epochs, "
            "so that the one-off graph trace does not count), relative to `uniform`; then the epochs trained "
            "(sub-supernets' included). Scoring costs "
            + ", ".join(
                f"`{m}` {e['score_cpu_seconds_per_architecture']:.2f} s"
                for m, e in methods.items()
            )
            + " of CPU per architecture.",
            "",
            f"![Supernet score against standalone accuracy]({REPORT_PNG})",
            "",
        ]
        lines += ["## What helps, what does not", ""]
        for method, entry in methods.items():
            if method == "uniform" or "kendall_tau_delta" not in entry:
                continue
            interval = entry["kendall_tau_delta_interval"]
            if interval is not None and interval[0] > 0:
                verdict = "helps"
            elif interval is not None and interval[1] < 0:
                verdict = "hurts"
            else:
                verdict = "makes no difference the bootstrap can tell"
            lines.append(
                f"- `{method}` {verdict}: Δtau {_fmt(entry['kendall_tau_delta'])} {_interval(interval)}, "
                f"top-5 overlap {entry['top5_overlap_mean']:.1f} vs {uniform['top5_overlap_mean']:.1f}, "
                f"regret {entry['regret_pp_mean']:.2f} vs {uniform['regret_pp_mean']:.2f} pp, "
                f"at {entry['relative_cost']:.2f}x the cost."
            )
        lines.append("")
    lines += [
        "## Commands",
        "",
        "To reproduce the study in one folder (it took about "
        f"{analysis['cpu_seconds'] / 60:.0f} CPU-minutes in all, summed from the study's files):",
        "",
        "```bash",
    ]
    flags = _command_lines(config)
    data_dir = "--data_dir=../shared/data/mnist"
    if pilot:
        lines.append(
            f"bin/rank --stage=standalone --pilot={pilot} {data_dir} {flags} --output_dir=runs/rank".replace(
                "  ", " "
            )
        )
    lines.append(
        f"bin/rank {data_dir} {flags} --output_dir=runs/rank".replace("  ", " ")
    )
    lines.append(
        f"bin/rank --stage=report --run_dir=runs/rank --output_dir={output_dir}"
    )
    lines += [
        "```",
        "",
        "The study resumes where it stopped when run again, and shards with `--shard=i/n` "
        "(separate folders sharing one `--architectures_file`, merged by `--stage=report`), with the same "
        f"numbers. Folders merged here: {', '.join(f'`{d}`' for d in merged['run_dirs'])}.",
        "",
    ]
    if commands:
        lines += [
            f"The commands actually run, with their interruptions: [{commands}]({commands}).",
            "",
        ]
    return "\n".join(lines)


def write_report(run_dirs, output_dir, pilot=None, resamples=stats.BOOTSTRAP_RESAMPLES):
    """Merges study folders and writes ranking.json, ranking.md and
    ranking.png to `output_dir`; returns their paths.

    ranking.json holds at least `{"architectures": N, "standalone_spread_pp":
    S, "standalone_seed_tau": T, "methods": {name: {"kendall_tau": [per
    seed], "spearman": [...], "top5_overlap": [...], "relative_cost": C}}}`.

    Args:
        run_dirs: study folders (shards of one study).
        output_dir: where the files go.
        pilot: also give the noise ceiling over the first `pilot`
            architectures (the pilot's).
    """
    merged = load_study(run_dirs)
    analysis = analyze(merged, resamples)
    if analysis["architectures"] < 2:
        raise StudyError(
            f"{', '.join(merged['run_dirs'])} hold{'s' if len(merged['run_dirs']) == 1 else ''} fewer than two "
            "architectures trained alone with every seed: nothing to rank yet."
        )
    if pilot:
        pilot = validation.positive_int("pilot", pilot)
        for row in analysis["noise_ceiling_by_epoch"]:
            at = standalone_accuracies(merged, epochs=row["epoch"], average=1)
            ok = [a for a in _complete(at) if a < pilot]
            row["pilot_seed_tau"] = _seed_tau(at, np.asarray(ok, dtype=int))
    analysis["config"] = merged["config"].to_json()
    analysis["selection"] = {
        k: merged["selection"][k]
        for k in ("paths", "labels", "selection_scores", "split_choice")
    }
    os.makedirs(output_dir, exist_ok=True)
    paths = [
        os.path.join(output_dir, name) for name in (REPORT_JSON, REPORT_MD, REPORT_PNG)
    ]
    runs.write_json(paths[0], analysis)
    # A record of the commands run, kept beside the report, is linked.
    commands = (
        COMMANDS_FILE
        if os.path.isfile(os.path.join(output_dir, COMMANDS_FILE))
        else None
    )
    runs.write_text(
        paths[1], format_report(analysis, merged, pilot, commands, output_dir)
    )
    plot_scatter(analysis, paths[2])
    return paths
