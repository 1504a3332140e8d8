"""Tests of keras_supernet.bench and bin/bench: schema and sanity, no timings.

Speed lives in the benchmark itself: these tests run every section on tiny
settings and check the structure of the results and that every ratio is a
positive finite number, whatever the machine's load.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_supernet import bench
from keras_supernet import presets
from keras_supernet.spaces import SearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "tests", "data", "mnist_small")

TINY = dataclasses.replace(
    bench.QUICK,
    batch_size=16,
    steps=1,
    rounds=2,
    warmup=0,
    epoch_examples=64,
    epoch_rounds=1,
    batch_sizes=(8, 16),
    spaces=("2x2",),
    large_space="mnist5",
    sample_paths=2,
    compile_choices=(1,),
    compile_spaces=(),
    inference_calls=1,
    inference_rounds=1,
    throughput_batch=8,
    train_size=96,
    val_size=64,
    epochs=1,
    joint_epochs=2,
)


def _history(accuracies, seconds_per_epoch):
    return [
        {
            "epoch": e + 1,
            "val_accuracy": a,
            "seconds": seconds_per_epoch * (e + 1),
            "wall_seconds": 2 * seconds_per_epoch * (e + 1),
        }
        for e, a in enumerate(accuracies)
    ]


def _runs(joint_accuracies, standalone_accuracies):
    runs = []
    for path, accuracies in enumerate(joint_accuracies):
        runs.append(
            {
                "mode": "joint",
                "seed": 0,
                "path": path,
                "label": f"p{path}",
                "history": _history(accuracies, 10.0),
            }
        )
    for path, accuracies in enumerate(standalone_accuracies):
        runs.append(
            {
                "mode": "standalone",
                "seed": 0,
                "path": path,
                "label": f"p{path}",
                "history": _history(accuracies, 10.0),
            }
        )
    return runs


@pytest.fixture(scope="module")
def results():
    return bench.run_benchmark(
        settings=TINY, quick=True, sections=bench.SECTIONS, data_dir=DATA_DIR
    )


@pytest.mark.slow
class TestRunBenchmark:
    def test_every_section_and_metadata(self, results):
        for key in bench.SECTIONS:
            assert key in results
        assert results["schema_version"] == bench.SCHEMA_VERSION
        assert results["settings"]["batch_size"] == TINY.batch_size
        machine = results["machine"]
        assert machine["nproc"] >= 1 and machine["tensorflow"]
        assert set(results["section_seconds"]) == set(bench.SECTIONS)

    def test_every_ratio_is_positive_and_finite(self, results):
        ratios = results["ratios"]
        # 4 + 2 paths, 2 epochs, 6 samplings, 2 batch sizes and 1 space x 3
        # samplings, 4 + 3 options (no per-path step for 4**5 paths), 7
        # inference runtimes, 2 headline ratios.
        assert len(ratios) == 6 + 2 + 6 + 9 + 7 + 7 + 2
        for name, value in ratios.items():
            assert isinstance(value, float), name
            assert math.isfinite(value) and value > 0, (name, value)

    def test_summaries_have_both_clocks(self, results):
        for row in results["paths"]["spaces"]["mnist5"]["rows"]:
            for key in ("supernet_ms", "plain_ms", "ratio"):
                for clock in bench.CLOCKS:
                    summary = row[key][clock]
                    assert summary["n"] == TINY.rounds
                    assert (
                        summary["min"]
                        <= summary["q25"]
                        <= summary["median"]
                        <= summary["q75"]
                        <= summary["max"]
                    )

    def test_goals(self, results):
        goals = results["goals"]
        assert set(goals) == {
            "paths/2x2",
            "paths/mnist5",
            "epoch/2x2",
            "epoch/mnist5",
            "headline",
        }
        for name, goal in goals.items():
            assert goal["goal"] == bench.GOALS[name.split("/")[0]]
            assert goal["strict"] == (name == "headline")
            assert goal["met"] == (
                goal["value"] < goal["goal"]
                if goal["strict"]
                else goal["value"] <= goal["goal"]
            )
        worst = max(
            row["ratio"][TINY.clock]["median"]
            for row in results["paths"]["spaces"]["2x2"]["rows"]
        )
        assert goals["paths/2x2"]["value"] == worst

    def test_paths_and_epoch_per_space(self, results):
        for section in ("paths", "epoch"):
            spaces = results[section]["spaces"]
            assert list(spaces) == ["2x2", "mnist5"]
            assert spaces["2x2"]["train_step"] == "per_path"
            assert spaces["mnist5"]["train_step"] == "per_choice"
            assert spaces["mnist5"]["num_paths"] == 4**5
        assert len(results["paths"]["spaces"]["2x2"]["rows"]) == 4
        rows = results["paths"]["spaces"]["mnist5"]["rows"]
        assert len(rows) == TINY.sample_paths
        assert len({row["path"] for row in rows}) == TINY.sample_paths
        standalone = results["epoch"]["spaces"]["mnist5"]["standalone_s"]
        assert list(standalone) == [row["key"] for row in rows]

    def test_compile_rows_come_from_fresh_processes(self, results):
        rows = results["compile"]["rows"]
        assert [(r["space"], r["train_step"]) for r in rows] == [
            ("mnist1", "per_path"),
            ("mnist1", "per_choice"),
        ]
        pids = set()
        for row in rows:
            assert "errors" not in row, row.get("errors")
            assert row["num_paths"] == 4 and row["num_choices"] == 1
            pids.update(row["pids"])
            for clock in bench.CLOCKS:
                total = row["to_first_step_s"][clock]["median"]
                parts = (
                    row["build_s"][clock]["median"]
                    + row["first_step_s"][clock]["median"]
                )
                assert total == pytest.approx(parts)
            assert (
                row["peak_rss_mb"]["median"] >= (row["rss_after_import_mb"]["median"])
            )
        assert len(pids) == 2 and os.getpid() not in pids

    def test_options(self, results):
        spaces = results["options"]["spaces"]
        assert [r["option"] for r in spaces["2x2"]["rows"]] == [
            "per_path",
            "per_choice",
            "restoring",
            "shared_kernel",
        ]
        # 4**5 paths: more than the per-path step takes.
        assert [r["option"] for r in spaces["mnist5"]["rows"]] == [
            "per_choice",
            "restoring",
            "shared_kernel",
        ]
        for entry in spaces.values():
            (row,) = [r for r in entry["rows"] if r["option"] == "per_choice"]
            assert row["ratio_to_per_choice"]["cpu"]["median"] == 1.0

    def test_inference_rows(self, results):
        section = results["inference"]
        assert "skipped" not in section, section.get("skipped")
        runtimes = [row["runtime"] for row in section["rows"]]
        assert "saved_model" in runtimes and "tflite/int8" in runtimes
        for row in section["rows"]:
            assert all(v > 0 for v in row["throughput_examples_per_s"].values())

    def test_headline_histories(self, results):
        headline = results["headline"]
        joint = [r for r in headline["runs"] if r["mode"] == "joint"]
        standalone = [r for r in headline["runs"] if r["mode"] == "standalone"]
        assert len(joint) == len(standalone) == 4
        assert all(len(r["history"]) == TINY.joint_epochs for r in joint)
        assert all(len(r["history"]) == TINY.epochs for r in standalone)
        for run in headline["runs"]:
            seconds = [row["seconds"] for row in run["history"]]
            assert seconds == sorted(seconds)
        (seed,) = headline["seeds"]
        assert seed["seed"] == TINY.seed

    def test_json_round_trip_and_table(self, results, tmp_path):
        path = bench.write_json(results, tmp_path / "bench.json")
        with open(path) as f:
            assert json.load(f)["ratios"] == results["ratios"]
        table = bench.format_table(results)
        for title in (
            "Training step",
            "Epoch of",
            "Sampling strategies",
            "Step time vs",
            "Build + first training step",
            "training step by update option",
            "Inference of",
            "Headline",
            "Goals:",
        ):
            assert title in table


class TestTimeToMatch:
    def test_reached(self):
        (seed,) = bench.time_to_match(
            _runs(
                [[0.90, 0.975, 0.99], [0.91, 0.982, 0.99]],
                [[0.97, 0.98], [0.98, 0.983]],
            ),
            tolerance=0.001,
        )
        # Epoch 2: 0.975 < 0.98 - 0.001 for path 0; epoch 3 matches both.
        assert seed["reached"] and seed["match_epoch"] == 3
        assert seed["path_match_epochs"] == {"p0": 3, "p1": 2}
        assert seed["same_epoch_match"] == 3
        assert seed["joint_seconds"] == 30.0
        assert seed["standalone_seconds_sum"] == 40.0
        assert seed["ratio"] == pytest.approx(0.75)
        assert seed["ratio_to_best"] == pytest.approx(30.0 / 40.0)
        assert seed["wall_ratio"] == pytest.approx(60.0 / 80.0)

    def test_paths_may_match_at_different_epochs(self):
        # Each path is extracted from its own best epoch: p0 matches at
        # epoch 1, p1 at epoch 2, though no single epoch matches both.
        (seed,) = bench.time_to_match(
            _runs([[0.98, 0.95, 0.95], [0.90, 0.99, 0.90]], [[0.98], [0.99]]),
            tolerance=0.001,
        )
        assert seed["path_match_epochs"] == {"p0": 1, "p1": 2}
        assert seed["reached"] and seed["match_epoch"] == 2
        assert seed["ratio"] == pytest.approx(20.0 / 20.0)
        assert seed["same_epoch_match"] is None
        assert seed["same_epoch_ratio"] == pytest.approx(30.0 / 20.0)

    def test_tolerance_boundary(self):
        (seed,) = bench.time_to_match(_runs([[0.979]], [[0.98]]), tolerance=0.001)
        assert seed["match_epoch"] == 1

    def test_not_reached_is_a_lower_bound(self):
        (seed,) = bench.time_to_match(
            _runs([[0.5, 0.6]], [[0.7, 0.9, 0.8]]), tolerance=0.001
        )
        assert not seed["reached"] and seed["match_epoch"] is None
        assert seed["path_match_epochs"] == {"p0": None}
        assert seed["joint_seconds"] == 20.0
        assert seed["ratio"] == pytest.approx(20.0 / 30.0)
        assert seed["ratio_to_best"] == pytest.approx(20.0 / 20.0)
        assert seed["joint_best_gap_pp"] == {"p0": pytest.approx(-30.0)}

    def test_seed_without_both_modes_is_skipped(self):
        runs = [r for r in _runs([[0.9]], [[0.9]]) if r["mode"] == "joint"]
        assert bench.time_to_match(runs) == []


class TestSettings:
    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"steps": 0}, r"Received steps=0"),
            ({"spaces": ("4x4",)}, r"Received spaces=\('4x4',\)"),
            ({"clock": "gpu"}, r"Received clock='gpu'"),
            ({"tolerance": 1.5}, r"Received tolerance=1.5"),
            ({"train_size": -3}, r"Received train_size=-3"),
            ({"large_space": "report"}, r"Received large_space='report'"),
            ({"compile_choices": (0, 2)}, r"Received compile_choices=\(0, 2\)"),
            ({"compile_spaces": ("4x4",)}, r"Received space='4x4'"),
            ({"sample_paths": True}, r"Received sample_paths=True"),
        ],
    )
    def test_invalid(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(bench.QUICK, **kwargs)

    def test_unknown_section(self):
        with pytest.raises(ValueError, match=r"Received sections=\['bogus'\]"):
            bench.run_benchmark(settings=TINY, sections=["bogus"])


class TestSpacesAndPaths:
    def test_stage_space_20_is_the_named_space(self):
        assert bench.stage_space(20) == presets.load_space("mnist20")
        assert bench.space_spec("mnist20") == presets.load_space("mnist20")

    @pytest.mark.parametrize(
        "name, choices",
        [
            ("mnist1", 1),
            ("mnist5", 5),
            ("mnist15_narrow", 15),
            ("2x2", 2),
            ("3_layers", 3),
        ],
    )
    def test_num_choices(self, name, choices):
        assert bench.num_choices(name) == choices

    def test_narrow_filters(self):
        spec = bench.space_spec("mnist3_narrow")
        assert spec["stem"]["filters"] == 8
        assert [s["filters"] for s in spec["stages"]] == [8, 16]
        assert [s["blocks"] for s in spec["stages"]] == [2, 1]

    @pytest.mark.parametrize("name", ["mnist0", "mnist", "4x4", None])
    def test_unknown_space(self, name):
        with pytest.raises(ValueError, match="Invalid value for argument `space`"):
            bench.space_spec(name)

    def test_balanced_paths_deal_every_candidate_equally(self):
        space = SearchSpace([(f"c{i}", ("a", "b", "c", "d")) for i in range(20)])
        paths = bench.balanced_paths(space, 8, seed=3)
        assert len(set(paths)) == 8
        for choice in range(20):
            counts = np.bincount([space.resolve(p)[choice] for p in paths], minlength=4)
            assert counts.tolist() == [2, 2, 2, 2]
        assert bench.balanced_paths(space, 8, seed=3) == paths
        assert bench.balanced_paths(space, 8, seed=4) != paths

    def test_small_spaces_give_every_path(self):
        space = SearchSpace([("a", ("3x3", "5x5")), ("b", ("3x3", "5x5"))])
        assert bench.balanced_paths(space, 4) == [0, 1, 2, 3]

    def test_compile_configs_stop_the_per_path_step_at_its_limit(self):
        settings = dataclasses.replace(
            TINY, compile_choices=(1, 4, 5), compile_spaces=("2x2", "mnist5")
        )
        assert bench._compile_configs(settings) == [
            ("mnist1", "per_path"),
            ("mnist1", "per_choice"),
            ("mnist4", "per_path"),
            ("mnist4", "per_choice"),
            ("mnist5", "per_choice"),
            ("2x2", "per_path"),
            ("2x2", "per_choice"),
        ]


class TestSharedKernelPrototype:
    def test_small_kernels_are_the_centre_of_the_largest(self):
        supernet = bench.build_supernet(TINY, "mnist1")
        prototype = bench.shared_kernel_supernet(supernet, seed=0)
        (choice,) = prototype.choices
        labels = list(choice.labels)
        small, large = labels.index("conv3x3"), labels.index("conv5x5")
        groups = choice.candidate_groups()
        assert groups[small] is groups[large]
        x = np.random.default_rng(0).normal(size=(2, 14, 14, 16)).astype("float32")
        conv = choice.candidates[large].layers[0]
        kernel = conv.kernel.numpy()[1:4, 1:4]
        expected = choice.candidates[large].layers[1](
            keras.ops.conv(x, kernel, padding="same"), training=False
        )
        expected = np.maximum(expected, 0)
        actual = choice.candidate_output(small, x, training=False)
        np.testing.assert_allclose(actual, expected, atol=1e-5)
        # The other candidates are the supernet's own.
        sep = labels.index("sep3x3")
        np.testing.assert_allclose(
            choice.candidate_output(sep, x, training=False),
            choice.candidates[sep](x, training=False),
        )


class TestRegistry:
    def test_every_section_is_registered_once(self):
        assert bench.SECTIONS == (
            "paths",
            "epoch",
            "sampling",
            "scaling",
            "compile",
            "options",
            "inference",
            "headline",
        )
        for section in bench.REGISTRY:
            assert callable(section.measure) and callable(section.format)

    def test_a_failed_compile_row_keeps_the_other_rows_whole(self):
        seconds = {c: bench.summarize([2.0]) for c in bench.CLOCKS}
        good = {
            "space": "mnist1",
            "train_step": "per_choice",
            "num_choices": 1,
            "num_paths": 4,
            "import_s": seconds,
            "build_s": seconds,
            "first_step_s": seconds,
            "to_first_step_s": seconds,
            "step_ms": seconds,
            "peak_rss_mb": bench.summarize([900.0]),
            "rss_after_import_mb": bench.summarize([700.0]),
        }
        failed = {
            "space": "mnist4",
            "train_step": "per_path",
            "errors": ["stopped after 900 s"],
        }
        lines = bench._format_compile(
            {"batch_size": 8, "rounds": 1, "rows": [failed, good]},
            {"goals": {}},
        )
        assert "(cpu ms)" in lines[2] and "stopped after 900 s" in lines[4]
        assert lines[5].split()[-3:] == ["200", "2.0", "2.0"]

    @pytest.mark.slow
    def test_a_failing_child_is_an_error_entry(self):
        result = bench._run_child("mnist1", "bogus", TINY)
        assert result["error"].startswith("exit status 1")
        assert "train_step" in result["error"]


def _bin_bench(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", "bench"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


class TestCli:
    def test_results_only(self, tmp_path):
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        with open(run_dir / "results.json", "w") as f:
            json.dump({"config": {}, "runs": _runs([[0.99]], [[0.98, 0.99]])}, f)
        output = tmp_path / "bench.json"
        process = _bin_bench(
            "--sections=", f"--results={run_dir}", f"--output={output}"
        )
        assert process.returncode == 0, process.stderr
        with open(output) as f:
            written = json.load(f)
        (entry,) = written["results"]
        assert entry["seeds"][0]["match_epoch"] == 1
        assert entry["seeds"][0]["ratio"] == pytest.approx(10.0 / 20.0)
        assert "Headline (from" in process.stdout

    @pytest.mark.parametrize(
        "args, message",
        [
            (["--sections=bogus"], "Received sections=['bogus']"),
            (["--sections=", "--results=/nonexistent"], "/nonexistent"),
            (["--quick", "--steps=0"], "Received steps=0"),
        ],
    )
    def test_bad_input_is_one_line(self, tmp_path, args, message):
        process = _bin_bench(*args, f"--output={tmp_path / 'x.json'}")
        assert process.returncode == 1
        lines = process.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1]
        assert "Traceback" not in process.stderr
        assert not (tmp_path / "x.json").exists()

    def test_stray_argument_is_a_usage_error(self):
        process = _bin_bench("extra")
        assert process.returncode == 1 or process.returncode == 2
        assert "Unexpected arguments: extra" in process.stderr
