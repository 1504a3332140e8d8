"""Tests of keras_supernet.data on the committed MNIST subset and broken files."""

import gzip
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_supernet import data

SMALL_DIR = os.path.join(os.path.dirname(__file__), "data", "mnist_small")


def _write_idx(path, array, compress=True):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    blob = struct.pack(">HBB", 0, 0x08, array.ndim)
    blob += struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()
    if compress:
        blob = gzip.compress(blob, mtime=0)
    with open(path, "wb") as f:
        f.write(blob)
    return blob


def _copy_small(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(SMALL_DIR, folder)
    return folder


def _file(folder, name):
    return os.path.join(folder, name)


# === Loading ===


def test_load_small_subset_shapes_and_dtypes():
    arrays = data.load_arrays("mnist", data_dir=SMALL_DIR)
    x, y = arrays["train"]
    assert x.shape == (2000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (2000,) and y.dtype == np.int64
    x_test, y_test = arrays["test"]
    assert x_test.shape == (500, 28, 28) and y_test.shape == (500,)
    assert set(np.unique(y)) == set(range(10))
    assert 0 < x.mean() < 255 and x.max() == 255


def test_raw_and_gzip_files_give_the_same_arrays(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in os.listdir(SMALL_DIR):
        with gzip.open(os.path.join(SMALL_DIR, name)) as f:
            (folder / name[: -len(".gz")]).write_bytes(f.read())
    raw = data.load_arrays("mnist", data_dir=folder)
    gz = data.load_arrays("mnist", data_dir=SMALL_DIR)
    for split in ("train", "test"):
        np.testing.assert_array_equal(raw[split][0], gz[split][0])
        np.testing.assert_array_equal(raw[split][1], gz[split][1])


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"`dataset`.*Received dataset='cifar10'"):
        data.load_arrays("cifar10", data_dir=SMALL_DIR)


def test_missing_folder(tmp_path):
    with pytest.raises(data.DataError, match=r"Data folder .*nowhere does not exist"):
        data.load_arrays("mnist", data_dir=tmp_path / "nowhere")


def test_folder_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(data.DataError, match="is not a folder"):
        data.load_arrays("mnist", data_dir=path)


def test_missing_file(tmp_path):
    folder = _copy_small(tmp_path)
    os.remove(_file(folder, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(
        data.DataError,
        match=r"t10k-labels-idx1-ubyte\.gz \(or t10k-labels-idx1-ubyte\) not found",
    ):
        data.load_arrays("mnist", data_dir=folder)


def test_truncated_gzip(tmp_path):
    folder = _copy_small(tmp_path)
    path = _file(folder, "train-images-idx3-ubyte.gz")
    blob = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])
    with pytest.raises(
        data.DataError, match=r"train-images-idx3-ubyte\.gz is truncated"
    ):
        data.load_arrays("mnist", data_dir=folder)


def test_truncated_payload(tmp_path):
    folder = _copy_small(tmp_path)
    path = _file(folder, "train-images-idx3-ubyte.gz")
    with gzip.open(path) as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(gzip.compress(blob[:-100]))
    with pytest.raises(
        data.DataError,
        match=r"is truncated: header promises shape \(2000, 28, 28\) \(1568000 bytes of data\), found 1567900",
    ):
        data.load_arrays("mnist", data_dir=folder)


def test_truncated_header(tmp_path):
    folder = _copy_small(tmp_path)
    path = _file(folder, "t10k-labels-idx1-ubyte.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(b"\x00\x00\x08\x01\x00"))
    with pytest.raises(
        data.DataError, match="is truncated: 5 bytes, the header alone needs 8"
    ):
        data.load_arrays("mnist", data_dir=folder)


def test_empty_file(tmp_path):
    folder = _copy_small(tmp_path)
    os.remove(_file(folder, "t10k-labels-idx1-ubyte.gz"))
    open(_file(folder, "t10k-labels-idx1-ubyte"), "wb").close()
    with pytest.raises(data.DataError, match="is truncated: 0 bytes"):
        data.load_arrays("mnist", data_dir=folder)


def test_corrupt_gzip(tmp_path):
    folder = _copy_small(tmp_path)
    path = _file(folder, "train-labels-idx1-ubyte.gz")
    blob = bytearray(open(path, "rb").read())
    blob[20:60] = b"\xff" * 40
    with open(path, "wb") as f:
        f.write(bytes(blob))
    with pytest.raises(
        data.DataError,
        match=r"train-labels-idx1-ubyte\.gz is a corrupt gzip file",
    ):
        data.load_arrays("mnist", data_dir=folder)


def test_gz_name_without_gzip_content(tmp_path):
    folder = _copy_small(tmp_path)
    path = _file(folder, "t10k-images-idx3-ubyte.gz")
    with open(path, "wb") as f:
        f.write(b"plain text, not gzip")
    with pytest.raises(data.DataError, match="is not a valid gzip file"):
        data.load_arrays("mnist", data_dir=folder)


def test_bad_magic(tmp_path):
    folder = _copy_small(tmp_path)
    path = _file(folder, "t10k-images-idx3-ubyte.gz")
    with gzip.open(path) as f:
        blob = bytearray(f.read())
    blob[2] = 0x0D  # float32 instead of unsigned bytes
    with open(path, "wb") as f:
        f.write(gzip.compress(bytes(blob)))
    with pytest.raises(data.DataError, match=r"bad magic number 0x00000d03"):
        data.load_arrays("mnist", data_dir=folder)


def test_wrong_number_of_dimensions(tmp_path):
    folder = _copy_small(tmp_path)
    _write_idx(_file(folder, "t10k-labels-idx1-ubyte.gz"), np.zeros((500, 2)))
    with pytest.raises(data.DataError, match="has 2 dimensions, expected 1"):
        data.load_arrays("mnist", data_dir=folder)


def test_trailing_bytes(tmp_path):
    folder = _copy_small(tmp_path)
    path = _file(folder, "t10k-labels-idx1-ubyte.gz")
    with gzip.open(path) as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(gzip.compress(blob + b"\x00\x00\x00"))
    with pytest.raises(data.DataError, match="3 unexpected trailing bytes"):
        data.load_arrays("mnist", data_dir=folder)


def test_label_image_count_mismatch(tmp_path):
    folder = _copy_small(tmp_path)
    _write_idx(_file(folder, "t10k-labels-idx1-ubyte.gz"), np.zeros(499))
    with pytest.raises(data.DataError, match="disagree: 500 images but 499 labels"):
        data.load_arrays("mnist", data_dir=folder)


def test_label_out_of_range(tmp_path):
    folder = _copy_small(tmp_path)
    _write_idx(_file(folder, "t10k-labels-idx1-ubyte.gz"), np.full(500, 12))
    with pytest.raises(
        data.DataError, match=r"holds label 12, expected labels in \[0, 9\]"
    ):
        data.load_arrays("mnist", data_dir=folder)


def test_error_messages_are_one_line(tmp_path):
    folder = _copy_small(tmp_path)
    path = _file(folder, "train-images-idx3-ubyte.gz")
    with open(path, "wb") as f:
        f.write(open(path.replace("images-idx3", "labels-idx1"), "rb").read()[:50])
    with pytest.raises(data.DataError) as info:
        data.load_arrays("mnist", data_dir=folder)
    assert "\n" not in str(info.value)


# === Splits and normalisation ===


def test_split_validation_is_seeded_and_disjoint():
    x = np.arange(100)
    y = np.arange(100) % 10
    (x_tr, y_tr), (x_val, y_val) = data.split_validation(x, y, 20, seed=3)
    assert len(x_tr) == 80 and len(x_val) == 20
    assert not set(x_tr) & set(x_val)
    np.testing.assert_array_equal(y_val, x_val % 10)
    (x_tr2, _), (x_val2, _) = data.split_validation(x, y, 20, seed=3)
    np.testing.assert_array_equal(x_val, x_val2)
    np.testing.assert_array_equal(x_tr, x_tr2)
    (_, _), (x_val3, _) = data.split_validation(x, y, 20, seed=4)
    assert set(x_val3) != set(x_val)


@pytest.mark.parametrize("val_size", [0, 100, -1, 2.5, True])
def test_split_validation_rejects_bad_size(val_size):
    with pytest.raises(ValueError, match="`val_size`"):
        data.split_validation(np.zeros(100), np.zeros(100), val_size, seed=0)


def test_normalization_stats_on_full_scale():
    x = np.array([[0, 255], [0, 255]], dtype=np.uint8)
    mean, std = data.normalization_stats(x)
    assert mean == pytest.approx(0.5)
    assert std == pytest.approx(0.5)


def test_pipeline_normalises_training_split():
    x, y = data.load_arrays("mnist", data_dir=SMALL_DIR)["train"]
    (x_tr, y_tr), _ = data.split_validation(x, y, 200, seed=0)
    mean, std = data.normalization_stats(x_tr)
    assert 0.11 < mean < 0.15 and 0.29 < std < 0.33
    ds = data.make_dataset(x_tr, y_tr, 64, mean, std)
    images, labels = next(iter(ds))
    assert images.shape == (64, 28, 28, 1) and images.dtype.name == "float32"
    assert labels.shape == (64,) and labels.dtype.name == "int32"
    all_images = np.concatenate([b.numpy() for b, _ in ds])
    all_labels = np.concatenate([b.numpy() for _, b in ds])
    assert all_images.shape == (1800, 28, 28, 1)
    assert abs(all_images.mean()) < 1e-4
    assert all_images.std() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(all_labels, y_tr)


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
    x = np.repeat(np.arange(50, dtype=np.uint8), 4).reshape(50, 2, 2)
    y = np.arange(50)

    def epoch_orders(seed):
        ds = data.make_dataset(x, y, 10, 0.0, 1.0, shuffle=True, seed=seed)
        return [np.concatenate([b.numpy() for _, b in ds]) for _ in range(2)]

    first, second = epoch_orders(7)
    assert sorted(first) == list(range(50))
    assert not np.array_equal(first, np.arange(50))
    assert not np.array_equal(first, second)
    again_first, again_second = epoch_orders(7)
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
    other, _ = epoch_orders(8)
    assert not np.array_equal(first, other)


def test_epoch_seed_depends_on_seed_and_epoch():
    seeds = {data.epoch_seed(s, e) for s in range(3) for e in range(5)}
    assert len(seeds) == 15
    assert data.epoch_seed(1, 2) == data.epoch_seed(1, 2)


def test_make_dataset_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="Received batch_size=0"):
        data.make_dataset(np.zeros((4, 2, 2)), np.zeros(4), 0, 0.0, 1.0)


# === tensorflow-datasets ===


def test_tfds_arrays_lose_the_channel_axis(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "host_reachable", lambda url: True)
    calls = []

    def fake_load(name, split, batch_size, as_supervised):
        calls.append((name, tuple(split), batch_size, as_supervised))
        images = np.zeros((6, 28, 28, 1), np.uint8)
        return [(images, np.arange(6)), (images[:2], np.arange(2))]

    monkeypatch.setattr(tfds, "load", fake_load)
    arrays = data.load_arrays("fashion_mnist")
    assert calls == [("fashion_mnist", ("train", "test"), -1, True)]
    assert arrays["train"][0].shape == (6, 28, 28)
    assert arrays["test"][1].dtype == np.int64


def test_tfds_failure_is_one_line_data_error(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "host_reachable", lambda url: True)

    def fake_load(*args, **kwargs):
        raise ConnectionError("Failed to resolve host\nsecond line")

    monkeypatch.setattr(tfds, "load", fake_load)
    with pytest.raises(data.DataError) as info:
        data.load_arrays("mnist")
    assert str(info.value) == (
        "Cannot load dataset 'mnist' with tensorflow-datasets (pass --data_dir "
        "for an offline copy): Failed to resolve host"
    )


def _mnist_metadata(tfds, folder, train, test):
    """dataset_info.json and features.json of MNIST with the given split sizes."""
    builder = tfds.builder("mnist", data_dir=str(folder))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(
                    name=name, shard_lengths=[n], num_bytes=0, filename_template=None
                )
                for name, n in (("train", train), ("test", test))
            ]
        )
    )
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)


