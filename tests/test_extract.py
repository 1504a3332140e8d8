import json
import os
import tempfile

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_supernet import Supernet
from keras_supernet import extract_path
from keras_supernet import path_config
from keras_supernet.extract import max_path_difference

SEARCH_SPACES = {
    "report_2x2": {
        "kernel_sizes": ((3, 5), (3, 5)),
        "filters": (8, 16),
        "input_shape": (28, 28, 1),
    },
    "three_layers_same": {
        "kernel_sizes": ((1, 3, 5, 7), (3, 5), (3, 5)),
        "filters": (4, 6, 8),
        "input_shape": (28, 28, 1),
        "padding": "same",
    },
}


def _trained_supernet(space):
    model = Supernet(hidden_units=32, num_classes=10, seed=5, **space)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, *model.image_shape)).astype("float32")
    y = rng.integers(0, 10, size=(64,))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return model, x


class ExtractTest(parameterized.TestCase):
    @parameterized.named_parameters(*SEARCH_SPACES.items())
    def test_every_path_equals_the_supernet(self, space):
        model, x = _trained_supernet(space)
        for path in range(model.num_paths):
            plain = extract_path(model, path)
            model.set_path(path)
            expected = model.predict(x, verbose=0)
            actual = plain.predict(x, verbose=0)
            self.assertLessEqual(np.max(np.abs(expected - actual)), 1e-5)
            # Not trivially equal: the logits depend on the input (a path
            # whose hidden units all died would output its biases only).
            self.assertGreater(
                np.abs(expected - expected.mean(axis=0)).max(), 0.1
            )

    def test_plain_model_has_standard_layers_only(self):
        model, x = _trained_supernet(SEARCH_SPACES["report_2x2"])
        plain = extract_path(model, "5x5,3x3")
        self.assertIsInstance(plain, keras.Sequential)
        for layer in plain.layers:
            self.assertTrue(
                type(layer).__module__.startswith("keras."),
                type(layer),
            )
        self.assertEqual(
            [type(l).__name__ for l in plain.layers],
            ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten",
             "Dense", "Dense"],
        )
        # The zero padding is folded into the first Dense kernel.
        self.assertEqual(plain.get_layer("hidden").kernel.shape, (400, 32))
        # Saved and loaded with no custom objects.
        path = os.path.join(tempfile.mkdtemp(), "plain.keras")
        plain.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), plain.predict(x, verbose=0),
            atol=1e-6,
        )

    def test_extraction_leaves_the_active_path_alone(self):
        model, _ = _trained_supernet(SEARCH_SPACES["report_2x2"])
        model.set_path(3)
        extract_path(model, 0)
        self.assertEqual(model.active_path, 3)

    def test_path_config_is_plain_data(self):
        model = Supernet(seed=0)
        config = path_config(model, 2)
        self.assertEqual(json.loads(json.dumps(config)), config)
        self.assertEqual(config["label"], "5x5->3x3")
        self.assertEqual([l["kernel_size"] for l in config["layers"]], [5, 3])
        self.assertEqual(config["features"], 800)

    def test_verification_catches_a_wrong_copy(self):
        model, x = _trained_supernet(SEARCH_SPACES["report_2x2"])
        plain = extract_path(model, 1)
        bias = plain.get_layer("logits").bias
        bias.assign(bias + 1e-3)
        self.assertGreater(max_path_difference(model, 1, plain, x), 5e-4)

    def test_unknown_path(self):
        model = Supernet(seed=0)
        with pytest.raises(ValueError, match="Valid paths"):
            extract_path(model, (7, 7))


if __name__ == "__main__":
    pytest.main([__file__])
