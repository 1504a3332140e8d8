"""Benchmarks of the supernet against plain models: the library behind `bin/bench`.

Every timing is relative. Competing variants run interleaved in one process
after a warm-up, in rounds whose order alternates (A B, then B A), and each
variant's per-round figures are summarised by their median, quartiles and
extremes. A ratio is the median of the per-round ratios of two variants
measured next to each other, so slow drifts of a shared machine's load hit
both sides and cancel. Every timing is taken on two clocks: wall time, and
the CPU time of the process (all its threads), which a busy machine disturbs
much less; the goals are judged on `Settings.clock`.

Sections, each registered once in `REGISTRY` with its measuring function,
its ratios, its goals and its table:

- `paths`: training step time of a supernet pinned to one path
  (`sampling="fixed"`) against the plain model `extract_path` gives for that
  path, trained the same way (same optimizer, loss, metrics, batch), per
  path, on the report's space (every path) and on a space of many choices
  (`Settings.large_space`, `mnist20`: a few seeded random paths).
- `epoch`: one `fit` epoch of joint training (`sampling="uniform"`) against
  the mean of the standalone epochs (the plain models of the same paths), on
  the same `tf.data` pipeline, on both spaces.
- `sampling`: step time of `per_example`, `fair` and the aggregations
  relative to `uniform`.
- `scaling`: step time against batch size, and against the size of the search
  space (2x2, 3x3 = kernels (3, 5, 7) twice, 3 layers).
- `compile`: build and first training step (time and peak memory, each in a
  fresh process) against the number of paths, `mnist{L}` spaces of L
  choices of 4 candidates (4 to 4**20 paths), in both compiled step forms.
- `options`: the joint training step under each way of keeping unsampled
  candidates untouched: the per-path switch, a switch per choice with
  switched updates, restoring updates (masks), and a once-for-all style
  prototype that slices one shared kernel.
- `inference`: latency at batch 1 and throughput at a large batch of Keras
  `predict`, the exported SavedModel and the TFLite files (float, dynamic,
  int8), when `keras_supernet.export` is available.
- `headline`: the report's claim, measured on real data: training time of the
  joint supernet until every path's validation accuracy is within `tolerance`
  of its standalone best, against the sum of the standalone trainings. The
  five trainings advance one epoch each in turn, so they share the machine's
  load.

`time_to_match` computes the headline figures from any list of runs in the
`results.json` format of `keras_supernet.experiment`, such as a full
experiment's.

Pure step-time sections train on synthetic tensors; `epoch`, `headline` and
`inference` use the images of `keras_supernet.data`.

Example:

```python
results = run_benchmark(quick=True, data_dir="tests/data/mnist_small")
print(format_table(results))
```
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_supernet import data as data_lib
from keras_supernet import presets
from keras_supernet import runs
from keras_supernet import training
from keras_supernet import validation
from keras_supernet.extract import extract_path
from keras_supernet.layers import Choice
from keras_supernet.supernet import PER_PATH_LIMIT
from keras_supernet.supernet import Supernet

CLOCKS = ("wall", "cpu")
# 2: `paths`, `epoch` and `options` results per space, `compile`, goals by
# name ("paths/2x2", "compile/20_choices").
SCHEMA_VERSION = 2

# Goals: every figure is "lower is better". Ratios, except `compile`: the
# seconds from building a 20-choice supernet to the end of its first step.
GOALS = {"paths": 1.05, "epoch": 1.05, "compile": 60.0, "headline": 0.35}

# === Search spaces ===

# The report's architecture, and the search spaces of the `scaling` section.
BASE_SPACE = {k: v for k, v in presets.REPORT.items() if k != "preset"}
SEARCH_SPACES = {
    "2x2": {},
    "3x3": {"kernel_sizes": ((3, 5, 7), (3, 5, 7))},
    # Three "valid" 5x5 blocks shrink 28x28 to nothing: "same" padding.
    "3_layers": {
        "kernel_sizes": ((3, 5), (3, 5), (3, 5)),
        "filters": (16, 32, 32),
        "padding": "same",
    },
}

# With the aggregation variants of the `sampling` section.
SEARCH_SPACES_ALL = dict(SEARCH_SPACES, **{"2x2_same": {"padding": "same"}})

# `mnist{L}`: the layout of `presets`' mnist20 with L choices of 4
# candidates; `mnist{L}_narrow`: the same with 8 and 16 filters.
_STAGE_SPACE = re.compile(r"^mnist([1-9][0-9]*)(_narrow)?$")

QUICK_DATA_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tests",
    "data",
    "mnist_small",
)


def stage_space(num_choices, narrow=False):
    """The spec of `presets`' `mnist20` layout with `num_choices` choices.

    A stride-2 stem, then `ceil(L / 2)` choices at 16 filters and, after a
    stride-2 reduction, `floor(L / 2)` at 32 (8 and 16 with `narrow`); every
    choice among conv3x3, conv5x5, sep3x3 and skip, with BatchNorm.
    `stage_space(20)` is `presets.load_space("mnist20")`.
    """
    num_choices = validation.positive_int("num_choices", num_choices)
    spec = presets.load_space("mnist20")
    first, second = spec["stages"]
    first["blocks"] = math.ceil(num_choices / 2)
    second["blocks"] = num_choices // 2
    if narrow:
        spec["stem"]["filters"] = first["filters"] = 8
        second["filters"] = 16
    spec["stages"] = [s for s in (first, second) if s["blocks"]]
    return spec


def space_spec(name):
    """What builds the bench space `name`.

    Returns:
        A dict of report preset arguments (`SEARCH_SPACES_ALL` names) or a
        `presets` stage spec (`mnist{L}`, `mnist{L}_narrow`).

    Raises:
        ValueError: an unknown name.
    """
    if name in SEARCH_SPACES_ALL:
        return dict(BASE_SPACE, **SEARCH_SPACES_ALL[name])
    match = _STAGE_SPACE.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            "Invalid value for argument `space`. Expected one of "
            f"{list(SEARCH_SPACES_ALL)} or mnist<L>[_narrow] (L choices of 4 "
            f"candidates). Received space={name!r}."
        )
    return stage_space(int(match.group(1)), narrow=bool(match.group(2)))


def num_choices(name):
    """The number of choices of the bench space `name`."""
    spec = space_spec(name)
    if "stages" in spec:
        return sum(s["blocks"] for s in spec["stages"])
    return len(spec["kernel_sizes"])


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much every section measures.

    Attributes:
        batch_size: training batch size.
        steps: training steps per timed block.
        rounds: interleaved rounds of timed blocks (after `warmup` rounds).
        warmup: untimed rounds before measuring.
        epoch_examples: examples in one epoch of the `epoch` section.
        epoch_rounds: interleaved rounds of the `epoch` section.
        batch_sizes: batch sizes of the `scaling` section.
        spaces: search spaces (keys of `SEARCH_SPACES`) of `scaling`.
        large_space: the space of many choices of `paths`, `epoch` and
            `options`, next to the report's (`mnist<L>`).
        sample_paths: paths measured on `large_space` (every path of the
            report's space is): seeded random paths in which every
            candidate of a choice appears equally often.
        compile_choices: the numbers of choices L of the `mnist<L>` spaces
            of the `compile` section.
        compile_spaces: further spaces of `compile` (any bench space name).
        compile_rounds: fresh processes per configuration in `compile`.
        compile_timeout: seconds after which a `compile` process is stopped.
        inference_path: the path exported and timed in `inference`.
        inference_calls: batch-1 calls per timed inference block.
        inference_rounds: interleaved rounds of the `inference` section.
        throughput_batch: batch size of the throughput measurement.
        train_size: training examples of the `headline` trainings (None: all
            left after the validation split).
        val_size: validation examples held out for `headline`.
        epochs: epochs of each standalone training in `headline`.
        joint_epochs: epochs of the joint training in `headline`.
        tolerance: accuracy gap (a fraction: 0.001 = 0.1 percentage point)
            within which a joint path matches its standalone best.
        learning_rate: Adam learning rate of every training.
        seed: seed of weights, sampling, data order and synthetic data.
        jit_compile: compile every training step with XLA.
        steps_per_execution: training steps per call of the train function.
        clock: `"wall"` or `"cpu"`, the clock the goals are judged on.
    """

    batch_size: int = 128
    steps: int = 10
    rounds: int = 15
    warmup: int = 2
    epoch_examples: int = 10000
    epoch_rounds: int = 5
    batch_sizes: tuple = (32, 128, 512)
    spaces: tuple = ("2x2", "3x3", "3_layers")
    large_space: str = "mnist20"
    sample_paths: int = 4
    compile_choices: tuple = (1, 2, 3, 4, 5, 10, 15, 20)
    compile_spaces: tuple = ("2x2", "mnist20_narrow")
    compile_rounds: int = 1
    compile_timeout: int = 900
    inference_path: int = 0
    inference_calls: int = 20
    inference_rounds: int = 15
    throughput_batch: int = 256
    train_size: int = 20000
    val_size: int = 5000
    epochs: int = 8
    joint_epochs: int = 16
    tolerance: float = 0.001
    learning_rate: float = 1e-3
    seed: int = 0
    jit_compile: bool = False
    steps_per_execution: int = 1
    clock: str = "wall"

    def __post_init__(self):
        for name in (
            "batch_size",
            "steps",
            "rounds",
            "epoch_examples",
            "epoch_rounds",
            "sample_paths",
            "compile_rounds",
            "compile_timeout",
            "inference_calls",
            "inference_rounds",
            "throughput_batch",
            "val_size",
            "epochs",
            "joint_epochs",
            "steps_per_execution",
        ):
            validation.positive_int(name, getattr(self, name))
        for name in ("warmup", "inference_path", "seed"):
            validation.non_negative_int(name, getattr(self, name))
        validation.positive_int("train_size", self.train_size, allow_none=True)
        validation.positive_ints("batch_sizes", self.batch_sizes)
        validation.positive_ints(
            "compile_choices", self.compile_choices, allow_empty=True
        )
        if any(s not in SEARCH_SPACES for s in self.spaces):
            raise ValueError(
                "Invalid value for argument `spaces`. Expected names among "
                f"{list(SEARCH_SPACES)}. Received spaces={self.spaces!r}."
            )
        if not _STAGE_SPACE.match(str(self.large_space)):
            raise ValueError(
                "Invalid value for argument `large_space`. Expected "
                "mnist<L>[_narrow]. Received "
                f"large_space={self.large_space!r}."
            )
        for name in self.compile_spaces:
            space_spec(name)
        validation.finite_float(
            "tolerance", self.tolerance, low=0.0, high=1.0, high_open=True
        )
        validation.positive_float("learning_rate", self.learning_rate)
        validation.one_of("clock", self.clock, CLOCKS)