def test_tfds_mock_data_goes_through_the_real_tfds_load(tmp_path):
    """tfds's own `load` (builder, as_dataset, batch_size=-1, as_supervised)
    runs on generated examples; only the files are mocked, not `tfds.load`."""
    tfds = pytest.importorskip("tensorflow_datasets")
    # Metadata with split sizes: without them tfds batches the whole split
    # with a batch of sys.maxsize, which aborts TensorFlow.
    _mnist_metadata(tfds, tmp_path, train=12, test=5)
    with tfds.testing.mock_data(
        num_examples=7,
        policy=tfds.testing.MockPolicy.USE_FILES,
        data_dir=str(tmp_path),
    ):
        arrays = data.load_arrays("mnist", data_dir=None)
    for split in ("train", "test"):
        x, y = arrays[split]
        assert x.shape == (7, 28, 28) and x.dtype == np.uint8
        assert y.shape == (7,) and y.dtype == np.int64
        assert 0 <= y.min() and y.max() < data.NUM_CLASSES
        assert x.max() > 0


def _declared_distributions(pyproject):
    """Canonical names of every distribution `pip install` of `pyproject`
    brings in: its dependencies and theirs, markers and extras evaluated."""
    import importlib.metadata as metadata

    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with open(pyproject, "rb") as f:
        pending = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    found = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in found and extras <= found[name]:
            continue
        found[name] = found.get(name, set()) | extras
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            if child.marker is None or any(
                child.marker.evaluate({"extra": extra}) for extra in found[name] | {""}
            ):
                pending.append(child)
    return set(found)


