"""Tests of keras_supernet.search on small supernets and synthetic data."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import matplotlib.axes
import numpy as np
import pytest

from conftest import ROOT
from conftest import choice_space
from conftest import learnable_batch
from keras_supernet import costs
from keras_supernet import search
from keras_supernet.search import PathScorer
from keras_supernet.search import pareto_front
from keras_supernet.search import run_search
from keras_supernet.supernet import Supernet

SPECS = ("bn3x3", "conv1x1", "skip")


def _small_supernet(num_choices=3):
    """27 paths of conv3x3-BN-ReLU / conv1x1 / skip, with BatchNorm."""
    inputs, outputs = choice_space(num_choices=num_choices, specs=SPECS)
    return Supernet(inputs=inputs, outputs=outputs, seed=0)


@pytest.fixture(scope="module")
def supernet():
    return _small_supernet()


@pytest.fixture(scope="module")
def huge():
    """3**20 = 3.5e9 paths."""
    return _small_supernet(num_choices=20)


@pytest.fixture(scope="module")
def arrays():
    x_val, y_val = learnable_batch(48, shape=(8, 8, 1), seed=1)
    x_train, _ = learnable_batch(32, shape=(8, 8, 1), seed=2)
    return x_val, y_val, x_train


def _table_scorer(num_paths, seed=0, calls=None, fail_after=None):
    """A cheap scorer: a fixed random score per path."""
    rng = np.random.default_rng(seed)
    accuracy = rng.integers(0, 100, num_paths) / 100
    loss = rng.uniform(size=num_paths)

    def score(index):
        if calls is not None:
            calls.append(index)
            if fail_after is not None and len(calls) > fail_after:
                raise RuntimeError("interrupted")
        return {"val_accuracy": float(accuracy[index]), "val_loss": float(loss[index])}

    return score


def _paths(result):
    return [r["path"] for r in result["evaluated"]]


# === Pareto front ===


def test_pareto_front_of_a_hand_made_set():
    a = {"name": "a", "val_accuracy": 0.90, "flops": 100}
    b = {"name": "b", "val_accuracy": 0.95, "flops": 200}
    c = {
        "name": "c",
        "val_accuracy": 0.90,
        "flops": 150,
    }  # tie in accuracy, costlier: a dominates
    d = {"name": "d", "val_accuracy": 0.95, "flops": 200}  # duplicate of b: both stay
    e = {"name": "e", "val_accuracy": 0.80, "flops": 50}
    f = {"name": "f", "val_accuracy": 0.85, "flops": 300}  # dominated by a and b
    front = pareto_front([a, b, c, d, e, f], ["accuracy", "flops"])
    assert [p["name"] for p in front] == ["a", "b", "d", "e"]
    assert pareto_front([a], "val_accuracy,flops") == [a]
    assert pareto_front([], ["val_accuracy", "flops"]) == []
    # Three objectives: c is no longer dominated when its latency is lowest.
    for p, latency in zip((a, b, c, d, e, f), (5, 5, 1, 5, 5, 5)):
        p["latency_ms"] = latency
    three = pareto_front([a, b, c, d, e, f], ["val_accuracy", "flops", "latency"])
    assert [p["name"] for p in three] == ["a", "b", "c", "d", "e"]


def test_pareto_front_refuses_bad_objectives_and_points():
    with pytest.raises(ValueError, match="`objectives`"):
        pareto_front([{"val_accuracy": 1}], ["speed"])
    with pytest.raises(ValueError, match=r"points\[0\]\['flops'\]=None"):
        pareto_front([{"val_accuracy": 1, "flops": None}], ["val_accuracy", "flops"])


# === Scoring ===


def test_path_scorer_is_repeatable_and_scores_a_path_once(supernet, arrays):
    x_val, y_val, x_train = arrays
    scorer = PathScorer(
        supernet,
        x_val,
        y_val,
        x_train,
        recalibration_batches=2,
        recalibration_batch_size=16,
    )
    first = scorer(5)
    scorer("conv1x1->skip->bn3x3")
    again = scorer((0, 1, 2))  # path 5 again, spelled otherwise
    assert again == first and scorer.num_scored == 2
    # A fresh scorer scoring path 5 after others gives the same score: the
    # BatchNorm statistics are recalibrated on the same batches.
    fresh = PathScorer(
        supernet,
        x_val,
        y_val,
        x_train,
        recalibration_batches=2,
        recalibration_batch_size=16,
    )
    fresh(20)
    assert fresh(5) == first
    assert 0 <= first["val_accuracy"] <= 1 and first["val_loss"] > 0


def test_path_scorer_arguments(supernet, arrays):
    x_val, y_val, x_train = arrays
    with pytest.raises(ValueError, match="`x_train`.*BatchNorm"):
        PathScorer(supernet, x_val, y_val)
    with pytest.raises(ValueError, match=r"`x_val`.*\(N, 8, 8, 1\).*\(48, 8, 8\)"):
        PathScorer(supernet, x_val[..., 0], y_val, x_train)
    with pytest.raises(ValueError, match="`y_val`"):
        PathScorer(supernet, x_val, y_val[:3], x_train)
    with pytest.raises(ValueError, match="`num_examples`"):
        PathScorer(supernet, x_val, y_val, x_train, num_examples=0)
    # Without recalibration, no training images are needed.
    scorer = PathScorer(
        supernet, x_val, y_val, recalibration_batches=0, num_examples=10
    )
    assert len(scorer.x_val) == 10 and not scorer.recalibrate


def test_a_refitted_score_is_its_own_whatever_was_scored_before(supernet, arrays):
    x_val, y_val, x_train = arrays
    _, y_train = learnable_batch(32, shape=(8, 8, 1), seed=2)
    refit = [(x_train[:16], y_train[:16]), (x_train[16:], y_train[16:])]

    def scorer(**kwargs):
        return PathScorer(
            supernet,
            x_val,
            y_val,
            x_train,
            recalibration_batches=2,
            recalibration_batch_size=16,
            **kwargs,
        )

    head = [v.numpy().copy() for v in supernet.head_variables]
    first = scorer(refit_head_batches=2, refit_data=refit, refit_learning_rate=0.05)
    score = first(5)
    # The shared head is back after each path.
    assert all(
        np.array_equal(a, v.numpy()) for a, v in zip(head, supernet.head_variables)
    )
    fresh = scorer(
        refit_head_batches=2, refit_data=iter(refit), refit_learning_rate=0.05
    )
    fresh(20)
    assert fresh(5) == score
    # Re-fitting changes the score; with 0 batches the shared head scores.
    assert scorer()(5) != score
    assert scorer(refit_head_batches=0, refit_data=refit)(5) == scorer()(5)


def test_a_refit_without_training_batches_is_refused(supernet, arrays):
    x_val, y_val, x_train = arrays
    with pytest.raises(ValueError, match="`refit_data`.*Received refit_data=None"):
        PathScorer(supernet, x_val, y_val, x_train, refit_head_batches=2)
    with pytest.raises(ValueError, match="`refit_data`.*empty dataset"):
        PathScorer(supernet, x_val, y_val, x_train, refit_head_batches=2, refit_data=[])
    with pytest.raises(ValueError, match=r"`refit_data`.*\(x, y\)"):
        PathScorer(
            supernet, x_val, y_val, x_train, refit_head_batches=2, refit_data=[x_train]
        )
    with pytest.raises(ValueError, match="`refit_head_batches`"):
        PathScorer(supernet, x_val, y_val, x_train, refit_head_batches=-1)
    with pytest.raises(ValueError, match="`refit_learning_rate`"):
        PathScorer(supernet, x_val, y_val, x_train, refit_learning_rate=float("nan"))


def test_a_search_with_a_refitted_head_says_so(supernet, arrays, tmp_path, monkeypatch):
    x_val, y_val, x_train = arrays
    _, y_train = learnable_batch(32, shape=(8, 8, 1), seed=2)
    result = run_search(
        supernet,
        x_val,
        y_val,
        x_train,
        output_dir=tmp_path,
        strategy="random",
        budget=3,
        recalibration_batches=1,
        recalibration_batch_size=32,
        refit_head_batches=1,
        refit_data=[(x_train, y_train)],
        refit_learning_rate=0.05,
        verbose=0,
    )
    settings = result["settings"]
    assert settings["refit_head_batches"] == 1
    assert settings["refit_learning_rate"] == 0.05
    markdown = (tmp_path / "search.md").read_text()
    assert "the head re-fitted per path (1 training batch, Adam at 0.05)" in markdown
    # pareto.png says its scores are not the shared head's.
    labels = []
    monkeypatch.setattr(
        matplotlib.axes.Axes, "set_ylabel", lambda ax, text, **kw: labels.append(text)
    )
    search.plot_pareto(result, str(tmp_path / "again.png"))
    assert labels == ["validation accuracy (shared weights, head re-fitted)"]
    # Scored as a PathScorer re-fitting the same way scores them.
    by_hand = PathScorer(
        supernet,
        x_val,
        y_val,
        x_train,
        recalibration_batches=1,
        recalibration_batch_size=32,
        refit_head_batches=1,
        refit_data=[(x_train, y_train)],
        refit_learning_rate=0.05,
    )
    for record in result["evaluated"]:
        assert by_hand(record["path"])["val_accuracy"] == record["val_accuracy"]


# === Search ===


def test_exhaustive_search_equals_scoring_every_path_by_hand(
    supernet, arrays, tmp_path
):
    x_val, y_val, x_train = arrays
    result = run_search(
        supernet,
        x_val,
        y_val,
        x_train,
        output_dir=tmp_path,
        strategy="exhaustive",
        recalibration_batches=1,
        recalibration_batch_size=len(x_train),
        verbose=0,
    )
    assert _paths(result) == list(range(27))
    for record in result["evaluated"]:
        path = record["path"]
        # By hand: BatchNorm statistics of the path on all training images
        # (one batch), then its logits on the validation images.
        supernet.recalibrate_batchnorm([x_train], path=path)
        logits = keras.ops.convert_to_numpy(supernet.path_call(x_val, path))
        loss = keras.ops.convert_to_numpy(
            keras.losses.sparse_categorical_crossentropy(
                y_val, logits, from_logits=True
            )
        )
        assert record["val_accuracy"] == np.mean(logits.argmax(-1) == y_val)
        assert record["val_loss"] == pytest.approx(loss.mean(), rel=1e-5)
        assert record["label"] == supernet.path_label(path)
        assert record["params"] == costs.path_params(supernet, path)
        assert record["flops"] == costs.path_flops(supernet, path)
    best = max(result["evaluated"], key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert result["best"] == best
    assert result["stopped"] == "every path scored"


def test_search_outputs_are_written(supernet, tmp_path):
    result = run_search(
        supernet,
        output_dir=tmp_path,
        strategy="random",
        budget=8,
        scorer=_table_scorer(27),
        objectives="accuracy,params",
        verbose=0,
    )
    written = json.loads((tmp_path / "search.json").read_text())
    assert (
        written["evaluated"] == result["evaluated"] and len(written["evaluated"]) == 8
    )
    for key in ("path", "label", "val_accuracy", "val_loss", "params", "flops"):
        assert key in written["best"]
    assert written["pareto"] == sorted(
        pareto_front(written["evaluated"], ["val_accuracy", "params"]),
        key=lambda r: (r["params"], -r["val_accuracy"]),
    )
    assert set(written["versions"]) == {
        "keras_supernet",
        "keras",
        "tensorflow",
        "optuna",
    }
    assert written["settings"]["strategy"] == "random"
    markdown = (tmp_path / "search.md").read_text()
    for section in (
        "## Best path",
        "## Top 8 paths",
        "## Pareto front",
        "## Convergence",
    ):
        assert section in markdown
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "search.db").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_constraints_are_honoured(supernet, tmp_path):
    every = [costs.path_costs(supernet, p) for p in range(27)]
    limit = float(np.median([c["flops"] for c in every]))
    result = run_search(
        supernet,
        output_dir=tmp_path,
        strategy="evolution",
        budget=6,
        max_flops=limit,
        max_params=10_000,
        scorer=_table_scorer(27),
        search_seed=3,
        verbose=0,
    )
    assert result["num_scored"] == 6
    assert all(r["flops"] <= limit for r in result["evaluated"])
    assert all(r["params"] <= 10_000 for r in result["evaluated"])
    # Proposals that broke a constraint were repaired, not thrown away.
    assert result["settings"]["repair"] is not None
    assert result["proposals"]["infeasible"] == 0
    assert result["num_proposals"] == 6 + result["proposals"]["duplicate"]


def test_a_reference_path_is_scored_beside_the_search_and_sets_its_limits(
    supernet, tmp_path
):
    reference = "bn3x3->conv1x1->skip"
    index = supernet.space.index(reference)
    own = costs.path_costs(supernet, index)
    calls = []
    arguments = dict(
        output_dir=tmp_path,
        budget=6,
        reference=reference,
        max_params="reference",
        max_flops=own["flops"] * 10,
        scorer=_table_scorer(27, calls=calls),
        search_seed=2,
        verbose=0,
    )
    result = run_search(supernet, **arguments)
    score = _table_scorer(27)(index)
    assert result["reference"] == {
        "path": index,
        "label": reference,
        **score,
        "params": own["params"],
        "flops": own["flops"],
    }
    # Scored once, outside the budget.
    assert calls.count(index) == 1 + _paths(result).count(index)
    assert result["num_scored"] == 6
    assert result["constraints"] == {
        "max_params": own["params"],
        "max_flops": own["flops"] * 10,
    }
    assert result["settings"]["max_params"] == "reference"
    assert result["settings"]["reference"] == index
    assert all(r["params"] <= own["params"] for r in result["evaluated"])
    markdown = (tmp_path / "search.md").read_text()
    assert "## Reference path" in markdown
    assert f"max_params={own['params']:g} (the reference path's)" in markdown
    # Rerun: resumed as it was, the reference not scored again.
    before = len(calls)
    assert run_search(supernet, **arguments)["evaluated"] == result["evaluated"]
    assert len(calls) == before
    # Another reference is another search.
    arguments["reference"] = "skip->skip->skip"
    with pytest.raises(ValueError, match=r"other settings \(reference: "):
        run_search(supernet, **arguments)


@pytest.mark.parametrize("strategy", ["random", "evolution", "regularized", "local"])
def test_a_budget_that_almost_no_path_meets_is_searched_by_repair(
    huge, tmp_path, strategy
):
    # 3**20 paths; at most two 1x1 convolutions and skips elsewhere: 211
    # paths, one in 17 million. Rejecting proposals would score none.
    every = costs.path_costs(huge, huge.num_paths - 1)["params"]
    one_by_one = costs.path_params(huge, huge.space.index((1,) + (2,) * 19))
    limit = every + 2 * (one_by_one - every)
    runs = [
        run_search(
            huge,
            output_dir=tmp_path / str(i),
            strategy=strategy,
            budget=20,
            max_params=limit,
            scorer=lambda p: {
                "val_accuracy": p % 97 / 100,
                "val_loss": p % 89 / 100,
            },
            search_seed=5,
            verbose=0,
        )
        for i in range(2)
    ]
    result = runs[0]
    # Walks that end on a path already proposed step on to a new one.
    assert result["num_scored"] == 20 and result["proposals"] == {
        "scored": 20,
        "infeasible": 0,
        "duplicate": 0,
    }
    assert all(r["params"] <= limit for r in result["evaluated"])
    # Repairs draw from the search seed: the same seed, the same search.
    assert _paths(runs[1]) == _paths(result)


@pytest.mark.slow
def test_constraints_on_measured_latency_reject_without_repair(supernet, tmp_path):
    # Walking neighbours would measure each one: too slow, so not done.
    result = run_search(
        supernet,
        output_dir=tmp_path,
        strategy="random",
        budget=2,
        max_latency_ms=1e6,
        scorer=_table_scorer(27),
        verbose=0,
    )
    assert result["settings"]["repair"] is None
    assert result["num_scored"] == 2


def test_impossible_constraint_is_one_error_naming_the_smallest_cost(
    supernet, tmp_path
):
    smallest = min(costs.path_params(supernet, p) for p in range(27))
    with pytest.raises(ValueError) as error:
        run_search(
            supernet,
            output_dir=tmp_path,
            strategy="random",
            budget=5,
            max_params=smallest - 1,
            scorer=_table_scorer(27),
            verbose=0,
        )
    message = str(error.value)
    assert message.startswith(f"No path satisfies max_params={smallest - 1}:")
    assert f"smallest params of any path is {smallest:,}" in message
    assert "\n" not in message


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["regularized", "local"])
def test_a_climb_under_a_tight_budget_spends_its_proposals_on_new_paths(
    huge, tmp_path, strategy
):
    # 211 of 3**20 paths fit. A climb whose neighbours break the budget must
    # not propose them again and again (each repaired onto a path already
    # scored): nearly every proposal scores a new path.
    every = costs.path_costs(huge, huge.num_paths - 1)["params"]
    one_by_one = costs.path_params(huge, huge.space.index((1,) + (2,) * 19))
    limit = every + 2 * (one_by_one - every)
    result = run_search(
        huge,
        output_dir=tmp_path,
        strategy=strategy,
        budget=60,
        max_params=limit,
        max_proposals=75,
        scorer=lambda p: {"val_accuracy": p % 97 / 100, "val_loss": p % 89 / 100},
        search_seed=1,
        verbose=0,
    )
    assert result["num_scored"] == 60, result["proposals"]


def test_a_search_under_a_tight_constraint_ends(supernet, tmp_path):
    # Only the 4 paths of smallest FLOPs fit: the budget cannot be scored,
    # and the search stops after max_proposals proposals.
    limit = sorted(costs.path_flops(supernet, p) for p in range(27))[3]
    fitting = [p for p in range(27) if costs.path_flops(supernet, p) <= limit]
    assert len(fitting) == 4
    result = run_search(
        supernet,
        output_dir=tmp_path,
        strategy="random",
        budget=10,
        max_flops=limit,
        max_proposals=40,
        scorer=_table_scorer(27),
        verbose=0,
    )
    assert 1 <= len(result["evaluated"]) < 10 and set(_paths(result)) <= set(fitting)
    assert result["num_proposals"] == 40
    assert result["stopped"] == "max_proposals (40) reached"


def test_a_search_stops_once_its_proposals_find_no_new_path(supernet, tmp_path):
    # Only 4 paths fit a budget of 10: once they are scored, every proposal
    # is a repeat, and the search stops after stall_proposals of them in a
    # row instead of running on to max_proposals.
    limit = sorted(costs.path_flops(supernet, p) for p in range(27))[3]

    def search(stall_proposals):
        return run_search(
            supernet,
            output_dir=tmp_path,
            strategy="random",
            budget=10,
            max_flops=limit,
            max_proposals=500,
            stall_proposals=stall_proposals,
            scorer=_table_scorer(27),
            verbose=0,
        )

    result = search(15)
    assert len(result["evaluated"]) == 4
    assert result["stopped"] == "no new path in the last 15 proposals"
    assert result["settings"]["stall_proposals"] == 15
    assert result["num_proposals"] < 500
    # The last 15 proposals are repeats; the one before them scored a path.
    import optuna

    study = optuna.load_study(
        study_name=result["study_name"], storage=f"sqlite:///{tmp_path / 'search.db'}"
    )
    outcomes = [t.user_attrs["record"]["outcome"] for t in study.trials]
    assert len(outcomes) == result["num_proposals"]
    assert outcomes[-16:] == ["scored"] + ["duplicate"] * 15
    # A longer stall window resumes the same search (it decides when the
    # search stops, not what it proposes) and runs on to it.
    resumed = search(30)
    assert resumed["stopped"] == "no new path in the last 30 proposals"
    assert resumed["num_proposals"] == result["num_proposals"] + 15
    assert [r["path"] for r in resumed["evaluated"]] == [
        r["path"] for r in result["evaluated"]
    ]


def test_a_budget_only_one_path_meets_is_found_by_repair(huge, tmp_path):
    # In 3**20 paths only the all-skip path has the smallest FLOPs; random
    # proposals repaired walk down to it.
    index, smallest = costs.cheapest_path(huge, "flops")
    result = run_search(
        huge,
        output_dir=tmp_path,
        strategy="random",
        budget=5,
        max_flops=smallest,
        max_proposals=30,
        scorer=lambda p: {"val_accuracy": 0.5, "val_loss": 1.0},
        verbose=0,
    )
    assert _paths(result) == [index]
    assert result["num_proposals"] == 30
    assert result["proposals"]["duplicate"] == 29


@pytest.mark.slow
def test_constraints_no_proposal_met_are_one_error(supernet, tmp_path):
    # Latency measured per path is not repaired; no path takes 1 ns.
    with pytest.raises(ValueError) as error:
        run_search(
            supernet,
            output_dir=tmp_path,
            strategy="random",
            budget=5,
            max_latency_ms=1e-6,
            max_proposals=2,
            scorer=_table_scorer(27),
            verbose=0,
        )
    message = str(error.value)
    assert message.startswith(
        "No path satisfying max_latency_ms=1e-06 was found in 2 proposals: "
        "the smallest latency_ms proposed is "
    ), message
    assert "\n" not in message


def test_budget_covering_the_space_scores_every_path(supernet, tmp_path):
    for strategy in ("random", "evolution"):
        result = run_search(
            supernet,
            output_dir=tmp_path / strategy,
            strategy=strategy,
            budget=100,
            scorer=_table_scorer(27),
            verbose=0,
        )
        assert sorted(_paths(result)) == list(range(27))


@pytest.mark.parametrize("strategy", ["random", "evolution", "regularized", "local"])
def test_same_seed_same_search(supernet, tmp_path, strategy):
    def run(name, seed):
        return run_search(
            supernet,
            output_dir=tmp_path / name,
            strategy=strategy,
            budget=12,
            search_seed=seed,
            population_size=None if strategy == "random" else 4,
            scorer=_table_scorer(27),
            verbose=0,
        )

    first, second, other = run("a", 0), run("b", 0), run("c", 1)
    assert first["evaluated"] == second["evaluated"]
    assert first["best"] == second["best"]
    assert _paths(first) != _paths(other)
    assert len(set(_paths(first))) == 12


def test_evolution_converges_on_a_learnable_score(tmp_path):
    # 4**4 = 256 paths whose score rewards candidate 0 in every choice: the
    # best path is found by evolution with a fraction of the space.
    inputs, outputs = choice_space(
        num_choices=4, specs=("conv3x3", "conv1x1", "bn3x3", "skip")
    )
    big = Supernet(inputs=inputs, outputs=outputs, seed=0)

    def score(index):
        indices = big.space.resolve(index)
        good = sum(k == 0 for k in indices) + 0.1 * sum(k == 1 for k in indices)
        return {"val_accuracy": good / 4, "val_loss": 1 - good / 4}

    result = run_search(
        big,
        output_dir=tmp_path,
        strategy="evolution",
        budget=60,
        population_size=10,
        scorer=score,
        verbose=0,
    )
    assert result["best"]["path"] == 0


@pytest.mark.parametrize("strategy", ["evolution", "regularized", "local"])
def test_resume_after_an_interruption_equals_an_uninterrupted_search(
    supernet, tmp_path, strategy
):
    settings = dict(
        strategy=strategy,
        budget=14,
        population_size=4,
        search_seed=7,
        max_flops=30_000,
        verbose=0,
    )
    whole = run_search(
        supernet, output_dir=tmp_path / "whole", scorer=_table_scorer(27), **settings
    )
    calls = []
    with pytest.raises(RuntimeError, match="interrupted"):
        run_search(
            supernet,
            output_dir=tmp_path / "cut",
            scorer=_table_scorer(27, calls=calls, fail_after=6),
            **settings,
        )
    assert len(calls) == 7
    resumed = run_search(
        supernet, output_dir=tmp_path / "cut", scorer=_table_scorer(27), **settings
    )
    assert resumed["evaluated"] == whole["evaluated"]
    assert resumed["best"] == whole["best"] and resumed["pareto"] == whole["pareto"]
    assert resumed["proposals"] == whole["proposals"]
    # A larger budget continues the same search.
    more = run_search(
        supernet,
        output_dir=tmp_path / "cut",
        scorer=_table_scorer(27),
        **dict(settings, budget=18),
    )
    assert _paths(more)[:14] == _paths(whole) and len(more["evaluated"]) == 18


def test_a_larger_budget_keeps_the_default_population(huge, tmp_path):
    def score(index):
        return {"val_accuracy": (index % 89) / 89, "val_loss": 0.0}

    first = run_search(
        huge,
        output_dir=tmp_path,
        strategy="evolution",
        budget=8,
        scorer=score,
        verbose=0,
    )
    assert first["settings"]["population_size"] == search._default_population(8)
    more = run_search(
        huge,
        output_dir=tmp_path,
        strategy="evolution",
        budget=400,
        max_proposals=10,
        scorer=score,
        verbose=0,
    )
    assert search._default_population(400) != search._default_population(8)
    assert more["settings"]["population_size"] == search._default_population(8)
    assert _paths(more)[:8] == _paths(first) and more["num_proposals"] == 10


def test_a_search_with_other_settings_is_not_resumed(supernet, tmp_path):
    run_search(
        supernet,
        output_dir=tmp_path,
        strategy="random",
        budget=3,
        scorer=_table_scorer(27),
        verbose=0,
    )
    with pytest.raises(ValueError, match="other settings.*search_seed: 0 there, 1 now"):
        run_search(
            supernet,
            output_dir=tmp_path,
            strategy="random",
            budget=3,
            search_seed=1,
            scorer=_table_scorer(27),
            verbose=0,
        )


@pytest.mark.parametrize(
    "arguments, match",
    [
        (
            dict(strategy="grid", budget=5),
            r"`strategy`.*'exhaustive', 'random', 'evolution'.*strategy='grid'",
        ),
        (dict(strategy="random", budget=0), r"`budget`.*positive integer.*budget=0"),
        (dict(strategy="random"), r"`budget`.*budget=None"),
        (dict(strategy="exhaustive", budget=5), r"`budget`.*every path \(27\)"),
        (
            dict(strategy="random", budget=5, objectives=["flops"]),
            r"`objectives`.*objectives=\['flops'\]",
        ),
        (
            dict(strategy="random", budget=5, objectives="accuracy,speed"),
            r"`objectives`",
        ),
        (dict(strategy="random", budget=5, max_flops=-1), r"`max_flops`.*max_flops=-1"),
        (
            dict(strategy="random", budget=5, max_flops="reference"),
            r"`max_flops`.*`reference` path.*max_flops='reference', reference=None",
        ),
        (
            dict(strategy="random", budget=5, reference="conv9x9->skip->skip"),
            r"`reference`.*conv9x9",
        ),
        (dict(strategy="evolution", budget=5, population_size=1), r"`population_size`"),
    ],
)
def test_bad_input_is_one_clear_error(supernet, tmp_path, arguments, match):
    with pytest.raises(ValueError, match=match) as error:
        run_search(
            supernet,
            output_dir=tmp_path,
            scorer=_table_scorer(27),
            verbose=0,
            **arguments,
        )
    assert "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "search.db")


def test_exhaustive_search_of_a_huge_space_is_refused(huge, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"Exhaustive search scores every path.*3\.49e\+09 paths \(more than 4,096\)",
    ):
        run_search(
            huge,
            output_dir=tmp_path,
            strategy="exhaustive",
            scorer=_table_scorer(1),
            verbose=0,
        )


def test_search_of_a_huge_space_never_lists_its_paths(huge, tmp_path):
    # The scores depend on the index; no list of paths is ever made.

    def score(index):
        return {"val_accuracy": (index % 97) / 97, "val_loss": 0.0}

    result = run_search(
        huge,
        output_dir=tmp_path,
        strategy="evolution",
        budget=10,
        population_size=4,
        max_flops=60_000,
        scorer=score,
        verbose=0,
    )
    assert result["num_scored"] == 10 and result["num_paths"] == 3**20
    assert all(r["flops"] <= 60_000 for r in result["evaluated"])


def test_importing_the_package_loads_no_optuna_or_litert():
    # matplotlib is not checked: Keras itself imports matplotlib.pyplot
    # (keras.src.visualization).
    code = (
        "import sys, keras_supernet, keras_supernet.search, keras_supernet.costs; "
        "print(sorted(m for m in ('optuna', 'sqlalchemy', 'ai_edge_litert') "
        "if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
    ).stdout
    assert output.strip().splitlines()[-1] == "[]"


# === Processes ===

_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    import numpy as np
    from conftest import choice_space
    from keras_supernet.search import run_search
    from keras_supernet.supernet import Supernet

    inputs, outputs = choice_space(num_choices=3, specs={specs!r})
    supernet = Supernet(inputs=inputs, outputs=outputs, seed=0)
    rng = np.random.default_rng(0)
    accuracy, loss = rng.integers(0, 100, 27) / 100, rng.uniform(size=27)
    kill_after = int(sys.argv[2])
    calls = []

    def score(index):
        calls.append(index)
        if len(calls) > kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(float(sys.argv[3]))
        return {{"val_accuracy": float(accuracy[index]), "val_loss": float(loss[index])}}

    if len(sys.argv) > 5:
        # Start together: a worker that started late could find the budget
        # already spent.
        barrier, count = sys.argv[5], int(sys.argv[6])
        open(os.path.join(barrier, str(os.getpid())), "w").close()
        while len(os.listdir(barrier)) < count:
            time.sleep(0.05)

    run_search(supernet, output_dir=sys.argv[1], strategy=sys.argv[4], budget=14,
               population_size=4, search_seed=7, scorer=score, verbose=0)
    """
)