FULL = Settings()
QUICK = Settings(
    steps=4,
    rounds=5,
    warmup=1,
    epoch_examples=1500,
    epoch_rounds=4,
    batch_sizes=(32, 128),
    spaces=("2x2",),
    large_space="mnist5",
    sample_paths=2,
    compile_choices=(1,),
    compile_spaces=(),
    inference_calls=10,
    inference_rounds=5,
    throughput_batch=128,
    train_size=None,
    val_size=500,
    epochs=2,
    joint_epochs=3,
)


# === Measurement ===


class _Timer:
    """Wall and process CPU time of a block of work."""

    def __enter__(self):
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def per(self, units):
        return {"wall": self.wall / units, "cpu": self.cpu / units}


def summarize(values):
    """Median, quartiles and extremes of a list of numbers."""
    values = np.asarray(values, dtype=np.float64)
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
        "min": float(values.min()),
        "max": float(values.max()),
        "n": int(values.size),
    }


def interleave(runners, rounds, warmup=1):
    """Runs every runner once per round, alternating the order.

    Args:
        runners: dict from name to a callable returning one measurement, a
            dict from clock name (`"wall"`, `"cpu"`) to seconds.
        rounds: timed rounds.
        warmup: untimed rounds first (tracing, caches, allocators).

    Returns:
        Dict from name to a dict from clock to the list of its `rounds`
        measurements.
    """
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    samples = {name: {clock: [] for clock in CLOCKS} for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            measurement = runners[name]()
            for clock in CLOCKS:
                samples[name][clock].append(measurement[clock])
    return samples


def _summaries(samples, scale=1.0):
    """Per clock, the summary of `samples[clock]` times `scale`."""
    return {clock: summarize(np.asarray(samples[clock]) * scale) for clock in CLOCKS}


def _ms(samples):
    return _summaries(samples, 1e3)


def paired_ratio(numerator, denominator):
    """Per clock, the summary of the per-round ratios of two variants."""
    return {
        clock: summarize(np.asarray(numerator[clock]) / np.asarray(denominator[clock]))
        for clock in CLOCKS
    }


def _mean_samples(samples_list):
    """Per clock and round, the mean over several variants."""
    return {
        clock: list(np.mean([s[clock] for s in samples_list], axis=0))
        for clock in CLOCKS
    }


def _goal(value, goal, clock, strict=False):
    met = value < goal if strict else value <= goal
    return {
        "value": float(value),
        "goal": goal,
        "met": bool(met),
        "clock": clock,
        "strict": strict,
    }


def _peak_rss_mb():
    """The peak resident memory of this process so far, in MiB.

    Linux's `VmHWM`, which starts afresh in a new program; `ru_maxrss`
    (the fallback elsewhere) keeps the parent's peak across `exec`.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# === Models and steps ===


def _compile(model, settings):
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=settings.jit_compile,
        steps_per_execution=settings.steps_per_execution,
    )
    return model


def build_supernet(settings, space=None, **kwargs):
    """An uncompiled `Supernet` of a bench space.

    Args:
        settings: a `Settings` (its seed seeds weights and sampling).
        space: a bench space name (`space_spec`), a dict of report preset
            arguments that update `BASE_SPACE`, or None for `"2x2"`.
        **kwargs: `Supernet` arguments (`sampling`, `train_step`...).
    """
    if space is None or isinstance(space, dict):
        config = dict(BASE_SPACE, **(space or {}))
    else:
        config = space_spec(space)
    if "stages" in config:
        return presets.build_supernet(config, seed=settings.seed, **kwargs)
    config.update(kwargs)
    config.setdefault("seed", settings.seed)
    return Supernet(**config)


def make_supernet(settings, space=None, **kwargs):
    """A compiled `build_supernet(settings, space, **kwargs)`."""
    return _compile(build_supernet(settings, space, **kwargs), settings)


def make_plain(supernet, path, settings):
    """The compiled plain model of `path` (`extract_path`, same weights)."""
    return _compile(extract_path(supernet, path), settings)


def balanced_paths(space, count, seed=0):
    """`count` seeded random paths of a `SearchSpace`, every path if fewer.

    Per choice, the candidates are dealt in random order, each as often as
    `count` allows: with `count` a multiple of every choice's candidate
    count, each candidate is on the same number of paths, so the mean of a
    per-choice cost over these paths is its mean over the uniform
    distribution of paths (a joint training's expectation).
    """
    if space.num_paths <= count:
        return list(range(space.num_paths))
    rng = np.random.default_rng(seed)
    columns = [
        np.concatenate([rng.permutation(n) for _ in range(math.ceil(count / n))])[
            :count
        ]
        for n in space.candidate_counts
    ]
    return [
        space.index(tuple(int(column[j]) for column in columns)) for j in range(count)
    ]


def path_key(supernet, path):
    """A short name of `path`: its label, or for more than four choices its
    candidate indices as digits (`"0312..."`)."""
    indices = supernet.path_indices(path)
    if len(indices) <= 4:
        return supernet.path_label(path)
    return "".join(str(k) for k in indices)


def synthetic_batch(batch_size, input_shape=(28, 28, 1), num_classes=10, seed=0):
    """Normalised-looking float32 images and int32 labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch_size,)).astype("int32")
    return x, y


def _repeated(batch):
    """An endless dataset of `batch`, without background threads."""
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    # No background prefetch thread: an unfinished iterator that has one
    # takes seconds to free, and the batch is already in memory.
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    return dataset.with_options(options)


def _first_fit(model, dataset):
    """One `fit` step: builds the optimizer and metrics, traces the step."""
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)


def _step_timer(model, dataset, steps, before=None):
    """A callable timing `steps` training steps of a model already fit once.

    Calls the model's compiled train function directly on an iterator over
    `dataset`: the per-step work of `fit` without its Python callbacks.
    `before()`, if given, runs before each timed block, off the clock. The
    callable returns seconds per step.
    """
    iterator = iter(dataset)
    calls = max(1, math.ceil(steps / model.steps_per_execution))
    steps = calls * model.steps_per_execution

    def run():
        if before is not None:
            before()
        with _Timer() as timer:
            for _ in range(calls):
                logs = model.train_function(iterator)
            float(logs["loss"])
        return timer.per(steps)

    return run


def train_step_runner(model, batch, steps, before=None):
    """A callable timing `steps` training steps of `model` on `batch`.

    One `fit` step on the repeated batch first builds the optimizer, metrics
    and train function; then each call runs `before()` (if given, off the
    clock) and times the compiled train function on an iterator over the
    repeated batch, the per-step work of `fit` without its Python callbacks.
    The callable returns seconds per step.
    """
    dataset = _repeated(batch)
    _first_fit(model, dataset)
    return _step_timer(model, dataset, steps, before)


def _epoch_runner(model, dataset):
    """A callable timing one `fit` epoch over `dataset`: seconds/epoch."""

    def run():
        with _Timer() as timer:
            model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        return timer.per(1)

    return run


class _SharedKernelChoice(Choice):
    """A bench-only prototype: a choice whose square convolution blocks
    share one kernel, once-for-all style.

    Candidates that are blocks `Conv2D -> ...` of one filter count and
    stride share the largest block: a block of kernel size k runs the
    largest block with the centre k x k slice of its kernel (and its bias,
    BatchNorm and activation). It changes what is shared between
    candidates, so it is a different supernet, not an optimisation of this
    one: it exists to time the idea. Each step still updates only the
    candidates of the sampled path (a shared block when any of its sizes
    was sampled, its whole kernel then, as once-for-all does).
    """

    def __init__(self, candidates, **kwargs):
        super().__init__(candidates, **kwargs)
        convs = {}
        for k, candidate in enumerate(self.candidates):
            conv = _first_conv(candidate)
            if conv is not None:
                key = (conv.filters, conv.strides, conv.padding, conv.use_bias)
                convs.setdefault(key, []).append((conv.kernel_size[0], k))
        # Candidate index -> (index of the largest block, kernel size).
        self._owner = {}
        for sizes in convs.values():
            largest = max(sizes)[1]
            for size, k in sizes:
                if k != largest:
                    self._owner[k] = (largest, size)

    def candidate_groups(self):
        groups = super().candidate_groups()
        for k, (largest, _) in self._owner.items():
            groups[k] = groups[largest]
        return groups

    def candidate_output(self, index, inputs, training=None):
        if index not in self._owner:
            return super().candidate_output(index, inputs, training)
        largest, size = self._owner[index]
        block = self.candidates[largest]
        conv = block.layers[0]
        start = (conv.kernel_size[0] - size) // 2
        kernel = conv.kernel[start : start + size, start : start + size]
        x = ops.conv(inputs, kernel, strides=conv.strides, padding=conv.padding)
        if conv.use_bias:
            x = ops.add(x, conv.bias)
        x = conv.activation(x)
        for layer in block.layers[1:]:
            x = layer(x, training=training)
        return ops.cast(x, self.compute_dtype)


