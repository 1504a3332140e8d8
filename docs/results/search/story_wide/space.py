"""The user's story, fifth part: the report model with room to grow wider
where it is cheap.

    bin/train --mode=joint --space=docs/results/search/story_wide/space.py ...

The fourth part's space (story_report/space.py) held the report model and
its variants, and none retrained better than it: every width there was the
report's, so a path could only add depth (which did not help) or save
latency. This space keeps the report model layer for layer as one path and
adds what a practitioner would try next for accuracy: a wider second stage,
made affordable by a separable convolution, and the hidden layer's width.

The report's 3x3->3x3 model is
`conv3x3->skip->skip->skip->skip->skip->skip->skip->skip->skip->conv3x3_32_h128`:
a valid 3x3 convolution of 16 filters (26x26, ReLU, no BatchNorm), max
pooling (13x13), a valid 3x3 convolution of 32 filters (11x11), max pooling
(5x5), flatten (800 features), a 128-unit dense layer and the logits
(108,618 parameters, 758,592 multiply-adds).

The choices:
- `first`: the first convolution (16 filters), as the report's, with
  BatchNorm, or 5x5 with BatchNorm (zero-padded by 1: same shapes).
- `extra_0`..`extra_2`: blocks or skip at 26x26 (separable 3x3 or 5x5).
- `extra_3`..`extra_8`: blocks or skip at 13x13 (separable 3x3 or 5x5,
  inverted residual).
- `second`: the second stage *and the hidden layer* as one candidate:
  convolution -> max pooling -> flatten -> Dense(h, relu), or two
  convolutions with pooling between them. Its candidates differ in width
  (32 to 128 channels, hidden 64 to 256 units) and depth, so each
  has its own hidden layer: the latency table then times every candidate
  whole, head included (a width chosen before a shared dense layer would
  change that layer's cost, which a per-choice table cannot see), and the
  only layer the paths share after the last choice is the logits.

3 * 3**3 * 4**6 * 10 = 3,317,760 paths.
"""

import keras

import keras_supernet as ks

_HIDDEN_SEED = 97


def _glorot(seed):
    return keras.initializers.GlorotUniform(seed=seed)


def _conv(filters, kernel_size, batchnorm, seed, name="conv"):
    """The report model's valid convolution, optionally with BatchNorm; a 5x5
    kernel is zero-padded by 1 so that it gives the 3x3's output shape."""
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


def _separable(filters, kernel_size, seed, prefix=""):
    """A valid separable convolution with BatchNorm (depthwise -> BN -> ReLU
    -> pointwise -> BN -> ReLU): a full convolution's spatial and channel
    mixing at a fraction of its multiply-adds, so that a wider stage fits
    the report model's latency."""
    return [
        keras.layers.DepthwiseConv2D(
            kernel_size,
            padding="valid",
            use_bias=False,
            depthwise_initializer=_glorot(seed),
            name=f"{prefix}depthwise",
        ),
        keras.layers.BatchNormalization(name=f"{prefix}bn_depthwise"),
        keras.layers.ReLU(name=f"{prefix}relu_depthwise"),
        keras.layers.Conv2D(
            filters,
            1,
            use_bias=False,
            kernel_initializer=_glorot(seed + 1),
            name=f"{prefix}pointwise",
        ),
        keras.layers.BatchNormalization(name=f"{prefix}bn_pointwise"),
        keras.layers.ReLU(name=f"{prefix}relu_pointwise"),
    ]


def _stage(body, hidden, seed, name):
    """The second stage and hidden layer as one candidate: `body` (max
    pooling included where it pools twice) -> max pooling -> flatten ->
    Dense(hidden, relu)."""
    pool = (
        []
        if any(isinstance(layer, keras.layers.MaxPooling2D) for layer in body)
        else [keras.layers.MaxPooling2D(2, name="pool")]
    )
    return keras.Sequential(
        [
            *body,
            *pool,
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(
                hidden,
                activation="relu",
                kernel_initializer=_glorot(seed),
                name="hidden",
            ),
        ],
        name=name,
    )


def _deeper(first, second):
    """Two convolutions with max pooling between them (11x11 -> 5x5 -> 3x3):
    a deeper stage whose smaller map feeds the hidden layer fewer features."""
    return [*first, keras.layers.MaxPooling2D(2, name="pool"), *second]


def _first():
    return ks.Choice(
        [
            keras.Sequential(_conv(16, 3, False, 100), name="conv3x3"),
            keras.Sequential(_conv(16, 3, True, 110), name="conv3x3_bn"),
            keras.Sequential(_conv(16, 5, True, 120), name="conv5x5_bn"),
        ],
        name="first",
    )


# The second stage's candidates: (label, body, hidden units); seeds apart so
# that no two candidates share an initial kernel.
_SECOND = [
    ("conv3x3_32_h128", lambda: _conv(32, 3, False, 200), 128),
    ("conv3x3_bn_32_h128", lambda: _conv(32, 3, True, 210), 128),
    ("sep3x3_32_h128", lambda: _separable(32, 3, 220), 128),
    ("sep3x3_64_h128", lambda: _separable(64, 3, 230), 128),
    ("sep3x3_96_h128", lambda: _separable(96, 3, 240), 128),
    ("sep3x3_128_h64", lambda: _separable(128, 3, 250), 64),
    ("sep5x5_64_h128", lambda: _separable(64, 5, 260), 128),
    ("sep3x3_64_h256", lambda: _separable(64, 3, 270), 256),
    (
        "sep3x3_32_conv3x3_64_h128",
        lambda: _deeper(_separable(32, 3, 280), _conv(64, 3, True, 285, "conv_2")),
        128,
    ),
    (
        "sep3x3_64_sep3x3_128_h128",
        lambda: _deeper(_separable(64, 3, 290), _separable(128, 3, 295, "b_")),
        128,
    ),
]


def _second():
    return ks.Choice(
        [
            _stage(body(), hidden, _HIDDEN_SEED + 1000 * i, label)
            for i, (label, body, hidden) in enumerate(_SECOND)
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
    # The hidden widths differ (64, 128, 256 units): the logits take each
    # with the rows of its width (a `Dense` on the zero-padded features).
    outputs = ks.PaddedDense(
        num_classes,
        widths=sorted({hidden for _, _, hidden in _SECOND}),
        kernel_initializer=_glorot(98),
        name="logits",
    )(x)
    return inputs, outputs
