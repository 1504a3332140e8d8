"""What one path of a supernet costs: parameters, FLOPs, LiteRT latency.

Every cost is the cost of the path's plain model, the standalone Keras
model `keras_supernet.extract_path` gives (every `Choice` replaced by its
chosen candidate), since that is what is deployed:

- `path_params`: the plain model's `count_params()`, exactly.
- `path_flops`: multiply-adds (MACs) of one example through the plain model,
  from the layers' shapes (see `path_flops` for what is counted).
- `measure_latency`: the median time of one batch-1 inference of the
  path's float TFLite model (exported as `keras_supernet.export` exports it)
  with the LiteRT interpreter, in milliseconds.
- `LatencyTable`: once-for-all's lookup table. Each candidate block is timed
  alone, at the input shape its choice sees, converted and timed the same
  way, and a path's latency is predicted as a constant plus the sum of its
  blocks' entries, without exporting the path. `evaluate_latency_table`
  says how well the table predicts measured latencies.

Parameters and FLOPs are computed from a plain model built without copying
weights, and cached per path. When every choice sees an input of one fixed
shape and gives one (the usual stage-based spaces), both costs are sums:
the fixed layers' part plus each chosen candidate's, each computed once, so
a path of a space of 10**12 costs a few microseconds.

Latency measurements on a shared machine are noisy: every measurement here
is a median over many runs, and models that are compared are timed
interleaved (one run of each in turn, the order alternating between
rounds), so that a change of the machine's load hits all of them.

Example:

```python
supernet = keras_supernet.Supernet()          # the report's 4 paths
costs.path_params(supernet, "3x3->5x5")       # 79946
costs.path_flops(supernet, "3x3->5x5")        # 1200960
table = costs.LatencyTable.build(supernet)
table.predict("3x3->5x5"), costs.measure_latency(supernet, "3x3->5x5")
table.save("latency_table.json")
```
"""

import json
import math
import os
import tempfile
import time
import weakref

import keras
import numpy as np

from keras_supernet import extract
from keras_supernet import runs
from keras_supernet import validation
from keras_supernet.spaces import SearchSpace

# Latency tables of spaces whose choices see path-dependent input shapes
# store each path's shapes; beyond this many paths that is refused.
TABLE_MAX_PATHS = 4096
TABLE_FORMAT = "keras_supernet.latency_table"
TABLE_VERSION = 1
# `cheapest_path` walks one path per combination of the output shapes of
# choices whose candidates' outputs differ; beyond this many it gives up.
CHEAPEST_KEYS_LIMIT = 64

# Layers with weights that cost no multiply-add at inference: BatchNorm is
# folded into the layer before it by the TFLite converter.
_FREE_WEIGHTED = (keras.layers.BatchNormalization,)


# === Shapes and multiply-adds ===


def _shape(tensor):
    return tuple(int(d) for d in tensor.shape)


def _spatial(shape, data_format):
    """The spatial dimensions of `shape` (batch first)."""
    return shape[2:] if data_format == "channels_first" else shape[1:-1]


def _channels(shape, data_format):
    return shape[1] if data_format == "channels_first" else shape[-1]


