import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_supernet import Choice
from keras_supernet import PaddedDense
from keras_supernet import SupernetLayer
from keras_supernet import candidates
from keras_supernet import routing

INPUTS = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
SEEDED = keras.initializers.GlorotUniform(seed=3)


def _choice(**kwargs):
    return Choice(
        [
            keras.layers.Conv2D(
                4, 3, padding="same", kernel_initializer=SEEDED, name="c3"
            ),
            keras.layers.Conv2D(
                4, 5, padding="same", kernel_initializer=SEEDED, name="c5"
            ),
            keras.layers.Conv2D(4, 3, name="valid"),
        ],
        labels=["conv3x3", "conv5x5", "valid3x3"],
        **kwargs,
    )


# === Choice ===


def test_choice_runs_only_its_active_candidate():
    choice = _choice()
    for index, size in enumerate((28, 28, 26)):
        choice.set_active(index)
        out = choice(INPUTS)
        assert out.shape == (2, size, size, 4)
        np.testing.assert_array_equal(out, choice.candidates[index](INPUTS))
    choice.set_active("conv5x5")
    assert int(choice.active_index.numpy()) == 1


def test_choice_output_shape_is_unknown_where_candidates_disagree():
    choice = _choice()
    assert choice.compute_output_shape((None, 28, 28, 1)) == (None, None, None, 4)
    assert choice.candidate_output_shapes((None, 28, 28, 1)) == (
        (None, 28, 28, 4),
        (None, 28, 28, 4),
        (None, 26, 26, 4),
    )
    same = Choice([keras.layers.Dense(3), keras.layers.Dense(3)])
    assert same.compute_output_shape((None, 5)) == (None, 3)


def test_choice_switches_without_retracing():
    choice = _choice()
    choice.build((None, 28, 28, 1))
    fn = tf.function(lambda x: choice(x))
    shapes = []
    for index in (0, 2, 1):
        choice.set_active(index)
        shapes.append(tuple(fn(INPUTS).shape))
    assert shapes == [(2, 28, 28, 4), (2, 26, 26, 4), (2, 28, 28, 4)]
    assert fn.experimental_get_tracing_count() == 1


def test_each_candidate_keeps_its_own_weights():
    choice = _choice()
    choice.build((None, 28, 28, 1))
    kernels = [c.kernel for c in choice.candidates]
    assert [tuple(k.shape) for k in kernels] == [
        (3, 3, 1, 4),
        (5, 5, 1, 4),
        (3, 3, 1, 4),
    ]
    assert len({id(v) for v in choice.trainable_variables}) == 6
    assert choice.active_index.dtype == "int32"
    assert not choice.active_index.trainable


def test_choice_labels_default_to_candidate_names():
    choice = Choice(
        [keras.layers.Dense(2, name="small"), keras.layers.Identity(name="skip")]
    )
    assert choice.labels == ("small", "skip")


def test_routed_examples_each_take_their_candidate():
    choice = Choice(
        [keras.layers.Conv2D(4, k, padding="same") for k in (1, 3, 5)],
        labels=["c1", "c3", "c5"],
    )
    choice.build((None, 28, 28, 1))
    x = np.concatenate([INPUTS, INPUTS[::-1]])
    route = tf.constant([1, 0, 1, 1], "int32")
    recorder = routing.UsageRecorder()
    plan = routing.Plan(routes={choice: route}, recorder=recorder)
    with routing.planned(plan):
        out = choice(x[:, :, :, :])
    for i, k in enumerate(route.numpy()):
        np.testing.assert_allclose(
            out[i], choice.candidates[k](x[i : i + 1])[0], atol=1e-6
        )
    ((kind, masks, groups),) = recorder.entries()
    assert kind == "masks" and [bool(m) for m in masks] == [True, True, False]


def test_choice_config_round_trip_rebuilds_candidates():
    choice = _choice(name="block")
    config = json.loads(json.dumps(choice.get_config()))
    clone = Choice.from_config(config)
    assert clone.labels == choice.labels and clone.name == "block"
    assert [c.get_config() for c in clone.candidates] == [
        c.get_config() for c in choice.candidates
    ]


def test_choice_dtype_reaches_nested_candidate_layers():
    block = candidates.separable(4, 3)
    choice = Choice([block, keras.layers.Identity()], dtype="mixed_float16")
    choice.build((None, 8, 8, 4))
    for layer in block.layers:
        assert layer.compute_dtype == "float16", layer.name
    assert block.get_layer("depthwise").kernel.dtype == "float32"
    out = choice(np.zeros((1, 8, 8, 4), "float32"))
    assert out.dtype == "float16"


