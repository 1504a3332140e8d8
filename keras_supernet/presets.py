"""Search spaces by name or from a file: what `bin/train --space=` takes.

A space is given as

- a name: `report` (the report's 4 paths, the default), `mnist20` (20
  choices of 4 candidates with BatchNorm, 4**20 ~ 1.1e12 paths),
  `mobile7` (7 choices of 8 MobileNet-style candidates, 8**7 ~ 2.1e6
  paths), `ranking` (the first ranking study's 6 choices, 7**6 = 117,649
  paths), `ranking_depth` (the third ranking study's space, whose
  architectures differ in depth and width, 4**6 = 4,096 paths; the
  current study's is the same at half the width, a JSON file in
  docs/results/ranking);
- a JSON file, either the report's preset with its arguments

  ```json
  {"preset": "report", "kernel_sizes": [[3, 5], [3, 5]], "filters": [16, 32],
   "hidden_units": 128, "padding": "valid"}
  ```

  or stages of choices:

  ```json
  {"stem": {"filters": 16, "kernel_size": 3, "strides": 2},
   "stages": [
     {"filters": 16, "blocks": 10,
      "candidates": ["conv3x3", "conv5x5", "sep3x3", "skip"]},
     {"filters": 32, "blocks": 10, "strides": 2,
      "candidates": ["conv3x3", "conv5x5", "sep3x3", "skip"]}],
   "head": {"hidden_units": 0},
   "batchnorm": true}
  ```

  The stem is a fixed `Conv2D` -> [BatchNorm] -> ReLU. Each stage starts
  with a fixed reduction (`Conv2D` 3x3 with the stage's `strides` ->
  [BatchNorm] -> ReLU) where its strides or width change, then `blocks`
  choices among `candidates` (specs of `keras_supernet.candidates`:
  `conv{k}x{k}`, `sep{k}x{k}`, `mb{k}x{k}_e{e}`, `skip`). The head is global
  average pooling, an optional hidden `Dense` (`hidden_units`, ReLU) and
  the logits.
- a Python file defining `space(input_shape, num_classes)` that returns the
  functional graph `(inputs, outputs)` of `Choice` layers and ordinary
  layers (see `keras_supernet.Choice`, `keras_supernet.candidates`).

`load_space(text)` reads any of these into a spec (a JSON-serialisable
dict); `build_supernet(spec, ...)` builds a `Supernet` from a spec, with the
same initial weights for the same seed.
"""

import copy
import hashlib
import json
import os
import runpy

import keras

from keras_supernet import candidates as candidates_lib
from keras_supernet import validation
from keras_supernet.supernet import Supernet

# The report's preset: the default space of `bin/train`.
REPORT = {
    "preset": "report",
    "kernel_sizes": [[3, 5], [3, 5]],
    "filters": [16, 32],
    "hidden_units": 128,
    "padding": "valid",
}

_FOUR = ["conv3x3", "conv5x5", "sep3x3", "skip"]
_MOBILE = [
    "mb3x3_e1",
    "mb3x3_e3",
    "mb3x3_e6",
    "mb5x5_e1",
    "mb5x5_e3",
    "mb5x5_e6",
    "mb7x7_e3",
    "skip",
]
# The ranking study's candidates (bin/rank): depth (skip), kernel size and
# receptive field (3x3 to 7x7) and width (expansion 1, a residual separable
# block, or 3, an inverted bottleneck). Every block is residual: with plain
# conv/sep blocks among them a uniform supernet trained 4 epochs was at 25%
# training accuracy, with these at 50%.
_RANKING = [
    "mb3x3_e1",
    "mb5x5_e1",
    "mb7x7_e1",
    "mb3x3_e3",
    "mb5x5_e3",
    "mb7x7_e3",
    "skip",
]
# The second ranking study's candidates: the block left out (skip, one in
# four, so that depth varies from 0 to 6 blocks), or a residual block small
# (3x3, expansion 1), medium (5x5, expansion 3) or large (7x7, expansion 6).
# In `ranking` the architectures trained alone were 1.75 points apart at
# most, too close for two seeds to agree on their order (tau 0.52): these
# differ in capacity as well as in shape.
_RANKING_DEPTH = ["skip", "mb3x3_e1", "mb5x5_e3", "mb7x7_e6"]


