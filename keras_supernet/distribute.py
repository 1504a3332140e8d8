"""`tf.distribute` strategies for training supernets on several devices or machines.

`get_strategy` turns a name into a strategy:

- `"default"`: no distribution, the current (default) strategy.
- `"mirrored"`: `tf.distribute.MirroredStrategy`, one replica per local GPU
  (or per logical CPU device, or the given devices), variables mirrored,
  gradients all-reduced.
- `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy` across the
  machines described by the `TF_CONFIG` environment variable, e.g. on worker 0
  of two:

  ```
  TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
              "task": {"type": "worker", "index": 0}}'
  ```

  Every worker runs the same program with its own `task.index`; worker 0 is
  the chief, the one that should write results (`is_chief`).

A supernet and its optimizer must be created inside `strategy.scope()`. The
global batch is split evenly between replicas; a training step's path is
drawn from the supernet's seed generator, whose state is mirrored, so every
replica trains the same path.

Keras 3's `Model.fit` fails under `MultiWorkerMirroredStrategy` before the
first step (it all-reduces a sample batch to build the model; keras-team/keras
issue 20585), and under any strategy it takes one batch before training,
which shifts a reshuffling dataset to its next order. `train_epoch` runs an
epoch of the model's own `train_step` under `strategy.run` instead: it works
under every strategy and sees the examples in the single-device order.

Example:

```python
strategy = get_strategy("mirrored")
with strategy.scope():
    model = Supernet(seed=0)
    model.compile(optimizer="adam", loss=...)
model.fit(dataset)  # batches of the global batch size
```
"""

import json
import os
import weakref

import tensorflow as tf

from keras_supernet import validation

STRATEGIES = ("default", "mirrored", "multi_worker")
TF_CONFIG = "TF_CONFIG"


def parse_tf_config(text):
    """Validates a `TF_CONFIG` value for multi-worker training.

    Args:
        text: the JSON text of the `TF_CONFIG` environment variable.

    Returns:
        `(workers, task_type, task_index)`: the list of `"host:port"`
        addresses of the workers (the chief first, if the cluster names one),
        the task's type (`"worker"` or `"chief"`) and its index in the
        cluster.

    Raises:
        ValueError: if `text` is not valid JSON or lacks a cluster with
            workers, or a task that is one of them.
    """
    try:
        config = json.loads(text)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"Invalid value for environment variable {TF_CONFIG}. Expected "
            f"JSON. Received {TF_CONFIG}={text!r} ({e})."
        ) from None
    example = (
        '{"cluster": {"worker": ["host0:port", "host1:port"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(
            f"Invalid value for environment variable {TF_CONFIG}. Expected "
            f"a 'cluster' and a 'task', e.g. {example}. Received "
            f"{TF_CONFIG}={text!r}."
        )
    groups = {}
    for task_type in ("chief", "worker"):
        addresses = cluster.get(task_type, [])
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and ":" in a for a in addresses
        ):
            raise ValueError(
                f"Invalid value for environment variable {TF_CONFIG}. "
                f"Expected cluster['{task_type}'] to be a list of "
                f"'host:port' strings. Received {TF_CONFIG}={text!r}."
            )
        groups[task_type] = addresses
    if len(groups["chief"]) > 1 or not groups["chief"] + groups["worker"]:
        raise ValueError(
            f"Invalid value for environment variable {TF_CONFIG}. Expected "
            f"at most one chief and at least one worker, e.g. {example}. "
            f"Received {TF_CONFIG}={text!r}."
        )
    unknown = sorted(set(cluster) - {"chief", "worker", "evaluator"})
    if unknown:
        raise ValueError(
            f"Invalid value for environment variable {TF_CONFIG}. "
            f"MultiWorkerMirroredStrategy uses 'chief' and 'worker' tasks "
            f"only. Received cluster task types {unknown}."
        )
    task_type = task.get("type")
    index = task.get("index")
    if (
        task_type not in ("chief", "worker")
        or not validation.is_int(index)
        or not 0 <= index < len(groups[task_type])
    ):
        raise ValueError(
            f"Invalid value for environment variable {TF_CONFIG}. Expected "
            f"task.type 'worker' (or 'chief') and a task.index below the "
            f"number of such tasks in the cluster. Received task={task!r} "
            f"with {len(groups['worker'])} workers and "
            f"{len(groups['chief'])} chief."
        )
    return groups["chief"] + groups["worker"], task_type, index


