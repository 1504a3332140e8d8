"""Joint and standalone training of a supernet's paths, with exact resume.

`run_experiment` reproduces the experiment of the original report: a supernet
trained jointly (one path drawn uniformly per batch, every path evaluated
after every epoch) against each path trained alone with the same
hyperparameters, architecture and initial weights, repeated per seed.

A validation split held out from the training set picks each path's best
epoch; the test accuracy is reported at that epoch. Normalisation is the only
preprocessing.

Everything a run writes lives in `output_dir`:

```
results.json                        {"config": {...}, "runs": [...]}, rewritten atomically every epoch
tensorboard/<mode>/seed<S>/path<P>_<label>/   one scalar series per path and mode
tensorboard/joint/seed<S>/supernet/           the joint supernet's train_loss
.lock                               held by the one process writing the folder
checkpoints/<mode>/seed<S>[/path<P>]/epoch_<NNN>.weights.h5   supernet weights after epoch NNN
checkpoints/<mode>/seed<S>[/path<P>]/state/   resume state: progress.json + variables .npz
```

Each epoch ends with an atomic save (temporary file, fsync, `os.replace`) of
the epoch's weights and of the resume state (all model variables, including
the path sampler's seed generator, and the optimizer's variables). The
training order of an epoch is a fixed function of `(seed, epoch)`, so a run
killed at any moment and started again with the same arguments ends with the
same numbers as an uninterrupted run; finished runs are skipped.

Example:

```python
results = run_experiment(mode="all", data_dir="../shared/data/mnist",
                         epochs=15, seeds=(0, 1, 2), output_dir="runs/mnist")
```
"""

import contextlib
import fcntl
import glob
import json
import math
import os
import re
import shutil
import time
import weakref
import zipfile
import zlib

import keras
import numpy as np
import tensorflow as tf

import keras_supernet
from keras_supernet import data
from keras_supernet import distribute
from keras_supernet.supernet import PathDropoutSchedule
from keras_supernet.supernet import Supernet

MODES = ("joint", "standalone", "all")
RESULTS_FILE = "results.json"
# TensorBoard run of the joint supernet itself, beside its paths' runs.
SUPERNET = "supernet"

# Config keys that must agree for a run folder to be resumed or extended.
_COMPATIBLE_KEYS = (
    "dataset",
    "kernel_sizes",
    "filters",
    "hidden_units",
    "num_classes",
    "input_shape",
    "padding",
    "batch_size",
    "learning_rate",
    "train_size",
    "val_size",
    "test_size",
    "split_seed",
    "sampling",
    "aggregation",
    "path_dropout",
    "branch_learning_rates",
)


# === Argument parsing and validation ===


def _positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value <= 0
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive integer. "
            f"Received {name}={value!r}."
        )
    return int(value)


def _non_negative_int(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 0
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a non-negative "
            f"integer. Received {name}={value!r}."
        )
    return int(value)


def _output_dir_path(output_dir):
    """`output_dir` as a path string, or raises if it is empty."""
    if not output_dir:
        raise ValueError(
            f"Invalid value for argument `output_dir`. Expected a folder path. Received output_dir={output_dir!r}."
        )
    return os.fspath(output_dir)


def parse_kernel_sizes(text):
    """Parses `"3,5;3,5"` into `((3, 5), (3, 5))` (one group per layer)."""
    try:
        layers = tuple(
            tuple(int(k) for k in group.split(",") if k.strip())
            for group in text.split(";")
        )
    except ValueError:
        layers = ()
    if not layers or any(not group for group in layers):
        raise ValueError(
            "Invalid value for argument `kernel_sizes`. Expected kernel sizes "
            "per layer, layers separated by ';', e.g. '3,5;3,5'. "
            f"Received kernel_sizes={text!r}."
        )
    return layers