@pytest.mark.parametrize(
    "args, message",
    [
        (([],), "`candidates`"),
        ((None,), "`candidates`"),
        (([keras.layers.Dense(2), "relu"],), r"candidates\[1\]"),
        (([keras.layers.Dense(2)], ["a", "b"]), "`labels`"),
        (([keras.layers.Dense(2), keras.layers.Dense(2)], ["a", "a"]), "`labels`"),
    ],
)
def test_bad_choice_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        Choice(*args)


def test_same_candidate_twice_is_refused():
    dense = keras.layers.Dense(2, name="twice")
    with pytest.raises(ValueError, match="'twice' more than once"):
        Choice([dense, dense])


def test_candidates_of_different_ranks_are_refused():
    choice = Choice([keras.layers.Flatten(), keras.layers.Identity()], name="mixed")
    with pytest.raises(ValueError, match="different ranks"):
        choice(keras.Input((4, 4, 1)))


def test_bad_active_index():
    choice = _choice()
    for index in (3, -1, True, "conv7x7"):
        with pytest.raises(ValueError, match="`index`"):
            choice.set_active(index)


# === SupernetLayer ===


def test_supernet_layer_builds_conv_pool_candidates_in_kernel_order():
    layer = SupernetLayer(kernel_sizes=(3, 5), filters=4, kernel_initializer=SEEDED)
    layer.build((None, 28, 28, 1))
    assert layer.labels == ("3x3", "5x5")
    assert [c.get_layer("conv").kernel_size for c in layer.candidates] == [
        (3, 3),
        (5, 5),
    ]
    for index, size in enumerate((13, 12)):
        layer.set_active(index)
        assert layer(INPUTS).shape == (2, size, size, 4)


def test_supernet_layer_seeds_each_candidate_differently_and_reproducibly():
    def kernels(seed):
        layer = SupernetLayer(
            (3, 5), 4, kernel_initializer=keras.initializers.GlorotUniform(seed=seed)
        )
        layer.build((None, 28, 28, 1))
        return [c.get_layer("conv").kernel.numpy() for c in layer.candidates]

    a, b = kernels(1), kernels(1)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], kernels(2)[0])


def test_supernet_layer_config_round_trip():
    layer = SupernetLayer(
        (1, 3), 6, padding="same", pool_size=3, aggregation="sum", name="l"
    )
    config = json.loads(json.dumps(layer.get_config()))
    assert "candidates" not in config
    clone = SupernetLayer.from_config(config)
    assert clone.get_config() == config


def test_supernet_layer_candidate_that_empties_the_map_is_named():
    layer = SupernetLayer((3, 11), 2)
    with pytest.raises(
        ValueError, match="Candidate '11x11' of choice .* cannot take an input"
    ):
        layer.build((None, 10, 10, 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_sizes": ()}, "`kernel_sizes`"),
        ({"kernel_sizes": (3, 3)}, "`kernel_sizes`"),
        ({"filters": 0}, "`filters`"),
        ({"padding": "causal"}, "`padding`"),
        ({"pool_size": 0}, "`pool_size`"),
        ({"aggregation": "mean"}, "`aggregation`"),
    ],
)
def test_bad_supernet_layer_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SupernetLayer(**kwargs)


# === Candidate builders ===


def test_builders_name_and_shape_their_blocks():
    x = np.zeros((2, 8, 8, 4), "float32")
    for block, label, shape in [
        (candidates.conv(6, 3), "conv3x3", (2, 8, 8, 6)),
        (candidates.conv(6, 5, strides=2, batchnorm=False), "conv5x5", (2, 4, 4, 6)),
        (candidates.separable(6, 3), "sep3x3", (2, 8, 8, 6)),
        (
            candidates.inverted_residual(4, 3, input_channels=4, expansion=2),
            "mb3x3_e2",
            (2, 8, 8, 4),
        ),
        (candidates.skip(), "skip", (2, 8, 8, 4)),
    ]:
        assert block.name == label
        assert tuple(block(x).shape) == shape


def test_inverted_residual_adds_its_input_when_shapes_allow():
    block = candidates.inverted_residual(4, 3, input_channels=4, expansion=2)
    assert "residual" in [layer.name for layer in block.layers]
    other = candidates.inverted_residual(8, 3, input_channels=4, expansion=2)
    assert "residual" not in [layer.name for layer in other.layers]
    inner = block.get_layer("expand")
    block(np.zeros((1, 8, 8, 4), "float32"))
    assert inner.filters == 8


