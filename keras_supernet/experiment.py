"""Joint and standalone training of a supernet's paths, with exact resume.

`run_experiment` reproduces the experiment of the original report, on any
search space: a supernet trained jointly (a path drawn per batch, its paths
evaluated after every epoch) against paths trained alone with the same
recipe, architecture and initial weights, repeated per seed. The grid of
runs is (seed) x (joint, each standalone path); `shard` trains one slice of
it, so that several machines share an experiment.

A validation split held out from the training set picks each path's best
epoch; the test accuracy is reported at that epoch. Normalisation is the only
preprocessing.

The run folder is `keras_supernet.runs.RunFolder`'s (results.json,
checkpoints, resume state, TensorBoard logs); the training recipe is
`keras_supernet.training`'s. Each epoch ends with an atomic save of the
epoch's weights and of the resume state (every model variable, the path
sampler's random state included, and the optimizer's). The training order
of an epoch is a fixed function of `(seed, epoch)`, so a run killed at any
moment and started again with the same arguments ends with the same numbers
as an uninterrupted run; finished runs are skipped.

Example:

```python
results = run_experiment("runs/mnist", mode="all", data_dir="../shared/data/mnist",
                         epochs=15, seeds=(0, 1, 2))
results = run_experiment("runs/big", mode="joint", space="mnist20", epochs=10)
```
"""

import glob
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_supernet import data
from keras_supernet import distribute
from keras_supernet import presets
from keras_supernet import runs
from keras_supernet import training
from keras_supernet import validation
from keras_supernet.sampling import PathDropoutSchedule

MODES = ("joint", "standalone", "all")
# Spaces up to this many paths: every path is evaluated after each joint
# epoch, and standalone mode trains every path unless told otherwise.
ALL_PATHS_LIMIT = 64
# Paths a joint run of a larger space evaluates, drawn with `split_seed`.
DEFAULT_EVAL_PATHS = 16

# Bytes an epoch writes, as a multiple of the bytes of the run's variables
# (model and optimizer): the weights file and the new resume state, in
# formats with some overhead, while the previous state is still on disk.
_SPACE_FACTOR = 2.5
# Plus progress.json, results.json and the TensorBoard events.
_SPACE_SLACK = 1 << 20

# Errors a caller of `run_experiment` sees for a folder it cannot use.
OutputDirBusyError = runs.OutputDirBusyError
CorruptStateError = runs.CorruptStateError
SaveError = runs.SaveError


class NonFiniteLossError(ArithmeticError):
    """A run's loss became NaN or infinite: training stops."""


# === Settings ===


def _space_spec(space, preset):
    """The space spec from `space` (a name, file or spec) or the report's
    preset arguments."""
    if space is None:
        spec = dict(presets.REPORT)
        for key, value in preset.items():
            if value is not None:
                spec[key] = (
                    [list(v) for v in value]
                    if key == "kernel_sizes"
                    else list(value)
                    if key == "filters" and not validation.is_int(value)
                    else value
                )
        return presets.check_spec(spec)
    if preset:
        raise ValueError(
            f"Invalid arguments {sorted(preset)}: they set the report's "
            f"space, and space={space!r} was given. Describe the space in "
            "its file instead."
        )
    if isinstance(space, dict):
        return presets.check_spec(space)
    return presets.load_space(space)


def _select_paths(space, mode, paths, eval_paths, split_seed):
    """`(standalone paths, joint evaluation paths)` as index lists."""
    small = space.num_paths <= ALL_PATHS_LIMIT
    if paths is None and mode == "joint":
        standalone = []
    elif paths is None:
        if not small:
            raise ValueError(
                f"Invalid value for argument `paths`: the space has "
                f"{space.describe()}; name the paths to train alone "
                "(indices or labels joined by '->', several separated by ';')."
            )
        standalone = list(range(space.num_paths))
    else:
        items = [paths] if isinstance(paths, (int, str)) else list(paths)
        standalone = list(dict.fromkeys(space.index(p) for p in items))
        if not standalone:
            raise ValueError(
                "Invalid value for argument `paths`. Expected at least one "
                "path. Received paths=[]."
            )
    if eval_paths is None:
        eval_paths = space.num_paths if small else DEFAULT_EVAL_PATHS
    if not validation.is_int(eval_paths):
        return standalone, sorted(dict.fromkeys(space.index(p) for p in eval_paths))
    count = validation.positive_int("eval_paths", eval_paths)
    if count >= space.num_paths:
        return standalone, list(range(space.num_paths))
    # A seeded sample of distinct paths, the same at every resume.
    evaluated = space.sample_distinct(count, split_seed)
    return standalone, sorted(evaluated)


