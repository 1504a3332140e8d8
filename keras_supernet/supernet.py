"""The supernet model: any functional graph of `Choice` layers, and a step
that trains the sampled path and nothing else.

`Supernet(inputs=..., outputs=...)` turns a functional graph into a
supernet: every `Choice` in it is one decision of a path, in graph order.
`Supernet(kernel_sizes=..., filters=..., ...)` builds the report's graph (a
preset): stacked `SupernetLayer`s, a zero-padded embedding, a dense head.

The rule of every training step: it changes the candidates it sampled and
the shared layers, and nothing else. Weights and optimizer state (Adam
moments) of every other candidate stay bit-identical. In graph mode an
untaken branch gets a zero gradient, not `None`, and Adam's momentum would
still move it, so the step updates on purpose. Two compiled steps keep the
rule:

- `"per_path"`: one `tf.switch_case` over whole per-path steps (forward,
  gradient and optimizer update of that path's variables, every shape
  static). Its graph grows with the number of paths; on small spaces it is
  the fastest.
- `"per_choice"`: one switch per choice in the forward pass; after the
  gradient, the shared variables are updated, then per choice a switch
  whose branch `k` updates candidate `k` only, all at one optimizer
  iteration. Its graph grows with the number of candidates, so a space of
  10**12 paths compiles like one of a few.

`train_step="auto"` takes `"per_path"` up to `PER_PATH_MAX_PATHS` paths and
`"per_choice"` above (see the benchmark in the README for the measurement
behind the limit).
"""

import contextlib
import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_supernet import distribute
from keras_supernet import routing
from keras_supernet import sampling as sampling_lib
from keras_supernet import validation
from keras_supernet.layers import Choice
from keras_supernet.layers import PaddedDense
from keras_supernet.layers import SupernetLayer
from keras_supernet.spaces import SearchSpace

TRAIN_STEPS = ("auto", "per_path", "per_choice")
# Spaces up to this many paths train with the per-path step by default.
PER_PATH_MAX_PATHS = 16
# The per-path step holds one branch per path: beyond this it is refused.
PER_PATH_LIMIT = 256

# Per supernet, the traced forward of `recalibrate_batchnorm`. Kept out of
# the model's attributes, which a SavedModel export would try to save.
_RECALIBRATION_FORWARD = weakref.WeakKeyDictionary()
# Per supernet, `refit_head`'s optimizer, its initial state and its traced
# steps (one per loss), kept out of the model's attributes for the same
# reason.
_HEAD_REFIT = weakref.WeakKeyDictionary()

# Arguments of the report's preset (`Supernet(kernel_sizes=...)`).
_PRESET_DEFAULTS = {
    "kernel_sizes": ((3, 5), (3, 5)),
    "filters": (16, 32),
    "hidden_units": 128,
    "num_classes": 10,
    "input_shape": (28, 28, 1),
    "padding": "valid",
    "aggregation": None,
}
# Arguments of every supernet (saved with the graph or the preset).
_SUPERNET_ARGS = (
    "sampling",
    "path_dropout",
    "branch_learning_rates",
    "seed",
    "train_step",
)


def path_label(kernel_sizes):
    """The label of a report path given as kernel sizes: `"3x3->5x5"`."""
    return "->".join(f"{k}x{k}" for k in kernel_sizes)


def _find_choices(model):
    """The `Choice` layers of `model`'s graph, in graph order.

    Choices inside nested models count; a choice inside a candidate of
    another choice does not make sense (its decision would exist on some
    paths only) and is refused.
    """
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, Choice) and all(layer is not c for c in found):
            found.append(layer)
    for choice in found:
        for candidate in choice.candidates:
            nested = [
                layer
                for layer in candidate._flatten_layers(include_self=True)
                if isinstance(layer, Choice)
            ]
            if nested:
                raise ValueError(
                    f"Choice '{nested[0].name}' sits inside candidate "
                    f"'{candidate.name}' of choice '{choice.name}'. Nested "
                    "choices are not supported: put choices side by side in "
                    "the graph."
                )
    return found


def check_branch_learning_rates(space, branch_learning_rates):
    """`{label: multiplier}` with the space's labels (`5` -> `"5x5"`) and
    finite positive multipliers, or raises."""
    if branch_learning_rates is None:
        return {}
    error = ValueError(
        "Invalid value for argument `branch_learning_rates`. Expected a "
        "dict from candidate labels of the search space to positive "
        "multipliers. Received branch_learning_rates="
        f"{branch_learning_rates!r}."
    )
    if not isinstance(branch_learning_rates, dict):
        raise error
    result = {}
    for key, value in branch_learning_rates.items():
        label = space.canonical_label(key)
        if label is None:
            raise error
        try:
            result[label] = validation.positive_float("branch_learning_rates", value)
        except ValueError:
            raise error from None
    return result


# === The report's preset ===


def _preset_initializer(seed, index):
    if seed is None:
        return "glorot_uniform"
    return keras.initializers.GlorotUniform(seed=sampling_lib.derived_seed(seed, index))