# Runs tensorflow-datasets' real download_and_prepare and load of MNIST with
# only the download replaced by local IDX files of MNIST's sizes, and prints
# the distributions of the modules that tensorflow-datasets imported.
_PREPARE_SCRIPT = textwrap.dedent(
    """
    import importlib.metadata, json, os, struct, sys
    from unittest import mock
    import numpy as np
    from keras_supernet import data

    folder = sys.argv[1]
    files = {}
    for split, n in (("train", 60000), ("test", 10000)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0] = labels
        for key, array in (("data", images), ("labels", labels)):
            files[f"{split}_{key}"] = path = os.path.join(folder, f"{split}_{key}")
            with open(path, "wb") as f:
                f.write(struct.pack(">HBB", 0, 8, array.ndim))
                f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
                f.write(array.tobytes())
    before = set(sys.modules)
    import tensorflow_datasets as tfds

    def download_and_extract(self, urls):
        return {key: files[key] for key in urls}

    with mock.patch.object(data, "host_reachable", lambda url: True), \
            mock.patch.object(tfds.download.DownloadManager,
                              "download_and_extract", download_and_extract):
        arrays = data.load_arrays("mnist", data_dir=None)
    owners = importlib.metadata.packages_distributions()
    imported = {name.split(".")[0] for name in set(sys.modules) - before}
    print(json.dumps({
        "shapes": {k: [list(x.shape), list(y.shape)] for k, (x, y) in arrays.items()},
        "labels": sorted(set(arrays["train"][1].tolist())),
        "modules": {m: owners[m] for m in sorted(imported) if m in owners},
    }))
    """
)


