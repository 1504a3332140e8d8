"""Tests of keras_supernet.rank and bin/rank: metrics, stratified sampling,
BatchNorm recalibration, few-shot splitting, resume and shards of the study."""

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import choice_space
from conftest import compile_model
from conftest import learnable_batch
from keras_supernet import rank
from keras_supernet import sampling
from keras_supernet import training
from keras_supernet.supernet import Supernet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANK = os.path.join(REPO, "bin", "rank")
SMALL_DIR = os.path.join(REPO, "tests", "data", "mnist_small")
TINY_SPACE = {
    "stem": {"filters": 4, "kernel_size": 3, "strides": 2},
    "stages": [
        {"filters": 4, "blocks": 2, "candidates": ["mb3x3_e1", "mb5x5_e1", "skip"]}
    ],
    "head": {"hidden_units": 0},
    "batchnorm": True,
}
TINY = dict(
    space=TINY_SPACE,
    data_dir=SMALL_DIR,
    train_size=256,
    val_size=128,
    batch_size=64,
    learning_rate=3e-3,
    supernet_learning_rate=3e-3,
    bn_batches=2,
    selection_seed=7,
    selection_epochs=1,
    pool_size=9,
    architectures=6,
    bins=3,
    standalone_seeds=(0, 1),
    standalone_epochs=2,
    supernet_seeds=(0,),
    supernet_epochs=2,
    longer_epochs=3,
    few_shot_epochs=1,
    warmup_epochs=1,
    refit_batches=6,  # an epoch is 4 batches: the re-fit runs into the next
    verbose=0,
)


# === Stratified sampling ===


