"""Supernet layers: `Choice`, the report's `SupernetLayer`, `PaddedDense`.

A `Choice` holds candidate layers, exactly one active at a time; a supernet
is any functional graph with `Choice` layers in it. The report's choice
between convolution blocks, `SupernetLayer`, is a `Choice` whose candidates
it builds itself. `PaddedDense` is the report's head over a zero-padded
embedding, without multiplying the zeros.

How a choice runs in a given forward pass (its active candidate, a fixed
candidate, one candidate per example, or several aggregated) is set by a
`keras_supernet.routing.Plan`; see that module.
"""

import keras
import tensorflow as tf
from keras import ops

from keras_supernet import routing
from keras_supernet import validation

AGGREGATIONS = ("sum", "concat_1x1")
PADDINGS = ("valid", "same")


def _offset_initializer(initializer, offset):
    """Returns a copy of `initializer` whose integer seed is moved by `offset`.

    A seeded Keras initializer draws the same values on every call, so each
    candidate gets its own seed; unseeded initializers are returned as they
    are.
    """
    initializer = keras.initializers.get(initializer)
    config = initializer.get_config()
    if isinstance(config.get("seed"), int):
        config["seed"] += offset
        return initializer.__class__.from_config(config)
    return initializer


def set_dtype_policy(layer, policy):
    """Sets `policy` on `layer` and on every layer nested in it.

    A candidate is built by the user before the `Choice` that holds it; a
    dtype given to the choice must still reach every sublayer, or a
    mixed-precision supernet would compute some candidates in float32.
    """
    # `_flatten_layers` is how Keras itself walks nested layers.
    for sublayer in layer._flatten_layers(include_self=True):
        sublayer.dtype_policy = policy


def _join_shapes(shapes):
    """One shape that every shape in `shapes` fits: `None` where they differ."""
    return tuple(
        dims[0] if all(d == dims[0] for d in dims) else None for dims in zip(*shapes)
    )


def _output_spec(layer, tensor):
    """`layer.compute_output_spec(tensor)`, a `Sequential` walked layer by
    layer: Keras's unbuilt `Sequential` passes `training=` to each layer's
    `compute_output_spec`, which `Flatten` and others do not take, so a
    candidate such as `Sequential([Conv2D, Flatten, Dense])` would be
    refused."""
    if isinstance(layer, keras.Sequential):
        for sublayer in layer.layers:
            tensor = _output_spec(sublayer, tensor)
        return tensor
    return layer.compute_output_spec(tensor)