@pytest.mark.slow
def test_tfds_prepare_offline_needs_only_declared_dependencies(tmp_path):
    """The path a fresh `pip install -e .` takes without --data_dir imports
    nothing that pyproject.toml does not bring in (tensorflow-datasets 4.9
    imports importlib_resources without declaring it)."""
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tomllib")
    from packaging.utils import canonicalize_name

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        TFDS_DATA_DIR=str(tmp_path / "tensorflow_datasets"),
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=root,
    )
    result = subprocess.run(
        [sys.executable, "-c", _PREPARE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shapes"] == {
        "train": [[60000, 28, 28], [60000]],
        "test": [[10000, 28, 28], [10000]],
    }
    assert report["labels"] == list(range(10))
    declared = _declared_distributions(os.path.join(root, "pyproject.toml"))
    undeclared = {
        module: owners
        for module, owners in report["modules"].items()
        if not {canonicalize_name(o) for o in owners} & declared
    }
    assert not undeclared, undeclared


def test_host_reachable_is_quick_either_way():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        assert data.host_reachable(f"http://127.0.0.1:{port}/x", timeout=5)
    finally:
        server.close()
    start = time.monotonic()
    assert not data.host_reachable(f"http://127.0.0.1:{port}/x", timeout=5)
    assert time.monotonic() - start < 5


def test_host_reachable_goes_through_the_proxy(monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setenv("https_proxy", proxy)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        # An unresolvable host, reached through the proxy.
        assert data.host_reachable("https://host.invalid/data", timeout=5)
    finally:
        server.close()
