import itertools
import json
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized
from scipy import stats

from keras_supernet import Supernet


def _compile(model, learning_rate=1e-2):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _batch(n=16, shape=(28, 28, 1), seed=0):
    """Noise plus a per-class pattern, so that the labels can be learnt."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(1234).normal(size=(10, *shape))
    y = rng.integers(0, 10, size=(n,))
    x = rng.normal(size=(n, *shape)) + patterns[y]
    return x.astype("float32"), y


def _path_variable_names(model, path):
    """Variable paths a step on `path` may change: its branches, the hidden
    kernel's rows of its features, the hidden bias."""
    features = model.path_features(path)
    # The blocks are cut at the feature counts: the path's rows are the
    # blocks that start below its count.
    start, names = 0, set()
    for block in model.hidden.kernel_blocks:
        if start < features:
            names.add(block.path)
        start += block.shape[0]
    return {
        v.path
        for layer, k in zip(model.supernet_layers, model.paths[path])
        for v in layer.branches[layer.kernel_sizes.index(k)]
        .trainable_variables
    } | names | {model.hidden.bias.path}


def _snapshot(model):
    """Weights and Adam slots of every branch and of the hidden layer."""
    optimizer = model.optimizer
    state = {}
    variables = [
        v
        for layer in model.supernet_layers
        for branch in layer.branches
        for v in branch.trainable_variables
    ] + model.hidden.trainable_variables
    for v in variables:
        i = optimizer._get_variable_index(v)
        state[v.path] = (
            v.numpy().copy(),
            optimizer._momentums[i].numpy().copy(),
            optimizer._velocities[i].numpy().copy(),
        )
    return state


def _changed(before, after):
    """Paths of variables for which the weight or any slot changed."""
    return {
        name
        for name in before
        if any(
            not np.array_equal(a, b) for a, b in zip(before[name], after[name])
        )
    }