def _check_architecture(
    spec, input_shape, sampling, path_dropout, branch_learning_rates
):
    """Builds the space's supernet once, so that every architecture error
    (a candidate that does not fit, a path that shrinks the input to
    nothing, a sampler the space cannot take) is raised before anything is
    written; returns `(search space, has BatchNorm, sampler name, path
    dropout, branch learning rates)` as the supernet checked them."""
    supernet = presets.build_supernet(
        spec,
        input_shape=input_shape,
        num_classes=data.NUM_CLASSES,
        seed=0,
        sampling=sampling,
        path_dropout=path_dropout,
        branch_learning_rates=branch_learning_rates,
    )
    return (
        supernet.space,
        supernet.has_batchnorm,
        supernet.sampler.strategy,
        supernet.path_dropout,
        dict(supernet.branch_learning_rates),
    )


def _make_config(
    mode,
    seeds,
    paths,
    space,
    dataset,
    data_dir,
    epochs,
    batch_size,
    learning_rate,
    split_seed,
    sampling,
    path_dropout,
    branch_learning_rates,
    bn_batches,
    eval_paths,
    strategy_name,
    num_replicas,
    shard,
    preset,
    splits,
):
    """Checks every setting; returns `(RunConfig, SearchSpace)`."""
    spec = _space_spec(space, preset)
    (x_tr, _), (x_val, _), (x_te, _) = splits
    input_shape = tuple(x_tr.shape[1:]) + (1,)
    search_space, has_batchnorm, sampling, path_dropout, rates = _check_architecture(
        spec, input_shape, sampling, path_dropout, branch_learning_rates
    )
    standalone, evaluated = _select_paths(
        search_space, mode, paths, eval_paths, split_seed
    )
    if bn_batches is None:
        bn_batches = training.DEFAULT_BN_BATCHES if has_batchnorm else 0
    mean, std = data.normalization_stats(x_tr)
    config = runs.RunConfig(
        space=spec,
        space_name=space
        if isinstance(space, str)
        else ("report" if space is None else spec.get("name", "custom")),
        dataset=dataset,
        data_dir=os.path.abspath(data_dir) if data_dir is not None else None,
        input_shape=input_shape,
        num_classes=data.NUM_CLASSES,
        mode=mode,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=float(learning_rate),
        seeds=list(seeds),
        paths=standalone,
        eval_paths=evaluated,
        path_labels={
            str(p): search_space.label(p)
            for p in sorted(set(standalone) | set(evaluated))
        },
        train_size=int(len(x_tr)),
        val_size=int(len(x_val)),
        test_size=int(len(x_te)),
        split_seed=split_seed,
        normalization={"mean": mean, "std": std},
        data_fingerprint=data.fingerprint(splits),
        sampling=sampling,
        path_dropout=path_dropout,
        branch_learning_rates=rates,
        bn_batches=validation.non_negative_int("bn_batches", bn_batches),
        strategy=strategy_name,
        num_replicas=num_replicas,
        shard=None if shard is None else f"{shard[0]}/{shard[1]}",
        versions=runs.versions(),
    )
    return config, search_space