@keras.saving.register_keras_serializable(package="keras_supernet")
class Choice(keras.layers.Layer):
    """A choice between candidate layers, exactly one active at a time.

    Holds candidate layers given by the user (any Keras layer, a
    `keras.Sequential` or functional block included), each with weights of
    its own. The active candidate's index lives in the non-trainable int32
    variable `active_index`, so a compiled function switches candidates
    between calls without being traced again. `keras.layers.Identity()` is
    the skip candidate (a choice of depth).

    Candidates may give outputs of different shapes (the report's valid
    convolutions do); the output shape then has `None` where they differ,
    and the layers after the choice must take every candidate's output (the
    supernet checks this when it is built). Outputs must have one rank.

    With an `aggregation` (Bender et al., 2018), a training step can run
    several candidates in parallel: their outputs are summed (`"sum"`), or
    concatenated, disabled candidates as zeros, and mixed back to the
    candidates' channel count by a 1x1 convolution (`"concat_1x1"`).
    Selecting one candidate is the block with only that candidate enabled.

    A dtype given to the choice (`dtype="mixed_float16"`) is set on every
    candidate and every layer nested in it; otherwise candidates keep the
    policy they were built with (the global one by default).

    Args:
        candidates: A non-empty sequence of distinct Keras layers.
        labels: Optional distinct non-empty strings, one per candidate, used
            to name paths (`"conv3x3->skip"`). Defaults to the candidates'
            names.
        aggregation: None (one candidate at a time), `"sum"` or
            `"concat_1x1"`. Aggregation needs candidates with one output
            shape.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        Whatever every candidate accepts.

    Output shape:
        The candidates' output shape, `None` in the dimensions where they
        disagree.

    Raises:
        ValueError: if there are no candidates, a candidate is not a layer
            or appears twice, labels are missing or repeated, or the
            candidates' outputs cannot be joined.

    Example:

    >>> choice = Choice([keras.layers.Conv2D(8, 3, padding="same"),
    ...                  keras.layers.Conv2D(8, 5, padding="same"),
    ...                  keras.layers.Identity()],
    ...                 labels=["conv3x3", "conv5x5", "skip"])
    >>> choice.set_active(2)
    >>> choice(np.zeros((2, 8, 8, 8), "float32")).shape
    TensorShape([2, 8, 8, 8])
    """

    def __init__(self, candidates, labels=None, aggregation=None, **kwargs):
        explicit_dtype = kwargs.get("dtype") is not None
        super().__init__(**kwargs)
        try:
            candidates = list(candidates)
        except TypeError:
            candidates = None
        if not candidates:
            raise ValueError(
                "Invalid value for argument `candidates`. Expected a "
                f"non-empty sequence of Keras layers. Received "
                f"candidates={candidates!r}."
            )
        for i, candidate in enumerate(candidates):
            if not isinstance(candidate, keras.layers.Layer):
                raise ValueError(
                    "Invalid value for argument `candidates`. Expected Keras "
                    f"layers. Received candidates[{i}]={candidate!r}."
                )
            if any(candidate is other for other in candidates[:i]):
                raise ValueError(
                    "Invalid value for argument `candidates`. Expected "
                    f"distinct layers, each with its own weights. Received "
                    f"the layer '{candidate.name}' more than once."
                )
        if labels is None:
            labels = [c.name for c in candidates]
        labels = list(labels) if not isinstance(labels, str) else [labels]
        if (
            len(labels) != len(candidates)
            or any(not isinstance(label, str) or not label for label in labels)
            or len(set(labels)) != len(labels)
        ):
            raise ValueError(
                "Invalid value for argument `labels`. Expected distinct "
                f"non-empty strings, one per candidate ({len(candidates)}). "
                f"Received labels={labels!r}."
            )
        self.aggregation = validation.one_of(
            "aggregation", aggregation, AGGREGATIONS, allow_none=True
        )
        self.candidates = candidates
        self.labels = tuple(labels)
        if explicit_dtype:
            for candidate in self.candidates:
                set_dtype_policy(candidate, self.dtype_policy)
        self.mixer = None
        self._output_shapes = {}
        self._built_for = None
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

    @property
    def num_candidates(self):
        return len(self.candidates)

    def set_active(self, index):
        """Makes candidate `index` (an int or a label) the active one."""
        if isinstance(index, str) and index in self.labels:
            index = self.labels.index(index)
        if not validation.is_int(index) or not (0 <= index < self.num_candidates):
            raise ValueError(
                "Invalid value for argument `index`. Expected an integer in "
                f"[0, {self.num_candidates}) or one of the labels "
                f"{list(self.labels)}. Received index={index!r}."
            )
        self.active_index.assign(int(index))

    # === Shapes ===

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        # First, so that a candidate that cannot take the input is named.
        shapes = self.candidate_output_shapes(input_shape)
        self._built_for = input_shape
        for candidate in self.candidates:
            if not candidate.built:
                # A symbolic call builds any layer, whatever its build()
                # expects; it must happen here, not inside a switch branch.
                candidate(keras.KerasTensor(input_shape, dtype=self.compute_dtype))
        if self.aggregation is not None and len(set(shapes)) > 1:
            raise ValueError(
                f"Invalid value for argument `aggregation` of choice "
                f"'{self.name}': aggregation={self.aggregation!r} needs "
                "candidates with one output shape. Received output shapes "
                f"{list(shapes)} for labels {list(self.labels)}."
            )
        if self.aggregation == "concat_1x1":
            channels = shapes[0][-1]
            self.mixer = keras.layers.Conv2D(
                channels,
                1,
                name="mix_1x1",
                dtype=self.dtype_policy,
                **self._mixer_kwargs(),
            )
            self.mixer.build((*shapes[0][:-1], channels * self.num_candidates))

    def _mixer_kwargs(self):
        return {}

    def candidate_output_shapes(self, input_shape):
        """Each candidate's output shape for `input_shape`.

        Raises:
            ValueError: if a candidate cannot take `input_shape`, or the
                candidates' outputs differ in rank.
        """
        key = tuple(input_shape)
        if key not in self._output_shapes:
            shapes = []
            for label, candidate in zip(self.labels, self.candidates):
                try:
                    spec = _output_spec(
                        candidate, keras.KerasTensor(key, dtype=self.compute_dtype)
                    )
                except Exception as e:  # Keras raises many types here.
                    raise ValueError(
                        f"Candidate '{label}' of choice '{self.name}' cannot "
                        f"take an input of shape {key}: "
                        f"{str(e).strip().splitlines()[0]}"
                    ) from None
                shape = tuple(spec.shape)
                if any(d is not None and d <= 0 for d in shape[1:]):
                    raise ValueError(
                        f"Candidate '{label}' of choice '{self.name}' shrinks "
                        f"its input of shape {key} to an empty output "
                        f"{shape}."
                    )
                shapes.append(shape)
            if len({len(s) for s in shapes}) > 1:
                raise ValueError(
                    f"The candidates of choice '{self.name}' give outputs of "
                    "different ranks, which no layer can join: "
                    + ", ".join(
                        f"{label}: {shape}" for label, shape in zip(self.labels, shapes)
                    )
                    + "."
                )
            self._output_shapes[key] = tuple(shapes)
        return self._output_shapes[key]

    def compute_output_shape(self, input_shape):
        return _join_shapes(self.candidate_output_shapes(input_shape))

    @property
    def built_input_shape(self):
        """The input shape the choice was built for (None before)."""
        return self._built_for

    @property
    def built_output_shapes(self):
        """Each candidate's output shape for the input the choice was built
        for (None before it is built)."""
        if self._built_for is None:
            return None
        return self.candidate_output_shapes(self._built_for)

    # === Forward ===

    def candidate_groups(self):
        """Per candidate, its trainable variables (what a step that does not
        use it must leave untouched)."""
        return [c.trainable_variables for c in self.candidates]

    def call(self, inputs, training=None):
        plan = routing.current()
        if plan is not None:
            index = plan.static_index(self)
            if index is not None:
                return self.candidate_output(index, inputs, training)
            route = plan.route(self)
            if route is not None:
                return self._routed(inputs, route, training, plan.recorder)
            mask = plan.mask(self)
            if mask is not None:
                return self._aggregate(inputs, mask, training, plan.recorder)
        if self.num_candidates == 1:
            return self.candidate_output(0, inputs, training)
        index = tf.convert_to_tensor(self.active_index.value)
        recorder = routing.recorder()
        if recorder is not None:
            recorder.record_switch(self, index, self.candidate_groups())
        return ops.switch(
            index,
            [
                lambda x, k=k: self.candidate_output(k, x, training)
                for k in range(self.num_candidates)
            ],
            inputs,
        )

    def candidate_output(self, index, inputs, training=None):
        """The output of the block with only candidate `index` (a Python
        int) enabled."""
        x = self.candidates[index](inputs, training=training)
        # Every branch must give one dtype (a skip passes on its input's).
        x = ops.cast(x, self.compute_dtype)
        if self.mixer is None:
            return x
        # The 1x1 mix of a concatenation where the other candidates are
        # zeros: only this candidate's slice of the kernel contributes.
        channels = x.shape[-1]
        kernel = self.mixer.kernel[:, :, index * channels : (index + 1) * channels, :]
        return ops.add(ops.conv(x, kernel), self.mixer.bias)

    def _empty_output(self, index, inputs):
        shape = self.candidate_output_shapes(tuple(inputs.shape))[index]
        return tf.zeros((0, *shape[1:]), dtype=self.compute_dtype)

    def _routed(self, inputs, route, training, recorder):
        """Example `i` runs through candidate `route[i]` only."""
        count = self.num_candidates
        positions = tf.dynamic_partition(tf.range(tf.shape(inputs)[0]), route, count)
        parts = tf.dynamic_partition(inputs, route, count)
        # TF's convolutions mishandle empty batches, and BatchNorm would
        # read NaN statistics from one: empty groups are not computed.
        outputs = [
            tf.cond(
                tf.shape(part)[0] > 0,
                lambda k=k, part=part: self.candidate_output(k, part, training),
                lambda k=k: self._empty_output(k, inputs),
            )
            for k, part in enumerate(parts)
        ]
        if recorder is not None:
            recorder.record_masks(
                self,
                [tf.reduce_any(tf.equal(route, k)) for k in range(count)],
                self.candidate_groups(),
            )
        return tf.dynamic_stitch(positions, outputs)

    def _aggregate(self, inputs, mask, training, recorder):
        if self.aggregation is None:
            raise ValueError(
                f"Choice '{self.name}' cannot aggregate candidates: it has "
                "aggregation=None."
            )
        mask = ops.convert_to_tensor(mask, "bool")
        outputs = []
        for k, candidate in enumerate(self.candidates):
            # A disabled candidate is not computed at all.
            outputs.append(
                ops.cond(
                    mask[k],
                    lambda candidate=candidate: candidate(inputs, training=training),
                    lambda k=k: self._zeros_like_output(k, inputs),
                )
            )
        if recorder is not None:
            recorder.record_masks(
                self,
                [mask[k] for k in range(self.num_candidates)],
                self.candidate_groups(),
            )
        if self.aggregation == "sum":
            return ops.sum(ops.stack(outputs), axis=0)
        return self.mixer(ops.concatenate(outputs, axis=-1))

    def _zeros_like_output(self, index, inputs):
        shape = self.candidate_output_shapes(tuple(inputs.shape))[index]
        batch = ops.shape(inputs)[0]
        return ops.zeros((batch, *shape[1:]), dtype=self.compute_dtype)

    # === Extraction ===

    def plain_candidate(self, index=None, name=None):
        """A fresh copy of candidate `index` (default: the active one), as
        standard layers.

        Returns `(layer, copy_weights)`: `layer` is rebuilt from the
        candidate's config (with the 1x1 mixer's slice as a `Conv2D` after
        it for `"concat_1x1"`); once it is built, `copy_weights()` copies the
        candidate's weights into it.
        """
        if index is None:
            index = int(ops.convert_to_numpy(self.active_index))
        candidate = self.candidates[index]
        clone = candidate.__class__.from_config(candidate.get_config())
        if self.mixer is None:
            layer = clone
            if name is not None:
                layer.name = name
        else:
            layer = keras.Sequential(
                [
                    clone,
                    keras.layers.Conv2D(
                        self.mixer.filters,
                        1,
                        name="mix_1x1",
                        dtype=self.dtype_policy,
                    ),
                ],
                name=name or self.name,
            )

        def copy_weights():
            clone.set_weights(candidate.get_weights())
            if self.mixer is not None:
                kernel, bias = self.mixer.get_weights()
                channels = kernel.shape[2] // self.num_candidates
                rows = slice(index * channels, (index + 1) * channels)
                layer.layers[-1].set_weights([kernel[:, :, rows], bias])

        return layer, copy_weights

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "candidates": [
                    keras.saving.serialize_keras_object(c) for c in self.candidates
                ],
                "labels": list(self.labels),
                "aggregation": self.aggregation,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["candidates"] = [
            keras.saving.deserialize_keras_object(c) for c in config["candidates"]
        ]
        return cls(**config)


