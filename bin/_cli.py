"""Shared start-up and flag parsing of the bin/ entry points (importable as
`_cli`, since a script's own folder is first on sys.path).

Nothing here imports TensorFlow or keras_supernet at module level, so that
flags are parsed (and `--help` answers) at once.
"""

import math
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Flag choices that mirror the library's constants (kept in step by
# tests/test_cli.py, which compares them with the library).
SAMPLINGS = ("uniform", "per_example", "fair", "adaptive")
DATASETS = ("mnist", "fashion_mnist")
AGGREGATIONS = ("none", "sum", "concat_1x1")
STRATEGIES = ("default", "mirrored", "multi_worker")
SEARCH_STRATEGIES = ("exhaustive", "random", "evolution", "regularized", "local")


def import_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up messages on stderr silenced.

    TensorFlow prints several lines (oneDNN, CUDA probing) before its logging
    is configured; they would bury a tool's one-line errors. Python
    exceptions raised by the import still reach stderr.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def parse_flags(argv):
    """absl's flag parsing, with a bad flag reported as one `error:` line.

    Pass as `app.run(main, flags_parser=_cli.parse_flags)`. absl's own
    parser prints two lines ("FATAL Flags parsing error" and a hint); a
    tool's bad input is one line and exit status 1.
    """
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def parse_kernel_sizes(text):
    """Parses `"3,5;3,5"` into `((3, 5), (3, 5))` (one group per layer)."""
    try:
        layers = tuple(
            tuple(int(k) for k in group.split(",") if k.strip())
            for group in text.split(";")
        )
    except ValueError:
        layers = ()
    if not layers or any(not group for group in layers):
        raise ValueError(
            "Invalid value for argument `kernel_sizes`. Expected kernel sizes "
            "per layer, layers separated by ';', e.g. '3,5;3,5'. "
            f"Received kernel_sizes={text!r}."
        )
    return layers


def parse_int_list(name, values):
    """Parses `"16,32"` (or absl's list `["16", "32"]`) into `(16, 32)`."""
    if isinstance(values, str):
        values = values.split(",")
    try:
        parsed = tuple(int(v) for v in values if str(v).strip())
    except ValueError:
        parsed = ()
    if not parsed:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected comma-separated "
            f"integers, e.g. '0,1,2'. Received {name}={','.join(map(str, values))!r}."
        )
    return parsed


def parse_paths(text):
    """Parses a path selection into a list for `SearchSpace.resolve`.

    Accepts indices (`"0,2"`), one path (`"5x5,3x3"`, `"conv3x3->skip"`), or
    several separated by `;` (`"5x5,3x3;3x3,3x3"`, `"0;conv3x3->skip"`).
    Returns ints and strings; `None` for an empty text (the default paths).
    """
    text = (text or "").strip()
    if not text:
        return None
    if ";" in text:
        items = [item.strip() for item in text.split(";") if item.strip()]
    else:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not all(re.fullmatch(r"\d+", item) for item in items):
            items = [text]
    return [int(item) if re.fullmatch(r"\d+", item) else item for item in items]


def parse_branch_learning_rates(text):
    """Parses `"3x3:1.0,5x5:0.5"` into `{"3x3": 1.0, "5x5": 0.5}`; `""` -> None."""
    if not text or not text.strip():
        return None
    result = {}
    for item in text.split(","):
        key, sep, value = item.partition(":")
        try:
            result[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip() or not math.isfinite(result[key.strip()]):
            raise ValueError(
                "Invalid value for argument `branch_lr`. Expected "
                "label:multiplier pairs with finite multipliers like "
                f"'3x3:1.0,5x5:0.5'. Received branch_lr={text!r}."
            )
    return result


def parse_limit(name, text):
    """Parses a cost limit: `""`/None -> None, `"reference"` as it is (the
    reference path's cost), else a number (checked by the library)."""
    text = (text or "").strip()
    if not text:
        return None
    if text.lower() == "reference":
        return "reference"
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a number or "
            f"'reference'. Received {name}={text!r}."
        ) from None


def parse_shard(text):
    """Parses `"i/n"` (slice `i` of `n`, 0-based) into `(i, n)`; `""` gives None."""
    text = (text or "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise ValueError(
            "Invalid value for argument `shard`. Expected 'i/n' with "
            f"0 <= i < n, e.g. '0/4'. Received shard={text!r}."
        )
    return int(match.group(1)), int(match.group(2))


def parse_eval_paths(text):
    """`""` -> None (the default), `"16"` -> 16 (a count), else paths."""
    text = (text or "").strip()
    if not text:
        return None
    if re.fullmatch(r"\d+", text):
        return int(text)
    return parse_paths(text)