def _check_existing(folder, config):
    """Raises if `folder` holds a run of another configuration or data."""
    folder.check_not_a_file()
    if not os.path.exists(folder.results_path):
        # results.json is written before any checkpoint: without it, nothing
        # says which configuration the checkpoints belong to.
        if os.path.isdir(os.path.join(folder.path, "checkpoints")):
            raise ValueError(
                f"Output folder {folder.path} holds checkpoints but no "
                f"{runs.RESULTS_FILE}: use another --output_dir."
            )
        return
    try:
        old, _ = folder.read_results()
    except runs.RunFolderError as e:
        raise ValueError(f"Cannot resume from {folder.results_path}: {e}") from None
    difference = config.mismatch(old)
    if difference is not None:
        key, old_value, new_value = difference
        raise ValueError(
            f"Output folder {folder.path} holds a run with {key}={old_value!r}, "
            f"this one has {key}={new_value!r}: use another --output_dir."
        )
    # Folders written before the fingerprint existed resume on any data of
    # the same sizes, and record the fingerprint from then on.
    old_print, new_print = old.data_fingerprint, config.data_fingerprint
    if old_print is not None and old_print != new_print:
        raise ValueError(
            f"Output folder {folder.path} holds runs trained on other data "
            f"(sha256 {str(old_print.get('sha256'))[:12]}... from data_dir "
            f"{old.data_dir}; this data, from data_dir {config.data_dir}, "
            f"gives {new_print['sha256'][:12]}...): resume with the data it "
            "was trained on, or use another --output_dir."
        )
    trained = max(
        (
            len(h)
            for p in folder.scan_progress().values()
            for h in p["histories"].values()
        ),
        default=0,
    )
    if trained > config.epochs:
        raise ValueError(
            f"Invalid value for argument `epochs`. Output folder {folder.path} "
            f"holds runs trained for {trained} epochs. Received "
            f"epochs={config.epochs}."
        )


# === Runs ===


def _best_epoch(history):
    accuracies = [row["val_accuracy"] for row in history]
    return int(np.argmax(accuracies)) + 1  # first epoch among ties


def _run_entry(folder, config, mode, seed, path, history, progress, probe_space):
    best = _best_epoch(history)
    return {
        "mode": mode,
        "seed": seed,
        "path": path,
        "label": config.label(path),
        "indices": list(probe_space.resolve(path)),
        "best_epoch": best,
        "best_val_accuracy": history[best - 1]["val_accuracy"],
        "test_accuracy": history[best - 1]["test_accuracy"],
        "final_test_accuracy": history[-1]["test_accuracy"],
        "epochs_trained": len(history),
        "train_seconds": progress["train_seconds"],
        "eval_seconds": progress["eval_seconds"],
        "best_weights": os.path.relpath(
            folder.weights_path(
                mode, seed, path if mode == "standalone" else None, best
            ),
            folder.path,
        ),
        "history": history,
        "complete": len(history) >= config.epochs,
    }


def _runs_from_progress(folder, config, progress_by_key, space):
    result = []
    order = {"joint": 0, "standalone": 1}
    for (mode, seed, _), progress in sorted(
        progress_by_key.items(),
        key=lambda kv: (
            order[kv[0][0]],
            kv[0][1],
            -1 if kv[0][2] is None else kv[0][2],
        ),
    ):
        for p, history in sorted(
            progress["histories"].items(), key=lambda kv: int(kv[0])
        ):
            if history:
                result.append(
                    _run_entry(
                        folder, config, mode, seed, int(p), history, progress, space
                    )
                )
    return result


class _Run:
    """One training run: the joint supernet or one standalone path, one seed."""

    def __init__(self, folder, mode, seed, path, eval_paths):
        self.mode = mode
        self.seed = seed
        self.path = path  # None for joint
        self.eval_paths = eval_paths
        self.dir = folder.checkpoint_dir(mode, seed, path)
        self.state_dir = folder.state_dir(mode, seed, path)

    @property
    def key(self):
        return (self.mode, self.seed, self.path)

    @property
    def name(self):
        if self.mode == "joint":
            return f"joint seed={self.seed}"
        return f"standalone seed={self.seed} path={self.path}"