def _check_preset(
    kernel_sizes, filters, hidden_units, num_classes, input_shape, padding, aggregation
):
    try:
        layer_kernel_sizes = tuple(kernel_sizes)
    except TypeError:
        layer_kernel_sizes = ()
    if not layer_kernel_sizes:
        raise ValueError(
            "Invalid value for argument `kernel_sizes`. Expected a "
            "non-empty sequence with one sequence of kernel sizes per "
            f"layer. Received kernel_sizes={kernel_sizes!r}."
        )
    kernel_sizes = tuple(
        validation.positive_ints(f"kernel_sizes[{i}]", sizes, distinct=True)
        for i, sizes in enumerate(layer_kernel_sizes)
    )
    if validation.is_int(filters):
        filters = (filters,) * len(kernel_sizes)
    try:
        filters = tuple(filters)
    except TypeError:
        filters = (filters,)
    if len(filters) != len(kernel_sizes):
        raise ValueError(
            "Invalid value for argument `filters`. Expected one value per "
            f"layer ({len(kernel_sizes)} layers, as in `kernel_sizes`). "
            f"Received filters={filters!r}."
        )
    filters = validation.positive_ints("filters", filters)
    input_shape = tuple(input_shape) if input_shape is not None else None
    if input_shape is None or len(input_shape) != 3:
        raise ValueError(
            "Invalid value for argument `input_shape`. Expected (rows, cols, "
            "channels) of strictly positive integers. Received "
            f"input_shape={input_shape!r}."
        )
    return {
        "kernel_sizes": kernel_sizes,
        "filters": filters,
        "hidden_units": validation.positive_int("hidden_units", hidden_units),
        "num_classes": validation.positive_int("num_classes", num_classes),
        "input_shape": validation.positive_ints("input_shape", input_shape),
        "padding": validation.one_of("padding", padding, ("valid", "same")),
        "aggregation": validation.one_of(
            "aggregation", aggregation, ("sum", "concat_1x1"), allow_none=True
        ),
    }


def _preset_graph(preset, seed, dtype):
    """The report's functional graph: `(inputs, outputs)`.

    Weight initialisation is seeded per layer exactly as in keras_supernet
    0.2.0, so the same seed gives the same initial weights.
    """
    kernel_sizes = preset["kernel_sizes"]
    num_layers = len(kernel_sizes)
    choices = [
        SupernetLayer(
            sizes,
            filters,
            padding=preset["padding"],
            aggregation=preset["aggregation"],
            kernel_initializer=_preset_initializer(seed, index),
            name=f"supernet_layer_{index}",
            dtype=dtype,
        )
        for index, (sizes, filters) in enumerate(zip(kernel_sizes, preset["filters"]))
    ]
    # Every path's feature count: the head takes each unpadded.
    image_shape = (None, *preset["input_shape"])
    widths = set()
    shapes = {(): image_shape}
    for choice in choices:
        new_shapes = {}
        for prefix, shape in shapes.items():
            try:
                outputs = choice.candidate_output_shapes(shape)
            except ValueError as error:
                raise ValueError(
                    "Invalid search space: a path shrinks input of shape "
                    f"{preset['input_shape']} to nothing ({error}) Received "
                    f"kernel_sizes={kernel_sizes!r}, "
                    f"padding={preset['padding']!r}."
                ) from None
            for k, out in enumerate(outputs):
                new_shapes[prefix + (k,)] = out
        shapes = new_shapes
    for shape in shapes.values():
        widths.add(int(np.prod(shape[1:])))
    inputs = keras.Input(preset["input_shape"], name="images")
    x = inputs
    for choice in choices:
        x = choice(x)
    x = keras.layers.Flatten(name="flatten", dtype=dtype)(x)
    x = PaddedDense(
        preset["hidden_units"],
        widths=sorted(widths),
        activation="relu",
        kernel_initializer=_preset_initializer(seed, num_layers),
        name="hidden",
        dtype=dtype,
    )(x)
    outputs = keras.layers.Dense(
        preset["num_classes"],
        kernel_initializer=_preset_initializer(seed, num_layers + 1),
        name="logits",
        dtype=dtype,
    )(x)
    return inputs, outputs


