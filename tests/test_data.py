"""Tests of keras_supernet.data on the committed MNIST subset and broken files."""

import gzip
import os
import shutil
import struct

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
    with pytest.raises(
        ValueError, match=r"`dataset`.*Received dataset='cifar10'"
    ):
        data.load_arrays("cifar10", data_dir=SMALL_DIR)


def test_missing_folder(tmp_path):
    with pytest.raises(
        data.DataError, match=r"Data folder .*nowhere does not exist"
    ):
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
    with pytest.raises(
        data.DataError, match="disagree: 500 images but 499 labels"
    ):
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
        f.write(
            open(path.replace("images-idx3", "labels-idx1"), "rb").read()[:50]
        )
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

    def fake_load(*args, **kwargs):
        raise ConnectionError("Failed to resolve host\nsecond line")

    monkeypatch.setattr(tfds, "load", fake_load)
    with pytest.raises(data.DataError) as info:
        data.load_arrays("mnist")
    assert str(info.value) == (
        "Cannot load dataset 'mnist' with tensorflow-datasets (pass --data_dir "
        "for an offline copy): Failed to resolve host"
    )
