"""The supernet choice layer: several candidate blocks, one active at a time."""

import keras
from keras import ops

_PADDINGS = ("valid", "same")
AGGREGATIONS = ("sum", "concat_1x1")


def _positive_ints(values):
    """`values` as a tuple of strictly positive ints, or None if it is not."""
    try:
        values = tuple(values)
    except TypeError:
        return None
    if any(
        isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values
    ):
        return None
    return values


def _validate_kernel_sizes(kernel_sizes, name="kernel_sizes"):
    """Returns `kernel_sizes` as a tuple of distinct positive ints, or raises."""
    sizes = _positive_ints(kernel_sizes)
    if not sizes or len(set(sizes)) != len(sizes):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a non-empty "
            "sequence of distinct strictly positive integers. "
            f"Received {name}={kernel_sizes!r}."
        )
    return sizes


def _validate_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a strictly "
            f"positive integer. Received {name}={value!r}."
        )
    return value


def _validate_padding(padding):
    if padding not in _PADDINGS:
        raise ValueError(
            f"Invalid value for argument `padding`. Expected one of "
            f"{_PADDINGS}. Received padding={padding!r}."
        )
    return padding


def _validate_aggregation(aggregation):
    if aggregation is not None and aggregation not in AGGREGATIONS:
        raise ValueError(
            "Invalid value for argument `aggregation`. Expected None or one "
            f"of {AGGREGATIONS}. Received aggregation={aggregation!r}."
        )
    return aggregation


def _offset_initializer(initializer, offset):
    """Returns a copy of `initializer` whose integer seed is moved by `offset`.

    A seeded Keras initializer draws the same values on every call, so each
    branch gets its own seed; unseeded initializers are returned as they are.
    """
    initializer = keras.initializers.get(initializer)
    config = initializer.get_config()
    if isinstance(config.get("seed"), int):
        config["seed"] += offset
        return initializer.__class__.from_config(config)
    return initializer


def branch_label(kernel_size):
    """The label of a candidate, as used in names and paths: `"3x3"`."""
    return f"{kernel_size}x{kernel_size}"


