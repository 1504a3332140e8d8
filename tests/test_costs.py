"""Tests of keras_supernet.costs: parameters, FLOPs, LiteRT latency and the
latency table, on the report's preset and small synthetic spaces."""

import json

import keras
import numpy as np
import pytest

from conftest import choice_space
from conftest import stage_space
from keras_supernet import Choice
from keras_supernet import candidates
from keras_supernet import costs
from keras_supernet.extract import extract_path
from keras_supernet.supernet import Supernet

# The report's paths (28x28x1 input, valid convolutions, 2x2 max pooling,
# Dense 128, Dense 10), counted by hand. First layer: Conv2D 16 filters,
# kxk on 1 channel, giving (29 - k)^2 positions; pooled to (29 - k) // 2.
# Second layer: Conv2D 32 filters kxk on 16 channels; pooled and flattened.
_CONV1 = {3: (26, 9 * 16 + 16), 5: (24, 25 * 16 + 16)}  # (output side, params)
_CONV2 = {3: 9 * 16 * 32 + 32, 5: 25 * 16 * 32 + 32}


def _report_by_hand(k1, k2):
    side1, params1 = _CONV1[k1]
    pooled1 = side1 // 2
    side2 = pooled1 - k2 + 1
    pooled2 = side2 // 2
    flat = pooled2 * pooled2 * 32
    params = params1 + _CONV2[k2] + (flat * 128 + 128) + (128 * 10 + 10)
    flops = (
        side1 * side1 * 16 * k1 * k1 * 1
        + side2 * side2 * 32 * k2 * k2 * 16
        + flat * 128
        + 128 * 10
    )
    return params, flops


REPORT_BY_HAND = {
    # label: (params, multiply-adds), the arithmetic of _report_by_hand.
    "3x3->3x3": (108_618, 758_592),
    "3x3->5x5": (79_946, 1_200_960),
    "5x5->3x3": (108_874, 794_880),
    "5x5->5x5": (80_202, 1_116_416),
}


@pytest.fixture(scope="module")
def report():
    return Supernet(seed=0)


@pytest.fixture(scope="module")
def small():
    """27 paths: 3 choices of conv3x3 / conv1x1 / skip, one input shape."""
    inputs, outputs = choice_space(num_choices=3, specs=("conv3x3", "conv1x1", "skip"))
    return Supernet(inputs=inputs, outputs=outputs, seed=0)


# === Parameters and FLOPs ===


@pytest.mark.parametrize("label", sorted(REPORT_BY_HAND))
def test_report_paths_params_and_flops_match_hand_counts(report, label):
    k1, k2 = (int(part[0]) for part in label.split("->"))
    assert _report_by_hand(k1, k2) == REPORT_BY_HAND[label]
    params, flops = REPORT_BY_HAND[label]
    assert costs.path_params(report, label) == params
    assert costs.path_flops(report, label) == flops
    # Exactly the extracted model's count.
    assert extract_path(report, label).count_params() == params


def test_model_flops_counts_strides_groups_depthwise_and_separable():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", groups=2)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    x = keras.layers.SeparableConv2D(6, 3, padding="same")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)
    model = keras.Model(inputs, outputs)
    expected = (
        4 * 4 * 8 * 9 * (4 // 2)  # strided, grouped conv: 4x4 outputs
        + 0  # BatchNorm: folded
        + 4 * 4 * 8 * 2 * 9  # depthwise, multiplier 2: 16 channels
        + 4 * 4 * 16 * 9
        + 4 * 4 * 16 * 6  # separable: depthwise + pointwise
        + 6 * 5  # dense
    )
    assert costs.model_flops(model) == expected


def test_model_flops_walks_nested_blocks_of_unknown_input_size():
    # An inverted residual is a functional block built for inputs of any
    # size; its layers are counted at the size they get in the model.
    inputs = keras.Input((6, 6, 4))
    block = candidates.inverted_residual(4, 3, input_channels=4, expansion=2)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(block(inputs)))
    model = keras.Model(inputs, outputs)
    expected = (
        36 * 4 * 8  # expand 1x1: 4 -> 8 channels
        + 36 * 8 * 9  # depthwise 3x3
        + 36 * 8 * 4  # project 1x1
        + 36 * 4 * 3  # dense on 6*6*4
    )
    assert costs.model_flops(model) == expected


