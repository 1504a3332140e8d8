"""The run folder: its configuration, its layout, and one atomic writer.

Everything `bin/train` writes, and everything `bin/report`, `bin/export`,
`bin/search`, `bin/bench`, `bin/tune` and `bin/rank` read back, goes through
this module:

```
<run_dir>/results.json                  {"config": {...}, "runs": [...]}, rewritten atomically after every epoch
<run_dir>/report.md, training_curves.png
<run_dir>/.lock                         held by the one process writing the folder
<run_dir>/tensorboard/<mode>/seed<S>/path<P>_<label>/   (and joint/seed<S>/supernet/)
<run_dir>/checkpoints/<mode>/seed<S>[/path<P>]/epoch_<NNN>.weights.h5
<run_dir>/checkpoints/<mode>/seed<S>[/path<P>]/state/progress.json, epoch_<NNN>.npz
<run_dir>/saved_models/<name>/<version>/  bin/export's default destination
```

`RunConfig` is the typed configuration of a run folder: one JSON round trip,
one representation of the architecture (`space`, a spec of
`keras_supernet.presets`), the defaults of keys that older folders do not
record (in one place, `_OLD_DEFAULTS`), and the keys that must agree for a
folder to be resumed (`RunConfig.RESUME_KEYS`). `RunFolder` knows every path
in a folder, finds runs and epochs, loads a supernet at an epoch, and writes
with one writer: a temporary file, fsync, then `os.replace` (a kill or a full
disk leaves either the old file or the new one, never a part).
"""

import contextlib
import dataclasses
import fcntl
import glob
import json
import os
import re
import shutil
import zipfile
import zlib

import numpy as np

from keras_supernet import validation

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CURVES_FILE = "training_curves.png"
LOCK_FILE = ".lock"
EXPORT_DIR = "saved_models"
# TensorBoard run of the joint supernet itself, beside its paths' runs.
SUPERNET_LOG = "supernet"
MODES = ("joint", "standalone")
EPOCH_CHOICES = ("best", "last")

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.weights\.h5$")


# === Errors ===


class RunFolderError(ValueError):
    """A run folder, or a file in it, that cannot be used."""


class CorruptStateError(RunFolderError):
    """A resume state file cannot be read."""


class OutputDirBusyError(RuntimeError):
    """Another process is writing the same output folder."""


class SaveError(OSError):
    """A file cannot be written (a full disk)."""


def describe_error(error):
    """`Type: first line of the message`, for one-line errors."""
    message = str(error).strip()
    if not message:
        return type(error).__name__
    return f"{type(error).__name__}: {message.splitlines()[0]}"


# === Atomic files ===


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path):
    # One temporary name per process: bin/report rewriting a report while
    # bin/train writes its own must not share (and truncate) the other's.
    # Keras requires weight files to end with ".weights.h5": keep the suffix.
    folder, name = os.path.split(path)
    return os.path.join(folder, f".tmp-{os.getpid()}-{name}")


@contextlib.contextmanager
def atomic_write(path):
    """Yields the temporary name to write `path` through; then syncs it and
    moves it into place, or removes it if writing failed (a full disk leaves
    no partial file behind)."""
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path) or ".")
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path, obj, indent=1, sort_keys=False):
    """Writes `obj` as strict JSON to `path`, atomically (see module doc).

    NaN or Infinity would break strict parsers: they are refused.
    """
    with atomic_write(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=sort_keys, allow_nan=False)
            f.write("\n")


