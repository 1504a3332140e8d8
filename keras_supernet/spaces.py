"""The search space as a value: choices, candidate labels, path indices.

A `SearchSpace` knows nothing of Keras. It is what a supernet, a sampler, a
run folder, a search and a report need to agree on: the choices in graph
order, each with the labels of its candidates, and the numbering of paths.

A path picks one candidate per choice. It can be written as

- its index: an int in `[0, num_paths)`, in `itertools.product` order of the
  choices (the last choice varies fastest), so the report's space numbers
  its paths `0=3x3->3x3, 1=3x3->5x5, 2=5x5->3x3, 3=5x5->5x5`;
- its candidate indices: a tuple with one int per choice, `(1, 0)`;
- its labels: a tuple of strings, `("5x5", "3x3")`, or one string,
  `"5x5->3x3"` (`,` and `;` also separate; a bare number `5` stands for a
  label `5x5`, the report's shorthand for kernel sizes; a string of digits
  alone is an index).

Path indices are Python ints of any size (a space of 4**20 or 10**21 paths
is fine); nothing here ever lists the paths of a large space.

Example:

>>> space = SearchSpace([("layer_0", ("3x3", "5x5")), ("layer_1", ("3x3", "5x5"))])
>>> space.num_paths
4
>>> space.resolve("5x5->3x3")
(1, 0)
>>> space.index((1, 0)), space.label(2)
(2, '5x5->3x3')
"""

import itertools
import math
import re

import numpy as np

from keras_supernet import validation

# Separators between the per-choice parts of a path written as one string.
_SEPARATORS = re.compile(r"\s*(?:->|,|;)\s*")
_KERNEL_SHORTHAND = re.compile(r"(\d+)")