def layer_macs(layer, input_shape, output_shape):
    """Multiply-adds of one call of a standard layer, for a batch of 1.

    Args:
        layer: A Keras layer (not a model).
        input_shape: Its input shape, batch dimension 1 first.
        output_shape: Its output shape, batch dimension 1 first.

    Returns:
        An int: the products of weights and inputs (bias additions,
        activations, normalisation, pooling and elementwise operations count
        0).

    Raises:
        ValueError: for a layer with weights that is not a convolution,
            a dense layer or a BatchNormalization (its cost is unknown).
    """
    fmt = getattr(layer, "data_format", "channels_last")
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        out = math.prod(_spatial(output_shape, fmt))
        inner = _channels(input_shape, fmt) * layer.depth_multiplier
        return out * inner * (math.prod(layer.kernel_size) + layer.filters)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        out = math.prod(_spatial(output_shape, fmt))
        return (
            out
            * _channels(input_shape, fmt)
            * layer.depth_multiplier
            * math.prod(layer.kernel_size)
        )
    if isinstance(
        layer,
        (
            keras.layers.Conv1DTranspose,
            keras.layers.Conv2DTranspose,
            keras.layers.Conv3DTranspose,
        ),
    ):
        # Every input pixel is spread by the whole kernel.
        return (
            math.prod(_spatial(input_shape, fmt))
            * _channels(input_shape, fmt)
            * math.prod(layer.kernel_size)
            * layer.filters
        )
    if isinstance(
        layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    ):
        groups = getattr(layer, "groups", 1)
        return (
            math.prod(_spatial(output_shape, fmt))
            * layer.filters
            * math.prod(layer.kernel_size)
            * (_channels(input_shape, fmt) // groups)
        )
    if isinstance(layer, keras.layers.Dense):
        return math.prod(input_shape[1:]) * layer.units
    if layer.weights and not isinstance(layer, _FREE_WEIGHTED):
        raise ValueError(
            f"Cannot count the FLOPs of layer '{layer.name}' "
            f"({type(layer).__name__}): only convolutions, Dense and "
            "BatchNormalization layers have known costs."
        )
    return 0


class _Walk:
    """Runs a model symbolically on batch-1 shapes, layer by layer.

    Nested models are walked into (a `Sequential` layer by layer, a
    functional model node by node, through Keras's own graph runner), so
    that every standard layer is seen with concrete input and output
    shapes, even inside a candidate built for inputs of unknown size.
    """

    def __init__(self, choice_names=()):
        self.macs = 0
        self.choice_names = set(choice_names)
        self.choice_inputs = {}

    def run(self, layer, inputs):
        if layer.name in self.choice_names and layer.name not in self.choice_inputs:
            # In a plain model, the chosen candidate is named after its
            # choice.
            self.choice_inputs[layer.name] = _shape(inputs)[1:]
        if isinstance(layer, keras.Sequential):
            x = inputs
            for sublayer in layer.layers:
                x = self.run(sublayer, x)
            return x
        if isinstance(layer, keras.Model):
            # A functional model: Keras's own node-by-node runner.
            return layer._run_through_graph(
                inputs, operation_fn=lambda op: self._operation(op)
            )
        outputs = layer.compute_output_spec(inputs)
        shapes_in = [_shape(t) for t in keras.tree.flatten(inputs)]
        shapes_out = [_shape(t) for t in keras.tree.flatten(outputs)]
        self.macs += layer_macs(layer, shapes_in[0], shapes_out[0])
        return outputs

    def _operation(self, op):
        def call(*args, **kwargs):
            if isinstance(op, keras.layers.Layer):
                return self.run(op, args[0] if len(args) == 1 else list(args))
            # A keras.ops operation of the graph (`x + y`): no weights.
            return op.compute_output_spec(*args, **kwargs)

        return call


def _batch1_inputs(model):
    inputs = [keras.KerasTensor((1, *t.shape[1:]), dtype=t.dtype) for t in model.inputs]
    return inputs[0] if len(inputs) == 1 else inputs


def model_flops(model):
    """Multiply-adds of one example through a plain Keras model.

    Counts what `path_flops` counts, walking nested `Sequential` and
    functional blocks with the shapes of a batch of one.

    Args:
        model: A built `keras.Model` of standard layers, with inputs of
            fully defined shape (a `Sequential` built with `keras.Input`, or
            a functional model).

    Returns:
        An int.

    Raises:
        ValueError: for a layer with weights whose cost is unknown.
    """
    walk = _Walk()
    walk.run(model, _batch1_inputs(model))
    return int(walk.macs)


def _full_shape(shape):
    return shape is not None and all(d is not None for d in shape[1:])


class _PathCosts:
    """Parameters, MACs and choice input shapes of a supernet's paths.

    Where every choice sees inputs of one shape whatever the path, a path's
    cost is a sum of parts: each chosen candidate's own cost (walked once,
    at that shape) and the rest of the graph. The rest depends on the path
    only through the output shapes of the chosen candidates (candidates of
    different output widths change the layers after them, such as a
    `PaddedDense` head), so it is walked once per combination of those
    shapes met, on the first path that has it. Where a choice's input shape
    depends on the path (the report's valid convolutions), each path's
    plain model is walked.
    """

    def __init__(self, supernet):
        self._supernet = weakref.ref(supernet)
        self._cache = {}
        self.choice_names = tuple(c.name for c in supernet.choices)
        self.static_inputs = []
        self._outputs = []
        static = True
        for choice in supernet.choices:
            shape = choice.built_input_shape
            outputs = tuple(tuple(s) for s in choice.built_output_shapes or ())
            if not (_full_shape(shape) and outputs and all(map(_full_shape, outputs))):
                static = False
            self.static_inputs.append(tuple(shape[1:]) if _full_shape(shape) else None)
            self._outputs.append(outputs)
        self.static = static
        # The choices whose candidates' output shapes differ.
        self._varying = tuple(
            c for c, outputs in enumerate(self._outputs) if len(set(outputs)) > 1
        )
        self._parts = None
        self._rest = {}

    def _walk_plain(self, index):
        supernet = self._supernet()
        plain, _ = extract.plain_graph(supernet, index)
        walk = _Walk(self.choice_names)
        walk.run(plain, _batch1_inputs(plain))
        shapes = tuple(walk.choice_inputs.get(n) for n in self.choice_names)
        return {
            "params": int(plain.count_params()),
            "flops": int(walk.macs),
            "choice_inputs": shapes,
        }

    def candidate_parts(self):
        """Per choice, per candidate, `(params, macs)` of the chosen block
        (static spaces only)."""
        if self._parts is None:
            supernet = self._supernet()
            parts = []
            for choice, shape in zip(supernet.choices, self.static_inputs):
                row = []
                for k in range(choice.num_candidates):
                    layer, _ = choice.plain_candidate(k)
                    layer(keras.KerasTensor((1, *shape)))
                    walk = _Walk()
                    walk.run(layer, keras.KerasTensor((1, *shape)))
                    row.append((int(layer.count_params()), int(walk.macs)))
                parts.append(row)
            self._parts = parts
        return self._parts

    def output_key(self, indices):
        """The output shapes of the chosen candidates where they vary: the
        rest of the graph costs the same for paths of equal keys."""
        return tuple(self._outputs[c][indices[c]] for c in self._varying)

    def output_keys(self, limit):
        """Every output key of the space, as `{key: per choice, the
        candidates that give it}`; None where there are more than `limit`
        (counted before any is listed)."""
        count = math.prod(len(set(self._outputs[c])) for c in self._varying)
        if count > limit:
            return None
        keys = {(): [range(len(outputs)) for outputs in self._outputs]}
        for c in self._varying:
            keys = {
                key + (shape,): [
                    *allowed[:c],
                    [k for k in allowed[c] if self._outputs[c][k] == shape],
                    *allowed[c + 1 :],
                ]
                for key, allowed in keys.items()
                for shape in dict.fromkeys(self._outputs[c])
            }
        return keys

    def costs(self, index):
        if index in self._cache:
            return self._cache[index]
        if self.static:
            parts = self.candidate_parts()
            indices = self._supernet().space.resolve(index)
            params = sum(row[k][0] for row, k in zip(parts, indices))
            macs = sum(row[k][1] for row, k in zip(parts, indices))
            key = self.output_key(indices)
            if key not in self._rest:
                walked = self._walk_plain(index)
                self._rest[key] = (walked["params"] - params, walked["flops"] - macs)
            rest_params, rest_macs = self._rest[key]
            result = {
                "params": rest_params + params,
                "flops": rest_macs + macs,
                "choice_inputs": tuple(self.static_inputs),
            }
        else:
            result = self._walk_plain(index)
        self._cache[index] = result
        return result


_COSTS = weakref.WeakKeyDictionary()


def _costs(supernet):
    costs = _COSTS.get(supernet)
    if costs is None:
        costs = _COSTS[supernet] = _PathCosts(supernet)
    return costs


def path_costs(supernet, path):
    """`{"params": int, "flops": int}` of one path (see `path_params`,
    `path_flops`); cached per path."""
    result = _costs(supernet).costs(supernet.resolve_path(path))
    return {"params": result["params"], "flops": result["flops"]}


def path_params(supernet, path):
    """The number of parameters of one path's plain model.

    Exactly `extract_path(supernet, path).count_params()`: every weight of
    the plain model, trainable or not (BatchNorm statistics included). The
    plain model is built without copying weights; the count is cached per
    path.

    Args:
        supernet: A built `keras_supernet.Supernet`.
        path: The path (an index, candidate indices or labels, a string).

    Returns:
        An int.

    Raises:
        ValueError: if `path` is not a path of the supernet.
    """
    return path_costs(supernet, path)["params"]


def path_flops(supernet, path):
    """Multiply-adds (MACs) of one example through one path's plain model.

    Counted, from each layer's input and output shapes at batch 1:
    `Conv1D`/`Conv2D`/`Conv3D` (output positions x filters x kernel x input
    channels / groups, so strides and groups count), `DepthwiseConv`
    (output positions x channels x depth multiplier x kernel),
    `SeparableConv` (its depthwise and pointwise parts), transposed
    convolutions and `Dense` (inputs x units). Not counted (0): bias
    additions, activations, BatchNormalization (folded into the layer
    before it at inference), pooling, flattening, residual additions and
    other elementwise operations. This is the usual convention of the NAS
    literature, where "FLOPs" means multiply-adds (SPOS, once-for-all).

    Args:
        supernet: A built `keras_supernet.Supernet`.
        path: The path (an index, candidate indices or labels, a string).

    Returns:
        An int.

    Raises:
        ValueError: if `path` is not a path of the supernet, or the path
            holds a layer with weights whose cost is unknown.

    Example:

    >>> # 26*26*16*9 + 11*11*32*9*16 + 800*128 + 128*10
    >>> path_flops(Supernet(), "3x3->3x3")
    758592
    """
    return path_costs(supernet, path)["flops"]


def choice_input_shapes(supernet, path):
    """The input shape (without the batch dimension) each choice sees on
    `path`, in choice order."""
    return _costs(supernet).costs(supernet.resolve_path(path))["choice_inputs"]


def cheapest_path(supernet, cost, latency_table=None):
    """The path of smallest `cost`, where that is cheap to know exactly.

    Exact for parameters and FLOPs when every choice sees inputs of one
    shape (costs are then sums of per-candidate parts: the cheapest
    candidate of each choice, for each of at most `CHEAPEST_KEYS_LIMIT`
    combinations of the output shapes of choices whose candidates' outputs
    differ), or in spaces of at most 64 paths (every path is costed); for
    `"latency_ms"`, the path the table predicts fastest.

    Args:
        supernet: A built `keras_supernet.Supernet`.
        cost: `"params"`, `"flops"` or `"latency_ms"`.
        latency_table: A `LatencyTable`, for `"latency_ms"`.

    Returns:
        `(path_index, value)`, or None where no cheap exact answer exists
        (large spaces with path-dependent shapes, latency without a table).
    """
    space = supernet.space
    if cost == "latency_ms":
        if latency_table is None:
            return None
        if latency_table.path_shapes is None:
            indices = tuple(
                int(np.argmin(choice["ms"][0])) for choice in latency_table.choices
            )
            index = space.index(indices)
        else:
            index = min(range(space.num_paths), key=latency_table.predict)
        return index, latency_table.predict(index)
    path_costs_ = _costs(supernet)
    if path_costs_.static:
        keys = path_costs_.output_keys(CHEAPEST_KEYS_LIMIT)
        if keys is not None:
            # Per combination of the chosen candidates' output shapes, the
            # rest of the graph costs the same: the cheapest candidate of
            # each choice among those that give it.
            position = {"params": 0, "flops": 1}[cost]
            parts = path_costs_.candidate_parts()
            found = []
            for allowed in keys.values():
                indices = tuple(
                    min(ks, key=lambda k, row=row: row[k][position])
                    for row, ks in zip(parts, allowed)
                )
                index = space.index(indices)
                found.append((path_costs_.costs(index)[cost], index))
            value, index = min(found)
            return index, value
    if space.num_paths <= 64:
        index = min(range(space.num_paths), key=lambda i: path_costs_.costs(i)[cost])
        return index, path_costs_.costs(index)[cost]
    return None


# === LiteRT timing ===


def _write_tflite(model, folder, name, whole):
    """Converts `model` to a float TFLite file in `folder` as `export` does.

    A whole path goes through `export.export_saved_model` (the served
    model, with its normalisation and softmax); a block, whose output is a
    feature map, through a SavedModel with the same signature.
    """
    import tensorflow as tf

    from keras_supernet import export

    saved_model = os.path.join(folder, name)
    if whole:
        export.export_saved_model(model, saved_model)
    else:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            name=export.SIGNATURE_KEY,
            fn=lambda images: model(images, training=False),
            input_signature=[
                tf.TensorSpec(
                    (None, *model.inputs[0].shape[1:]),
                    tf.float32,
                    name=export.INPUT_NAME,
                )
            ],
        )
        archive.write_out(saved_model, verbose=False)
    return export.export_tflite(saved_model, os.path.join(folder, name + ".tflite"))


