"""Committed results are reproduced by the current code.

Reruns the first epoch of committed runs on the shared MNIST copy and
compares every number of that epoch exactly. Floating point is only
reproducible on the same TensorFlow and Keras versions (and CPU kernels), so
the test runs where the versions the run recorded are installed, and is
skipped with the reason otherwise; it also needs the full MNIST copy, which
the repository does not ship.
"""

import json
import os

import keras
import pytest
import tensorflow as tf

from conftest import ROOT
from conftest import SHARED_MNIST
from keras_supernet import experiment

NUMBERS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "train_accuracy",
)


def _committed(folder):
    with open(os.path.join(ROOT, "docs", "results", folder, "results.json")) as f:
        return json.load(f)


def _skip_unless_reproducible(results):
    if not os.path.isdir(SHARED_MNIST):
        pytest.skip(f"needs the full MNIST copy in {SHARED_MNIST}")
    versions = results["config"]["versions"]
    installed = {"keras": keras.__version__, "tensorflow": tf.__version__}
    for name, version in installed.items():
        if versions.get(name) != version:
            pytest.skip(
                f"the committed run used {name} {versions.get(name)}, this is "
                f"{version}: floating point may differ"
            )


@pytest.mark.slow
@pytest.mark.parametrize(
    "folder, mode, path",
    [("full_mnist_joint_v020", "joint", None), ("full_mnist_v030", "standalone", 1)],
)
def test_first_epoch_of_a_committed_run_is_reproduced_exactly(
    folder, mode, path, tmp_path
):
    if not os.path.isdir(os.path.join(ROOT, "docs", "results", folder)):
        pytest.skip(f"docs/results/{folder} is not committed yet")
    committed = _committed(folder)
    _skip_unless_reproducible(committed)
    config = committed["config"]
    rerun = experiment.run_experiment(
        str(tmp_path / "rerun"),
        mode=mode,
        seeds=(0,),
        paths=None if path is None else [path],
        data_dir=SHARED_MNIST,
        epochs=1,
        batch_size=config["batch_size"],
        learning_rate=config["learning_rate"],
        val_size=config["val_size"],
        verbose=0,
    )
    expected = {
        (r["mode"], r["path"]): r["history"][0]
        for r in committed["runs"]
        if r["seed"] == 0 and r["mode"] == mode
    }
    got = {(r["mode"], r["path"]): r["history"][0] for r in rerun["runs"]}
    assert set(got) <= set(expected) and got
    for key, row in got.items():
        for name in NUMBERS:
            assert row[name] == expected[key][name], (key, name)