def _first_conv(candidate):
    """The leading square `Conv2D` of a `Sequential` block, or None."""
    if not isinstance(candidate, keras.Sequential) or not candidate.layers:
        return None
    conv = candidate.layers[0]
    if (
        type(conv) is not keras.layers.Conv2D
        or conv.kernel_size[0] != conv.kernel_size[1]
        or conv.groups != 1
        or tuple(conv.dilation_rate) != (1, 1)
    ):
        return None
    return conv


def shared_kernel_supernet(supernet, **kwargs):
    """The bench's once-for-all style prototype of `supernet`'s graph.

    The same graph and layers, each `Choice` replaced by a
    `_SharedKernelChoice` of the same candidates (see there).

    Args:
        supernet: a `Supernet`, whose layers the prototype shares.
        **kwargs: `Supernet` arguments of the prototype.
    """

    def clone(layer):
        if isinstance(layer, Choice):
            return _SharedKernelChoice(
                layer.candidates, labels=layer.labels, name=layer.name
            )
        return layer

    graph = keras.Model(supernet.input, supernet.output)
    graph = keras.models.clone_model(graph, clone_function=clone)
    return Supernet(inputs=graph.input, outputs=graph.output, **kwargs)


# Model kinds of `_Models`: supernet keyword arguments, and whether the
# per-choice step restores what it did not train (`Supernet.restoring_updates`).
_KINDS = {
    "uniform": {"sampling": "uniform"},
    "fixed": {"sampling": "fixed"},
    "per_example": {"sampling": "per_example"},
    "fair": {"sampling": "fair"},
    "aggregation_sum": {"sampling": "uniform", "aggregation": "sum"},
    "aggregation_concat_1x1": {
        "sampling": "uniform",
        "aggregation": "concat_1x1",
    },
    "per_path": {"sampling": "uniform", "train_step": "per_path"},
    "per_choice": {"sampling": "uniform", "train_step": "per_choice"},
    "restoring": {
        "sampling": "uniform",
        "train_step": "per_choice",
        "restoring": True,
    },
    "shared_kernel": {
        "sampling": "uniform",
        "train_step": "per_choice",
        "prototype": True,
    },
}


class _Models:
    """Every model and train-step runner, built once and shared by sections.

    Tracing a train function costs seconds (a minute for 20 choices),
    measuring it milliseconds: the sections measure the same models, each
    traced once per batch size. Kinds: the keys of `_KINDS` (`"fixed"`: a
    supernet pinned to a path, the runner's), `"reference"` (an untrained
    supernet, the source of plain models) and `"plain/<path>"` (the
    extracted model of the path). `"per_path"` and `"per_choice"` are
    `"uniform"` where that is the space's default step.
    `build_seconds[(space, kind, batch_size)]` is the time a runner took to
    build: one `fit` step of a fresh model, which traces its train function.
    """

    def __init__(self, settings):
        self.settings = settings
        self._models = {}
        self._runners = {}
        self.build_seconds = {}

    def reference(self, space):
        """An untrained supernet of `space`, the source of plain models."""
        return self.model(space, "reference")

    def num_paths(self, space):
        return self.reference(space).num_paths

    def paths(self, space):
        """The paths measured on `space`: `sample_paths` `balanced_paths`
        of the large space, every path of the others."""
        reference = self.reference(space)
        if space != self.settings.large_space:
            return list(range(reference.num_paths))
        return balanced_paths(
            reference.space, self.settings.sample_paths, self.settings.seed
        )

    def _canonical(self, space, kind):
        if kind in ("per_path", "per_choice"):
            if self.reference(space).train_step_mode == kind:
                return "uniform"
        return kind

    def model(self, space, kind):
        kind = self._canonical(space, kind) if kind != "reference" else kind
        key = (space, kind)
        if key not in self._models:
            if kind == "reference":
                model = build_supernet(self.settings, space)
            elif kind.startswith("plain/"):
                path = int(kind.split("/")[1])
                model = make_plain(self.reference(space), path, self.settings)
            else:
                kwargs = dict(_KINDS[kind])
                restoring = kwargs.pop("restoring", False)
                if kwargs.pop("prototype", False):
                    model = _compile(
                        shared_kernel_supernet(
                            build_supernet(self.settings, space),
                            seed=self.settings.seed,
                            **kwargs,
                        ),
                        self.settings,
                    )
                else:
                    model = make_supernet(self.settings, space, **kwargs)
                # Read when the step is traced: set before the first fit.
                model.restoring_updates = restoring
            self._models[key] = model
        return self._models[key]

    def prepare(self, space, kinds):
        """Builds the models of `kinds` on `space` before any is traced.

        Building a stage space's supernet seeds Keras's global generator
        (`presets.build_supernet`), and `tf.random.set_seed` clears the
        eager kernel cache: every step traced before is instantiated again
        on its next call, which costs about as much as tracing it (a
        minute for a 64-path per-path step). A section builds everything
        first, then traces.
        """
        for kind in kinds:
            self.model(space, kind)

    def runner(self, space, kind, batch_size, path=None):
        """A step runner; with `path`, the model is set to it before each
        timed block (a pinned supernet serves every path)."""
        key = (space, self._canonical(space, kind), batch_size, path)
        if key not in self._runners:
            model = self.model(space, kind)
            before = None if path is None else (lambda: model.set_path(path))
            if before is not None:
                before()
            batch = synthetic_batch(batch_size, seed=self.settings.seed)
            start = time.perf_counter()
            self._runners[key] = train_step_runner(
                model, batch, self.settings.steps, before
            )
            self.build_seconds[key[:3]] = self.build_seconds.get(
                key[:3], time.perf_counter() - start
            )
        return self._runners[key]


def _spaces(settings):
    """The spaces of `paths`, `epoch` and `options`: the report's and the
    large one."""
    return ("2x2", settings.large_space)


# === Plain-text tables ===


def _fmt_summary(summary, digits=2):
    return (
        f"{summary['median']:.{digits}f} "
        f"[{summary['q25']:.{digits}f}-{summary['q75']:.{digits}f}]"
    )


def _table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows
    ]
    return lines


def _verdict(goal):
    return "met" if goal["met"] else "MISSED"


def _goal_line(goal, what):
    return (
        f"{what} {goal['value']:.3f} on the {goal['clock']} clock, goal "
        f"{'<' if goal['strict'] else '<='} {goal['goal']}: {_verdict(goal)}"
    )


def _space_title(name, entry):
    return (
        f"{name} ({entry['num_choices']} choices, {entry['num_paths']:.3g} "
        f"paths, {entry['train_step']} step)"
    )


def _legend(entry):
    """For spaces whose paths are written as digits: what a digit means."""
    labels = entry.get("candidate_labels")
    if not labels:
        return []
    return [
        "paths as candidate indices per choice: "
        + ", ".join(f"{k}={label}" for k, label in enumerate(labels))
    ]


def _space_entry(supernet, train_step=None):
    """What a section records about the space of `supernet`."""
    labels = supernet.space.candidate_labels
    entry = {
        "num_choices": supernet.space.num_choices,
        "num_paths": supernet.num_paths,
        "train_step": train_step or supernet.train_step_mode,
    }
    if len(labels) > 4 and all(other == labels[0] for other in labels):
        entry["candidate_labels"] = list(labels[0])
    return entry


# === Section: paths ===


def bench_paths(settings, models=None):
    """Per path: pinned supernet step time against the plain model's.

    On the report's space every path, on `settings.large_space` the
    `balanced_paths`. One supernet per space (`sampling="fixed"`) is set to
    each path before its timed blocks: the path lives in variables, so one
    traced step serves every path.
    """
    models = models or _Models(settings)
    batch_size = settings.batch_size
    spaces = {}
    for space in _spaces(settings):
        reference = models.reference(space)
        paths = models.paths(space)
        models.prepare(space, ["fixed"] + [f"plain/{p}" for p in paths])
        runners = {}
        for path in paths:
            runners[f"fixed/{path}"] = models.runner(
                space, "fixed", batch_size, path=path
            )
            runners[f"plain/{path}"] = models.runner(space, f"plain/{path}", batch_size)
        samples = interleave(runners, settings.rounds, settings.warmup)
        spaces[space] = {
            **_space_entry(models.model(space, "fixed")),
            "rows": [
                {
                    "path": path,
                    "key": path_key(reference, path),
                    "label": reference.path_label(path),
                    "supernet_ms": _ms(samples[f"fixed/{path}"]),
                    "plain_ms": _ms(samples[f"plain/{path}"]),
                    "ratio": paired_ratio(
                        samples[f"fixed/{path}"], samples[f"plain/{path}"]
                    ),
                }
                for path in paths
            ],
        }
    return {
        "batch_size": batch_size,
        "steps_per_block": settings.steps,
        "spaces": spaces,
    }


def _paths_ratios(section, clock):
    return {
        f"{space}/{row['key']}": row["ratio"][clock]["median"]
        for space, entry in section["spaces"].items()
        for row in entry["rows"]
    }


def _paths_goals(section, clock):
    return {
        space: _goal(
            max(row["ratio"][clock]["median"] for row in entry["rows"]),
            GOALS["paths"],
            clock,
        )
        for space, entry in section["spaces"].items()
    }


def _format_paths(section, results):
    out = []
    for space, entry in section["spaces"].items():
        out += [
            "",
            f"Training step, supernet pinned to a path (sampling='fixed') vs "
            f"the extracted plain model, batch {section['batch_size']}, "
            f"{_space_title(space, entry)}:",
        ]
        out += _legend(entry)
        rows = [
            [
                row["key"],
                _fmt_summary(row["supernet_ms"]["wall"]),
                _fmt_summary(row["plain_ms"]["wall"]),
                _fmt_summary(row["ratio"]["wall"], 3),
                _fmt_summary(row["ratio"]["cpu"], 3),
            ]
            for row in entry["rows"]
        ]
        out += _table(
            ["path", "supernet ms", "plain ms", "ratio (wall)", "ratio (cpu)"],
            rows,
        )
        goal = results["goals"].get(f"paths/{space}")
        if goal:
            out.append(_goal_line(goal, "worst ratio"))
    return out