def _worker(
    tmp_path, output_dir, kill_after, sleep=0.0, strategy="evolution", barrier=()
):
    """A process running `run_search`; `barrier` (folder, count) makes it
    wait until `count` workers have reached the search."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(tests=os.path.join(ROOT, "tests"), specs=SPECS))
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(output_dir),
            str(kill_after),
            str(sleep),
            strategy,
            *map(str, barrier),
        ],
        env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["evolution", "regularized"])
def test_resume_after_kill_9_equals_an_uninterrupted_search(
    supernet, tmp_path, strategy
):
    whole = run_search(
        supernet,
        output_dir=tmp_path / "whole",
        strategy=strategy,
        budget=14,
        population_size=4,
        search_seed=7,
        scorer=_table_scorer(27),
        verbose=0,
    )
    process = _worker(tmp_path, tmp_path / "killed", kill_after=5, strategy=strategy)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == -9, output
    assert not (tmp_path / "killed" / "search.json").exists()
    resumed = run_search(
        supernet,
        output_dir=tmp_path / "killed",
        strategy=strategy,
        budget=14,
        population_size=4,
        search_seed=7,
        scorer=_table_scorer(27),
        verbose=0,
    )
    assert resumed["evaluated"] == whole["evaluated"]
    assert resumed["best"] == whole["best"]


@pytest.mark.slow
def test_processes_score_one_study_in_parallel(tmp_path):
    import optuna

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workers = [
        _worker(
            tmp_path,
            tmp_path / "shared",
            kill_after=10**6,
            sleep=0.2,
            barrier=(barrier, 2),
        )
        for _ in range(2)
    ]
    for process in workers:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
    study = optuna.load_study(
        study_name="search", storage=f"sqlite:///{tmp_path / 'shared' / 'search.db'}"
    )
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert len(pids) == 2
    paths = [t.user_attrs["record"]["path"] for t in complete]
    # Each process stops once the study holds the budget; the one still
    # scoring then may add its last path.
    assert 14 <= len(set(paths)) <= 15
    result = json.loads((tmp_path / "shared" / "search.json").read_text())
    assert len(result["evaluated"]) == len(set(paths))


# === Latency ===


@pytest.mark.slow
def test_latency_from_a_table_constrains_and_is_recorded(supernet, tmp_path):
    table = costs.LatencyTable.build(supernet, runs=3, warmup=1, calibration_paths=2)
    path = table.save(tmp_path / "table.json")
    limit = float(np.median([table.predict(p) for p in range(27)]))
    result = run_search(
        supernet,
        output_dir=tmp_path / "search",
        strategy="random",
        budget=5,
        max_latency_ms=limit,
        latency_table=path,
        objectives="accuracy,latency",
        scorer=_table_scorer(27),
        verbose=0,
    )
    for record in result["evaluated"]:
        assert record["latency_ms"] == table.predict(record["path"]) <= limit
    assert result["pareto_objectives"] == ["val_accuracy", "latency_ms"]
    assert "latency table" in result["settings"]["latency"]
    # A reference's latency is predicted by the same table, and is the limit.
    reference = int(np.argsort([table.predict(p) for p in range(27)])[13])
    result = run_search(
        supernet,
        output_dir=tmp_path / "reference",
        strategy="random",
        budget=5,
        reference=reference,
        max_latency_ms="reference",
        latency_table=path,
        scorer=_table_scorer(27),
        verbose=0,
    )
    assert result["reference"]["latency_ms"] == table.predict(reference)
    assert result["constraints"] == {"max_latency_ms": table.predict(reference)}
    assert all(r["latency_ms"] <= table.predict(reference) for r in result["evaluated"])


def test_a_latency_budget_is_repaired_by_the_table_alone(huge, tmp_path, monkeypatch):
    # bn3x3 takes 2 ms, conv1x1 1 ms, skip nothing: under 2 ms, one bn3x3 or
    # at most two conv1x1 and skips elsewhere. A repair walk looks at
    # many neighbours; it must read their latency from the table, not count
    # their parameters and FLOPs (extracting each path where a choice's
    # output width varies). Those are counted for the proposals only.
    choices = [
        {"input_shapes": [[8, 8, 4]], "ms": [[2.0, 1.0, 0.0]]}
        for _ in range(huge.space.num_choices)
    ]
    table = costs.LatencyTable(huge.space, choices, base_ms=0.0)
    counted = []
    path_costs = costs.path_costs
    monkeypatch.setattr(
        costs, "path_costs", lambda s, p: counted.append(p) or path_costs(s, p)
    )
    result = run_search(
        huge,
        output_dir=tmp_path,
        strategy="random",
        budget=5,
        max_latency_ms=2.0,
        latency_table=table,
        scorer=lambda p: {"val_accuracy": p % 97 / 100, "val_loss": p % 89 / 100},
        search_seed=1,
        verbose=0,
    )
    assert result["num_scored"] == 5
    assert all(r["latency_ms"] <= 2.0 for r in result["evaluated"])
    assert len(set(counted)) <= result["num_proposals"]


@pytest.mark.slow
def test_latency_is_measured_without_a_table(tmp_path):
    report = Supernet(seed=0)
    result = run_search(
        report,
        output_dir=tmp_path,
        strategy="exhaustive",
        objectives="accuracy,latency",
        scorer=_table_scorer(4),
        verbose=0,
    )
    assert _paths(result) == [0, 1, 2, 3]
    assert all(r["latency_ms"] > 0 for r in result["evaluated"])
    assert "measured" in result["settings"]["latency"]


# === The strategy study ===


def test_strategy_study_ranks_the_path_each_search_returns(supernet, tmp_path):
    score = _table_scorer(27, seed=4)
    scores = [{"path": p, **score(p)} for p in range(27)]
    study = search.strategy_study(
        supernet, scores, str(tmp_path), fractions=(0.2, 1.0), seeds=(0, 1)
    )
    order = sorted(
        range(27), key=lambda p: (-scores[p]["val_accuracy"], scores[p]["val_loss"], p)
    )
    assert study["num_paths"] == 27 and study["top1_rank"] == 1
    assert study["best_path"] == order[0]
    assert len(study["runs"]) == 2 * 2 * 2
    for run in study["runs"]:
        assert run["rank"] == order.index(run["path"]) + 1
        assert run["num_scored"] == run["budget"]
    # A budget covering the space scores every path: the best, every time.
    full = [r for r in study["summary"] if r["budget"] == 27]
    assert [r["ranks"] for r in full] == [[1, 1], [1, 1]]
    assert all(r["top1_hits"] == 2 for r in full)
    with pytest.raises(ValueError, match="every one of the 27 paths"):
        search.strategy_study(supernet, scores[:5], str(tmp_path / "x"))


# === Regularized evolution ===


@pytest.fixture(scope="module")
def space256():
    """4**4 = 256 paths."""
    inputs, outputs = choice_space(
        num_choices=4, specs=("conv3x3", "conv1x1", "bn3x3", "skip")
    )
    return Supernet(inputs=inputs, outputs=outputs, seed=0)


def _smooth_scores(space, seed=0):
    """A score per path that is a sum of per-choice, per-candidate values
    plus a little noise: neighbouring paths score alike."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(size=(space.num_choices, 4))
    noise = rng.normal(scale=0.02, size=space.num_paths)
    scores = []
    for p in range(space.num_paths):
        indices = space.resolve(p)
        good = sum(values[c, k] for c, k in enumerate(indices)) / space.num_choices
        scores.append(
            {
                "path": p,
                "val_accuracy": float(good + noise[p]),
                "val_loss": float(1 - good),
            }
        )
    return scores


