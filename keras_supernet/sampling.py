"""Path samplers: which paths of a supernet a training step trains.

A sampler owns everything about sampling: its random state (a seeded
`keras.random.SeedGenerator`, saved with the weights so that a resumed run
draws the same paths), its variables (adaptive probabilities, the path
dropout rate), its compatibility checks, and its updates. It works on the
supernet's `SearchSpace` without ever listing the paths, so a space of
10**12 paths samples as cheaply as one of 4.

Each step, `draw(batch_size, active)` returns a `Draw`:

- `indices`: one candidate per choice for the whole batch (`uniform`,
  `fixed`, `adaptive`);
- `examples`: one candidate per choice and example, `[batch, choices]`
  (`per_example`, `fair`);
- `masks`: for choices that aggregate candidates, which candidates run
  (`uniform` with path dropout).

| strategy | a training step |
|---|---|
| `uniform` | one path drawn uniformly for the whole batch (the report's method) |
| `fixed` | the active path only: standalone training |
| `per_example` | every example draws its own path |
| `fair` | FairNAS strict fairness: `m` slices, every candidate of every choice trained once per step |
| `adaptive` | one path per batch; each choice draws its candidates with probabilities set from validation losses |

Samplers are Keras layers only so that Keras tracks, saves and serializes
their state; they are not part of the supernet's graph.
"""

import keras
import numpy as np
from keras import ops

from keras_supernet import validation

# A path index drawn in one piece must fit in int32.
_INT32_PATHS = 2**31 - 1


def derived_seed(seed, *keys):
    """A 31-bit seed derived from `seed` and `keys`, stable across runs."""
    state = np.random.SeedSequence([int(seed), *map(int, keys)])
    return int(state.generate_state(1)[0]) & 0x7FFFFFFF


class Draw:
    """What one training step trains (see the module docstring).

    Attributes:
        indices: int32 `[choices]` tensor, or None.
        examples: int32 `[batch, choices]` tensor, or None.
        masks: dict from choice position to a bool `[candidates]` tensor,
            for aggregating choices; empty otherwise.
        active: True where `indices` is the supernet's active path (the
            fixed sampler): nothing is assigned.
    """

    def __init__(self, indices=None, examples=None, masks=None, active=False):
        self.indices = indices
        self.examples = examples
        self.masks = masks or {}
        self.active = active


