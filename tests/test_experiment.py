"""End-to-end tests of keras_supernet.experiment on the committed MNIST subset."""

import errno
import glob
import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_supernet import data
from keras_supernet import experiment
from keras_supernet import presets
from keras_supernet import runs
from keras_supernet import training

SMALL_DIR = os.path.join(os.path.dirname(__file__), "data", "mnist_small")
TINY = dict(
    dataset="mnist",
    data_dir=SMALL_DIR,
    batch_size=64,
    learning_rate=3e-3,
    seeds=(0,),
    train_size=1000,
    val_size=300,
    verbose=0,
)
NUMBERS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "train_accuracy",
)


def _numbers(results):
    return {
        (r["mode"], r["seed"], r["path"]): [
            [row[k] for k in NUMBERS] for row in r["history"]
        ]
        for r in results["runs"]
    }


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted two-epoch run of both modes."""
    output_dir = str(tmp_path_factory.mktemp("full"))
    results = experiment.run_experiment(
        mode="all", epochs=2, output_dir=output_dir, **TINY
    )
    return output_dir, results


# === A complete run ===


@pytest.mark.slow
def test_results_schema(full_run):
    output_dir, results = full_run
    with open(os.path.join(output_dir, "results.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(results))
    config = on_disk["config"]
    for key in (
        "space",
        "space_name",
        "dataset",
        "num_classes",
        "input_shape",
        "epochs",
        "batch_size",
        "learning_rate",
        "seeds",
        "paths",
        "eval_paths",
        "path_labels",
        "train_size",
        "val_size",
        "normalization",
        "data_fingerprint",
        "bn_batches",
        "versions",
    ):
        assert key in config, key
    # One representation of the architecture: the space.
    assert config["space"] == {
        "preset": "report",
        "kernel_sizes": [[3, 5], [3, 5]],
        "filters": [16, 32],
        "hidden_units": 128,
        "padding": "valid",
    }
    assert "kernel_sizes" not in config and "supernet_config" not in config
    assert config["eval_paths"] == [0, 1, 2, 3] and config["bn_batches"] == 0
    assert (
        config["train_size"] == 1000
        and config["val_size"] == 300
        and config["test_size"] == 500
    )
    assert config["epochs"] == 2 and config["seeds"] == [0] and config["mode"] == "all"
    assert 0.1 < config["normalization"]["mean"] < 0.15
    assert 0.28 < config["normalization"]["std"] < 0.33

    runs = on_disk["runs"]
    assert [(r["mode"], r["path"]) for r in runs] == [
        ("joint", p) for p in range(4)
    ] + [("standalone", p) for p in range(4)]
    labels = ["3x3->3x3", "3x3->5x5", "5x5->3x3", "5x5->5x5"]
    for run in runs:
        assert run["complete"] is True
        assert run["label"] == labels[run["path"]]
        assert run["indices"] == [run["path"] // 2, run["path"] % 2]
        history = run["history"]
        assert [row["epoch"] for row in history] == [1, 2]
        val = [row["val_accuracy"] for row in history]
        assert run["best_epoch"] == int(np.argmax(val)) + 1
        assert run["best_val_accuracy"] == max(val)
        assert run["test_accuracy"] == history[run["best_epoch"] - 1]["test_accuracy"]
        assert run["final_test_accuracy"] == history[-1]["test_accuracy"]
        assert (
            0
            < history[0]["seconds"]
            < history[1]["seconds"]
            == pytest.approx(run["train_seconds"], abs=1e-2)
        )
        # Far above chance (0.1) after two epochs on 1000 images.
        assert run["best_val_accuracy"] > 0.5, run
        assert os.path.isfile(os.path.join(output_dir, run["best_weights"]))
    joint_seconds = {r["train_seconds"] for r in runs if r["mode"] == "joint"}
    assert len(joint_seconds) == 1  # one joint run trains every path


@pytest.mark.slow
def test_checkpoints_and_tensorboard_layout(full_run):
    output_dir, _ = full_run
    joint = os.path.join(output_dir, "checkpoints", "joint", "seed0")
    assert sorted(os.listdir(joint)) == [
        "epoch_001.weights.h5",
        "epoch_002.weights.h5",
        "state",
    ]
    for p in range(4):
        folder = os.path.join(
            output_dir, "checkpoints", "standalone", "seed0", f"path{p}"
        )
        assert os.path.isfile(os.path.join(folder, "epoch_002.weights.h5"))
        assert sorted(os.listdir(os.path.join(folder, "state"))) == [
            "epoch_002.npz",
            "progress.json",
        ]
    assert not glob.glob(os.path.join(output_dir, "**", ".tmp-*"), recursive=True)
    for mode in ("joint", "standalone"):
        runs = sorted(
            os.listdir(os.path.join(output_dir, "tensorboard", mode, "seed0"))
        )
        assert runs == [
            "path0_3x3-3x3",
            "path1_3x3-5x5",
            "path2_5x5-3x3",
            "path3_5x5-5x5",
        ] + (["supernet"] if mode == "joint" else [])
        for run in runs:
            assert glob.glob(
                os.path.join(output_dir, "tensorboard", mode, "seed0", run, "events.*")
            )


def _scalars(folder):
    """`{tag: [step, ...]}` of the TensorBoard events in `folder`."""
    import tensorflow as tf

    found = {}
    for path in glob.glob(os.path.join(folder, "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(event.step)
    return found


@pytest.mark.slow
def test_tensorboard_logs_the_joint_training_loss_once(full_run):
    output_dir, _ = full_run
    joint = os.path.join(output_dir, "tensorboard", "joint", "seed0")
    assert _scalars(os.path.join(joint, "supernet")) == {"train_loss": [1, 2]}
    path = _scalars(os.path.join(joint, "path2_5x5-3x3"))
    assert "train_loss" not in path and path["val_accuracy"] == [1, 2]
    alone = os.path.join(output_dir, "tensorboard", "standalone", "seed0")
    assert _scalars(os.path.join(alone, "path2_5x5-3x3"))["train_loss"] == [1, 2]


@pytest.mark.slow
def test_readme_says_when_the_test_set_is_evaluated(full_run):
    _, results = full_run
    assert all("test_accuracy" in row for r in results["runs"] for row in r["history"])
    readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    text = " ".join(open(readme).read().split())
    assert "test set is read only at that epoch" not in text
    assert "The test set is evaluated after every epoch too" in text


@pytest.mark.slow
def test_best_weights_rebuild_reported_test_accuracy(full_run):
    """The config and weight files are enough to reproduce a reported number."""
    output_dir, results = full_run
    config = results["config"]
    run = next(r for r in results["runs"] if r["mode"] == "joint" and r["path"] == 2)
    model = presets.build_supernet(config["space"], seed=0)
    model.load_weights(os.path.join(output_dir, run["best_weights"]))
    model.set_path(2)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = data.load_arrays("mnist", SMALL_DIR)["test"]
    mean, std = config["normalization"]["mean"], config["normalization"]["std"]
    accuracy = model.evaluate(
        data.make_dataset(x, y, 64, mean, std), verbose=0, return_dict=True
    )["accuracy"]
    assert accuracy == pytest.approx(run["test_accuracy"], abs=1e-6)


# === Resume ===


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_numbers(full_run, tmp_path):
    _, uninterrupted = full_run
    output_dir = str(tmp_path / "resumed")
    first = experiment.run_experiment(
        mode="all", epochs=1, output_dir=output_dir, **TINY
    )
    assert all(r["complete"] and len(r["history"]) == 1 for r in first["runs"])
    resumed = experiment.run_experiment(
        mode="all", epochs=2, output_dir=output_dir, **TINY
    )
    assert _numbers(resumed) == _numbers(uninterrupted)
    for a, b in zip(resumed["runs"], uninterrupted["runs"]):
        assert (a["best_epoch"], a["test_accuracy"]) == (
            b["best_epoch"],
            b["test_accuracy"],
        )
    assert sorted(
        os.listdir(os.path.join(output_dir, "checkpoints", "joint", "seed0", "state"))
    ) == [
        "epoch_002.npz",
        "progress.json",
    ]


@pytest.mark.slow
def test_complete_runs_are_skipped(full_run):
    output_dir, results = full_run
    weights = glob.glob(
        os.path.join(output_dir, "checkpoints", "**", "*.weights.h5"),
        recursive=True,
    )
    before = {path: os.stat(path).st_mtime_ns for path in weights}
    again = experiment.run_experiment(
        mode="all", epochs=2, output_dir=output_dir, **TINY
    )
    assert {path: os.stat(path).st_mtime_ns for path in weights} == before
    assert _numbers(again) == _numbers(results)
    assert [r["train_seconds"] for r in again["runs"]] == [
        r["train_seconds"] for r in results["runs"]
    ]


@pytest.mark.slow
def test_resume_refuses_another_configuration(full_run):
    output_dir, _ = full_run
    results_path = os.path.join(output_dir, "results.json")
    before = open(results_path).read()
    with pytest.raises(
        ValueError,
        match=r"holds a run with batch_size=64, this one has batch_size=32",
    ):
        experiment.run_experiment(
            mode="all",
            epochs=2,
            output_dir=output_dir,
            **dict(TINY, batch_size=32),
        )
    with pytest.raises(ValueError, match=r"trained for 2 epochs. Received epochs=1"):
        experiment.run_experiment(mode="all", epochs=1, output_dir=output_dir, **TINY)
    assert open(results_path).read() == before


def _relabelled_copy(folder):
    """mnist_small with every training label moved to the next class."""
    folder.mkdir()
    for name in os.listdir(SMALL_DIR):
        shutil.copy(os.path.join(SMALL_DIR, name), folder / name)
    labels = data.read_idx(os.path.join(SMALL_DIR, "train-labels-idx1-ubyte.gz"))
    blob = struct.pack(">HBBI", 0, 0x08, 1, len(labels))
    blob += ((labels + 1) % 10).astype(np.uint8).tobytes()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(blob))
    return folder


@pytest.mark.slow
def test_resume_refuses_other_data(full_run, tmp_path):
    output_dir = str(tmp_path / "run")
    shutil.copytree(full_run[0], output_dir)
    results = full_run[1]
    fingerprint = results["config"]["data_fingerprint"]
    assert (fingerprint["train"], fingerprint["val"], fingerprint["test"]) == (
        1000,
        300,
        500,
    )
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint["sha256"])
    relabelled = _relabelled_copy(tmp_path / "relabelled")
    results_path = os.path.join(output_dir, "results.json")
    before = open(results_path).read()
    with pytest.raises(ValueError) as info:
        experiment.run_experiment(
            mode="all",
            epochs=3,
            output_dir=output_dir,
            **dict(TINY, data_dir=str(relabelled)),
        )
    message = str(info.value)
    assert message.startswith(
        f"Output folder {output_dir} holds runs trained on other data "
        f"(sha256 {fingerprint['sha256'][:12]}... from data_dir {SMALL_DIR}; "
        f"this data, from data_dir {relabelled}, gives "
    ), message
    assert "\n" not in message
    assert open(results_path).read() == before


@pytest.mark.slow
def test_folder_without_fingerprint_resumes_and_records_it(tmp_path):
    output_dir = str(tmp_path / "old")
    first = experiment.run_experiment(
        mode="joint", epochs=1, output_dir=output_dir, **TINY
    )
    # As written before results.json had a fingerprint.
    path = os.path.join(output_dir, "results.json")
    old = json.load(open(path))
    del old["config"]["data_fingerprint"]
    runs.write_json(path, old)
    resumed = experiment.run_experiment(
        mode="joint", epochs=2, output_dir=output_dir, **TINY
    )
    assert {len(r["history"]) for r in resumed["runs"]} == {2}
    on_disk = json.load(open(path))["config"]["data_fingerprint"]
    assert on_disk == first["config"]["data_fingerprint"]


@pytest.mark.slow
def test_corrupt_resume_state_is_one_error_and_deleting_it_recovers(full_run, tmp_path):
    output_dir = str(tmp_path / "run")
    shutil.copytree(full_run[0], output_dir)
    state = os.path.join(
        output_dir, "checkpoints", "joint", "seed0", "state", "epoch_002.npz"
    )
    blob = open(state, "rb").read()
    open(state, "wb").write(blob[: len(blob) // 2])
    with pytest.raises(experiment.CorruptStateError) as info:
        experiment.run_experiment(mode="joint", epochs=3, output_dir=output_dir, **TINY)
    assert re.fullmatch(
        rf"Resume state {re.escape(state)} is unreadable \(truncated, or not an "
        r"npz file\): "
        rf"delete {re.escape(state)} and run the same command again \(joint "
        r"seed=0 then trains again from epoch 1\)\.",
        str(info.value),
    ), str(info.value)

    # As the message says: the run trains again, to the same numbers.
    os.remove(state)
    resumed = experiment.run_experiment(
        mode="joint", epochs=3, output_dir=output_dir, **TINY
    )
    expected = {
        key: rows for key, rows in _numbers(full_run[1]).items() if key[0] == "joint"
    }
    joint = {k: v for k, v in _numbers(resumed).items() if k[0] == "joint"}
    assert {k: v[:2] for k, v in joint.items()} == expected
    assert {len(v) for v in joint.values()} == {3}


@pytest.mark.slow
def test_corrupt_progress_file_is_one_error(full_run, tmp_path):
    output_dir = str(tmp_path / "run")
    shutil.copytree(full_run[0], output_dir)
    state_dir = os.path.join(
        output_dir, "checkpoints", "standalone", "seed0", "path1", "state"
    )
    with open(os.path.join(state_dir, "progress.json"), "w") as f:
        f.write('{"mode": "standalone", "se')
    with pytest.raises(experiment.CorruptStateError) as info:
        experiment.run_experiment(mode="all", epochs=2, output_dir=output_dir, **TINY)
    assert str(info.value).startswith(
        f"Resume progress {state_dir}/progress.json is unreadable (JSONDecodeError: "
    ), str(info.value)
    assert str(info.value).endswith(
        f"): delete the folder {state_dir} and run the same command again "
        "(that run then trains again from epoch 1)."
    )


# === A full disk ===


def _leftovers(output_dir):
    return glob.glob(os.path.join(output_dir, "**", ".tmp-*"), recursive=True)


@pytest.mark.slow
def test_full_disk_stops_the_run_and_keeps_the_saved_epochs(
    full_run, tmp_path, monkeypatch
):
    real = shutil.disk_usage
    calls = []

    def disk_usage(path):
        calls.append(path)
        usage = real(path)
        # Enough for epoch 1 (checked before training and before saving),
        # then 100 kB left.
        return usage if len(calls) <= 2 else usage._replace(free=100_000)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    output_dir = str(tmp_path / "full")
    with pytest.raises(experiment.SaveError) as info:
        experiment.run_experiment(mode="joint", epochs=2, output_dir=output_dir, **TINY)
    message = str(info.value)
    assert message.startswith(
        "Not enough free space to save epoch 2 of joint seed=0 in "
    ), message
    assert "0.10 MB free" in message and "Epochs up to 1 are saved" in message
    assert "\n" not in message
    assert not _leftovers(output_dir)
    state = os.path.join(output_dir, "checkpoints", "joint", "seed0", "state")
    assert sorted(os.listdir(state)) == ["epoch_001.npz", "progress.json"]
    with open(os.path.join(output_dir, "results.json")) as f:
        assert {len(r["history"]) for r in json.load(f)["runs"]} == {1}

    # With space again, the same call ends where an uninterrupted run ends.
    monkeypatch.setattr(shutil, "disk_usage", real)
    resumed = experiment.run_experiment(
        mode="joint", epochs=2, output_dir=output_dir, **TINY
    )
    _, uninterrupted = full_run
    joint = {k: v for k, v in _numbers(uninterrupted).items() if k[0] == "joint"}
    assert _numbers(resumed) == joint


@pytest.mark.slow
def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    real = np.savez

    def savez_then_fail(file, **arrays):
        real(file, **{k: v for k, v in list(arrays.items())[:3]})
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_fail)
    output_dir = str(tmp_path / "out")
    with pytest.raises(experiment.SaveError) as info:
        experiment.run_experiment(mode="joint", epochs=1, output_dir=output_dir, **TINY)
    assert str(info.value) == (
        "Cannot save epoch 1 of joint seed=0 in "
        f"{os.path.join(output_dir, 'checkpoints', 'joint', 'seed0')}: No "
        "space left on device. Free some space, then run the same command "
        "again."
    )
    assert not _leftovers(output_dir)
    state = os.path.join(output_dir, "checkpoints", "joint", "seed0", "state")
    assert os.listdir(state) == []


def test_locking_a_folder_removes_temporaries_of_dead_writers_only(tmp_path):
    # A writer killed between writing and renaming leaves its temporary
    # file; one of a live process (bin/report next to bin/train) is kept.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()
    (tmp_path / "checkpoints" / "joint").mkdir(parents=True)
    stale = [
        tmp_path / f".tmp-{dead.pid}-results.json",
        tmp_path / "checkpoints" / "joint" / f".tmp-{dead.pid}-progress.json",
    ]
    kept = [
        tmp_path / f".tmp-{live}-report.md",
        tmp_path / "results.json",
        tmp_path / "tmp-1-notes.txt",
    ]
    for path in stale + kept:
        path.write_text("x")
    with runs.folder_lock(str(tmp_path)):
        assert [p.exists() for p in stale] == [False, False]
        assert all(p.exists() for p in kept)


# === Non-finite numbers ===


def _scaled_batch(make_dataset, factor, epoch, step):
    """`data.make_dataset` whose training images of `epoch` (1-based) are
    multiplied by `factor` in batch `step` (1-based)."""
    import tensorflow as tf

    def patched(x, y, batch_size, mean, std, shuffle=False, seed=None):
        ds = make_dataset(x, y, batch_size, mean, std, shuffle, seed)
        if not shuffle or seed != data.epoch_seed(0, epoch - 1):
            return ds
        return ds.enumerate().map(
            lambda i, xy: (
                tf.where(i == step - 1, xy[0] * factor, xy[0]),
                xy[1],
            )
        )

    return patched


@pytest.mark.slow
@pytest.mark.parametrize(
    "factor, message",
    [
        # Overflowing activations: the loss becomes infinite at that step.
        (
            1e38,
            r"The training loss of joint seed=0 became (nan|inf) at epoch 2, "
            r"step 3",
        ),
        # NaN images: a fused Conv2D+ReLU keeps the loss finite, but the
        # gradient turns weights into NaN.
        (
            float("nan"),
            r"The weights of joint seed=0 became NaN or infinite at epoch 2",
        ),
    ],
)
def test_non_finite_training_stops_the_run_and_keeps_the_saved_epochs(
    tmp_path, monkeypatch, factor, message
):
    monkeypatch.setattr(
        data,
        "make_dataset",
        _scaled_batch(data.make_dataset, factor, epoch=2, step=3),
    )
    output_dir = str(tmp_path / "nan")
    with pytest.raises(experiment.NonFiniteLossError) as info:
        experiment.run_experiment(mode="joint", epochs=3, output_dir=output_dir, **TINY)
    assert re.fullmatch(
        message + r"; the run is stopped and epochs up to 1 are saved \(a "
        r"lower --learning_rate may help\)\.",
        str(info.value),
    ), str(info.value)
    with open(os.path.join(output_dir, "results.json")) as f:
        text = f.read()
    results = json.loads(text, parse_constant=pytest.fail)
    assert {len(r["history"]) for r in results["runs"]} == {1}
    state = os.path.join(output_dir, "checkpoints", "joint", "seed0", "state")
    assert sorted(os.listdir(state)) == ["epoch_001.npz", "progress.json"]
    assert not glob.glob(os.path.join(output_dir, "**", ".tmp-*"), recursive=True)


def test_json_files_are_strict_json(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(ValueError, match="Out of range float values"):
        runs.write_json(str(path), {"loss": float("nan")})
    assert os.listdir(tmp_path) == []
    runs.write_json(str(path), {"loss": 1.5})
    assert json.loads(path.read_text(), parse_constant=pytest.fail) == {"loss": 1.5}


# === Bad input: an error, and nothing written ===


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (
            dict(epochs=0),
            ValueError,
            r"`epochs`. Expected a positive integer. Received epochs=0",
        ),
        (dict(mode="both"), ValueError, r"`mode`.*Received mode='both'"),
        (
            dict(dataset="cifar10"),
            ValueError,
            r"`dataset`.*Received dataset='cifar10'",
        ),
        (
            dict(data_dir="/nonexistent/mnist"),
            data.DataError,
            r"Data folder /nonexistent/mnist does not exist",
        ),
        (dict(paths=["7x7,3x3"]), ValueError, r"7x7,3x3"),
        (dict(paths=[9]), ValueError, r"9"),
        (
            dict(train_size=5000),
            ValueError,
            r"`train_size`. Expected at most 1700",
        ),
        (dict(val_size=2000), ValueError, r"`val_size`"),
        (dict(seeds=(1, 1)), ValueError, r"`seeds`"),
        (dict(learning_rate=0.0), ValueError, r"`learning_rate`"),
        (
            dict(learning_rate=float("inf")),
            ValueError,
            r"`learning_rate`. Expected a positive finite number. "
            r"Received learning_rate=inf",
        ),
        (dict(learning_rate=float("nan")), ValueError, r"learning_rate=nan"),
        (
            dict(branch_learning_rates={"3x3": 1.0, "5x5": float("inf")}),
            ValueError,
            r"`branch_learning_rates`. Expected finite numbers",
        ),
        (dict(path_dropout=float("nan")), ValueError, r"`path_dropout`"),
        (dict(kernel_sizes=((3, 3), (3, 5))), ValueError, r"kernel_sizes"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, overrides, error, message):
    output_dir = tmp_path / "out"
    kwargs = dict(TINY, mode="all", epochs=1, output_dir=str(output_dir))
    kwargs.update(overrides)
    with pytest.raises(error, match=message):
        experiment.run_experiment(**kwargs)
    assert not output_dir.exists()


def test_corrupt_idx_writes_nothing(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in os.listdir(SMALL_DIR):
        blob = open(os.path.join(SMALL_DIR, name), "rb").read()
        (folder / name).write_bytes(
            blob[:100] if name.startswith("t10k-images") else blob
        )
    output_dir = tmp_path / "out"
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz is truncated"):
        experiment.run_experiment(
            **dict(TINY, data_dir=str(folder), epochs=1, output_dir=str(output_dir))
        )
    assert not output_dir.exists()


def test_standalone_starts_from_the_joint_initial_weights(full_run):
    _, results = full_run
    space = results["config"]["space"]
    joint = training.build_model(space, 1e-3, "uniform", seed=0)
    alone = training.build_model(space, 1e-3, "fixed", seed=0)
    alone.set_path(3)
    assert [w.path for w in joint.weights] == [w.path for w in alone.weights]
    for a, b in zip(joint.weights, alone.weights):
        if a.trainable:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = training.build_model(space, 1e-3, "fixed", seed=1)
    assert not np.array_equal(
        joint.trainable_weights[0].numpy(), other.trainable_weights[0].numpy()
    )


def test_readme_reliability_table_names_existing_tests():
    root = os.path.dirname(os.path.dirname(__file__))
    text = open(os.path.join(root, "README.md")).read()
    section = text.split("## Reliability", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(?:(test_\w+)\.py::)?(test_\w+)`", section)
    assert len(named) >= 15
    module = None
    for file, test in named:
        module = file or module
        source = open(os.path.join(root, "tests", f"{module}.py")).read()
        assert f"def {test}(" in source, (module, test)


def test_training_batches_run_on_into_the_next_epochs():
    rng = np.random.default_rng(0)
    split = (rng.normal(size=(10, 4, 4, 1)).astype("float32"), np.arange(10))
    data = training.Data((split, split, split), batch_size=4)
    expected = list(data.train(3, 0).as_numpy_iterator())  # 4, 4 and 2 examples
    expected += list(data.train(3, 1).as_numpy_iterator())[:2]
    got = list(data.batches(3, 5))
    assert [len(y) for _, y in got] == [4, 4, 2, 4, 4]
    for (x, y), (x_expected, y_expected) in zip(got, expected):
        np.testing.assert_array_equal(x, x_expected)
        np.testing.assert_array_equal(y, y_expected)
    assert [len(y) for _, y in data.batches(3, 2)] == [4, 4]
    with pytest.raises(ValueError, match="`count`"):
        next(data.batches(3, 0))