@keras.saving.register_keras_serializable(package="keras_supernet")
class SupernetLayer(keras.layers.Layer):
    """A choice between convolution blocks that differ in kernel size.

    Holds one candidate block per kernel size, each a `Conv2D` (with the
    activation) followed by `MaxPooling2D`, with weights of its own. Exactly
    one candidate is active at a time: its index lives in the non-trainable
    int32 variable `active_index`, so a compiled function can switch
    candidates between calls without being traced again.

    With an `aggregation` (Bender et al., 2018), the candidates can also run
    in parallel: `call(x, enabled=mask)` runs the enabled candidates and
    sums their outputs (`"sum"`), or concatenates them, disabled candidates
    as zeros, and mixes them back to `filters` channels with a 1x1
    convolution (`"concat_1x1"`). Selecting one candidate is the block with
    only that candidate enabled.

    Args:
        kernel_sizes: Sequence of distinct positive ints, one candidate each.
        filters: Positive int, output channels of every candidate.
        padding: `"valid"` or `"same"`, the convolution padding. With
            `"valid"`, candidates give feature maps of different sizes.
        activation: Activation applied after the convolution.
        pool_size: Positive int, the max-pooling window and stride.
        kernel_initializer: Initializer of the convolution kernels. An
            integer seed is offset per candidate so candidates differ.
        bias_initializer: Initializer of the convolution biases.
        kernel_regularizer: Optional regularizer of the kernels.
        bias_regularizer: Optional regularizer of the biases.
        aggregation: None (one candidate at a time), `"sum"` or
            `"concat_1x1"`. Aggregation needs candidates whose outputs have
            the same shape, e.g. `padding="same"`.
        **kwargs: Base layer keyword arguments, such as `name`.

    Input shape:
        4D tensor `(batch, rows, cols, channels)`.

    Output shape:
        4D tensor `(batch, new_rows, new_cols, filters)`; a spatial size is
        `None` where the candidates disagree on it.

    Raises:
        ValueError: if an argument is invalid.

    Example:

    >>> layer = SupernetLayer(kernel_sizes=(3, 5), filters=8)
    >>> layer.set_active(1)
    >>> layer(np.zeros((2, 28, 28, 1), "float32")).shape
    TensorShape([2, 12, 12, 8])
    """

    def __init__(
        self,
        kernel_sizes=(3, 5),
        filters=16,
        padding="valid",
        activation="relu",
        pool_size=2,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        aggregation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.aggregation = _validate_aggregation(aggregation)
        self.kernel_sizes = _validate_kernel_sizes(kernel_sizes)
        self.filters = _validate_positive_int(filters, "filters")
        self.padding = _validate_padding(padding)
        self.activation = keras.activations.get(activation)
        self.pool_size = _validate_positive_int(pool_size, "pool_size")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.branches = [
            keras.Sequential(
                [
                    keras.layers.Conv2D(
                        self.filters,
                        kernel_size,
                        padding=self.padding,
                        activation=self.activation,
                        kernel_initializer=_offset_initializer(
                            self.kernel_initializer, index
                        ),
                        bias_initializer=_offset_initializer(
                            self.bias_initializer, index
                        ),
                        kernel_regularizer=self.kernel_regularizer,
                        bias_regularizer=self.bias_regularizer,
                        name="conv",
                    ),
                    keras.layers.MaxPooling2D(self.pool_size, name="pool"),
                ],
                name=f"branch_{branch_label(kernel_size)}",
            )
            for index, kernel_size in enumerate(self.kernel_sizes)
        ]
        self.mixer = None
        if self.aggregation == "concat_1x1":
            self.mixer = keras.layers.Conv2D(
                self.filters,
                1,
                kernel_initializer=_offset_initializer(
                    self.kernel_initializer, len(self.kernel_sizes)
                ),
                kernel_regularizer=self.kernel_regularizer,
                name="mix_1x1",
            )
        # Created here rather than in build(): it does not depend on the
        # input, and a candidate may be chosen before the first call. Written
        # in replica context under tf.distribute, where every replica agrees
        # on the active candidate, hence "only_first_replica".
        self.active_index = self.add_weight(
            name="active_index",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    def build(self, input_shape):
        # Spatial sizes stay unknown: every candidate sees a different map.
        branch_input_shape = (None, None, None, input_shape[-1])
        for branch in self.branches:
            branch.build(branch_input_shape)
        if self.aggregation is not None:
            shapes = {
                self.branch_output_shape(i, input_shape)
                for i in range(self.num_branches)
            }
            if len(shapes) > 1:
                raise ValueError(
                    f"Invalid value for argument `aggregation`: "
                    f"aggregation={self.aggregation!r} needs candidates with "
                    f"one output shape, but kernel sizes {self.kernel_sizes} "
                    f"with padding={self.padding!r} give {sorted(shapes, key=str)}"
                    ". Use padding='same'."
                )
        if self.mixer is not None:
            self.mixer.build(
                (None, None, None, self.filters * self.num_branches)
            )
    @property
    def num_branches(self):
        return len(self.branches)

    def set_active(self, index):
        """Makes candidate `index` (a Python int) the active one."""
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < self.num_branches
        ):
            raise ValueError(
                "Invalid value for argument `index`. Expected an integer in "
                f"[0, {self.num_branches}). Received index={index!r}."
            )
        self.active_index.assign(index)

    def call(self, inputs, training=None, enabled=None):
        """Runs the active candidate, or with `enabled` (a boolean vector,
        one entry per candidate) the enabled candidates, aggregated."""
        if enabled is not None:
            return self._aggregate(inputs, enabled, training)
        return self.path_output(inputs, self.active_index, training)

    def path_output(self, inputs, index, training=None):
        """The output of the block with only candidate `index` enabled.

        `index` may be a Python int (a static choice) or a tensor.
        """
        if not isinstance(index, int):
            return ops.switch(
                index,
                [
                    lambda x, i=i: self.path_output(x, i, training)
                    for i in range(self.num_branches)
                ],
                inputs,
            )
        x = self.branches[index](inputs, training=training)
        if self.mixer is None:
            return x
        # The 1x1 mix of a concatenation where the other candidates are
        # zeros: only this candidate's slice of the kernel contributes.
        kernel = self.mixer.kernel[
            :, :, index * self.filters : (index + 1) * self.filters, :
        ]
        return ops.add(ops.conv(x, kernel), self.mixer.bias)

    def _aggregate(self, inputs, enabled, training):
        if self.aggregation is None:
            raise ValueError(
                "`enabled` needs an aggregation. Received aggregation=None."
            )
        enabled = ops.convert_to_tensor(enabled, "bool")
        outputs = []
        for i, branch in enumerate(self.branches):
            # A disabled candidate is not computed at all.
            output = ops.cond(
                enabled[i],
                lambda branch=branch: branch(inputs, training=training),
                lambda i=i: self._zeros_for(i, inputs),
            )
            outputs.append(output)
        if self.aggregation == "sum":
            return ops.sum(ops.stack(outputs), axis=0)
        return self.mixer(ops.concatenate(outputs, axis=-1))

    def _zeros_for(self, index, inputs):
        shape = self.branch_output_shape(index, inputs.shape)
        batch = ops.shape(inputs)[0]
        return ops.zeros((batch, *shape[1:]), dtype=self.compute_dtype)

    def branch_output_shape(self, index, input_shape):
        """Output shape of candidate `index` for `input_shape`.

        Raises:
            ValueError: if the candidate shrinks the feature map to nothing.
        """
        try:
            shape = self.branches[index].compute_output_shape(input_shape)
        except ValueError:
            shape = None
        if shape is None or any(d is not None and d <= 0 for d in shape[1:3]):
            kernel_size = self.kernel_sizes[index]
            raise ValueError(
                f"Candidate {branch_label(kernel_size)} of layer "
                f"'{self.name}' shrinks its input of shape "
                f"{tuple(input_shape)} to an empty feature map."
            )
        return tuple(shape)

    def compute_output_shape(self, input_shape):
        shapes = [
            self.branch_output_shape(i, input_shape)
            for i in range(self.num_branches)
        ]
        return tuple(
            dims[0] if all(d == dims[0] for d in dims) else None
            for dims in zip(*shapes)
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_sizes": list(self.kernel_sizes),
                "filters": self.filters,
                "padding": self.padding,
                "activation": keras.activations.serialize(self.activation),
                "pool_size": self.pool_size,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "aggregation": self.aggregation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_supernet")
class PaddedDense(keras.layers.Layer):
    """A `Dense` layer over a zero-padded embedding, without the padding.

    The supernet's paths give the head different numbers of features, which
    the report zero-pads to the widest. This layer takes each width as it is:
    an input of width `w` gives `activation(x @ kernel[:w] + bias)`, exactly
    what `Dense` gives on the input zero-padded to `max(widths)`, without
    multiplying the zeros.

    The kernel is stored as row blocks cut at every width in `widths`
    (`kernel_rows_0_512`, `kernel_rows_512_800`, ...), so that the rows an
    input does not use are separate variables: a training step that hands the
    optimizer only `blocks_for(w)` leaves the other rows' weights and
    optimizer slots untouched, where a zero gradient would still move them
    (Adam's momentum).

    Args:
        units: Number of output units.
        widths: The input widths the layer accepts (at least one); the
            largest is the full width of the kernel.
        activation: Activation function.
        kernel_initializer: Initializer of the full `(max(widths), units)`
            kernel, drawn once and cut into the blocks: a seeded initializer
            gives the kernel a `Dense` layer of the full width would get.
        bias_initializer: Initializer of the bias.
    """

    def __init__(
        self,
        units,
        widths,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _validate_positive_int(units, "units")
        cuts = _positive_ints(widths)
        if not cuts:
            raise ValueError(
                "Invalid value for argument `widths`. Expected a non-empty "
                "sequence of strictly positive integers. "
                f"Received widths={widths!r}."
            )
        self.widths = tuple(sorted(set(cuts)))
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_blocks = []

    @property
    def full_width(self):
        return self.widths[-1]

    def build(self, input_shape=None):
        full = self.kernel_initializer((self.full_width, self.units))
        start = 0
        for stop in self.widths:
            self.kernel_blocks.append(
                self.add_weight(
                    name=f"kernel_rows_{start}_{stop}",
                    shape=(stop - start, self.units),
                    initializer=lambda shape, dtype=None, a=start, b=stop: (
                        ops.cast(full[a:b], dtype or "float32")
                    ),
                )
            )
            start = stop
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer=self.bias_initializer
        )

    def blocks_for(self, width):
        """The kernel blocks an input of width `width` uses."""
        self._check_width(width)
        return self.kernel_blocks[: self.widths.index(width) + 1]

    @property
    def kernel(self):
        """The full `(max(widths), units)` kernel, as one tensor."""
        return ops.concatenate([b.value for b in self.kernel_blocks], axis=0)

    def _check_width(self, width):
        if width not in self.widths:
            raise ValueError(
                f"Layer '{self.name}' accepts inputs of width "
                f"{', '.join(map(str, self.widths))}. Received an input of "
                f"width {width}."
            )

    def call(self, inputs):
        blocks = self.blocks_for(inputs.shape[-1])
        kernel = (
            blocks[0] if len(blocks) == 1 else ops.concatenate(blocks, axis=0)
        )
        outputs = ops.add(ops.matmul(inputs, kernel), self.bias)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        self._check_width(input_shape[-1])
        return (*input_shape[:-1], self.units)

    def load_own_variables(self, store):
        # Weights saved before the kernel was split (keras_supernet 0.1.0):
        # one full kernel and the bias, as a Dense layer saves them.
        if len(self.kernel_blocks) > 1 and len(store.keys()) == 2:
            kernel = store["0"]
            if tuple(kernel.shape) != (self.full_width, self.units):
                raise ValueError(
                    f"Layer '{self.name}' expected a saved kernel of shape "
                    f"{(self.full_width, self.units)}. Received "
                    f"{tuple(kernel.shape)}."
                )
            start = 0
            for stop, block in zip(self.widths, self.kernel_blocks):
                block.assign(kernel[start:stop])
                start = stop
            self.bias.assign(store["1"])
            return
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "widths": list(self.widths),
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config
