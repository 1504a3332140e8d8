import itertools
import json
import sys

import numpy as np
import pytest

from keras_supernet.spaces import SearchSpace

REPORT = SearchSpace([("layer_0", ("3x3", "5x5")), ("layer_1", ("3x3", "5x5"))])


def test_the_space_module_does_not_need_keras():
    # Every module that needs the space without a model (run folders,
    # reports, search) can read it cheaply.
    source = open(sys.modules[SearchSpace.__module__].__file__).read()
    assert "import keras" not in source and "import tensorflow" not in source


def test_paths_are_numbered_in_product_order():
    space = SearchSpace([("a", ("x", "y", "z")), ("b", ("p", "q"))])
    assert space.num_paths == 6 and space.strides == (2, 1)
    assert list(space.paths()) == list(itertools.product(range(3), range(2)))
    for index, indices in enumerate(space.paths()):
        assert space.index(indices) == index
        assert space.resolve(index) == indices
    assert space.label(3) == "y->q"


@pytest.mark.parametrize(
    "path",
    [
        2,
        np.int64(2),
        "2",
        (1, 0),
        [1, 0],
        ("5x5", "3x3"),
        ("5x5", 0),
        "5x5->3x3",
        "5x5,3x3",
        "5,3",
        " 5x5 ; 3x3 ",
    ],
)
def test_every_spelling_of_a_path(path):
    assert REPORT.resolve(path) == (1, 0)
    assert REPORT.index(path) == 2


@pytest.mark.parametrize(
    "path, message",
    [
        (4, "indices go from 0 to 3"),
        (-1, "indices go from 0 to 3"),
        ((5, 3), "no candidate 5"),
        ("7x7->3x3", "no candidate '7x7'"),
        ("3x3", "one candidate per choice"),
        ((1, 0, 1), "one candidate per choice"),
        (1.5, "expected an index"),
        (True, "expected an index"),
    ],
)
def test_unknown_paths_say_what_is_wrong(path, message):
    with pytest.raises(ValueError, match=message):
        REPORT.resolve(path)


def test_a_space_of_ten_to_the_twenty_one_paths():
    space = SearchSpace(
        [
            (f"c{i}", ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"))
            for i in range(21)
        ]
    )
    assert space.num_paths == 10**21
    last = space.num_paths - 1
    assert space.resolve(last) == (9,) * 21
    assert space.index((9,) * 21) == last
    assert space.label(10**20) == "b->" + "->".join("a" * 20)
    assert "1.00e+21 paths" in space.describe()
    with pytest.raises(ValueError, match="write a path as its index"):
        space.resolve(10**21)
    paths = space.sample(np.random.default_rng(0), size=5)
    assert len(paths) == 5 and all(len(p) == 21 for p in paths)
    assert paths == space.sample(np.random.default_rng(0), size=5)


def test_uniform_samples_cover_every_candidate():
    paths = REPORT.sample(np.random.default_rng(1), size=400)
    counts = np.bincount([REPORT.index(p) for p in paths], minlength=4)
    assert counts.min() > 70


def test_distinct_samples_are_seeded_and_never_repeat():
    space = SearchSpace([("a", ("x", "y", "z")), ("b", ("x", "y", "z"))])
    drawn = space.sample_distinct(8, seed=3)
    assert len(set(drawn)) == 8 and all(0 <= p < 9 for p in drawn)
    assert drawn == space.sample_distinct(8, seed=3)
    assert drawn != space.sample_distinct(8, seed=4)
    # A count that covers the space gives every path, in order.
    assert space.sample_distinct(9, seed=3) == list(range(9))
    assert space.sample_distinct(50, seed=3) == list(range(9))


def test_neighbours_differ_in_one_choice_in_a_fixed_order():
    space = SearchSpace([("a", ("x", "y", "z")), ("b", ("p", "q"))])
    # Path 3 is y->q: a changes to x or z, then b to p.
    assert space.neighbours(3) == [1, 5, 2]
    assert space.neighbours("y->q") == space.neighbours((1, 1)) == [1, 5, 2]
    for index, indices in enumerate(space.paths()):
        expected = [
            p
            for p, other in enumerate(space.paths())
            if sum(i != j for i, j in zip(indices, other)) == 1
        ]
        assert sorted(space.neighbours(index)) == expected


def test_config_round_trip():
    config = json.loads(json.dumps(REPORT.get_config()))
    assert SearchSpace.from_config(config) == REPORT
    assert hash(SearchSpace.from_config(config)) == hash(REPORT)


@pytest.mark.parametrize(
    "choices, message",
    [
        ([], "at least one choice"),
        (None, "sequence of"),
        ([("a", ())], "labels of choice 'a'"),
        ([("a", ("x", "x"))], "labels of choice 'a'"),
        ([("a", ("x", ""))], "labels of choice 'a'"),
        ([("", ("x",))], "non-empty"),
        ([("a", ("x",)), ("a", ("y",))], "unique choice names"),
    ],
)
def test_bad_spaces(choices, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(choices)


def test_bad_config():
    with pytest.raises(ValueError, match="Invalid search space config"):
        SearchSpace.from_config({"layers": []})
