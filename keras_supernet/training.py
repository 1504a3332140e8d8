"""The one training recipe: build and compile, one seeded epoch, evaluation.

Every tool that trains a supernet or a path of it (`bin/train`'s joint and
standalone runs, `bin/tune`'s trials, `bin/bench`'s headline, `bin/rank`'s
standalone grid) uses these functions, so that "trained the same way" means
the same code:

- `build_model`: `keras.backend.clear_session()`, the global seed, the
  space's supernet (same seed, same initial weights, whatever the sampling),
  Adam with a fixed learning rate, sparse categorical cross-entropy on
  logits, accuracy; optimizer built.
- `Data`: the normalised splits; each epoch's training order is a fixed
  function of `(seed, epoch)`, so a resumed run sees what an uninterrupted
  one sees.
- `train_epoch`: one epoch under any strategy.
- `evaluate_paths`: each path made active, its BatchNorm statistics
  recalibrated on a fixed set of training batches when the supernet was
  trained jointly and has BatchNorm, then evaluated.
"""

import contextlib
import math
import time

import keras
import numpy as np
import tensorflow as tf

from keras_supernet import data as data_lib
from keras_supernet import distribute
from keras_supernet import presets
from keras_supernet import validation

# Recalibration batches before a path of a joint BatchNorm supernet is
# evaluated (at batch 128: 2,560 images; once-for-all uses 2,000).
DEFAULT_BN_BATCHES = 20