def _two_stages(filters, blocks, candidates):
    """The named spaces' shape: a stride-2 stem as wide as the first stage,
    two stages of `blocks` choices among `candidates` (the second at stride
    2), global pooling and the logits, with BatchNorm."""
    return {
        "stem": {"filters": filters[0], "kernel_size": 3, "strides": 2},
        "stages": [
            {"filters": filters[0], "blocks": blocks[0], "candidates": candidates},
            {
                "filters": filters[1],
                "blocks": blocks[1],
                "strides": 2,
                "candidates": candidates,
            },
        ],
        "head": {"hidden_units": 0},
        "batchnorm": True,
    }


SPACES = {
    "report": REPORT,
    "mnist20": _two_stages((16, 32), (10, 10), _FOUR),
    "mobile7": _two_stages((16, 24), (3, 4), _MOBILE),
    "ranking": _two_stages((8, 16), (3, 3), _RANKING),
    "ranking_depth": _two_stages((8, 16), (3, 3), _RANKING_DEPTH),
}

_STAGE_KEYS = {"filters", "blocks", "strides", "candidates"}
_TOP_KEYS = {"stem", "stages", "head", "batchnorm", "name"}
_PRESET_KEYS = {
    "preset",
    "kernel_sizes",
    "filters",
    "hidden_units",
    "padding",
    "aggregation",
    "name",
}


class SpaceError(ValueError):
    """A search space name or file that cannot be used."""


def _error(source, message):
    return SpaceError(f"Invalid search space {source}: {message}")


def load_space(text):
    """A space spec from a name, a `.json` file or a `.py` file.

    Returns:
        A JSON-serialisable dict: the preset's arguments, the stages, or for
        a Python file `{"python": path, "sha256": ...}`.

    Raises:
        SpaceError: an unknown name, a missing or unreadable file, JSON that
            does not parse, or a spec that does not describe a space.
    """
    if not isinstance(text, str) or not text.strip():
        raise SpaceError(
            "Invalid value for argument `space`. Expected a space name "
            f"({', '.join(SPACES)}) or a .json or .py file. "
            f"Received space={text!r}."
        )
    text = text.strip()
    if text in SPACES:
        return check_spec(copy.deepcopy(SPACES[text]), text)
    if not text.endswith((".json", ".py")):
        raise SpaceError(
            f"Invalid value for argument `space`. Expected one of "
            f"{', '.join(SPACES)}, or a .json or .py file. Received space={text!r}."
        )
    try:
        with open(text, "rb") as f:
            content = f.read()
    except OSError as e:
        raise _error(text, f"cannot read the file ({e.strerror or e}).") from None
    if text.endswith(".py"):
        return {
            "python": os.path.abspath(text),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    try:
        spec = json.loads(content)
    except (ValueError, UnicodeDecodeError) as e:
        raise _error(text, f"the JSON does not parse ({e}).") from None
    return check_spec(spec, text)


def check_spec(spec, source="spec"):
    """Returns `spec` if it describes a space, or raises `SpaceError`."""
    if not isinstance(spec, dict):
        raise _error(source, f"expected a JSON object, received {type(spec).__name__}.")
    if "python" in spec:
        return spec
    if "preset" in spec:
        if spec["preset"] != "report":
            raise _error(source, f"unknown preset {spec['preset']!r} (only 'report').")
        unknown = set(spec) - _PRESET_KEYS
        if unknown:
            raise _error(
                source, f"unknown keys {sorted(unknown)} for the report's preset."
            )
        return spec
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise _error(
            source,
            f"unknown keys {sorted(unknown)}; expected 'stages' (and 'stem', "
            "'head', 'batchnorm'), or 'preset'.",
        )
    stages = spec.get("stages")
    if not isinstance(stages, list) or not stages:
        raise _error(source, "expected a non-empty list 'stages'.")
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or set(stage) - _STAGE_KEYS:
            raise _error(
                source,
                f"stages[{i}] must be an object with keys among "
                f"{sorted(_STAGE_KEYS)}; received {stage!r}.",
            )
        try:
            validation.positive_int("filters", stage.get("filters"))
            validation.positive_int("blocks", stage.get("blocks"))
            validation.positive_int("strides", stage.get("strides", 1))
        except ValueError as e:
            raise _error(source, f"stages[{i}]: {e}") from None
        specs = stage.get("candidates")
        if not isinstance(specs, list) or not specs:
            raise _error(source, f"stages[{i}] needs a non-empty list 'candidates'.")
        for candidate in specs:
            try:
                candidates_lib.from_spec(
                    candidate, 1, input_channels=1, batchnorm=False
                )
            except ValueError as e:
                raise _error(source, f"stages[{i}]: {e}") from None
        if len(set(specs)) != len(specs):
            raise _error(source, f"stages[{i}] repeats a candidate: {specs}.")
    for key in ("stem", "head"):
        if key in spec and not isinstance(spec[key], dict):
            raise _error(source, f"'{key}' must be an object.")
    return spec


def describe(spec):
    """A short description of a spec, for reports: its name or file."""
    if "python" in spec:
        return f"Python file {spec['python']}"
    if "preset" in spec:
        return "the report's preset " + json.dumps(
            {k: v for k, v in spec.items() if k != "preset"}
        )
    return spec.get("name") or "stages " + json.dumps(spec["stages"])


def _conv_bn(x, filters, kernel_size, strides, batchnorm, seed, name):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=not batchnorm,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name=name,
    )(x)
    if batchnorm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _stage_graph(spec, input_shape, num_classes, seed):
    batchnorm = bool(spec.get("batchnorm", True))
    stem = spec.get("stem", {})
    inputs = keras.Input(input_shape, name="images")
    channels = validation.positive_int("stem filters", stem.get("filters", 16))
    x = _conv_bn(
        inputs,
        channels,
        stem.get("kernel_size", 3),
        stem.get("strides", 1),
        batchnorm,
        seed,
        "stem",
    )
    index = 0
    for s, stage in enumerate(spec["stages"]):
        filters, strides = stage["filters"], stage.get("strides", 1)
        if strides != 1 or filters != channels:
            x = _conv_bn(x, filters, 3, strides, batchnorm, seed + 1 + s, f"reduce_{s}")
            channels = filters
        for _ in range(stage["blocks"]):
            x = candidates_lib.choice(
                stage["candidates"],
                filters,
                input_channels=channels,
                batchnorm=batchnorm,
                seed=seed * 10_000 + 100 * index,
                name=f"choice_{index}",
            )(x)
            index += 1
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    hidden = spec.get("head", {}).get("hidden_units", 0)
    if hidden:
        x = keras.layers.Dense(
            hidden,
            activation="relu",
            name="hidden",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 97),
        )(x)
    outputs = keras.layers.Dense(
        num_classes,
        name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 98),
    )(x)
    return inputs, outputs