def test_stratified_sample_takes_one_per_bin_top_bin_first():
    scores = np.arange(10.0)  # bins of width 1.8: {0,1} {2,3} {4,5} {6,7} {8,9}
    chosen = rank.stratified_sample(scores, 5, 5, np.random.default_rng(0))
    assert [int(scores[i]) // 2 for i in chosen] == [4, 3, 2, 1, 0]
    assert chosen == rank.stratified_sample(scores, 5, 5, np.random.default_rng(0))


def test_stratified_sample_gives_a_short_bins_places_to_the_others():
    scores = [0, 5, 6, 7, 8, 9, 9.5, 10]  # bin 0: [0, 5) holds one item
    chosen = rank.stratified_sample(scores, 4, 2, np.random.default_rng(1))
    assert len(set(chosen)) == 4
    # Bin by bin in turn: bin 1, bin 0, then bin 1 alone.
    assert chosen[1] == 0 and all(scores[i] >= 5 for i in chosen[:1] + chosen[2:])
    # Quotas 2/2 with a short bin 0 -> 3 from bin 1; odd counts favour
    # the highest bins.
    chosen = rank.stratified_sample(np.arange(9.0), 4, 3, np.random.default_rng(0))
    assert sorted(int(i) // 3 for i in chosen) == [0, 1, 2, 2]


def test_stratified_sample_refuses_bad_input():
    with pytest.raises(ValueError, match="`count`"):
        rank.stratified_sample([1, 2], 3, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="`scores`"):
        rank.stratified_sample([1, np.nan], 1, 2, np.random.default_rng(0))


# === Angle scores ===


def _tiny_supernet(sampling_name="uniform", seed=0):
    inputs, outputs = choice_space(
        num_choices=3, size=8, specs=("bn3x3", "conv1x1", "skip"), seed=seed
    )
    return compile_model(
        Supernet(inputs=inputs, outputs=outputs, sampling=sampling_name, seed=seed)
    )


def test_angle_score_is_the_angle_of_the_paths_weights():
    model = _tiny_supernet()
    initial = [np.array(v.numpy()) for v in model.trainable_variables]
    assert rank.angle_scores(model, initial, [0, 5])[0] == pytest.approx(0.0, abs=1e-3)
    # Flip the sign of candidate (0, 0)'s kernel: only paths through it turn.
    candidate = model.choices[0].candidates[0]
    for v in candidate.trainable_variables:
        v.assign(-v)
    angles = rank.angle_scores(model, initial, [0, 9])
    path_vars = [
        v
        for v in model.trainable_variables
        if not any(
            v is w
            for c in model.choices
            for cand in c.candidates
            for w in cand.trainable_variables
        )
    ]
    for choice, k in zip(model.choices, (0, 0, 0)):
        path_vars += list(choice.candidates[k].trainable_variables)
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    w0 = np.concatenate([initial[index[id(v)]].ravel() for v in path_vars])
    w1 = np.concatenate([v.numpy().ravel() for v in path_vars])
    expected = np.arccos(w0 @ w1 / np.linalg.norm(w0) / np.linalg.norm(w1))
    assert angles[0] == pytest.approx(expected, rel=1e-5) and angles[0] > 0.1
    assert angles[9] == pytest.approx(0.0, abs=1e-3)  # path 9 = (1, 0, 0)


# === Few-shot splitting ===


def _candidate_values(model, choice, k):
    return [np.array(v.numpy()) for v in model.choices[choice].candidates[k].variables]


def test_few_shot_sub_supernets_keep_their_candidates_and_share_nothing(tmp_path):
    """Each sub-supernet trains only paths through its own candidate of the
    split choice; the others' weights and optimizer moments stay those of
    the parent, and no sub-supernet's training reaches another's."""
    x, y = learnable_batch(n=64, shape=(8, 8, 1))
    parent = _tiny_supernet("uniform")
    parent.fit(x, y, batch_size=16, epochs=1, verbose=0)
    state = str(tmp_path / "parent.npz")
    rank.save_state(parent, state)
    parent_values = {k: _candidate_values(parent, 1, k) for k in range(3)}
    parent_optimizer = [np.array(v.numpy()) for v in parent.optimizer.variables]

    def train_sub(model, sub):
        rank.init_sub_supernet(model, state, split_choice=1, candidate=sub, seed=0)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        return [
            np.array(v.numpy()) for v in model.variables + model.optimizer.variables
        ]

    model = _tiny_supernet(sampling.AdaptiveSampler())
    trained = {}
    for sub in (0, 1):
        trained[sub] = train_sub(model, sub)
        for k in range(3):
            now = _candidate_values(model, 1, k)
            same = all(np.array_equal(a, b) for a, b in zip(now, parent_values[k]))
            assert same == (k != sub), (sub, k)
        # The split choice's other candidates keep the parent's Adam moments
        # (Adam holds iteration, learning rate, then a momentum and a
        # velocity per trainable variable, in order).
        kept = {
            id(v)
            for k in range(3)
            if k != sub
            for v in model.choices[1].candidates[k].trainable_variables
        }
        slots = [
            j
            for i, v in enumerate(model.trainable_variables)
            if id(v) in kept
            for j in (2 + 2 * i, 3 + 2 * i)
        ]
        assert slots
        for j in slots:
            assert model.optimizer.variables[j].path.endswith(
                ("_momentum", "_velocity")
            )
            np.testing.assert_array_equal(
                parent_optimizer[j], model.optimizer.variables[j].numpy()
            )
    # Sub-supernet 1 trained after 0 in the same model is the one trained
    # first in a fresh model: nothing of sub-supernet 0 carried over.
    fresh = _tiny_supernet(sampling.AdaptiveSampler())
    alone = train_sub(fresh, 1)
    for a, b in zip(trained[1], alone):
        np.testing.assert_array_equal(a, b)
    assert rank.few_shot_owner(model.space, (2, 1, 0), 1) == 1


# === The study on tiny data ===


def _accuracies(folder):
    result = {}
    for path in glob.glob(
        os.path.join(folder, "standalone", "seed*", "arch*", "progress.json")
    ):
        with open(path) as f:
            progress = json.load(f)
        info = progress["info"]
        result[(info["seed"], info["arch"])] = [
            (h["train_loss"], h["test_accuracy"]) for h in progress["history"]
        ]
    return result


def _scores(folder):
    result = {}
    for path in glob.glob(os.path.join(folder, "scores", "*", "seed*.json")):
        with open(path) as f:
            record = json.load(f)
        result[(record["method"], record["seed"])] = record["scores"]
    return result


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """An uninterrupted tiny study, every method, and its report."""
    folder = str(tmp_path_factory.mktemp("study"))
    rank.run_study(folder, **TINY)
    return folder


@pytest.mark.slow
def test_study_reports_every_method_and_the_ground_truth(study):
    with open(os.path.join(study, rank.REPORT_JSON)) as f:
        report = json.load(f)
    assert report["architectures"] == 6
    assert (
        report["standalone_spread_pp"] > 0 and -1 <= report["standalone_seed_tau"] <= 1
    )
    assert set(report["methods"]) == set(rank.METHODS)
    for method, entry in report["methods"].items():
        for key in ("kendall_tau", "spearman", "top5_overlap"):
            assert len(entry[key]) == 1, (method, key)
        assert entry["relative_cost"] > 0
    assert report["methods"]["uniform"]["relative_cost"] == 1.0
    assert report["methods"]["longer"]["epochs"] == 3
    assert report["methods"]["few_shot"]["epochs"] == 2 + 3 * 1
    text = open(os.path.join(study, rank.REPORT_MD)).read()
    assert "| `few_shot` |" in text and "bin/rank --stage=report" in text
    # A noise ceiling below the target is said before any method's number.
    limits = text.index("## Limits of this study")
    assert limits < text.index("## Methods")
    if report["standalone_seed_tau"] < rank.TARGET["noise_ceiling"]:
        assert "The ground truth is noisy" in text[limits:]
    assert "1 supernet seed(s) per method (target: at least 3)" in text
    assert 0 <= report["standalone_reliability"] <= 1
    assert "(Greiner's relation), and a noise ceiling of 0.85 needs r >= 0.97" in text
    assert os.path.getsize(os.path.join(study, rank.REPORT_PNG)) > 10_000
    # Every architecture's score comes from the sub-supernet owning its
    # candidate of the split choice.
    with open(os.path.join(study, "architectures.json")) as f:
        selection = json.load(f)
    owners = {
        sub: json.load(
            open(
                os.path.join(
                    study, "supernets", "few_shot", "seed0", f"sub{sub}", "scores.json"
                )
            )
        )["indices"]
        for sub in range(3)
    }
    space = rank.presets.build_supernet(TINY_SPACE).space
    for sub, indices in owners.items():
        for i in indices:
            assert (
                space.resolve(selection["paths"][i])[selection["split_choice"]] == sub
            )
    assert sorted(sum(owners.values(), [])) == list(range(6))


@pytest.mark.slow
def test_refit_head_scores_each_path_with_a_head_fitted_to_it(study):
    folder = rank.StudyFolder(study)
    config = folder.read_config()
    paths = folder.read_architectures()["paths"]
    splits = rank.data_lib.load_splits(
        config.dataset,
        config.data_dir,
        config.val_size,
        config.train_size,
        config.split_seed,
    )
    data = training.Data(splits, config.batch_size, bn_batches=config.bn_batches)
    model = rank._build(config, "uniform", 0)
    rank.load_state(
        model,
        os.path.join(
            folder.supernet_dir("uniform", 0), f"epoch_{config.supernet_epochs:03d}.npz"
        ),
    )
    # By hand: BatchNorm recalibrated, then the head trained alone on the
    # first 6 batches of the data order of seed 0 (4 of epoch 0, 2 of epoch
    # 1), at the standalone rate.
    batches = list(data.train(0, 0).as_numpy_iterator())
    batches += list(data.train(0, 1).as_numpy_iterator())[:2]
    expected = []
    for path in paths:
        model.recalibrate_batchnorm(data.bn(), path=path, batches=10**9)
        with model.head_refitted(
            batches, batches=6, learning_rate=config.learning_rate
        ):
            expected.append(model.evaluate(data.val, verbose=0, return_dict=True))
    with open(folder.scores_path("refit_head", 0)) as f:
        record = json.load(f)
    assert record["settings"]["refit_batches"] == 6
    assert record["scores"] == pytest.approx(
        [e["accuracy"] for e in expected], abs=1e-6
    )
    assert record["scores"] != _scores(study)[("uniform", 0)]


@pytest.mark.slow
def test_interrupted_study_resumes_to_identical_numbers(study, tmp_path, monkeypatch):
    folder = str(tmp_path / "interrupted")
    real = training.train_epoch
    calls = []

    def train_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill in the middle of an epoch
        return real(*args, **kwargs)

    two = dict(TINY, methods=("uniform", "fair"))
    monkeypatch.setattr(training, "train_epoch", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        rank.run_study(folder, **two)
    monkeypatch.setattr(training, "train_epoch", real)
    rank.run_study(folder, **two)
    assert _accuracies(folder) == _accuracies(study)
    reference = _scores(study)
    assert _scores(folder) == {k: reference[k] for k in [("uniform", 0), ("fair", 0)]}
    assert not glob.glob(os.path.join(folder, "**", ".tmp-*"), recursive=True)


@pytest.mark.slow
def test_shards_merge_into_the_same_report(study, tmp_path):
    # Two methods of two supernet units: one unit per shard.
    two = dict(TINY, methods=("uniform", "fair"))
    first = str(tmp_path / "first")
    rank.run_study(first, stage="select", **two)
    selection = os.path.join(first, "architectures.json")
    shards = [str(tmp_path / f"shard{i}") for i in range(2)]
    for i, folder in enumerate(shards):
        rank.run_study(folder, shard=(i, 2), architectures_file=selection, **two)
    merged = {}
    for folder in shards:
        assert set(_accuracies(folder)).isdisjoint(merged)
        merged.update(_accuracies(folder))
    assert merged == _accuracies(study)
    reference = _scores(study)
    assert set(_scores(shards[0])).isdisjoint(_scores(shards[1]))
    assert {**_scores(shards[0]), **_scores(shards[1])} == {
        k: reference[k] for k in [("uniform", 0), ("fair", 0)]
    }
    out = str(tmp_path / "report")
    rank.write_report([first] + shards, out)
    with open(os.path.join(out, rank.REPORT_JSON)) as f:
        report = json.load(f)
    with open(os.path.join(study, rank.REPORT_JSON)) as f:
        reference = json.load(f)
    for key in ("architectures", "standalone_spread_pp", "standalone_seed_tau"):
        assert report[key] == reference[key]
    assert set(report["methods"]) == {"uniform", "fair"}
    for method, entry in report["methods"].items():
        assert entry["kendall_tau"] == reference["methods"][method]["kendall_tau"]
    with pytest.raises(rank.StudyError, match="is in both"):
        rank.write_report([shards[0], study], out)


@pytest.mark.slow
def test_cosine_standalone_rate_decays_from_the_rate_towards_zero():
    rate = rank.standalone_learning_rate
    assert rate(0.004, 0, 4) == pytest.approx(0.004)
    assert rate(0.004, 1, 4) == pytest.approx(0.004 * (1 + 2**-0.5) / 2)
    assert rate(0.004, 2, 4) == pytest.approx(0.002)
    assert rate(0.004, 3, 4) == pytest.approx(0.004 * (1 - 2**-0.5) / 2)
    assert rate(0.004, 3, 4, "constant") == 0.004


@pytest.mark.slow
def test_cosine_study_trains_standalone_runs_at_the_decayed_rates(
    tmp_path, monkeypatch
):
    real = training.train_epoch
    rates = []

    def record_rate(model, *args, **kwargs):
        rates.append(float(model.optimizer.learning_rate.numpy()))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", record_rate)
    folder = str(tmp_path / "cosine")
    cosine = dict(TINY, standalone_schedule="cosine", standalone_seeds=(0,))
    rank.run_study(folder, stage="standalone", pilot=1, **cosine)
    selection_epochs = TINY["selection_epochs"]
    assert rates[selection_epochs:] == pytest.approx([3e-3, 1.5e-3])
    # Its epochs are part of the schedule: more of them would be another
    # training, so the folder refuses them instead of extending the runs.
    with pytest.raises(rank.StudyError, match="standalone_epochs=2, this one has"):
        rank.run_study(folder, **dict(cosine, standalone_epochs=3))


def test_ground_truth_reliability_against_hand_values():
    # Architecture 0 scores 0 and 2 over two seeds, architecture 1 scores 4
    # and 6: between-seed variance 2, seed means 1 and 5 (variance 8, of
    # which 2 / 2 is the seeds'), so r = 7 / (7 + 2).
    assert rank.ground_truth_reliability([[0, 4], [2, 6]]) == pytest.approx(7 / 9)
    assert rank.ground_truth_reliability([[1, 2, 3], [1, 2, 3]]) == 1.0
    # Seeds that disagree more than architectures differ: nothing is the
    # architectures'.
    assert rank.ground_truth_reliability([[0, 2], [2, 0]]) == 0.0
    assert rank.ground_truth_reliability([[1, 2, 3]]) is None
    assert rank.predicted_seed_tau(1.0) == pytest.approx(1.0)
    assert rank.predicted_seed_tau(0.5) == pytest.approx(1 / 3)
    # Two seeds of r = 0.5: the mean's reliability is 2 * 0.5 / 1.5 = 2 / 3,
    # its correlation with the truth sqrt(2 / 3).
    assert rank.predicted_truth_tau(0.5, 2) == pytest.approx(
        2 / math.pi * math.asin(math.sqrt(2 / 3))
    )
    assert rank.predicted_truth_tau(1.0, 3) == pytest.approx(1.0)
    assert rank.predicted_truth_tau(0.0, 4) == 0.0


def test_split_half_tau_against_hand_values():
    # Seed 2 swaps architectures 1 and 2. Every split into halves of two
    # seeds sets (1, 2, 3) against (1, 2.5, 2.5): two concordant pairs, one
    # tied in one half only, so tau-b = 2 / sqrt(3 * 2).
    per_seed = [[1, 2, 3], [1, 2, 3], [1, 3, 2], [1, 2, 3]]
    assert rank.split_half_tau(per_seed) == pytest.approx(2 / math.sqrt(6))
    # Seeds 0, 1 against 2, 3 disagree completely; the two other splits tie
    # every architecture in both halves, give no tau and are left out.
    assert rank.split_half_tau([[1, 2], [1, 2], [2, 1], [2, 1]]) == pytest.approx(-1)
    assert rank.split_half_tau([[1, 2, 3]] * 3) is None
    # Five seeds: halves of 2 and 3, every one of the 10 splits. The 4 that
    # put seed 0 in the pair tie both architectures in both halves; the 6
    # others order them alike.
    assert rank.split_half_tau([[1, 2]] + [[2, 1]] * 4) == pytest.approx(1.0)
    # The prediction from both halves' reliabilities.
    assert rank.predicted_split_half_tau(0.5, 4) == pytest.approx(
        2 / math.pi * math.asin(2 / 3)
    )
    assert rank.predicted_split_half_tau(0.5, 5) == pytest.approx(
        2 / math.pi * math.asin(math.sqrt(2 / 3 * 0.75))
    )


def test_seed_to_seed_tau_is_the_mean_over_every_pair_of_seeds():
    # Pairs (0, 1) agree (+1), (0, 2) and (1, 2) disagree (-1 each).
    assert rank.seed_to_seed_tau([[1, 2, 3], [1, 2, 3], [3, 2, 1]]) == pytest.approx(
        -1 / 3
    )
    assert rank.seed_to_seed_tau([[1, 2, 3]]) is None


def test_ranking_metrics_against_hand_values():
    truth = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95]
    right, reversed_ = [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]
    metrics = rank.ranking_metrics([right, reversed_], truth, resamples=50)
    assert metrics["kendall_tau"] == pytest.approx([1, -1])
    assert metrics["spearman"] == pytest.approx([1, -1])
    # The reversed scores' top 5 are architectures 0-4, the truth's 1-5.
    assert metrics["top5_overlap"] == pytest.approx([5, 4])
    # The reversed scores pick architecture 0: 5 points below the best.
    assert metrics["regret_pp"] == pytest.approx([0, 5])
    # The better half: architectures 3, 4, 5 (at or above the median).
    assert metrics["top_half_kendall_tau"] == pytest.approx([1, -1])
    assert metrics["kendall_tau_mean"] == pytest.approx(0)
    assert metrics["regret_pp_mean"] == pytest.approx(2.5)
    low, high = metrics["kendall_tau_interval"]
    assert low <= high
    assert "kendall_tau_delta" not in metrics
    # Against a baseline: the mean tau's difference, on the same resamples.
    compared = rank.ranking_metrics(
        [right, reversed_], truth, baseline=[right, right], resamples=50
    )
    assert compared["kendall_tau_delta"] == pytest.approx(-1)
    itself = rank.ranking_metrics([right], truth, baseline=[right], resamples=50)
    assert itself["kendall_tau_delta"] == 0
    assert itself["kendall_tau_delta_interval"] == (0.0, 0.0)
    with pytest.raises(rank.StudyError, match="one score per architecture"):
        rank.ranking_metrics([[1, 2]], truth)


def test_limits_name_a_spread_too_narrow_to_rank():
    analysis = {
        "architectures": 30,
        "standalone_seed_tau": 0.9,
        "standalone_spread_pp": 1.75,
        "standalone_seeds": [0, 1],
        "methods": {m: {"seeds": [0, 1, 2]} for m in rank.METHODS},
        "cpu_seconds": 600.0,
    }
    config = rank.StudyConfig(space={})
    text = "\n".join(rank._limits_lines(analysis, config))
    assert "standalone accuracies 1.75 pp apart (target: at least 2" in text
    assert "trustworthy enough" in text
    analysis["standalone_spread_pp"] = 2.5
    assert "pp apart" not in "\n".join(rank._limits_lines(analysis, config))


def test_limits_trust_a_ground_truth_whose_halves_agree():
    # Single runs below the target, but two means of 4 seeds each agree
    # above it: the mean of all 8 is what the supernets are ranked against.
    analysis = {
        "architectures": 30,
        "standalone_seed_tau": 0.78,
        "standalone_split_half_tau": 0.90,
        "standalone_truth_tau": 0.94,
        "standalone_spread_pp": 11.2,
        "standalone_seeds": list(range(8)),
        "methods": {m: {"seeds": [0, 1, 2]} for m in rank.METHODS},
        "cpu_seconds": 600.0,
    }
    config = rank.StudyConfig(space={})
    text = "\n".join(rank._limits_lines(analysis, config))
    assert "Kendall tau +0.78, below the 0.85" in text
    assert "(4 and 4 seeds) agree at tau +0.90" in text
    assert "trustworthy enough" in text and "noisy" not in text
    analysis["standalone_split_half_tau"] = 0.81
    text = "\n".join(rank._limits_lines(analysis, config))
    assert "The ground truth is noisy" in text and "trustworthy" not in text


def test_an_unknown_setting_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'epochs'"):
        rank.run_study(str(tmp_path / "out"), epochs=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'versions'"):
        rank.run_study(str(tmp_path / "out"), versions={})
    assert not (tmp_path / "out").exists()


def test_a_folder_of_other_settings_is_refused(study):
    with pytest.raises(
        rank.StudyError,
        match="holds a study with train_size=256, this one has train_size=200",
    ):
        rank.run_study(study, **dict(TINY, train_size=200))


# === bin/rank ===


def _rank(*flags, timeout=300):
    return subprocess.run(
        [sys.executable, RANK, *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


TINY_FLAGS = [  # TINY's settings
    f"--data_dir={SMALL_DIR}",
    "--train_size=256",
    "--val_size=128",
    "--batch_size=64",
    "--learning_rate=3e-3",
    "--supernet_learning_rate=3e-3",
    "--bn_batches=2",
    "--selection_seed=7",
    "--selection_epochs=1",
    "--pool_size=9",
    "--architectures=6",
    "--bins=3",
    "--standalone_seeds=0,1",
    "--standalone_epochs=2",
    "--supernet_seeds=0",
    "--supernet_epochs=2",
    "--longer_epochs=3",
    "--few_shot_epochs=1",
    "--warmup_epochs=1",
    "--refit_batches=6",
    "--verbose=1",
]


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--shard=2/2"],
            "error: Invalid value for argument `shard`. Expected 'i/n' with 0 <= i < n",
        ),
        (
            ["--pilot=3"],
            "error: Invalid value for argument `pilot`: a pilot trains standalone runs only",
        ),
        (["--methods=uniform,magic"], "error: Invalid value for argument `methods`."),
        (
            ["--average_epochs=9"],
            "error: Invalid value for argument `average_epochs`. Expected at most standalone_epochs=8.",
        ),
        (
            ["--data_dir={tmp}/missing"],
            "error: Data folder {tmp}/missing does not exist.",
        ),
        (
            ["--architectures=300"],
            "error: Invalid value for argument `architectures`. Expected at most pool_size=256.",
        ),
        (["--learning_rate=nan"], "error: Invalid value for argument `learning_rate`."),
        (["--refit_batches=0"], "error: Invalid value for argument `refit_batches`."),
        (
            ["--space=nowhere.json"],
            "error: Invalid search space nowhere.json: cannot read the file",
        ),
        (["--stage=sideways"], "error: flag --stage=sideways: value should be one of"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, flags, message):
    output_dir = tmp_path / "out"
    flags = [f.format(tmp=tmp_path) for f in flags]
    base = (
        []
        if any(f.startswith("--data_dir") for f in flags)
        else [f"--data_dir={SMALL_DIR}"]
    )
    done = _rank(*base, *flags, f"--output_dir={output_dir}", timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(message.format(tmp=tmp_path)), lines[0]
    assert not output_dir.exists()


@pytest.mark.slow
def test_killed_standalone_grid_resumes_to_identical_numbers(tmp_path):
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE))
    flags = [*TINY_FLAGS, f"--space={space}"]
    killed = str(tmp_path / "killed")
    process = subprocess.Popen(
        [sys.executable, RANK, "--stage=standalone", *flags, f"--output_dir={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    target = os.path.join(killed, "standalone", "seed0", "arch002", "progress.json")
    deadline = time.monotonic() + 240
    while (
        not os.path.exists(target)
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, (
        "the study finished before it could be killed"
    )
    assert len(_accuracies(killed)) < 12
    done = _rank("--stage=standalone", *flags, f"--output_dir={killed}")
    assert done.returncode == 0, done.stderr
    assert "standalone seed=1 arch=5" in done.stdout
    # Against an uninterrupted run of the same command in its own process:
    # an in-process study may differ in floating point (TensorFlow's thread
    # pools are set once per process), and these tiny models amplify it.
    fresh = str(tmp_path / "fresh")
    done = _rank("--stage=standalone", *flags, f"--output_dir={fresh}")
    assert done.returncode == 0, done.stderr
    assert _accuracies(killed) == _accuracies(fresh)
    # The pilot's report: the ground truth alone, with its noise ceiling.
    out = str(tmp_path / "report")
    done = _rank("--stage=report", f"--run_dir={killed}", f"--output_dir={out}")
    assert done.returncode == 0, done.stderr
    with open(os.path.join(out, rank.REPORT_JSON)) as f:
        report = json.load(f)
    assert report["architectures"] == 6 and report["methods"] == {}
    assert [row["epoch"] for row in report["noise_ceiling_by_epoch"]] == [1, 2]