def branch_label(kernel_size):
    """The label of a kernel-size candidate, as in paths: `"3x3"`."""
    return f"{kernel_size}x{kernel_size}"


@keras.saving.register_keras_serializable(package="keras_supernet")
class SupernetLayer(Choice):
    """The report's choice: convolution blocks that differ in kernel size.

    A `Choice` whose candidates it builds itself, one per kernel size, each
    a `Conv2D` (with the activation) followed by `MaxPooling2D`, labelled
    `"3x3"`, `"5x5"`...

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
        aggregation: None, `"sum"` or `"concat_1x1"` (see `Choice`).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

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
        kernel_sizes = validation.positive_ints(
            "kernel_sizes", kernel_sizes, distinct=True
        )
        filters = validation.positive_int("filters", filters)
        padding = validation.one_of("padding", padding, PADDINGS)
        pool_size = validation.positive_int("pool_size", pool_size)
        activation = keras.activations.get(activation)
        kernel_initializer = keras.initializers.get(kernel_initializer)
        bias_initializer = keras.initializers.get(bias_initializer)
        kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        bias_regularizer = keras.regularizers.get(bias_regularizer)
        dtype = kwargs.get("dtype")
        candidates = [
            keras.Sequential(
                [
                    keras.layers.Conv2D(
                        filters,
                        kernel_size,
                        padding=padding,
                        activation=activation,
                        kernel_initializer=_offset_initializer(
                            kernel_initializer, index
                        ),
                        bias_initializer=_offset_initializer(bias_initializer, index),
                        kernel_regularizer=kernel_regularizer,
                        bias_regularizer=bias_regularizer,
                        name="conv",
                        dtype=dtype,
                    ),
                    keras.layers.MaxPooling2D(pool_size, name="pool", dtype=dtype),
                ],
                name=f"branch_{branch_label(kernel_size)}",
            )
            for index, kernel_size in enumerate(kernel_sizes)
        ]
        super().__init__(
            candidates,
            labels=[branch_label(k) for k in kernel_sizes],
            aggregation=aggregation,
            **kwargs,
        )
        self.kernel_sizes = kernel_sizes
        self.filters = filters
        self.padding = padding
        self.activation = activation
        self.pool_size = pool_size
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer

    def _mixer_kwargs(self):
        return {
            "kernel_initializer": _offset_initializer(
                self.kernel_initializer, len(self.kernel_sizes)
            ),
            "kernel_regularizer": self.kernel_regularizer,
        }

    def get_config(self):
        config = keras.layers.Layer.get_config(self)
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
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "aggregation": self.aggregation,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_supernet")
class PaddedDense(keras.layers.Layer):
    """A `Dense` layer over a zero-padded embedding, without the padding.

    The supernet's paths give the head different numbers of features, which
    the report zero-pads to the widest. This layer takes each width as it is:
    an input of width `w` gives `activation(x @ kernel[:w] + bias)`, exactly
    what `Dense` gives on the input zero-padded to `max(widths)`, without
    multiplying the zeros. An input whose width is only known at run time
    (after a choice whose candidates disagree) is dispatched to its width.

    The kernel is stored as row blocks cut at every width in `widths`
    (`kernel_rows_0_512`, `kernel_rows_512_800`, ...), so that the rows an
    input does not use are separate variables: a training step leaves the
    other rows' weights and optimizer slots untouched, where a zero gradient
    would still move them (Adam's momentum).

    Args:
        units: Number of output units.
        widths: The input widths the layer accepts (at least one); the
            largest is the full width of the kernel.
        activation: Activation function.
        kernel_initializer: Initializer of the full `(max(widths), units)`
            kernel, drawn once and cut into the blocks: a seeded initializer
            gives the kernel a `Dense` layer of the full width would get.
        bias_initializer: Initializer of the bias.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        2D tensor `(batch, width)`, `width` one of `widths` (or unknown).

    Output shape:
        2D tensor `(batch, units)`.
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
        self.units = validation.positive_int("units", units)
        self.widths = tuple(sorted(set(validation.positive_ints("widths", widths))))
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
                    initializer=lambda shape, dtype=None, a=start, b=stop: ops.cast(
                        full[a:b], dtype or "float32"
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

    def _dense(self, inputs, position):
        blocks = self.kernel_blocks[: position + 1]
        kernel = blocks[0] if len(blocks) == 1 else ops.concatenate(blocks, axis=0)
        outputs = ops.add(ops.matmul(inputs, kernel), self.bias)
        return self.activation(outputs)

    def call(self, inputs):
        width = inputs.shape[-1]
        if width is not None:
            self._check_width(width)
            return self._dense(inputs, self.widths.index(width))
        # The width depends on the path: dispatch to it, and tell the step
        # which row blocks it used.
        runtime_width = tf.shape(inputs)[-1]
        position = tf.reduce_sum(
            tf.cast(runtime_width > tf.constant(self.widths, tf.int32), tf.int32)
        )
        recorder = routing.recorder()
        if recorder is not None:
            recorder.record_masks(
                self,
                [position >= j for j in range(len(self.widths))],
                [[block] for block in self.kernel_blocks],
            )
        return ops.switch(
            position,
            [
                lambda x, p=p: self._dense(tf.reshape(x, (-1, self.widths[p])), p)
                for p in range(len(self.widths))
            ],
            inputs,
        )

    def compute_output_shape(self, input_shape):
        if input_shape[-1] is not None:
            self._check_width(input_shape[-1])
        return (*input_shape[:-1], self.units)

    def plain_dense(self, name=None):
        """A `Dense` layer equal to this one on the inputs it will get.

        Returns `(layer, copy_weights)`; once `layer` is built (its input
        width known), `copy_weights()` copies the bias and the kernel rows
        of that width.
        """
        layer = keras.layers.Dense(
            self.units,
            activation=self.activation,
            name=name or self.name,
            dtype=self.dtype_policy,
        )

        def copy_weights():
            width = layer.kernel.shape[0]
            kernel = ops.concatenate([b.value for b in self.blocks_for(width)], axis=0)
            layer.set_weights(
                [ops.convert_to_numpy(kernel), ops.convert_to_numpy(self.bias)]
            )

        return layer, copy_weights

    def assign_dense_weights(self, kernel, bias):
        """Sets the weights from a full `(max(widths), units)` kernel and a
        bias, as a `Dense` layer of the full width holds them.

        Raises:
            ValueError: if the kernel has another shape.
        """
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
        self.bias.assign(bias)

    def load_own_variables(self, store):
        # Weights saved before the kernel was split (keras_supernet 0.1.0):
        # one full kernel and the bias, as a Dense layer saves them.
        if len(self.kernel_blocks) > 1 and len(store.keys()) == 2:
            self.assign_dense_weights(store["0"], store["1"])
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
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
