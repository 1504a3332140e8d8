import itertools
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from conftest import ROOT
from conftest import candidate_state
from conftest import changed_keys
from conftest import choice_space
from conftest import compile_model
from conftest import learnable_batch
from keras_supernet import Choice
from keras_supernet import Supernet
from keras_supernet import sampling

SMALL = {"filters": (4, 8), "hidden_units": 16, "seed": 3}


def _functional(num_choices=3, **kwargs):
    inputs, outputs = choice_space(num_choices=num_choices)
    return Supernet(inputs=inputs, outputs=outputs, **kwargs)


# === Paths of the report's preset ===


def test_preset_paths_in_product_order():
    model = Supernet(kernel_sizes=((3, 5), (3, 5, 7)), **SMALL)
    assert model.num_paths == 6
    assert model.paths == list(itertools.product((3, 5), (3, 5, 7)))
    assert [model.path_label(p) for p in range(6)] == [
        f"{a}x{a}->{b}x{b}" for a, b in model.paths
    ]
    assert model.space.choice_names == ("supernet_layer_0", "supernet_layer_1")


@pytest.mark.parametrize(
    "path",
    [2, "2", (1, 0), ["5x5", "3x3"], "5x5,3x3", "5,3", "5x5->3x3", " 5x5 ; 3x3 "],
)
def test_set_path_accepts_every_spelling(path):
    model = Supernet(**SMALL)
    model.set_path(path)
    assert model.active_path == 2
    assert model.active_indices == (1, 0)


@pytest.mark.parametrize("path", [4, -1, (5, 3), "7x7,3x3", "3x3", "3x5,3x3", 1.0])
def test_unknown_path_is_refused_with_the_valid_ones(path):
    model = Supernet(**SMALL)
    with pytest.raises(ValueError, match="Unknown path") as error:
        model.set_path(path)
    assert "0=3x3->3x3" in str(error.value) or "candidates:" in str(error.value)


def test_paths_give_their_own_outputs_and_the_padded_embedding():
    model = Supernet(**SMALL)
    x, _ = learnable_batch(4)
    outputs = [model.path_call(x, p).numpy() for p in range(4)]
    for p in range(4):
        model.set_path(p)
        np.testing.assert_array_equal(model(x).numpy(), outputs[p])
    assert len({o.tobytes() for o in outputs}) == 4
    assert [model.path_features(p) for p in range(4)] == [200, 128, 200, 128]
    embedding = model.embed(x, 1).numpy()
    assert embedding.shape == (4, 200)
    np.testing.assert_array_equal(embedding[:, 128:], 0.0)


@pytest.mark.parametrize(
    "kwargs, num_paths",
    [
        (
            {
                "kernel_sizes": ((1, 3, 5, 7), (3, 5), (3, 5)),
                "padding": "same",
                "filters": 4,
            },
            16,
        ),
        ({"kernel_sizes": ((3,),), "filters": 4, "input_shape": (9, 9, 3)}, 1),
    ],
)
def test_other_preset_spaces(kwargs, num_paths):
    model = Supernet(hidden_units=8, seed=0, **kwargs)
    assert model.num_paths == num_paths
    x = np.zeros((2, *model.image_shape), "float32")
    assert model(x).shape == (2, 10)


def test_same_seed_same_initial_weights_whatever_the_sampling():
    a = Supernet(sampling="uniform", **SMALL)
    b = Supernet(sampling="fixed", **SMALL)
    c = Supernet(**{**SMALL, "seed": 4})
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert any(
        not np.array_equal(va.numpy(), vc.numpy())
        for va, vc in zip(a.trainable_variables, c.trainable_variables)
    )


# === What a training step changes ===


def _warm_up(model, x, y, steps=6):
    """Steps that give every candidate optimizer momentum."""
    model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=steps, verbose=0)


