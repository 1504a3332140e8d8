"""Ready builders for the common candidate blocks of a search space.

Each builder returns one standard Keras layer (a `keras.Sequential` or a
small functional `keras.Model` of standard layers) and names it after what
it is, so that paths read well (`"conv3x3->sep5x5->skip"`): pass the
builders' results to `Choice`, and `labels` default to their names.

| builder | label | block |
|---|---|---|
| `conv(f, k)` | `conv3x3` | Conv2D (f, k) -> [BatchNorm] -> ReLU |
| `separable(f, k)` | `sep3x3` | DepthwiseConv2D k -> [BN] -> ReLU -> Conv2D 1x1 f -> [BN] -> ReLU |
| `inverted_residual(f, k, e)` | `mb3x3_e3` | Conv2D 1x1 (c*e) -> [BN] -> ReLU6 -> DepthwiseConv2D k -> [BN] -> ReLU6 -> Conv2D 1x1 f -> [BN], + input when it fits |
| `skip()` | `skip` | Identity: the block is left out (a choice of depth) |

`choice(...)` builds a whole `Choice` from short specs: `"conv3x3"`,
`"sep5x5"`, `"mb3x3_e6"`, `"skip"`.

Every builder takes `strides`, `batchnorm`, `dtype` (a dtype policy that
reaches every layer of the block) and `seed` (seeded initializers, so that
the same seed builds the same weights).

Example:

```python
block = Choice([candidates.conv(16, 3), candidates.conv(16, 5),
                candidates.separable(16, 3), candidates.skip()],
               name="block_3")
# the same, from specs:
block = candidates.choice(["conv3x3", "conv5x5", "sep3x3", "skip"], 16,
                          name="block_3")
```
"""

import re

import keras

from keras_supernet import validation
from keras_supernet.layers import Choice

_SPEC = re.compile(
    r"^(?:(?P<kind>conv|sep|mb)(?P<k>\d+)x(?P=k)(?:_e(?P<e>\d+))?|(?P<skip>skip))$"
)


def _initializer(seed, offset):
    if seed is None:
        return "glorot_uniform"
    return keras.initializers.GlorotUniform(seed=seed + offset)


def _depthwise_initializer(seed, offset):
    if seed is None:
        return "glorot_uniform"
    return keras.initializers.GlorotUniform(seed=seed + offset)


def _check_common(filters, kernel_size, strides):
    validation.positive_int("filters", filters)
    validation.positive_int("kernel_size", kernel_size)
    validation.positive_int("strides", strides)


def _norm(batchnorm, name, dtype):
    if not batchnorm:
        return []
    return [keras.layers.BatchNormalization(name=name, dtype=dtype)]


def conv(
    filters,
    kernel_size,
    strides=1,
    batchnorm=True,
    activation="relu",
    dtype=None,
    seed=None,
    name=None,
):
    """A `Conv2D` (same padding) -> [BatchNorm] -> activation block.

    Returns:
        A `keras.Sequential` named `conv{k}x{k}` unless `name` is given.
    """
    _check_common(filters, kernel_size, strides)
    layers = [
        keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=not batchnorm,
            kernel_initializer=_initializer(seed, 0),
            name="conv",
            dtype=dtype,
        )
    ]
    layers += _norm(batchnorm, "bn", dtype)
    layers.append(keras.layers.Activation(activation, name="act", dtype=dtype))
    return keras.Sequential(layers, name=name or f"conv{kernel_size}x{kernel_size}")


def separable(
    filters,
    kernel_size,
    strides=1,
    batchnorm=True,
    dtype=None,
    seed=None,
    name=None,
):
    """A depthwise-separable block (MobileNet v1 style).

    `DepthwiseConv2D(k)` -> [BN] -> ReLU -> `Conv2D(filters, 1)` -> [BN] ->
    ReLU.

    Returns:
        A `keras.Sequential` named `sep{k}x{k}` unless `name` is given.
    """
    _check_common(filters, kernel_size, strides)
    layers = [
        keras.layers.DepthwiseConv2D(
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=not batchnorm,
            depthwise_initializer=_depthwise_initializer(seed, 0),
            name="depthwise",
            dtype=dtype,
        ),
        *_norm(batchnorm, "bn_depthwise", dtype),
        keras.layers.ReLU(name="relu_depthwise", dtype=dtype),
        keras.layers.Conv2D(
            filters,
            1,
            use_bias=not batchnorm,
            kernel_initializer=_initializer(seed, 1),
            name="pointwise",
            dtype=dtype,
        ),
        *_norm(batchnorm, "bn_pointwise", dtype),
        keras.layers.ReLU(name="relu_pointwise", dtype=dtype),
    ]
    return keras.Sequential(layers, name=name or f"sep{kernel_size}x{kernel_size}")