class _Runner:
    """A LiteRT interpreter of one TFLite file, fed a fixed batch-1 input."""

    def __init__(self, path, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        rng = np.random.default_rng(0)
        self.interpreter.set_tensor(
            detail["index"],
            rng.uniform(0, 1, size=detail["shape"]).astype(np.float32),
        )

    def time_ms(self):
        start = time.perf_counter()
        self.interpreter.invoke()
        return (time.perf_counter() - start) * 1e3


def _median_times(runners, runs, warmup):
    """Median ms per runner, timed interleaved in alternating order."""
    times = [[] for _ in runners]
    order = list(range(len(runners)))
    for round_ in range(warmup + runs):
        for i in order if round_ % 2 == 0 else order[::-1]:
            elapsed = runners[i].time_ms()
            if round_ >= warmup:
                times[i].append(elapsed)
    return [float(np.median(t)) for t in times]


def _check_timing(threads, runs, warmup):
    return (
        validation.positive_int("threads", threads),
        validation.positive_int("runs", runs),
        validation.non_negative_int("warmup", warmup),
    )


def measure_latencies(supernet, paths, threads=1, runs=100, warmup=10):
    """Median LiteRT latencies (ms, batch 1) of several paths, timed
    interleaved; see `measure_latency`.

    Returns:
        A list of floats, one per path.
    """
    threads, runs, warmup = _check_timing(threads, runs, warmup)
    indices = [supernet.resolve_path(p) for p in paths]
    with tempfile.TemporaryDirectory(prefix="latency-") as folder:
        runners = []
        for index in indices:
            model = extract.extract_path(supernet, index, verify=False)
            tflite = _write_tflite(model, folder, f"path{index}", whole=True)
            runners.append(_Runner(tflite, threads))
        return _median_times(runners, runs, warmup)


def measure_latency(supernet, path, threads=1, runs=100, warmup=10):
    """The latency of one path: median ms of a batch-1 LiteRT inference.

    The path is extracted (`extract_path`), exported to a SavedModel with
    `export.export_saved_model` in a temporary folder, converted to a float
    TFLite model with `export.export_tflite`, and run by the LiteRT
    interpreter on a fixed input: `warmup` runs, then the median of `runs`
    timed runs of `invoke()`. Exporting takes seconds; for many paths, see
    `LatencyTable`.

    Args:
        supernet: A built `keras_supernet.Supernet`.
        path: The path (an index, candidate indices or labels, a string).
        threads: Positive int, the interpreter's threads.
        runs: Positive int, the timed runs.
        warmup: Non-negative int, untimed runs first.

    Returns:
        A float, milliseconds.

    Raises:
        ValueError: if `path` is unknown or an argument is invalid.
    """
    return measure_latencies(supernet, [path], threads, runs, warmup)[0]


# === Latency table ===


# Layers that are the identity at inference: an exported model has no op for
# them, so a block with them is as fast as the block without.
_INFERENCE_IDENTITY = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianDropout",
        "GaussianNoise",
        "AlphaDropout",
    }
)