def test_preset_step_changes_only_the_sampled_path():
    model = compile_model(Supernet(**SMALL))
    x, y = learnable_batch(32)
    _warm_up(model, x, y, steps=8)
    for _ in range(3):
        before = candidate_state(model)
        model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0)
        changed = changed_keys(before, candidate_state(model))
        path = model.active_indices
        assert {k for k in changed if k[0] != "shared"} == set(enumerate(path))
        # The head's kernel rows beyond a 128-feature path stay untouched.
        rows = [k for k in before if k[0] == "shared" and "kernel_rows_128" in k[1]]
        assert (rows[0] in changed) == (model.path_features(path) == 200)


def test_fixed_sampling_trains_the_active_path_only():
    model = compile_model(Supernet(**{**SMALL, "sampling": "fixed"}))
    model.set_path(1)
    x, y = learnable_batch(32)
    before = candidate_state(model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    changed = changed_keys(before, candidate_state(model))
    assert {k for k in changed if k[0] != "shared"} == {(0, 0), (1, 1)}
    assert model.active_path == 1


class _ConstantExamples(sampling.PerExampleSampler):
    """Example i always takes candidate `i % 2` of every choice."""

    def draw(self, batch_size, active):
        column = tf.range(batch_size, dtype="int32") % 2
        return sampling.Draw(
            examples=tf.stack([column] * self.space.num_choices, axis=1)
        )


def _large_sampler(name):
    if name == "per_example_constant":
        return _ConstantExamples()
    if name == "adaptive":
        return sampling.AdaptiveSampler(floor=0.5)
    return name


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["uniform", "fixed", "per_example", "per_example_constant", "fair", "adaptive"],
)
def test_step_on_a_20_choice_space_changes_only_what_it_trained(name):
    inputs, outputs = choice_space(num_choices=20)
    model = compile_model(
        Supernet(inputs=inputs, outputs=outputs, sampling=_large_sampler(name), seed=0)
    )
    assert model.num_paths == 4**20
    assert model.train_step_mode == "per_choice"
    x, y = learnable_batch(32, (8, 8, 1))
    if name == "fixed":
        model.set_path((0, 2) * 10)
    # A warm-up gives every candidate momentum (and BatchNorm candidates
    # moving statistics of their own): a second supernet over the same
    # layers, with fair sampling (every candidate trained in every step),
    # whose optimizer state is then copied.
    warm = compile_model(
        Supernet(inputs=inputs, outputs=outputs, sampling="fair", seed=1)
    )
    warm.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.optimizer.set_weights([v.numpy() for v in warm.optimizer.variables])
    for step in range(2):
        before = candidate_state(model)
        model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)
        changed = {
            k for k in changed_keys(before, candidate_state(model)) if k[0] != "shared"
        }
        with_variables = {k for k in before if k[0] != "shared"}
        if name in ("uniform", "fixed", "adaptive"):
            expected = set(enumerate(model.active_indices)) & with_variables
        elif name == "per_example_constant":
            expected = {(c, k) for c in range(20) for k in (0, 1)}
        else:
            # Every candidate an example went through (fair: all of them).
            expected = with_variables if name == "fair" else changed
        assert changed == expected, (step, sorted(changed ^ expected)[:6])
        if name == "fixed":
            assert model.active_indices == (0, 2) * 10


