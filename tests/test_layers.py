import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from keras_supernet import SupernetLayer


class SupernetLayerTest(parameterized.TestCase):
    def setUp(self):
        self.init_kwargs = {
            "kernel_sizes": (3, 5),
            "filters": 4,
            "kernel_initializer": keras.initializers.GlorotUniform(seed=3),
        }
        self.inputs = np.random.default_rng(0).random((2, 28, 28, 1))
        self.inputs = self.inputs.astype("float32")

    def test_branches_in_kernel_size_order_with_own_weights(self):
        layer = SupernetLayer(**self.init_kwargs)
        layer.build((None, 28, 28, 1))
        self.assertEqual(
            [b.layers[0].kernel_size for b in layer.branches], [(3, 3), (5, 5)]
        )
        self.assertEqual(layer.branches[0].weights[0].shape, (3, 3, 1, 4))
        self.assertEqual(layer.branches[1].weights[0].shape, (5, 5, 1, 4))
        self.assertEqual(layer.active_index.dtype, "int32")
        self.assertFalse(layer.active_index.trainable)

    def test_call_runs_only_the_active_branch(self):
        layer = SupernetLayer(**self.init_kwargs)
        for index, size in enumerate((13, 12)):
            layer.set_active(index)
            out = layer(self.inputs)
            expected = layer.branches[index](self.inputs)
            self.assertEqual(out.shape, (2, size, size, 4))
            np.testing.assert_array_equal(out, expected)

    def test_switch_without_retracing(self):
        layer = SupernetLayer(**self.init_kwargs)
        layer.build((None, 28, 28, 1))
        fn = tf.function(lambda x: layer(x))
        shapes = []
        for index in (0, 1, 0):
            layer.set_active(index)
            shapes.append(tuple(fn(self.inputs).shape))
        self.assertEqual(shapes, [(2, 13, 13, 4), (2, 12, 12, 4)] * 1 + [
            (2, 13, 13, 4)
        ])
        self.assertEqual(fn.experimental_get_tracing_count(), 1)

    def test_seeded_initialisation_is_reproducible(self):
        def kernels(seed):
            layer = SupernetLayer(
                kernel_sizes=(3, 5),
                filters=4,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            )
            layer.build((None, 8, 8, 1))
            return [w.numpy() for w in layer.weights if w.ndim == 4]

        for a, b in zip(kernels(1), kernels(1)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(kernels(1), kernels(2)):
            self.assertFalse(np.allclose(a, b))

    def test_output_shape_unknown_where_branches_disagree(self):
        layer = SupernetLayer(**self.init_kwargs)
        self.assertEqual(
            layer.compute_output_shape((None, 28, 28, 1)), (None, None, None, 4)
        )
        same = SupernetLayer(kernel_sizes=(3, 5), filters=4, padding="same")
        self.assertEqual(
            same.compute_output_shape((None, 28, 28, 1)), (None, 14, 14, 4)
        )

    def test_config_round_trip(self):
        layer = SupernetLayer(**self.init_kwargs, name="choice")
        layer.build((None, 28, 28, 1))
        layer.set_active(1)
        clone = SupernetLayer.from_config(layer.get_config())
        self.assertEqual(clone.get_config(), layer.get_config())
        clone.build((None, 28, 28, 1))
        # Same seeded initializer: same weights.
        for a, b in zip(layer.branches[1].weights, clone.branches[1].weights):
            np.testing.assert_array_equal(a, b)
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer)
        )
        self.assertIsInstance(restored, SupernetLayer)

    @parameterized.named_parameters(
        ("empty_kernels", {"kernel_sizes": ()}, "kernel_sizes"),
        ("zero_kernel", {"kernel_sizes": (0, 3)}, "kernel_sizes"),
        ("duplicate_kernels", {"kernel_sizes": (3, 3)}, "kernel_sizes"),
        ("zero_filters", {"filters": 0}, "filters=0"),
        ("negative_filters", {"filters": -2}, "filters=-2"),
        ("bad_padding", {"padding": "causal"}, "padding='causal'"),
        ("zero_pool", {"pool_size": 0}, "pool_size=0"),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            SupernetLayer(**kwargs)

    def test_bad_active_index(self):
        layer = SupernetLayer(**self.init_kwargs)
        layer.build((None, 28, 28, 1))
        with self.assertRaisesRegex(ValueError, "index=2"):
            layer.set_active(2)

    def test_branch_that_empties_the_map_is_named(self):
        layer = SupernetLayer(kernel_sizes=(3, 7), filters=2)
        with self.assertRaisesRegex(ValueError, "7x7"):
            layer.compute_output_shape((None, 6, 6, 1))


if __name__ == "__main__":
    pytest.main([__file__])
