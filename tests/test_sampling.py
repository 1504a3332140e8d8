import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized
from scipy import stats

from keras_supernet import PathDropoutSchedule
from keras_supernet import Supernet
from keras_supernet import extract_path
from keras_supernet import sampling
from keras_supernet.extract import max_path_difference


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(99).normal(size=(10, 28, 28, 1))
    y = rng.integers(0, 10, size=(n,))
    x = rng.normal(size=(n, 28, 28, 1)) + patterns[y]
    return x.astype("float32"), y


def _model(optimizer=None, **kwargs):
    kwargs = {"filters": (4, 8), "hidden_units": 16, "seed": 3, **kwargs}
    model = Supernet(**kwargs)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.optimizer.build(model.trainable_variables)
    return model


def _candidate_state(model):
    """(layer, kernel size) -> weights and Adam slots of that candidate."""
    optimizer = model.optimizer
    state = {}
    for l, layer in enumerate(model.supernet_layers):
        for size, branch in zip(layer.kernel_sizes, layer.branches):
            values = []
            for v in branch.trainable_variables:
                i = optimizer._get_variable_index(v)
                values += [
                    v.numpy().copy(),
                    optimizer._momentums[i].numpy().copy(),
                    optimizer._velocities[i].numpy().copy(),
                ]
            state[(l, size)] = values
    return state


def _changed_candidates(before, after):
    return {
        key
        for key in before
        if any(not np.array_equal(a, b) for a, b in zip(before[key], after[key]))
    }


