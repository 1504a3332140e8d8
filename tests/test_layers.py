import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from keras_supernet import PaddedDense
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


class PaddedDenseTest(parameterized.TestCase):
    def _layer(self, **kwargs):
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

    def test_blocks_cut_at_every_width(self):
        layer = self._layer()
        self.assertEqual(layer.widths, (3, 5, 8))
        self.assertEqual(
            [tuple(b.shape) for b in layer.kernel_blocks],
            [(3, 6), (2, 6), (3, 6)],
        )
        self.assertEqual(
            [b.path.split("/")[-1] for b in layer.kernel_blocks],
            ["kernel_rows_0_3", "kernel_rows_3_5", "kernel_rows_5_8"],
        )
        self.assertEqual(layer.blocks_for(5), layer.kernel_blocks[:2])

    def test_initial_kernel_is_the_full_width_dense_kernel(self):
        layer = self._layer()
        dense = keras.layers.Dense(
            6, kernel_initializer=keras.initializers.GlorotUniform(seed=4)
        )
        dense.build((None, 8))
        np.testing.assert_array_equal(layer.kernel, dense.kernel)

    @parameterized.parameters(3, 5, 8)
    def test_equals_dense_on_the_zero_padded_input(self, width):
        layer = self._layer()
        x = np.random.default_rng(width).normal(size=(4, width))
        x = x.astype("float32")
        padded = np.pad(x, [(0, 0), (0, 8 - width)])
        expected = np.maximum(
            padded @ np.asarray(layer.kernel) + np.asarray(layer.bias), 0.0
        )
        np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
        self.assertEqual(layer.compute_output_shape((None, width)), (None, 6))

    def test_narrow_input_gets_no_gradient_on_wider_rows(self):
        layer = self._layer()
        x = np.ones((2, 5), "float32")
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        gradients = tape.gradient(loss, layer.kernel_blocks)
        self.assertIsNotNone(gradients[0])
        self.assertIsNotNone(gradients[1])
        self.assertIsNone(gradients[2])

    def test_unknown_width_is_refused(self):
        layer = self._layer()
        with self.assertRaisesRegex(ValueError, "accepts inputs of width 3, 5, 8"):
            layer(np.zeros((1, 4), "float32"))

    @parameterized.parameters([()], [(0, 3)], [(2.5,)], [None], [(True,)])
    def test_bad_widths(self, widths):
        with self.assertRaisesRegex(ValueError, "argument `widths`"):
            PaddedDense(2, widths=widths)

    def test_config_round_trip(self):
        layer = self._layer(name="head")
        clone = PaddedDense.from_config(layer.get_config())
        self.assertEqual(clone.widths, (3, 5, 8))
        self.assertEqual(clone.units, 6)
        self.assertEqual(clone.name, "head")

    def test_loads_weights_saved_as_one_full_kernel(self):
        # keras_supernet 0.1.0 saved the hidden layer as a Dense: one
        # (full width, units) kernel, then the bias.
        layer = self._layer()
        kernel = np.arange(48, dtype="float32").reshape(8, 6)
        bias = np.ones(6, "float32")
        layer.load_own_variables({"0": kernel, "1": bias})
        np.testing.assert_array_equal(layer.kernel, kernel)
        np.testing.assert_array_equal(layer.kernel_blocks[1], kernel[3:5])
        np.testing.assert_array_equal(layer.bias, bias)
        with self.assertRaisesRegex(ValueError, r"saved kernel of shape \(8, 6\)"):
            layer.load_own_variables({"0": kernel[:5], "1": bias})

    def test_save_and_load_round_trip(self):
        layer = self._layer()
        path = os.path.join(tempfile.mkdtemp(), "head.weights.h5")
        model = keras.Sequential([keras.Input((8,)), layer])
        model.save_weights(path)
        other = keras.Sequential([keras.Input((8,)), self._layer()])
        for block in other.layers[0].kernel_blocks:
            block.assign(np.zeros(block.shape, "float32"))
        other.load_weights(path)
        np.testing.assert_array_equal(other.layers[0].kernel, layer.kernel)
