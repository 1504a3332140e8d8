"""Argument checks shared by every module (as Keras's `argument_validation`).

Each check returns the value in canonical form or raises a `ValueError` in
Keras's style: it names the argument in backticks, says what was expected,
and echoes what was received.
"""

import math
import os

import numpy as np


def _error(name, expected, value):
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. "
        f"Received {name}={value!r}."
    )


def is_int(value):
    """True for ints (numpy's included), False for bools and the rest."""
    return isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def is_number(value):
    """True for ints and floats (numpy's included), False for bools."""
    return is_int(value) or (isinstance(value, (float, np.floating)))


def positive_int(name, value, allow_none=False):
    """`value` as an int > 0 (or None where allowed)."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value <= 0:
        raise _error(name, "a positive integer", value)
    return int(value)


def non_negative_int(name, value, allow_none=False):
    """`value` as an int >= 0 (or None where allowed)."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 0:
        raise _error(name, "a non-negative integer", value)
    return int(value)


def positive_ints(name, values, distinct=False, allow_empty=False):
    """`values` as a tuple of ints > 0 (distinct where asked)."""
    try:
        items = tuple(values)
    except TypeError:
        items = None
    if (
        items is None
        or (not items and not allow_empty)
        or any(not is_int(v) or v <= 0 for v in items)
        or (distinct and len(set(items)) != len(items))
    ):
        expected = (
            "a non-empty sequence of "
            + ("distinct " if distinct else "")
            + "strictly positive integers"
        )
        raise _error(name, expected, values)
    return tuple(int(v) for v in items)


def finite_float(name, value, low=None, high=None, low_open=False, high_open=False):
    """`value` as a finite float within the given bounds.

    Non-finite values (`inf`, `nan`) are always refused: a learning rate of
    `inf` trains on NaN losses.
    """
    ok = is_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        if low is not None and high is not None:
            expected = (
                f"a finite number in {'(' if low_open else '['}{low:g}, "
                f"{high:g}{')' if high_open else ']'}"
            )
        elif low is not None:
            expected = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            expected = "a finite number"
        raise _error(name, expected, value)
    return float(value)


def positive_float(name, value):
    """`value` as a finite float > 0."""
    if not (is_number(value) and math.isfinite(float(value)) and value > 0):
        raise _error(name, "a positive finite number", value)
    return float(value)


def one_of(name, value, choices, allow_none=False):
    """`value` if it is one of `choices` (or None where allowed)."""
    if value is None and allow_none:
        return None
    if value not in choices:
        expected = f"one of {tuple(choices)}" + (" or None" if allow_none else "")
        raise _error(name, expected, value)
    return value


def distinct_choices(name, values, choices):
    """`values` (one name or a sequence) as a list of distinct names among
    `choices`, in the order given."""
    items = [values] if isinstance(values, str) else list(values)
    if (
        not items
        or any(v not in choices for v in items)
        or len(set(items)) != len(items)
    ):
        raise _error(name, f"distinct names among {', '.join(choices)}", items)
    return items


_RELATIONS = {
    "<": ("fewer than", lambda a, b: a < b),
    "<=": ("at most", lambda a, b: a <= b),
    ">": ("more than", lambda a, b: a > b),
}


def compared(name, value, relation, bound_name, bound):
    """`value` if `value <relation> bound` (`"<"`, `"<="` or `">"`), where
    `bound` is another argument's value (named in the message)."""
    words, holds = _RELATIONS[relation]
    if not holds(value, bound):
        raise _error(name, f"{words} {bound_name}={bound!r}", value)
    return value


def seeds(name, values):
    """`values` (an int or a sequence) as a tuple of distinct ints >= 0."""
    if is_int(values):
        values = (values,)
    try:
        items = tuple(values)
    except TypeError:
        items = None
    if (
        not items
        or any(not is_int(s) or s < 0 for s in items)
        or len(set(items)) != len(items)
    ):
        raise _error(name, "distinct non-negative integers", values)
    return tuple(int(s) for s in items)


def shard(value):
    """None, or `(i, n)` with `0 <= i < n`."""
    if value is None:
        return None
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and all(is_int(v) for v in value)
        and 0 <= value[0] < value[1]
    ):
        raise _error("shard", "None or (i, n) with 0 <= i < n", value)
    return int(value[0]), int(value[1])


def output_dir(name, value):
    """`value` as a folder path that is a folder or does not exist yet."""
    if not value:
        raise _error(name, "a folder path", value)
    path = os.fspath(value)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a folder. "
            f"Received {name}={path!r}, which is a file."
        )
    return path


def labelled_batch(name, batch):
    """`(x, y)` of a batch of training images and labels, or raises."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected `(x, y)` batches "
            "of training images and labels. Received a batch of type "
            f"{type(batch).__name__}."
        )
    return batch[0], batch[1]