def build_model(
    space,
    learning_rate,
    sampling,
    seed,
    input_shape=(28, 28, 1),
    num_classes=10,
    strategy=None,
    **supernet_kwargs,
):
    """A compiled supernet of `space` (a spec of `keras_supernet.presets`).

    Args:
        space: the space spec.
        learning_rate: Adam's (fixed) learning rate.
        sampling: the sampler (`"fixed"` for a path trained alone).
        seed: weights, sampling and Keras's global seed.
        input_shape, num_classes: of the examples.
        strategy: a `tf.distribute.Strategy`, or None.
        **supernet_kwargs: `path_dropout`, `branch_learning_rates`,
            `train_step`.

    Returns:
        A compiled `keras_supernet.Supernet` with a built optimizer.
    """
    validation.positive_float("learning_rate", learning_rate)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = presets.build_supernet(
            space,
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            seed=seed,
            sampling=sampling,
            **supernet_kwargs,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.optimizer.build(model.trainable_variables)
    return model


class Data:
    """An experiment's normalised splits and the datasets built from them.

    Args:
        splits: `((x_train, y_train), (x_val, y_val), (x_test, y_test))`.
        batch_size: training and evaluation batch size.
        normalization: `(mean, std)`; default: the training split's.
        bn_batches: training batches kept for BatchNorm recalibration.
    """

    def __init__(self, splits, batch_size, normalization=None, bn_batches=0):
        (self.x_train, self.y_train), (x_val, y_val), (x_test, y_test) = splits
        self.batch_size = validation.positive_int("batch_size", batch_size)
        if normalization is None:
            normalization = data_lib.normalization_stats(self.x_train)
        self.mean, self.std = (float(v) for v in normalization)
        self.val = data_lib.make_dataset(
            x_val, y_val, self.batch_size, self.mean, self.std
        )
        self.test = data_lib.make_dataset(
            x_test, y_test, self.batch_size, self.mean, self.std
        )
        self.bn_batches = validation.non_negative_int("bn_batches", bn_batches)
        self._bn = None

    def train(self, seed, epoch):
        """Epoch `epoch`'s training dataset: its order is a fixed function
        of `(seed, epoch)`."""
        return data_lib.make_dataset(
            self.x_train,
            self.y_train,
            self.batch_size,
            self.mean,
            self.std,
            shuffle=True,
            seed=data_lib.epoch_seed(seed, epoch),
        )

    def batches(self, seed, count):
        """The first `count` training batches (`(x, y)` arrays) of the data
        order of `seed`, epoch after epoch: the batches a training of that
        seed sees first."""
        left = validation.positive_int("count", count)
        epoch = 0
        while left:
            before = left
            for batch in self.train(seed, epoch).take(left).as_numpy_iterator():
                left -= 1
                yield batch
            if left == before:  # no training data at all
                return
            epoch += 1

    def refit_batches(self, count):
        """The batches a path's head is re-fitted on (`Supernet.refit_head`)
        when `bin/search`, `bin/export` and `bin/rank` re-fit heads: the
        first `count` of seed 0's order, the same for every path, search
        seed and study seed."""
        return self.batches(0, count)

    def bn(self):
        """The recalibration batches: the same for every path and epoch."""
        if self._bn is None:
            order = np.random.default_rng(0).permutation(len(self.x_train))
            count = min(len(order), self.bn_batches * self.batch_size)
            take = np.sort(order[:count])
            self._bn = data_lib.make_dataset(
                self.x_train[take],
                self.y_train[take],
                self.batch_size,
                self.mean,
                self.std,
            )
        return self._bn


def run_data(config, data_dir=None):
    """The `Data` of a run folder's `RunConfig`: its splits, normalisation
    and BatchNorm recalibration batches, as training used them.

    Args:
        config: A `keras_supernet.runs.RunConfig`.
        data_dir: Folder of the dataset's IDX files; default the run's own.

    Raises:
        ValueError, keras_supernet.data.DataError: data that cannot be
            read or does not fit the run's split sizes.
    """
    splits = data_lib.load_splits(
        config.dataset,
        config.data_dir if data_dir is None else data_dir,
        config.val_size,
        config.train_size,
        config.split_seed,
    )
    return Data(
        splits,
        config.batch_size,
        (config.normalization["mean"], config.normalization["std"]),
        bn_batches=config.bn_batches or DEFAULT_BN_BATCHES,
    )


class _StopAfterOneEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def train_epoch(
    model,
    dataset,
    epoch,
    epochs,
    strategy_name="default",
    strategy=None,
    callbacks=(),
    verbose=0,
):
    """Trains `model` one epoch of `dataset`.

    Args:
        epoch: 0-based index of the epoch, of `epochs` in the run (Keras's
            progress bar then counts "Epoch 3/15").
        strategy_name: `"default"` trains with `fit`; any other name with
            `distribute.train_epoch` (Keras 3's `fit` fails under
            MultiWorkerMirroredStrategy, and under a strategy it takes one
            batch before training, which would move a reshuffling dataset
            to another order than on one device).

    Returns:
        `(loss, accuracy, seconds)`.
    """
    start = time.perf_counter()
    if strategy_name != "default":
        for callback in callbacks:
            callback.set_model(model)
            callback.on_epoch_begin(epoch)
        logs = distribute.train_epoch(model, dataset, strategy)
        loss, accuracy = logs["loss"], logs["accuracy"]
    else:
        history = model.fit(
            dataset,
            initial_epoch=epoch,
            epochs=epochs,
            shuffle=False,
            verbose={0: 0, 1: 1}.get(verbose, 2),
            callbacks=list(callbacks) + [_StopAfterOneEpoch()],
        )
        loss = history.history["loss"][-1]
        accuracy = history.history["accuracy"][-1]
    return float(loss), float(accuracy), time.perf_counter() - start


def needs_recalibration(model, joint):
    """Whether a path's evaluation starts with BatchNorm recalibration:
    a joint supernet's statistics mix every path that ran through them."""
    return joint and model.has_batchnorm


def evaluate_paths(
    model, paths, datasets, bn_data=None, strategy=None, refit_data=None, refit=None
):
    """Evaluates each path on each dataset.

    Args:
        model: a compiled supernet.
        paths: path indices.
        datasets: `{name: dataset}`, e.g. `{"val": ..., "test": ...}`.
        bn_data: recalibration batches, or None not to recalibrate.
        strategy: a `tf.distribute.Strategy`, or None.
        refit_data: `(x, y)` training batches to re-fit each path's head
            on after recalibration (`Supernet.head_refitted`; the shared
            head is put back after each path), or None to evaluate with the
            shared head.
        refit: dict of `Supernet.refit_head`'s `batches`, `learning_rate`.

    Returns:
        `{path: {"<name>_loss": ..., "<name>_accuracy": ...}}`; the active
        path is the last of `paths` afterwards.
    """
    rows = {}
    for path in paths:
        model.set_path(path)
        if bn_data is not None:
            model.recalibrate_batchnorm(bn_data, batches=10**9)
        with (
            model.head_refitted(refit_data, **(refit or {}))
            if refit_data is not None
            else contextlib.nullcontext()
        ):
            row = {}
            for name, dataset in datasets.items():
                loss, accuracy = distribute.evaluate(model, dataset, strategy)
                row[f"{name}_loss"], row[f"{name}_accuracy"] = loss, accuracy
        rows[path] = row
    return rows


def first_non_finite(model):
    """Whether any trainable weight is NaN or infinite (a NaN batch can leave
    the loss finite while its gradient poisons the weights)."""
    return not all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


def is_finite(value):
    return math.isfinite(float(value))
