import json

import keras
import numpy as np
import pytest

from conftest import compile_model
from conftest import learnable_batch
from conftest import stage_space
from keras_supernet import Choice
from keras_supernet import Supernet
from keras_supernet import build_path_model
from keras_supernet import candidates
from keras_supernet import extract_path
from keras_supernet import path_config
from keras_supernet.extract import max_path_difference

REPORT_SPACES = {
    "report_2x2": {"kernel_sizes": ((3, 5), (3, 5)), "filters": (8, 16)},
    "three_layers_same": {
        "kernel_sizes": ((1, 3, 5, 7), (3, 5), (3, 5)),
        "filters": (4, 6, 8),
        "padding": "same",
    },
}


def _trained(model, steps=2):
    compile_model(model, 1e-3)
    x, y = learnable_batch(64, model.image_shape)
    model.fit(x, y, batch_size=8, epochs=steps, verbose=0)
    return model, x


def _keras_only(model):
    """Every layer of `model`, nested ones included, is Keras's own."""
    return all(
        type(layer).__module__.startswith("keras.")
        for layer in model._flatten_layers(include_self=False)
    )


@pytest.mark.parametrize("name", list(REPORT_SPACES))
def test_every_report_path_equals_the_supernet(name):
    model, x = _trained(Supernet(hidden_units=32, seed=5, **REPORT_SPACES[name]))
    for path in range(model.num_paths):
        plain = extract_path(model, path)
        model.set_path(path)
        expected = model.predict(x, verbose=0)
        assert np.max(np.abs(expected - plain.predict(x, verbose=0))) <= 1e-5
        # Not trivially equal: the logits depend on the input.
        assert np.abs(expected - expected.mean(axis=0)).max() > 0.05
        assert _keras_only(plain)


def _random_space(rng):
    """A random functional supernet: random depth, candidates (with and
    without BatchNorm), skip positions, and a residual addition."""
    channels = 4
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(channels, 3, padding="same")(inputs)
    specs = ["conv3x3", "conv5x5", "sep3x3", "mb3x3_e2", "mb5x5_e3", "skip"]
    for i in range(int(rng.integers(1, 5))):
        chosen = list(rng.choice(specs, size=int(rng.integers(1, 4)), replace=False))
        block = candidates.choice(
            chosen,
            channels,
            input_channels=channels,
            batchnorm=bool(rng.integers(0, 2)),
            seed=int(rng.integers(1000)),
            name=f"choice_{i}",
        )
        y = block(x)
        x = keras.layers.Add(name=f"add_{i}")([x, y]) if rng.integers(0, 2) else y
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    return Supernet(inputs=inputs, outputs=outputs, seed=0)


@pytest.mark.parametrize("seed", range(6))
def test_random_paths_of_random_spaces_extract_exactly(seed):
    rng = np.random.default_rng(seed)
    model, x = _trained(_random_space(rng), steps=1)
    paths = {0, model.num_paths - 1} | {
        int(rng.integers(model.num_paths)) for _ in range(3)
    }
    for path in sorted(paths):
        if model.has_batchnorm:
            model.recalibrate_batchnorm([x[:16], x[16:32]], path=path)
        plain = extract_path(model, path)
        assert max_path_difference(model, path, plain, x) <= 1e-5
        assert _keras_only(plain)
        assert not any(isinstance(layer, Choice) for layer in plain._flatten_layers())


def test_candidates_that_end_in_their_own_head_train_and_extract():
    # Each stage candidate is a convolution, Flatten and a hidden Dense of
    # its own width; the logits take every width. Keras's unbuilt
    # Sequential cannot compute such a candidate's output spec by itself.
    keras.utils.set_random_seed(0)
    model, x = _trained(Supernet(*stage_space(input_shape=(28, 28, 1)), seed=0))
    assert model.num_paths == 12
    for path in range(model.num_paths):
        plain = extract_path(model, path)
        assert max_path_difference(model, path, plain, x) <= 1e-5
        assert plain.get_layer("logits").kernel.shape[0] == (16, 16, 4, 32)[path % 4]


def test_plain_model_saves_and_loads_without_this_package(tmp_path):
    model, x = _trained(
        Supernet(hidden_units=32, seed=5, **REPORT_SPACES["report_2x2"])
    )
    plain = extract_path(model, "5x5->3x3")
    assert [type(layer).__name__ for layer in plain.layers] == [
        "InputLayer",
        "Sequential",
        "Sequential",
        "Flatten",
        "Dense",
        "Dense",
    ]
    # The zero padding is folded into the first Dense kernel.
    assert plain.get_layer("hidden").kernel.shape == (400, 32)
    path = str(tmp_path / "plain.keras")
    plain.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6
    )


def test_extraction_leaves_the_active_path_alone():
    model = Supernet(seed=0)
    model.set_path(3)
    extract_path(model, 0)
    assert model.active_path == 3


def test_path_config_is_plain_data_and_builds_the_architecture():
    model = Supernet(seed=0)
    config = path_config(model, 2)
    assert json.loads(json.dumps(config)) == config
    assert config["label"] == "5x5->3x3" and config["indices"] == [1, 0]
    fresh = build_path_model(config)
    plain = extract_path(model, 2)
    assert [tuple(w.shape) for w in fresh.weights] == [
        tuple(w.shape) for w in plain.weights
    ]
    assert fresh.get_layer("hidden").kernel.shape == (800, 128)


def test_verification_catches_a_wrong_copy():
    model, x = _trained(
        Supernet(hidden_units=32, seed=5, **REPORT_SPACES["report_2x2"])
    )
    plain = extract_path(model, 1)
    bias = plain.get_layer("logits").bias
    bias.assign(bias + 1e-3)
    assert max_path_difference(model, 1, plain, x) > 5e-4


def test_unknown_path():
    model = Supernet(seed=0)
    with pytest.raises(ValueError, match="Valid paths"):
        extract_path(model, 9)