def inverted_residual(
    filters,
    kernel_size,
    input_channels,
    expansion=3,
    strides=1,
    batchnorm=True,
    dtype=None,
    seed=None,
    name=None,
):
    """An inverted-residual block (MobileNet v2 style, "MBConv").

    `Conv2D(c * expansion, 1)` -> [BN] -> ReLU6 -> `DepthwiseConv2D(k)` ->
    [BN] -> ReLU6 -> `Conv2D(filters, 1)` -> [BN], where `c` is the input's
    channel count; the expansion is the block's inner width. The input is
    added to the output when `strides == 1` and `input_channels == filters`.

    Args:
        filters: Output channels.
        kernel_size: Depthwise kernel size.
        input_channels: The input's channel count (the inner width is a
            multiple of it, and the residual needs it).
        expansion: Positive int, the inner width as a multiple of the input
            channels.
        strides: Stride of the depthwise convolution.

    Returns:
        A functional `keras.Model` of standard layers, named
        `mb{k}x{k}_e{expansion}` unless `name` is given.
    """
    _check_common(filters, kernel_size, strides)
    validation.positive_int("expansion", expansion)
    validation.positive_int("input_channels", input_channels)
    name = name or f"mb{kernel_size}x{kernel_size}_e{expansion}"
    residual = strides == 1 and input_channels == filters

    def layers(channels):
        inner = channels * expansion
        return [
            keras.layers.Conv2D(
                inner,
                1,
                use_bias=not batchnorm,
                kernel_initializer=_initializer(seed, 0),
                name="expand",
                dtype=dtype,
            ),
            *_norm(batchnorm, "bn_expand", dtype),
            keras.layers.ReLU(6.0, name="relu_expand", dtype=dtype),
            keras.layers.DepthwiseConv2D(
                kernel_size,
                strides=strides,
                padding="same",
                use_bias=not batchnorm,
                depthwise_initializer=_depthwise_initializer(seed, 1),
                name="depthwise",
                dtype=dtype,
            ),
            *_norm(batchnorm, "bn_depthwise", dtype),
            keras.layers.ReLU(6.0, name="relu_depthwise", dtype=dtype),
            keras.layers.Conv2D(
                filters,
                1,
                use_bias=not batchnorm,
                kernel_initializer=_initializer(seed, 2),
                name="project",
                dtype=dtype,
            ),
            *_norm(batchnorm, "bn_project", dtype),
        ]

    inputs = keras.Input((None, None, input_channels), name=f"{name}_input")
    x = inputs
    for layer in layers(input_channels):
        x = layer(x)
    if residual:
        x = keras.layers.Add(name="residual", dtype=dtype)([inputs, x])
    return keras.Model(inputs, x, name=name)


def skip(dtype=None, name="skip"):
    """The skip candidate: `keras.layers.Identity`, the block left out."""
    return keras.layers.Identity(name=name, dtype=dtype)


def from_spec(
    spec, filters, strides=1, input_channels=None, batchnorm=True, dtype=None, seed=None
):
    """One candidate from a short spec.

    Args:
        spec: `"conv{k}x{k}"`, `"sep{k}x{k}"`, `"mb{k}x{k}_e{e}"` or
            `"skip"`.
        filters: Output channels of the block.

    Raises:
        ValueError: for an unknown spec, or `"skip"` where the block must
            change the shape (`strides > 1` or `input_channels != filters`).
    """
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if not match:
        raise ValueError(
            "Invalid candidate spec. Expected 'conv{k}x{k}', 'sep{k}x{k}', "
            f"'mb{{k}}x{{k}}_e{{e}}' or 'skip'. Received spec={spec!r}."
        )
    if match.group("skip"):
        if strides != 1 or (input_channels is not None and input_channels != filters):
            raise ValueError(
                "Invalid candidate spec 'skip': a skip cannot change the "
                f"shape, and this block has strides={strides}, "
                f"input_channels={input_channels}, filters={filters}."
            )
        return skip(dtype=dtype)
    kind, k = match.group("kind"), int(match.group("k"))
    if kind != "mb" and match.group("e"):
        raise ValueError(
            f"Invalid candidate spec {spec!r}: only 'mb' blocks take an "
            "expansion ('_e{e}')."
        )
    if kind == "conv":
        return conv(filters, k, strides, batchnorm, dtype=dtype, seed=seed)
    if kind == "sep":
        return separable(filters, k, strides, batchnorm, dtype=dtype, seed=seed)
    if input_channels is None:
        raise ValueError(
            f"Invalid candidate spec {spec!r}: an inverted residual needs "
            "the input's channel count. Received input_channels=None."
        )
    return inverted_residual(
        filters,
        k,
        input_channels,
        int(match.group("e") or 3),
        strides,
        batchnorm,
        dtype=dtype,
        seed=seed,
    )


def choice(
    specs,
    filters,
    strides=1,
    input_channels=None,
    batchnorm=True,
    dtype=None,
    seed=None,
    name=None,
):
    """A `Choice` of candidates built from short specs (see `from_spec`).

    Candidate `i` gets seed `seed + 10 * i` (when a seed is given), so that
    candidates start from different weights.
    """
    if isinstance(specs, str) or not specs:
        raise ValueError(
            "Invalid value for argument `specs`. Expected a non-empty list "
            f"of candidate specs. Received specs={specs!r}."
        )
    built = [
        from_spec(
            spec,
            filters,
            strides,
            input_channels,
            batchnorm,
            dtype=dtype,
            seed=None if seed is None else seed + 10 * i,
        )
        for i, spec in enumerate(specs)
    ]
    return Choice(built, labels=list(specs), name=name, dtype=dtype)
