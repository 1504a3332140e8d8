"""bin/search and bin/export --from_search end to end, on a tiny run folder.

The run folder is a joint supernet of 27 paths (three choices of conv3x3,
sep3x3, skip, with BatchNorm) trained for one epoch on the MNIST subset by
`experiment.run_experiment`: accuracies are low, but the search only has to
score the paths the way the library does.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from keras_supernet import runs
from keras_supernet import search
from keras_supernet import training
from keras_supernet.experiment import run_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_DIR = os.path.join(ROOT, "tests", "data", "mnist_small")
BIN = os.path.join(ROOT, "bin")

# Lines TensorFlow's C++ runtime writes to stderr whatever the program does.
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions:)"
)

SPACE = {
    "stem": {"filters": 4, "kernel_size": 3, "strides": 2},
    "stages": [
        {"filters": 4, "blocks": 3, "candidates": ["conv3x3", "sep3x3", "skip"]}
    ],
    "head": {"hidden_units": 0},
    "batchnorm": True,
}


def _run(tool, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, os.path.join(BIN, tool), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line and not _TF_NOISE.match(line)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("run") / "run")
    run_experiment(
        output_dir,
        mode="joint",
        space=SPACE,
        data_dir=SMALL_DIR,
        epochs=1,
        batch_size=64,
        learning_rate=3e-3,
        train_size=1000,
        val_size=300,
        verbose=0,
    )
    return output_dir


def _search(run_dir, tmp_path_factory, *args):
    """`(output_dir, result, search.json)` of bin/search on 200 validation
    examples, in a new folder."""
    output_dir = str(tmp_path_factory.mktemp("search") / "search")
    result = _run(
        "search",
        f"--run_dir={run_dir}",
        *args,
        "--num_examples=200",
        f"--output_dir={output_dir}",
        "--verbose=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(output_dir, "search.json")) as f:
        return output_dir, result, json.load(f)


@pytest.fixture(scope="module")
def exhaustive(run_dir, tmp_path_factory):
    """bin/search scoring every path on 200 validation examples."""
    return _search(run_dir, tmp_path_factory, "--strategy=exhaustive")


@pytest.mark.slow
def test_search_scores_every_path_as_the_library_does(run_dir, exhaustive):
    output_dir, result, found = exhaustive
    assert sorted(r["path"] for r in found["evaluated"]) == list(range(27))
    assert found["settings"]["run"] == {
        "run_dir": os.path.realpath(run_dir),
        "mode": "joint",
        "seed": 0,
        "epoch": 1,
    }
    # By hand: the run's supernet at epoch 1, its validation split, and
    # BatchNorm recalibrated on the batches training evaluated paths with.
    loaded = runs.RunFolder(run_dir).load("joint", 0, None, 1)
    data = training.run_data(loaded.config)
    x_val = [x for x, _ in data.val.as_numpy_iterator()]
    y_val = [y for _, y in data.val.as_numpy_iterator()]
    scorer = search.PathScorer(
        loaded.supernet,
        np.concatenate(x_val),
        np.concatenate(y_val),
        num_examples=200,
        recalibration_data=data.bn(),
    )
    by_path = {r["path"]: r for r in found["evaluated"]}
    for path in (0, 13, 26):
        expected = scorer(path)
        assert by_path[path]["val_accuracy"] == expected["val_accuracy"]
        assert by_path[path]["val_loss"] == pytest.approx(
            expected["val_loss"], rel=1e-5
        )
    best = max(found["evaluated"], key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert found["best"]["path"] == best["path"]
    assert f"Best: path {best['path']} ({best['label']})" in result.stdout
    assert sorted(os.listdir(output_dir)) == [
        "pareto.png",
        "search.db",
        "search.json",
        "search.md",
    ]


@pytest.mark.slow
def test_search_refits_each_paths_head_on_the_runs_training_batches(run_dir, tmp_path):
    result = _run(
        "search",
        f"--run_dir={run_dir}",
        "--strategy=random",
        "--budget=3",
        "--refit_head_batches=2",
        "--num_examples=100",
        f"--output_dir={tmp_path / 'search'}",
        "--verbose=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "search" / "search.json") as f:
        found = json.load(f)
    loaded = runs.RunFolder(run_dir).load("joint", 0, None, 1)
    assert found["settings"]["refit_head_batches"] == 2
    assert found["settings"]["refit_learning_rate"] == loaded.config.learning_rate
    # By hand: the first 2 batches of the run's data order of seed 0, at
    # the run's learning rate, after BatchNorm recalibration.
    data = training.run_data(loaded.config)
    scorer = search.PathScorer(
        loaded.supernet,
        np.concatenate([x for x, _ in data.val.as_numpy_iterator()]),
        np.concatenate([y for _, y in data.val.as_numpy_iterator()]),
        num_examples=100,
        recalibration_data=data.bn(),
        refit_head_batches=2,
        refit_data=data.batches(0, 2),
        refit_learning_rate=loaded.config.learning_rate,
    )
    for record in found["evaluated"]:
        expected = scorer(record["path"])
        assert record["val_accuracy"] == expected["val_accuracy"]
        assert record["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_search_honours_a_flops_budget(run_dir, exhaustive, tmp_path):
    flops = sorted(r["flops"] for r in exhaustive[2]["evaluated"])
    limit = flops[len(flops) // 2]
    result = _run(
        "search",
        f"--run_dir={run_dir}",
        "--strategy=random",
        "--budget=5",
        "--search_seed=3",
        f"--max_flops={limit}",
        "--num_examples=100",
        f"--output_dir={tmp_path / 'search'}",
        "--verbose=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "search" / "search.json") as f:
        found = json.load(f)
    assert found["num_scored"] == 5
    assert all(r["flops"] <= limit for r in found["evaluated"])


@pytest.mark.slow
def test_search_under_the_flops_of_a_reference_path(run_dir, exhaustive, tmp_path):
    by_flops = sorted(exhaustive[2]["evaluated"], key=lambda r: (r["flops"], r["path"]))
    reference = by_flops[len(by_flops) // 2]
    result = _run(
        "search",
        f"--run_dir={run_dir}",
        "--budget=5",
        f"--reference={reference['label']}",
        "--max_flops=reference",
        "--num_examples=200",
        f"--output_dir={tmp_path / 'search'}",
        "--verbose=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "search" / "search.json") as f:
        found = json.load(f)
    # Scored as the exhaustive search scored it, on the same examples.
    assert found["reference"] == reference
    assert found["constraints"] == {"max_flops": reference["flops"]}
    assert all(r["flops"] <= reference["flops"] for r in found["evaluated"])
    assert f"Reference: path {reference['path']} ({reference['label']})" in (
        result.stdout
    )


@pytest.mark.slow
def test_search_under_a_latency_budget_builds_and_reuses_a_table(run_dir, tmp_path):
    table = tmp_path / "table.json"
    args = (
        f"--run_dir={run_dir}",
        "--strategy=random",
        "--budget=4",
        "--max_latency_ms=1000",
        f"--latency_table={table}",
        "--build_latency_table",
        "--num_examples=100",
        f"--output_dir={tmp_path / 'search'}",
        "--verbose=0",
    )
    result = _run("search", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    written = table.read_text()
    with open(tmp_path / "search" / "search.json") as f:
        found = json.load(f)
    assert all(0 < r["latency_ms"] <= 1000 for r in found["evaluated"])
    assert "latency table" in found["settings"]["latency"]
    # The same command again: the table is reused, the search resumed.
    again = _run("search", *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert table.read_text() == written
    with open(tmp_path / "search" / "search.json") as f:
        assert json.load(f)["evaluated"] == found["evaluated"]


def _bad_inputs(run_dir, tmp_path):
    return {
        "unknown_run_folder": (
            [f"--run_dir={tmp_path}/nowhere"],
            r"nowhere",
        ),
        "epoch_not_kept": (["--epoch=9"], r"Epoch 9 .* was not kept.*Kept epochs: 1\."),
        "unknown_strategy": (["--strategy=grid"], r"strategy"),
        "budget_0": (
            ["--strategy=random", "--budget=0"],
            r"argument `budget`.*budget=0",
        ),
        "impossible_budget": (
            ["--strategy=random", "--budget=3", "--max_flops=10"],
            r"max_flops.*\d",
        ),
        "limit_not_a_number": (
            ["--strategy=random", "--budget=3", "--max_flops=lots"],
            r"argument `max_flops`.*a number or 'reference'.*max_flops='lots'",
        ),
        "reference_limit_without_reference": (
            ["--strategy=random", "--budget=3", "--max_params=reference"],
            r"argument `max_params`.*reference=None",
        ),
        "standalone": (["--mode=standalone"], r"argument `mode`.*joint"),
        "tournament_above_population": (
            [
                "--strategy=regularized",
                "--budget=3",
                "--population_size=2",
                "--tournament_size=3",
            ],
            r"argument `tournament_size`.*population_size \(2\)",
        ),
        "max_proposals_0": (
            ["--strategy=random", "--budget=3", "--max_proposals=0"],
            r"argument `max_proposals`",
        ),
        "refit_head_batches_negative": (
            ["--strategy=random", "--budget=3", "--refit_head_batches=-1"],
            r"argument `refit_head_batches`",
        ),
        "stall_proposals_0": (
            ["--strategy=random", "--budget=3", "--stall_proposals=0"],
            r"argument `stall_proposals`",
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "unknown_run_folder",
        "epoch_not_kept",
        "unknown_strategy",
        "budget_0",
        "impossible_budget",
        "limit_not_a_number",
        "reference_limit_without_reference",
        "standalone",
        "tournament_above_population",
        "max_proposals_0",
        "refit_head_batches_negative",
        "stall_proposals_0",
    ],
)
def test_search_bad_input_is_one_line(run_dir, tmp_path, case):
    args, message = _bad_inputs(run_dir, tmp_path)[case]
    if not any(a.startswith("--run_dir") for a in args):
        args = [f"--run_dir={run_dir}", *args]
    result = _run("search", *args, f"--output_dir={tmp_path / 'search'}")
    assert result.returncode == 1, result.stderr[-2000:]
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert result.stdout == ""


@pytest.mark.slow
def test_export_from_search_exports_the_best_path(run_dir, exhaustive, tmp_path):
    output_dir, _, found = exhaustive
    best = found["best"]
    result = _run(
        "export",
        f"--run_dir={run_dir}",
        f"--from_search={output_dir}",
        f"--export_dir={tmp_path / 'models'}",
        "--formats=saved_model",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Exported joint path {best['path']} ({best['label']}), seed 0, epoch 1" in (
        result.stdout
    )
    metadata_files = [
        os.path.join(d, f)
        for d, _, files in os.walk(tmp_path / "models")
        for f in files
        if f.endswith(".json")
    ]
    assert metadata_files, os.listdir(tmp_path / "models")


@pytest.fixture(scope="module")
def refit_search(run_dir, tmp_path_factory):
    """bin/search re-fitting each path's head on 3 training batches."""
    return _search(
        run_dir,
        tmp_path_factory,
        "--strategy=random",
        "--budget=3",
        "--refit_head_batches=3",
    )