# === Section: epoch ===


def bench_epoch(settings, train_arrays, models=None):
    """Joint epoch time against the mean standalone epoch time, per space.

    The joint supernet (`uniform`) against the plain models of the paths of
    `paths` (on the large space, `balanced_paths`: their mean cost is the
    uniform expectation), one `fit` epoch each on the same pipeline.

    Args:
        settings: a `Settings`.
        train_arrays: training `(x_uint8, y)` arrays; the first
            `settings.epoch_examples` are used.
        models: optional shared `_Models`.
    """
    models = models or _Models(settings)
    x, y = train_arrays
    x, y = x[: settings.epoch_examples], y[: settings.epoch_examples]
    mean, std = data_lib.normalization_stats(x)
    dataset = data_lib.make_dataset(
        x, y, settings.batch_size, mean, std, shuffle=True, seed=settings.seed
    )
    spaces = {}
    for space in _spaces(settings):
        reference = models.reference(space)
        paths = models.paths(space)
        models.prepare(space, ["uniform"] + [f"plain/{p}" for p in paths])
        joint = models.model(space, "uniform")
        runners = {"joint": _epoch_runner(joint, dataset)}
        for path in paths:
            runners[f"standalone/{path}"] = _epoch_runner(
                models.model(space, f"plain/{path}"), dataset
            )
        samples = interleave(runners, settings.epoch_rounds, warmup=1)
        standalone_mean = _mean_samples([samples[f"standalone/{p}"] for p in paths])
        joint_s = _summaries(samples["joint"])
        mean_s = _summaries(standalone_mean)
        spaces[space] = {
            **_space_entry(joint),
            "joint_s": joint_s,
            "standalone_s": {
                path_key(reference, p): _summaries(samples[f"standalone/{p}"])
                for p in paths
            },
            "standalone_mean_s": mean_s,
            "ratio": paired_ratio(samples["joint"], standalone_mean),
            "joint_examples_per_s": len(x) / joint_s["wall"]["median"],
            "standalone_examples_per_s": len(x) / mean_s["wall"]["median"],
        }
    return {
        "examples": int(len(x)),
        "batch_size": settings.batch_size,
        "spaces": spaces,
    }


def _epoch_ratios(section, clock):
    return {
        f"{space}/joint_vs_standalone_mean": entry["ratio"][clock]["median"]
        for space, entry in section["spaces"].items()
    }


def _epoch_goals(section, clock):
    return {
        space: _goal(entry["ratio"][clock]["median"], GOALS["epoch"], clock)
        for space, entry in section["spaces"].items()
    }


def _format_epoch(section, results):
    out = []
    for space, entry in section["spaces"].items():
        out += [
            "",
            f"Epoch of {section['examples']} examples, joint (uniform) vs the "
            f"mean standalone epoch (plain models), "
            f"{_space_title(space, entry)}:",
        ]
        out += _legend(entry)
        rows = [
            [
                "joint",
                _fmt_summary(entry["joint_s"]["wall"]),
                f"{entry['joint_examples_per_s']:.0f}",
            ],
        ]
        rows += [
            [f"standalone {key}", _fmt_summary(s["wall"]), ""]
            for key, s in entry["standalone_s"].items()
        ]
        rows.append(
            [
                "standalone mean",
                _fmt_summary(entry["standalone_mean_s"]["wall"]),
                f"{entry['standalone_examples_per_s']:.0f}",
            ]
        )
        out += _table(["run", "seconds", "examples/s"], rows)
        line = (
            f"ratio joint/standalone: wall "
            f"{_fmt_summary(entry['ratio']['wall'], 3)}, cpu "
            f"{_fmt_summary(entry['ratio']['cpu'], 3)}"
        )
        goal = results["goals"].get(f"epoch/{space}")
        if goal:
            line += f"; goal <= {goal['goal']} ({goal['clock']}): {_verdict(goal)}"
        out.append(line)
    return out


# === Section: sampling ===


def bench_sampling(settings, models=None):
    """Step time of each sampling strategy relative to `uniform`.

    The aggregations need candidates of equal output shapes, so they are
    compared with `uniform` on the same space with `padding="same"`.
    """
    models = models or _Models(settings)
    variants = [
        ("uniform", "2x2", "uniform", "uniform"),
        ("per_example", "2x2", "per_example", "uniform"),
        ("fair", "2x2", "fair", "uniform"),
        ("uniform/same", "2x2_same", "uniform", "uniform/same"),
        ("aggregation_sum/same", "2x2_same", "aggregation_sum", "uniform/same"),
        (
            "aggregation_concat_1x1/same",
            "2x2_same",
            "aggregation_concat_1x1",
            "uniform/same",
        ),
    ]
    runners = {
        name: models.runner(space, kind, settings.batch_size)
        for name, space, kind, _ in variants
    }
    samples = interleave(runners, settings.rounds, settings.warmup)
    rows = [
        {
            "sampling": name,
            "ms": _ms(samples[name]),
            "relative_to": baseline,
            "ratio": paired_ratio(samples[name], samples[baseline]),
        }
        for name, _, _, baseline in variants
    ]
    return {"batch_size": settings.batch_size, "rows": rows}


def _sampling_ratios(section, clock):
    return {row["sampling"]: row["ratio"][clock]["median"] for row in section["rows"]}


def _format_sampling(section, results):
    out = ["", f"Sampling strategies, step time, batch {section['batch_size']}:"]
    rows = [
        [
            row["sampling"],
            _fmt_summary(row["ms"]["wall"]),
            row["relative_to"],
            _fmt_summary(row["ratio"]["wall"], 3),
            _fmt_summary(row["ratio"]["cpu"], 3),
        ]
        for row in section["rows"]
    ]
    return out + _table(
        ["sampling", "ms", "relative to", "ratio (wall)", "ratio (cpu)"], rows
    )


# === Section: scaling ===


def _measure_space(settings, models, space, batch_size):
    """Interleaved step times of the samplings and every plain path."""
    samplings = ("uniform", "per_example", "fair")
    runners = {kind: models.runner(space, kind, batch_size) for kind in samplings}
    num_paths = models.num_paths(space)
    for path in range(num_paths):
        runners[f"plain/{path}"] = models.runner(space, f"plain/{path}", batch_size)
    samples = interleave(runners, settings.rounds, settings.warmup)
    plain_mean = _mean_samples([samples[f"plain/{p}"] for p in range(num_paths)])
    return {
        "ms": {kind: _ms(samples[kind]) for kind in samplings},
        "plain_mean_ms": _ms(plain_mean),
        "ratio_to_plain_mean": {
            kind: paired_ratio(samples[kind], plain_mean) for kind in samplings
        },
    }


def bench_scaling(settings, models=None):
    """Step time against batch size and against search-space size.

    `uniform`, `per_example` and `fair` relative to the mean step time of
    the plain models of every path of the space: against batch size on the
    report's space, and against the space at `settings.batch_size`.
    `first_step_seconds` is the time of the first step of each model (it
    traces the train function; a model traced before at another batch size
    is traced again at less cost). `compile` measures it from a fresh
    process.
    """
    models = models or _Models(settings)
    by_batch = []
    for batch_size in settings.batch_sizes:
        row = _measure_space(settings, models, "2x2", batch_size)
        by_batch.append({"batch_size": batch_size, **row})
    by_space = []
    samplings = ("uniform", "per_example", "fair")
    for space in settings.spaces:
        for kind in samplings:
            models.runner(space, kind, settings.batch_size)
        first_step = {
            kind: next(
                seconds
                for (s, k, _), seconds in models.build_seconds.items()
                if (s, k) == (space, kind)
            )
            for kind in samplings
        }
        if space == "2x2" and settings.batch_size in settings.batch_sizes:
            row = by_batch[settings.batch_sizes.index(settings.batch_size)]
            row = {k: v for k, v in row.items() if k != "batch_size"}
        else:
            row = _measure_space(settings, models, space, settings.batch_size)
        reference = models.reference(space)
        by_space.append(
            {
                "space": space,
                "kernel_sizes": [list(k) for k in reference.kernel_sizes],
                "padding": reference.padding,
                "num_paths": reference.num_paths,
                **row,
                "first_step_seconds": first_step,
            }
        )
    return {
        "batch_size": settings.batch_size,
        "by_batch_size": by_batch,
        "by_search_space": by_space,
    }


def _scaling_ratios(section, clock):
    ratios = {}
    for key, rows in (
        ("batch_size", section["by_batch_size"]),
        ("space", section["by_search_space"]),
    ):
        for row in rows:
            for name, ratio in row["ratio_to_plain_mean"].items():
                ratios[f"{key}={row[key]}/{name}"] = ratio[clock]["median"]
    return ratios


def _format_scaling(section, results):
    clock = results["settings"]["clock"]
    out = []
    for title, key, rows in (
        ("batch size, report's space", "batch_size", section["by_batch_size"]),
        (
            f"search space, batch {section['batch_size']}",
            "space",
            section["by_search_space"],
        ),
    ):
        if not rows:
            continue
        out += [
            "",
            f"Step time vs {title}: per-step ms of the mean plain path, "
            f"and each sampling's ratio to it ({clock} clock):",
        ]
        table = []
        for row in rows:
            ratios = row["ratio_to_plain_mean"]
            cells = [row[key]]
            if key == "space":
                cells.append(row["num_paths"])
            cells += [
                _fmt_summary(row["plain_mean_ms"]["wall"]),
                f"{ratios['uniform'][clock]['median']:.3f}",
                f"{ratios['per_example'][clock]['median']:.3f}",
                f"{ratios['fair'][clock]['median']:.3f}",
            ]
            if key == "space":
                cells.append(f"{row['first_step_seconds']['uniform']:.1f}")
            table.append(cells)
        header = (
            [key]
            + (["paths"] if key == "space" else [])
            + ["plain ms", "uniform", "per_example", "fair"]
            + (["first step s"] if key == "space" else [])
        )
        out += _table(header, table)
    return out