def test_per_choice_step_equals_per_path_step_on_the_report_space():
    x, y = learnable_batch(48)
    results = []
    for mode in ("per_path", "per_choice"):
        model = compile_model(Supernet(**SMALL, train_step=mode), 1e-3)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        results.append([v.numpy() for v in model.variables])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_restoring_updates_equal_switched_updates():
    x, y = learnable_batch(24, (8, 8, 1))
    results = []
    for restoring in (False, True):
        model = compile_model(_functional(num_choices=4, seed=0), 1e-3)
        model._restoring_updates = restoring
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        results.append([v.numpy() for v in model.variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_training_reduces_every_path_loss():
    model = compile_model(Supernet(**SMALL), 3e-3)
    x, y = learnable_batch(64)
    first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, batch_size=16, epochs=40, verbose=0)
    for p in range(model.num_paths):
        model.set_path(p)
        assert model.evaluate(x, y, verbose=0, return_dict=True)["loss"] < 0.7 * first


def test_path_draws_are_seeded_and_uniform():
    def draws(seed, n):
        model = compile_model(Supernet(**{**SMALL, "seed": seed}))
        x, y = learnable_batch(4)
        seen = []
        for _ in range(n):
            model.fit(x, y, batch_size=4, epochs=1, verbose=0)
            seen.append(model.active_path)
        return seen

    first = draws(7, 200)
    assert first == draws(7, 200)
    counts = np.bincount(first, minlength=4)
    assert stats.chisquare(counts).pvalue > 0.001, counts


def test_changing_the_path_never_retraces():
    model = compile_model(Supernet(**SMALL))
    traces = []
    original = model.train_step

    def counting_step(data):
        traces.append(1)
        return original(data)

    model.train_step = counting_step
    x, y = learnable_batch(8)
    model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    assert len(traces) == 1
    predictions = []
    for p in range(4):
        model.set_path(p)
        predictions.append(model.predict(x, verbose=0))
    assert len({p.tobytes() for p in predictions}) == 4


# === BatchNorm ===


def test_recalibration_sets_the_mean_of_batch_statistics():
    inputs, outputs = choice_space(num_choices=2)
    model = Supernet(inputs=inputs, outputs=outputs, seed=0)
    path = ("bn3x3", "conv1x1")
    rng = np.random.default_rng(0)
    batches = [
        rng.normal(size=(8, 8, 8, 1)).astype("float32") * (i + 1) for i in range(3)
    ]
    used = model.recalibrate_batchnorm(batches, path=path, batches=2)
    assert used == 2 and model.active_indices == (2, 1)
    # By hand: stem conv -> stem BN (shared), then choice_0's bn3x3 block.
    stem = model.get_layer("stem")
    stem_bn = model.get_layer("stem_bn")
    block = model.choices[0].candidates[2]
    means, variances, block_means, block_variances = [], [], [], []
    for x in batches[:2]:
        h = stem(x).numpy()
        means.append(h.mean(axis=(0, 1, 2)))
        variances.append(h.var(axis=(0, 1, 2)))
        h = (h - means[-1]) / np.sqrt(
            variances[-1] + stem_bn.epsilon
        ) * stem_bn.gamma.numpy() + stem_bn.beta.numpy()
        c = block.get_layer("conv")(h).numpy()
        block_means.append(c.mean(axis=(0, 1, 2)))
        block_variances.append(c.var(axis=(0, 1, 2)))
    np.testing.assert_allclose(
        stem_bn.moving_mean.numpy(), np.mean(means, 0), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        stem_bn.moving_variance.numpy(), np.mean(variances, 0), rtol=1e-4
    )
    bn = block.get_layer("bn")
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), np.mean(block_means, 0), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), np.mean(block_variances, 0), rtol=1e-4
    )
    # Off the path: untouched; momentum restored.
    other = model.choices[1].candidates[2].get_layer("bn")
    np.testing.assert_array_equal(other.moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(other.moving_variance.numpy(), 1.0)
    assert bn.momentum == 0.99


def test_recalibration_of_one_path_after_another_is_that_paths_own():
    # One traced forward serves every path: recalibrating path B after
    # path A must give B's statistics, and leave BatchNorms off B as A left
    # them.
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(8, 8, 8, 1)).astype("float32") for _ in range(2)]
    first, second = ("conv1x1", "bn3x3"), ("bn3x3", "conv1x1")

    def statistics(model):
        return {
            layer.path: layer.moving_mean.numpy().copy()
            for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)
        }

    inputs, outputs = choice_space(num_choices=2)
    model = Supernet(inputs=inputs, outputs=outputs, seed=0)
    model.recalibrate_batchnorm(batches, path=first)
    after_first = statistics(model)
    model.recalibrate_batchnorm(batches, path=second)
    after_second = statistics(model)
    inputs, outputs = choice_space(num_choices=2)
    fresh = Supernet(inputs=inputs, outputs=outputs, seed=0)
    fresh.recalibrate_batchnorm(batches, path=second)
    alone = statistics(fresh)
    # choice_1's bn3x3 is off the second path: kept from the first.
    off_path = [k for k in after_first if k.startswith("choice_1")]
    assert off_path
    for key in after_second:
        expected = after_first[key] if key in off_path else alone[key]
        np.testing.assert_allclose(after_second[key], expected, rtol=1e-6, atol=1e-7)
    assert all(
        layer.momentum == 0.99
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_recalibration_without_batchnorm_or_data():
    model = Supernet(**SMALL)
    assert not model.has_batchnorm
    assert model.recalibrate_batchnorm([np.zeros((2, 28, 28, 1))]) == 0
    bn_model = _functional(num_choices=1)
    bn_model.set_path(("bn3x3",))
    with pytest.raises(ValueError, match="empty dataset"):
        bn_model.recalibrate_batchnorm([])
    with pytest.raises(ValueError, match="`batches`"):
        bn_model.recalibrate_batchnorm([np.zeros((2, 8, 8, 1))], batches=0)


# === Head re-fitting ===


def _residual_supernet():
    """A stem, two choices with residual additions around them from the
    stem, then pooling and a classifier."""
    inputs = keras.Input((8, 8, 1))
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = Choice(
        [keras.layers.Conv2D(4, 3, padding="same"), keras.layers.Identity()],
        labels=["conv3x3", "skip"],
        name="c0",
    )(stem)
    x = keras.layers.Add(name="add_0")([stem, x])
    x = Choice(
        [keras.layers.Conv2D(4, 1), keras.layers.Identity()],
        labels=["conv1x1", "skip"],
        name="c1",
    )(x)
    x = keras.layers.Add(name="add_1")([stem, x])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return Supernet(inputs=inputs, outputs=outputs, seed=0)


def test_the_head_is_every_layer_after_the_last_choice():
    assert [layer.name for layer in Supernet(**SMALL).head_layers] == [
        "flatten",
        "hidden",
        "logits",
    ]
    assert [layer.name for layer in _functional().head_layers] == ["pool", "logits"]
    # The stem feeds the head past the choices, but it also feeds them: it
    # is not part of the head; the last addition is.
    model = _residual_supernet()
    assert [layer.name for layer in model.head_layers] == ["add_1", "pool", "logits"]
    assert [v.path for v in model.head_variables] == [
        v.path for v in model.get_layer("logits").trainable_variables
    ]


def test_a_head_refit_trains_the_head_alone_and_is_put_back():
    model = _functional(num_choices=2, seed=0)
    x, y = learnable_batch(16, shape=(8, 8, 1))
    data = [(x[:8], y[:8]), (x[8:], y[8:])]
    head = {v.path for v in model.head_variables}

    def weights():
        # Every variable but the choices' indices, which hold the path.
        return {
            v.path: v.numpy().copy()
            for v in model.variables
            if not v.path.endswith("active_index")
        }

    before = weights()
    model.set_path(0)
    shared_logits = model(x, training=False).numpy()
    with model.head_refitted(data, path=5, batches=2, learning_rate=0.01):
        assert model.active_path == 5
        refitted = weights()
        logits = model(x, training=False).numpy()
    for name, value in before.items():
        # Inside: the head moved, nothing else did (not even BatchNorm
        # statistics: the body runs in inference mode).
        assert np.array_equal(refitted[name], value) != (name in head)
    # Outside: every weight as before.
    after = weights()
    assert all(np.array_equal(after[k], v) for k, v in before.items())
    # Adam starts afresh: a second re-fit after another path's is the same.
    model.refit_head(data, path=1, batches=2, learning_rate=0.01)
    for v in model.head_variables:
        v.assign(before[v.path])
    with model.head_refitted(data, path=5, batches=2, learning_rate=0.01):
        np.testing.assert_array_equal(model(x, training=False).numpy(), logits)
    assert not np.allclose(logits, shared_logits)
    # Only the first `batches` batches are used.
    assert model.refit_head(data * 3, batches=4, learning_rate=0.01) == 4
    assert model.refit_head(data, batches=4, learning_rate=0.01) == 2


def test_a_head_refit_refuses_bad_input():
    model = _functional(num_choices=1)
    x, y = learnable_batch(4, shape=(8, 8, 1))
    with pytest.raises(ValueError, match="empty dataset"):
        model.refit_head([])
    with pytest.raises(ValueError, match=r"`data`.*\(x, y\)"):
        model.refit_head([x])
    with pytest.raises(ValueError, match="`batches`"):
        model.refit_head([(x, y)], batches=0)
    with pytest.raises(ValueError, match="`learning_rate`"):
        model.refit_head([(x, y)], learning_rate=0.0)
    # A graph that ends on its choice has no head.
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    outputs = Choice(
        [keras.layers.Dense(10), keras.layers.Dense(10, use_bias=False)],
        labels=["dense", "dense_nobias"],
    )(flat)
    headless = Supernet(inputs=inputs, outputs=outputs, seed=0)
    assert headless.head_layers == []
    with pytest.raises(ValueError, match="no trainable layer after its last choice"):
        headless.refit_head([(x, y)])


# === Mixed precision ===


@pytest.mark.parametrize("how", ["argument", "global"])
def test_mixed_precision_reaches_every_candidate(how):
    if how == "global":
        keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs, outputs = choice_space(
            num_choices=3, dtype="mixed_float16" if how == "argument" else None
        )
        model = Supernet(inputs=inputs, outputs=outputs, seed=0)
    finally:
        keras.config.set_dtype_policy("float32")
    # A small initial loss scale: float16 gradients scaled by Keras's
    # default (2**15) overflow, and the step would be skipped.
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.Adam(1e-2), initial_scale=8.0
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.optimizer.build(model.trainable_variables)
    for choice in model.choices:
        for candidate in choice.candidates:
            for layer in candidate._flatten_layers(include_self=True):
                if not isinstance(layer, keras.layers.InputLayer):
                    assert layer.compute_dtype == "float16", layer.name
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    x, y = learnable_batch(16, (8, 8, 1))
    before = candidate_state(model)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    changed = {
        k for k in changed_keys(before, candidate_state(model)) if k[0] != "shared"
    }
    assert changed == set(enumerate(model.active_indices)) - {(c, 3) for c in range(3)}


def test_supernet_layer_computes_in_its_dtype():
    model = Supernet(**SMALL, dtype="mixed_float16")
    layer = model.choices[0]
    assert layer.candidates[0].get_layer("conv").compute_dtype == "float16"
    assert layer.candidates[0].get_layer("conv").kernel.dtype == "float32"
    assert model.get_layer("hidden").compute_dtype == "float16"


# === Serialization ===


def test_preset_config_round_trip():
    model = Supernet(
        kernel_sizes=((3, 5), (3, 5, 7)),
        filters=(4, 6),
        hidden_units=8,
        sampling=sampling.AdaptiveSampler(floor=0.2),
        seed=5,
        branch_learning_rates={"5x5": 0.5},
    )
    config = json.loads(json.dumps(model.get_config()))
    clone = Supernet.from_config(config)
    assert json.loads(json.dumps(clone.get_config())) == config
    assert clone.sampler.floor == 0.2
    assert clone.branch_learning_rates == {"5x5": 0.5}
    for a, b in zip(model.trainable_variables, clone.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_functional_config_round_trip_rebuilds_the_candidates():
    model = _functional(
        num_choices=3, sampling=sampling.AdaptiveSampler(floor=0.2), seed=2
    )
    config = json.loads(json.dumps(model.get_config()))
    clone = Supernet.from_config(config)
    assert clone.space == model.space
    assert clone.sampler.floor == 0.2 and clone.seed == 2
    assert json.loads(json.dumps(clone.get_config())) == config
    x, _ = learnable_batch(2, (8, 8, 1))
    clone.set_weights(model.get_weights())
    for path in (0, 17, 63):
        np.testing.assert_array_equal(
            model.path_call(x, path).numpy(), clone.path_call(x, path).numpy()
        )


def test_save_and_load_keep_weights_and_the_sampler_state(tmp_path):
    model = compile_model(_functional(num_choices=3, seed=2))
    x, y = learnable_batch(16, (8, 8, 1))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.set_path(37)
    path = str(tmp_path / "supernet.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Supernet) and loaded.active_path == 37
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(
        loaded.sampler.seed_generator.state.numpy(),
        model.sampler.seed_generator.state.numpy(),
    )
    # The next draws of both are the same paths.
    draws = []
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, verbose=0)
        draws.append(m.active_path)
    assert draws[0] == draws[1]


@pytest.mark.parametrize("version", ["v0_1_0", "v0_2_0"])
def test_loads_weights_saved_by_earlier_versions(version):
    folder = os.path.join(ROOT, "tests", "data", version)
    with open(os.path.join(folder, "config.json")) as f:
        model = Supernet.from_config(json.load(f))
    model.load_weights(os.path.join(folder, "supernet.weights.h5"))
    expected = np.load(os.path.join(folder, "expected.npz"))
    for p in range(model.num_paths):
        np.testing.assert_array_equal(
            model.path_call(expected["inputs"], p).numpy(), expected[f"path{p}"]
        )


def test_earlier_weights_need_the_preset():
    model = _functional(num_choices=2)
    with pytest.raises(ValueError, match="only fit the report's preset"):
        model.load_weights(
            os.path.join(ROOT, "tests", "data", "v0_2_0", "supernet.weights.h5")
        )


# === Bad input ===


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_sizes": ()}, "`kernel_sizes`"),
        ({"kernel_sizes": ((3, 3), (5,))}, r"`kernel_sizes\[0\]`"),
        ({"kernel_sizes": ((3, 5),), "filters": (4, 8)}, "`filters`"),
        ({"filters": 0}, "`filters`"),
        ({"hidden_units": -1}, "`hidden_units`"),
        ({"input_shape": (28, 28)}, "`input_shape`"),
        ({"padding": "full"}, "`padding`"),
        ({"sampling": "random"}, "`sampling`"),
        ({"seed": -1}, "`seed`"),
        ({"seed": True}, "`seed`"),
        ({"train_step": "fast"}, "`train_step`"),
        ({"kernel_sizes": ((9, 11), (9, 11)), "filters": 2}, "shrinks"),
        ({"aggregation": "sum"}, "one output shape"),
        ({"aggregation": "max"}, "`aggregation`"),
        (
            {"path_dropout": 1.0, "aggregation": "sum", "padding": "same"},
            "`path_dropout`",
        ),
        ({"path_dropout": 0.2, "sampling": "fair"}, "`path_dropout`"),
        ({"branch_learning_rates": {"7x7": 0.5}}, "`branch_learning_rates`"),
        ({"branch_learning_rates": {"3x3": float("inf")}}, "`branch_learning_rates`"),
        ({"sampling": "fair", "kernel_sizes": ((3, 5), (3,))}, "same number"),
    ],
)
def test_bad_preset_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Supernet(**{"filters": 2, "hidden_units": 4, **kwargs})


