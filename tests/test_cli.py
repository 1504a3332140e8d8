"""The flag parsing of the bin/ entry points (bin/_cli.py)."""

import os
import sys

import pytest

from keras_supernet import data
from keras_supernet import distribute
from keras_supernet import sampling

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bin"))
import _cli  # noqa: E402


def test_parse_paths():
    assert _cli.parse_paths("") is None
    assert _cli.parse_paths("0,2") == [0, 2]
    assert _cli.parse_paths("5x5,3x3") == ["5x5,3x3"]
    assert _cli.parse_paths("5x5,3x3;3x3,3x3") == ["5x5,3x3", "3x3,3x3"]
    assert _cli.parse_paths("1;5x5,5x5") == [1, "5x5,5x5"]
    assert _cli.parse_paths("conv3x3->skip;0") == ["conv3x3->skip", 0]


def test_parse_eval_paths():
    assert _cli.parse_eval_paths("") is None
    assert _cli.parse_eval_paths("16") == 16
    assert _cli.parse_eval_paths("0,5") == [0, 5]
    assert _cli.parse_eval_paths("a->b;c->d") == ["a->b", "c->d"]


def test_parse_kernel_sizes_and_lists():
    assert _cli.parse_kernel_sizes("3,5;3,5") == ((3, 5), (3, 5))
    assert _cli.parse_kernel_sizes("3;3,5,7") == ((3,), (3, 5, 7))
    for bad in ("3,5;;3", "a,b"):
        with pytest.raises(ValueError, match="`kernel_sizes`"):
            _cli.parse_kernel_sizes(bad)
    assert _cli.parse_int_list("seeds", "0, 1,2") == (0, 1, 2)
    assert _cli.parse_int_list("seeds", ["0", "1"]) == (0, 1)
    with pytest.raises(ValueError, match=r"`seeds`.*Received seeds='x'"):
        _cli.parse_int_list("seeds", "x")


def test_parse_branch_learning_rates_and_shards():
    assert _cli.parse_branch_learning_rates("") is None
    assert _cli.parse_branch_learning_rates("3x3:1,sep5x5:0.5") == {
        "3x3": 1.0,
        "sep5x5": 0.5,
    }
    for bad in ("3x3", "3x3:inf", ":1"):
        with pytest.raises(ValueError, match="`branch_lr`"):
            _cli.parse_branch_learning_rates(bad)
    assert _cli.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(ValueError, match="`shard`"):
            _cli.parse_shard(bad)


def test_flag_choices_follow_the_library():
    # The CLIs define their enums without importing the library (fast
    # --help); these are the library's names.
    assert set(_cli.SAMPLINGS) == set(sampling.SAMPLING_NAMES) - {"fixed"}
    assert _cli.DATASETS == data.DATASETS
    assert _cli.STRATEGIES == distribute.STRATEGIES
    from keras_supernet import search

    assert _cli.SEARCH_STRATEGIES == search.STRATEGIES
    from keras_supernet import layers

    assert _cli.AGGREGATIONS == ("none",) + layers.AGGREGATIONS