# === Section: compile ===

# What the `compile` child process prints before its JSON result.
_CHILD_PREFIX = "BENCH_COMPILE_RESULT "


def measure_first_step(space, train_step, settings, started=None):
    """Build and first training step of a fresh supernet, in this process.

    Meant for a fresh process (`bench_compile` starts one per call): the
    time of the imports, then of building the supernet of `space`
    (`uniform` sampling, `train_step`), compiling it and running its first
    `fit` step (which traces the step), the peak resident memory after each,
    and the step time after that.

    Args:
        space: a bench space name.
        train_step: `"per_path"` or `"per_choice"`.
        settings: a `Settings` (batch size, seed, steps per timed block).
        started: `(wall, cpu)` clocks at the start of the process, before
            the imports; None to leave the import time out.

    Returns:
        A JSON-serialisable dict of seconds (`{"wall": ..., "cpu": ...}`)
        and MiB.
    """
    now = (time.perf_counter(), time.process_time())
    result = {
        "import_s": None
        if started is None
        else {
            "wall": now[0] - started[0],
            "cpu": now[1] - started[1],
        },
        "rss_after_import_mb": _peak_rss_mb(),
        "pid": os.getpid(),
    }
    with _Timer() as build:
        model = make_supernet(
            settings, space, sampling="uniform", train_step=train_step
        )
    result["rss_after_build_mb"] = _peak_rss_mb()
    dataset = _repeated(synthetic_batch(settings.batch_size, seed=settings.seed))
    with _Timer() as first:
        _first_fit(model, dataset)
    result["peak_rss_mb"] = _peak_rss_mb()
    run = _step_timer(model, dataset, settings.steps)
    blocks = [run() for _ in range(3)]
    result.update(
        {
            "num_paths": model.num_paths,
            "num_choices": model.space.num_choices,
            "train_step": model.train_step_mode,
            "build_s": build.per(1),
            "first_step_s": first.per(1),
            "to_first_step_s": {c: build.per(1)[c] + first.per(1)[c] for c in CLOCKS},
            "step_ms": {
                c: 1e3 * float(np.median([b[c] for b in blocks])) for c in CLOCKS
            },
        }
    )
    return result


def _child_main(request_json, started):
    """Entry point of a `compile` child process (see `_run_child`)."""
    request = json.loads(request_json)
    settings = Settings(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in request["settings"].items()
        }
    )
    tf.get_logger().setLevel("ERROR")
    result = measure_first_step(
        request["space"], request["train_step"], settings, started
    )
    print(_CHILD_PREFIX + json.dumps(result), flush=True)