def parse_int_list(name, text):
    """Parses `"16,32"` into `(16, 32)`."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected comma-separated "
            f"integers, e.g. '0,1,2'. Received {name}={text!r}."
        )
    return values


def parse_paths(text):
    """Parses a path selection into a list for `Supernet.resolve_path`.

    Accepts indices (`"0,2"`), one kernel string (`"5x5,3x3"`), or several
    items separated by `;` (`"5x5,3x3;3x3,3x3"`, `"0;5x5,3x3"`). Returns
    ints and strings; `None` for an empty text (all paths).
    """
    text = (text or "").strip()
    if not text:
        return None
    if ";" in text:
        items = [item.strip() for item in text.split(";") if item.strip()]
    else:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not all(re.fullmatch(r"\d+", item) for item in items):
            items = [text]
    return [int(item) if re.fullmatch(r"\d+", item) else item for item in items]


def parse_branch_learning_rates(text):
    """Parses `"3x3:1.0,5x5:0.5"` into `{"3x3": 1.0, "5x5": 0.5}`; `""` -> None."""
    if not text or not text.strip():
        return None
    result = {}
    for item in text.split(","):
        key, sep, value = item.partition(":")
        try:
            result[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if (
            not sep
            or not key.strip()
            or not math.isfinite(result[key.strip()])
        ):
            raise ValueError(
                "Invalid value for argument `branch_lr`. Expected "
                "kernel:multiplier pairs with finite multipliers like "
                f"'3x3:1.0,5x5:0.5'. Received branch_lr={text!r}."
            )
    return result


def parse_shard(text):
    """Parses `"i/n"` (slice `i` of `n`, 0-based) into `(i, n)`; `""` gives None."""
    text = (text or "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise ValueError(
            "Invalid value for argument `shard`. Expected 'i/n' with "
            f"0 <= i < n, e.g. '0/4'. Received shard={text!r}."
        )
    return int(match.group(1)), int(match.group(2))


def _check_finite(name, value, shown=None):
    """Raises if a float argument is NaN or infinite (other checks elsewhere)."""
    if (
        isinstance(value, (float, np.floating))
        and not math.isfinite(value)
    ):
        shown = value if shown is None else shown
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected finite numbers. "
            f"Received {name}={shown!r}."
        )


def _validate_seeds(seeds):
    if isinstance(seeds, (int, np.integer)):
        seeds = (seeds,)
    seeds = tuple(seeds)
    if (
        not seeds
        or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0
            for s in seeds
        )
        or len(set(seeds)) != len(seeds)
    ):
        raise ValueError(
            "Invalid value for argument `seeds`. Expected distinct non-negative "
            f"integers. Received seeds={seeds!r}."
        )
    return tuple(int(s) for s in seeds)


# === Atomic files ===


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(tmp, path):
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def _tmp_name(path):
    # Keras requires weight files to end with ".weights.h5": keep the suffix.
    folder, name = os.path.split(path)
    return os.path.join(folder, ".tmp-" + name)


@contextlib.contextmanager
def _atomic_write(path):
    """Yields the temporary name to write `path` through; then moves it into
    place, or removes it if writing failed (a full disk leaves no partial
    file behind)."""
    tmp = _tmp_name(path)
    try:
        yield tmp
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json_atomic(path, obj):
    """Writes `obj` as JSON to `path` through a synced temporary file."""
    with _atomic_write(path) as tmp:
        with open(tmp, "w") as f:
            # Strict JSON: NaN or Infinity would break strict parsers.
            json.dump(obj, f, indent=1, allow_nan=False)
            f.write("\n")


def _save_weights_atomic(model, path):
    with _atomic_write(path) as tmp:
        model.save_weights(tmp)


def _state_variables(model):
    """Every variable of a run's state: model (with seed generators) + optimizer."""
    return list(model.variables) + list(model.optimizer.variables)


def _save_state_atomic(model, path):
    arrays = {
        f"v{i:05d}": np.asarray(v.numpy())
        for i, v in enumerate(_state_variables(model))
    }
    with _atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


class CorruptStateError(ValueError):
    """A resume state file cannot be read."""


def _read_state(path, run):
    """The arrays of a resume state file, in order.

    Raises:
        CorruptStateError: the file is truncated, corrupt or not an npz
            file; the message says how to recover.
    """
    reason = None
    try:
        # np.load would read anything else as a pickle, and refuse it with
        # a message about pickles.
        if not zipfile.is_zipfile(path):
            reason = "truncated, or not an npz file"
        else:
            with np.load(path) as stored:
                return [
                    stored[f"v{i:05d}"] for i in range(len(stored.files))
                ]
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
    ) as e:
        reason = _describe(e)
    raise CorruptStateError(
        f"Resume state {path} is unreadable ({reason}): delete {path} and run "
        f"the same command again ({run.name} then trains again from epoch 1)."
    )


def _describe(error):
    """`Type: first line of the message`, for one-line errors."""
    message = str(error).strip()
    if not message:
        return type(error).__name__
    return f"{type(error).__name__}: {message.splitlines()[0]}"


def _restore_state(model, path, run):
    variables = _state_variables(model)
    stored = _read_state(path, run)
    if len(stored) != len(variables):
        raise ValueError(
            f"Resume state {path} holds {len(stored)} variables, the model "
            f"has {len(variables)}: the run folder belongs to another configuration, "
            "or to keras_supernet 0.1.0 (its hidden layer had one kernel)."
        )
    for value, v in zip(stored, variables):
        if tuple(value.shape) != tuple(v.shape):
            raise ValueError(
                f"Resume state {path}: variable {v.path} has shape {tuple(v.shape)}, "
                f"stored {tuple(value.shape)}."
            )
        v.assign(value)


# === Free space ===

# Bytes an epoch writes, as a multiple of the bytes of the run's variables
# (model and optimizer): the weights file and the new resume state, in
# formats with some overhead, while the previous state is still on disk.
_SPACE_FACTOR = 2.5
# Plus progress.json, results.json and the TensorBoard events.
_SPACE_SLACK = 1 << 20


class SaveError(OSError):
    """An epoch's checkpoint or resume state cannot be written (a full disk)."""