def _non_finite_message(run, what, value, epoch, step=None):
    where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
    saved = f"epochs up to {epoch - 1} are saved" if epoch > 1 else "no epoch was saved"
    return (
        f"{what} of {run.name} became {value} at {where}; the run is stopped "
        f"and {saved} (a lower --learning_rate may help)."
    )


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` at the first batch whose loss is NaN or
    infinite, before the epoch is saved (Keras's `TerminateOnNaN` would end
    `fit` quietly and the run would save and report the NaN epoch)."""

    def __init__(self, run):
        super().__init__()
        self._run = run
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                _non_finite_message(
                    self._run,
                    "The training loss",
                    float(loss),
                    self._epoch + 1,
                    batch + 1,
                )
            )


def _saved_note(epoch):
    return (
        f"Epochs up to {epoch - 1} are saved; free some space, then run the "
        "same command again to resume."
        if epoch > 1
        else "Free some space, then run the same command again."
    )


class _Trainer:
    """Trains (or resumes) one run up to `config.epochs`, saving after every
    epoch; `publish()` rewrites results.json."""

    def __init__(
        self,
        folder,
        config,
        run,
        splits,
        strategy,
        strategy_name,
        progress,
        publish,
        verbose,
    ):
        self.folder, self.config, self.run = folder, config, run
        self.strategy, self.strategy_name = strategy, strategy_name
        self.progress, self.publish, self.verbose = progress, publish, verbose
        self.data = training.Data(
            splits,
            config.batch_size,
            (config.normalization["mean"], config.normalization["std"]),
            bn_batches=config.bn_batches,
        )

    def _say(self, text):
        if self.verbose:
            print(f"[{self.run.name}] {text}", flush=True)

    def _resume_point(self, model):
        """The epochs done; restores the model's state when resuming."""
        run, progress = self.run, self.progress.get(self.run.key)
        os.makedirs(run.state_dir, exist_ok=True)
        if progress and not os.path.isfile(
            os.path.join(run.state_dir, progress["state_file"])
        ):
            # Deleted, as the error for a corrupt state file says: without the
            # optimizer's state the run cannot continue, it starts again.
            self._say(
                f"no resume state {progress['state_file']}: training again from epoch 1"
            )
            progress = None
        # A kill can leave the state of the epoch before the last one (its
        # temporary files went when the folder was locked): only the state
        # that progress.json names is kept.
        current = progress["state_file"] if progress else None
        for leftover in glob.glob(os.path.join(run.state_dir, "epoch_*.npz")):
            if os.path.basename(leftover) != current:
                os.remove(leftover)
        if progress:
            runs.restore_state(
                model,
                os.path.join(run.state_dir, progress["state_file"]),
                recovery=f"{run.name} then trains again from epoch 1",
            )
            done = len(next(iter(progress["histories"].values())))
            self._say(f"resuming after epoch {done}")
            self.progress[run.key] = progress
            return done
        self.progress[run.key] = {
            "mode": run.mode,
            "seed": run.seed,
            "path": run.path,
            "histories": {str(p): [] for p in run.eval_paths},
            "train_seconds": 0.0,
            "eval_seconds": 0.0,
            "state_file": None,
        }
        return 0

    def _writers(self):
        labels = self.config.label
        writers = {
            p: tf.summary.create_file_writer(
                self.folder.tensorboard_dir(self.run.mode, self.run.seed, p, labels(p))
            )
            for p in self.run.eval_paths
        }
        # The joint supernet's training loss is one number for every path:
        # it is logged once, in a run of its own, not copied into each path's.
        if self.run.mode == "joint":
            writers[None] = tf.summary.create_file_writer(
                self.folder.tensorboard_dir("joint", self.run.seed)
            )
        return writers

    def train(self):
        run, config = self.run, self.config
        progress = self.progress.get(run.key)
        if (
            progress
            and len(next(iter(progress["histories"].values()))) >= config.epochs
        ):
            self._say(f"complete ({config.epochs} epochs), skipped")
            return
        joint = run.mode == "joint"
        model = training.build_model(
            config.space,
            config.learning_rate,
            config.sampling if joint else "fixed",
            run.seed,
            input_shape=config.input_shape,
            num_classes=config.num_classes,
            strategy=self.strategy,
            path_dropout=config.path_dropout if joint else 0.0,
            branch_learning_rates=config.branch_learning_rates or None,
        )
        callbacks = [_StopOnNonFiniteLoss(run)]
        if joint and getattr(model.sampler, "path_dropout_rate", None) is not None:
            callbacks.append(PathDropoutSchedule(ramp_epochs=config.epochs))
        if not joint:
            model.set_path(run.path)
        done = self._resume_point(model)
        writers = self._writers()
        needed = int(_SPACE_FACTOR * runs.state_bytes(model)) + _SPACE_SLACK
        try:
            for epoch in range(done, config.epochs):
                self._epoch(model, epoch, callbacks, writers, needed)
        finally:
            for writer in writers.values():
                writer.close()

    def _check_space(self, needed, epoch):
        try:
            runs.check_free_space(
                self.run.dir, needed, f"epoch {epoch} of {self.run.name}"
            )
        except runs.SaveError as e:
            raise runs.SaveError(f"{e} {_saved_note(epoch)}") from None

    def _epoch(self, model, epoch, callbacks, writers, needed):
        run, config, progress = self.run, self.config, self.progress[self.run.key]
        # Checked before the epoch too, not to train one for nothing.
        self._check_space(needed, epoch + 1)
        loss, accuracy, seconds = training.train_epoch(
            model,
            self.data.train(run.seed, epoch),
            epoch,
            config.epochs,
            self.strategy_name,
            self.strategy,
            callbacks,
            self.verbose,
        )
        if not math.isfinite(loss):
            # Under a strategy no callback sees the batches.
            raise NonFiniteLossError(
                _non_finite_message(run, "The training loss", loss, epoch + 1)
            )
        if training.first_non_finite(model):
            raise NonFiniteLossError(
                _non_finite_message(run, "The weights", "NaN or infinite", epoch + 1)
            )
        progress["train_seconds"] += seconds
        rows = self._evaluate(model, epoch, loss, accuracy)
        for p, row in rows.items():
            row["wall_seconds"] = round(
                progress["train_seconds"] + progress["eval_seconds"], 3
            )
            progress["histories"][str(p)].append(row)
        self._log(writers, rows, epoch, loss)
        self._save(model, epoch, needed)
        if self.verbose:
            accs = " ".join(
                f"{config.label(p)}={rows[p]['val_accuracy']:.4f}" for p in rows
            )
            self._say(
                f"epoch {epoch + 1}/{config.epochs} loss={loss:.4f} ({seconds:.1f} s) "
                f"val_accuracy: {accs}"
            )

    def _evaluate(self, model, epoch, loss, accuracy):
        run, progress = self.run, self.progress[self.run.key]
        joint = run.mode == "joint"
        start = time.perf_counter()
        # A joint supernet's BatchNorm statistics mix every path: each path
        # is evaluated with statistics of its own.
        bn_data = self.data.bn() if training.needs_recalibration(model, joint) else None
        results = training.evaluate_paths(
            model,
            run.eval_paths,
            {"val": self.data.val, "test": self.data.test},
            bn_data=bn_data,
            strategy=self.strategy,
        )
        rows = {}
        for p, metrics in results.items():
            for name in ("val_loss", "test_loss"):
                if not math.isfinite(metrics[name]):
                    raise NonFiniteLossError(
                        _non_finite_message(
                            run,
                            f"The {name} of path {self.config.label(p)}",
                            metrics[name],
                            epoch + 1,
                        )
                    )
            rows[p] = {
                "epoch": epoch + 1,
                **metrics,
                "train_loss": loss,
                "train_accuracy": accuracy,
                "seconds": round(progress["train_seconds"], 3),
            }
        if not joint:
            model.set_path(run.path)
        else:
            # The probability each path had during this epoch; an adaptive
            # sampler then moves it from the validation losses.
            for p in rows:
                rows[p]["sampling_probability"] = _path_probability(model, p)
            model.update_sampling(list(rows), [rows[p]["val_loss"] for p in rows])
        progress["eval_seconds"] += time.perf_counter() - start
        return rows

    def _log(self, writers, rows, epoch, loss):
        for p, row in rows.items():
            with writers[p].as_default(step=epoch + 1):
                for name in ("val_accuracy", "val_loss", "test_accuracy", "test_loss"):
                    tf.summary.scalar(name, row[name])
                if self.run.mode == "standalone":
                    tf.summary.scalar("train_loss", row["train_loss"])
            writers[p].flush()
        if self.run.mode == "joint":
            with writers[None].as_default(step=epoch + 1):
                tf.summary.scalar("train_loss", loss)
            writers[None].flush()

    def _save(self, model, epoch, needed):
        run, progress = self.run, self.progress[self.run.key]
        self._check_space(needed, epoch + 1)
        try:
            # Weights and state first, then the progress file that points at
            # them: a kill between the two replays this epoch exactly.
            runs.save_weights(
                model, os.path.join(run.dir, f"epoch_{epoch + 1:03d}.weights.h5")
            )
            state_file = f"epoch_{epoch + 1:03d}.npz"
            runs.save_state(model, os.path.join(run.state_dir, state_file))
            old_state = progress["state_file"]
            progress["state_file"] = state_file
            runs.write_json(os.path.join(run.state_dir, "progress.json"), progress)
            if old_state and old_state != state_file:
                old_path = os.path.join(run.state_dir, old_state)
                if os.path.exists(old_path):
                    os.remove(old_path)
            self.publish()
        except OSError as e:
            reason = str(e.strerror or e).strip().splitlines()[0]
            raise runs.SaveError(
                f"Cannot save epoch {epoch + 1} of {run.name} in {run.dir}: "
                f"{reason}. {_saved_note(epoch + 1)}"
            ) from e


def _path_probability(model, path):
    probability = getattr(model.sampler, "path_probability", None)
    if probability is not None:
        return probability(path)
    return 1.0 / model.num_paths


# === The experiment ===


def run_experiment(
    output_dir,
    mode="all",
    seeds=(0,),
    paths=None,
    space=None,
    dataset="mnist",
    data_dir=None,
    epochs=15,
    batch_size=128,
    learning_rate=1e-3,
    train_size=None,
    val_size=5000,
    split_seed=0,
    sampling="uniform",
    path_dropout=0.0,
    branch_learning_rates=None,
    bn_batches=None,
    eval_paths=None,
    strategy="default",
    shard=None,
    verbose=1,
    **preset,
):
    """Trains the joint supernet and/or paths alone, per seed.

    Every argument and the data are checked before anything is written, so a
    bad call leaves `output_dir` untouched. Calling again with the same
    arguments and `output_dir` resumes an interrupted experiment; runs that
    are complete are skipped, and a larger `epochs` extends them. One
    process at a time writes a folder: a second one is refused at once.

    Joint mode: the supernet with `sampling` draws paths while it trains;
    after every epoch each of `eval_paths` is made active (its BatchNorm
    statistics recalibrated for spaces with BatchNorm) and evaluated on the
    validation and test sets. Standalone mode: each selected path trained
    alone (`sampling="fixed"`), with the joint supernet's architecture and
    initial weights for that seed. Both use `keras_supernet.training`'s
    recipe: Adam with a fixed learning rate, sparse cross-entropy on logits.

    Args:
        output_dir: the run folder (created; an existing one is resumed).
        mode: `"joint"`, `"standalone"` or `"all"` (both).
        seeds: the whole experiment is repeated per seed; a seed fixes the
            initial weights, the path draws and the shuffling of every epoch.
        paths: paths trained in standalone mode (indices or labels, see
            `SearchSpace`); None for every path of a space of at most
            `ALL_PATHS_LIMIT` paths (a larger space needs them named).
        space: the search space: a name or file (see
            `keras_supernet.presets`), or a spec; None for the report's,
            shaped by the preset arguments.
        dataset: `"mnist"` or `"fashion_mnist"`.
        data_dir: folder with the four IDX files; None loads the dataset with
            tensorflow-datasets.
        epochs: epochs of every run.
        batch_size: training and evaluation batch size.
        learning_rate: Adam learning rate (fixed).
        train_size: training examples used after the validation split; None
            for all.
        val_size: examples held out from the training set for validation
            (seeded by `split_seed`, the same for every seed).
        split_seed: seed of the validation split (and of the sample of
            evaluated paths of a large space).
        sampling: the joint supernet's sampling strategy (`"uniform"`,
            `"per_example"`, `"fair"` or `"adaptive"`).
        path_dropout: with aggregating choices, the final path dropout rate
            (ramped over `epochs`).
        branch_learning_rates: `{candidate label: multiplier}`, both modes.
        bn_batches: BatchNorm recalibration batches before each path's
            evaluation in joint mode; None: 20 for spaces with BatchNorm.
        eval_paths: the paths a joint run evaluates after every epoch: None
            (every path of a small space, 16 drawn with `split_seed` of a
            larger one), a count, or a list of paths.
        strategy: `"default"`, `"mirrored"` or `"multi_worker"` (see
            `keras_supernet.distribute`); `batch_size` is the global batch.
        shard: None, or `(i, n)`: train only slice `i` of `n` of the grid of
            runs (seeds x joint/standalone paths); `bin/report` merges the
            folders.
        verbose: 0 silent, 1 progress bar and a line per epoch, 2 lines.
        **preset: the report's space: `kernel_sizes`, `filters`,
            `hidden_units`, `padding`, `aggregation` (only without `space`).

    Returns:
        The dict written to `results.json`: `{"config": ..., "runs": [...]}`.

    Raises:
        ValueError: an invalid argument, an unknown path, or an `output_dir`
            holding a run of another configuration or data.
        keras_supernet.data.DataError: missing or malformed data files.
        OutputDirBusyError: another process is writing `output_dir`.
        SaveError: an epoch cannot be saved (a full disk); earlier epochs
            stay saved.
        NonFiniteLossError: a loss became NaN or infinite; earlier epochs
            stay saved.
    """
    validation.one_of("mode", mode, MODES)
    unknown = set(preset) - set(
        ("kernel_sizes", "filters", "hidden_units", "padding", "aggregation")
    )
    if unknown:
        raise TypeError(f"run_experiment() got unexpected arguments {sorted(unknown)}.")
    epochs = validation.positive_int("epochs", epochs)
    batch_size = validation.positive_int("batch_size", batch_size)
    train_size = validation.positive_int("train_size", train_size, allow_none=True)
    val_size = validation.positive_int("val_size", val_size)
    learning_rate = validation.positive_float("learning_rate", learning_rate)
    validation.finite_float("path_dropout", path_dropout)
    if isinstance(branch_learning_rates, dict):
        for value in branch_learning_rates.values():
            if not validation.is_number(value) or not math.isfinite(value):
                raise ValueError(
                    "Invalid value for argument `branch_learning_rates`. "
                    "Expected finite numbers. Received "
                    f"branch_learning_rates={branch_learning_rates!r}."
                )
    if sampling == "fixed":
        raise ValueError(
            "Invalid value for argument `sampling`. Expected a joint sampling "
            "strategy; 'fixed' is what standalone mode uses. "
            "Received sampling='fixed'."
        )
    seeds = validation.seeds("seeds", seeds)
    # A seed, never None: the split must be the same at every resume.
    split_seed = validation.non_negative_int("split_seed", split_seed)
    bn_batches = validation.non_negative_int("bn_batches", bn_batches, allow_none=True)
    shard = validation.shard(shard)
    folder = runs.RunFolder(validation.output_dir("output_dir", output_dir))
    strategy_name = strategy
    strategy = distribute.get_strategy(strategy_name)
    if not distribute.is_chief_task() and strategy_name == "multi_worker":
        folder = runs.RunFolder(
            os.path.join(folder.path, ".workers", distribute.task_name())
        )

    splits = data.load_splits(dataset, data_dir, val_size, train_size, split_seed)
    config, search_space = _make_config(
        mode,
        seeds,
        paths,
        space,
        dataset,
        data_dir,
        epochs,
        batch_size,
        learning_rate,
        split_seed,
        sampling,
        path_dropout,
        branch_learning_rates,
        bn_batches,
        eval_paths,
        strategy_name,
        strategy.num_replicas_in_sync,
        shard,
        preset,
        splits,
    )
    _check_existing(folder, config)

    # Everything is valid: from here on the output folder is written, by one
    # process at a time.
    os.makedirs(folder.path, exist_ok=True)
    with runs.folder_lock(folder.path):
        # Again under the lock: a writer that held it may have changed the
        # folder since the check above.
        _check_existing(folder, config)
        progress = folder.scan_progress()
        state = {}

        def publish():
            entries = _runs_from_progress(folder, config, progress, search_space)
            config.seeds = sorted(set(seeds) | {r["seed"] for r in entries})
            modes = {r["mode"] for r in entries} | (
                {"joint", "standalone"} if mode == "all" else {mode}
            )
            config.mode = "all" if len(modes) == 2 else modes.pop()
            state["results"] = {"config": config.to_json(), "runs": entries}
            folder.write_results(config, entries)

        publish()
        grid = []
        for seed in seeds:
            if mode in ("joint", "all"):
                grid.append(_Run(folder, "joint", seed, None, config.eval_paths))
            if mode in ("standalone", "all"):
                grid += [_Run(folder, "standalone", seed, p, [p]) for p in config.paths]
        if shard is not None:
            grid = grid[shard[0] :: shard[1]]
        for run in grid:
            _Trainer(
                folder,
                config,
                run,
                splits,
                strategy,
                strategy_name,
                progress,
                publish,
                verbose,
            ).train()
        publish()
        return state["results"]