def test_choice_from_specs():
    choice = candidates.choice(
        ["conv3x3", "sep5x5", "mb3x3_e3", "skip"], 4, input_channels=4, seed=0
    )
    assert choice.labels == ("conv3x3", "sep5x5", "mb3x3_e3", "skip")
    choice.build((None, 8, 8, 4))
    assert choice.compute_output_shape((None, 8, 8, 4)) == (None, 8, 8, 4)


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("conv3x5", {}, "Invalid candidate spec"),
        ("pool3x3", {}, "Invalid candidate spec"),
        ("conv3x3_e2", {}, "only 'mb' blocks"),
        ("skip", {"strides": 2}, "a skip cannot change the shape"),
        ("mb3x3_e3", {}, "needs the input's channel count"),
    ],
)
def test_bad_candidate_specs(spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        candidates.from_spec(spec, 4, **kwargs)


# === PaddedDense ===


def _padded(**kwargs):
    layer = PaddedDense(
        6,
        widths=(5, 3, 8, 5),
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=4),
        bias_initializer=keras.initializers.RandomNormal(seed=5),
        **kwargs,
    )
    layer.build((None, 8))
    return layer


def test_padded_dense_blocks_cut_at_every_width():
    layer = _padded()
    assert layer.widths == (3, 5, 8)
    assert [tuple(b.shape) for b in layer.kernel_blocks] == [(3, 6), (2, 6), (3, 6)]
    assert [b.path.split("/")[-1] for b in layer.kernel_blocks] == [
        "kernel_rows_0_3",
        "kernel_rows_3_5",
        "kernel_rows_5_8",
    ]
    assert layer.blocks_for(5) == layer.kernel_blocks[:2]


def test_padded_dense_initial_kernel_is_the_full_width_dense_kernel():
    dense = keras.layers.Dense(
        6, kernel_initializer=keras.initializers.GlorotUniform(seed=4)
    )
    dense.build((None, 8))
    np.testing.assert_array_equal(_padded().kernel, dense.kernel)


@pytest.mark.parametrize("width", [3, 5, 8])
def test_padded_dense_equals_dense_on_the_zero_padded_input(width):
    layer = _padded()
    x = np.random.default_rng(width).normal(size=(4, width)).astype("float32")
    padded = np.pad(x, [(0, 0), (0, 8 - width)])
    expected = np.maximum(
        padded @ np.asarray(layer.kernel) + np.asarray(layer.bias), 0.0
    )
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
    # A width known only at run time is dispatched to the same arithmetic.
    fn = tf.function(lambda v: layer(v), input_signature=[tf.TensorSpec((None, None))])
    np.testing.assert_array_equal(fn(x), layer(x))
    assert layer.compute_output_shape((None, width)) == (None, 6)


def test_padded_dense_runtime_width_records_the_blocks_it_used():
    layer = _padded()
    recorder = routing.UsageRecorder()

    @tf.function(input_signature=[tf.TensorSpec((None, None))])
    def fn(x):
        with routing.planned(routing.Plan(recorder=recorder)):
            layer(x)
        kind, masks, groups = recorder.entries()[0]
        return tf.stack(masks)

    assert fn(np.zeros((1, 5), "float32")).numpy().tolist() == [True, True, False]
    assert fn(np.zeros((1, 3), "float32")).numpy().tolist() == [True, False, False]


def test_narrow_input_gets_no_gradient_on_wider_rows():
    layer = _padded()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(np.ones((2, 5), "float32")))
    gradients = tape.gradient(loss, layer.kernel_blocks)
    assert gradients[0] is not None and gradients[1] is not None
    assert gradients[2] is None


def test_padded_dense_refuses_unknown_widths():
    with pytest.raises(ValueError, match="accepts inputs of width 3, 5, 8"):
        _padded()(np.zeros((1, 4), "float32"))
    for widths in [(), (0, 3), (2.5,), None, (True,)]:
        with pytest.raises(ValueError, match="argument `widths`"):
            PaddedDense(2, widths=widths)


def test_padded_dense_config_and_weights_round_trip(tmp_path):
    layer = _padded(name="head")
    clone = PaddedDense.from_config(layer.get_config())
    assert (clone.widths, clone.units, clone.name) == ((3, 5, 8), 6, "head")
    path = str(tmp_path / "head.weights.h5")
    keras.Sequential([keras.Input((8,)), layer]).save_weights(path)
    other = keras.Sequential([keras.Input((8,)), _padded()])
    for block in other.layers[0].kernel_blocks:
        block.assign(np.zeros(block.shape, "float32"))
    other.load_weights(path)
    np.testing.assert_array_equal(other.layers[0].kernel, layer.kernel)


def test_padded_dense_loads_one_full_kernel():
    # keras_supernet 0.1.0 saved the hidden layer as a Dense.
    layer = _padded()
    kernel = np.arange(48, dtype="float32").reshape(8, 6)
    layer.load_own_variables({"0": kernel, "1": np.ones(6, "float32")})
    np.testing.assert_array_equal(layer.kernel, kernel)
    with pytest.raises(ValueError, match=r"saved kernel of shape \(8, 6\)"):
        layer.load_own_variables({"0": kernel[:5], "1": np.ones(6, "float32")})