def _bytes_per_epoch(model):
    state = sum(np.asarray(v.numpy()).nbytes for v in _state_variables(model))
    return int(_SPACE_FACTOR * state) + _SPACE_SLACK


def _megabytes(n):
    return f"{n / 1e6:.2f} MB"


def _check_free_space(folder, needed, run, epoch):
    """Raises `SaveError` unless `folder` has `needed` bytes free.

    h5py writing a weights file on a full disk can crash the process
    (segmentation fault) instead of raising, so the space is checked
    before anything is written.
    """
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SaveError(
            f"Not enough free space to save epoch {epoch} of {run.name} in "
            f"{folder}: {_megabytes(free)} free, about {_megabytes(needed)} "
            f"needed. {_saved_note(epoch)}"
        )


def _saved_note(epoch):
    return (
        f"Epochs up to {epoch - 1} are saved; free some space, then run the "
        "same command again to resume."
        if epoch > 1
        else "Free some space, then run the same command again."
    )


# === One writer per output folder ===

LOCK_FILE = ".lock"


class OutputDirBusyError(RuntimeError):
    """Another process is writing the same output folder."""


@contextlib.contextmanager
def output_dir_lock(output_dir):
    """Holds the lock that makes this process the only writer of `output_dir`.

    An advisory `fcntl.flock` on `<output_dir>/.lock`, taken without waiting:
    two runs in one folder would each rewrite results.json from their own
    state, and the last writer would silently drop the other's runs. The
    holder's pid is written into the file for the message of the refused
    one. The kernel drops the lock when its process ends, `kill -9`
    included, so no stale lock can block the next run; the file itself stays
    (removing it would let a third process lock a new file while the second
    still holds the old one).

    Raises:
        OutputDirBusyError: another process holds the lock.
    """
    path = os.path.join(output_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise OutputDirBusyError(
                f"Output folder {output_dir} is being written by another "
                "process"
                + (f" (pid {holder})" if holder.isdigit() else "")
                + ": wait for it to finish, or use another --output_dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)


# === Run bookkeeping ===


def _run_key(mode, seed, path):
    return (mode, seed, path)


def _run_dir(output_dir, mode, seed, path=None):
    parts = [output_dir, "checkpoints", mode, f"seed{seed}"]
    if mode == "standalone":
        parts.append(f"path{path}")
    return os.path.join(*parts)


def _slug(label):
    return label.replace("->", "-")


def _best_epoch(history):
    accuracies = [row["val_accuracy"] for row in history]
    return int(np.argmax(accuracies)) + 1  # first epoch among ties


def _run_entry(
    output_dir, mode, seed, path, kernel_sizes, label, history, progress, epochs
):
    best = _best_epoch(history)
    run_dir = _run_dir(output_dir, mode, seed, path)
    return {
        "mode": mode,
        "seed": seed,
        "path": path,
        "kernel_sizes": list(kernel_sizes),
        "label": label,
        "best_epoch": best,
        "best_val_accuracy": history[best - 1]["val_accuracy"],
        "test_accuracy": history[best - 1]["test_accuracy"],
        "final_test_accuracy": history[-1]["test_accuracy"],
        "epochs_trained": len(history),
        "train_seconds": progress["train_seconds"],
        "eval_seconds": progress["eval_seconds"],
        "best_weights": os.path.relpath(
            os.path.join(run_dir, f"epoch_{best:03d}.weights.h5"), output_dir
        ),
        "history": history,
        "complete": len(history) >= epochs,
    }


def _scan_progress(output_dir):
    """Every (mode, seed, path-or-None) -> progress found in a run folder."""
    found = {}
    pattern = os.path.join(
        output_dir, "checkpoints", "*", "seed*", "**", "state", "progress.json"
    )
    for path in glob.glob(pattern, recursive=True):
        try:
            with open(path) as f:
                progress = json.load(f)
            key = _run_key(
                progress["mode"], progress["seed"], progress.get("path")
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptStateError(
                f"Resume progress {path} is unreadable ({_describe(e)}): "
                f"delete the folder {os.path.dirname(path)} and run the same "
                "command again (that run then trains again from epoch 1)."
            ) from e
        found[key] = progress
    return found


def _runs_from_progress(output_dir, progress_by_key, labels, paths, epochs):
    runs = []
    order = {"joint": 0, "standalone": 1}
    for (mode, seed, path), progress in sorted(
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
            p = int(p)
            if history:
                runs.append(
                    _run_entry(
                        output_dir,
                        mode,
                        seed,
                        p,
                        paths[p],
                        labels[p],
                        history,
                        progress,
                        epochs,
                    )
                )
    return runs


# === Training ===


class _Run:
    """One training run: the joint supernet or one standalone path, one seed."""

    def __init__(self, mode, seed, path, output_dir):
        self.mode = mode
        self.seed = seed
        self.path = path  # None for joint
        self.dir = _run_dir(output_dir, mode, seed, path)
        self.state_dir = os.path.join(self.dir, "state")

    @property
    def name(self):
        if self.mode == "joint":
            return f"joint seed={self.seed}"
        return f"standalone seed={self.seed} path={self.path}"


class NonFiniteLossError(ArithmeticError):
    """A run's loss became NaN or infinite: training stops."""


def _non_finite_message(run, what, value, epoch, step=None):
    where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
    saved = (
        f"epochs up to {epoch - 1} are saved"
        if epoch > 1
        else "no epoch was saved"
    )
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


class _StopAfterOneEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


# Values of keys that older run folders do not record.
_COMPATIBLE_DEFAULTS = {
    "sampling": "uniform",
    "aggregation": None,
    "path_dropout": 0.0,
    "branch_learning_rates": {},
}


def _compat_view(config):
    return {
        key: json.loads(
            json.dumps(config.get(key, _COMPATIBLE_DEFAULTS.get(key)))
        )
        for key in _COMPATIBLE_KEYS
    }


def check_output_dir(output_dir):
    """Raises unless `output_dir` is a folder or does not exist yet."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(
            f"Invalid value for argument `output_dir`. Expected a folder. "
            f"Received output_dir={output_dir!r}, which is a file."
        )


def _check_existing(output_dir, config, epochs):
    """Raises if `output_dir` holds a run of another configuration."""
    check_output_dir(output_dir)
    results_path = os.path.join(output_dir, RESULTS_FILE)
    if not os.path.exists(results_path):
        # results.json is written before any checkpoint: without it, nothing
        # says which configuration the checkpoints belong to.
        if os.path.isdir(os.path.join(output_dir, "checkpoints")):
            raise ValueError(
                f"Output folder {output_dir} holds checkpoints but no "
                f"{RESULTS_FILE}: use another --output_dir."
            )
        return
    try:
        with open(results_path) as f:
            old = json.load(f)["config"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"Cannot resume from {results_path}: {e}.") from e
    new_view, old_view = _compat_view(config), _compat_view(old)
    for key in _COMPATIBLE_KEYS:
        if new_view[key] != old_view[key]:
            raise ValueError(
                f"Output folder {output_dir} holds a run with {key}={old_view[key]!r}, "
                f"this one has {key}={new_view[key]!r}: use another --output_dir."
            )
    # Folders written before the fingerprint existed resume on any data of
    # the same sizes, and record the fingerprint from then on.
    old_print = old.get("data_fingerprint")
    new_print = config["data_fingerprint"]
    if old_print is not None and old_print != new_print:
        old_digest = old_print
        if isinstance(old_print, dict):
            old_digest = old_print.get("sha256")
        raise ValueError(
            f"Output folder {output_dir} holds runs trained on other data "
            f"(sha256 {str(old_digest)[:12]}... from data_dir "
            f"{old.get('data_dir')}; this data, from data_dir "
            f"{config['data_dir']}, gives {new_print['sha256'][:12]}...): "
            "resume with the data it was trained on, or use another "
            "--output_dir."
        )
    trained = max(
        (
            len(h)
            for p in _scan_progress(output_dir).values()
            for h in p["histories"].values()
        ),
        default=0,
    )
    if trained > epochs:
        raise ValueError(
            f"Invalid value for argument `epochs`. Output folder {output_dir} holds runs "
            f"trained for {trained} epochs. Received epochs={epochs}."
        )


def _build_model(config, sampling, seed, strategy=None):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = Supernet(
            **_supernet_kwargs(config), sampling=sampling, seed=seed
        )
        model.compile(
            optimizer=keras.optimizers.Adam(config["learning_rate"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        if not model.built:
            model.build((None,) + tuple(config["input_shape"]))
        model.optimizer.build(model.trainable_variables)
    return model


def _supernet_kwargs(config):
    return {
        "kernel_sizes": tuple(tuple(k) for k in config["kernel_sizes"]),
        "filters": tuple(config["filters"]),
        "hidden_units": config["hidden_units"],
        "num_classes": config["num_classes"],
        "input_shape": tuple(config["input_shape"]),
        "padding": config["padding"],
        "aggregation": config.get("aggregation"),
        "path_dropout": config.get("path_dropout", 0.0),
        "branch_learning_rates": config.get("branch_learning_rates") or None,
    }


def _evaluate(model, dataset, strategy):
    if not _multi_worker(strategy):
        result = model.evaluate(dataset, verbose=0, return_dict=True)
        return float(result["loss"]), float(result["accuracy"])
    # Keras 3's evaluate fails under MultiWorkerMirroredStrategy (see
    # keras_supernet.distribute): every worker evaluates the whole set on
    # its own, with the same numbers as `evaluate`.
    forward = _local_forward(model)
    total_loss, correct, count = 0.0, 0, 0
    for x, y in dataset:
        logits = forward(x)
        losses = keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True
        )
        total_loss += float(tf.reduce_sum(losses))
        correct += int(
            tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(logits, -1, output_type=y.dtype), y), "int32")
            )
        )
        count += int(tf.shape(y)[0])
    return total_loss / count, correct / count


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


_FORWARDS = weakref.WeakKeyDictionary()


def _local_forward(model):
    """The model's inference as a `tf.function`, one per model (the active
    path lives in variables, so changing it does not retrace)."""
    if model not in _FORWARDS:
        _FORWARDS[model] = tf.function(lambda x: model(x, training=False))
    return _FORWARDS[model]


def _train_run(run, config, arrays, eval_paths, labels, epochs, state, verbose):
    """Trains (or resumes) one run up to `epochs`, saving after every epoch.

    `state` holds the shared bookkeeping: `progress` (per run key) and a
    `publish()` callback that rewrites results.json.
    """
    key = _run_key(run.mode, run.seed, run.path)
    progress = state["progress"].get(key)
    done = len(next(iter(progress["histories"].values()))) if progress else 0
    if progress and done >= epochs:
        if verbose:
            print(f"[{run.name}] complete ({done} epochs), skipped", flush=True)
        return

    sampling = (
        config.get("sampling", "uniform") if run.mode == "joint" else "fixed"
    )
    strategy = state["strategy"]
    model = _build_model(config, sampling, run.seed, strategy)
    callbacks = [_StopOnNonFiniteLoss(run)]
    if run.mode == "joint" and config.get("aggregation"):
        callbacks.append(PathDropoutSchedule(ramp_epochs=epochs))
    if run.mode == "standalone":
        model.set_path(run.path)
    os.makedirs(run.state_dir, exist_ok=True)
    if progress and not os.path.isfile(
        os.path.join(run.state_dir, progress["state_file"])
    ):
        # Deleted, as the error for a corrupt state file says: without the
        # optimizer's state the run cannot continue, it starts again.
        if verbose:
            print(
                f"[{run.name}] no resume state {progress['state_file']}: "
                "training again from epoch 1",
                flush=True,
            )
        progress, done = None, 0
    # A kill can leave temporary files, or the state of the epoch before the
    # last one; only the state that progress.json names is kept.
    current = progress["state_file"] if progress else None
    for leftover in (
        glob.glob(os.path.join(run.dir, ".tmp-*"))
        + glob.glob(os.path.join(run.state_dir, ".tmp-*"))
        + glob.glob(os.path.join(run.state_dir, "epoch_*.npz"))
    ):
        if os.path.basename(leftover) != current:
            os.remove(leftover)
    if progress:
        _restore_state(
            model, os.path.join(run.state_dir, progress["state_file"]), run
        )
        if verbose:
            print(f"[{run.name}] resuming after epoch {done}", flush=True)
    else:
        progress = {
            "mode": run.mode,
            "seed": run.seed,
            "path": run.path,
            "histories": {str(p): [] for p in eval_paths},
            "train_seconds": 0.0,
            "eval_seconds": 0.0,
            "state_file": None,
        }

    mean, std = config["normalization"]["mean"], config["normalization"]["std"]
    batch_size = config["batch_size"]
    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = arrays
    val_ds = data.make_dataset(x_val, y_val, batch_size, mean, std)
    test_ds = data.make_dataset(x_te, y_te, batch_size, mean, std)
    tensorboard = os.path.join(
        state["output_dir"], "tensorboard", run.mode, f"seed{run.seed}"
    )
    writers = {
        p: tf.summary.create_file_writer(
            os.path.join(tensorboard, f"path{p}_{_slug(labels[p])}")
        )
        for p in eval_paths
    }
    # The joint supernet's training loss is one number for every path: it
    # is logged once, in a run of its own, not copied into each path's.
    if run.mode == "joint":
        writers[SUPERNET] = tf.summary.create_file_writer(
            os.path.join(tensorboard, SUPERNET)
        )
    fit_verbose = {0: 0, 1: 1}.get(verbose, 2)
    needed = _bytes_per_epoch(model)
    try:
        for epoch in range(done, epochs):
            # Checked before the epoch too, not to train one for nothing.
            _check_free_space(run.dir, needed, run, epoch + 1)
            train_ds = data.make_dataset(
                x_tr,
                y_tr,
                batch_size,
                mean,
                std,
                shuffle=True,
                seed=data.epoch_seed(run.seed, epoch),
            )
            start = time.perf_counter()
            if state["strategy_name"] != "default":
                # Keras 3's fit fails under MultiWorkerMirroredStrategy, and
                # under a strategy it uses up one pass of the reshuffling
                # dataset before training: the epoch would see another order
                # of examples than on one device.
                for callback in callbacks:
                    callback.set_model(model)
                    callback.on_epoch_begin(epoch)
                logs = distribute.train_epoch(model, train_ds, strategy)
                train_loss, train_accuracy = logs["loss"], logs["accuracy"]
            else:
                # One epoch per call (each saved before the next), with
                # `epochs` the run's total, so that the progress bar counts
                # "Epoch 3/15" rather than "Epoch 3/3".
                fit = model.fit(
                    train_ds,
                    initial_epoch=epoch,
                    epochs=epochs,
                    shuffle=False,
                    verbose=fit_verbose,
                    callbacks=callbacks + [_StopAfterOneEpoch()],
                )
                train_loss = fit.history["loss"][-1]
                train_accuracy = fit.history["accuracy"][-1]
            if not math.isfinite(train_loss):
                # Under a strategy no callback sees the batches.
                raise NonFiniteLossError(
                    _non_finite_message(
                        run, "The training loss", train_loss, epoch + 1
                    )
                )
            # NaN in a batch can leave the loss finite (a fused Conv2D+ReLU
            # maps NaN to 0) while its gradient turns weights into NaN.
            if not all(
                np.isfinite(v.numpy()).all() for v in model.trainable_variables
            ):
                raise NonFiniteLossError(
                    _non_finite_message(
                        run, "The weights", "NaN or infinite", epoch + 1
                    )
                )
            train_seconds = time.perf_counter() - start
            progress["train_seconds"] += train_seconds

            start = time.perf_counter()
            rows = {}
            for p in eval_paths:
                model.set_path(p)
                val_loss, val_acc = _evaluate(model, val_ds, strategy)
                test_loss, test_acc = _evaluate(model, test_ds, strategy)
                rows[p] = {
                    "epoch": epoch + 1,
                    "val_accuracy": val_acc,
                    "val_loss": val_loss,
                    "test_accuracy": test_acc,
                    "test_loss": test_loss,
                    "train_loss": float(train_loss),
                    "train_accuracy": float(train_accuracy),
                    "seconds": round(progress["train_seconds"], 3),
                }
                for name in ("val_loss", "test_loss"):
                    if not math.isfinite(rows[p][name]):
                        raise NonFiniteLossError(
                            _non_finite_message(
                                run,
                                f"The {name} of path {labels[p]}",
                                rows[p][name],
                                epoch + 1,
                            )
                        )
            if run.mode == "standalone":
                model.set_path(run.path)
            else:
                # The probability each path had during this epoch; an
                # adaptive sampler then moves it from the validation losses.
                for p in eval_paths:
                    rows[p]["sampling_probability"] = float(
                        model.path_probabilities.numpy()[p]
                    )
                model.update_sampling([rows[p]["val_loss"] for p in eval_paths])
            progress["eval_seconds"] += time.perf_counter() - start
            for p, row in rows.items():
                row["wall_seconds"] = round(
                    progress["train_seconds"] + progress["eval_seconds"], 3
                )
                progress["histories"][str(p)].append(row)
                with writers[p].as_default(step=epoch + 1):
                    for name in (
                        "val_accuracy",
                        "val_loss",
                        "test_accuracy",
                        "test_loss",
                    ):
                        tf.summary.scalar(name, row[name])
                    if run.mode == "standalone":
                        tf.summary.scalar("train_loss", row["train_loss"])
                writers[p].flush()
            if run.mode == "joint":
                with writers[SUPERNET].as_default(step=epoch + 1):
                    tf.summary.scalar("train_loss", float(train_loss))
                writers[SUPERNET].flush()

            _check_free_space(run.dir, needed, run, epoch + 1)
            try:
                # Weights and state first, then the progress file that points
                # at them: a kill between the two replays this epoch exactly.
                _save_weights_atomic(
                    model,
                    os.path.join(run.dir, f"epoch_{epoch + 1:03d}.weights.h5"),
                )
                state_file = f"epoch_{epoch + 1:03d}.npz"
                _save_state_atomic(
                    model, os.path.join(run.state_dir, state_file)
                )
                old_state = progress["state_file"]
                progress["state_file"] = state_file
                write_json_atomic(
                    os.path.join(run.state_dir, "progress.json"), progress
                )
                if old_state and old_state != state_file:
                    old_path = os.path.join(run.state_dir, old_state)
                    if os.path.exists(old_path):
                        os.remove(old_path)
                state["progress"][key] = progress
                state["publish"]()
            except OSError as e:
                reason = str(e.strerror or e).strip().splitlines()[0]
                raise SaveError(
                    f"Cannot save epoch {epoch + 1} of {run.name} in "
                    f"{run.dir}: {reason}. {_saved_note(epoch + 1)}"
                ) from e

            if verbose:
                accs = " ".join(
                    f"{labels[p]}={rows[p]['val_accuracy']:.4f}"
                    for p in eval_paths
                )
                print(
                    f"[{run.name}] epoch {epoch + 1}/{epochs} "
                    f"loss={rows[eval_paths[0]]['train_loss']:.4f} ({train_seconds:.1f} s) "
                    f"val_accuracy: {accs}",
                    flush=True,
                )
    finally:
        for writer in writers.values():
            writer.close()


def run_experiment(
    mode="all",
    dataset="mnist",
    data_dir=None,
    epochs=15,
    batch_size=128,
    learning_rate=1e-3,
    seeds=(0,),
    paths=None,
    train_size=None,
    val_size=5000,
    output_dir="runs/experiment",
    kernel_sizes=((3, 5), (3, 5)),
    filters=(16, 32),
    hidden_units=128,
    padding="valid",
    verbose=1,
    split_seed=0,
    sampling="uniform",
    aggregation=None,
    path_dropout=0.0,
    branch_learning_rates=None,
    strategy="default",
    shard=None,
):
    """Trains the joint supernet and/or each path alone, per seed.

    Every argument and the data are checked before anything is written, so a
    bad call leaves `output_dir` untouched. Calling again with the same
    arguments and `output_dir` resumes an interrupted experiment; runs that
    are complete are skipped, and a larger `epochs` extends them.

    Joint mode: one `Supernet(sampling=sampling, seed=seed)` draws a path per
    batch (or per example, see `sampling`); after every epoch each path is made active (`set_path`) and
    evaluated on the validation and test sets. Standalone mode: for each
    selected path, `Supernet(sampling="fixed", seed=seed)` with `set_path(p)`,
    which has the joint supernet's architecture and initial weights for that
    seed and trains that path only. Both use Adam with a fixed learning rate
    and the sparse categorical cross-entropy on logits.

    Args:
        mode: `"joint"`, `"standalone"` or `"all"` (both).
        dataset: `"mnist"` or `"fashion_mnist"`.
        data_dir: folder with the four IDX files; `None` loads the dataset
            with tensorflow-datasets.
        epochs: number of epochs of every run.
        batch_size: training and evaluation batch size.
        learning_rate: Adam learning rate (fixed).
        seeds: seeds; the whole experiment is repeated per seed. A seed fixes
            initial weights, path sampling and the shuffling of every epoch.
        paths: paths trained in standalone mode (indices, kernel tuples or
            strings like `"5x5,3x3"`); `None` for all. Joint mode always
            trains and evaluates every path.
        train_size: number of training examples used (after the validation
            split); `None` for all.
        val_size: number of examples held out from the training set for
            validation (seeded by `split_seed`, the same for every seed).
        output_dir: run folder (created; an existing one is resumed). One
            process at a time writes it: a second one is refused at once.
        kernel_sizes: candidate kernel sizes per supernet layer.
        filters: filters per supernet layer.
        hidden_units: width of the hidden dense layer of the head.
        padding: `"valid"` or `"same"`.
        verbose: 0 silent, 1 Keras progress bar and one line per epoch,
            2 one Keras line and one summary line per epoch.
        split_seed: seed of the validation split.
        sampling: the joint supernet's sampling strategy (`"uniform"`,
            `"per_example"`, `"fair"` or `"adaptive"`; see
            `keras_supernet.sampling`). An adaptive sampler is updated after
            every epoch from each path's validation loss.
        aggregation: None, `"sum"` or `"concat_1x1"`: multi-path blocks,
            trained with path dropout ramped over `epochs` in joint mode.
        path_dropout: final path dropout rate with an aggregation.
        branch_learning_rates: dict from kernel size (`3` or `"3x3"`) to a
            learning-rate multiplier, applied in both modes.
        strategy: `"default"`, `"mirrored"` or `"multi_worker"` (see
            `keras_supernet.distribute.get_strategy`); `batch_size` is the
            global batch. Under `"multi_worker"` every worker runs the same
            call; the chief writes `output_dir`, the other workers
            `output_dir/.workers/<task>`.
        shard: None, or `(i, n)`: train only slice `i` of `n` of the grid of
            runs (seeds x joint/standalone paths, in that order, every n-th
            run from the i-th), so that n machines can share an experiment;
            `bin/report` merges their folders.

    Returns:
        The dict written to `results.json`: `{"config": ..., "runs": [...]}`.

    Raises:
        ValueError: an invalid argument, an unknown path, or an `output_dir`
            holding a run of another configuration.
        keras_supernet.data.DataError: missing or malformed data files.
        OutputDirBusyError: another process is writing `output_dir` (see
            `output_dir_lock`).
        SaveError: an epoch cannot be saved (a full disk); earlier epochs
            stay saved.
        NonFiniteLossError: a loss became NaN or infinite; earlier epochs
            stay saved.
    """
    if mode not in MODES:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of {MODES}. Received mode={mode!r}."
        )
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    train_size = _positive_int("train_size", train_size, allow_none=True)
    val_size = _positive_int("val_size", val_size)
    hidden_units = _positive_int("hidden_units", hidden_units)
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, (int, float))
        or not 0 < learning_rate < math.inf
    ):
        raise ValueError(
            "Invalid value for argument `learning_rate`. Expected a positive "
            f"finite number. Received learning_rate={learning_rate!r}."
        )
    _check_finite("path_dropout", path_dropout)
    if isinstance(branch_learning_rates, dict):
        for value in branch_learning_rates.values():
            _check_finite(
                "branch_learning_rates", value, shown=branch_learning_rates
            )
    if sampling == "fixed":
        raise ValueError(
            "Invalid value for argument `sampling`. Expected a joint sampling "
            "strategy; 'fixed' is what standalone mode uses. "
            "Received sampling='fixed'."
        )
    seeds = _validate_seeds(seeds)
    # A seed, never None: the split must be the same at every resume.
    split_seed = _non_negative_int("split_seed", split_seed)
    output_dir = _output_dir_path(output_dir)
    if shard is not None and not (
        isinstance(shard, tuple)
        and len(shard) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
        and 0 <= shard[0] < shard[1]
    ):
        raise ValueError(
            "Invalid value for argument `shard`. Expected None or (i, n) with "
            f"0 <= i < n. Received shard={shard!r}."
        )
    strategy_name = strategy
    strategy = distribute.get_strategy(strategy_name)
    if not distribute.is_chief_task() and strategy_name == "multi_worker":
        output_dir = os.path.join(output_dir, ".workers", distribute.task_name())

    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = data.load_splits(
        dataset, data_dir, val_size, train_size, split_seed
    )
    mean, std = data.normalization_stats(x_tr)
    input_shape = tuple(x_tr.shape[1:]) + (1,)

    probe = Supernet(
        kernel_sizes=kernel_sizes,
        filters=filters,
        hidden_units=hidden_units,
        num_classes=data.NUM_CLASSES,
        input_shape=input_shape,
        padding=padding,
        sampling=sampling,
        aggregation=aggregation,
        path_dropout=path_dropout,
        branch_learning_rates=branch_learning_rates,
        seed=None,
    )
    kernel_sizes, filters = probe.kernel_sizes, tuple(probe.filters)
    all_paths = list(range(probe.num_paths))
    if paths is None:
        standalone_paths = all_paths
    else:
        if isinstance(paths, (int, str)):
            paths = [paths]
        standalone_paths = []
        for p in paths:
            index = probe.resolve_path(p)
            if index not in standalone_paths:
                standalone_paths.append(index)
        if not standalone_paths:
            raise ValueError(
                "Invalid value for argument `paths`. Expected at least one path. Received paths=[]."
            )
    labels = {p: probe.path_label(p) for p in all_paths}
    path_kernels = {p: tuple(probe.paths[p]) for p in all_paths}

    config = {
        "dataset": dataset,
        "data_dir": os.path.abspath(data_dir) if data_dir is not None else None,
        "mode": mode,
        "kernel_sizes": [list(k) for k in kernel_sizes],
        "filters": list(filters),
        "hidden_units": hidden_units,
        "num_classes": data.NUM_CLASSES,
        "input_shape": list(input_shape),
        "padding": padding,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": float(learning_rate),
        "optimizer": "adam",
        "seeds": list(seeds),
        "paths": standalone_paths,
        "path_labels": [labels[p] for p in all_paths],
        "train_size": int(len(x_tr)),
        "val_size": int(len(x_val)),
        "test_size": int(len(x_te)),
        "split_seed": split_seed,
        "data_fingerprint": data.fingerprint(
            ((x_tr, y_tr), (x_val, y_val), (x_te, y_te))
        ),
        "normalization": {"mean": mean, "std": std},
        "sampling": probe.sampler.name,
        "aggregation": probe.aggregation,
        "path_dropout": probe.path_dropout,
        "branch_learning_rates": probe.get_config()["branch_learning_rates"],
        "supernet_config": probe.get_config(),
        "strategy": strategy_name,
        "num_replicas": strategy.num_replicas_in_sync,
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
        "seconds": "train_seconds and history seconds count model.fit only; "
        "wall_seconds adds the per-epoch evaluation of every path",
        "versions": {
            "keras_supernet": keras_supernet.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }
    _check_existing(output_dir, config, epochs)

    # Everything is valid: from here on the output folder is written, by one
    # process at a time.
    os.makedirs(output_dir, exist_ok=True)
    with output_dir_lock(output_dir):
        # Again under the lock: a writer that held it may have changed the
        # folder since the check above.
        _check_existing(output_dir, config, epochs)
        state = {
            "output_dir": output_dir,
            "progress": _scan_progress(output_dir),
            "strategy": strategy,
            "strategy_name": strategy_name,
        }

        def publish():
            runs = _runs_from_progress(
                output_dir, state["progress"], labels, path_kernels, epochs
            )
            config["seeds"] = sorted(set(seeds) | {r["seed"] for r in runs})
            modes = {r["mode"] for r in runs} | (
                {"joint", "standalone"} if mode == "all" else {mode}
            )
            config["mode"] = "all" if len(modes) == 2 else modes.pop()
            state["results"] = {"config": config, "runs": runs}
            write_json_atomic(
                os.path.join(output_dir, RESULTS_FILE), state["results"]
            )

        state["publish"] = publish
        publish()
        data_arrays = ((x_tr, y_tr), (x_val, y_val), (x_te, y_te))
        grid = []
        for seed in seeds:
            if mode in ("joint", "all"):
                grid.append((_Run("joint", seed, None, output_dir), all_paths))
            if mode in ("standalone", "all"):
                grid += [
                    (_Run("standalone", seed, p, output_dir), [p])
                    for p in standalone_paths
                ]
        if shard is not None:
            grid = grid[shard[0] :: shard[1]]
        for run, eval_paths in grid:
            _train_run(
                run,
                config,
                data_arrays,
                eval_paths,
                labels,
                epochs,
                state,
                verbose,
            )
        publish()
        return state["results"]
