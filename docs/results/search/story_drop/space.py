"""The user's story, sixth part: the report model's stages with dropout.

    bin/train --mode=joint --space=docs/results/search/story_drop/space.py ...

Five spaces of convolutions found no path more accurate than the report
model at its latency, and every path retrained alone overfits the same way
(training accuracy 0.998 while validation peaks by epoch 5-8 of 15). This
space adds what the Keras MNIST examples and NNI's MNIST search space add:
dropout, here inside each second-stage candidate, 0.25 after the second
pooling and 0.5 after the hidden layer (Keras's `mnist_cnn`). Dropout is
the identity at inference: it costs no latency, and an extracted or
exported path keeps it as a no-op layer.

The report's own stage, without dropout, stays candidate 0, so the report's
3x3->3x3 model is path 0,
`conv3x3->skip->skip->skip->skip->skip->skip->skip->skip->skip->conv3x3_32_h128`
(108,618 parameters, 758,592 multiply-adds). The first convolution and the
extra blocks are the fifth part's (story_wide/space.py).

3 * 3**3 * 4**6 * 8 = 2,654,208 paths.
"""

import keras

import keras_supernet as ks


def _glorot(seed):
    return keras.initializers.GlorotUniform(seed=seed)


def _conv(filters, kernel_size, batchnorm, seed, name="conv"):
    """A valid convolution, optionally with BatchNorm; a 5x5 kernel is
    zero-padded by 1 so that it gives the 3x3's output shape."""
    layers = []
    if kernel_size == 5:
        layers.append(keras.layers.ZeroPadding2D(1, name=f"{name}_pad"))
    layers.append(
        keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="valid",
            use_bias=not batchnorm,
            kernel_initializer=_glorot(seed),
            name=name,
        )
    )
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(name=f"{name}_bn"))
    layers.append(keras.layers.ReLU(name=f"{name}_relu"))
    return layers


def _stage(second, after_pool, hidden, dropout, seed, name):
    """The second stage and hidden layer as one candidate: `second` ->
    max pooling -> `after_pool` -> [dropout 0.25] -> flatten ->
    Dense(hidden, relu) [-> dropout 0.5]."""

    def drop(rate, offset):
        # Seeded: the same seed gives the same dropout masks.
        return [keras.layers.Dropout(rate, seed=seed + offset, name=f"drop_{offset}")]

    return keras.Sequential(
        [
            *second,
            keras.layers.MaxPooling2D(2, name="pool"),
            *after_pool,
            *(drop(0.25, 1) if dropout else []),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(
                hidden,
                activation="relu",
                kernel_initializer=_glorot(seed),
                name="hidden",
            ),
            *(drop(0.5, 2) if dropout else []),
        ],
        name=name,
    )


def _squeeze(filters, seed):
    """A 1x1 convolution with BatchNorm: fewer channels to flatten."""
    return [
        keras.layers.Conv2D(
            filters, 1, use_bias=False, kernel_initializer=_glorot(seed), name="squeeze"
        ),
        keras.layers.BatchNormalization(name="squeeze_bn"),
        keras.layers.ReLU(name="squeeze_relu"),
    ]


# (label, second convolution, layers after the pooling, hidden units,
# dropout). Candidate 0 is the report's stage as it is.
_SECOND = [
    ("conv3x3_32_h128", lambda: _conv(32, 3, False, 200), list, 128, False),
    ("conv3x3_32_h128_drop", lambda: _conv(32, 3, False, 205), list, 128, True),
    ("conv3x3_bn_32_h128_drop", lambda: _conv(32, 3, True, 210), list, 128, True),
    ("conv3x3_bn_32_h64_drop", lambda: _conv(32, 3, True, 220), list, 64, True),
    (
        "conv3x3_bn_32_conv3x3_64_h128_drop",
        lambda: _conv(32, 3, True, 230),
        lambda: _conv(64, 3, True, 235, "conv_3"),
        128,
        True,
    ),
    (
        "conv3x3_bn_32_conv3x3_64_h64_drop",
        lambda: _conv(32, 3, True, 240),
        lambda: _conv(64, 3, True, 245, "conv_3"),
        64,
        True,
    ),
    (
        "conv3x3_bn_32_conv3x3_32_h128_drop",
        lambda: _conv(32, 3, True, 250),
        lambda: _conv(32, 3, True, 255, "conv_3"),
        128,
        True,
    ),
    (
        "conv3x3_bn_32_squeeze16_h128_drop",
        lambda: _conv(32, 3, True, 260),
        lambda: _squeeze(16, 265),
        128,
        True,
    ),
]


def _first():
    return ks.Choice(
        [
            keras.Sequential(_conv(16, 3, False, 100), name="conv3x3"),
            keras.Sequential(_conv(16, 3, True, 110), name="conv3x3_bn"),
            keras.Sequential(_conv(16, 5, True, 120), name="conv5x5_bn"),
        ],
        name="first",
    )


def _second():
    return ks.Choice(
        [
            _stage(second(), after(), hidden, dropout, 97 + 1000 * i, label)
            for i, (label, second, after, hidden, dropout) in enumerate(_SECOND)
        ],
        name="second",
    )


def space(input_shape, num_classes):
    blocks = iter(range(100))

    def extra(specs, channels):
        index = next(blocks)
        return ks.candidates.choice(
            specs,
            channels,
            input_channels=channels,
            seed=1000 * (index + 1),
            name=f"extra_{index}",
        )

    inputs = keras.Input(input_shape, name="images")
    x = _first()(inputs)
    for _ in range(3):
        x = extra(["skip", "sep3x3", "sep5x5"], 16)(x)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    for _ in range(6):
        x = extra(["skip", "sep3x3", "sep5x5", "mb3x3_e3"], 16)(x)
    x = _second()(x)
    # The hidden widths differ (64, 128 units): the logits take each with
    # the rows of its width (a `Dense` on the zero-padded features).
    outputs = ks.PaddedDense(
        num_classes,
        widths=sorted({hidden for _, _, _, hidden, _ in _SECOND}),
        kernel_initializer=_glorot(98),
        name="logits",
    )(x)
    return inputs, outputs
