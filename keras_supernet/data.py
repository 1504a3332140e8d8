"""Dataset loading and `tf.data` pipelines for the supernet experiments.

Two sources give the same arrays: a folder with the four standard IDX files
(`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`, gzip-compressed or
raw), or tensorflow-datasets when no folder is given. Every problem with the
files (missing, truncated, corrupt gzip, bad header, mismatched counts) is
reported as a `DataError` with a one-line message that names the file.

Normalisation is the only preprocessing: pixels are scaled to [0, 1], then
standardised with the mean and standard deviation of the training split.

Example:

```python
arrays = load_arrays("mnist", data_dir="../shared/data/mnist")
(x_tr, y_tr), (x_val, y_val) = split_validation(*arrays["train"], 5000, seed=0)
mean, std = normalization_stats(x_tr)
train_ds = make_dataset(x_tr, y_tr, 128, mean, std, shuffle=True, seed=0)
```
"""

import gzip
import hashlib
import os
import socket
import struct
import threading
import urllib.parse
import urllib.request
import zlib

import numpy as np
import tensorflow as tf

from keras_supernet import validation

DATASETS = ("mnist", "fashion_mnist")
NUM_CLASSES = 10
# The splits of an experiment, in the order of `load_splits`.
SPLITS = ("train", "val", "test")

# Standard IDX file names of both MNIST and Fashion-MNIST, per split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A dataset file or folder is missing, unreadable or malformed."""


# === IDX files ===


def _find_idx_file(data_dir, name):
    """Returns the path of `name` or `name.gz` in `data_dir` (gzip first)."""
    for candidate in (name + ".gz", name):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise DataError(
        f"IDX file {name}.gz (or {name}) not found in data folder {data_dir}."
    )


