"""Fixtures and helpers shared by the test modules.

Tests train on `tests/data/mnist_small/` (real MNIST images) or on the small
synthetic batches below; none downloads anything.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_SMALL = os.path.join(ROOT, "tests", "data", "mnist_small")
SHARED_MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")


def learnable_batch(n=16, shape=(28, 28, 1), seed=0, num_classes=10):
    """Noise plus a per-class pattern, so that the labels can be learnt."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(1234).normal(size=(num_classes, *shape))
    y = rng.integers(0, num_classes, size=(n,))
    x = rng.normal(size=(n, *shape)) + patterns[y]
    return x.astype("float32"), y


def compile_model(model, learning_rate=1e-2, metrics=("accuracy",)):
    """Adam, sparse cross-entropy on logits, and a built optimizer."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
    )
    model.optimizer.build(model.trainable_variables)
    return model


def optimizer_slots(model, variable):
    """The optimizer variables of model variable `variable`."""
    prefix = variable.path.replace("/", "_") + "_"
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    return [v for v in optimizer.variables if v.name.startswith(prefix)]


def candidate_state(model):
    """`(choice position, candidate) -> [weights and optimizer slots]` for
    every candidate with variables, plus `("shared", path)` entries for the
    trainable variables outside every choice."""
    state = {}
    inside = set()
    for c, choice in enumerate(model.choices):
        for k, candidate in enumerate(choice.candidates):
            values = []
            for v in candidate.variables:
                inside.add(id(v))
                values.append(np.array(v.numpy()))
                values += [np.array(s.numpy()) for s in optimizer_slots(model, v)]
            if values:
                state[(c, k)] = values
    for v in model.trainable_variables:
        if id(v) not in inside:
            state[("shared", v.path)] = [np.array(v.numpy())] + [
                np.array(s.numpy()) for s in optimizer_slots(model, v)
            ]
    return state


def changed_keys(before, after):
    """The keys of `candidate_state` whose arrays changed."""
    return {
        key
        for key in before
        if any(not np.array_equal(a, b) for a, b in zip(before[key], after[key]))
    }


def choice_space(
    num_choices=20,
    size=8,
    channels=4,
    specs=("conv3x3", "conv1x1", "bn3x3", "skip"),
    seed=0,
    dtype=None,
):
    """`(inputs, outputs)` of a functional supernet of `num_choices` choices.

    Candidates (kept small, so that a 20-choice step compiles fast): a 3x3 or
    1x1 `Conv2D`, a 3x3 `Conv2D` -> BatchNorm -> ReLU block, and a skip.
    """
    from keras_supernet import Choice

    def candidate(spec, i, k):
        init = keras.initializers.GlorotUniform(seed=seed * 1000 + i * 10 + k)
        if spec == "skip":
            return keras.layers.Identity(name="skip", dtype=dtype)
        kernel = int(spec[-1])
        conv = keras.layers.Conv2D(
            channels,
            kernel,
            padding="same",
            kernel_initializer=init,
            name="conv",
            dtype=dtype,
        )
        if spec.startswith("bn"):
            return keras.Sequential(
                [
                    conv,
                    keras.layers.BatchNormalization(name="bn", dtype=dtype),
                    keras.layers.ReLU(name="relu", dtype=dtype),
                ],
                name=spec,
            )
        return keras.Sequential([conv], name=spec)

    inputs = keras.Input((size, size, 1), name="images")
    x = keras.layers.Conv2D(
        channels,
        3,
        padding="same",
        name="stem",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        dtype=dtype,
    )(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn", dtype=dtype)(x)
    for i in range(num_choices):
        x = Choice(
            [candidate(spec, i, k) for k, spec in enumerate(specs)],
            labels=list(specs),
            name=f"choice_{i}",
            dtype=dtype,
        )(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(x)
    outputs = keras.layers.Dense(
        10,
        name="logits",
        dtype=dtype,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
    )(x)
    return inputs, outputs


def stage_space(blocks=1, input_shape=(8, 8, 2)):
    """`(inputs, outputs)` of 3**blocks x 4 paths: block choices, then a
    stage choice whose candidates end in hidden layers of their own and of
    different widths (16, 16, 4, 32 units), the logits a `PaddedDense` that
    takes every width."""
    from keras_supernet import Choice
    from keras_supernet import PaddedDense
    from keras_supernet import candidates

    def stage(filters, hidden, name):
        return keras.Sequential(
            [
                keras.layers.Conv2D(filters, 3, strides=2),
                keras.layers.Flatten(),
                keras.layers.Dense(hidden, activation="relu"),
            ],
            name=name,
        )

    channels = input_shape[-1]
    inputs = keras.Input(input_shape)
    x = inputs
    for i in range(blocks):
        x = candidates.choice(
            ["conv3x3", "sep3x3", "skip"],
            channels,
            input_channels=channels,
            seed=i,
            name=f"b{i}",
        )(x)
    x = Choice(
        [stage(8, 16, "a"), stage(2, 16, "b"), stage(2, 4, "c"), stage(4, 32, "d")],
        name="stage",
    )(x)
    outputs = PaddedDense(10, widths=(4, 16, 32), name="logits")(x)
    return inputs, outputs


@pytest.fixture
def mnist_small_dir():
    return MNIST_SMALL


@pytest.fixture
def batch():
    return learnable_batch()