class PathSampler(keras.layers.Layer):
    """Base class of path samplers.

    Subclasses set `strategy` and implement `draw`. `attach` is called once
    by the supernet with its search space; it creates the sampler's state.

    Args:
        **kwargs: Base layer keyword arguments.
    """

    strategy = None
    # Whether the sampler trains a path of its own choosing (False: the
    # active path).
    draws_paths = True
    # Whether a step trains several paths, one per example.
    per_example = False
    # Whether the sampler works with choices that aggregate candidates.
    supports_aggregation = False

    def __init__(self, **kwargs):
        kwargs.setdefault("name", f"{self.strategy}_sampler")
        super().__init__(**kwargs)
        self.space = None
        self.aggregating = ()

    def attach(self, space, aggregating=None, seed=None):
        """Binds the sampler to a search space and creates its state.

        Args:
            space: the supernet's `SearchSpace`.
            aggregating: per choice, whether it aggregates candidates.
            seed: None or a non-negative int; the draws' seed.

        Raises:
            ValueError: if the sampler cannot train this space.
        """
        if self.space is not None:
            raise ValueError(
                f"Sampler '{self.name}' is already attached to a supernet; "
                "give each supernet its own sampler."
            )
        aggregating = tuple(aggregating or (False,) * space.num_choices)
        self.validate(space, aggregating)
        self.space = space
        self.aggregating = aggregating
        self.seed_generator = keras.random.SeedGenerator(
            None if seed is None else derived_seed(seed, 1_000_003),
            name="path_seed_generator",
        )
        self.create_state()
        self.built = True

    def create_state(self):
        """Creates the sampler's variables (called by `attach`)."""

    def validate(self, space, aggregating):
        """Raises ValueError if the sampler cannot train `space`."""
        if any(aggregating) and not self.supports_aggregation:
            raise ValueError(
                f"Invalid value for argument `sampling`: with choices that "
                "aggregate candidates, a step runs several candidates per "
                f"choice; only 'uniform' or 'fixed' apply. Received "
                f"sampling={self.strategy!r}."
            )

    def draw(self, batch_size, active):
        """This step's `Draw`; `active` is the supernet's active path as an
        int32 `[choices]` tensor."""
        raise NotImplementedError

    def update(self, paths, losses):
        """Takes per-path validation losses (adaptive samplers); returns the
        new probabilities, or None where the sampler does not use them."""
        return None

    # === Draw helpers ===

    def _uniform_indices(self, count=None):
        """Uniform paths as candidate indices: `[choices]`, or with `count`
        `[count, choices]`.

        Where a path index fits in int32 it is drawn in one piece and split
        (every path equally likely, the same draws as keras_supernet 0.2.0);
        otherwise each choice draws its candidate.
        """
        space = self.space
        shape = () if count is None else (count,)
        if space.num_paths <= _INT32_PATHS:
            index = keras.random.randint(
                shape,
                0,
                space.num_paths,
                dtype="int32",
                seed=self.seed_generator,
            )
            parts = [
                (index // stride) % n
                for stride, n in zip(space.strides, space.candidate_counts)
            ]
        else:
            parts = [
                keras.random.randint(
                    shape, 0, n, dtype="int32", seed=self.seed_generator
                )
                for n in space.candidate_counts
            ]
        return ops.stack(parts, axis=-1)

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
                f"Sampler '{self.name}' expected {len(own)} saved variables "
                f"of its own. Received keys {sorted(keys)}."
            )
        for i, variable in enumerate(own):
            variable.assign(store[f"{i}"])

    def __repr__(self):
        config = {
            k: v
            for k, v in self.get_config().items()
            if k not in ("name", "trainable", "dtype")
        }
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{self.__class__.__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_supernet")
class UniformSampler(PathSampler):
    """Draws one path per batch, every path with the same probability.

    The report's method. Choices that aggregate candidates run all of them,
    each dropped for the batch with probability `path_dropout_rate` (at
    least one kept), as in Bender et al. (2018); `PathDropoutSchedule` ramps
    the rate up to `path_dropout`.

    Args:
        path_dropout: Float in [0, 1), the final path dropout rate of
            aggregating choices.
    """

    strategy = "uniform"
    supports_aggregation = True

    def __init__(self, path_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.path_dropout = validation.finite_float(
            "path_dropout", path_dropout, low=0.0, high=1.0, high_open=True
        )

    def create_state(self):
        if any(self.aggregating):
            self.path_dropout_rate = self.add_weight(
                name="path_dropout_rate",
                shape=(),
                initializer=keras.initializers.Constant(self.path_dropout),
                trainable=False,
                aggregation="only_first_replica",
            )

    def dropout_masks(self):
        """Per aggregating choice, which candidates path dropout keeps.

        Each candidate is dropped with probability `path_dropout_rate`;
        where a choice would lose all, one random candidate is kept.
        """
        masks = {}
        for position, (n, aggregating) in enumerate(
            zip(self.space.candidate_counts, self.aggregating)
        ):
            if not aggregating:
                continue
            keep = (
                keras.random.uniform((n,), seed=self.seed_generator)
                >= self.path_dropout_rate
            )
            fallback = ops.one_hot(
                keras.random.randint((), 0, n, dtype="int32", seed=self.seed_generator),
                n,
                dtype="bool",
            )
            masks[position] = ops.where(ops.any(keep), keep, fallback)
        return masks

    def draw(self, batch_size, active):
        if all(self.aggregating):
            return Draw(indices=active, masks=self.dropout_masks(), active=True)
        indices = self._uniform_indices()
        return Draw(indices=indices, masks=self.dropout_masks())

    def get_config(self):
        config = super().get_config()
        config["path_dropout"] = self.path_dropout
        return config


@keras.saving.register_keras_serializable(package="keras_supernet")
class FixedSampler(PathSampler):
    """Trains the active path only: standalone training of one path."""

    strategy = "fixed"
    draws_paths = False
    supports_aggregation = True

    def draw(self, batch_size, active):
        return Draw(indices=active, active=True)


@keras.saving.register_keras_serializable(package="keras_supernet")
class PerExampleSampler(PathSampler):
    """Draws a path for every example of a batch, uniformly.

    Each example runs through its own path only; a candidate that no example
    of the batch used keeps its weights and optimizer state.
    """

    strategy = "per_example"
    per_example = True

    def draw(self, batch_size, active):
        return Draw(examples=self._uniform_indices(batch_size))


@keras.saving.register_keras_serializable(package="keras_supernet")
class FairSampler(PathSampler):
    """Strict fairness (FairNAS, Chu et al. 2019).

    Every step trains `m` single paths, `m` being the number of candidates
    per choice, on `m` equal slices of the batch. The paths come from one
    random permutation of the candidates per choice, so every candidate of
    every choice is trained exactly once per step (given a batch of at least
    `m` examples). The slices' gradients are summed into one update.
    """

    strategy = "fair"
    per_example = True

    def validate(self, space, aggregating):
        super().validate(space, aggregating)
        if len(set(space.candidate_counts)) > 1:
            raise ValueError(
                "Invalid value for argument `sampling`: sampling='fair' needs "
                "the same number of candidates in every choice. Received "
                "candidate counts "
                f"{dict(zip(space.choice_names, space.candidate_counts))}."
            )

    def draw(self, batch_size, active):
        m = self.space.candidate_counts[0]
        example_slice = (ops.arange(batch_size, dtype="int32") * m) // (batch_size)
        columns = []
        for _ in range(self.space.num_choices):
            permutation = keras.random.shuffle(
                ops.arange(m, dtype="int32"), seed=self.seed_generator
            )
            columns.append(ops.take(permutation, example_slice))
        return Draw(examples=ops.stack(columns, axis=-1))


@keras.saving.register_keras_serializable(package="keras_supernet")
class AdaptiveSampler(PathSampler):
    """Per-batch sampling driven by validation losses.

    One path per batch, each choice drawing its candidate from its own
    probabilities. After every epoch, `update(paths, losses)` takes the
    validation losses of some paths (every path of a small space, a sample
    of a large one), gives each candidate the mean loss of the paths through
    it, and sets its probability from how far that mean lies above the best
    candidate's: candidates on lagging paths are trained more, so that paths
    reach their peaks closer together. A share `floor` of each choice's
    probability mass is spread uniformly, so no candidate starves.

    Args:
        floor: Float in (0, 1], the uniform share of the probability mass.
            Every candidate keeps a probability of at least
            `floor / candidates`.
    """

    strategy = "adaptive"

    def __init__(self, floor=0.5, **kwargs):
        super().__init__(**kwargs)
        self.floor = validation.finite_float(
            "floor", floor, low=0.0, high=1.0, low_open=True
        )

    def create_state(self):
        self.probabilities = [
            self.add_weight(
                name=f"probabilities_{position}",
                shape=(n,),
                initializer=keras.initializers.Constant(1.0 / n),
                trainable=False,
                aggregation="only_first_replica",
            )
            for position, n in enumerate(self.space.candidate_counts)
        ]

    def draw(self, batch_size, active):
        parts = []
        for probabilities in self.probabilities:
            logits = ops.log(ops.expand_dims(probabilities, 0))
            draw = keras.random.categorical(
                logits, 1, dtype="int32", seed=self.seed_generator
            )
            parts.append(ops.reshape(draw, ()))
        return Draw(indices=ops.stack(parts))

    def candidate_probabilities(self, paths, losses):
        """Per choice, candidate probabilities for paths' losses.

        Args:
            paths: the paths (anything `SearchSpace.resolve` takes).
            losses: one finite validation loss per path.
        """
        losses = np.asarray(losses, dtype="float64")
        paths = [self.space.resolve(p) for p in paths]
        if (
            losses.ndim != 1
            or len(losses) != len(paths)
            or not len(paths)
            or not np.all(np.isfinite(losses))
        ):
            raise ValueError(
                "Invalid value for argument `losses`. Expected one finite "
                f"loss per path ({len(paths)} paths). Received "
                f"losses={losses.tolist()!r}."
            )
        result = []
        for position, n in enumerate(self.space.candidate_counts):
            means = np.full(n, np.nan)
            for k in range(n):
                mine = [loss for p, loss in zip(paths, losses) if p[position] == k]
                if mine:
                    means[k] = np.mean(mine)
            # A candidate no evaluated path went through gets the worst
            # mean: it is drawn more, not starved.
            means = np.where(np.isnan(means), np.nanmax(means), means)
            gaps = means - means.min()
            share = gaps / gaps.sum() if gaps.sum() > 0 else np.full(n, 1 / n)
            result.append(self.floor / n + (1 - self.floor) * share)
        return result

    def update(self, paths, losses):
        """Sets the candidate probabilities from per-path losses; returns
        them (one array per choice)."""
        result = self.candidate_probabilities(paths, losses)
        for variable, values in zip(self.probabilities, result):
            variable.assign(values.astype("float32"))
        return result

    def path_probability(self, path):
        """The probability of drawing `path` in a step."""
        indices = self.space.resolve(path)
        return float(
            np.prod(
                [
                    ops.convert_to_numpy(p)[k]
                    for p, k in zip(self.probabilities, indices)
                ]
            )
        )

    def get_config(self):
        config = super().get_config()
        config["floor"] = self.floor
        return config


_SAMPLERS = {
    cls.strategy: cls
    for cls in (
        UniformSampler,
        FixedSampler,
        PerExampleSampler,
        FairSampler,
        AdaptiveSampler,
    )
}
SAMPLING_NAMES = tuple(_SAMPLERS)


def get(identifier):
    """A new sampler from a name, a config dict, or a sampler itself.

    Raises:
        ValueError: if no sampler has that name.
    """
    if isinstance(identifier, PathSampler):
        return identifier
    if isinstance(identifier, str) and identifier in _SAMPLERS:
        return _SAMPLERS[identifier]()
    if isinstance(identifier, dict):
        sampler = keras.saving.deserialize_keras_object(identifier)
        if isinstance(sampler, PathSampler):
            return sampler
    raise ValueError(
        "Invalid value for argument `sampling`. Expected one of "
        f"{list(SAMPLING_NAMES)} or a sampler. Received "
        f"sampling={identifier!r}."
    )


# === Callbacks ===


class AdaptiveSamplingCallback(keras.callbacks.Callback):
    """Updates an adaptive supernet's probabilities after every epoch.

    Evaluates `paths` on `validation_data` and passes the losses to the
    supernet's `AdaptiveSampler`. The active path is restored afterwards.

    Args:
        validation_data: A dataset of `(x, y)` batches.
        paths: the paths to evaluate; None for every path of a space of at
            most `max_paths` paths.
        max_paths: Positive int, the most paths evaluated when `paths` is
            None.
    """

    def __init__(self, validation_data, paths=None, max_paths=64):
        super().__init__()
        self.validation_data = validation_data
        self.paths = paths
        self.max_paths = validation.positive_int("max_paths", max_paths)

    def on_epoch_end(self, epoch, logs=None):
        supernet = self.model
        paths = self.paths
        if paths is None:
            from keras_supernet import spaces

            spaces.check_path_count(
                supernet.space, self.max_paths, "AdaptiveSamplingCallback"
            )
            paths = list(range(supernet.num_paths))
        active = supernet.active_indices
        losses = []
        for path in paths:
            supernet.set_path(path)
            result = supernet.evaluate(
                self.validation_data, verbose=0, return_dict=True
            )
            losses.append(result["loss"])
        supernet.set_path(active)
        supernet.update_sampling(paths, losses)


class PathDropoutSchedule(keras.callbacks.Callback):
    """Ramps a supernet's path dropout rate linearly over training.

    The rate goes from 0 in the first epoch to the sampler's `path_dropout`
    at epoch `ramp_epochs` and stays there, as in Bender et al. (2018).

    Args:
        ramp_epochs: Positive int, the epochs the ramp takes.
    """

    def __init__(self, ramp_epochs):
        super().__init__()
        self.ramp_epochs = validation.positive_int("ramp_epochs", ramp_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        sampler = self.model.sampler
        if getattr(sampler, "path_dropout_rate", None) is None:
            raise ValueError(
                "PathDropoutSchedule needs a supernet with aggregating "
                "choices and uniform sampling. Received sampling="
                f"{sampler.strategy!r}."
            )
        fraction = min(1.0, epoch / self.ramp_epochs)
        sampler.path_dropout_rate.assign(sampler.path_dropout * fraction)
