import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from conftest import candidate_state
from conftest import changed_keys
from conftest import choice_space
from conftest import compile_model
from conftest import learnable_batch
from keras_supernet import Supernet
from keras_supernet import extract_path
from keras_supernet import sampling
from keras_supernet.extract import max_path_difference
from keras_supernet.spaces import SearchSpace

SMALL = {"filters": (4, 8), "hidden_units": 16, "seed": 3}


def _model(**kwargs):
    return compile_model(Supernet(**{**SMALL, **kwargs}))


def _changed_candidates(before, after):
    return {k for k in changed_keys(before, after) if k[0] != "shared"}


def _draw(sampler, batch_size=16, active=(0, 0)):
    return sampler.draw(batch_size, tf.constant(active, "int32"))


def test_fair_trains_every_candidate_once_per_step():
    model = _model(sampling="fair")
    for _ in range(5):
        examples = _draw(model.sampler).examples.numpy()
        slices = examples.reshape(2, 8, 2)
        # Two slices (m = 2 candidates), each one path, together every
        # candidate of every choice.
        assert np.all(slices == slices[:, :1])
        for choice in range(2):
            assert set(slices[:, 0, choice]) == {0, 1}
    x, y = learnable_batch(16)
    before = candidate_state(model)
    model.train_on_batch(x, y)
    assert _changed_candidates(before, candidate_state(model)) == {
        (c, k) for c in range(2) for k in range(2)
    }


def test_per_example_leaves_unused_candidates_alone():
    model = _model(sampling="per_example")
    examples = _draw(model.sampler, 64).examples.numpy()
    assert {tuple(e) for e in examples} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    x, y = learnable_batch(16)
    for _ in range(6):  # every candidate gets momentum
        model.train_on_batch(x, y)
    iterations = int(model.optimizer.iterations.numpy())
    for step in range(5):
        # One example: exactly one path, one candidate per choice.
        before = candidate_state(model)
        model.train_on_batch(x[step : step + 1], y[step : step + 1])
        changed = _changed_candidates(before, candidate_state(model))
        assert sorted(c for c, _ in changed) == [0, 1]
    # One optimizer step per batch, as with a single apply.
    assert int(model.optimizer.iterations.numpy()) == iterations + 5


class _ConstantPath(sampling.PerExampleSampler):
    """Every example takes the same path (`indices`)."""

    def __init__(self, indices=(1, 0), **kwargs):
        super().__init__(**kwargs)
        self.indices = tuple(indices)

    def draw(self, batch_size, active):
        row = tf.constant(self.indices, "int32")
        return sampling.Draw(examples=tf.tile(row[None], [batch_size, 1]))


@pytest.mark.parametrize("train_step", ["per_path", "per_choice"])
def test_per_example_step_on_one_path_equals_the_fixed_step(train_step):
    # Routed per example or by whole paths, a batch whose examples all take
    # one path trains exactly what the fixed step on that path trains.
    x, y = learnable_batch(8)
    fixed = _model(sampling="fixed", padding="same")
    fixed.set_path((1, 0))
    routed = _model(
        sampling=_ConstantPath((1, 0)), padding="same", train_step=train_step
    )
    for model in (fixed, routed):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for a, b in zip(routed.trainable_variables, fixed.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampling": "uniform"},
        {"sampling": "per_example"},
        {"sampling": "fair"},
        {"sampling": "adaptive"},
        {"aggregation": "sum", "padding": "same", "path_dropout": 0.5},
    ],
)
def test_seeded_runs_are_identical(kwargs):
    x, y = learnable_batch(32)

    def train():
        model = _model(**kwargs)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        return [w.numpy() for w in model.weights]

    for a, b in zip(train(), train()):
        np.testing.assert_array_equal(a, b)


def test_adaptive_probabilities_from_path_losses():
    model = _model(sampling="adaptive")
    for variable in model.sampler.probabilities:
        np.testing.assert_allclose(variable.numpy(), 0.5)
    paths = [0, 1, 2, 3]
    probabilities = model.update_sampling(paths, [0.30, 0.30, 0.90, 0.50])
    # Choice 0: candidate means 0.30 (3x3) and 0.70 (5x5): gaps (0, 0.4);
    # choice 1: 0.60 and 0.40: gaps (0.2, 0). Floor 0.5: 0.25 each + 0.5.
    np.testing.assert_allclose(probabilities[0], [0.25, 0.75])
    np.testing.assert_allclose(probabilities[1], [0.75, 0.25])
    assert model.sampler.path_probability("5x5->3x3") == pytest.approx(0.5625)
    draw = tf.function(lambda: _draw(model.sampler).indices)
    counts = np.bincount(
        [model.space.index(tuple(draw().numpy())) for _ in range(800)],
        minlength=4,
    )
    expected = 800 * np.array([0.1875, 0.0625, 0.5625, 0.1875])
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # All equal: uniform again; a candidate no path went through is not
    # starved.
    for p in model.update_sampling(paths, [1.0] * 4):
        np.testing.assert_allclose(p, 0.5)
    p = model.update_sampling([0, 1], [0.2, 0.4])
    assert p[0][1] >= p[0][0] and p[1][1] > p[1][0]


def test_adaptive_update_works_on_a_sample_of_a_huge_space():
    sampler = sampling.AdaptiveSampler(floor=0.2)
    space = SearchSpace([(f"c{i}", ("a", "b", "c", "d")) for i in range(20)])
    sampler.attach(space, seed=0)
    rng = np.random.default_rng(0)
    paths = space.sample(rng, size=40)
    losses = [1.0 + 0.5 * (p[0] == 3) for p in paths]
    probabilities = sampler.update(paths, losses)
    assert probabilities[0][3] > 0.5 and len(probabilities) == 20
    np.testing.assert_allclose([p.sum() for p in probabilities], 1.0)


