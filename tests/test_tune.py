"""Tests of keras_supernet.tune and bin/tune: two-trial searches on the MNIST subset."""

import json
import os
import subprocess
import sys

import keras_tuner
import pytest

from keras_supernet import tune

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_DIR = os.path.join(REPO, "tests", "data", "mnist_small")
# A small supernet (2 x 2 paths, few filters) on a few hundred images: the
# tests check the search, not the accuracy.
TINY = dict(
    data_dir=SMALL_DIR,
    trials=2,
    epochs=1,
    train_size=256,
    val_size=128,
    seed=0,
    filters=(4, 8),
    verbose=0,
)
LABELS = ["3x3->3x3", "3x3->5x5", "5x5->3x3", "5x5->5x5"]


def _drawn(result):
    return [trial["hparams"] for trial in result["trials"]]


@pytest.fixture(scope="module")
def joint_search(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("joint"))
    return output_dir, tune.tune(mode="joint", output_dir=output_dir, **TINY)


@pytest.mark.slow
def test_joint_search_writes_best_hparams(joint_search):
    output_dir, result = joint_search
    with open(os.path.join(output_dir, "best_hparams.json")) as f:
        best = json.load(f)
    assert best == json.loads(json.dumps(result))
    assert set(best["hparams"]) == {"learning_rate", "batch_size", "hidden_units"}
    assert best["train_flags"] == (
        f"--learning_rate={best['hparams']['learning_rate']} --batch_size={best['hparams']['batch_size']} "
        f"--hidden_units={best['hparams']['hidden_units']}"
    )
    assert best["mode"] == "joint" and best["path"] is None
    assert len(best["trials"]) == 2 and all(
        t["status"] == "COMPLETED" for t in best["trials"]
    )
    for trial in best["trials"]:
        hparams = trial["hparams"]
        assert 1e-4 <= hparams["learning_rate"] <= 1e-2
        assert hparams["batch_size"] in tune.BATCH_SIZES
        assert hparams["hidden_units"] in tune.HIDDEN_UNITS
        # Joint score: the mean over the 4 paths of each one's validation accuracy.
        per_path = trial["val_accuracy_per_path"]
        assert sorted(per_path) == LABELS
        assert trial["val_accuracy"] == pytest.approx(sum(per_path.values()) / 4)
        # Scored on the 128 validation images (the test split has 500).
        for accuracy in per_path.values():
            assert accuracy * 128 == pytest.approx(round(accuracy * 128), abs=1e-4)
    scores = [t["val_accuracy"] for t in best["trials"]]
    assert best["objective"]["value"] == max(scores)
    assert best["hparams"] == best["trials"][scores.index(max(scores))]["hparams"]
    # Two distinct draws, not the search space's defaults.
    assert best["trials"][0]["hparams"] != best["trials"][1]["hparams"]


@pytest.mark.slow
def test_same_seed_draws_the_same_hyperparameters(joint_search, tmp_path):
    _, joint = joint_search
    # The draws depend on the seed and the search space only, not on the
    # mode: a standalone search with seed 0 tries the joint search's values.
    alone = tune.tune(
        mode="standalone", path="5x5,3x3", output_dir=str(tmp_path), **TINY
    )
    assert _drawn(alone) == _drawn(joint)
    assert alone["path"] == 2 and alone["label"] == "5x5->3x3"
    for trial in alone["trials"]:
        assert list(trial["val_accuracy_per_path"]) == ["5x5->3x3"]
        assert trial["val_accuracy"] == trial["val_accuracy_per_path"]["5x5->3x3"]


def _draws(seed, trials=5):
    """Values drawn by the tuner with a scorer that trains nothing."""
    tuner = tune.SupernetTuner(
        lambda hparams: {tune.OBJECTIVE: 0.5},
        objective=keras_tuner.Objective(tune.OBJECTIVE, direction="max"),
        max_trials=trials,
        seed=seed,
        hyperparameters=tune.search_space(),
        tune_new_entries=False,
        allow_new_entries=False,
        overwrite=True,
        directory=None,
        project_name=None,
    )
    tuner.search(verbose=0)
    return [
        tuner.oracle.trials[i].hyperparameters.values
        for i in sorted(tuner.oracle.trials)
    ]


def test_tuner_draws_depend_on_the_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Seed 0 included: KerasTuner alone would replace it by a random seed.
    first, again, other = _draws(0), _draws(0), _draws(1)
    assert first == again
    assert first != other
    assert len({d["learning_rate"] for d in first}) == 5
    # Consecutive seeds do not share draws (KerasTuner's raw seeds would).
    assert not {d["learning_rate"] for d in first} & {d["learning_rate"] for d in other}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="standalone"), "argument `path`. Expected the path to tune"),
        (dict(mode="joint", path=1), "argument `path`. Expected no path in joint mode"),
        (dict(mode="joint", trials=0), "Received trials=0"),
        (dict(mode="joint", epochs=-1), "Received epochs=-1"),
        (dict(mode="both"), "Received mode='both'"),
        (dict(mode="joint", batch_sizes=(32, 32)), "Received batch_sizes=(32, 32)"),
        (
            dict(mode="joint", learning_rate_range=(1e-2, 1e-4)),
            "argument `learning_rate_range`",
        ),
        (
            dict(mode="joint", val_size=2000),
            "Expected fewer than the 2000 training examples",
        ),
        (dict(mode="standalone", path="9x9,3x3"), "9x9"),
    ],
)
def test_bad_arguments_raise_before_writing(kwargs, message, tmp_path):
    output_dir = tmp_path / "search"
    args = dict(TINY, **kwargs)
    with pytest.raises(
        ValueError,
        match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\."),
    ):
        tune.tune(output_dir=str(output_dir), **args)
    assert not output_dir.exists()


@pytest.mark.slow
def test_resuming_with_other_settings_is_refused(joint_search):
    output_dir, _ = joint_search
    with pytest.raises(ValueError, match="holds a search with epochs=1"):
        tune.tune(mode="joint", output_dir=output_dir, **dict(TINY, epochs=2))


def _bin_tune(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "bin", "tune"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_extends_a_search(joint_search):
    output_dir, first = joint_search
    done = _bin_tune(
        "--mode=joint",
        f"--data_dir={SMALL_DIR}",
        "--trials=3",
        "--epochs=1",
        "--train_size=256",
        "--val_size=128",
        "--seed=0",
        "--filters=4,8",
        f"--output_dir={output_dir}",
    )
    assert done.returncode == 0, done.stderr
    assert "best of 3 trials: --learning_rate=" in done.stdout
    with open(os.path.join(output_dir, "best_hparams.json")) as f:
        extended = json.load(f)
    # The two finished trials are kept, not rerun; one new trial is drawn.
    assert extended["trials"][:2] == first["trials"]
    assert (
        len(extended["trials"]) == 3 and extended["trials"][2]["status"] == "COMPLETED"
    )
    assert extended["objective"]["value"] == max(
        t["val_accuracy"] for t in extended["trials"]
    )


def test_cli_bad_input_is_one_line(tmp_path):
    done = _bin_tune(
        "--mode=standalone", f"--data_dir={SMALL_DIR}", f"--output_dir={tmp_path / 'x'}"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: Invalid value for argument `path`. Expected the path to tune in standalone mode, "
        "e.g. 2 or '5x5,3x3'. Received path=None."
    ]
    assert not (tmp_path / "x").exists()