class SearchSpace:
    """The choices of a supernet and the numbering of its paths.

    Args:
        choices: a sequence of `(name, labels)` pairs in graph order: `name`
            a non-empty string unique among the choices, `labels` a
            non-empty sequence of distinct non-empty strings, one per
            candidate.

    Raises:
        ValueError: if a name or label is missing, empty or repeated.
    """

    def __init__(self, choices):
        try:
            pairs = [(name, tuple(labels)) for name, labels in choices]
        except (TypeError, ValueError):
            raise ValueError(
                "Invalid value for argument `choices`. Expected a sequence of "
                f"(name, labels) pairs. Received choices={choices!r}."
            ) from None
        if not pairs:
            raise ValueError(
                "Invalid value for argument `choices`. Expected at least one "
                f"choice. Received choices={choices!r}."
            )
        names = [name for name, _ in pairs]
        for name, labels in pairs:
            if not isinstance(name, str) or not name:
                raise ValueError(
                    "Invalid value for argument `choices`. Expected non-empty "
                    f"string names. Received name={name!r}."
                )
            if (
                not labels
                or any(not isinstance(label, str) or not label for label in labels)
                or len(set(labels)) != len(labels)
            ):
                raise ValueError(
                    f"Invalid labels of choice '{name}'. Expected distinct "
                    f"non-empty strings. Received labels={list(labels)!r}."
                )
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                "Invalid value for argument `choices`. Expected unique choice "
                f"names. Received the name(s) {repeated} more than once."
            )
        self._names = tuple(names)
        self._labels = tuple(labels for _, labels in pairs)
        self._counts = tuple(len(labels) for labels in self._labels)
        # Row-major strides: the last choice varies fastest, as in
        # itertools.product.
        self._strides = tuple(
            math.prod(self._counts[i + 1 :]) for i in range(len(self._counts))
        )
        self._num_paths = math.prod(self._counts)

    # === Description ===

    @property
    def choice_names(self):
        """The choices' names, in graph order."""
        return self._names

    @property
    def candidate_labels(self):
        """Per choice, the labels of its candidates."""
        return self._labels

    @property
    def candidate_counts(self):
        """Per choice, its number of candidates."""
        return self._counts

    @property
    def num_choices(self):
        return len(self._names)

    @property
    def num_candidates(self):
        """The number of candidates over all choices (what a per-choice
        training step grows with)."""
        return sum(self._counts)

    @property
    def num_paths(self):
        """The number of paths, a Python int of any size."""
        return self._num_paths

    @property
    def strides(self):
        """Per choice, how much its candidate index weighs in a path index."""
        return self._strides

    def describe(self):
        """One line: `"20 choices, 80 candidates, 1.1e+12 paths"`."""
        paths = (
            f"{self._num_paths:,}"
            if self._num_paths < 10**7
            else f"{self._num_paths:.2e}"
        )
        return (
            f"{self.num_choices} choices, {self.num_candidates} candidates, "
            f"{paths} paths"
        )

    # === Paths ===

    def index(self, path):
        """The index of `path` (any spelling, see the module docstring)."""
        return sum(i * s for i, s in zip(self.resolve(path), self._strides))

    def indices(self, path):
        """The per-choice candidate indices of `path` (any spelling)."""
        return self.resolve(path)

    def label(self, path):
        """The label of `path`: candidate labels joined by `->`."""
        return "->".join(
            labels[i] for labels, i in zip(self._labels, self.resolve(path))
        )

    def candidate_index(self, choice, label):
        """The index of the candidate `label` of choice `choice` (a name or
        a position); `None` where no candidate has that label."""
        position = self._names.index(choice) if isinstance(choice, str) else choice
        labels = self._labels[position]
        if label in labels:
            return labels.index(label)
        match = _KERNEL_SHORTHAND.fullmatch(label)
        if match and f"{label}x{label}" in labels:
            return labels.index(f"{label}x{label}")
        return None

    def canonical_label(self, label):
        """`label` as a candidate label of this space (`5` -> `"5x5"`), or
        None where no choice has such a candidate."""
        for position in range(self.num_choices):
            index = self.candidate_index(position, str(label).strip())
            if index is not None:
                return self._labels[position][index]
        return None

    def resolve(self, path):
        """`path` as a tuple of per-choice candidate indices.

        Args:
            path: an index, a tuple or list of candidate indices or labels,
                or a string (labels joined by `->`, `,` or `;`, or digits
                alone for an index).

        Raises:
            ValueError: if `path` names no path of this space; the message
                says what was wrong and how paths are written.
        """
        if isinstance(path, (int, np.integer)) and not isinstance(path, bool):
            index = int(path)
            if not 0 <= index < self._num_paths:
                raise ValueError(
                    f"Unknown path {path!r}: path indices go from 0 to "
                    f"{self._num_paths - 1}. {self._hint()}"
                )
            return tuple(
                (index // stride) % count
                for stride, count in zip(self._strides, self._counts)
            )
        if isinstance(path, str):
            text = path.strip()
            if text.isdigit():
                return self.resolve(int(text))
            parts = [p for p in _SEPARATORS.split(text) if p]
            return self._resolve_parts(path, parts)
        if isinstance(path, (tuple, list)):
            return self._resolve_parts(path, list(path))
        raise ValueError(
            f"Unknown path {path!r}: expected an index, a tuple of candidate "
            f"indices or labels, or a string. {self._hint()}"
        )

    def _resolve_parts(self, path, parts):
        if len(parts) != self.num_choices:
            raise ValueError(
                f"Unknown path {path!r}: expected one candidate per choice "
                f"({self.num_choices}), received {len(parts)}. {self._hint()}"
            )
        indices = []
        for position, (part, count) in enumerate(zip(parts, self._counts)):
            if isinstance(part, (int, np.integer)) and not isinstance(part, bool):
                index = int(part) if 0 <= part < count else None
            elif isinstance(part, str):
                index = self.candidate_index(position, part.strip())
            else:
                index = None
            if index is None:
                raise ValueError(
                    f"Unknown path {path!r}: choice '{self._names[position]}' "
                    f"has no candidate {part!r} (its candidates: "
                    f"{', '.join(f'{i}={label}' for i, label in enumerate(self._labels[position]))}; "
                    f"ints are candidate indices, strings labels). {self._hint()}"
                )
            indices.append(index)
        return tuple(indices)

    def _hint(self):
        if self._num_paths <= 16:
            valid = ", ".join(f"{i}={self.label(i)}" for i in range(self._num_paths))
            return f"Valid paths: {valid}."
        return (
            f"The space has {self.describe()}; write a path as its index, "
            "one candidate index per choice, or labels joined by '->'."
        )

    def neighbours(self, path):
        """The indices of the paths that differ from `path` in one choice,
        choice by choice, then candidate by candidate (a fixed order, so
        that a seeded draw among them is reproducible): the moves of a
        mutation or of a local search."""
        choice = self.resolve(path)
        index = self.index(choice)
        return [
            index + (k - current) * stride
            for current, count, stride in zip(choice, self._counts, self._strides)
            for k in range(count)
            if k != current
        ]

    def paths(self):
        """Iterates over every path's candidate indices, in index order."""
        return itertools.product(*(range(c) for c in self._counts))

    def sample(self, rng, size=None):
        """Uniformly drawn paths as candidate indices (`numpy` RNG).

        Args:
            rng: a `numpy.random.Generator`.
            size: None for one path (a tuple), or a count (a list of tuples).
        """
        count = 1 if size is None else size
        draws = np.stack([rng.integers(0, c, size=count) for c in self._counts], axis=1)
        paths = [tuple(int(i) for i in row) for row in draws]
        return paths[0] if size is None else paths

    def sample_distinct(self, count, seed):
        """`count` distinct path indices drawn uniformly, in draw order (the
        same for the same seed); every index, in order, if `count` covers
        the space."""
        if count >= self.num_paths:
            return list(range(self.num_paths))
        rng = np.random.default_rng(seed)
        drawn, seen = [], set()
        while len(drawn) < count:
            index = self.index(self.sample(rng))
            if index not in seen:
                seen.add(index)
                drawn.append(index)
        return drawn

    # === Config ===

    def get_config(self):
        return {
            "choices": [
                {"name": name, "labels": list(labels)}
                for name, labels in zip(self._names, self._labels)
            ]
        }

    @classmethod
    def from_config(cls, config):
        try:
            choices = [(c["name"], c["labels"]) for c in config["choices"]]
        except (KeyError, TypeError) as e:
            raise ValueError(
                "Invalid search space config. Expected {'choices': [{'name': "
                "..., 'labels': [...]}, ...]}. "
                f"Received {config!r}."
            ) from e
        return cls(choices)

    def __eq__(self, other):
        return (
            isinstance(other, SearchSpace)
            and self._names == other._names
            and self._labels == other._labels
        )

    def __hash__(self):
        return hash((self._names, self._labels))

    def __repr__(self):
        return f"SearchSpace({self.describe()})"


def check_path_count(space, limit, what):
    """Raises unless `space` has at most `limit` paths, for work that
    visits every path (`what` says which)."""
    validation.positive_int("limit", limit)
    if space.num_paths > limit:
        raise ValueError(
            f"{what} visits every path, and the space has {space.describe()} "
            f"(more than {limit:,})."
        )