def _inference_identity(config):
    return (
        isinstance(config, dict)
        and config.get("class_name") in _INFERENCE_IDENTITY
        and str(config.get("module", "")).startswith("keras")
    )


def _architecture_key(layer, input_shape):
    """What identifies a block's speed: its config without names,
    initializers, build information and the layers (dropout, noise) that
    are the identity at inference, and its input shape."""

    def strip(value):
        if isinstance(value, dict):
            return {
                k: strip(v)
                for k, v in value.items()
                if k not in ("name", "build_config", "seed")
                and not k.endswith(("_initializer", "_regularizer", "_constraint"))
            }
        if isinstance(value, (list, tuple)):
            return [strip(v) for v in value if not _inference_identity(v)]
        return value

    config = keras.saving.serialize_keras_object(layer)
    return json.dumps([strip(config), list(input_shape)], sort_keys=True, default=str)


class LatencyTable:
    """A per-candidate latency lookup table (once-for-all's approach).

    Predicts a path's LiteRT latency without exporting it:

        predict(path) = base_ms + sum over choices of ms[choice][candidate]

    where `ms[c][k]` is the measured median latency of candidate `k` of
    choice `c` alone: a tiny model holding only that candidate (weights
    copied), at the input shape the choice sees, converted to float TFLite
    and timed with LiteRT at batch 1 exactly as `measure_latency` times a
    path. Candidates of identical architecture at identical input shapes
    (the blocks of one stage) are timed once and share their entry.

    `base_ms` is the fixed part, measured rather than modelled: the
    median, over a few seeded calibration paths measured whole with
    `measure_latency`'s method, of the measured latency minus the sum of
    that path's entries. It holds the layers outside the choices (stem,
    reductions, head, the export's normalisation and softmax) and removes
    the interpreter's per-call overhead counted once per block (so it may
    be negative). Every path sums one entry per choice, so that overhead is
    the same for all paths. Blocks and calibration paths are timed
    interleaved.

    Where a choice's input shape depends on the path (the report's valid
    convolutions), it has one row of entries per input shape it can see,
    and the table stores which shape each path gives it; this needs the
    space to have at most `TABLE_MAX_PATHS` paths.

    Build with `LatencyTable.build(supernet)`; save and load as JSON with
    `save` and `load`.

    Args:
        space: The `SearchSpace` the table belongs to.
        choices: Per choice, a dict: `input_shapes` (a list of shapes) and
            `ms` (per input shape, a list of per-candidate milliseconds).
        base_ms: The fixed part, milliseconds.
        path_shapes: None where every choice sees one shape; otherwise, per
            path index, the index of the input shape of each choice.
        info: JSON-serialisable details: timing settings, calibration.
    """

    def __init__(self, space, choices, base_ms, path_shapes=None, info=None):
        if not isinstance(space, SearchSpace):
            raise ValueError(
                "Invalid value for argument `space`. Expected a "
                f"`SearchSpace`. Received space={space!r}."
            )
        choices = list(choices)
        if len(choices) != space.num_choices or any(
            len(row) != count
            for choice, count in zip(choices, space.candidate_counts)
            for row in choice["ms"]
        ):
            raise ValueError(
                "Invalid latency table: expected one entry per candidate of "
                f"each choice of the space ({space.describe()})."
            )
        self.space = space
        self.choices = [
            {
                "input_shapes": [list(s) for s in c["input_shapes"]],
                "ms": [[float(v) for v in row] for row in c["ms"]],
            }
            for c in choices
        ]
        self.base_ms = float(base_ms)
        self.path_shapes = (
            None if path_shapes is None else [list(s) for s in path_shapes]
        )
        self.info = dict(info or {})

    # === Prediction ===

    def entries(self, path):
        """Per choice, the table entry (ms) of `path`'s candidate."""
        indices = self.space.resolve(path)
        shape_ids = (
            self.path_shapes[self.space.index(indices)]
            if self.path_shapes is not None
            else [0] * len(indices)
        )
        return [
            choice["ms"][s][k] for choice, s, k in zip(self.choices, shape_ids, indices)
        ]

    def predict(self, path):
        """The predicted latency of `path` (any spelling), ms:
        `base_ms + sum(entries(path))`."""
        return self.base_ms + sum(self.entries(path))

    def check(self, supernet):
        """Raises unless the table was built for `supernet`'s space."""
        if supernet.space != self.space:
            raise ValueError(
                "Invalid value for argument `latency_table`: it was built "
                f"for a space of {self.space.describe()}, not this "
                f"supernet's ({supernet.space.describe()})."
            )

    # === Building ===

    @classmethod
    def build(
        cls,
        supernet,
        threads=1,
        runs=200,
        warmup=20,
        calibration_paths=3,
        seed=0,
        verbose=0,
    ):
        """Measures a latency table for `supernet`.

        Args:
            supernet: A built `keras_supernet.Supernet`.
            threads: Positive int, LiteRT interpreter threads.
            runs: Positive int, timed runs of every model.
            warmup: Non-negative int, untimed runs first.
            calibration_paths: Positive int, whole paths measured to
                estimate `base_ms` (seeded draw; all paths of a smaller
                space).
            seed: Non-negative int, the draw of calibration paths.
            verbose: 0 (silent) or 1 (one line per converted model).

        Returns:
            A `LatencyTable`.

        Raises:
            ValueError: for an invalid argument, or a space whose choices
                see path-dependent input shapes and which has more than
                `TABLE_MAX_PATHS` paths.
        """
        threads, runs, warmup = _check_timing(threads, runs, warmup)
        calibration_paths = validation.positive_int(
            "calibration_paths", calibration_paths
        )
        seed = validation.non_negative_int("seed", seed)
        space = supernet.space
        costs = _costs(supernet)
        # The input shapes each choice sees, and which one on each path.
        path_shapes = None
        if all(s is not None for s in costs.static_inputs):
            shapes = [[tuple(s)] for s in costs.static_inputs]
        else:
            if space.num_paths > TABLE_MAX_PATHS:
                raise ValueError(
                    "Cannot build a latency table: the input shape of some "
                    "choices depends on the path, which the table stores "
                    f"per path, and the space has {space.describe()} (more "
                    f"than {TABLE_MAX_PATHS:,})."
                )
            shapes = [[] for _ in space.choice_names]
            path_shapes = []
            for index in range(space.num_paths):
                row = []
                for c, shape in enumerate(choice_input_shapes(supernet, index)):
                    if shape not in shapes[c]:
                        shapes[c].append(shape)
                    row.append(shapes[c].index(shape))
                path_shapes.append(row)
        rng = np.random.default_rng(seed)
        if space.num_paths <= calibration_paths:
            calibration = list(range(space.num_paths))
        else:
            calibration = set()
            while len(calibration) < calibration_paths:
                calibration.add(space.index(space.sample(rng)))
            calibration = sorted(calibration)

        with tempfile.TemporaryDirectory(prefix="latency-table-") as folder:
            blocks = {}  # architecture key -> runner position
            runners = []
            slots = []  # per choice, per shape, per candidate
            for c, choice in enumerate(supernet.choices):
                per_shape = []
                for shape in shapes[c]:
                    row = []
                    for k in range(choice.num_candidates):
                        layer, copy_weights = choice.plain_candidate(k)
                        inputs = keras.Input(shape, name="images")
                        model = keras.Model(inputs, layer(inputs))
                        copy_weights()
                        key = _architecture_key(layer, shape)
                        if key not in blocks:
                            tflite = _write_tflite(
                                model, folder, f"block{len(runners)}", False
                            )
                            blocks[key] = len(runners)
                            runners.append(_Runner(tflite, threads))
                            if verbose:
                                print(
                                    f"latency table: block {choice.name}/"
                                    f"{choice.labels[k]} at {shape}",
                                    flush=True,
                                )
                        row.append(blocks[key])
                    per_shape.append(row)
                slots.append(per_shape)
            first_path = len(runners)
            for index in calibration:
                model = extract.extract_path(supernet, index, verify=False)
                runners.append(
                    _Runner(
                        _write_tflite(model, folder, f"path{index}", True),
                        threads,
                    )
                )
                if verbose:
                    print(f"latency table: path {space.label(index)}", flush=True)
            times = _median_times(runners, runs, warmup)
        choices = [
            {
                "input_shapes": [list(s) for s in shapes[c]],
                "ms": [[times[i] for i in row] for row in slots[c]],
            }
            for c in range(space.num_choices)
        ]
        table = cls(space, choices, 0.0, path_shapes)
        calibrated = [
            {
                "path": index,
                "label": space.label(index),
                "measured_ms": times[first_path + i],
                "entries_ms": sum(table.entries(index)),
            }
            for i, index in enumerate(calibration)
        ]
        table.base_ms = float(
            np.median([c["measured_ms"] - c["entries_ms"] for c in calibrated])
        )
        table.info = {
            "threads": threads,
            "runs": runs,
            "warmup": warmup,
            "seed": seed,
            "blocks_timed": first_path,
            "calibration": calibrated,
        }
        return table

    # === Files ===

    def get_config(self):
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "space": self.space.get_config(),
            "base_ms": self.base_ms,
            "choices": [
                dict(c, name=name, labels=list(labels))
                for c, name, labels in zip(
                    self.choices,
                    self.space.choice_names,
                    self.space.candidate_labels,
                )
            ],
            "path_shapes": self.path_shapes,
            "info": self.info,
        }

    @classmethod
    def from_config(cls, config):
        try:
            if config.get("format") != TABLE_FORMAT:
                raise KeyError("format")
            return cls(
                SearchSpace.from_config(config["space"]),
                config["choices"],
                config["base_ms"],
                config.get("path_shapes"),
                config.get("info"),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"Invalid latency table: expected a {TABLE_FORMAT!r} JSON "
                f"object with `space`, `choices` and `base_ms` (missing or "
                f"wrong: {e})."
            ) from None

    def save(self, path):
        """Writes the table as JSON, atomically (`runs.write_json`)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        runs.write_json(path, self.get_config())
        return path

    @classmethod
    def load(cls, path):
        """Reads a table written by `save`.

        Raises:
            ValueError: if the file cannot be read or is not a table.
        """
        try:
            config = runs.read_json(os.fspath(path), "latency table")
        except runs.RunFolderError as e:
            raise ValueError(f"Cannot read the latency table: {e}") from None
        return cls.from_config(config)

    def __repr__(self):
        return f"LatencyTable({self.space.describe()}, base_ms={self.base_ms:.4f})"


def evaluate_latency_table(
    supernet, table, paths=None, num_paths=20, seed=0, runs=100, warmup=10
):
    """How well `table` predicts measured latencies, on a sample of paths.

    The paths are measured whole (as `measure_latency` does, interleaved,
    with the table's thread count) and compared with `table.predict`.

    Args:
        supernet: The `keras_supernet.Supernet` the table was built for.
        table: A `LatencyTable`.
        paths: The paths to measure; default: `num_paths` distinct paths
            drawn with `seed` (every path of a smaller space).
        num_paths: Positive int, the sample size when `paths` is None.
        seed: Non-negative int, the draw.
        runs: Positive int, timed runs per path.
        warmup: Non-negative int, untimed runs first.

    Returns:
        A dict: `paths` (per path `path`, `label`, `predicted_ms`,
        `measured_ms`), `pearson` and `spearman` (correlations of predicted
        and measured latencies; None with fewer than 3 paths or constant
        values), `mape_percent` (mean absolute percentage error of the
        prediction) and `max_ape_percent`.
    """
    from scipy import stats

    table.check(supernet)
    space = supernet.space
    if paths is None:
        num_paths = validation.positive_int("num_paths", num_paths)
        seed = validation.non_negative_int("seed", seed)
        paths = space.sample_distinct(num_paths, seed)
    indices = [supernet.resolve_path(p) for p in paths]
    measured = measure_latencies(
        supernet, indices, table.info.get("threads", 1), runs, warmup
    )
    predicted = [table.predict(i) for i in indices]
    errors = [abs(p - m) / m * 100 for p, m in zip(predicted, measured)]

    def correlation(function):
        if len(indices) < 3 or len(set(predicted)) < 2 or len(set(measured)) < 2:
            return None
        return float(function(predicted, measured)[0])

    return {
        "paths": [
            {
                "path": i,
                "label": space.label(i),
                "predicted_ms": p,
                "measured_ms": m,
            }
            for i, p, m in zip(indices, predicted, measured)
        ],
        "pearson": correlation(stats.pearsonr),
        "spearman": correlation(stats.spearmanr),
        "mape_percent": float(np.mean(errors)),
        "max_ape_percent": float(np.max(errors)),
    }