def test_regularized_evolution_mutates_exactly_one_choice(space256, tmp_path):
    space = space256.space
    scores = _smooth_scores(space)
    population = 5
    result = run_search(
        space256,
        output_dir=tmp_path,
        strategy="regularized",
        budget=40,
        population_size=population,
        tournament_size=2,
        search_seed=3,
        scorer=lambda p: scores[p],
        verbose=0,
    )
    assert result["settings"]["population_size"] == population
    assert result["settings"]["tournament_size"] == 2
    paths = _paths(result)
    assert len(set(paths)) == 40
    for i in range(population, len(paths)):
        # Each child differs in exactly one choice from a member of the
        # population it was bred from: the last `population` scored paths.
        child = space.resolve(paths[i])
        distances = [
            sum(a != b for a, b in zip(child, space.resolve(parent)))
            for parent in paths[i - population : i]
        ]
        assert 1 in distances, (i, distances)


def test_regularized_evolution_defaults_and_refusals(space256, tmp_path):
    scores = _smooth_scores(space256.space)
    result = run_search(
        space256,
        output_dir=tmp_path / "a",
        strategy="regularized",
        budget=26,
        scorer=lambda p: scores[p],
        verbose=0,
    )
    population = search._default_population(26, "regularized")
    assert result["settings"]["population_size"] == population
    assert result["settings"]["tournament_size"] == max(2, population // 4)
    assert result["settings"]["sampler"] == "regularized evolution"
    with pytest.raises(ValueError, match="one objective"):
        run_search(
            space256,
            output_dir=tmp_path / "b",
            strategy="regularized",
            budget=10,
            objectives="val_accuracy,flops",
            scorer=lambda p: scores[p],
            verbose=0,
        )
    with pytest.raises(ValueError, match="tournament_size"):
        run_search(
            space256,
            output_dir=tmp_path / "c",
            strategy="regularized",
            budget=10,
            population_size=4,
            tournament_size=5,
            scorer=lambda p: scores[p],
            verbose=0,
        )


def test_local_search_climbs_from_the_best_path_scored(space256, tmp_path):
    space = space256.space
    scores = _smooth_scores(space)
    result = run_search(
        space256,
        output_dir=tmp_path,
        strategy="local",
        budget=40,
        population_size=3,
        search_seed=5,
        scorer=lambda p: scores[p],
        verbose=0,
    )
    assert result["settings"]["population_size"] == 3
    paths = _paths(result)
    assert len(set(paths)) == 40

    def value(p):
        return scores[p]["val_accuracy"]

    for i in range(3, len(paths)):
        # The child is a one-choice neighbour of the best earlier path that
        # still had a neighbour nobody had proposed.
        earlier = paths[:i]
        open_paths = [
            p for p in earlier if any(q not in earlier for q in space.neighbours(p))
        ]
        parent = max(open_paths, key=value)
        assert paths[i] in space.neighbours(parent), i


def test_local_search_defaults_and_refusals(space256, tmp_path):
    scores = _smooth_scores(space256.space)
    # Local search is the default strategy with one objective.
    result = run_search(
        space256,
        output_dir=tmp_path / "a",
        budget=26,
        scorer=lambda p: scores[p],
        verbose=0,
    )
    assert result["settings"]["strategy"] == "local"
    assert search._default_population(26, "local") == 2
    assert search._default_population(1000, "local") == 10
    assert result["settings"]["population_size"] == 2
    assert result["settings"]["tournament_size"] is None
    assert result["settings"]["sampler"] == "local search"
    several = run_search(
        space256,
        output_dir=tmp_path / "several",
        budget=8,
        objectives="val_accuracy,flops",
        scorer=lambda p: scores[p],
        verbose=0,
    )
    assert several["settings"]["strategy"] == "evolution"
    refused = [
        (
            dict(strategy="local", tournament_size=2),
            "`tournament_size`: strategy='local' does",
        ),
        (
            dict(strategy="random", population_size=4),
            "`population_size`: strategy='random'",
        ),
        (
            dict(strategy="local", objectives="val_accuracy,flops"),
            "Local search searches one",
        ),
    ]
    for i, (settings, message) in enumerate(refused):
        with pytest.raises(ValueError, match=message):
            run_search(
                space256,
                output_dir=tmp_path / f"refused{i}",
                budget=10,
                scorer=lambda p: scores[p],
                verbose=0,
                **settings,
            )
        # Refused before anything is written.
        assert not (tmp_path / f"refused{i}").exists()


def test_the_single_objective_searches_beat_random_on_a_smooth_score(
    space256, tmp_path
):
    study = search.strategy_study(
        space256,
        _smooth_scores(space256.space),
        str(tmp_path),
        strategies=("random", "regularized", "local"),
        fractions=(0.1,),
        seeds=range(6),
    )
    rows = {r["strategy"]: r for r in study["summary"]}
    random_ranks = rows["random"]["ranks"]
    for strategy in ("regularized", "local"):
        assert rows[strategy]["top1_hits"] > rows["random"]["top1_hits"], strategy
        assert np.mean(rows[strategy]["ranks"]) < np.mean(random_ranks), strategy
    # Even local search's worst seed beats random search's median one.
    assert max(rows["local"]["ranks"]) < np.median(random_ranks)