def get_strategy(name="default", devices=None):
    """Returns the `tf.distribute` strategy called `name`.

    Args:
        name: `"default"`, `"mirrored"` or `"multi_worker"` (see the module
            docstring).
        devices: optional device names for `"mirrored"` (default: every
            local GPU or, without GPUs, every logical CPU device: one unless
            the CPU was split with `tf.config.set_logical_device_configuration`).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: an unknown `name`, `devices` given to another strategy,
            or for `"multi_worker"` a missing or invalid `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Invalid value for argument `strategy`. Expected one of "
            f"{STRATEGIES}. Received strategy={name!r}."
        )
    if devices is not None and name != "mirrored":
        raise ValueError(
            f"Invalid value for argument `devices`. Only the 'mirrored' "
            f"strategy takes devices. Received devices={devices!r} with "
            f"strategy={name!r}."
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is not None:
            devices = list(devices)
            if not devices:
                raise ValueError(
                    "Invalid value for argument `devices`. Expected at least "
                    "one device name. Received devices=[]."
                )
        elif not tf.config.list_logical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    text = os.environ.get(TF_CONFIG)
    if not text:
        raise ValueError(
            f"strategy='multi_worker' needs the {TF_CONFIG} environment "
            "variable, which describes the cluster and this worker's place "
            'in it, e.g. {"cluster": {"worker": ["host0:12345", '
            '"host1:12345"]}, "task": {"type": "worker", "index": 0}}.'
        )
    parse_tf_config(text)
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief_task():
    """Whether this process is the chief of the `TF_CONFIG` cluster.

    True without `TF_CONFIG`; otherwise True for the `chief` task, or for
    worker 0 when the cluster has no chief.

    Raises:
        ValueError: an invalid `TF_CONFIG`.
    """
    text = os.environ.get(TF_CONFIG)
    if not text:
        return True
    _, task_type, index = parse_tf_config(text)
    has_chief = bool(json.loads(text)["cluster"].get("chief"))
    return task_type == "chief" or (index == 0 and not has_chief)


def task_name():
    """`"chief"`, `"worker1"`...: this process's task in `TF_CONFIG`."""
    text = os.environ.get(TF_CONFIG)
    if not text:
        return "chief"
    _, task_type, index = parse_tf_config(text)
    return "chief" if task_type == "chief" else f"{task_type}{index}"


def is_chief(strategy=None):
    """Whether this process should write results (checkpoints, reports).

    True outside multi-worker training, and on the chief of a multi-worker
    cluster (the `chief` task, or worker 0 when there is none).
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


# === Training without Model.fit ===

# One compiled step per model and strategy; weak keys: a model's step goes
# away with the model.
_STEPS = weakref.WeakKeyDictionary()


def make_train_step(model, sample_batch, strategy=None):
    """A compiled function running one `model.train_step` on every replica.

    The function takes an iterator over a distributed dataset (global
    batches, split between the replicas), takes the next batch inside the
    compiled graph, as `Model.fit` does, and returns the per-replica logs of
    `train_step`. The model and its optimizer must have been created under
    `strategy.scope()`.

    Args:
        model: a compiled Keras model (a `Supernet` or any other).
        sample_batch: one `(x, y)` batch (any batch size), from which the
            model's metric and optimizer variables are created before the
            first step, as `fit` does: MirroredStrategy cannot create them
            inside the replicated step.
        strategy: a `tf.distribute.Strategy`; default: the current one.

    Returns:
        A `tf.function` taking one iterator.
    """
    strategy = strategy or tf.distribute.get_strategy()
    cached = _STEPS.get(model)
    if cached is not None and cached[0] is strategy:
        return cached[1]
    with strategy.scope():
        # What `fit` runs before its first step (Keras has no public name
        # for it): builds the compiled metrics, loss and optimizer.
        model._symbolic_build(data_batch=sample_batch)

    @tf.function
    def step(iterator):
        return strategy.run(model.train_step, args=(next(iterator),))

    _STEPS[model] = (strategy, step)
    return step


def reduce_logs(logs, strategy=None):
    """Per-replica logs of a step as floats, averaged over the replicas."""
    strategy = strategy or tf.distribute.get_strategy()
    return {
        name: float(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))
        for name, value in logs.items()
    }


def _num_steps(dataset, steps):
    if steps is not None:
        return validation.positive_int("steps", steps)
    cardinality = dataset.cardinality
    cardinality = int(cardinality() if callable(cardinality) else cardinality)
    if cardinality == 0:
        raise ValueError(
            "Invalid value for argument `dataset`. Expected at least one "
            "batch. Received an empty dataset."
        )
    if cardinality < 0:
        raise ValueError(
            "Invalid value for argument `dataset`. Expected a dataset of known "
            "length (or pass `steps`): an epoch that ends on a failed read "
            "can leave the replicas' optimizer states apart. Received a "
            "dataset of unknown or infinite length."
        )
    return cardinality


def _zeros_like_spec(spec):
    """A zero tensor of one example's batch for `spec` (per replica)."""
    value_specs = getattr(spec, "_value_specs", None)
    if value_specs:
        spec = value_specs[0]
    return tf.zeros([1] + list(spec.shape[1:]), spec.dtype)