class SamplingTest(parameterized.TestCase):
    def test_fair_trains_every_candidate_once_per_step(self):
        model = _model(sampling="fair")
        draw = tf.function(lambda: model.sampler.sample_examples(model, 16))
        for _ in range(5):
            assignment = draw().numpy()
            slices = assignment.reshape(2, 8)
            # Two slices (m = 2 candidates), each one path.
            self.assertTrue(np.all(slices == slices[:, :1]))
            first, second = (model.paths[p] for p in slices[:, 0])
            for layer in range(2):
                self.assertEqual(
                    {first[layer], second[layer]}, {3, 5}
                )
        x, y = _batch(16)
        before = _candidate_state(model)
        model.train_on_batch(x, y)
        self.assertEqual(
            _changed_candidates(before, _candidate_state(model)),
            set(before),
        )

    def test_per_example_mixes_paths_within_a_batch(self):
        model = _model(sampling="per_example")
        assignment = model.sampler.sample_examples(model, 64).numpy()
        self.assertEqual(set(assignment), {0, 1, 2, 3})
        x, y = _batch(32)
        before = _candidate_state(model)
        model.train_on_batch(x, y)
        self.assertEqual(
            _changed_candidates(before, _candidate_state(model)), set(before)
        )

    def test_per_example_leaves_unused_candidates_alone(self):
        model = _model(sampling="per_example")
        x, y = _batch(16)
        for _ in range(6):  # every candidate gets momentum
            model.train_on_batch(x, y)
        iterations = int(model.optimizer.iterations.numpy())
        for step in range(5):
            # One example: exactly one path, one candidate per layer.
            before = _candidate_state(model)
            model.train_on_batch(x[step:step + 1], y[step:step + 1])
            changed = _changed_candidates(before, _candidate_state(model))
            self.assertEqual(sorted(l for l, _ in changed), [0, 1])
        # One optimizer step per batch, as with a single apply.
        self.assertEqual(
            int(model.optimizer.iterations.numpy()), iterations + 5
        )

    def test_masked_step_equals_plain_step(self):
        # A per-example step where every example uses the same path must be
        # exactly the uniform step on that path.
        per_example = _model(sampling="per_example")
        fixed = _model(sampling="fixed")
        fixed.set_path(2)
        x, y = _batch(8)
        for model in (per_example, fixed):
            model.train_on_batch(x, y)  # build the train functions
        per_example.set_weights(fixed.get_weights())
        for a, b in zip(per_example.optimizer.variables,
                        fixed.optimizer.variables):
            a.assign(b)
        per_example.sampler = _ConstantExamples(2)
        per_example.make_train_function(force=True)
        per_example.train_on_batch(x, y)
        fixed.train_on_batch(x, y)
        for a, b in zip(per_example.trainable_variables,
                        fixed.trainable_variables):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)

    @parameterized.named_parameters(
        ("uniform", {"sampling": "uniform"}),
        ("per_example", {"sampling": "per_example"}),
        ("fair", {"sampling": "fair"}),
        ("adaptive", {"sampling": "adaptive"}),
        ("sum", {"aggregation": "sum", "padding": "same",
                 "path_dropout": 0.5}),
    )
    def test_seeded_reproducibility(self, kwargs):
        x, y = _batch(32)

        def train():
            model = _model(**kwargs)
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
            return [w.numpy() for w in model.weights]

        for a, b in zip(train(), train()):
            np.testing.assert_array_equal(a, b)

    def test_adaptive_probabilities_and_draws(self):
        model = _model(sampling="adaptive")
        np.testing.assert_allclose(model.path_probabilities.numpy(), 0.25)
        probabilities = model.update_sampling([0.30, 0.30, 0.90, 0.50])
        # floor 0.5: 0.125 each, plus 0.5 split by the gaps (0, 0, .6, .2).
        np.testing.assert_allclose(
            probabilities, [0.125, 0.125, 0.5, 0.25], atol=1e-9
        )
        draw = tf.function(lambda: model.sampler.sample(model))
        counts = np.bincount([int(draw()) for _ in range(800)], minlength=4)
        expected = 800 * np.asarray(probabilities)
        self.assertGreater(stats.chisquare(counts, expected).pvalue, 1e-3)
        # All equal: uniform again.
        np.testing.assert_allclose(model.update_sampling([1.0] * 4), 0.25)

    def test_adaptive_callback_updates_probabilities(self):
        model = _model(sampling="adaptive")
        x, y = _batch(32)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        model.set_path(1)
        model.fit(data, epochs=1, verbose=0,
                  callbacks=[sampling.AdaptiveSamplingCallback(data)])
        probabilities = model.path_probabilities.numpy()
        self.assertAlmostEqual(probabilities.sum(), 1.0, places=5)
        self.assertGreater(probabilities.max() - probabilities.min(), 1e-4)
        self.assertGreaterEqual(probabilities.min(), 0.125 - 1e-6)

    @parameterized.named_parameters(("sum", "sum"), ("concat", "concat_1x1"))
    def test_multi_path_extraction_equality(self, aggregation):
        model = _model(aggregation=aggregation, padding="same",
                       path_dropout=0.3)
        x, y = _batch(32)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        for path in range(model.num_paths):
            plain = extract_path(model, path)
            self.assertLessEqual(max_path_difference(model, path, plain, x),
                                 1e-5)
            model.set_path(path)
            np.testing.assert_allclose(
                model.predict(x, verbose=0), plain.predict(x, verbose=0),
                atol=1e-5,
            )

    def test_aggregation_runs_candidates_in_parallel(self):
        model = _model(aggregation="sum", padding="same")
        x, _ = _batch(4)
        both = model.aggregated_call(x, [[True, True], [True, True]])
        self.assertEqual(both.shape, (4, 10))
        layer = model.supernet_layers[0]
        summed = layer(x, enabled=[True, True])
        np.testing.assert_allclose(
            summed, layer.branches[0](x) + layer.branches[1](x), atol=1e-5
        )

    def test_path_dropout_keeps_dropped_candidates_untouched(self):
        model = _model(aggregation="concat_1x1", padding="same",
                       path_dropout=0.99)
        x, y = _batch(16)
        model.path_dropout_rate.assign(0.0)
        for _ in range(3):  # every candidate gets momentum
            model.train_on_batch(x, y)
        model.path_dropout_rate.assign(0.99)
        for _ in range(4):
            before = _candidate_state(model)
            model.train_on_batch(x, y)
            changed = _changed_candidates(before, _candidate_state(model))
            # Nearly always all dropped, and one candidate per layer kept.
            self.assertEqual(sorted(l for l, _ in changed), [0, 1])

    def test_path_dropout_schedule_ramps(self):
        model = _model(aggregation="sum", padding="same", path_dropout=0.4)
        schedule = PathDropoutSchedule(ramp_epochs=4)
        schedule.set_model(model)
        rates = []
        for epoch in range(6):
            schedule.on_epoch_begin(epoch)
            rates.append(float(model.path_dropout_rate.numpy()))
        np.testing.assert_allclose(rates, [0, 0.1, 0.2, 0.3, 0.4, 0.4],
                                   atol=1e-6)

    def test_branch_learning_rates_scale_the_update(self):
        x, y = _batch(16)

        def deltas(multipliers):
            model = _model(sampling="fixed",
                           branch_learning_rates=multipliers)
            model.set_path((5, 3))
            before = [v.numpy().copy() for v in model.trainable_variables]
            model.train_on_batch(x, y)
            return {
                v.path.split("/", 1)[1]: v.numpy() - b
                for v, b in zip(model.trainable_variables, before)
            }

        plain = deltas(None)
        halved = deltas({"5x5": 0.5, 3: 2.0})
        for name, delta in plain.items():
            factor = 0.5 if "branch_5x5" in name else (
                2.0 if "branch_3x3" in name else 1.0
            )
            np.testing.assert_allclose(halved[name], factor * delta,
                                       rtol=1e-4, atol=1e-7)
        self.assertGreater(
            np.abs(plain["supernet_layer_0/branch_5x5/conv/kernel"])
            .max(), 0
        )

    @parameterized.named_parameters(
        ("strategy", {"sampling": "random"}, "sampling='random'"),
        ("aggregation", {"aggregation": "mean"}, "aggregation='mean'"),
        ("aggregation_shapes", {"aggregation": "sum"}, "padding='same'"),
        ("aggregation_strategy", {"aggregation": "sum", "padding": "same",
                                  "sampling": "fair"}, "sampling='fair'"),
        ("fair_unequal", {"kernel_sizes": ((3, 5, 7), (3, 5)),
                          "sampling": "fair"}, "same number of candidates"),
        ("path_dropout", {"path_dropout": 1.0}, "path_dropout=1.0"),
        ("branch_lr_size", {"branch_learning_rates": {"7x7": 0.5}},
         "branch_learning_rates"),
        ("branch_lr_value", {"branch_learning_rates": {3: 0}},
         "branch_learning_rates"),
    )
    def test_bad_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            Supernet(filters=(4, 8), **kwargs)

    def test_config_round_trip_with_options(self):
        model = Supernet(filters=(4, 8), aggregation="concat_1x1",
                         padding="same", path_dropout=0.2, sampling="uniform",
                         branch_learning_rates={5: 0.5}, seed=1)
        config = model.get_config()
        self.assertEqual(config["branch_learning_rates"], {"5x5": 0.5})
        self.assertEqual(Supernet.from_config(config).get_config(), config)


class _ConstantExamples(sampling.PerExampleSampler):
    def __init__(self, path):
        self.path = path

    def sample_examples(self, supernet, batch_size):
        return tf.fill([batch_size], tf.constant(self.path, tf.int32))


if __name__ == "__main__":
    pytest.main([__file__])
