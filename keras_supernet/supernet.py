"""The supernet model: stacked choice layers, a fixed-size embedding, a head."""

import functools
import itertools
import math
import re

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_supernet import sampling as sampling_lib
from keras_supernet.layers import PaddedDense
from keras_supernet.layers import SupernetLayer
from keras_supernet.layers import _positive_ints
from keras_supernet.layers import _validate_aggregation
from keras_supernet.layers import _validate_kernel_sizes
from keras_supernet.layers import _validate_padding
from keras_supernet.layers import _validate_positive_int
from keras_supernet.layers import branch_label


def _derived_seed(seed, *keys):
    """A 31-bit seed derived from `seed` and `keys`, stable across runs."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


def path_label(kernel_sizes):
    """The label of a path given as kernel sizes: `"3x3->5x5"`."""
    return "->".join(branch_label(k) for k in kernel_sizes)


@keras.saving.register_keras_serializable(package="keras_supernet")
class Supernet(keras.Model):
    """A weight-sharing supernet of convolution choice layers.

    Stacks one `SupernetLayer` per entry of `kernel_sizes`, flattens the
    last feature map, zero-pads it to the largest size any path yields (a
    fixed-size embedding shared by all paths, `embed`), then applies
    `Dense(hidden_units, relu)` and `Dense(num_classes)`, returning logits.
    The first Dense is a `PaddedDense`: it gives the same result without
    multiplying the zeros, its kernel stored as row blocks so that a path
    uses and trains only the rows of its own features.

    A path picks one candidate per layer; `paths` lists them in
    `itertools.product` order. Inference runs the active path (`set_path`).
    Training picks paths with the `sampling` strategy (see
    `keras_supernet.sampling`): `"uniform"` draws one path per batch,
    `"fixed"` trains the active path only (standalone training of one path),
    `"adaptive"` draws per batch with probabilities set from per-path
    validation losses (`update_sampling`), `"per_example"` draws a path per
    example and `"fair"` trains every candidate exactly once per step
    (FairNAS).

    With an `aggregation` (`"sum"` or `"concat_1x1"`, Bender et al. 2018),
    training runs every candidate of a layer in parallel and aggregates
    them, with path dropout (`path_dropout`, ramped by
    `PathDropoutSchedule`); selecting a path evaluates each block with only
    that candidate enabled. Only `"uniform"` (all candidates) and `"fixed"`
    sampling apply.

    A training step changes the sampled path's candidates and the head (of
    the hidden kernel, the path's rows) and nothing else: the train step
    switches between whole per-path steps, each computing gradients and
    applying the optimizer to that path's variables only, so candidates off
    the path keep their weights and their optimizer state (Adam moments) bit
    for bit. The active path lives in variables, so
    changing it never retraces a compiled function. Each path's step is its
    own branch of the compiled graph, so the graph grows with the number of
    paths (the product of the candidate counts).

    Args:
        kernel_sizes: One sequence of distinct kernel sizes per layer.
        filters: Output channels per layer: a sequence as long as
            `kernel_sizes`, or one int for every layer.
        hidden_units: Positive int, width of the hidden dense layer.
        num_classes: Positive int, number of output logits.
        input_shape: `(rows, cols, channels)` of one input image.
        padding: `"valid"` or `"same"` convolution padding.
        sampling: Path sampling strategy used by `fit`: `"uniform"` or
            `"fixed"` (see `keras_supernet.sampling`).
        aggregation: None, `"sum"` or `"concat_1x1"`; needs candidates of
            equal output shapes (`padding="same"`).
        path_dropout: Float in [0, 1), the rate at which an aggregated
            candidate is dropped for a batch (at least one is kept).
        branch_learning_rates: Optional dict from kernel size (an int or
            `"3x3"`) to a learning-rate multiplier for the candidates of that
            size, in every layer; others keep the optimizer's rate.
        seed: Optional non-negative int. Makes weight initialisation and path
            sampling deterministic: two supernets with the same seed start
            from the same weights, whatever their `sampling`, and draw the
            same paths. With `None`, initialisation follows Keras's global
            seed (`keras.utils.set_random_seed`).
        **kwargs: Base model keyword arguments, such as `name`.

    Raises:
        ValueError: if an argument is invalid, or a path shrinks the feature
            map to nothing.

    Example:

    >>> model = Supernet(kernel_sizes=((3, 5), (3, 5)), seed=0)
    >>> model.paths
    [(3, 3), (3, 5), (5, 3), (5, 5)]
    >>> model.compile(optimizer="adam", loss=keras.losses.
    ...     SparseCategoricalCrossentropy(from_logits=True))
    >>> model.fit(x_train, y_train, epochs=1)  # a path drawn per batch
    >>> model.set_path((5, 3))
    >>> model.evaluate(x_test, y_test)          # path 2 only
    """

    def __init__(
        self,
        kernel_sizes=((3, 5), (3, 5)),
        filters=(16, 32),
        hidden_units=128,
        num_classes=10,
        input_shape=(28, 28, 1),
        padding="valid",
        sampling="uniform",
        aggregation=None,
        path_dropout=0.0,
        branch_learning_rates=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "keras_supernet needs the TensorFlow backend. "
                f"Received KERAS_BACKEND={keras.backend.backend()!r}."
            )
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
        self.kernel_sizes = tuple(
            _validate_kernel_sizes(sizes, f"kernel_sizes[{i}]")
            for i, sizes in enumerate(layer_kernel_sizes)
        )
        self.filters = self._validate_filters(filters)
        self.hidden_units = _validate_positive_int(
            hidden_units, "hidden_units"
        )
        self.num_classes = _validate_positive_int(num_classes, "num_classes")
        self.image_shape = self._validate_input_shape(input_shape)
        self.padding = _validate_padding(padding)
        self.sampler = sampling_lib.get(sampling)
        self.aggregation = _validate_aggregation(aggregation)
        if self.aggregation is not None and self.sampler.name not in (
            "uniform",
            "fixed",
        ):
            raise ValueError(
                f"Invalid value for argument `sampling`: with aggregation="
                f"{aggregation!r}, training runs every candidate; only "
                f"'uniform' or 'fixed' apply. Received sampling={sampling!r}."
            )
        if not (
            isinstance(path_dropout, (int, float))
            and 0 <= path_dropout < 1
        ):
            raise ValueError(
                "Invalid value for argument `path_dropout`. Expected a float "
                f"in [0, 1). Received path_dropout={path_dropout!r}."
            )
        self.path_dropout = float(path_dropout)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or seed < 0
        ):
            raise ValueError(
                "Invalid value for argument `seed`. Expected None or a "
                f"non-negative integer. Received seed={seed!r}."
            )
        self.seed = seed

        self.supernet_layers = [
            SupernetLayer(
                sizes,
                filters,
                padding=padding,
                aggregation=self.aggregation,
                kernel_initializer=self._initializer(index),
                name=f"supernet_layer_{index}",
            )
            for index, (sizes, filters) in enumerate(
                zip(self.kernel_sizes, self.filters)
            )
        ]
        num_layers = len(self.supernet_layers)
        self.flatten = keras.layers.Flatten(name="flatten")
        self.seed_generator = keras.random.SeedGenerator(
            None if seed is None else _derived_seed(seed, 1_000_003),
            name="path_seed_generator",
        )

        self.branch_learning_rates = self._validate_branch_learning_rates(
            branch_learning_rates
        )
        self.path_probabilities = self.add_weight(
            name="path_probabilities",
            shape=(math.prod(len(s) for s in self.kernel_sizes),),
            initializer="ones",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.path_probabilities.assign(
            self.path_probabilities / self.path_probabilities.shape[0]
        )
        if self.aggregation is not None:
            self.path_dropout_rate = self.add_weight(
                name="path_dropout_rate",
                shape=(),
                initializer=keras.initializers.Constant(self.path_dropout),
                trainable=False,
                aggregation="only_first_replica",
            )
        self._paths = tuple(itertools.product(*self.kernel_sizes))
        self._branch_indices = tuple(
            itertools.product(*(range(len(s)) for s in self.kernel_sizes))
        )
        # Row-major strides: the last layer's choice varies fastest, as in
        # itertools.product.
        counts = [len(s) for s in self.kernel_sizes]
        self._strides = tuple(
            math.prod(counts[i + 1 :]) for i in range(len(counts))
        )
        self._path_features = tuple(
            self._features_of(p) for p in range(len(self._paths))
        )
        self.embedding_size = max(self._path_features)
        # The head's first layer takes each path's features unpadded; its
        # kernel rows are split at every path's feature count.
        self.hidden = PaddedDense(
            hidden_units,
            widths=self._path_features,
            activation="relu",
            kernel_initializer=self._initializer(num_layers),
            name="hidden",
        )
        self.classifier = keras.layers.Dense(
            num_classes,
            kernel_initializer=self._initializer(num_layers + 1),
            name="logits",
        )
        self.sampler.validate(self)
        self.build((None, *self.image_shape))

    # === Validation ===

    def _validate_filters(self, filters):
        num_layers = len(self.kernel_sizes)
        if isinstance(filters, int) and not isinstance(filters, bool):
            filters = (filters,) * num_layers
        try:
            filters = tuple(filters)
        except TypeError:
            filters = (filters,)
        if len(filters) != num_layers:
            raise ValueError(
                "Invalid value for argument `filters`. Expected one value "
                f"per layer ({num_layers} layers, as in `kernel_sizes`). "
                f"Received filters={filters!r}."
            )
        for value in filters:
            _validate_positive_int(value, "filters")
        return filters

    def _validate_branch_learning_rates(self, branch_learning_rates):
        if branch_learning_rates is None:
            return {}
        error = ValueError(
            "Invalid value for argument `branch_learning_rates`. Expected a "
            "dict from kernel sizes of the search space to positive "
            f"multipliers. Received branch_learning_rates="
            f"{branch_learning_rates!r}."
        )
        if not isinstance(branch_learning_rates, dict):
            raise error
        sizes = {k for layer in self.kernel_sizes for k in layer}
        result = {}
        for key, value in branch_learning_rates.items():
            match = re.fullmatch(r"(\d+)(?:x(\d+))?", str(key).strip())
            if not match or match.group(2) not in (None, match.group(1)):
                raise error
            size = int(match.group(1))
            if (
                size not in sizes
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value > 0
            ):
                raise error
            result[size] = float(value)
        return result

    @staticmethod
    def _validate_input_shape(input_shape):
        shape = _positive_ints(input_shape)
        if shape is None or len(shape) != 3:
            raise ValueError(
                "Invalid value for argument `input_shape`. Expected "
                "(rows, cols, channels) of strictly positive integers. "
                f"Received input_shape={input_shape!r}."
            )
        return shape

    def _initializer(self, index):
        if self.seed is None:
            return "glorot_uniform"
        return keras.initializers.GlorotUniform(
            seed=_derived_seed(self.seed, index)
        )

    def _features_of(self, path_index):
        shape = (None, *self.image_shape)
        for layer, branch in zip(
            self.supernet_layers, self._branch_indices[path_index]
        ):
            try:
                shape = layer.branch_output_shape(branch, shape)
            except ValueError as error:
                raise ValueError(
                    "Invalid search space: path "
                    f"{path_label(self._paths[path_index])} shrinks input "
                    f"of shape {self.image_shape} to nothing ({error}) "
                    f"Received kernel_sizes={self.kernel_sizes!r}, "
                    f"padding={self.padding!r}."
                ) from None
        return math.prod(shape[1:])

    # === Paths ===

    @property
    def paths(self):
        """The paths, as tuples of kernel sizes, in product order."""
        return list(self._paths)

    @property
    def num_paths(self):
        return len(self._paths)

    def path_label(self, path):
        """The label of `path` (index, tuple or string): `"3x3->5x5"`."""
        return path_label(self._paths[self.resolve_path(path)])

    def path_features(self, path):
        """Number of features path `path` feeds the head before padding."""
        return self._path_features[self.resolve_path(path)]

    def branch_indices(self, path):
        """The candidate index of every layer on `path`."""
        return self._branch_indices[self.resolve_path(path)]

    def resolve_path(self, path):
        """The index of `path`, given as an index, kernel sizes or a string.

        Strings name kernel sizes per layer: `"5x5,3x3"`, `"5,3"` or
        `"5x5->3x3"`; a plain number is an index.

        Raises:
            ValueError: if no path matches, listing the valid ones.
        """
        index = None
        if isinstance(path, (int, np.integer)) and not isinstance(path, bool):
            if 0 <= path < self.num_paths:
                index = int(path)
        elif isinstance(path, str):
            text = path.strip()
            if text.isdigit():
                return self.resolve_path(int(text))
            parts = [p for p in re.split(r"\s*(?:->|,|;)\s*", text) if p]
            sizes = []
            for part in parts:
                match = re.fullmatch(r"(\d+)(?:x(\d+))?", part)
                if not match or match.group(2) not in (None, match.group(1)):
                    sizes = None
                    break
                sizes.append(int(match.group(1)))
            if sizes and tuple(sizes) in self._paths:
                index = self._paths.index(tuple(sizes))
        elif isinstance(path, (tuple, list)):
            try:
                sizes = tuple(int(k) for k in path)
            except (TypeError, ValueError):
                sizes = None
            if sizes in self._paths:
                index = self._paths.index(sizes)
        if index is None:
            valid = ", ".join(
                f"{i}={path_label(p)}" for i, p in enumerate(self._paths)
            )
            raise ValueError(
                f"Unknown path {path!r}. Valid paths: {valid}."
            )
        return index

    def set_path(self, path):
        """Makes `path` (index, kernel sizes or string) the active path."""
        for layer, branch in zip(
            self.supernet_layers, self.branch_indices(path)
        ):
            layer.set_active(branch)

    @property
    def active_path(self):
        """The index of the active path."""
        return int(ops.convert_to_numpy(self.active_path_index()))

    def active_path_index(self):
        """The active path's index as an int32 scalar tensor."""
        index = ops.zeros((), dtype="int32")
        for layer, stride in zip(self.supernet_layers, self._strides):
            index = index + layer.active_index * stride
        return index

    def _assign_path(self, index):
        """Makes the path with tensor index `index` active."""
        for layer, stride in zip(self.supernet_layers, self._strides):
            layer.active_index.assign((index // stride) % layer.num_branches)

    @property
    def path_strides(self):
        """Per layer, how much its candidate index weighs in a path index."""
        return self._strides

    def path_trainable_variables(self, path):
        """The trainable variables a step on `path` updates: its candidates,
        the layers' shared mixers, and the head (of the hidden kernel, the
        rows of the path's features only)."""
        index = self.resolve_path(path)
        variables = [
            v
            for layer, branch in zip(
                self.supernet_layers, self._branch_indices[index]
            )
            for v in layer.branches[branch].trainable_variables
        ]
        blocks = self.hidden.blocks_for(self._path_features[index])
        return variables + blocks + self._shared_trainable_variables()

    def _shared_trainable_variables(self):
        """Variables every training step updates, whatever the path."""
        mixers = [
            v
            for layer in self.supernet_layers
            if layer.mixer is not None
            for v in layer.mixer.trainable_variables
        ]
        return (
            mixers
            + [self.hidden.bias]
            + self.classifier.trainable_variables
        )

    def _path_specific_groups(self):
        """The variables only some paths use, in groups that a step trains
        or leaves alone together: each candidate, then each row block of the
        hidden kernel."""
        groups = [
            branch.trainable_variables
            for layer in self.supernet_layers
            for branch in layer.branches
        ]
        return groups + [[block] for block in self.hidden.kernel_blocks]

    def update_sampling(self, losses):
        """Passes per-path validation losses to an adaptive sampler.

        Returns the new path probabilities, or None where the sampler does
        not use them.
        """
        update = getattr(self.sampler, "update", None)
        if update is None:
            return None
        return update(self, losses)

    # === Forward ===

    def build(self, input_shape):
        for layer in self.supernet_layers:
            layer.build(input_shape)
            input_shape = layer.compute_output_shape(input_shape)
        self.flatten.build(input_shape)
        self.hidden.build((None, self.embedding_size))
        self.classifier.build((None, self.hidden_units))

    def _features(self, inputs, path, training=None):
        """The flattened output of path `path`'s candidates, unpadded."""
        x = inputs
        for layer, branch in zip(
            self.supernet_layers, self._branch_indices[path]
        ):
            x = layer.path_output(x, branch, training=training)
        return self.flatten(x)

    def embed(self, inputs, path, training=None):
        """The fixed-size embedding of `inputs` on path `path` (an index).

        The flattened output of the path's candidates, zero-padded to
        `embedding_size`. The head gives the same logits for it as for the
        unpadded features, which is what training and `path_call` use.
        """
        x = self._features(inputs, path, training=training)
        missing = self.embedding_size - self._path_features[path]
        if missing:
            x = ops.pad(x, [[0, 0], [0, missing]])
        return x

    def path_call(self, inputs, path, training=None):
        """The logits of path `path` (a Python index), whatever is active."""
        x = self._features(inputs, path, training=training)
        return self.classifier(self.hidden(x))

    def call(self, inputs, training=None):
        return ops.switch(
            self.active_path_index(),
            [
                functools.partial(self.path_call, path=p, training=training)
                for p in range(self.num_paths)
            ],
            inputs,
        )

    def per_example_call(self, inputs, assignment, training=None):
        """Logits where example `i` runs through path `assignment[i]`.

        Examples are grouped by path, so each is computed on its path only
        and the batch costs about one path's forward pass.
        """
        positions = tf.dynamic_partition(
            tf.range(tf.shape(inputs)[0]), assignment, self.num_paths
        )
        groups = tf.dynamic_partition(inputs, assignment, self.num_paths)
        # TF's convolutions mishandle empty batches: skip empty groups.
        logits = [
            tf.cond(
                tf.shape(group)[0] > 0,
                lambda p=p, group=group: self.path_call(
                    group, p, training=training
                ),
                lambda: tf.zeros((0, self.num_classes), self.compute_dtype),
            )
            for p, group in enumerate(groups)
        ]
        return tf.dynamic_stitch(positions, logits)

    def aggregated_call(self, inputs, enabled, training=None):
        """Logits with the candidates `enabled[l]` of each layer `l`
        aggregated (needs an aggregation)."""
        x = inputs
        for layer, mask in zip(self.supernet_layers, enabled):
            x = layer(x, training=training, enabled=mask)
        return self.classifier(self.hidden(self.flatten(x)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    # === Training ===

    def _apply_gradients(self, gradients, variables):
        """`optimizer.apply`, with `branch_learning_rates` applied.

        A candidate's update is scaled by its multiplier, which for
        optimizers whose step is proportional to the learning rate (Adam,
        SGD, RMSprop...) is the update at the multiplied learning rate.
        """
        scaled = []
        for layer in self.supernet_layers:
            for size, branch in zip(layer.kernel_sizes, layer.branches):
                multiplier = self.branch_learning_rates.get(size, 1.0)
                if multiplier != 1.0:
                    scaled += [
                        (v, multiplier)
                        for v in branch.trainable_variables
                        if any(v is w for w in variables)
                    ]
        before = [tf.identity(v.value) for v, _ in scaled]
        self.optimizer.apply(gradients, variables)
        self._assign_all(
            [v for v, _ in scaled],
            [
                old + multiplier * (v.value - old)
                for (v, multiplier), old in zip(scaled, before)
            ],
        )

    @staticmethod
    def _assign_all(variables, values):
        """Assigns `values` to `variables`, under tf.distribute as well.

        Model variables only accept an update from the replicas through the
        strategy (`extended.update`), as the optimizer does its own.
        """
        if not variables:
            return
        if not tf.distribute.has_strategy():
            for variable, value in zip(variables, values):
                variable.assign(value)
            return
        targets = [
            v.value if isinstance(v, keras.Variable) else v for v in variables
        ]

        def assign(distribution, values):
            for target, value in zip(targets, values):
                distribution.extended.update(
                    target, lambda var, new: var.assign(new), args=(value,),
                    group=False,
                )

        tf.__internal__.distribute.interim.maybe_merge_call(
            assign, tf.distribute.get_strategy(), values
        )

    def _optimizer_slots(self, variable):
        """The optimizer variables that belong to model variable `variable`.

        Keras names them `<variable path with '_' for '/'>_<slot>`.
        """
        prefix = variable.path.replace("/", "_") + "_"
        return [
            v for v in self.optimizer.variables if v.name.startswith(prefix)
        ]

    def _apply_restoring(self, gradients, variables, trained):
        """Applies `gradients` to all `variables`, then puts back the weights
        and optimizer slots of every candidate the step did not train.

        The tf.distribute variant of `_apply_masked`: the optimizer's
        cross-replica update cannot run inside control flow, so every
        variable is updated and the untrained candidates are restored with
        an element-wise select, bit for bit.
        """
        targets, keeps = [], []
        for group, group_trained in zip(self._path_specific_groups(), trained):
            for v in group:
                for target in [v] + self._optimizer_slots(v):
                    targets.append(target)
                    keeps.append(group_trained)
        before = [tf.identity(t.value) for t in targets]
        self._apply_gradients(gradients, variables)
        self._assign_all(
            targets,
            [
                tf.where(keep, t.value, old)
                for t, old, keep in zip(targets, before, keeps)
            ],
        )

    def _apply_masked(self, gradients, variables, trained):
        """Applies `gradients` to the shared variables, and to the variables
        of group `i` of `_path_specific_groups()` only where `trained[i]` (a
        bool tensor) holds.

        One optimizer step: every update sees the same iteration count, so
        Adam's bias correction is the one a single `apply` would use.
        """
        by_variable = {id(v): g for v, g in zip(variables, gradients)}
        shared = self._shared_trainable_variables()
        step = tf.identity(self.optimizer.iterations.value)
        self._apply_gradients([by_variable[id(v)] for v in shared], shared)
        for group, group_trained in zip(self._path_specific_groups(), trained):
            if not group:
                continue

            def update(group=group):
                self.optimizer.iterations.assign(step)
                self._apply_gradients(
                    [by_variable[id(v)] for v in group], group
                )
                return tf.constant(True)

            tf.cond(group_trained, update, lambda: tf.constant(False))
        self.optimizer.iterations.assign(step + 1)

    def _loss(self, x, y, y_pred, sample_weight):
        return self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
            training=True,
        )

    def _path_train_step(self, path, x, y, sample_weight):
        variables = self.path_trainable_variables(path)
        with tf.GradientTape() as tape:
            y_pred = self.path_call(x, path, training=True)
            loss = self._loss(x, y, y_pred, sample_weight)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        self._apply_gradients(gradients, variables)
        return y_pred, loss

    def _single_path_step(self, x, y, sample_weight):
        path = self.sampler.sample(self)
        if self.sampler.draws_paths:
            self._assign_path(path)
        # One branch per path, each a complete step over that path's
        # variables: the untaken branches' variables and optimizer slots are
        # never touched, where a zero gradient would still move them (Adam).
        return tf.switch_case(
            path,
            [
                functools.partial(
                    self._path_train_step, p, x, y, sample_weight
                )
                for p in range(self.num_paths)
            ],
        )

    def _trained_by(self, assignment):
        """Per group of `_path_specific_groups()`, a bool tensor: does any
        path index of the vector `assignment` use it?"""
        trained = []
        for layer, stride in zip(self.supernet_layers, self._strides):
            choice = (assignment // stride) % layer.num_branches
            trained += [
                tf.reduce_any(tf.equal(choice, k))
                for k in range(layer.num_branches)
            ]
        features = tf.gather(
            tf.constant(self._path_features, dtype="int32"), assignment
        )
        # The hidden kernel's rows up to `width` serve every path with at
        # least `width` features.
        trained += [
            tf.reduce_any(features >= width) for width in self.hidden.widths
        ]
        return trained

    def _step_plan(self, x):
        """This step's forward function and, per layer and candidate, a bool
        tensor saying whether the step trains it."""
        if self.aggregation is not None and self.sampler.draws_paths:
            masks = self.dropout_masks()
            # Aggregated candidates share one output shape: the head's
            # single row block is always trained.
            blocks = [tf.constant(True)] * len(self.hidden.kernel_blocks)
            return (
                lambda: self.aggregated_call(
                    x, [ops.stack(m) for m in masks], training=True
                ),
                [t for m in masks for t in m] + blocks,
            )
        if self.sampler.per_example:
            assignment = self.sampler.sample_examples(self, tf.shape(x)[0])
            return (
                lambda: self.per_example_call(x, assignment, training=True),
                self._trained_by(assignment),
            )
        path = self.sampler.sample(self)
        if self.sampler.draws_paths:
            self._assign_path(path)
        return (
            lambda: self(x, training=True),
            self._trained_by(ops.reshape(path, (1,))),
        )

    def _masked_step(self, x, y, sample_weight, distributed):
        forward, trained = self._step_plan(x)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            y_pred = forward()
            loss = self._loss(x, y, y_pred, sample_weight)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        if distributed:
            self._apply_restoring(gradients, variables, trained)
        else:
            self._apply_masked(gradients, variables, trained)
        return y_pred, loss

    def dropout_masks(self):
        """Per layer, which candidates path dropout keeps for one batch.

        Each candidate is dropped with probability `path_dropout_rate`;
        where a layer would lose all, one random candidate is kept.
        """
        masks = []
        for layer in self.supernet_layers:
            n = layer.num_branches
            keep = keras.random.uniform(
                (n,), seed=self.seed_generator
            ) >= self.path_dropout_rate
            fallback = ops.one_hot(
                keras.random.randint(
                    (), 0, n, dtype="int32", seed=self.seed_generator
                ),
                n,
                dtype="bool",
            )
            masks.append(
                [ops.where(ops.any(keep), keep, fallback)[k] for k in range(n)]
            )
        return masks

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        # Under tf.distribute the optimizer's cross-replica update cannot run
        # inside control flow: every variable is updated, and what the step
        # did not train is restored.
        distributed = tf.distribute.has_strategy()
        trains_one_path = not self.sampler.per_example and not (
            self.aggregation is not None and self.sampler.draws_paths
        )
        if trains_one_path and not distributed:
            y_pred, loss = self._single_path_step(x, y, sample_weight)
        else:
            y_pred, loss = self._masked_step(
                x, y, sample_weight, distributed
            )
        # compute_loss divides by the replica count under tf.distribute.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(
                    loss * ops.cast(replicas, loss.dtype),
                    sample_weight=ops.shape(x)[0],
                )
        return self.compute_metrics(x, y, y_pred, sample_weight)

    # === Serialization ===

    # Keras saves no SeedGenerator state. Without it, a run resumed from
    # saved weights would draw other paths than the uninterrupted run.
    _SEED_STATE_KEY = "path_seed_generator_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._SEED_STATE_KEY] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = set(store.keys())
        if self._SEED_STATE_KEY in keys:
            self.seed_generator.state.assign(store[self._SEED_STATE_KEY])
        own = self._trainable_variables + self._non_trainable_variables
        if len(keys - {self._SEED_STATE_KEY}) != len(own):
            raise ValueError(
                f"Supernet '{self.name}' expected {len(own)} saved "
                f"variables of its own. Received keys {sorted(keys)}."
            )
        for i, variable in enumerate(own):
            variable.assign(store[f"{i}"])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_sizes": [list(s) for s in self.kernel_sizes],
                "filters": list(self.filters),
                "hidden_units": self.hidden_units,
                "num_classes": self.num_classes,
                "input_shape": list(self.image_shape),
                "padding": self.padding,
                "sampling": self.sampler.name,
                "aggregation": self.aggregation,
                "path_dropout": self.path_dropout,
                "branch_learning_rates": {
                    f"{k}x{k}": v
                    for k, v in sorted(self.branch_learning_rates.items())
                },
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class PathDropoutSchedule(keras.callbacks.Callback):
    """Ramps a supernet's path dropout rate linearly over training.

    The rate goes from 0 in the first epoch to the supernet's `path_dropout`
    at epoch `ramp_epochs` and stays there, as in Bender et al. (2018).

    Args:
        ramp_epochs: Positive int, the epochs the ramp takes.
    """

    def __init__(self, ramp_epochs):
        super().__init__()
        self.ramp_epochs = _validate_positive_int(ramp_epochs, "ramp_epochs")

    def on_epoch_begin(self, epoch, logs=None):
        if self.model.aggregation is None:
            raise ValueError(
                "PathDropoutSchedule needs a supernet with an aggregation. "
                "Received aggregation=None."
            )
        fraction = min(1.0, epoch / self.ramp_epochs)
        self.model.path_dropout_rate.assign(self.model.path_dropout * fraction)