def test_adaptive_callback_updates_probabilities():
    model = _model(sampling="adaptive")
    x, y = learnable_batch(32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model.set_path(1)
    model.fit(
        data, epochs=1, verbose=0, callbacks=[sampling.AdaptiveSamplingCallback(data)]
    )
    for variable in model.sampler.probabilities:
        values = variable.numpy()
        assert values.sum() == pytest.approx(1.0, abs=1e-5)
        assert values.min() >= 0.25 - 1e-6
    inputs, outputs = choice_space(8)
    big = compile_model(Supernet(inputs=inputs, outputs=outputs, sampling="adaptive"))
    with pytest.raises(ValueError, match="more than 64"):
        callback = sampling.AdaptiveSamplingCallback(data)
        callback.set_model(big)
        callback.on_epoch_end(0)


@pytest.mark.parametrize("aggregation", ["sum", "concat_1x1"])
def test_multi_path_blocks_extract_exactly(aggregation):
    model = _model(aggregation=aggregation, padding="same", path_dropout=0.3)
    x, y = learnable_batch(32)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for path in range(model.num_paths):
        plain = extract_path(model, path)
        assert max_path_difference(model, path, plain, x) <= 1e-5
        model.set_path(path)
        np.testing.assert_allclose(
            model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5
        )


def test_aggregating_choice_sums_enabled_candidates():
    from keras_supernet import routing

    model = _model(aggregation="sum", padding="same")
    x, _ = learnable_batch(4)
    layer = model.choices[0]
    plan = routing.Plan(masks={layer: tf.constant([True, True])})
    with routing.planned(plan):
        summed = layer(x)
    expected = layer.candidates[0](x) + layer.candidates[1](x)
    np.testing.assert_allclose(summed, expected, atol=1e-5)


def test_path_dropout_keeps_dropped_candidates_untouched():
    model = _model(aggregation="concat_1x1", padding="same", path_dropout=0.99)
    x, y = learnable_batch(16)
    model.sampler.path_dropout_rate.assign(0.0)
    for _ in range(3):  # every candidate gets momentum
        model.train_on_batch(x, y)
    model.sampler.path_dropout_rate.assign(0.99)
    for _ in range(4):
        before = candidate_state(model)
        model.train_on_batch(x, y)
        changed = _changed_candidates(before, candidate_state(model))
        # Nearly always all dropped, and one candidate per choice kept.
        assert sorted(c for c, _ in changed) == [0, 1]


def test_path_dropout_schedule_ramps():
    model = _model(aggregation="sum", padding="same", path_dropout=0.4)
    schedule = sampling.PathDropoutSchedule(ramp_epochs=4)
    schedule.set_model(model)
    rates = []
    for epoch in range(6):
        schedule.on_epoch_begin(epoch)
        rates.append(float(model.sampler.path_dropout_rate.numpy()))
    np.testing.assert_allclose(rates, [0, 0.1, 0.2, 0.3, 0.4, 0.4], atol=1e-6)
    schedule.set_model(_model())
    with pytest.raises(ValueError, match="aggregating"):
        schedule.on_epoch_begin(0)


def test_branch_learning_rates_scale_the_update():
    x, y = learnable_batch(16)

    def deltas(multipliers):
        model = _model(sampling="fixed", branch_learning_rates=multipliers)
        model.set_path("5x5->3x3")
        before = [v.numpy().copy() for v in model.trainable_variables]
        model.train_on_batch(x, y)
        return {
            v.path: v.numpy() - b for v, b in zip(model.trainable_variables, before)
        }

    plain = deltas(None)
    scaled = deltas({"5x5": 0.5, 3: 2.0})
    for name, delta in plain.items():
        factor = 0.5 if "branch_5x5" in name else (2.0 if "branch_3x3" in name else 1.0)
        np.testing.assert_allclose(scaled[name], factor * delta, rtol=1e-4, atol=1e-7)
    assert any(np.abs(d).max() > 0 for n, d in plain.items() if "branch_5x5" in n)


def test_samplers_serialize_with_their_settings():
    for sampler in (
        sampling.UniformSampler(path_dropout=0.3),
        sampling.AdaptiveSampler(floor=0.2),
        sampling.FairSampler(),
    ):
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(sampler)))
        clone = sampling.get(config)
        assert type(clone) is type(sampler)
        assert clone.get_config() == sampler.get_config()
    assert repr(sampling.AdaptiveSampler(floor=0.2)) == "AdaptiveSampler(floor=0.2)"


def test_a_sampler_serves_one_supernet():
    sampler = sampling.UniformSampler()
    Supernet(**SMALL, sampling=sampler)
    with pytest.raises(ValueError, match="already attached"):
        Supernet(**SMALL, sampling=sampler)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampling": "random"}, "sampling='random'"),
        (
            {"aggregation": "sum", "padding": "same", "sampling": "fair"},
            "sampling='fair'",
        ),
        (
            {"kernel_sizes": ((3, 5, 7), (3, 5)), "sampling": "fair"},
            "same number of candidates",
        ),
    ],
)
def test_bad_sampling_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Supernet(filters=(4, 8), **kwargs)


def test_bad_sampler_settings():
    for floor in (0, float("nan"), 1.5):
        with pytest.raises(ValueError, match="`floor`"):
            sampling.AdaptiveSampler(floor=floor)
    with pytest.raises(ValueError, match="`path_dropout`"):
        sampling.UniformSampler(path_dropout=-0.1)