def _run_child(space, train_step, settings):
    """`measure_first_step` in a fresh Python process; an `error` entry
    instead if it fails or runs past `settings.compile_timeout`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    request = json.dumps(
        {
            "space": space,
            "train_step": train_step,
            "settings": dataclasses.asdict(settings),
        }
    )
    code = (
        "import time; started = (time.perf_counter(), time.process_time()); "
        "import sys; from keras_supernet import bench; "
        "bench._child_main(sys.argv[1], started)"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p
    )
    start = time.perf_counter()
    try:
        process = subprocess.run(
            [sys.executable, "-c", code, request],
            capture_output=True,
            text=True,
            env=env,
            timeout=settings.compile_timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {settings.compile_timeout} s"}
    elapsed = time.perf_counter() - start
    for line in reversed(process.stdout.splitlines()):
        if line.startswith(_CHILD_PREFIX):
            result = json.loads(line[len(_CHILD_PREFIX) :])
            result["process_wall_s"] = elapsed
            return result
    tail = (process.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit status {process.returncode}: {tail}"}


def _compile_configs(settings):
    """`(space, train_step)` of every `compile` measurement."""
    spaces = [f"mnist{n}" for n in settings.compile_choices]
    spaces += [s for s in settings.compile_spaces if s not in spaces]
    configs = []
    for space in spaces:
        spec = space_spec(space)
        if "stages" in spec:
            paths = 4 ** num_choices(space)
        else:
            paths = math.prod(len(k) for k in spec["kernel_sizes"])
        for form in ("per_path", "per_choice"):
            if form == "per_path" and paths > PER_PATH_LIMIT:
                continue
            configs.append((space, form))
    return configs


def bench_compile(settings, models=None, log=None):
    """Build and first training step against the number of paths.

    Every configuration (`_compile_configs`: the `mnist<L>` spaces of
    `settings.compile_choices`, then `settings.compile_spaces`, each in
    both step forms where the per-path form is allowed) runs in a fresh
    Python process, `settings.compile_rounds` times in alternating order,
    so that no compile cache or memory is shared. See `measure_first_step`.
    """
    del models  # Every measurement runs in a process of its own.
    log = log or (lambda line: None)
    configs = _compile_configs(settings)
    measured = {config: [] for config in configs}
    for r in range(settings.compile_rounds):
        for space, form in configs if r % 2 == 0 else reversed(configs):
            result = _run_child(space, form, settings)
            measured[(space, form)].append(result)
            log(
                f"[bench]   compile {space} {form}: "
                + (
                    result["error"]
                    if "error" in result
                    else f"{result['to_first_step_s']['wall']:.1f} s, "
                    f"{result['peak_rss_mb']:.0f} MiB"
                )
            )
    rows = []
    for (space, form), results in measured.items():
        row = {"space": space, "train_step": form}
        good = [r for r in results if "error" not in r]
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            row["errors"] = errors
        if good:
            row.update(
                {
                    "num_choices": good[0]["num_choices"],
                    "num_paths": good[0]["num_paths"],
                    "pids": [r["pid"] for r in good],
                    **{
                        key: {c: summarize([r[key][c] for r in good]) for c in CLOCKS}
                        for key in (
                            "build_s",
                            "first_step_s",
                            "to_first_step_s",
                            "step_ms",
                        )
                    },
                    **{
                        key: summarize([r[key] for r in good])
                        for key in (
                            "rss_after_import_mb",
                            "peak_rss_mb",
                            "process_wall_s",
                        )
                    },
                }
            )
            if good[0]["import_s"] is not None:
                row["import_s"] = {
                    c: summarize([r["import_s"][c] for r in good]) for c in CLOCKS
                }
        rows.append(row)
    return {
        "batch_size": settings.batch_size,
        "rounds": settings.compile_rounds,
        "rows": rows,
    }


def _compile_goals(section, clock):
    # "Builds, compiles and trains its first steps in under 60 s", on the
    # wall clock whatever `clock` is: the time a user waits.
    del clock
    values = [
        row["to_first_step_s"]["wall"]["median"]
        for row in section["rows"]
        if row.get("num_choices") == 20 and "to_first_step_s" in row
    ]
    values += [
        math.inf
        for row in section["rows"]
        if row.get("num_choices") == 20 and row.get("errors")
    ]
    if not values:
        return {}
    return {"20_choices": _goal(max(values), GOALS["compile"], "wall", strict=True)}


def _format_compile(section, results):
    out = [
        "",
        "Build + first training step against the number of paths (uniform "
        f"sampling, batch {section['batch_size']}; each in a fresh process, "
        f"median of {section['rounds']}): seconds to import TensorFlow and "
        "keras_supernet, then from nothing built to the end of the first fit "
        "step (build + compile + trace + step), peak resident memory, and "
        "the step time after it:",
    ]
    header = [
        "space",
        "choices",
        "paths",
        "step",
        "imports s",
        "build s",
        "to first step s",
        "(cpu s)",
        "peak MiB",
        "(+ over imports)",
        "step ms",
        "(cpu ms)",
    ]
    rows = []
    for row in section["rows"]:
        if "to_first_step_s" not in row:
            error = "error: " + "; ".join(row["errors"])
            rows.append(
                [row["space"], "", "", row["train_step"], "", "", error]
                + [""] * (len(header) - 7)
            )
            continue
        imports = row.get("import_s", {}).get("wall", {}).get("median")
        rows.append(
            [
                row["space"],
                row["num_choices"],
                f"{row['num_paths']:.3g}",
                row["train_step"],
                "" if imports is None else f"{imports:.1f}",
                f"{row['build_s']['wall']['median']:.1f}",
                f"{row['to_first_step_s']['wall']['median']:.1f}",
                f"{row['to_first_step_s']['cpu']['median']:.1f}",
                f"{row['peak_rss_mb']['median']:.0f}",
                f"{row['peak_rss_mb']['median'] - row['rss_after_import_mb']['median']:.0f}",
                f"{row['step_ms']['wall']['median']:.1f}",
                f"{row['step_ms']['cpu']['median']:.1f}",
            ]
        )
    out += _table(header, rows)
    goal = results["goals"].get("compile/20_choices")
    if goal:
        out.append(_goal_line(goal, "20 choices: seconds to the first step"))
    return out


# === Section: options ===

_OPTIONS = {
    "per_path": "one switch_case over whole per-path steps",
    "per_choice": "a switch per choice; per choice a switch updates the "
    "sampled candidate",
    "restoring": "a switch per choice; every variable updated, the unused "
    "candidates' weights and slots restored (masks)",
    "shared_kernel": "prototype: per_choice, convolutions of one block share "
    "the largest kernel (sliced, once-for-all style)",
}


def bench_options(settings, models=None):
    """The joint step under each way of training only the sampled path.

    On the report's space and `settings.large_space`, interleaved: the
    per-path step (where allowed), the per-choice step with switched
    updates, the per-choice step with restoring updates (the step
    `tf.distribute` uses), the `shared_kernel_supernet` prototype, and the
    plain models of the `paths` of the space (their mean is the baseline).
    """
    models = models or _Models(settings)
    batch_size = settings.batch_size
    spaces = {}
    for space in _spaces(settings):
        paths = models.paths(space)
        options = [
            o
            for o in _OPTIONS
            if o != "per_path" or models.num_paths(space) <= PER_PATH_LIMIT
        ]
        models.prepare(space, options + [f"plain/{p}" for p in paths])
        runners = {o: models.runner(space, o, batch_size) for o in options}
        for path in paths:
            runners[f"plain/{path}"] = models.runner(space, f"plain/{path}", batch_size)
        samples = interleave(runners, settings.rounds, settings.warmup)
        plain_mean = _mean_samples([samples[f"plain/{p}"] for p in paths])
        spaces[space] = {
            **_space_entry(models.reference(space), train_step="various"),
            "plain_paths": len(paths),
            "plain_mean_ms": _ms(plain_mean),
            "rows": [
                {
                    "option": o,
                    "description": _OPTIONS[o],
                    "ms": _ms(samples[o]),
                    "ratio_to_plain_mean": paired_ratio(samples[o], plain_mean),
                    "ratio_to_per_choice": paired_ratio(
                        samples[o], samples["per_choice"]
                    ),
                }
                for o in options
            ],
        }
    return {"batch_size": batch_size, "spaces": spaces}


def _options_ratios(section, clock):
    return {
        f"{space}/{row['option']}": row["ratio_to_plain_mean"][clock]["median"]
        for space, entry in section["spaces"].items()
        for row in entry["rows"]
    }


def _format_options(section, results):
    out = []
    for space, entry in section["spaces"].items():
        out += [
            "",
            f"Joint (uniform) training step by update option, batch "
            f"{section['batch_size']}, {space} ({entry['num_choices']} "
            f"choices, {entry['num_paths']:.3g} paths); baseline: the mean of "
            f"{entry['plain_paths']} plain paths, "
            f"{_fmt_summary(entry['plain_mean_ms']['wall'])} ms:",
        ]
        rows = [
            [
                row["option"],
                _fmt_summary(row["ms"]["wall"]),
                _fmt_summary(row["ratio_to_plain_mean"]["wall"], 3),
                _fmt_summary(row["ratio_to_plain_mean"]["cpu"], 3),
                f"{row['ratio_to_per_choice']['wall']['median']:.3f}",
                f"{row['ratio_to_per_choice']['cpu']['median']:.3f}",
            ]
            for row in entry["rows"]
        ]
        out += _table(
            [
                "option",
                "ms",
                "/ plain (wall)",
                "/ plain (cpu)",
                "/ per_choice (wall)",
                "(cpu)",
            ],
            rows,
        )
    return out


# === Section: inference ===


def export_available():
    """None if `keras_supernet.export` can export, else the reason why not."""
    try:
        from keras_supernet import export  # noqa: F401
    except ImportError as e:  # a missing optional runtime, e.g. LiteRT
        return f"keras_supernet.export cannot be imported: {e}"
    missing = [
        name
        for name in ("export_saved_model", "export_tflite")
        if not hasattr(export, name)
    ]
    if missing:
        return f"keras_supernet.export has no {', '.join(missing)}"
    return None


def _repeat_to(images, n):
    reps = math.ceil(n / len(images))
    return np.concatenate([images] * reps)[:n]


def _keras_runner(model, x, calls, method):
    run_model = getattr(model, method)
    kwargs = {"verbose": 0, "batch_size": len(x)} if method == "predict" else {}

    def run():
        with _Timer() as timer:
            for _ in range(calls):
                np.asarray(run_model(x, **kwargs))
        return timer.per(calls)

    return run


def _saved_model_runner(serve, images, calls):
    from keras_supernet import export

    images = tf.constant(images, tf.float32)

    def run():
        with _Timer() as timer:
            for _ in range(calls):
                serve(**{export.INPUT_NAME: images})[export.OUTPUT_NAME].numpy()
        return timer.per(calls)

    return run


def _tflite_runner(path, images, calls, num_threads):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, images.shape)
    interpreter.allocate_tensors()
    images = np.asarray(images, np.float32)

    def run():
        with _Timer() as timer:
            for _ in range(calls):
                interpreter.set_tensor(input_index, images)
                interpreter.invoke()
                interpreter.get_tensor(output_index)
        return timer.per(calls)

    return run


def bench_inference(settings, images, work_dir):
    """Latency at batch 1 and throughput of Keras, SavedModel and TFLite.

    The plain model of `settings.inference_path` is exported with
    `keras_supernet.export` (normalisation and softmax inside the graph,
    raw pixels in) to a SavedModel and to float, dynamic-range and int8
    TFLite files. Keras models get the normalised images. TFLite runs with
    LiteRT, on as many threads as the machine has cores, like TensorFlow.

    Args:
        settings: a `Settings`.
        images: raw uint8 images `[N, H, W]` (inputs and int8 calibration).
        work_dir: folder for the exported files.

    Returns:
        A dict with `rows`, or with `skipped` (the reason) when the export
        module is unavailable.
    """
    reason = export_available()
    if reason is not None:
        return {"skipped": reason}
    from keras_supernet import export

    supernet = make_supernet(settings, sampling="fixed")
    supernet.set_path(settings.inference_path)
    plain = extract_path(supernet, settings.inference_path)
    mean, std = data_lib.normalization_stats(images)
    saved_model_dir = os.path.join(work_dir, "saved_model", "1")
    export.export_saved_model(plain, saved_model_dir, mean, std)
    tflite = {}
    for quantize in ("none", "dynamic", "int8"):
        tflite[quantize] = export.export_tflite(
            saved_model_dir,
            os.path.join(work_dir, f"model.{quantize}.tflite"),
            quantize=quantize,
            representative_images=images[:200],
        )
    serve = tf.saved_model.load(saved_model_dir).signatures[export.SIGNATURE_KEY]
    threads = os.cpu_count() or 1
    names = {
        "keras_predict/supernet": "Keras predict, supernet on the path",
        "keras_predict/plain": "Keras predict, extracted model",
        "keras_predict_on_batch/plain": "Keras predict_on_batch, extracted",
        "saved_model": "SavedModel serving_default",
        "tflite/float": "TFLite float32",
        "tflite/dynamic": "TFLite dynamic-range int8 weights",
        "tflite/int8": "TFLite full int8",
    }
    measured = {}
    for batch, calls in (
        (1, settings.inference_calls),
        (settings.throughput_batch, max(1, settings.inference_calls // 10)),
    ):
        raw = _repeat_to(images, batch)[..., np.newaxis].astype(np.float32)
        normalised = ((raw / 255.0 - mean) / std).astype(np.float32)
        runners = {
            "keras_predict/supernet": _keras_runner(
                supernet, normalised, calls, "predict"
            ),
            "keras_predict/plain": _keras_runner(plain, normalised, calls, "predict"),
            "keras_predict_on_batch/plain": _keras_runner(
                plain, normalised, calls, "predict_on_batch"
            ),
            "saved_model": _saved_model_runner(serve, raw, calls),
        }
        for quantize, label in (
            ("none", "float"),
            ("dynamic", "dynamic"),
            ("int8", "int8"),
        ):
            runners[f"tflite/{label}"] = _tflite_runner(
                tflite[quantize], raw, calls, threads
            )
        measured[batch] = interleave(
            runners, settings.inference_rounds, settings.warmup
        )
    throughput_batch = settings.throughput_batch
    reference = "keras_predict/plain"
    rows = []
    for name, description in names.items():
        latency = measured[1][name]
        bulk = measured[throughput_batch][name]
        rows.append(
            {
                "runtime": name,
                "description": description,
                "latency_ms": _ms(latency),
                "throughput_examples_per_s": {
                    clock: throughput_batch / summarize(bulk[clock])["median"]
                    for clock in CLOCKS
                },
                "batch_ms": _ms(bulk),
                "latency_ratio_to_keras_predict": paired_ratio(
                    latency, measured[1][reference]
                ),
            }
        )
    return {
        "path": supernet.path_label(settings.inference_path),
        "throughput_batch": throughput_batch,
        "tflite_threads": threads,
        "file_bytes": {
            **{
                f"tflite/{label}": os.path.getsize(tflite[q])
                for q, label in (
                    ("none", "float"),
                    ("dynamic", "dynamic"),
                    ("int8", "int8"),
                )
            },
        },
        "rows": rows,
    }


def _inference_ratios(section, clock):
    return {
        row["runtime"]: row["latency_ratio_to_keras_predict"][clock]["median"]
        for row in section.get("rows", [])
    }


def _format_inference(section, results):
    clock = results["settings"]["clock"]
    if "skipped" in section:
        return ["", f"Inference: skipped ({section['skipped']})."]
    out = [
        "",
        f"Inference of path {section['path']}: latency at batch 1, "
        f"throughput at batch {section['throughput_batch']} "
        f"(TFLite on {section['tflite_threads']} threads):",
    ]
    rows = [
        [
            row["runtime"],
            _fmt_summary(row["latency_ms"]["wall"], 3),
            f"{row['throughput_examples_per_s']['wall']:.0f}",
            f"{1 / row['latency_ratio_to_keras_predict'][clock]['median']:.1f}x",
        ]
        for row in section["rows"]
    ]
    return out + _table(
        ["runtime", "latency ms", "examples/s", "faster than predict (batch 1)"],
        rows,
    )


# === Section: headline ===


def time_to_match(runs, tolerance=0.001):
    """Joint training time until every path matches its standalone best.

    Args:
        runs: run entries in the `results.json` format of
            `keras_supernet.experiment`: dicts with `mode` (`"joint"` or
            `"standalone"`), `seed`, `path`, `label` and `history`, a list of
            per-epoch rows with `val_accuracy`, `seconds` (cumulative
            training seconds) and optionally `wall_seconds` (cumulative
            training and evaluation seconds).
        tolerance: a joint path matches once its validation accuracy is at
            least its standalone best minus `tolerance` (0.001 = 0.1
            percentage point).

    A path matches from the first joint epoch whose validation accuracy is
    within `tolerance` of its standalone best, and the joint training has
    matched once every path has: `bin/train` keeps a checkpoint of every
    epoch and `bin/export` extracts each path from its own best epoch, so
    each path is then available at standalone quality. The stricter reading,
    one epoch whose checkpoint matches for every path at once, is reported
    as `same_epoch_match` and `same_epoch_ratio`.

    Returns:
        One dict per seed that has both a joint run and standalone runs:
        standalone bests and times, each path's first matching joint epoch
        (`path_match_epochs`, by label, None if never), the epoch where the
        last path matches (`match_epoch`, None if one never does), the joint
        time until then (its whole training if never, with `reached` False:
        the ratio is then a lower bound), and `ratio` = joint time / sum of
        the standalone trainings' times; `ratio_to_best` divides by the sum
        of the standalone times until each one's best epoch instead, and
        `wall_ratio` uses `wall_seconds`.
    """
    by_seed = {}
    for run in runs:
        if run.get("history"):
            by_seed.setdefault(run["seed"], []).append(run)
    results = []
    for seed, seed_runs in sorted(by_seed.items()):
        joint = {r["path"]: r for r in seed_runs if r["mode"] == "joint"}
        standalone = {r["path"]: r for r in seed_runs if r["mode"] == "standalone"}
        paths = sorted(standalone)
        if not joint or not paths or any(p not in joint for p in paths):
            continue
        best = {}
        for p in paths:
            history = standalone[p]["history"]
            accuracies = [row["val_accuracy"] for row in history]
            epoch = int(np.argmax(accuracies))
            best[p] = {
                "label": standalone[p]["label"],
                "best_val_accuracy": accuracies[epoch],
                "best_epoch": epoch + 1,
                "epochs": len(history),
                "seconds": history[-1]["seconds"],
                "seconds_to_best": history[epoch]["seconds"],
                "wall_seconds": history[-1].get("wall_seconds", history[-1]["seconds"]),
            }
        joint_epochs = min(len(joint[p]["history"]) for p in paths)
        matched = {
            p: [
                joint[p]["history"][e]["val_accuracy"]
                >= best[p]["best_val_accuracy"] - tolerance - 1e-12
                for e in range(joint_epochs)
            ]
            for p in paths
        }
        path_match = {
            p: next((e + 1 for e, m in enumerate(matched[p]) if m), None) for p in paths
        }
        match_epoch = None if None in path_match.values() else max(path_match.values())
        same_epoch_match = next(
            (e + 1 for e in range(joint_epochs) if all(matched[p][e] for p in paths)),
            None,
        )

        def joint_time(
            epoch, key="seconds", history=joint[paths[0]]["history"], last=joint_epochs
        ):
            row = history[(epoch or last) - 1]
            return row.get(key, row["seconds"])

        joint_seconds = joint_time(match_epoch)
        joint_wall = joint_time(match_epoch, "wall_seconds")
        standalone_sum = sum(b["seconds"] for b in best.values())
        to_best_sum = sum(b["seconds_to_best"] for b in best.values())
        wall_sum = sum(b["wall_seconds"] for b in best.values())
        gaps = {
            best[p]["label"]: 100
            * (
                max(r["val_accuracy"] for r in joint[p]["history"][:joint_epochs])
                - best[p]["best_val_accuracy"]
            )
            for p in paths
        }
        results.append(
            {
                "seed": seed,
                "tolerance": tolerance,
                "standalone": {b["label"]: b for b in best.values()},
                "standalone_seconds_sum": standalone_sum,
                "standalone_seconds_to_best_sum": to_best_sum,
                "joint_epochs": joint_epochs,
                "path_match_epochs": {best[p]["label"]: path_match[p] for p in paths},
                "match_epoch": match_epoch,
                "reached": match_epoch is not None,
                "joint_seconds": joint_seconds,
                "joint_best_gap_pp": gaps,
                "ratio": joint_seconds / standalone_sum,
                "same_epoch_match": same_epoch_match,
                "same_epoch_ratio": joint_time(same_epoch_match) / standalone_sum,
                "ratio_to_best": joint_seconds / to_best_sum,
                "wall_ratio": joint_wall / wall_sum,
            }
        )
    return results


def _evaluate_accuracy(model, dataset):
    return float(model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])


def _trace_and_restore(model, train_ds, val_ds):
    """Traces `model`'s train and test functions, leaving its state as it was.

    Runs one training step and one evaluation batch, then puts back every
    model and optimizer variable (the sampler's seed state included), so that
    the timed training starts from the initial state without paying for
    tracing, as a long training would.
    """
    model.optimizer.build(model.trainable_variables)
    variables = list(model.variables) + list(model.optimizer.variables)
    saved = [np.array(v.numpy()) for v in variables]
    model.fit(train_ds.take(1), epochs=1, verbose=0, shuffle=False)
    model.evaluate(val_ds.take(1), verbose=0)
    for variable, value in zip(variables, saved):
        variable.assign(value)


def bench_headline(settings, arrays):
    """Joint training time to match every standalone best, measured.

    Trains the joint supernet (`uniform`) for `settings.joint_epochs` and
    every path alone (`fixed`, same seed: same initial weights) for
    `settings.epochs`, all five advancing one epoch in turn so that they
    share the machine's load. After each epoch the trained paths are
    evaluated on a validation split held out from the training set (the
    joint supernet: every path). `seconds` counts `fit` only; `wall_seconds`
    adds the validation. The train and test functions are traced before the
    clocks start (and the initial state restored), as tracing is a
    negligible part of a real training but not of a short benchmark. The
    data pipeline and the epoch order are those of
    `keras_supernet.experiment`.

    Args:
        settings: a `Settings`.
        arrays: `keras_supernet.data.load_arrays` output.

    Returns:
        A dict with the `runs` (in the `results.json` format) and their
        `time_to_match` per seed.
    """
    x_all, y_all = arrays["train"]
    if settings.val_size >= len(x_all):
        raise ValueError(
            f"Invalid value for argument `val_size`. Expected fewer than the "
            f"{len(x_all)} training examples. Received val_size="
            f"{settings.val_size}."
        )
    (x_tr, y_tr), (x_val, y_val) = data_lib.split_validation(
        x_all, y_all, settings.val_size, seed=0
    )
    if settings.train_size is not None:
        x_tr, y_tr = x_tr[: settings.train_size], y_tr[: settings.train_size]
    # The experiment's recipe and data pipeline (`keras_supernet.training`);
    # the test split is not used.
    data = training.Data(
        ((x_tr, y_tr), (x_val, y_val), (x_val[:0], y_val[:0])),
        settings.batch_size,
    )
    seed = settings.seed
    space = dict(presets.REPORT)

    def build(sampling):
        return training.build_model(space, settings.learning_rate, sampling, seed)

    trainings = [("joint", None, build("uniform"))]
    num_paths = trainings[0][2].num_paths
    for path in range(num_paths):
        model = build("fixed")
        model.set_path(path)
        trainings.append(("standalone", path, model))
    entries = {}
    for mode, path, model in trainings:
        for p in range(num_paths) if mode == "joint" else [path]:
            entries[(mode, p)] = {
                "mode": mode,
                "seed": seed,
                "path": p,
                "label": model.path_label(p),
                "history": [],
            }
    clocks = {
        (mode, path): {"seconds": 0.0, "wall_seconds": 0.0}
        for mode, path, _ in trainings
    }
    for _, _, model in trainings:
        _trace_and_restore(model, data.train(seed, 0), data.val)

    epochs = max(settings.epochs, settings.joint_epochs)
    for epoch in range(epochs):
        for mode, path, model in trainings:
            limit = settings.joint_epochs if mode == "joint" else settings.epochs
            if epoch >= limit:
                continue
            # Every training gets its own pipeline, as in the experiment: the
            # first pass over a dataset also fills its cache.
            _, _, fit_seconds = training.train_epoch(
                model, data.train(seed, epoch), epoch, epochs
            )
            clock = clocks[(mode, path)]
            clock["seconds"] += fit_seconds
            accuracies = {}
            with _Timer() as eval_timer:
                for p in range(num_paths) if mode == "joint" else [path]:
                    model.set_path(p)
                    accuracies[p] = _evaluate_accuracy(model, data.val)
            clock["wall_seconds"] += fit_seconds + eval_timer.wall
            for p, accuracy in accuracies.items():
                entries[(mode, p)]["history"].append(
                    {
                        "epoch": epoch + 1,
                        "val_accuracy": accuracy,
                        "seconds": clock["seconds"],
                        "wall_seconds": clock["wall_seconds"],
                    }
                )
    entries = list(entries.values())
    return {
        "train_size": int(len(x_tr)),
        "val_size": int(len(x_val)),
        "epochs": settings.epochs,
        "joint_epochs": settings.joint_epochs,
        "runs": entries,
        "seeds": time_to_match(entries, settings.tolerance),
    }


def headline_from_results(run_dir, tolerance=0.001):
    """`time_to_match` of the runs of an experiment's results.json.

    Raises:
        keras_supernet.runs.RunFolderError: no readable results file.
    """
    _, entries = runs.RunFolder(run_dir).read_results()
    return {"run_dir": os.fspath(run_dir), "seeds": time_to_match(entries, tolerance)}


def _headline_ratios(entry):
    ratios = {}
    for seed in entry["seeds"]:
        ratios[f"seed{seed['seed']}"] = seed["ratio"]
        ratios[f"seed{seed['seed']}/to_best"] = seed["ratio_to_best"]
    return ratios


def _headline_goals(section, clock):
    if not section["seeds"]:
        return {}
    goal = _goal(
        max(s["ratio"] for s in section["seeds"]),
        GOALS["headline"],
        "wall",
        strict=True,
    )
    goal["reached"] = all(s["reached"] for s in section["seeds"])
    return {"": goal}


def _format_headline_entry(title, entry, settings, measured):
    out = [
        "",
        f"Headline ({title}): joint training time until every path is "
        f"within {100 * settings['tolerance']:.1f} pp of its "
        f"standalone best val accuracy, vs the sum of the standalone "
        f"trainings (goal < {GOALS['headline']}):",
    ]
    if measured:
        out.append(
            f"train {entry['train_size']}, val {entry['val_size']}, "
            f"standalone {entry['epochs']} epochs, joint up to "
            f"{entry['joint_epochs']} epochs"
        )
    rows = []
    for seed in entry["seeds"]:
        lower = "" if seed["reached"] else ">"
        # Older JSON files lack the per-path and same-epoch figures.
        same = seed.get("same_epoch_match", seed["match_epoch"])
        same_ratio = seed.get("same_epoch_ratio", seed["ratio"])
        rows.append(
            [
                seed["seed"],
                f"{seed['standalone_seconds_sum']:.1f}",
                f"{seed['joint_seconds']:.1f}",
                " ".join(
                    "-" if e is None else str(e)
                    for e in seed.get("path_match_epochs", {}).values()
                ),
                f"{seed['match_epoch']}/{seed['joint_epochs']}"
                if seed["reached"]
                else f"not in {seed['joint_epochs']}",
                lower + f"{seed['ratio']:.3f}",
                lower + f"{seed['ratio_to_best']:.3f}",
                ("" if same else ">") + f"{same_ratio:.3f}",
                " ".join(f"{gap:+.2f}" for gap in seed["joint_best_gap_pp"].values()),
            ]
        )
    return out + _table(
        [
            "seed",
            "standalone sum s",
            "joint s",
            "path match epochs",
            "match epoch",
            "ratio",
            "ratio to best",
            "same-epoch ratio",
            "best joint - standalone (pp)",
        ],
        rows,
    )


def _format_headline(section, results):
    return _format_headline_entry(
        "measured", section, results["settings"], measured=True
    )


# === The registry of sections ===


@dataclasses.dataclass(frozen=True)
class Section:
    """One benchmark section: how to measure, judge and print it.

    Attributes:
        name: the section's name (`--sections=`), its key in the results.
        measure: `measure(context)` with a `_Context`, returning the
            section's JSON-serialisable results.
        format: `format(section, results)`: the lines of its plain-text
            table (`results["goals"]` holds the goals already).
        ratios: `ratios(section, clock)`: its headline figures on `clock`,
            by name (all lower-is-better), or None.
        goals: `goals(section, clock)`: its goals by name (`_goal` dicts;
            name "" for the section's only goal), or None.
        needs_data: whether it needs the image arrays.
    """

    name: str
    measure: Callable
    format: Callable
    ratios: Callable = None
    goals: Callable = None
    needs_data: bool = False


@dataclasses.dataclass
class _Context:
    """What a section's `measure` gets."""

    settings: Settings
    models: _Models
    arrays: dict
    work_dir: str
    log: Callable


def _measure_inference(context):
    folder = os.path.join(context.work_dir, "inference")
    os.makedirs(folder, exist_ok=True)
    return bench_inference(context.settings, context.arrays["train"][0][:1000], folder)


REGISTRY = (
    Section(
        "paths",
        lambda c: bench_paths(c.settings, c.models),
        _format_paths,
        _paths_ratios,
        _paths_goals,
    ),
    Section(
        "epoch",
        lambda c: bench_epoch(c.settings, c.arrays["train"], c.models),
        _format_epoch,
        _epoch_ratios,
        _epoch_goals,
        needs_data=True,
    ),
    Section(
        "sampling",
        lambda c: bench_sampling(c.settings, c.models),
        _format_sampling,
        _sampling_ratios,
    ),
    Section(
        "scaling",
        lambda c: bench_scaling(c.settings, c.models),
        _format_scaling,
        _scaling_ratios,
    ),
    Section(
        "compile",
        lambda c: bench_compile(c.settings, log=c.log),
        _format_compile,
        goals=_compile_goals,
    ),
    Section(
        "options",
        lambda c: bench_options(c.settings, c.models),
        _format_options,
        _options_ratios,
    ),
    Section(
        "inference",
        _measure_inference,
        _format_inference,
        _inference_ratios,
        needs_data=True,
    ),
    Section(
        "headline",
        lambda c: bench_headline(c.settings, c.arrays),
        _format_headline,
        lambda section, clock: _headline_ratios(section),
        _headline_goals,
        needs_data=True,
    ),
)
SECTIONS = tuple(section.name for section in REGISTRY)
_BY_NAME = {section.name: section for section in REGISTRY}


# === Whole benchmark ===


def machine_info():
    """The machine and software the benchmark runs on."""
    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _check_sections(sections, allow_empty=False):
    sections = tuple(sections)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not (sections or allow_empty):
        raise ValueError(
            f"Invalid value for argument `sections`. Expected names among "
            f"{list(SECTIONS)}. Received sections={list(sections)!r}."
        )
    return sections


def _prefixed(section_name, entries):
    return {
        f"{section_name}/{name}" if name else section_name: value
        for name, value in entries.items()
    }


def flat_ratios(results):
    """Every headline ratio of `results`, by name (all lower-is-better)."""
    clock = results["settings"]["clock"]
    ratios = {}
    for section in REGISTRY:
        if results.get(section.name) and section.ratios is not None:
            ratios.update(
                _prefixed(section.name, section.ratios(results[section.name], clock))
            )
    for entry in results.get("results") or []:
        ratios.update(_prefixed(f"results/{entry['run_dir']}", _headline_ratios(entry)))
    return ratios


def goals(results):
    """Every goal of `results`, by name (`"paths/2x2"`, `"headline"`)."""
    clock = results["settings"]["clock"]
    found = {}
    for section in REGISTRY:
        if results.get(section.name) and section.goals is not None:
            found.update(
                _prefixed(section.name, section.goals(results[section.name], clock))
            )
    return found


def run_benchmark(
    settings=None,
    quick=False,
    sections=SECTIONS,
    dataset="mnist",
    data_dir=None,
    results_dirs=(),
    work_dir=None,
    log=None,
):
    """Runs the benchmark sections and returns their results.

    Args:
        settings: a `Settings`; default `QUICK` if `quick` else `FULL`.
        quick: the small version (about three minutes on two busy cores).
        sections: names among `SECTIONS`.
        dataset: `"mnist"` or `"fashion_mnist"` (for `epoch`, `inference`,
            `headline`).
        data_dir: folder with the IDX files; None loads the dataset with
            tensorflow-datasets, or in `quick` mode uses the repository's
            `tests/data/mnist_small`.
        results_dirs: experiment run folders whose `results.json` gets the
            `time_to_match` analysis (no training).
        work_dir: folder for exported files; a temporary one by default.
        log: callable receiving one progress line at a time, or None.

    Returns:
        A JSON-serialisable dict: `machine`, `settings`, one entry per
        section, `results` (per run folder), `ratios` (every ratio by name),
        `goals`, and timing metadata.

    Raises:
        ValueError: invalid arguments.
        keras_supernet.data.DataError: missing or malformed data files.
        OSError: unreadable results files.
    """
    if settings is None:
        settings = QUICK if quick else FULL
    sections = _check_sections(sections, allow_empty=bool(results_dirs))
    if quick and data_dir is None:
        data_dir = QUICK_DATA_DIR
    log = log or (lambda line: None)
    headlines = [headline_from_results(d, settings.tolerance) for d in results_dirs]
    arrays = None
    if any(_BY_NAME[name].needs_data for name in sections):
        arrays = data_lib.load_arrays(dataset, data_dir)
    started = time.perf_counter()
    results = {
        "schema_version": SCHEMA_VERSION,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "quick": bool(quick),
        "sections": list(sections),
        "dataset": dataset,
        "data_dir": os.path.abspath(data_dir) if data_dir else None,
        "settings": dataclasses.asdict(settings),
        "machine": machine_info(),
        "load_average_start": _load_average(),
        "section_seconds": {},
        "results": headlines,
    }
    with tempfile.TemporaryDirectory() as tmp:
        context = _Context(settings, _Models(settings), arrays, work_dir or tmp, log)
        for name in sections:
            log(f"[bench] {name} ...")
            start = time.perf_counter()
            results[name] = _BY_NAME[name].measure(context)
            results["section_seconds"][name] = time.perf_counter() - start
            log(f"[bench] {name} done in {results['section_seconds'][name]:.1f} s")
    results["total_seconds"] = time.perf_counter() - started
    results["load_average_end"] = _load_average()
    results["peak_rss_mb"] = _peak_rss_mb()
    results["ratios"] = flat_ratios(results)
    results["goals"] = goals(results)
    return results


def write_json(results, path):
    """Writes `results` to `path` with the run folders' atomic writer."""
    runs.write_json(path, results)
    return os.fspath(path)


def format_table(results):
    """A plain-text report of `results` (medians [quartiles])."""
    clock = results["settings"]["clock"]
    machine = results["machine"]
    out = [
        f"keras_supernet bench ({'quick' if results['quick'] else 'full'}): "
        f"{machine['nproc']} x {machine['cpu_model']}, TensorFlow "
        f"{machine['tensorflow']}, Keras {machine['keras']}",
        f"load average {results['load_average_start']} -> "
        f"{results['load_average_end']}; total {results['total_seconds']:.0f} s;"
        f" goals judged on the {clock} clock; figures: median [q25-q75]",
    ]
    for section in REGISTRY:
        if results.get(section.name):
            out += section.format(results[section.name], results)
    for entry in results.get("results") or []:
        out += _format_headline_entry(
            f"from {entry['run_dir']}",
            entry,
            results["settings"],
            measured=False,
        )
    found = results.get("goals") or {}
    if found:
        out += [
            "",
            "Goals: "
            + "; ".join(
                f"{name} {goal['value']:.3f} ({goal['clock']}; goal "
                f"{'<' if goal['strict'] else '<='} {goal['goal']}) "
                f"{_verdict(goal)}"
                for name, goal in found.items()
            ),
        ]
    return "\n".join(out)