def train_epoch(model, dataset, strategy=None, steps=None):
    """Trains `model` for one epoch of `dataset` under `strategy`.

    What `model.fit(dataset, epochs=1)` does, without callbacks: the metrics
    are reset, then `steps` batches go through `model.train_step` on every
    replica. Works under `MultiWorkerMirroredStrategy`, where Keras 3's `fit`
    does not. The number of steps is known in advance (the dataset's
    length, or `steps`): a step that fails for lack of data can still have
    run some of its updates on some replicas.

    Args:
        model: a compiled model created under `strategy.scope()`.
        dataset: a `tf.data.Dataset` of global batches (distributed here), or
            a distributed dataset (e.g. from
            `strategy.distribute_datasets_from_function`).
        strategy: a `tf.distribute.Strategy`; default: the current one.
        steps: batches per epoch; default: the length of `dataset`.

    Returns:
        The epoch's logs (`{"loss": ..., "accuracy": ...}`), averaged over
        the replicas.

    Raises:
        ValueError: if `dataset` is empty, or of unknown length without
            `steps`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    steps = _num_steps(dataset, steps)
    # A zero batch shaped like the data builds the model: taking a real
    # batch would use up one pass of a reshuffling dataset (as `fit` does
    # under a strategy), and the epoch would see another order of examples
    # than on one device.
    sample = tf.nest.map_structure(_zeros_like_spec, dataset.element_spec)
    if not isinstance(dataset, tf.distribute.DistributedDataset):
        dataset = strategy.experimental_distribute_dataset(dataset)
    step = make_train_step(model, sample, strategy)
    model.reset_metrics()
    iterator = iter(dataset)
    for _ in range(steps):
        logs = step(iterator)
    return reduce_logs(logs, strategy)


# === Updates inside a replicated step ===


def assign_all(variables, values):
    """Assigns `values` to `variables`, under tf.distribute as well.

    Model variables only accept an update from the replicas through the
    strategy (`extended.update`), as the optimizer does its own.
    """
    if not variables:
        return
    if not tf.distribute.has_strategy():
        for variable, value in zip(variables, values):
            variable.assign(value)
        return
    targets = [getattr(v, "value", v) for v in variables]

    def assign(distribution, values):
        for target, value in zip(targets, values):
            distribution.extended.update(
                target,
                lambda var, new: var.assign(new),
                args=(value,),
                group=False,
            )

    tf.__internal__.distribute.interim.maybe_merge_call(
        assign, tf.distribute.get_strategy(), values
    )


def optimizer_slots(optimizer, variable):
    """The optimizer variables that belong to model variable `variable`.

    Keras names them `<variable path with '_' for '/'>_<slot>`.
    """
    prefix = variable.path.replace("/", "_") + "_"
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return [v for v in optimizer.variables if v.name.startswith(prefix)]


def apply_restoring(optimizer, apply, gradients, variables, recorder):
    """Applies `gradients` to every variable, then puts back the weights and
    optimizer slots of every recorded group the step did not use.

    Under tf.distribute the optimizer's cross-replica update cannot run
    inside control flow (`switch_case`, `cond`): every variable is updated
    with `apply(gradients, variables)`, and the unused groups are restored
    with an element-wise select, bit for bit.

    Args:
        optimizer: the model's optimizer (for its slots).
        apply: `apply(gradients, variables)`, the update.
        gradients: one gradient (or None) per variable.
        variables: the trainable variables.
        recorder: a `keras_supernet.routing.UsageRecorder` of the step.
    """
    targets, keeps = [], []
    for kind, selector, groups in recorder.entries():
        masks = (
            selector
            if kind == "masks"
            else [tf.equal(selector, k) for k in range(len(groups))]
        )
        for mask, group in zip(masks, groups):
            for v in group:
                for target in [v] + optimizer_slots(optimizer, v):
                    targets.append(target)
                    keeps.append(mask)
    before = [tf.identity(t.value) for t in targets]
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    apply([g for g, _ in pairs], [v for _, v in pairs])
    assign_all(
        targets,
        [tf.where(keep, t.value, old) for t, old, keep in zip(targets, before, keeps)],
    )


# === Evaluation ===


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


_FORWARDS = weakref.WeakKeyDictionary()


def _local_forward(model):
    """The model's inference as a `tf.function`, one per model (the active
    path lives in variables, so changing it does not retrace)."""
    if model not in _FORWARDS:
        _FORWARDS[model] = tf.function(lambda x: model(x, training=False))
    return _FORWARDS[model]


def evaluate(model, dataset, strategy=None):
    """`(loss, accuracy)` of a compiled model on `dataset`, under any
    strategy.

    Keras 3's `evaluate` fails under MultiWorkerMirroredStrategy (see the
    module docstring): there every worker evaluates the whole set on its
    own, with the same numbers as `evaluate`.
    """
    if not _multi_worker(strategy):
        result = model.evaluate(dataset, verbose=0, return_dict=True)
        return float(result["loss"]), float(result["accuracy"])
    import keras

    forward = _local_forward(model)
    total_loss, correct, count = 0.0, 0, 0
    for x, y in dataset:
        logits = forward(x)
        losses = keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True
        )
        total_loss += float(tf.reduce_sum(losses))
        predicted = tf.argmax(logits, -1, output_type=y.dtype)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(predicted, y), "int32")))
        count += int(tf.shape(y)[0])
    return total_loss / count, correct / count