def _read_bytes(path):
    """Reads a file, decompressing it when it starts with the gzip magic."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"Cannot read IDX file {path}: {e.strerror or e}.") from e
    if raw[:2] != _GZIP_MAGIC:
        if path.endswith(".gz"):
            raise DataError(
                f"IDX file {path} is not a valid gzip file "
                f"(starts with {raw[:2].hex() or 'nothing'}, expected 1f8b)."
            )
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise DataError(
            f"IDX file {path} is truncated: the gzip stream ends early ({e})."
        ) from e
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"IDX file {path} is a corrupt gzip file: {e}.") from e


def read_idx(path, ndim=None):
    """Reads one IDX file of unsigned bytes into a numpy array.

    Args:
        path: path to the file, gzip-compressed or raw.
        ndim: expected number of dimensions (3 for images, 1 for labels), or
            `None` to accept any.

    Returns:
        A `uint8` numpy array with the shape stored in the header.

    Raises:
        DataError: the file cannot be read, is not gzip although named `.gz`,
            is truncated, has a bad magic number, an unexpected number of
            dimensions, or a payload whose length does not match the header.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(
            f"IDX file {path} is truncated: {len(data)} bytes, "
            "too short for the 4-byte magic number."
        )
    zero, dtype_code, file_ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != _IDX_UBYTE or file_ndim == 0:
        raise DataError(
            f"IDX file {path} has a bad magic number 0x{data[:4].hex()} "
            f"(expected 0x000008NN, unsigned bytes)."
        )
    if ndim is not None and file_ndim != ndim:
        raise DataError(f"IDX file {path} has {file_ndim} dimensions, expected {ndim}.")
    header_size = 4 + 4 * file_ndim
    if len(data) < header_size:
        raise DataError(
            f"IDX file {path} is truncated: {len(data)} bytes, "
            f"the header alone needs {header_size}."
        )
    shape = struct.unpack(">" + "I" * file_ndim, data[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(data) - header_size
    if payload < expected:
        raise DataError(
            f"IDX file {path} is truncated: header promises shape {shape} "
            f"({expected} bytes of data), found {payload}."
        )
    if payload > expected:
        raise DataError(
            f"IDX file {path} has {payload - expected} unexpected trailing bytes "
            f"after the {expected} bytes of data for shape {shape}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _load_idx_split(data_dir, split):
    images_name, labels_name = IDX_FILES[split]
    images_path = _find_idx_file(data_dir, images_name)
    labels_path = _find_idx_file(data_dir, labels_name)
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"IDX files {images_path} and {labels_path} disagree: "
            f"{images.shape[0]} images but {labels.shape[0]} labels."
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(
            f"IDX file {labels_path} holds label {int(labels.max())}, "
            f"expected labels in [0, {NUM_CLASSES - 1}]."
        )
    return images, labels.astype(np.int64)


# Where tensorflow-datasets downloads each dataset from (the `URL`s of its
# builders), for the quick reachability check before a download.
TFDS_DOWNLOAD_URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
# Seconds the reachability check waits for a connection (name lookup
# included) before it concludes that the machine is offline.
REACHABILITY_TIMEOUT = 5.0


def host_reachable(url, timeout=REACHABILITY_TIMEOUT):
    """Whether a TCP connection to the host of `url` opens within `timeout`.

    Behind a proxy (`https_proxy`/`http_proxy`), the proxy is what must be
    reached. The name lookup runs in a daemon thread: `socket` has no timeout
    for it, and a resolver that does not answer must not hold the caller.
    """
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else "//" + proxy)
    default_port = 443 if parts.scheme == "https" else 80
    address = (parts.hostname, parts.port or default_port)
    outcome = []

    def probe():
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(outcome) and outcome[0]


def _load_tfds(dataset):
    # Imported here: tensorflow-datasets is slow to import and only needed
    # when no IDX folder is given.
    import tensorflow_datasets as tfds

    prefix = (
        f"Cannot load dataset {dataset!r} with tensorflow-datasets "
        "(pass --data_dir for an offline copy)"
    )
    try:
        builder = tfds.builder(dataset)
        # `is_prepared` logs a warning for a missing folder: look first.
        prepared = builder.data_path.exists() and builder.is_prepared()
    except Exception as e:  # a missing dependency, an unreadable folder...
        raise DataError(f"{prefix}: {_first_line(e)}") from e
    # Offline, tfds retries every download with back-off for minutes before
    # it gives up; a quick check says at once what to do instead.
    url = TFDS_DOWNLOAD_URLS[dataset]
    if not prepared and not host_reachable(url):
        raise DataError(
            f"Cannot load dataset {dataset!r}: it is not in the "
            f"tensorflow-datasets folder {builder.data_dir_root} and "
            f"{urllib.parse.urlsplit(url).hostname} cannot be reached (no "
            "network?); pass --data_dir=<folder with the four IDX files> to "
            "use an offline copy."
        )
    try:
        splits = tfds.load(
            dataset, split=["train", "test"], batch_size=-1, as_supervised=True
        )
    except Exception as e:  # tfds raises many types (network, download, ...)
        raise DataError(f"{prefix}: {_first_line(e)}") from e
    arrays = {}
    for split, (images, labels) in zip(("train", "test"), splits):
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        arrays[split] = (images, np.asarray(labels, dtype=np.int64))
    return arrays


def _first_line(error):
    message = str(error).strip()
    return message.splitlines()[0] if message else repr(error)


def load_arrays(dataset="mnist", data_dir=None):
    """Loads the train and test splits as numpy arrays.

    Args:
        dataset: `"mnist"` or `"fashion_mnist"`.
        data_dir: folder with the four standard IDX files (gzip or raw). When
            `None`, the dataset is loaded with tensorflow-datasets (which may
            need the network).

    Returns:
        `{"train": (x, y), "test": (x, y)}` with `x` of dtype `uint8` and
        shape `[N, 28, 28]`, `y` of dtype `int64` and shape `[N]`.

    Raises:
        ValueError: unknown `dataset`.
        DataError: missing folder or file, or a malformed IDX file.
    """
    if dataset not in DATASETS:
        raise ValueError(
            f"Invalid value for argument `dataset`. Expected one of {DATASETS}. "
            f"Received dataset={dataset!r}."
        )
    if data_dir is None:
        return _load_tfds(dataset)
    data_dir = os.fspath(data_dir)
    if not os.path.exists(data_dir):
        raise DataError(f"Data folder {data_dir} does not exist.")
    if not os.path.isdir(data_dir):
        raise DataError(f"Data folder {data_dir} is not a folder.")
    return {split: _load_idx_split(data_dir, split) for split in IDX_FILES}


# === Splits and normalisation ===


def split_validation(x, y, val_size, seed):
    """Holds out a seeded random validation split from a training set.

    Both parts keep the original order of the examples, so the split depends
    on `seed` only, never on how the arrays will later be shuffled.

    Args:
        x: images, first axis is the example axis.
        y: labels, same length as `x`.
        val_size: number of validation examples, `0 < val_size < len(x)`.
        seed: integer seed of the split.

    Returns:
        `((x_train, y_train), (x_val, y_val))`.

    Raises:
        ValueError: `val_size` out of range or `x` and `y` of different length.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(
            f"`x` and `y` must have the same length. Received {n} and {len(y)}."
        )
    if not validation.is_int(val_size) or not 0 < val_size < n:
        raise ValueError(
            "Invalid value for argument `val_size`. Expected an integer in "
            f"[1, {n - 1}] (the training set has {n} examples). "
            f"Received val_size={val_size!r}."
        )
    order = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(order[:val_size])
    train_idx = np.sort(order[val_size:])
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def normalization_stats(x):
    """Returns the pixel mean and standard deviation of `uint8` images.

    Computed in [0, 1] pixel units, e.g. about `(0.1307, 0.3081)` on the MNIST
    training set. Use the statistics of the training split for every split.
    """
    x = np.asarray(x)
    if x.size == 0:
        raise ValueError("Cannot compute normalisation statistics of an empty array.")
    scaled = x.astype(np.float64) / 255.0
    mean = float(scaled.mean())
    std = float(scaled.std())
    if std == 0.0:
        raise ValueError("Cannot normalise: all pixels have the same value.")
    return mean, std


# === tf.data ===


def make_dataset(x, y, batch_size, mean, std, shuffle=False, seed=None):
    """Builds a batched `tf.data` pipeline of normalised images.

    The pipeline normalises (`(x / 255 - mean) / std`), adds the channel axis,
    caches the normalised examples in memory, shuffles (when asked) with a
    seeded full-size buffer that reshuffles on every pass, batches and
    prefetches. With the same `seed`, the n-th pass over the dataset always
    sees the same order; to make an epoch's order independent of how many
    passes came before (exact resume), build one dataset per epoch with a
    seed derived from the epoch, e.g. with `epoch_seed`.

    Args:
        x: `uint8` images `[N, H, W]`.
        y: integer labels `[N]`.
        batch_size: positive batch size; the last batch may be smaller.
        mean: pixel mean in [0, 1] units (from `normalization_stats`).
        std: pixel standard deviation in [0, 1] units.
        shuffle: whether to shuffle the examples.
        seed: shuffle seed (an integer); required for reproducible runs.

    Returns:
        A `tf.data.Dataset` of `(float32[b, H, W, 1], int32[b])`.
    """
    validation.positive_int("batch_size", batch_size)
    if len(x) != len(y):
        raise ValueError(
            f"`x` and `y` must have the same length. Received {len(x)} and {len(y)}."
        )
    mean = float(mean)
    std = float(std)

    def normalise(image, label):
        image = (tf.cast(image, tf.float32) / 255.0 - mean) / std
        return image[..., tf.newaxis], tf.cast(label, tf.int32)

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x), np.asarray(y)))
    ds = ds.map(normalise, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


def epoch_seed(seed, epoch):
    """Shuffle seed of one epoch: a fixed function of the run seed and epoch."""
    return int(
        np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0]
        & 0x7FFFFFFF
    )


def fingerprint(splits):
    """A cheap identity of an experiment's data, as recorded in results.json.

    Args:
        splits: `((x_train, y_train), (x_val, y_val), (x_test, y_test))` as
            returned by `load_splits`.

    Returns:
        `{"train": n, "val": n, "test": n, "sha256": hex}`: the sizes of the
        splits and a sha256 of every array's dtype, shape and bytes (about
        0.1 s for MNIST). Relabelled, reordered or other images give another
        digest.
    """
    digest = hashlib.sha256()
    for pair in splits:
        for array in pair:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.data)
    sizes = {name: int(len(x)) for name, (x, _) in zip(SPLITS, splits)}
    return dict(sizes, sha256=digest.hexdigest())


def load_splits(dataset, data_dir, val_size, train_size, split_seed):
    """The training, validation and test arrays of an experiment.

    The validation split (`val_size` examples, seeded by `split_seed`) is
    held out from the training set; `train_size` (None for all) then cuts
    what is left.

    Returns:
        `((x_train, y_train), (x_val, y_val), (x_test, y_test))`.

    Raises:
        ValueError: if `val_size` or `train_size` do not fit the data.
        DataError: missing or malformed data files.
    """
    arrays = load_arrays(dataset, data_dir)
    x_all, y_all = arrays["train"]
    if val_size >= len(x_all):
        raise ValueError(
            f"Invalid value for argument `val_size`. Expected fewer than the "
            f"{len(x_all)} training examples. Received val_size={val_size}."
        )
    (x_tr, y_tr), (x_val, y_val) = split_validation(x_all, y_all, val_size, split_seed)
    if train_size is not None:
        if train_size > len(x_tr):
            raise ValueError(
                f"Invalid value for argument `train_size`. Expected at most "
                f"{len(x_tr)} (training examples left after the validation "
                f"split). Received train_size={train_size}."
            )
        x_tr, y_tr = x_tr[:train_size], y_tr[:train_size]
    return (x_tr, y_tr), (x_val, y_val), arrays["test"]