class SupernetTest(parameterized.TestCase):
    def setUp(self):
        self.init_kwargs = {
            "kernel_sizes": ((3, 5), (3, 5)),
            "filters": (4, 8),
            "hidden_units": 16,
            "num_classes": 10,
            "input_shape": (28, 28, 1),
            "seed": 7,
        }

    # === Paths ===

    def test_paths_in_product_order(self):
        model = Supernet(**self.init_kwargs)
        self.assertEqual(model.paths, [(3, 3), (3, 5), (5, 3), (5, 5)])
        self.assertEqual(model.num_paths, 4)
        self.assertEqual(model.path_label(2), "5x5->3x3")
        # 'valid' padding: 3x3 paths keep more features; padded to the max.
        self.assertEqual(
            [model.path_features(p) for p in range(4)], [200, 128, 200, 128]
        )
        self.assertEqual(model.embedding_size, 200)

    @parameterized.named_parameters(
        ("index", 2),
        ("numpy_index", np.int64(2)),
        ("tuple", (5, 3)),
        ("list", [5, 3]),
        ("kernel_string", "5x5,3x3"),
        ("short_string", "5,3"),
        ("label", "5x5->3x3"),
        ("index_string", "2"),
    )
    def test_set_path_forms(self, path):
        model = Supernet(**self.init_kwargs)
        model.set_path(path)
        self.assertEqual(model.active_path, 2)
        self.assertEqual(
            [int(l.active_index.numpy()) for l in model.supernet_layers],
            [1, 0],
        )

    @parameterized.named_parameters(
        ("index", 4), ("negative", -1), ("tuple", (3, 7)), ("string", "3x5"),
        ("short", (3,)), ("bool", True), ("none", None),
    )
    def test_unknown_path_lists_valid_ones(self, path):
        model = Supernet(**self.init_kwargs)
        with pytest.raises(ValueError, match=r"Unknown path .*Valid paths: "
                           r"0=3x3->3x3, 1=3x3->5x5, 2=5x5->3x3, 3=5x5->5x5"):
            model.set_path(path)

    # === Forward ===

    def test_output_shape_and_path_outputs(self):
        model = Supernet(**self.init_kwargs)
        x, _ = _batch(3)
        outputs = []
        for p in range(model.num_paths):
            model.set_path(p)
            out = model(x)
            self.assertEqual(out.shape, (3, 10))
            np.testing.assert_allclose(
                out, model.path_call(x, p), atol=1e-6
            )
            outputs.append(np.asarray(out))
        # Paths differ.
        for a, b in itertools.combinations(outputs, 2):
            self.assertFalse(np.allclose(a, b))

    def test_embedding_is_zero_padded(self):
        model = Supernet(**self.init_kwargs)
        x, _ = _batch(2)
        embedding = np.asarray(model.embed(x, 1))
        self.assertEqual(embedding.shape, (2, 200))
        np.testing.assert_array_equal(embedding[:, 128:], 0.0)
        self.assertGreater(np.abs(embedding[:, :128]).sum(), 0.0)

    @parameterized.named_parameters(
        ("three_layers", {"kernel_sizes": ((3, 5),) * 3, "filters": (2, 2, 2),
                          "input_shape": (40, 40, 1)}, 8),
        ("four_kernels_same", {"kernel_sizes": ((1, 3, 5, 7), (3, 5)),
                               "filters": 3, "padding": "same"}, 8),
        ("rgb", {"kernel_sizes": ((3,), (3, 5, 7)), "filters": (2, 4),
                 "input_shape": (32, 32, 3)}, 3),
    )
    def test_other_search_spaces(self, kwargs, num_paths):
        model = Supernet(hidden_units=8, num_classes=5, seed=1, **kwargs)
        self.assertEqual(model.num_paths, num_paths)
        x = np.zeros((2, *model.image_shape), "float32")
        for p in range(num_paths):
            model.set_path(p)
            self.assertEqual(model(x).shape, (2, 5))

    # === Training ===

    def test_step_changes_only_the_sampled_path(self):
        model = _compile(Supernet(**self.init_kwargs))
        x, y = _batch(16)
        # Warm-up until every candidate has Adam momentum.
        for _ in range(12):
            model.train_on_batch(x, y)
        state = _snapshot(model)
        for name, values in state.items():
            if len(values) == 3:
                self.assertTrue(np.any(values[1] != 0), name)
        for _ in range(6):
            before = _snapshot(model)
            model.train_on_batch(x, y)
            after = _snapshot(model)
            self.assertEqual(
                _changed(before, after),
                _path_variable_names(model, model.active_path),
            )

    def test_fixed_sampling_trains_the_active_path_only(self):
        model = _compile(Supernet(sampling="fixed", **self.init_kwargs))
        model.set_path(1)
        model.optimizer.build(model.trainable_variables)
        x, y = _batch(16)
        before = _snapshot(model)
        model.fit(x, y, batch_size=4, epochs=2, verbose=0)
        self.assertEqual(model.active_path, 1)
        self.assertEqual(
            _changed(before, _snapshot(model)),
            _path_variable_names(model, 1),
        )

    @parameterized.named_parameters(("masked", False), ("restoring", True))
    def test_grouped_step_leaves_unused_head_rows_untouched(self, distributed):
        # Every example on a 128-feature path: the hidden kernel's rows
        # 128..199 serve only the 200-feature paths and must keep their
        # weights and Adam slots, in the masked step and in its
        # tf.distribute variant alike.
        model = _compile(Supernet(sampling="per_example", **self.init_kwargs))
        model.sampler.sample_examples = lambda supernet, n: tf.where(
            tf.range(n) % 2 == 0, 1, 3
        )
        model.optimizer.build(model.trainable_variables)
        x, y = _batch(16)
        for _ in range(3):  # Adam momentum on every row
            model.set_path(0)
            model._path_train_step(0, tf.constant(x), tf.constant(y), None)
        step = tf.function(
            lambda x, y: model._masked_step(x, y, None, distributed)
        )
        before = _snapshot(model)
        step(tf.constant(x), tf.constant(y))
        changed = _changed(before, _snapshot(model))
        self.assertEqual(
            changed,
            _path_variable_names(model, 1) | _path_variable_names(model, 3),
        )
        self.assertNotIn(model.hidden.kernel_blocks[1].path, changed)

    def test_training_reduces_loss(self):
        model = _compile(Supernet(**self.init_kwargs), learning_rate=3e-3)
        x, y = _batch(64)
        first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
        model.fit(x, y, batch_size=16, epochs=40, verbose=0)
        for p in range(model.num_paths):
            model.set_path(p)
            loss = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
            self.assertLess(loss, 0.7 * first)

    def test_path_draws_are_reproducible(self):
        def trained_paths(seed):
            model = _compile(Supernet(**{**self.init_kwargs, "seed": seed}))
            x, y = _batch(4)
            paths = []
            for _ in range(20):
                model.train_on_batch(x, y)
                paths.append(model.active_path)
            return paths, [w.numpy() for w in model.weights]

        paths_a, weights_a = trained_paths(3)
        paths_b, weights_b = trained_paths(3)
        paths_c, _ = trained_paths(4)
        self.assertEqual(paths_a, paths_b)
        self.assertNotEqual(paths_a, paths_c)
        self.assertEqual(set(paths_a), {0, 1, 2, 3})
        for a, b in zip(weights_a, weights_b):
            np.testing.assert_array_equal(a, b)

    def test_path_draws_are_uniform(self):
        model = Supernet(**self.init_kwargs)
        draw = tf.function(lambda: model.sampler.sample(model))
        draws = [int(draw()) for _ in range(800)]
        counts = np.bincount(draws, minlength=4)
        # Chi-square goodness of fit against uniform: p < 0.001 fails.
        self.assertGreater(stats.chisquare(counts).pvalue, 1e-3, counts)

    def test_same_seed_same_initial_weights_any_sampling(self):
        joint = Supernet(**self.init_kwargs)
        fixed = Supernet(sampling="fixed", **self.init_kwargs)
        other = Supernet(**{**self.init_kwargs, "seed": 8})
        for a, b, c in zip(joint.weights, fixed.weights, other.weights):
            np.testing.assert_array_equal(a, b)
            if a.ndim > 1:
                self.assertFalse(np.array_equal(a, c))

    def test_changing_path_never_retraces(self):
        model = _compile(Supernet(**self.init_kwargs))
        traces = {"train": 0, "forward": 0}
        path_train_step = model._path_train_step
        path_call = model.path_call

        def counting_train_step(*args, **kwargs):
            traces["train"] += 1
            return path_train_step(*args, **kwargs)

        def counting_call(*args, **kwargs):
            traces["forward"] += 1
            return path_call(*args, **kwargs)

        model._path_train_step = counting_train_step
        model.path_call = counting_call
        x, y = _batch(8)
        model.train_on_batch(x, y)
        model.predict(x, verbose=0)
        after_first = dict(traces)
        for p in (3, 0, 2, 1):
            model.set_path(p)
            model.train_on_batch(x, y)
            model.predict(x, verbose=0)
        self.assertEqual(traces, after_first)
        self.assertGreater(after_first["train"], 0)

    # === Serialization ===

    def test_config_round_trip(self):
        model = Supernet(sampling="fixed", name="net", **self.init_kwargs)
        config = model.get_config()
        clone = Supernet.from_config(config)
        self.assertEqual(clone.get_config(), config)
        for a, b in zip(model.weights, clone.weights):
            np.testing.assert_array_equal(a, b)

    def test_save_and_load_keras_file(self):
        model = _compile(Supernet(**self.init_kwargs))
        x, y = _batch(8)
        model.train_on_batch(x, y)
        model.set_path(3)
        path = os.path.join(tempfile.mkdtemp(), "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, Supernet)
        self.assertEqual(loaded.active_path, 3)
        np.testing.assert_allclose(loaded.predict(x, verbose=0),
                                   model.predict(x, verbose=0), atol=1e-6)
        # The path sequence continues where the saved model stopped.
        self.assertEqual(
            [int(loaded.sampler.sample(loaded)) for _ in range(5)],
            [int(model.sampler.sample(model)) for _ in range(5)],
        )

    # === Bad arguments ===

    def test_loads_weights_saved_by_version_0_1_0(self):
        # 0.1.0 saved the hidden layer as one (200, 8) kernel.
        folder = os.path.join(os.path.dirname(__file__), "data", "v0_1_0")
        with open(os.path.join(folder, "config.json")) as f:
            model = Supernet.from_config(json.load(f))
        model.load_weights(os.path.join(folder, "supernet.weights.h5"))
        expected = np.load(os.path.join(folder, "expected.npz"))
        for p in range(model.num_paths):
            np.testing.assert_allclose(
                model.path_call(expected["inputs"], p),
                expected[f"path{p}"],
                atol=1e-5,
            )

    @parameterized.named_parameters(
        ("no_layers", {"kernel_sizes": ()}, r"kernel_sizes=\(\)"),
        ("empty_layer", {"kernel_sizes": ((3, 5), ())},
         r"kernel_sizes\[1\]"),
        ("zero_filters", {"filters": (16, 0)}, "filters=0"),
        ("negative_filters", {"filters": -1}, "filters=-1"),
        ("lengths_disagree", {"filters": (16, 32, 64)}, r"filters=\(16, 32"),
        ("zero_hidden", {"hidden_units": 0}, "hidden_units=0"),
        ("zero_classes", {"num_classes": 0}, "num_classes=0"),
        ("bad_input_shape", {"input_shape": (28, 28)}, "input_shape"),
        ("bad_padding", {"padding": "full"}, "padding='full'"),
        ("bad_sampling", {"sampling": "greedy"}, "sampling='greedy'"),
        ("bad_seed", {"seed": -1}, "seed=-1"),
        ("shrinks_to_nothing",
         {"kernel_sizes": ((5, 7),) * 3, "filters": 4},
         r"path 5x5->5x5->5x5 shrinks input of shape \(28, 28, 1\)"),
    )
    def test_bad_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            Supernet(**{**self.init_kwargs, **kwargs})


if __name__ == "__main__":
    pytest.main([__file__])