@keras.saving.register_keras_serializable(package="keras_supernet")
class Supernet(keras.Model):
    """A weight-sharing supernet: a functional graph of `Choice` layers.

    Give the graph (`inputs=`, `outputs=`), built with the functional API
    from `Choice` layers and ordinary layers (stems, residual additions,
    pooling, heads): every `Choice` is one decision of a path, in graph
    order. Or give the report's arguments (`kernel_sizes=`, `filters=`, ...)
    for its preset: one `SupernetLayer` per entry of `kernel_sizes`, the
    flattened last feature map zero-padded to the largest size any path
    yields (`embed`), `Dense(hidden_units, relu)` (a `PaddedDense`, which
    skips the zeros) and `Dense(num_classes)`, returning logits.

    `space` is the search space (a `keras_supernet.SearchSpace`), with
    `num_paths` paths numbered in `itertools.product` order of the choices.
    Inference runs the active path (`set_path`). Training picks paths with
    the `sampling` strategy (see `keras_supernet.sampling`); a step changes
    the candidates it trained and the shared layers, nothing else (see the
    module docstring).

    Args:
        inputs: The functional graph's inputs (with `outputs`).
        outputs: The functional graph's outputs (with `inputs`).
        sampling: A sampler or its name: `"uniform"`, `"fixed"`,
            `"per_example"`, `"fair"`, `"adaptive"`.
        path_dropout: Float in [0, 1): with aggregating choices, the final
            rate at which the uniform sampler drops a candidate for a batch.
        branch_learning_rates: Optional dict from candidate label (`"5x5"`,
            `"sep3x3"`; a bare kernel size `5` means `"5x5"`) to a
            learning-rate multiplier for the candidates with that label, in
            every choice; others keep the optimizer's rate.
        seed: Optional non-negative int. Seeds path sampling, and for the
            preset the weight initialisation too: two preset supernets with
            the same seed start from the same weights, whatever their
            `sampling`. For a graph of your own, seed its initializers (or
            call `keras.utils.set_random_seed` before building it).
        train_step: `"auto"`, `"per_path"` or `"per_choice"` (see the
            module docstring).
        kernel_sizes: Preset: one sequence of distinct kernel sizes per
            layer (default `((3, 5), (3, 5))`).
        filters: Preset: output channels per layer, a sequence as long as
            `kernel_sizes` or one int (default `(16, 32)`).
        hidden_units: Preset: width of the hidden dense layer (128).
        num_classes: Preset: number of output logits (10).
        input_shape: Preset: `(rows, cols, channels)` of one input image.
        padding: Preset: `"valid"` or `"same"` convolution padding.
        aggregation: Preset: None, `"sum"` or `"concat_1x1"` multi-path
            blocks (need `padding="same"`).
        **kwargs: Base model keyword arguments, such as `name` and `dtype`.

    Raises:
        ValueError: if an argument is invalid, the graph has no `Choice`,
            a candidate's output does not fit the layers after it, or a
            path shrinks the input to nothing.

    Example:

    ```python
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    for i in range(20):
        x = ks.candidates.choice(["conv3x3", "conv5x5", "sep3x3", "skip"],
                                 16, name=f"choice_{i}")(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    supernet = ks.Supernet(inputs=inputs, outputs=outputs, seed=0)
    supernet.num_paths          # 4**20
    supernet.set_path("conv3x3->" * 19 + "skip")
    ```
    """

    def __init__(
        self,
        inputs=None,
        outputs=None,
        *,
        sampling="uniform",
        path_dropout=0.0,
        branch_learning_rates=None,
        seed=None,
        train_step="auto",
        **kwargs,
    ):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "keras_supernet needs the TensorFlow backend. "
                f"Received KERAS_BACKEND={keras.backend.backend()!r}."
            )
        seed = validation.non_negative_int("seed", seed, allow_none=True)
        preset_kwargs = {
            k: kwargs.pop(k) for k in list(kwargs) if k in _PRESET_DEFAULTS
        }
        if (inputs is None) != (outputs is None):
            raise ValueError(
                "Invalid arguments: give both `inputs` and `outputs` (a "
                "functional graph) or neither (the report's preset). "
                f"Received inputs={inputs!r}, outputs={outputs!r}."
            )
        preset = None
        if inputs is None:
            preset = _check_preset(**{**_PRESET_DEFAULTS, **preset_kwargs})
            inputs, outputs = _preset_graph(preset, seed, kwargs.get("dtype"))
            kwargs.setdefault("name", "supernet")
        elif preset_kwargs:
            raise ValueError(
                f"Invalid arguments {sorted(preset_kwargs)}: they describe "
                "the report's preset, which is built without `inputs` and "
                "`outputs`."
            )
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self._preset = preset
        self.seed = seed
        self.choices = _find_choices(self)
        if not self.choices:
            raise ValueError(
                "Invalid value for argument `outputs`: the graph has no "
                "`keras_supernet.Choice` layer, so there is nothing to "
                "choose. Build the graph with at least one Choice."
            )
        self.space = SearchSpace([(c.name, c.labels) for c in self.choices])
        aggregating = [c.aggregation is not None for c in self.choices]
        self.path_dropout = validation.finite_float(
            "path_dropout", path_dropout, low=0.0, high=1.0, high_open=True
        )
        if isinstance(sampling, str) and sampling == "uniform":
            sampling = sampling_lib.UniformSampler(path_dropout=path_dropout)
        elif self.path_dropout and not (
            isinstance(sampling, sampling_lib.UniformSampler)
        ):
            raise ValueError(
                "Invalid value for argument `path_dropout`: path dropout "
                "belongs to uniform sampling over aggregating choices. "
                f"Received path_dropout={path_dropout!r}, "
                f"sampling={sampling!r}."
            )
        self.sampler = sampling_lib.get(sampling)
        self.sampler.attach(self.space, aggregating, seed)
        self.train_step_mode = self._check_train_step(train_step)
        self.branch_learning_rates = self._check_branch_learning_rates(
            branch_learning_rates
        )
        self._check_candidate_shapes()
        # The per-choice step updates the used candidates under a switch; an
        # alternative (what tf.distribute needs) updates every variable and
        # restores the unused ones. Public so that `bin/bench` can measure
        # both; read when the step is traced.
        self.restoring_updates = False

    # === Validation ===

    def _check_train_step(self, train_step):
        mode = validation.one_of("train_step", train_step, TRAIN_STEPS)
        if mode == "auto":
            mode = (
                "per_path"
                if self.space.num_paths <= PER_PATH_MAX_PATHS
                else "per_choice"
            )
        if mode == "per_path" and self.space.num_paths > PER_PATH_LIMIT:
            raise ValueError(
                "Invalid value for argument `train_step`. The per-path step "
                f"compiles one branch per path, and the space has "
                f"{self.space.describe()} (at most {PER_PATH_LIMIT}). "
                f"Received train_step={train_step!r}."
            )
        if self.sampler.per_example and mode == "per_choice" and not self._routable():
            if self.space.num_paths <= PER_PATH_LIMIT:
                return "per_path"
            raise ValueError(
                f"Invalid value for argument `sampling`: "
                f"sampling={self.sampler.strategy!r} routes examples through "
                "each choice's candidates, which needs candidates with one "
                "output shape per choice; "
                + ", ".join(self._unequal_choices())
                + f" differ, and the space has {self.space.describe()}."
            )
        return mode

    def _unequal_choices(self):
        return [
            f"choice '{c.name}'"
            for c in self.choices
            if len(set(c.built_output_shapes or ())) > 1
        ]

    def _routable(self):
        return not self._unequal_choices()

    def _check_candidate_shapes(self):
        """Runs the graph once per candidate whose output shape differs from
        its siblings', so that a candidate the layers after it cannot take
        is refused here, naming it, rather than in the middle of training."""
        inputs = [
            np.zeros((1, *(d or 1 for d in t.shape[1:])), t.dtype) for t in self.inputs
        ]
        if len(inputs) == 1:
            inputs = inputs[0]
        for choice in self.choices:
            shapes = choice.built_output_shapes
            if not shapes or len(set(shapes)) < 2:
                continue
            for k, (label, shape) in enumerate(zip(choice.labels, shapes)):
                plan = routing.Plan(static={choice: k})
                try:
                    with routing.planned(plan):
                        self(inputs, training=False)
                except Exception as e:  # Keras and TF raise many types.
                    message = str(e).strip().splitlines()[0] if str(e) else repr(e)
                    raise ValueError(
                        f"Candidate '{label}' of choice '{choice.name}' gives "
                        f"output shape {shape}, which the layers after it "
                        f"cannot take: {message}"
                    ) from None

    def _check_branch_learning_rates(self, branch_learning_rates):
        return check_branch_learning_rates(self.space, branch_learning_rates)

    # === Paths ===

    @property
    def num_paths(self):
        """The number of paths (a Python int of any size)."""
        return self.space.num_paths

    def resolve_path(self, path):
        """The index of `path` (an index, candidate indices or labels, or a
        string; see `SearchSpace`).

        Raises:
            ValueError: if no path matches.
        """
        return self.space.index(path)

    def path_indices(self, path):
        """The candidate index of every choice on `path`."""
        return self.space.resolve(path)

    def path_label(self, path):
        """The label of `path`: `"3x3->5x5"`."""
        return self.space.label(path)

    def set_path(self, path):
        """Makes `path` (any spelling, see `SearchSpace`) the active path."""
        for choice, k in zip(self.choices, self.space.resolve(path)):
            choice.active_index.assign(k)

    @property
    def active_indices(self):
        """The active path's candidate indices."""
        return tuple(int(ops.convert_to_numpy(c.active_index)) for c in self.choices)

    @property
    def active_path(self):
        """The index of the active path."""
        return self.space.index(self.active_indices)

    def _active_tensor(self):
        return ops.stack(
            [tf.convert_to_tensor(c.active_index.value) for c in self.choices]
        )

    def _assign_indices(self, indices):
        for position, choice in enumerate(self.choices):
            choice.active_index.assign(indices[position])

    def _static_plan(self, path, recorder=None):
        indices = self.space.resolve(path)
        return routing.Plan(static=dict(zip(self.choices, indices)), recorder=recorder)

    def path_call(self, inputs, path, training=None):
        """The outputs of `path` (any spelling), whatever is active: a graph
        that holds that path's candidates only."""
        with routing.planned(self._static_plan(path)):
            return self(inputs, training=training)

    def update_sampling(self, paths, losses):
        """Passes per-path validation losses to an adaptive sampler.

        Returns what the sampler's `update` returns (None for samplers that
        do not adapt).
        """
        return self.sampler.update(paths, losses)

    # === The report's preset ===

    @property
    def is_preset(self):
        """Whether this is the report's preset (`Supernet(kernel_sizes=)`)."""
        return self._preset is not None

    def _preset_value(self, key):
        if self._preset is None:
            raise AttributeError(
                f"`{key}` describes the report's preset; this supernet was "
                "built from a graph of its own."
            )
        return self._preset[key]

    kernel_sizes = property(lambda self: self._preset_value("kernel_sizes"))
    filters = property(lambda self: self._preset_value("filters"))
    hidden_units = property(lambda self: self._preset_value("hidden_units"))
    num_classes = property(lambda self: self._preset_value("num_classes"))
    padding = property(lambda self: self._preset_value("padding"))
    aggregation = property(lambda self: self._preset_value("aggregation"))

    @property
    def image_shape(self):
        """The shape of one input example, without the batch axis."""
        return tuple(self.inputs[0].shape[1:])

    @property
    def hidden(self):
        """The preset's `PaddedDense` head layer."""
        self._preset_value("hidden_units")
        return self.get_layer("hidden")

    @property
    def paths(self):
        """The preset's paths as tuples of kernel sizes, in index order."""
        sizes = self.kernel_sizes
        return [
            tuple(sizes[c][k] for c, k in enumerate(indices))
            for indices in self.space.paths()
        ]

    def path_features(self, path):
        """The preset: features `path` feeds the head before padding."""
        shape = (None, *self.image_shape)
        for choice, k in zip(self.choices, self.space.resolve(path)):
            shape = choice.candidate_output_shapes(shape)[k]
        return int(np.prod(shape[1:]))

    @property
    def embedding_size(self):
        """The preset: the padded embedding's size."""
        return self.hidden.full_width

    def embed(self, inputs, path, training=None):
        """The preset's fixed-size embedding of `inputs` on `path`.

        The flattened output of the path's candidates, zero-padded to
        `embedding_size`. The head gives the same logits for it as for the
        unpadded features, which is what training and `path_call` use.
        """
        features = keras.Model(self.input, self.get_layer("flatten").output)
        with routing.planned(self._static_plan(path)):
            x = features(inputs, training=training)
        missing = self.embedding_size - x.shape[-1]
        if missing:
            x = ops.pad(x, [[0, 0], [0, missing]])
        return x

    # === Training ===

    def _multipliers(self):
        """`{id(variable): multiplier}` from `branch_learning_rates`."""
        if not self.branch_learning_rates:
            return {}
        result = {}
        for choice in self.choices:
            for label, candidate in zip(choice.labels, choice.candidates):
                multiplier = self.branch_learning_rates.get(label)
                if multiplier is not None:
                    for v in candidate.trainable_variables:
                        result[id(v)] = multiplier
        return result

    def _apply(self, optimizer, gradients, variables):
        """`optimizer.apply`, with `branch_learning_rates` applied.

        A candidate's update is scaled by its multiplier, which for
        optimizers whose step is proportional to the learning rate (Adam,
        SGD, RMSprop...) is the update at the multiplied learning rate.
        """
        multipliers = self._multipliers()
        scaled = [(v, multipliers[id(v)]) for v in variables if id(v) in multipliers]
        before = [tf.identity(v.value) for v, _ in scaled]
        optimizer.apply(gradients, variables)
        distribute.assign_all(
            [v for v, _ in scaled],
            [
                old + multiplier * (v.value - old)
                for (v, multiplier), old in zip(scaled, before)
            ],
        )

    def _loss(self, x, y, y_pred, sample_weight):
        return self.compute_loss(
            x=x,
            y=y,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=True,
        )

    def _static_step(self, path, x, y, sample_weight):
        """One complete step of path `path` (a Python int)."""
        with tf.GradientTape() as tape:
            with routing.planned(self._static_plan(path)):
                y_pred = self(x, training=True)
            loss = self._loss(x, y, y_pred, sample_weight)
            scaled_loss = self.optimizer.scale_loss(loss)
        # The variables this path read: its candidates and the shared
        # layers (of a PaddedDense, the row blocks of its width).
        variables = self._trainable_read(tape)
        gradients = tape.gradient(scaled_loss, variables)
        self._apply(self.optimizer, gradients, variables)
        return y_pred, loss

    def _trainable_read(self, tape):
        """The trainable variables `tape` saw read, in model order.

        A tape reports the backend's variables; the optimizer wants the
        Keras variables that wrap them.
        """
        read = {id(v) for v in tape.watched_variables()}
        return [
            v
            for v in self.trainable_variables
            if id(v) in read or id(getattr(v, "value", None)) in read
        ]

    def _per_path_step(self, indices, x, y, sample_weight):
        path = ops.sum(
            ops.cast(indices, "int32")
            * ops.convert_to_tensor(self.space.strides, "int32")
        )
        # One branch per path, each a complete step over that path's
        # variables: the untaken branches' variables and optimizer slots are
        # never touched, where a zero gradient would still move them (Adam).
        return tf.switch_case(
            path,
            [
                lambda p=p: self._static_step(p, x, y, sample_weight)
                for p in range(self.num_paths)
            ],
        )

    def _per_path_examples(self, x, examples, recorder, training):
        """Outputs where example `i` runs through path `examples[i]` (the
        per-path step's per-example forward): examples are grouped by path
        and each group runs through its own path only."""
        path_ids = ops.sum(
            ops.cast(examples, "int32")
            * ops.convert_to_tensor(self.space.strides, "int32"),
            axis=-1,
        )
        positions = tf.dynamic_partition(
            tf.range(tf.shape(x)[0]), path_ids, self.num_paths
        )
        groups = tf.dynamic_partition(x, path_ids, self.num_paths)
        outputs, used = [], {}
        for p, group in enumerate(groups):
            present = tf.shape(group)[0] > 0

            def run(p=p, group=group):
                with tf.GradientTape() as inner:
                    with routing.planned(self._static_plan(p)):
                        out = self(group, training=training)
                for v in self._trainable_read(inner):
                    used.setdefault(id(v), (v, []))[1].append(p)
                return out

            # TF's convolutions mishandle empty batches: skip empty groups.
            outputs.append(
                tf.cond(
                    present,
                    run,
                    lambda: tf.zeros(
                        (0, *self.outputs[0].shape[1:]), self.compute_dtype
                    ),
                )
            )
        # Variables that only some paths read are trained where one of
        # those paths has examples in the batch; one group per set of paths.
        present = [tf.reduce_any(tf.equal(path_ids, p)) for p in range(self.num_paths)]
        groups = {}
        for variable, paths in used.values():
            paths = frozenset(paths)
            if len(paths) < self.num_paths:
                groups.setdefault(paths, []).append(variable)
        for paths, variables in groups.items():
            mask = tf.reduce_any(tf.stack([present[p] for p in sorted(paths)]))
            recorder.record_masks(("paths", paths), [mask], [variables])
        return tf.dynamic_stitch(positions, outputs)

    def _recorded_step(self, draw, x, y, sample_weight):
        """A step whose forward records which variable groups it used, then
        updates the shared variables and each used group."""
        recorder = routing.UsageRecorder()
        masks = {self.choices[c]: m for c, m in draw.masks.items()}
        with tf.GradientTape() as tape:
            if draw.examples is not None and self.train_step_mode == "per_path":
                y_pred = self._per_path_examples(
                    x, draw.examples, recorder, training=True
                )
            else:
                routes = {}
                if draw.examples is not None:
                    routes = {
                        choice: draw.examples[:, c]
                        for c, choice in enumerate(self.choices)
                    }
                plan = routing.Plan(routes=routes, masks=masks, recorder=recorder)
                with routing.planned(plan):
                    y_pred = self(x, training=True)
            loss = self._loss(x, y, y_pred, sample_weight)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        if tf.distribute.has_strategy() or self.restoring_updates:
            distribute.apply_restoring(
                self.optimizer,
                lambda g, v: self._apply(self.optimizer, g, v),
                gradients,
                variables,
                recorder,
            )
        else:
            self._apply_grouped(gradients, variables, recorder)
        return y_pred, loss

    def _apply_grouped(self, gradients, variables, recorder):
        """Applies `gradients` to the shared variables, and to each recorded
        group only where the step used it, at one optimizer iteration."""
        optimizer = self.optimizer
        inner = getattr(optimizer, "inner_optimizer", None)
        if inner is None:
            self._grouped_updates(optimizer, gradients, variables, recorder)
            return
        # A LossScaleOptimizer: unscale once, update with the inner
        # optimizer, and move the loss scale once per step.
        scale = optimizer.dynamic_scale
        unscaled = [None if g is None else g / scale for g in gradients]
        finite = optimizer.check_finite(unscaled)

        def upscale():
            optimizer.step_counter.assign(0)
            optimizer.dynamic_scale.assign(scale * 2.0)

        def increment():
            optimizer.step_counter.assign_add(1)

        def finite_step():
            self._grouped_updates(inner, unscaled, variables, recorder)
            ops.cond(
                ops.equal(optimizer.step_counter, optimizer.dynamic_growth_steps - 1),
                upscale,
                increment,
            )

        def non_finite_step():
            optimizer.step_counter.assign(0)
            optimizer.dynamic_scale.assign(scale * 0.5)

        ops.cond(finite, finite_step, non_finite_step)

    def _grouped_updates(self, optimizer, gradients, variables, recorder):
        by_id = {id(v): g for v, g in zip(variables, gradients)}
        conditional = recorder.recorded_variables()
        shared = [
            (g, v)
            for v, g in zip(variables, gradients)
            if g is not None and id(v) not in conditional
        ]
        step = tf.identity(optimizer.iterations.value)
        if shared:
            self._apply(optimizer, [g for g, _ in shared], [v for _, v in shared])

        def update(group):
            pairs = [(by_id[id(v)], v) for v in group if by_id.get(id(v)) is not None]
            if pairs:
                # Every group's update sees the same iteration count, so
                # Adam's bias correction is the one a single apply would use.
                optimizer.iterations.assign(step)
                self._apply(optimizer, [g for g, _ in pairs], [v for _, v in pairs])
            return tf.constant(True)

        for kind, selector, groups in recorder.entries():
            if kind == "switch":
                tf.switch_case(
                    selector, [lambda g=group: update(g) for group in groups]
                )
            else:
                for mask, group in zip(selector, groups):
                    if group:
                        tf.cond(
                            mask,
                            lambda g=group: update(g),
                            lambda: tf.constant(False),
                        )
        optimizer.iterations.assign(step + 1)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Without a strategy, Keras builds the compiled metrics and the
        # optimizer while `fit` traces the first step; TensorFlow then traces
        # the whole step a second time (variables were created). A
        # supernet's step is costly to trace, so everything is built first,
        # from the data's spec (not from a batch: taking one would move a
        # reshuffling dataset on).
        adapter = getattr(iterator, "data_adapter", None)
        if (
            self._distribute_strategy is None
            and self.compiled
            and data_batch is None
            and adapter is not None
        ):
            spec = adapter.get_tf_dataset().element_spec
            self._symbolic_build(data_batch=spec)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        draw = self.sampler.draw(tf.shape(x)[0], self._active_tensor())
        if draw.indices is not None and not draw.active:
            self._assign_indices(draw.indices)
        # Under tf.distribute the optimizer's cross-replica update cannot run
        # inside control flow: every variable is updated, and what the step
        # did not train is restored (distribute.apply_restoring).
        single_path = draw.examples is None and not draw.masks
        if (
            single_path
            and self.train_step_mode == "per_path"
            and not tf.distribute.has_strategy()
        ):
            y_pred, loss = self._per_path_step(draw.indices, x, y, sample_weight)
        else:
            y_pred, loss = self._recorded_step(draw, x, y, sample_weight)
        # compute_loss divides by the replica count under tf.distribute.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(
                    loss * ops.cast(replicas, loss.dtype),
                    sample_weight=ops.shape(x)[0],
                )
        return self.compute_metrics(x, y, y_pred, sample_weight)

    # === BatchNorm ===

    def _path_batchnorms(self):
        """The BatchNormalization layers the active path runs: those outside
        every choice, and those inside the active candidates."""
        inside = set()
        active = []
        for choice in self.choices:
            k = int(ops.convert_to_numpy(choice.active_index))
            for position, candidate in enumerate(choice.candidates):
                for layer in candidate._flatten_layers(include_self=True):
                    inside.add(id(layer))
                    if position == k and isinstance(
                        layer, keras.layers.BatchNormalization
                    ):
                        active.append(layer)
        shared = [
            layer
            for layer in self._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)
            and id(layer) not in inside
        ]
        return shared + active

    @property
    def has_batchnorm(self):
        """Whether any layer of the supernet is a BatchNormalization."""
        return any(
            isinstance(layer, keras.layers.BatchNormalization)
            for layer in self._flatten_layers(include_self=False)
        )

    def _recalibration_forward(self):
        forward = _RECALIBRATION_FORWARD.get(self)
        if forward is None:
            # A weak reference: the cache must not keep the supernet alive.
            model = weakref.ref(self)
            forward = tf.function(
                lambda x: model()(x, training=True), reduce_retracing=True
            )
            _RECALIBRATION_FORWARD[self] = forward
        return forward

    def recalibrate_batchnorm(self, data, path=None, batches=200):
        """Re-estimates the BatchNorm statistics a path uses, on `data`.

        A candidate's BatchNorm statistics were accumulated over the paths
        that ran through it; a path evaluated with them is judged by
        statistics that are not its own (SPOS, once-for-all). This resets
        the moving mean and variance of the shared BatchNorm layers and of
        the path's candidates, then sets them to the mean, over the first
        `batches` batches of `data`, of each batch's mean and variance (as
        BatchNorm computes them in training). Layers off the path are left
        as they are. SPOS uses 200 batches of 128; once-for-all 2,000 images.

        Args:
            data: A dataset (or iterable) of `(x, y)` or `x` batches of
                training data.
            path: The path (any spelling); None for the active path. It is
                active afterwards.
            batches: Positive int, the batches used.

        Returns:
            The number of batches used (0 for a supernet without
            BatchNorm).

        Raises:
            ValueError: if `data` is empty or `batches` is not positive.
        """
        batches = validation.positive_int("batches", batches)
        if path is not None:
            self.set_path(path)
        layers = self._path_batchnorms()
        if not layers:
            return 0
        every = [
            layer
            for layer in self._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
        momenta = [layer.momentum for layer in every]
        sums = [
            [
                np.zeros(layer.moving_mean.shape, "float64"),
                np.zeros(layer.moving_variance.shape, "float64"),
            ]
            for layer in layers
        ]
        used = 0
        try:
            # With momentum 0, a training-mode call leaves exactly the
            # batch's mean and variance in the moving statistics. A trace
            # freezes the momentum, so every BatchNorm (not only the path's)
            # has momentum 0 whenever the shared forward runs or is traced:
            # one trace then serves every path (the path lives in the
            # choices' index variables), instead of one trace per call.
            for layer in every:
                layer.momentum = 0.0
            forward = self._recalibration_forward()
            for batch in data:
                if used >= batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                forward(x)
                for layer, (mean, variance) in zip(layers, sums):
                    mean += ops.convert_to_numpy(layer.moving_mean)
                    variance += ops.convert_to_numpy(layer.moving_variance)
                used += 1
        finally:
            for layer, momentum in zip(every, momenta):
                layer.momentum = momentum
        if not used:
            raise ValueError(
                "Invalid value for argument `data`. Expected at least one "
                "batch to recalibrate BatchNorm on. Received an empty dataset."
            )
        for layer, (mean, variance) in zip(layers, sums):
            layer.moving_mean.assign((mean / used).astype("float32"))
            layer.moving_variance.assign((variance / used).astype("float32"))
        return used

    # === Head re-fitting ===

    @property
    def head_layers(self):
        """The layers after every choice, in graph order.

        A layer is in the head when a `Choice` lies before it in the graph
        and none after it: the preset's dense layers, or the pooling and
        classifier of a graph of your own (a residual addition after the
        last choice included; a stem before the first choice not). Every
        path runs them, on features that differ from path to path.
        """
        operations = list(self.operations)
        members = {id(op) for op in operations}

        def bears_choice(op):
            return isinstance(op, Choice) or (
                isinstance(op, keras.layers.Layer)
                and any(
                    isinstance(layer, Choice)
                    for layer in op._flatten_layers(include_self=False)
                )
            )

        parents = {
            id(op): [
                parent.operation
                for node in op._inbound_nodes
                for parent in node.parent_nodes
                if id(parent.operation) in members
            ]
            for op in operations
        }
        # Before a choice: the choices' ancestors.
        before = set()
        stack = [op for op in operations if bears_choice(op)]
        while stack:
            for parent in parents[id(stack.pop())]:
                if id(parent) not in before:
                    before.add(id(parent))
                    stack.append(parent)
        # After a choice: operations with a choice among their ancestors.
        after = {}

        def is_after(op):
            if id(op) not in after:
                after[id(op)] = any(
                    bears_choice(parent) or is_after(parent)
                    for parent in parents[id(op)]
                )
            return after[id(op)]

        return [
            op
            for op in operations
            if isinstance(op, keras.layers.Layer)
            and not bears_choice(op)
            and id(op) not in before
            and is_after(op)
        ]

    @property
    def head_variables(self):
        """The trainable variables of `head_layers`."""
        return [v for layer in self.head_layers for v in layer.trainable_variables]

    def _head_refit(self, from_logits):
        state = _HEAD_REFIT.get(self)
        if state is None:
            variables = self.head_variables
            if not variables:
                raise ValueError(
                    "This supernet has no trainable layer after its last "
                    "choice (`head_layers`): there is no head to re-fit."
                )
            optimizer = keras.optimizers.Adam()
            optimizer.build(variables)
            initial = [np.array(ops.convert_to_numpy(v)) for v in optimizer.variables]
            state = {"optimizer": optimizer, "initial": initial, "steps": {}}
            _HEAD_REFIT[self] = state
        if from_logits not in state["steps"]:
            model, optimizer = weakref.ref(self), state["optimizer"]
            variables = self.head_variables

            def step(x, y):
                # The body in inference mode: BatchNorm keeps the path's
                # (recalibrated) statistics, nothing but the head moves.
                with tf.GradientTape() as tape:
                    outputs = model()(x, training=False)
                    loss = ops.mean(
                        keras.losses.sparse_categorical_crossentropy(
                            y, outputs, from_logits=from_logits
                        )
                    )
                gradients = tape.gradient(loss, variables)
                optimizer.apply(gradients, variables)

            # One trace for every path: the path lives in the choices'
            # index variables.
            state["steps"][from_logits] = tf.function(step, reduce_retracing=True)
        return state

    def refit_head(
        self, data, path=None, batches=200, learning_rate=1e-3, from_logits=True
    ):
        """Trains the head (`head_layers`) alone for a path, from its
        current weights.

        The shared head was trained on features of every sampled path at
        once; a path scored with it is judged partly by how close its
        features are to the mix the head saw. A path whose features differ
        from most (a shallow path, when most paths have more blocks) then
        scores below what it reaches alone. Re-fitting the head for the path
        removes that part of the error, at the cost of a short training per
        path, as BatchNorm recalibration does for the statistics. The rest
        of the supernet runs in inference mode and does not change; the
        head's weights do: keep a copy (`head_variables`) to put back. Adam
        starts afresh at every call, so a path's head does not depend on
        the paths re-fitted before it.

        Args:
            data: An iterable of `(x, y)` batches of training data, `y`
                integer class labels.
            path: The path (any spelling); None for the active path. It is
                active afterwards.
            batches: Positive int, the batches trained on (the first of
                `data`).
            learning_rate: Positive float, Adam's rate.
            from_logits: Whether the supernet outputs logits (else
                probabilities).

        Returns:
            The number of batches trained on.

        Raises:
            ValueError: if `data` is empty, an argument is invalid, or the
                supernet has no trainable layer after its last choice.
        """
        batches = validation.positive_int("batches", batches)
        learning_rate = validation.finite_float(
            "learning_rate", learning_rate, low=0.0, low_open=True
        )
        if path is not None:
            self.set_path(path)
        state = self._head_refit(bool(from_logits))
        optimizer = state["optimizer"]
        for variable, value in zip(optimizer.variables, state["initial"]):
            variable.assign(value)
        optimizer.learning_rate = learning_rate
        step = state["steps"][bool(from_logits)]
        used = 0
        for batch in data:
            if used >= batches:
                break
            x, y = validation.labelled_batch("data", batch)
            step(tf.cast(x, "float32"), tf.cast(y, "int64"))
            used += 1
        if not used:
            raise ValueError(
                "Invalid value for argument `data`. Expected at least one "
                "batch to re-fit the head on. Received an empty dataset."
            )
        return used

    @contextlib.contextmanager
    def head_refitted(self, data, path=None, **kwargs):
        """`refit_head` for the body of a `with` statement, the head's
        weights put back as they were on leaving it (scores taken inside
        then depend on no other path's re-fit).

        Args:
            data, path: As `refit_head`.
            **kwargs: `batches`, `learning_rate`, `from_logits` of
                `refit_head`.
        """
        variables = self.head_variables
        shared = [np.array(ops.convert_to_numpy(v)) for v in variables]
        try:
            self.refit_head(data, path, **kwargs)
            yield self
        finally:
            for variable, value in zip(variables, shared):
                variable.assign(value)

    # === Serialization ===

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`, and weight files of keras_supernet
        0.1.0 and 0.2.0 for the preset (see `keras_supernet.legacy`)."""
        from keras_supernet import legacy

        if legacy.is_legacy_weights(filepath):
            legacy.load_legacy_weights(self, filepath)
            return
        super().load_weights(filepath, *args, **kwargs)

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }
        if self._preset is not None:
            config.update(
                {
                    "kernel_sizes": [list(s) for s in self._preset["kernel_sizes"]],
                    "filters": list(self._preset["filters"]),
                    "hidden_units": self._preset["hidden_units"],
                    "num_classes": self._preset["num_classes"],
                    "input_shape": list(self._preset["input_shape"]),
                    "padding": self._preset["padding"],
                    "aggregation": self._preset["aggregation"],
                }
            )
        else:
            # The graph, as Keras serializes a functional model of the same
            # layers.
            graph = keras.Model(self.input, self.output, name=self.name)
            config.update(graph.get_config())
        config.update(
            {
                "sampling": keras.saving.serialize_keras_object(self.sampler),
                "path_dropout": self.path_dropout,
                "branch_learning_rates": dict(self.branch_learning_rates),
                "seed": self.seed,
                "train_step": self.train_step_mode,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        supernet_args = {k: config.pop(k) for k in _SUPERNET_ARGS if k in config}
        sampling = supernet_args.get("sampling")
        if isinstance(sampling, dict):
            supernet_args["sampling"] = keras.saving.deserialize_keras_object(
                sampling, custom_objects=custom_objects
            )
            # A config's sampler carries the path dropout already.
            supernet_args.pop("path_dropout", None)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        if "layers" in config:
            name = config.get("name")
            # Keras's functional deserialization consumes parts of `config`.
            graph = keras.Model.from_config(dict(config), custom_objects=custom_objects)
            return cls(
                inputs=graph.input,
                outputs=graph.output,
                name=name,
                **supernet_args,
            )
        config.pop("trainable", None)
        return cls(**config, **supernet_args)
