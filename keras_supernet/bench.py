"""Benchmarks of the supernet against plain models: the library behind `bin/bench`.

Every timing is relative. Competing variants run interleaved in one process
after a warm-up, in rounds whose order alternates (A B, then B A), and each
variant's per-round figures are summarised by their median, quartiles and
extremes. A ratio is the median of the per-round ratios of two variants
measured next to each other, so slow drifts of a shared machine's load hit
both sides and cancel. Every timing is taken on two clocks: wall time, and
the CPU time of the process (all its threads), which a busy machine disturbs
much less; the goals are judged on `Settings.clock`.

Sections (each a function returning a JSON-serialisable dict):

- `paths`: training step time of a supernet pinned to one path
  (`sampling="fixed"`) against the plain model `extract_path` gives for that
  path, trained the same way (same optimizer, loss, metrics, batch), per path.
- `epoch`: one `fit` epoch of joint training (`sampling="uniform"`) against
  the mean of the standalone epochs, on the same `tf.data` pipeline.
- `sampling`: step time of `per_example`, `fair` and the aggregations
  relative to `uniform`.
- `scaling`: step time against batch size, and against the size of the search
  space (2x2, 3x3 = kernels (3, 5, 7) twice, 3 layers).
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
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_supernet import data as data_lib
from keras_supernet.extract import extract_path
from keras_supernet.supernet import Supernet

SECTIONS = ("paths", "epoch", "sampling", "scaling", "inference", "headline")
CLOCKS = ("wall", "cpu")
SCHEMA_VERSION = 1

# Goals: every ratio is "lower is better".
GOALS = {"paths": 1.05, "epoch": 1.05, "headline": 0.35}

# The report's architecture, and the search spaces of the `scaling` section.
BASE_SPACE = {
    "kernel_sizes": ((3, 5), (3, 5)),
    "filters": (16, 32),
    "hidden_units": 128,
    "num_classes": 10,
    "input_shape": (28, 28, 1),
    "padding": "valid",
}
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

QUICK_DATA_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tests",
    "data",
    "mnist_small",
)


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
            "batch_size", "steps", "rounds", "epoch_examples", "epoch_rounds",
            "inference_calls", "inference_rounds", "throughput_batch",
            "val_size", "epochs", "joint_epochs", "steps_per_execution",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a positive "
                    f"integer. Received {name}={value!r}."
                )
        if self.train_size is not None and (
            isinstance(self.train_size, bool)
            or not isinstance(self.train_size, int)
            or self.train_size <= 0
        ):
            raise ValueError(
                "Invalid value for argument `train_size`. Expected None or a "
                f"positive integer. Received train_size={self.train_size!r}."
            )
        if not self.batch_sizes or any(
            isinstance(b, bool) or not isinstance(b, int) or b <= 0
            for b in self.batch_sizes
        ):
            raise ValueError(
                "Invalid value for argument `batch_sizes`. Expected positive "
                f"integers. Received batch_sizes={self.batch_sizes!r}."
            )
        unknown = [s for s in self.spaces if s not in SEARCH_SPACES]
        if unknown:
            raise ValueError(
                "Invalid value for argument `spaces`. Expected names among "
                f"{list(SEARCH_SPACES)}. Received spaces={self.spaces!r}."
            )
        if not 0 <= self.tolerance < 1:
            raise ValueError(
                "Invalid value for argument `tolerance`. Expected a fraction "
                f"in [0, 1). Received tolerance={self.tolerance!r}."
            )
        if self.clock not in CLOCKS:
            raise ValueError(
                f"Invalid value for argument `clock`. Expected one of "
                f"{CLOCKS}. Received clock={self.clock!r}."
            )


FULL = Settings()
QUICK = Settings(
    steps=4,
    rounds=5,
    warmup=1,
    epoch_examples=1500,
    epoch_rounds=6,
    batch_sizes=(32, 128),
    spaces=("2x2",),
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
    return {
        clock: summarize(np.asarray(samples[clock]) * scale) for clock in CLOCKS
    }


def _ms(samples):
    return _summaries(samples, 1e3)


def paired_ratio(numerator, denominator):
    """Per clock, the summary of the per-round ratios of two variants."""
    return {
        clock: summarize(
            np.asarray(numerator[clock]) / np.asarray(denominator[clock])
        )
        for clock in CLOCKS
    }


def _mean_samples(samples_list):
    """Per clock and round, the mean over several variants."""
    return {
        clock: list(np.mean([s[clock] for s in samples_list], axis=0))
        for clock in CLOCKS
    }


def _goal(value, goal, strict=False):
    met = value < goal if strict else value <= goal
    return {"value": float(value), "goal": goal, "met": bool(met)}


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


def make_supernet(settings, space=None, **kwargs):
    """A compiled `Supernet` of `BASE_SPACE` updated with `space`, `kwargs`."""
    config = dict(BASE_SPACE, **(space or {}))
    config.update(kwargs)
    config.setdefault("seed", settings.seed)
    return _compile(Supernet(**config), settings)


def make_plain(supernet, path, settings):
    """The compiled plain model of `path` (`extract_path`, same weights)."""
    return _compile(extract_path(supernet, path), settings)


def synthetic_batch(batch_size, input_shape=(28, 28, 1), num_classes=10,
                    seed=0):
    """Normalised-looking float32 images and int32 labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch_size,)).astype("int32")
    return x, y


