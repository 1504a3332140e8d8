"""The user's story, fourth part: a space built around the report model
itself, the way a practitioner starts from the model deployed today.

    bin/train --mode=joint --space=docs/results/search/story_report/space.py ...

The report's 3x3->3x3 model is a path of this space, layer for layer:
`conv3x3->skip->skip->conv3x3->skip->skip->skip->skip->skip->skip->skip` is
a valid 3x3 convolution of 16 filters (26x26, ReLU, no BatchNorm), max
pooling (13x13), a valid 3x3 convolution of 32 filters (11x11), max pooling
(5x5), flatten (800 features), a 128-unit dense layer and the logits. So
`bin/search --reference=<that path> --max_latency_ms=reference` is a budget
of exactly the report model's latency, predicted like every proposal's.

Every other path changes it where a practitioner would: BatchNorm on the two
convolutions (`_bn`), a 5x5 kernel (zero-padded by 1 so the shapes stay
those of the report model), a separable second convolution that frees
latency for extra blocks, and extra blocks (or skip) at each resolution:
two at 26x26 (separable 3x3 or 5x5), three at 11x11 (separable 3x3 or 5x5,
inverted residual) and four at 5x5 (separable 3x3, convolution 3x3,
inverted residual). 3 * 3**2 * 4 * 4**3 * 4**4 = 1,769,472 paths.
"""

import keras

import keras_supernet as ks


def _conv(filters, kernel_size, batchnorm, seed, name):
    """The report model's valid convolution, optionally with BatchNorm; a 5x5
    kernel is zero-padded by 1 so that it gives the 3x3's output shape."""
    layers = []
    if kernel_size == 5:
        layers.append(keras.layers.ZeroPadding2D(1, name="pad"))
    layers.append(
        keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="valid",
            use_bias=not batchnorm,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="conv",
        )
    )
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers.append(keras.layers.ReLU(name="relu"))
    return keras.Sequential(layers, name=name)


def _separable_valid(filters, seed, name):
    """A valid separable 3x3 convolution with BatchNorm: the report model's
    second convolution at a seventh of its multiply-adds."""
    return keras.Sequential(
        [
            keras.layers.DepthwiseConv2D(
                3,
                padding="valid",
                use_bias=False,
                depthwise_initializer=keras.initializers.GlorotUniform(seed=seed),
                name="depthwise",
            ),
            keras.layers.BatchNormalization(name="bn_depthwise"),
            keras.layers.ReLU(name="relu_depthwise"),
            keras.layers.Conv2D(
                filters,
                1,
                use_bias=False,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
                name="pointwise",
            ),
            keras.layers.BatchNormalization(name="bn_pointwise"),
            keras.layers.ReLU(name="relu_pointwise"),
        ],
        name=name,
    )


def _first_or_second(filters, seed, name, separable):
    candidates = [
        _conv(filters, 3, False, seed, "conv3x3"),
        _conv(filters, 3, True, seed + 10, "conv3x3_bn"),
        _conv(filters, 5, True, seed + 20, "conv5x5_bn"),
    ]
    if separable:
        candidates.append(_separable_valid(filters, seed + 30, "sep3x3_bn"))
    return ks.Choice(candidates, name=name)


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
    x = _first_or_second(16, 100, "first", separable=False)(inputs)
    for _ in range(2):
        x = extra(["skip", "sep3x3", "sep5x5"], 16)(x)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = _first_or_second(32, 200, "second", separable=True)(x)
    for _ in range(3):
        x = extra(["skip", "sep3x3", "sep5x5", "mb3x3_e3"], 32)(x)
    x = keras.layers.MaxPooling2D(2, name="pool_2")(x)
    for _ in range(4):
        x = extra(["skip", "sep3x3", "conv3x3", "mb3x3_e3"], 32)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(
        128,
        activation="relu",
        name="hidden",
        kernel_initializer=keras.initializers.GlorotUniform(seed=97),
    )(x)
    outputs = keras.layers.Dense(
        num_classes,
        name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed=98),
    )(x)
    return inputs, outputs
