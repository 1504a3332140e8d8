"""Path samplers: which path of a supernet a training step trains.

A sampler turns the supernet's state into the index of the path to train,
as an int32 scalar tensor, inside the compiled train step. Random samplers
draw from the supernet's `seed_generator`, so the same seed gives the same
sequence of paths, and the generator's state is saved with the weights.
"""

import keras


class PathSampler:
    """Base class of path samplers.

    Subclasses set `name` and implement `sample(supernet)`. `draws_paths` is
    True when the sampled path may differ from the active one, in which case
    the supernet makes the sampled path active before training it.
    """

    name = None
    draws_paths = True

    def sample(self, supernet):
        """Returns the index of the path to train as an int32 scalar."""
        raise NotImplementedError

    def __repr__(self):
        return f"{self.__class__.__name__}()"


class UniformSampler(PathSampler):
    """Draws one path per batch, every path with the same probability."""

    name = "uniform"

    def sample(self, supernet):
        return keras.random.randint(
            (),
            0,
            supernet.num_paths,
            dtype="int32",
            seed=supernet.seed_generator,
        )


class FixedSampler(PathSampler):
    """Trains the active path only: standalone training of one path."""

    name = "fixed"
    draws_paths = False

    def sample(self, supernet):
        return supernet.active_path_index()


_SAMPLERS = {cls.name: cls for cls in (UniformSampler, FixedSampler)}


def get(identifier):
    """Returns the sampler named `identifier` (or `identifier` itself).

    Raises:
        ValueError: if no sampler has that name.
    """
    if isinstance(identifier, PathSampler):
        return identifier
    if identifier in _SAMPLERS:
        return _SAMPLERS[identifier]()
    raise ValueError(
        "Invalid value for argument `sampling`. Expected one of "
        f"{sorted(_SAMPLERS)}. Received sampling={identifier!r}."
    )