def train_step_runner(model, batch, steps):
    """A callable timing `steps` training steps of `model` on `batch`.

    Calls the model's compiled train function directly on an iterator over
    the repeated batch: the per-step work of `fit` without its Python
    callbacks. One `fit` step on the same dataset builds the optimizer,
    metrics and train function first. The callable returns seconds per step.
    """
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    # No background prefetch thread: an unfinished iterator that has one
    # takes seconds to free, and the batch is already in memory.
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    dataset = dataset.with_options(options)
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    iterator = iter(dataset)
    calls = max(1, math.ceil(steps / model.steps_per_execution))
    steps = calls * model.steps_per_execution

    def run():
        with _Timer() as timer:
            for _ in range(calls):
                logs = model.train_function(iterator)
            float(logs["loss"])
        return timer.per(steps)

    return run


def _epoch_runner(model, dataset):
    """A callable timing one `fit` epoch over `dataset`: seconds/epoch."""

    def run():
        with _Timer() as timer:
            model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        return timer.per(1)

    return run


# Model kinds of `_Models`: supernet keyword arguments.
_KINDS = {
    "uniform": {"sampling": "uniform"},
    "per_example": {"sampling": "per_example"},
    "fair": {"sampling": "fair"},
    "aggregation_sum": {"sampling": "uniform", "aggregation": "sum"},
    "aggregation_concat_1x1": {
        "sampling": "uniform", "aggregation": "concat_1x1",
    },
}


class _Models:
    """Every model and train-step runner, built once and shared by sections.

    Tracing a train function costs seconds, measuring it milliseconds: the
    sections measure the same models, each traced once per batch size.
    Kinds: the keys of `_KINDS`, `"fixed/<path>"` (a supernet pinned to the
    path) and `"plain/<path>"` (the extracted model of the path).
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

    def model(self, space, kind):
        key = (space, kind)
        if key not in self._models:
            space_kwargs = dict(SEARCH_SPACES_ALL[space])
            if kind == "reference":
                model = make_supernet(self.settings, space_kwargs)
            elif kind.startswith("plain/"):
                path = int(kind.split("/")[1])
                model = make_plain(self.reference(space), path, self.settings)
            elif kind.startswith("fixed/"):
                model = make_supernet(
                    self.settings, space_kwargs, sampling="fixed"
                )
                model.set_path(int(kind.split("/")[1]))
            else:
                model = make_supernet(
                    self.settings, space_kwargs, **_KINDS[kind]
                )
            self._models[key] = model
        return self._models[key]

    def num_paths(self, space):
        return self.reference(space).num_paths

    def runner(self, space, kind, batch_size):
        key = (space, kind, batch_size)
        if key not in self._runners:
            batch = synthetic_batch(batch_size, seed=self.settings.seed)
            model = self.model(space, kind)
            start = time.perf_counter()
            self._runners[key] = train_step_runner(
                model, batch, self.settings.steps
            )
            self.build_seconds[key] = time.perf_counter() - start
        return self._runners[key]


# === Sections: training speed ===


def bench_paths(settings, models=None):
    """Per path: fixed-path supernet step time against the plain model's."""
    models = models or _Models(settings)
    space, batch_size = "2x2", settings.batch_size
    reference = models.reference(space)
    runners = {}
    for path in range(reference.num_paths):
        for kind in (f"fixed/{path}", f"plain/{path}"):
            runners[kind] = models.runner(space, kind, batch_size)
    samples = interleave(runners, settings.rounds, settings.warmup)
    rows = [
        {
            "path": path,
            "label": reference.path_label(path),
            "supernet_ms": _ms(samples[f"fixed/{path}"]),
            "plain_ms": _ms(samples[f"plain/{path}"]),
            "ratio": paired_ratio(
                samples[f"fixed/{path}"], samples[f"plain/{path}"]
            ),
        }
        for path in range(reference.num_paths)
    ]
    worst = max(row["ratio"][settings.clock]["median"] for row in rows)
    return {
        "batch_size": batch_size,
        "steps_per_block": settings.steps,
        "rows": rows,
        "goal": _goal(worst, GOALS["paths"]),
    }