@pytest.mark.slow
def test_export_from_a_refit_search_exports_the_head_it_scored(
    run_dir, refit_search, tmp_path
):
    import tensorflow as tf

    from keras_supernet import data as data_lib

    output_dir, _, found = refit_search
    best, epoch = found["best"]["path"], found["settings"]["run"]["epoch"]
    models = tmp_path / "models"
    result = _run(
        "export",
        f"--run_dir={run_dir}",
        f"--from_search={output_dir}",
        f"--export_dir={models}",
        "--formats=saved_model",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "head re-fitted on 3 training batches" in result.stdout
    (name,) = os.listdir(models)
    with open(models / name / "1" / "assets.extra" / "export_info.json") as f:
        assert json.load(f)["head_refit_batches"] == 3
    serve = tf.saved_model.load(str(models / name / "1")).signatures["serving_default"]

    # The path as the search scored it, rebuilt here: BatchNorm
    # recalibrated, then the head re-fitted on the run's first 3 batches.
    loaded = runs.RunFolder(run_dir).load("joint", 0, best, epoch)
    supernet, config = loaded.supernet, loaded.config
    run_data = training.run_data(config, SMALL_DIR)
    supernet.recalibrate_batchnorm(run_data.bn(), path=best, batches=10**9)
    images = data_lib.load_arrays("mnist", SMALL_DIR)["test"][0][:200]
    images = images.reshape(-1, 28, 28, 1).astype("float32")
    mean, std = config.normalization["mean"], config.normalization["std"]
    x = (images / 255.0 - mean) / std

    def probabilities():
        return tf.nn.softmax(supernet(x, training=False)).numpy()

    shared = probabilities()
    with supernet.head_refitted(
        run_data.batches(0, 3), best, batches=3, learning_rate=config.learning_rate
    ):
        refitted = probabilities()
    served = serve(images=tf.constant(images))["probabilities"].numpy()
    assert np.abs(served - refitted).max() < 1e-5
    # The re-fit moved the head, so the check above tells the two apart.
    assert np.abs(shared - refitted).max() > 1e-3

    # Exporting the search's path another way is refused.
    result = _run(
        "export",
        f"--run_dir={run_dir}",
        f"--from_search={output_dir}",
        "--refit_head_batches=5",
        f"--export_dir={tmp_path / 'other'}",
    )
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and re.search(
        r"argument `refit_head_batches`.*re-fitted on 3 batches", lines[0]
    ), result.stderr[-2000:]
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_export_path_takes_a_label_of_search_json(run_dir, exhaustive, tmp_path):
    label = exhaustive[2]["evaluated"][5]["label"]
    result = _run(
        "export",
        f"--run_dir={run_dir}",
        f"--path={label}",
        "--epoch=1",
        f"--export_dir={tmp_path / 'models'}",
        "--formats=saved_model",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Exported joint path 5 ({label})" in result.stdout


@pytest.mark.slow
def test_export_refuses_a_search_of_another_run(run_dir, exhaustive, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    with open(os.path.join(run_dir, "results.json")) as f:
        (other / "results.json").write_text(f.read())
    for args, message in (
        ([f"--run_dir={other}"], r"scored the supernet of .*, not of run_dir="),
        ([f"--run_dir={run_dir}", "--epoch=2"], r"argument `epoch`.*epoch 1"),
        ([f"--run_dir={run_dir}", "--path=0"], r"either --path or --from_search"),
    ):
        result = _run(
            "export",
            *args,
            f"--from_search={exhaustive[0]}",
            f"--export_dir={tmp_path / 'models'}",
        )
        assert result.returncode == 1, result.stderr[-2000:]
        lines = _error_lines(result.stderr)
        assert len(lines) == 1 and re.search(message, lines[0]), result.stderr[-2000:]
    assert not (tmp_path / "models").exists()