def test_graph_without_a_choice_is_refused():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="no `keras_supernet.Choice`"):
        Supernet(inputs=inputs, outputs=keras.layers.Dense(2)(inputs))


def test_inputs_without_outputs_is_refused():
    with pytest.raises(ValueError, match="both `inputs` and `outputs`"):
        Supernet(inputs=keras.Input((4,)))


def test_candidate_the_next_layer_cannot_take_is_named():
    inputs = keras.Input((8, 8, 1))
    narrow = keras.layers.Conv2D(2, 3, padding="same", name="narrow")
    wide = keras.layers.Conv2D(3, 3, padding="same", name="wide")
    x = Choice([narrow, wide], name="width")(inputs)
    x = keras.layers.Flatten()(x)
    from keras_supernet import PaddedDense

    outputs = PaddedDense(4, widths=[128])(x)
    with pytest.raises(ValueError, match="Candidate 'wide' of choice 'width'"):
        Supernet(inputs=inputs, outputs=outputs)


def test_nested_choice_is_refused():
    inner = Choice([keras.layers.Dense(2), keras.layers.Dense(2)], name="inner")
    block = keras.Sequential([inner], name="block")
    inputs = keras.Input((4,))
    x = Choice([block, keras.layers.Dense(2)], name="outer")(inputs)
    with pytest.raises(ValueError, match="Nested choices"):
        Supernet(inputs=inputs, outputs=x)