def write_text(path, text):
    """Writes `text` to `path`, atomically."""
    with atomic_write(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def read_json(path, what="file"):
    """Reads JSON from `path`, or raises `RunFolderError` naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunFolderError(f"No {what} {path}.") from None
    except (OSError, ValueError) as e:
        raise RunFolderError(f"Cannot read {path}: {describe_error(e)}.") from None


def versions(**extra):
    """The versions a result file records: keras_supernet, Keras,
    TensorFlow, then `extra` (name: version)."""
    # Imported here: runs.py is imported by the package itself.
    import keras
    import tensorflow as tf

    import keras_supernet

    return {
        "keras_supernet": keras_supernet.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        **extra,
    }


def check_free_space(folder, needed, what):
    """Raises `SaveError` unless `folder` has `needed` bytes free.

    h5py writing a weights file on a full disk can crash the process
    (segmentation fault) instead of raising, so the space is checked before
    anything is written; `what` says what was to be written.
    """
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SaveError(
            f"Not enough free space to save {what} in {folder}: "
            f"{free / 1e6:.2f} MB free, about {needed / 1e6:.2f} MB needed."
        )


# === One writer per folder ===

_TMP_PATTERN = re.compile(r"\.tmp-(\d+)-")


def process_is_alive(pid):
    """Whether a process of this host has the id `pid`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder):
    """Removes the temporary files of writers that died mid-write.

    `atomic_write` removes its temporary file when writing fails, but a
    writer killed with `kill -9` between writing and renaming leaves it.
    The file is only removed when its process (the pid in its name) is
    gone: `bin/report` may be writing its own next to a live writer.

    Returns:
        The paths removed.
    """
    removed = []
    for root, _, names in os.walk(folder):
        for name in names:
            match = _TMP_PATTERN.match(name)
            if match is None:
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or process_is_alive(pid):
                continue
            path = os.path.join(root, name)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


