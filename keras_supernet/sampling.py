"""Path samplers: which paths of a supernet a training step trains.

Per-batch samplers (`uniform`, `fixed`, `adaptive`) return the index of one
path for the whole batch. Per-example samplers (`per_example`, `fair`)
return one path index per example. Random samplers draw from the supernet's
`seed_generator`, so the same seed gives the same sequence of paths, and the
generator's state is saved with the weights.
"""

import keras
import numpy as np
from keras import ops


class PathSampler:
    """Base class of path samplers.

    Subclasses set `name` and implement `sample(supernet)`, which returns
    the index of the path to train as an int32 scalar tensor, or, where
    `per_example` is True, `sample_examples(supernet, batch_size)`, which
    returns an int32 vector with one path index per example. `draws_paths`
    is False where the sampler trains the active path.
    """

    name = None
    draws_paths = True
    per_example = False

    def sample(self, supernet):
        raise NotImplementedError

    def sample_examples(self, supernet, batch_size):
        raise NotImplementedError

    def validate(self, supernet):
        """Raises ValueError if the sampler cannot train `supernet`."""

    def __repr__(self):
        return f"{self.__class__.__name__}()"


class UniformSampler(PathSampler):
    """Draws one path per batch, every path with the same probability.

    The report's method.
    """

    name = "uniform"

    def sample(self, supernet):
        return keras.random.randint(
            (), 0, supernet.num_paths, dtype="int32",
            seed=supernet.seed_generator,
        )


class FixedSampler(PathSampler):
    """Trains the active path only: standalone training of one path."""

    name = "fixed"
    draws_paths = False

    def sample(self, supernet):
        return supernet.active_path_index()


class PerExampleSampler(PathSampler):
    """Draws a path for every example of a batch, uniformly.

    Each example runs through its own path only; a candidate that no example
    of the batch used keeps its weights and optimizer state.
    """

    name = "per_example"
    per_example = True

    def sample_examples(self, supernet, batch_size):
        return keras.random.randint(
            (batch_size,), 0, supernet.num_paths, dtype="int32",
            seed=supernet.seed_generator,
        )


class FairSampler(PathSampler):
    """Strict fairness (FairNAS, Chu et al. 2019).

    Every step trains `m` single paths, `m` being the number of candidates
    per layer, on `m` equal slices of the batch. The paths come from one
    random permutation of the candidates per layer, so every candidate of
    every layer is trained exactly once per step (given a batch of at least
    `m` examples). The slices' gradients are summed into one update.
    """

    name = "fair"
    per_example = True

    def validate(self, supernet):
        counts = {len(sizes) for sizes in supernet.kernel_sizes}
        if len(counts) > 1:
            raise ValueError(
                "Invalid value for argument `sampling`: sampling='fair' needs "
                "the same number of candidates in every layer. Received "
                f"kernel_sizes={supernet.kernel_sizes!r}."
            )

    def sample_examples(self, supernet, batch_size):
        m = len(supernet.kernel_sizes[0])
        slice_paths = ops.zeros((m,), dtype="int32")
        for stride in supernet.path_strides:
            permutation = keras.random.shuffle(
                ops.arange(m, dtype="int32"), seed=supernet.seed_generator
            )
            slice_paths = slice_paths + permutation * stride
        example_slice = (ops.arange(batch_size, dtype="int32") * m) // (
            batch_size
        )
        return ops.take(slice_paths, example_slice)


class AdaptiveSampler(PathSampler):
    """Non-uniform per-batch sampling driven by per-path validation loss.

    After every epoch, `update(supernet, losses)` sets each path's
    probability from how far its recent validation loss lies above the best
    path's: paths that lag behind are trained more, so that the paths reach
    their peaks closer together. A share `floor` of the probability mass is
    spread uniformly, so no path starves.

    Args:
        floor: Float in (0, 1], the uniform share of the probability mass.
            Every path keeps a probability of at least `floor / num_paths`.
    """

    name = "adaptive"

    def __init__(self, floor=0.5):
        if not 0 < floor <= 1:
            raise ValueError(
                "Invalid value for argument `floor`. Expected a float in "
                f"(0, 1]. Received floor={floor!r}."
            )
        self.floor = floor

    def sample(self, supernet):
        logits = ops.log(ops.expand_dims(supernet.path_probabilities, 0))
        draw = keras.random.categorical(
            logits, 1, dtype="int32", seed=supernet.seed_generator
        )
        return ops.reshape(draw, ())

    def probabilities(self, losses):
        """Path probabilities for per-path validation losses."""
        losses = np.asarray(losses, dtype="float64")
        if losses.ndim != 1 or not np.all(np.isfinite(losses)):
            raise ValueError(
                "Invalid value for argument `losses`. Expected one finite "
                f"loss per path. Received losses={losses.tolist()!r}."
            )
        gaps = losses - losses.min()
        share = (
            gaps / gaps.sum()
            if gaps.sum() > 0
            else np.full(len(losses), 1 / len(losses))
        )
        return self.floor / len(losses) + (1 - self.floor) * share

    def update(self, supernet, losses):
        """Sets the supernet's path probabilities from `losses`."""
        if len(losses) != supernet.num_paths:
            raise ValueError(
                f"Expected {supernet.num_paths} losses, one per path. "
                f"Received {len(losses)}."
            )
        probabilities = self.probabilities(losses)
        supernet.path_probabilities.assign(probabilities.astype("float32"))
        return probabilities

    def __repr__(self):
        return f"AdaptiveSampler(floor={self.floor})"


_SAMPLERS = {
    cls.name: cls
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
    """Returns the sampler named `identifier` (or `identifier` itself).

    Raises:
        ValueError: if no sampler has that name.
    """
    if isinstance(identifier, PathSampler):
        return identifier
    if isinstance(identifier, str) and identifier in _SAMPLERS:
        return _SAMPLERS[identifier]()
    raise ValueError(
        "Invalid value for argument `sampling`. Expected one of "
        f"{list(SAMPLING_NAMES)}. Received sampling={identifier!r}."
    )


class AdaptiveSamplingCallback(keras.callbacks.Callback):
    """Updates an adaptive supernet's path probabilities after every epoch.

    Evaluates every path on `validation_data` and passes the losses to the
    supernet's `AdaptiveSampler`. The active path is restored afterwards.

    Args:
        validation_data: A dataset of `(x, y)` batches.
    """

    def __init__(self, validation_data):
        super().__init__()
        self.validation_data = validation_data

    def on_epoch_end(self, epoch, logs=None):
        supernet = self.model
        active = supernet.active_path
        losses = []
        for path in range(supernet.num_paths):
            supernet.set_path(path)
            result = supernet.evaluate(
                self.validation_data, verbose=0, return_dict=True
            )
            losses.append(result["loss"])
        supernet.set_path(active)
        supernet.update_sampling(losses)