def bench_epoch(settings, train_arrays, models=None):
    """Joint epoch time against the mean standalone epoch time.

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
    num_paths = models.num_paths("2x2")
    runners = {"joint": _epoch_runner(models.model("2x2", "uniform"), dataset)}
    for path in range(num_paths):
        runners[f"standalone/{path}"] = _epoch_runner(
            models.model("2x2", f"fixed/{path}"), dataset
        )
    samples = interleave(runners, settings.epoch_rounds, warmup=1)
    standalone_mean = _mean_samples(
        [samples[f"standalone/{p}"] for p in range(num_paths)]
    )
    ratio = paired_ratio(samples["joint"], standalone_mean)
    joint_s = _summaries(samples["joint"])
    mean_s = _summaries(standalone_mean)
    reference = models.reference("2x2")
    return {
        "examples": int(len(x)),
        "batch_size": settings.batch_size,
        "joint_s": joint_s,
        "standalone_s": {
            reference.path_label(p): _summaries(samples[f"standalone/{p}"])
            for p in range(num_paths)
        },
        "standalone_mean_s": mean_s,
        "ratio": ratio,
        "joint_examples_per_s": len(x) / joint_s["wall"]["median"],
        "standalone_examples_per_s": len(x) / mean_s["wall"]["median"],
        "goal": _goal(ratio[settings.clock]["median"], GOALS["epoch"]),
    }


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
            "aggregation_concat_1x1/same", "2x2_same", "aggregation_concat_1x1",
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


def _measure_space(settings, models, space, batch_size):
    """Interleaved step times of the samplings and every plain path."""
    samplings = ("uniform", "per_example", "fair")
    runners = {
        kind: models.runner(space, kind, batch_size) for kind in samplings
    }
    num_paths = models.num_paths(space)
    for path in range(num_paths):
        runners[f"plain/{path}"] = models.runner(
            space, f"plain/{path}", batch_size
        )
    samples = interleave(runners, settings.rounds, settings.warmup)
    plain_mean = _mean_samples(
        [samples[f"plain/{p}"] for p in range(num_paths)]
    )
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
    `first_step_seconds` is the time of the first step of a fresh model
    (it traces the train function, whose graph holds every path's step).
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
            kind: min(
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
    serve = tf.saved_model.load(saved_model_dir).signatures[
        export.SIGNATURE_KEY
    ]
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
            "keras_predict/plain": _keras_runner(
                plain, normalised, calls, "predict"
            ),
            "keras_predict_on_batch/plain": _keras_runner(
                plain, normalised, calls, "predict_on_batch"
            ),
            "saved_model": _saved_model_runner(serve, raw, calls),
        }
        for quantize, label in (
            ("none", "float"), ("dynamic", "dynamic"), ("int8", "int8")
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
                    ("none", "float"), ("dynamic", "dynamic"), ("int8", "int8")
                )
            },
        },
        "rows": rows,
    }


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
        standalone = {
            r["path"]: r for r in seed_runs if r["mode"] == "standalone"
        }
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
                "wall_seconds": history[-1].get(
                    "wall_seconds", history[-1]["seconds"]
                ),
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
            p: next((e + 1 for e, m in enumerate(matched[p]) if m), None)
            for p in paths
        }
        match_epoch = (
            None if None in path_match.values() else max(path_match.values())
        )
        same_epoch_match = next(
            (
                e + 1
                for e in range(joint_epochs)
                if all(matched[p][e] for p in paths)
            ),
            None,
        )

        def joint_time(epoch, key="seconds"):
            row = joint[paths[0]]["history"][(epoch or joint_epochs) - 1]
            return row.get(key, row["seconds"])

        joint_seconds = joint_time(match_epoch)
        joint_wall = joint_time(match_epoch, "wall_seconds")
        standalone_sum = sum(b["seconds"] for b in best.values())
        to_best_sum = sum(b["seconds_to_best"] for b in best.values())
        wall_sum = sum(b["wall_seconds"] for b in best.values())
        gaps = {
            best[p]["label"]: 100 * (
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
                "path_match_epochs": {
                    best[p]["label"]: path_match[p] for p in paths
                },
                "match_epoch": match_epoch,
                "reached": match_epoch is not None,
                "joint_seconds": joint_seconds,
                "joint_best_gap_pp": gaps,
                "ratio": joint_seconds / standalone_sum,
                "same_epoch_match": same_epoch_match,
                "same_epoch_ratio": joint_time(same_epoch_match)
                / standalone_sum,
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
    mean, std = data_lib.normalization_stats(x_tr)
    val_ds = data_lib.make_dataset(x_val, y_val, settings.batch_size, mean, std)
    seed = settings.seed
    keras.utils.set_random_seed(seed)

    trainings = [("joint", None, make_supernet(settings, sampling="uniform"))]
    for path in range(trainings[0][2].num_paths):
        model = make_supernet(settings, sampling="fixed")
        model.set_path(path)
        trainings.append(("standalone", path, model))
    num_paths = trainings[0][2].num_paths
    runs = {}
    for mode, path, model in trainings:
        for p in range(num_paths) if mode == "joint" else [path]:
            runs[(mode, p)] = {
                "mode": mode, "seed": seed, "path": p,
                "label": model.path_label(p), "history": [],
            }
    clocks = {(mode, path): {"seconds": 0.0, "wall_seconds": 0.0}
              for mode, path, _ in trainings}
    first_epoch = data_lib.make_dataset(
        x_tr, y_tr, settings.batch_size, mean, std, shuffle=True,
        seed=data_lib.epoch_seed(seed, 0),
    )
    for _, _, model in trainings:
        _trace_and_restore(model, first_epoch, val_ds)

    for epoch in range(max(settings.epochs, settings.joint_epochs)):
        for mode, path, model in trainings:
            limit = settings.joint_epochs if mode == "joint" else settings.epochs
            if epoch >= limit:
                continue
            # Every training gets its own pipeline, as in the experiment: the
            # first pass over a dataset also fills its cache.
            train_ds = data_lib.make_dataset(
                x_tr, y_tr, settings.batch_size, mean, std, shuffle=True,
                seed=data_lib.epoch_seed(seed, epoch),
            )
            clock = clocks[(mode, path)]
            with _Timer() as fit_timer:
                model.fit(train_ds, epochs=1, verbose=0, shuffle=False)
            clock["seconds"] += fit_timer.wall
            accuracies = {}
            with _Timer() as eval_timer:
                for p in range(num_paths) if mode == "joint" else [path]:
                    model.set_path(p)
                    accuracies[p] = _evaluate_accuracy(model, val_ds)
            clock["wall_seconds"] += fit_timer.wall + eval_timer.wall
            for p, accuracy in accuracies.items():
                runs[(mode, p)]["history"].append(
                    {
                        "epoch": epoch + 1,
                        "val_accuracy": accuracy,
                        "seconds": clock["seconds"],
                        "wall_seconds": clock["wall_seconds"],
                    }
                )
    runs = list(runs.values())
    return {
        "train_size": int(len(x_tr)),
        "val_size": int(len(x_val)),
        "epochs": settings.epochs,
        "joint_epochs": settings.joint_epochs,
        "runs": runs,
        "seeds": time_to_match(runs, settings.tolerance),
    }


def headline_from_results(run_dir, tolerance=0.001):
    """`time_to_match` of the runs of an experiment's `results.json`.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a results file.
    """
    path = os.path.join(os.fspath(run_dir), "results.json")
    with open(path) as f:
        try:
            results = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON: {e}.") from e
    if not isinstance(results, dict) or "runs" not in results:
        raise ValueError(f"{path} holds no `runs`: not a results.json file.")
    return {"run_dir": os.fspath(run_dir), "seeds": time_to_match(
        results["runs"], tolerance
    )}


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


def flat_ratios(results):
    """Every headline ratio of `results`, by name (all lower-is-better)."""
    clock = results["settings"]["clock"]
    ratios = {}
    section = results.get("paths")
    if section:
        for row in section["rows"]:
            ratios[f"paths/{row['label']}"] = row["ratio"][clock]["median"]
    section = results.get("epoch")
    if section:
        ratios["epoch/joint_vs_standalone_mean"] = section["ratio"][clock][
            "median"
        ]
    section = results.get("sampling")
    if section:
        for row in section["rows"]:
            ratios[f"sampling/{row['sampling']}"] = row["ratio"][clock]["median"]
    section = results.get("scaling")
    if section:
        for key, rows in (
            ("batch_size", section["by_batch_size"]),
            ("space", section["by_search_space"]),
        ):
            for row in rows:
                for name, ratio in row["ratio_to_plain_mean"].items():
                    ratios[f"scaling/{key}={row[key]}/{name}"] = ratio[clock][
                        "median"
                    ]
    section = results.get("inference")
    if section and "rows" in section:
        for row in section["rows"]:
            ratios[f"inference/{row['runtime']}"] = row[
                "latency_ratio_to_keras_predict"
            ][clock]["median"]
    for key in ("headline", "results"):
        for entry in (results.get(key) or []) if key == "results" else [
            results.get(key)
        ]:
            if not entry:
                continue
            prefix = key if key == "headline" else f"results/{entry['run_dir']}"
            for seed in entry["seeds"]:
                ratios[f"{prefix}/seed{seed['seed']}"] = seed["ratio"]
                ratios[f"{prefix}/seed{seed['seed']}/to_best"] = seed[
                    "ratio_to_best"
                ]
    return ratios


def _goals(results):
    goals = {}
    for name in ("paths", "epoch"):
        if results.get(name):
            goals[name] = results[name]["goal"]
    headline = results.get("headline")
    if headline and headline["seeds"]:
        worst = max(s["ratio"] for s in headline["seeds"])
        goals["headline"] = _goal(worst, GOALS["headline"], strict=True)
        goals["headline"]["reached"] = all(
            s["reached"] for s in headline["seeds"]
        )
    return goals


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
        quick: the small version (under two minutes on two cores).
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
    if {"epoch", "inference", "headline"} & set(sections):
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
    models = _Models(settings)
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = work_dir or tmp
        for name in sections:
            log(f"[bench] {name} ...")
            start = time.perf_counter()
            if name == "paths":
                results[name] = bench_paths(settings, models)
            elif name == "epoch":
                results[name] = bench_epoch(settings, arrays["train"], models)
            elif name == "sampling":
                results[name] = bench_sampling(settings, models)
            elif name == "scaling":
                results[name] = bench_scaling(settings, models)
            elif name == "inference":
                folder = os.path.join(work_dir, "inference")
                os.makedirs(folder, exist_ok=True)
                results[name] = bench_inference(
                    settings, arrays["train"][0][:1000], folder
                )
            elif name == "headline":
                results[name] = bench_headline(settings, arrays)
            results["section_seconds"][name] = time.perf_counter() - start
            log(f"[bench] {name} done in {results['section_seconds'][name]:.1f} s")
    results["total_seconds"] = time.perf_counter() - started
    results["load_average_end"] = _load_average()
    results["ratios"] = flat_ratios(results)
    results["goals"] = _goals(results)
    return results


def write_json(results, path):
    """Writes `results` to `path` (atomically: temporary file, rename)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bench-", suffix=".json", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# === Plain-text table ===