def _python_graph(spec, input_shape, num_classes):
    path = spec["python"]
    try:
        namespace = runpy.run_path(path)
    except Exception as e:  # the user's file may raise anything
        raise _error(path, f"running it failed: {type(e).__name__}: {e}") from None
    function = namespace.get("space")
    if not callable(function):
        raise _error(
            path,
            "it must define `space(input_shape, num_classes)` returning "
            "(inputs, outputs).",
        )
    result = function(tuple(input_shape), num_classes)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise _error(path, "`space(...)` must return (inputs, outputs).")
    return result


def build_supernet(
    spec, input_shape=(28, 28, 1), num_classes=10, seed=0, **supernet_kwargs
):
    """A `Supernet` of the space `spec` (from `load_space`).

    The same `seed` gives the same initial weights (and path draws).

    Args:
        spec: a space spec.
        input_shape: shape of one input example.
        num_classes: number of logits.
        seed: non-negative int: weights and sampling.
        **supernet_kwargs: `sampling`, `branch_learning_rates`,
            `path_dropout`, `train_step`, `name`.
    """
    seed = validation.non_negative_int("seed", seed)
    if "preset" in spec:
        arguments = {k: v for k, v in spec.items() if k not in ("preset", "name")}
        return Supernet(
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            seed=seed,
            **arguments,
            **supernet_kwargs,
        )
    # Layers a graph leaves unseeded draw from Keras's global generator.
    keras.utils.set_random_seed(seed)
    if "python" in spec:
        inputs, outputs = _python_graph(spec, input_shape, num_classes)
    else:
        inputs, outputs = _stage_graph(spec, tuple(input_shape), num_classes, seed)
    return Supernet(inputs=inputs, outputs=outputs, seed=seed, **supernet_kwargs)