def test_a_layer_with_weights_of_unknown_cost_is_refused():
    inputs = keras.Input((5, 4))
    outputs = keras.layers.LayerNormalization(name="norm")(inputs)
    with pytest.raises(ValueError, match="'norm' \\(LayerNormalization\\)"):
        costs.model_flops(keras.Model(inputs, outputs))


def test_summed_costs_equal_the_walk_of_the_plain_model():
    # Every choice sees one input shape: costs are summed from per-candidate
    # parts. They must equal the walk of each path's plain model.
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    for i in range(3):
        x = candidates.choice(
            ["conv3x3", "sep3x3", "mb3x3_e2", "skip"],
            8,
            input_channels=8,
            seed=i,
            name=f"choice_{i}",
        )(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    supernet = Supernet(inputs=inputs, outputs=outputs, seed=0)
    walk = costs._PathCosts(supernet)
    assert costs._costs(supernet).static
    for path in (0, 5, 27, 63):
        summed = costs.path_costs(supernet, path)
        plain = extract_path(supernet, path, verify=False)
        assert summed["params"] == plain.count_params()
        assert summed["flops"] == costs.model_flops(plain)
        assert summed["flops"] == walk._walk_plain(path)["flops"]


def _stage_space(blocks=1):
    return Supernet(*stage_space(blocks), seed=0)


def test_costs_sum_parts_where_a_choice_changes_the_head_width(monkeypatch):
    # Every choice sees one input shape, but the stage's output width (and
    # so the logits' rows) depends on the path: the rest of the graph is
    # walked once per width, not once per path, and every sum is exact.
    supernet = _stage_space()
    walked = []
    original = costs._PathCosts._walk_plain
    monkeypatch.setattr(
        costs._PathCosts,
        "_walk_plain",
        lambda self, index: walked.append(index) or original(self, index),
    )
    for path in range(supernet.num_paths):
        summed = costs.path_costs(supernet, path)
        plain = extract_path(supernet, path, verify=False)
        assert summed["params"] == plain.count_params()
        assert summed["flops"] == costs.model_flops(plain)
    assert len(walked) == 3


@pytest.mark.parametrize("cost", ["params", "flops"])
def test_cheapest_path_where_a_choice_changes_the_head_width(cost):
    # 108 paths: too many to cost every one for the answer.
    supernet = _stage_space(blocks=3)
    index, value = costs.cheapest_path(supernet, cost)
    every = [costs.path_costs(supernet, p)[cost] for p in range(supernet.num_paths)]
    assert value == min(every) == every[index]


def test_cheapest_path_gives_up_beyond_the_output_key_limit(monkeypatch):
    # Three head widths, more combinations than allowed, and too many paths
    # to cost them all: no exact answer, rather than a walk of every key.
    monkeypatch.setattr(costs, "CHEAPEST_KEYS_LIMIT", 2)
    assert costs.cheapest_path(_stage_space(blocks=3), "params") is None


def test_choice_input_shapes_follow_the_path(report):
    assert costs.choice_input_shapes(report, "3x3->5x5") == ((28, 28, 1), (13, 13, 16))
    assert costs.choice_input_shapes(report, "5x5->5x5") == ((28, 28, 1), (12, 12, 16))


@pytest.mark.parametrize("cost", ["params", "flops"])
def test_cheapest_path_is_the_minimum_over_every_path(small, report, cost):
    for supernet in (small, report):
        index, value = costs.cheapest_path(supernet, cost)
        every = [costs.path_costs(supernet, p)[cost] for p in range(supernet.num_paths)]
        assert value == min(every) == every[index]


def test_unknown_path_is_refused(report):
    with pytest.raises(ValueError, match="Unknown path 4"):
        costs.path_params(report, 4)


# === Latency ===


def test_latency_arguments_are_checked(report):
    with pytest.raises(ValueError, match="`threads`"):
        costs.measure_latency(report, 0, threads=0)
    with pytest.raises(ValueError, match="`runs`"):
        costs.LatencyTable.build(report, runs=0)
    with pytest.raises(ValueError, match="`calibration_paths`"):
        costs.LatencyTable.build(report, calibration_paths=0)


def _check_sums(table, supernet):
    for path in range(supernet.num_paths):
        entries = table.entries(path)
        assert len(entries) == supernet.space.num_choices
        assert table.predict(path) == pytest.approx(
            table.base_ms + sum(entries), abs=1e-12
        )


@pytest.mark.slow
def test_latency_table_of_a_small_space_predicts_sums_of_entries(small, tmp_path):
    table = costs.LatencyTable.build(small, runs=5, warmup=1, calibration_paths=2)
    # Identical blocks at identical shapes are timed once: 3 candidates.
    assert table.info["blocks_timed"] == 3
    assert table.path_shapes is None
    assert [c["input_shapes"] for c in table.choices] == [[[8, 8, 4]]] * 3
    rows = [c["ms"][0] for c in table.choices]
    assert rows[0] == rows[1] == rows[2] and all(v > 0 for v in rows[0])
    _check_sums(table, small)
    # Path 5 is conv3x3 -> conv1x1 -> skip.
    assert table.entries(5) == [rows[0][0], rows[1][1], rows[2][2]]
    # base_ms makes the calibration paths' prediction their median residual.
    residuals = [c["measured_ms"] - c["entries_ms"] for c in table.info["calibration"]]
    assert table.base_ms == pytest.approx(float(np.median(residuals)))
    # A JSON round trip predicts the same.
    path = table.save(tmp_path / "table.json")
    loaded = costs.LatencyTable.load(path)
    assert json.load(open(path))["format"] == costs.TABLE_FORMAT
    assert [loaded.predict(p) for p in range(27)] == [
        table.predict(p) for p in range(27)
    ]
    with pytest.raises(ValueError, match="built for a space"):
        loaded.check(Supernet(seed=0))


@pytest.mark.slow
def test_blocks_that_differ_only_by_dropout_share_a_latency_entry():
    # Dropout and noise layers are the identity in an exported model: a
    # stage with them is timed as the stage without (timing both would
    # give the same block two noisy entries, and a budget set by one of
    # them could refuse the other).
    def stage(*extra):
        return keras.Sequential(
            [
                keras.layers.Conv2D(4, 3),
                *extra,
                keras.layers.Flatten(),
                keras.layers.Dense(8),
            ]
        )

    inputs = keras.Input((8, 8, 2))
    x = Choice(
        [
            stage(),
            stage(keras.layers.Dropout(0.25, seed=1)),
            stage(keras.layers.SpatialDropout2D(0.5), keras.layers.GaussianNoise(0.1)),
            stage(keras.layers.Conv2D(4, 1)),
        ],
        name="stage",
    )(inputs)
    supernet = Supernet(inputs=inputs, outputs=keras.layers.Dense(10)(x), seed=0)
    table = costs.LatencyTable.build(supernet, runs=3, warmup=1, calibration_paths=2)
    assert table.info["blocks_timed"] == 2
    row = table.choices[0]["ms"][0]
    assert row[0] == row[1] == row[2] != row[3]


@pytest.mark.slow
def test_latency_table_of_path_dependent_shapes_and_its_evaluation(report):
    # The report's second choice sees 13x13 or 12x12 inputs: one row each.
    table = costs.LatencyTable.build(report, runs=5, warmup=1, calibration_paths=2)
    assert table.choices[1]["input_shapes"] == [[13, 13, 16], [12, 12, 16]]
    assert table.path_shapes == [[0, 0], [0, 0], [0, 1], [0, 1]]
    assert table.entries("5x5->5x5")[1] == table.choices[1]["ms"][1][1]
    _check_sums(table, report)
    evaluation = costs.evaluate_latency_table(report, table, runs=5, warmup=1)
    assert [p["path"] for p in evaluation["paths"]] == [0, 1, 2, 3]
    for p in evaluation["paths"]:
        assert p["predicted_ms"] == table.predict(p["path"]) and p["measured_ms"] > 0
    assert evaluation["mape_percent"] >= 0
    for key in ("pearson", "spearman"):
        assert evaluation[key] is None or -1 <= evaluation[key] <= 1


def test_latency_table_files_are_checked(tmp_path):
    bad = tmp_path / "table.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="Invalid latency table"):
        costs.LatencyTable.load(bad)
    with pytest.raises(ValueError, match="Cannot read the latency table"):
        costs.LatencyTable.load(tmp_path / "missing.json")