@contextlib.contextmanager
def folder_lock(folder):
    """Holds the lock that makes this process the only writer of `folder`.

    An advisory `fcntl.flock` on `<folder>/.lock`, taken without waiting:
    two runs in one folder would each rewrite results.json from their own
    state, and the last writer would silently drop the other's runs. The
    holder's pid is written into the file for the message of the refused
    one. The kernel drops the lock when its process ends, `kill -9`
    included, so no stale lock can block the next run; the file itself stays
    (removing it would let a third process lock a new file while the second
    still holds the old one). Once held, the temporary files of writers
    killed mid-write are removed (`remove_stale_temporaries`).

    Raises:
        OutputDirBusyError: another process holds the lock.
    """
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise OutputDirBusyError(
                f"Output folder {folder} is being written by another process"
                + (f" (pid {holder})" if holder.isdigit() else "")
                + ": wait for it to finish, or use another --output_dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        remove_stale_temporaries(folder)
        yield path
    finally:
        os.close(fd)


# === Configuration ===

# Values of keys that older run folders (keras_supernet 0.1.0 and 0.2.0) do
# not record, in one place.
_OLD_DEFAULTS = {
    "sampling": "uniform",
    "path_dropout": 0.0,
    "branch_learning_rates": {},
    "strategy": "default",
    "num_replicas": 1,
    "shard": None,
    "optimizer": "adam",
    "data_fingerprint": None,
    "bn_batches": 0,
    "eval_paths": None,
    "versions": {"keras_supernet": "0.1.0"},
}
# Flat architecture keys of 0.1.0/0.2.0 configs, now inside `space`.
_OLD_PRESET_KEYS = ("kernel_sizes", "filters", "hidden_units", "padding", "aggregation")


@dataclasses.dataclass
class RunConfig:
    """The configuration of a run folder (`results.json`'s `config`).

    Attributes:
        space: the search space spec (see `keras_supernet.presets`): the
            one representation of the architecture.
        space_name: how the user named the space (`report`, a file path).
        dataset, data_dir: where the data came from.
        input_shape, num_classes: of the examples.
        mode: `joint`, `standalone` or `all` (what the folder holds).
        epochs, batch_size, learning_rate, optimizer: the training recipe.
        seeds: the seeds trained in the folder.
        paths: the paths trained alone (indices).
        eval_paths: the paths the joint supernet is evaluated on after
            every epoch (every path of a small space, a seeded sample of a
            large one).
        path_labels: label of every path in `paths` and `eval_paths`
            (string keys: JSON objects have string keys).
        train_size, val_size, test_size, split_seed: the data split.
        normalization: `{"mean", "std"}` of the training split.
        data_fingerprint: sizes and sha256 of the split arrays.
        sampling, path_dropout, branch_learning_rates: joint training.
        bn_batches: BatchNorm recalibration batches before each path's
            evaluation (0 for spaces without BatchNorm).
        strategy, num_replicas, shard: how the folder was trained.
        versions: keras_supernet, Keras and TensorFlow versions.
    """

    space: dict
    space_name: str = "report"
    dataset: str = "mnist"
    data_dir: str = None
    input_shape: tuple = (28, 28, 1)
    num_classes: int = 10
    mode: str = "all"
    epochs: int = 15
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    paths: list = dataclasses.field(default_factory=list)
    eval_paths: list = None
    path_labels: dict = dataclasses.field(default_factory=dict)
    train_size: int = None
    val_size: int = 5000
    test_size: int = None
    split_seed: int = 0
    normalization: dict = None
    data_fingerprint: dict = None
    sampling: str = "uniform"
    path_dropout: float = 0.0
    branch_learning_rates: dict = dataclasses.field(default_factory=dict)
    bn_batches: int = 0
    strategy: str = "default"
    num_replicas: int = 1
    shard: str = None
    versions: dict = dataclasses.field(default_factory=dict)

    # Keys that must agree for a folder to be resumed or extended (and that
    # make numbers from two folders comparable in a report).
    RESUME_KEYS = (
        "space",
        "dataset",
        "input_shape",
        "num_classes",
        "batch_size",
        "learning_rate",
        "train_size",
        "val_size",
        "test_size",
        "split_seed",
        "sampling",
        "path_dropout",
        "branch_learning_rates",
        "bn_batches",
    )
    # Keys that make numbers from different folders comparable (a merged
    # report warns where they differ).
    COMPARABLE_KEYS = (
        "space",
        "dataset",
        "epochs",
        "batch_size",
        "learning_rate",
        "train_size",
        "val_size",
        "test_size",
    )
    # Training settings a comparison tells apart (keras_supernet.compare).
    RECIPE_KEYS = (
        "sampling",
        "path_dropout",
        "branch_learning_rates",
        "batch_size",
        "learning_rate",
        "epochs",
        "train_size",
        "optimizer",
    )

    def to_json(self):
        """The config as plain JSON data."""
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        return json.loads(json.dumps(data))

    @classmethod
    def from_json(cls, data):
        """A `RunConfig` from `results.json`'s `config`, of any version.

        Raises:
            RunFolderError: if `data` is not a config.
        """
        if not isinstance(data, dict):
            raise RunFolderError(f"Expected a config object, received {data!r}.")
        data = {**_OLD_DEFAULTS, **data}
        if "space" not in data:
            # keras_supernet 0.1.0/0.2.0: the report's preset, flat keys.
            preset = data.get("supernet_config") or {}
            data["space"] = {
                "preset": "report",
                **{
                    key: data.get(key, preset.get(key))
                    for key in _OLD_PRESET_KEYS
                    if data.get(key, preset.get(key)) is not None
                },
            }
            data.setdefault("space_name", "report")
            labels = data.get("path_labels")
            if isinstance(labels, list):
                data["path_labels"] = {str(i): label for i, label in enumerate(labels)}
            if data.get("eval_paths") is None and isinstance(labels, list):
                data["eval_paths"] = list(range(len(labels)))
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["input_shape"] = tuple(kwargs.get("input_shape", (28, 28, 1)))
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise RunFolderError(f"Invalid run config: {e}.") from None

    @property
    def version(self):
        """The keras_supernet version that made the folder."""
        return (self.versions or {}).get("keras_supernet", "0.1.0")

    def resume_view(self):
        """The values of `RESUME_KEYS`, as JSON data."""
        data = self.to_json()
        return {key: data.get(key) for key in self.RESUME_KEYS}

    def label(self, path):
        """The label of path index `path`, as recorded."""
        return self.path_labels.get(str(path), str(path))

    def mismatch(self, other):
        """The first `RESUME_KEYS` key on which two configs disagree, with
        both values, or None."""
        mine, theirs = self.resume_view(), other.resume_view()
        for key in self.RESUME_KEYS:
            if mine[key] != theirs[key]:
                return key, theirs[key], mine[key]
        return None


# === The folder ===


class RunFolder:
    """A training run folder: its files, runs and checkpoints.

    Args:
        path: the folder (it may not exist yet).
    """

    def __init__(self, path):
        if not path:
            raise RunFolderError(
                "Invalid value for argument `run_dir`. Expected a folder "
                f"path. Received run_dir={path!r}."
            )
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunFolder({self.path!r})"

    # --- Layout ---

    @property
    def results_path(self):
        return os.path.join(self.path, RESULTS_FILE)

    @property
    def report_path(self):
        return os.path.join(self.path, REPORT_FILE)

    @property
    def curves_path(self):
        return os.path.join(self.path, CURVES_FILE)

    @property
    def export_dir(self):
        """`bin/export`'s default destination: inside the run folder, never
        a folder the repository ships."""
        return os.path.join(self.path, EXPORT_DIR)

    def checkpoint_dir(self, mode, seed, path=None):
        """Folder of a run's per-epoch weights."""
        parts = [self.path, "checkpoints", mode, f"seed{seed}"]
        if mode == "standalone":
            parts.append(f"path{path}")
        return os.path.join(*parts)

    def state_dir(self, mode, seed, path=None):
        """Folder of a run's resume state."""
        return os.path.join(self.checkpoint_dir(mode, seed, path), "state")

    def weights_path(self, mode, seed, path, epoch):
        return os.path.join(
            self.checkpoint_dir(mode, seed, path), f"epoch_{epoch:03d}.weights.h5"
        )

    def tensorboard_dir(self, mode, seed, path=None, label=None):
        """TensorBoard folder of a path's series (or, with `path=None`, of
        the joint supernet's own series)."""
        base = os.path.join(self.path, "tensorboard", mode, f"seed{seed}")
        if path is None:
            return os.path.join(base, SUPERNET_LOG)
        return os.path.join(base, f"path{path}_{label.replace('->', '-')}")

    def kept_epochs(self, mode, seed, path=None):
        """The epochs whose weights are on disk, sorted."""
        folder = self.checkpoint_dir(mode, seed, path)
        if not os.path.isdir(folder):
            return []
        return sorted(
            int(m.group(1)) for m in map(_EPOCH_FILE.match, os.listdir(folder)) if m
        )

    # --- Checks ---

    def check_not_a_file(self, argument="output_dir"):
        """Raises unless the folder exists as a folder or not at all."""
        validation.output_dir(argument, self.path)

    def check_readable(self):
        """Raises `RunFolderError` unless the folder holds results.json."""
        if not os.path.isdir(self.path):
            raise RunFolderError(
                "Invalid value for argument `run_dir`. The folder does not "
                f"exist. Received run_dir={self.path!r}."
            )
        if not os.path.isfile(self.results_path):
            raise RunFolderError(
                f"Invalid value for argument `run_dir`. {self.path} has no "
                f"{RESULTS_FILE} (not a training run folder?). "
                f"Received run_dir={self.path!r}."
            )

    # --- results.json ---

    def read_results(self):
        """`(RunConfig, runs)` from results.json.

        Raises:
            RunFolderError: missing or unreadable file, or not results.
        """
        self.check_readable()
        data = read_json(self.results_path, RESULTS_FILE)
        try:
            config, runs = data["config"], data["runs"]
        except (KeyError, TypeError):
            raise RunFolderError(
                f"Cannot read {self.results_path}: expected JSON with "
                "`config` and `runs`."
            ) from None
        return RunConfig.from_json(config), list(runs)

    def write_results(self, config, runs):
        write_json(self.results_path, {"config": config.to_json(), "runs": runs})

    def find_run(self, runs, mode, seed, path):
        """The entry of run (mode, seed, path); the error lists the runs
        there are."""
        for entry in runs:
            if (entry.get("mode"), entry.get("seed"), entry.get("path")) == (
                mode,
                seed,
                path,
            ):
                return entry
        available = sorted(
            {(e.get("mode"), e.get("seed"), str(e.get("path"))) for e in runs},
            key=str,
        )
        listing = ", ".join(f"{m} seed {s} path {p}" for m, s, p in available) or "none"
        raise RunFolderError(
            f"No {mode} run of path {path} with seed {seed} in "
            f"{self.results_path}. Runs there: {listing}."
        )

    @staticmethod
    def resolve_epoch(epoch, entry):
        """An epoch number from `"best"`, `"last"` or a number."""
        if isinstance(epoch, str) and epoch.isdigit():
            epoch = int(epoch)
        if epoch == "best":
            if entry.get("best_epoch") is None:
                raise RunFolderError(
                    "The run has no best epoch yet (no epoch finished); pass "
                    "an epoch number or epoch='last'."
                )
            return int(entry["best_epoch"])
        if epoch == "last":
            epochs = [h["epoch"] for h in entry.get("history", [])]
            if not epochs:
                raise RunFolderError(
                    "The run has no finished epoch yet; nothing to load."
                )
            return int(max(epochs))
        if not validation.is_int(epoch) or epoch < 1:
            raise RunFolderError(
                "Invalid value for argument `epoch`. Expected 'best', 'last' "
                f"or a positive integer. Received epoch={epoch!r}."
            )
        return int(epoch)

    def checkpoint(self, mode, seed, path, epoch):
        """The weights file of an epoch; the error lists the kept epochs."""
        if not os.path.isdir(os.path.join(self.path, "checkpoints")):
            raise RunFolderError(
                f"Invalid value for argument `run_dir`. {self.path} has no "
                "checkpoints/ folder, so there are no weights. "
                f"Received run_dir={self.path!r}."
            )
        weights = self.weights_path(mode, seed, path, epoch)
        if not os.path.isfile(weights):
            kept = self.kept_epochs(mode, seed, path)
            raise RunFolderError(
                f"Epoch {epoch} of the {mode} run (seed {seed}"
                + (f", path {path}" if mode == "standalone" else "")
                + f") was not kept: no {weights}. Kept epochs: "
                f"{', '.join(map(str, kept)) or 'none'}."
            )
        return weights

    def best_joint_epoch(self, runs, seed):
        """The epoch where a joint run's mean validation accuracy over its
        evaluated paths peaks (the "best" epoch of a path it did not
        evaluate)."""
        histories = [
            r["history"]
            for r in runs
            if (r.get("mode"), r.get("seed")) == ("joint", seed)
        ]
        if not histories:
            self.find_run(runs, "joint", seed, None)
        length = min(len(h) for h in histories)
        means = np.mean(
            [[row["val_accuracy"] for row in h[:length]] for h in histories], axis=0
        )
        return int(np.argmax(means)) + 1

    def load(self, mode="joint", seed=0, path=None, epoch="best"):
        """A run's supernet at an epoch, with its weights.

        Args:
            mode: `"joint"` or `"standalone"`.
            seed: the run's seed.
            path: the path (any spelling of `SearchSpace`); a standalone run
                needs it, a joint run uses it to pick `"best"`.
            epoch: `"best"` (the epoch where `path` peaked on validation; for
                a path a joint run did not evaluate, where the mean over the
                evaluated paths peaked), `"last"`, or a number.

        Returns:
            A `LoadedRun`.

        Raises:
            RunFolderError: an unknown run, path or epoch, or weights that do
                not load.
        """
        from keras_supernet import presets

        validation.one_of("mode", mode, MODES)
        config, entries = self.read_results()
        supernet = presets.build_supernet(
            config.space,
            input_shape=config.input_shape,
            num_classes=config.num_classes,
            seed=seed,
            sampling="fixed",
        )
        index = None if path is None else supernet.resolve_path(path)
        if mode == "standalone" and index is None:
            raise RunFolderError(
                "Invalid value for argument `path`: a standalone run is one "
                "path's. Received path=None."
            )
        entry = None
        if index is not None:
            try:
                entry = self.find_run(entries, mode, seed, index)
            except RunFolderError:
                if mode == "standalone" or not any(
                    (r.get("mode"), r.get("seed")) == ("joint", seed) for r in entries
                ):
                    raise
        if entry is not None:
            epoch = self.resolve_epoch(epoch, entry)
        elif epoch == "best":
            epoch = self.best_joint_epoch(entries, seed)
        elif epoch == "last":
            kept = self.kept_epochs("joint", seed)
            if not kept:
                raise RunFolderError(
                    f"The joint run (seed {seed}) has no kept epoch yet."
                )
            epoch = kept[-1]
        else:
            epoch = self.resolve_epoch(epoch, {})
        weights = self.checkpoint(
            mode, seed, index if mode == "standalone" else None, epoch
        )
        try:
            supernet.load_weights(weights)
        except (OSError, ValueError) as e:
            raise RunFolderError(
                f"Cannot load checkpoint {weights}: {describe_error(e)}"
            ) from None
        if index is not None:
            supernet.set_path(index)
        return LoadedRun(supernet, config, mode, seed, index, epoch, weights, entry)

    # --- Resume state ---

    def scan_progress(self):
        """Every `(mode, seed, path-or-None)` -> progress found in the folder.

        Raises:
            CorruptStateError: an unreadable progress file.
        """
        found = {}
        pattern = os.path.join(
            self.path, "checkpoints", "*", "seed*", "**", "state", "progress.json"
        )
        for path in glob.glob(pattern, recursive=True):
            try:
                with open(path) as f:
                    progress = json.load(f)
                key = (progress["mode"], progress["seed"], progress.get("path"))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise CorruptStateError(
                    f"Resume progress {path} is unreadable "
                    f"({describe_error(e)}): delete the folder "
                    f"{os.path.dirname(path)} and run the same command again "
                    "(that run then trains again from epoch 1)."
                ) from e
            found[key] = progress
        return found


class LoadedRun:
    """A supernet loaded from a run folder at an epoch (`RunFolder.load`).

    Attributes:
        supernet, config: the supernet (the path active) and the RunConfig.
        mode, seed, path, epoch: which run, path index and epoch.
        weights: the weights file.
        entry: the run's entry in results.json for that path, or None.
    """

    def __init__(self, supernet, config, mode, seed, path, epoch, weights, entry):
        self.supernet, self.config = supernet, config
        self.mode, self.seed, self.path, self.epoch = mode, seed, path, epoch
        self.weights, self.entry = weights, entry

    @property
    def recalibrates(self):
        """Whether a path's BatchNorm statistics must be re-estimated: a
        joint supernet's mix every path that ran through them."""
        return self.mode == "joint" and self.supernet.has_batchnorm


# === Model state files ===


def state_variables(model):
    """Every variable of a run's state: the model's (the sampler's random
    state included) and the optimizer's."""
    return list(model.variables) + list(model.optimizer.variables)


def state_bytes(model):
    """Bytes of a run's state in memory."""
    return sum(np.asarray(v.numpy()).nbytes for v in state_variables(model))


def save_weights(model, path):
    """`model.save_weights(path)`, atomically."""
    with atomic_write(path) as tmp:
        model.save_weights(tmp)


def save_state(model, path):
    """Saves every state variable of `model` to `path` (npz), atomically."""
    arrays = {
        f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(state_variables(model))
    }
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _read_state(path, recovery):
    reason = None
    try:
        # np.load would read anything else as a pickle, and refuse it with a
        # message about pickles.
        if not zipfile.is_zipfile(path):
            reason = "truncated, or not an npz file"
        else:
            with np.load(path) as stored:
                return [stored[f"v{i:05d}"] for i in range(len(stored.files))]
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
    ) as e:
        reason = describe_error(e)
    raise CorruptStateError(
        f"Resume state {path} is unreadable ({reason}): delete {path} and run "
        f"the same command again ({recovery})."
    )


def restore_state(model, path, recovery="that run then trains again from epoch 1"):
    """Restores what `save_state` saved.

    Raises:
        CorruptStateError: the file cannot be read.
        RunFolderError: it holds another model's state.
    """
    variables = state_variables(model)
    stored = _read_state(path, recovery)
    if len(stored) != len(variables):
        raise RunFolderError(
            f"Resume state {path} holds {len(stored)} variables, the model has "
            f"{len(variables)}: the run folder belongs to another "
            "configuration or to an earlier keras_supernet (0.1.0 and 0.2.0 "
            "states cannot be resumed; their weights still load)."
        )
    for value, v in zip(stored, variables):
        if tuple(value.shape) != tuple(v.shape):
            raise RunFolderError(
                f"Resume state {path}: variable {v.path} has shape "
                f"{tuple(v.shape)}, stored {tuple(value.shape)}."
            )
        v.assign(value)