def _fmt_summary(summary, digits=2):
    return (
        f"{summary['median']:.{digits}f} "
        f"[{summary['q25']:.{digits}f}-{summary['q75']:.{digits}f}]"
    )


def _table(header, rows):
    widths = [
        max(len(str(cell)) for cell in column)
        for column in zip(header, *rows)
    ]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
        for row in rows
    ]
    return lines


def _verdict(goal):
    return "met" if goal["met"] else "MISSED"


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
    section = results.get("paths")
    if section:
        out += [
            "",
            f"Training step, supernet pinned to a path (sampling='fixed') vs "
            f"the extracted plain model, batch {section['batch_size']}:",
        ]
        rows = [
            [
                row["label"],
                _fmt_summary(row["supernet_ms"]["wall"]),
                _fmt_summary(row["plain_ms"]["wall"]),
                _fmt_summary(row["ratio"]["wall"], 3),
                _fmt_summary(row["ratio"]["cpu"], 3),
            ]
            for row in section["rows"]
        ]
        out += _table(
            ["path", "supernet ms", "plain ms", "ratio (wall)", "ratio (cpu)"],
            rows,
        )
        goal = section["goal"]
        out.append(
            f"worst ratio {goal['value']:.3f}, goal <= {goal['goal']}: "
            f"{_verdict(goal)}"
        )
    section = results.get("epoch")
    if section:
        out += [
            "",
            f"Epoch of {section['examples']} examples, joint (uniform) vs the "
            f"mean standalone (fixed) epoch:",
        ]
        rows = [
            ["joint", _fmt_summary(section["joint_s"]["wall"]),
             f"{section['joint_examples_per_s']:.0f}"],
        ]
        rows += [
            [f"standalone {label}", _fmt_summary(s["wall"]), ""]
            for label, s in section["standalone_s"].items()
        ]
        rows.append(
            ["standalone mean", _fmt_summary(section["standalone_mean_s"]["wall"]),
             f"{section['standalone_examples_per_s']:.0f}"]
        )
        out += _table(["run", "seconds", "examples/s"], rows)
        goal = section["goal"]
        out.append(
            f"ratio joint/standalone: wall "
            f"{_fmt_summary(section['ratio']['wall'], 3)}, cpu "
            f"{_fmt_summary(section['ratio']['cpu'], 3)}; goal <= "
            f"{goal['goal']}: {_verdict(goal)}"
        )
    section = results.get("sampling")
    if section:
        out += ["", f"Sampling strategies, step time, batch {section['batch_size']}:"]
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
        out += _table(
            ["sampling", "ms", "relative to", "ratio (wall)", "ratio (cpu)"],
            rows,
        )
    section = results.get("scaling")
    if section:
        for title, key, rows in (
            ("batch size, report's space", "batch_size", section["by_batch_size"]),
            (f"search space, batch {section['batch_size']}", "space",
             section["by_search_space"]),
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
            header = [key] + (["paths"] if key == "space" else []) + [
                "plain ms", "uniform", "per_example", "fair"
            ] + (["first step s"] if key == "space" else [])
            out += _table(header, table)
    section = results.get("inference")
    if section:
        out += [""]
        if "skipped" in section:
            out.append(f"Inference: skipped ({section['skipped']}).")
        else:
            out.append(
                f"Inference of path {section['path']}: latency at batch 1, "
                f"throughput at batch {section['throughput_batch']} "
                f"(TFLite on {section['tflite_threads']} threads):"
            )
            rows = [
                [
                    row["runtime"],
                    _fmt_summary(row["latency_ms"]["wall"], 3),
                    f"{row['throughput_examples_per_s']['wall']:.0f}",
                    f"{1 / row['latency_ratio_to_keras_predict'][clock]['median']:.1f}x",
                ]
                for row in section["rows"]
            ]
            out += _table(
                ["runtime", "latency ms", "examples/s",
                 "faster than predict (batch 1)"],
                rows,
            )
    headline = results.get("headline")
    entries = ([("measured", headline)] if headline else []) + [
        (f"from {entry['run_dir']}", entry) for entry in results.get("results") or []
    ]
    for title, entry in entries:
        out += [
            "",
            f"Headline ({title}): joint training time until every path is "
            f"within {100 * results['settings']['tolerance']:.1f} pp of its "
            f"standalone best val accuracy, vs the sum of the standalone "
            f"trainings (goal < {GOALS['headline']}):",
        ]
        if entry is headline:
            out.append(
                f"train {headline['train_size']}, val {headline['val_size']}, "
                f"standalone {headline['epochs']} epochs, joint up to "
                f"{headline['joint_epochs']} epochs"
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
                    if seed["reached"] else f"not in {seed['joint_epochs']}",
                    lower + f"{seed['ratio']:.3f}",
                    lower + f"{seed['ratio_to_best']:.3f}",
                    ("" if same else ">") + f"{same_ratio:.3f}",
                    " ".join(
                        f"{gap:+.2f}"
                        for gap in seed["joint_best_gap_pp"].values()
                    ),
                ]
            )
        out += _table(
            ["seed", "standalone sum s", "joint s", "path match epochs",
             "match epoch", "ratio", "ratio to best", "same-epoch ratio",
             "best joint - standalone (pp)"],
            rows,
        )
    goals = results.get("goals") or {}
    if goals:
        out += ["", "Goals: " + "; ".join(
            f"{name} {goal['value']:.3f} (goal {'<' if name == 'headline' else '<='} "
            f"{goal['goal']}) {_verdict(goal)}"
            for name, goal in goals.items()
        )]
    return "\n".join(out)
