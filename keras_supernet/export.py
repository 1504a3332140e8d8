"""Export of one supernet path for serving: SavedModel, TFLite, self-checks.

A client of an exported model sends raw pixels and gets probabilities: the
`serving_default` signature takes `images`, float32 `[batch, H, W, C]` with
values in 0..255, and returns `{"probabilities": [batch, num_classes]}`. The
normalisation used in training (`(x / 255 - mean) / std`) and the softmax are
inside the exported graph, and so is a check of the input's shape: a request
of another shape (`[28, 28, 1]`, `[1, 28, 28]`) fails with an
`InvalidArgumentError` instead of aborting the serving process.

TFLite files are always converted from the exported SavedModel (never with
`TFLiteConverter.from_keras_model`, which does not support Keras 3 models), in
float or with `"dynamic"` (weights in int8) or `"int8"` (weights and
activations in int8, calibrated on training images, float32 input and output so
that clients do not change) quantisation.

Every export checks itself before it is published: the SavedModel is reloaded
with `tf.saved_model.load`, the TFLite files are run with the LiteRT
interpreter, and both are compared with the Keras model on real test images.

`export_path` does the whole job for a training run folder and writes the
TensorFlow Serving layout, never overwriting an earlier export:

```
<export_dir>/<name>/<version>/                  SavedModel (saved_model.pb, variables/,
                                                assets.extra/export_info.json)
<export_dir>/<name>/<version>.tflite            float TFLite
<export_dir>/<name>/<version>.dynamic.tflite    with quantize="dynamic"
<export_dir>/<name>/<version>.int8.tflite       with quantize="int8"
```

TensorFlow Serving only loads the integer-named folders and ignores the
`.tflite` files next to them.

Example:

```python
model = keras.Sequential([...])   # outputs logits, trained on normalised images
keras_supernet.export_saved_model(model, "/tmp/mnist/1", mean=0.1307, std=0.3081)
keras_supernet.export_tflite("/tmp/mnist/1", "/tmp/mnist/1.tflite")
```
"""

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_supernet import data as data_lib
from keras_supernet import runs
from keras_supernet import training
from keras_supernet import validation
from keras_supernet.extract import extract_path
from keras_supernet.extract import max_path_difference

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"

# The classic MNIST training-set statistics in [0, 1] pixel units; the default
# when a caller does not pass the statistics its model was trained with.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

FORMATS = ("saved_model", "tflite")
QUANTIZE_MODES = ("none", "dynamic", "int8")
EPOCH_CHOICES = runs.EPOCH_CHOICES

SAVED_MODEL_ATOL = 1e-5
TFLITE_ATOL = 1e-4
# Logits of the extracted model against the supernet's path, on test images.
SUPERNET_LOGITS_ATOL = 1e-4
# A quantised model may lose at most this much test accuracy (absolute).
QUANTIZED_MAX_ACCURACY_DROP = 0.02
NUM_CALIBRATION_IMAGES = 500

EXPORT_INFO_PATH = os.path.join("assets.extra", "export_info.json")
# `export_path` writes into `<run_dir>/saved_models` unless told otherwise.

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TFLITE_PATTERN = re.compile(r"^(\d+)(\.[a-z0-9]+)?\.tflite$")


class ExportVerificationError(RuntimeError):
    """An exported artifact does not reproduce the Keras model."""


# === Serving function ===


def _model_io(model):
    """Returns `(input_shape_without_batch, num_classes)` of a Keras model."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Invalid value for argument `model`. Expected a `keras.Model`. "
            f"Received model={model!r}."
        )
    inputs = getattr(model, "inputs", None)
    try:
        if not inputs or len(inputs) != 1:
            raise ValueError
        input_shape = tuple(inputs[0].shape)[1:]
        output = model.compute_output_spec(
            keras.KerasTensor((1,) + input_shape, dtype="float32")
        )
    except (AttributeError, ValueError, TypeError) as e:
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with one "
            "input of known shape (e.g. a `keras.Sequential` that starts with "
            f"`keras.Input`). Received model={model.name!r}."
        ) from e
    if any(d is None for d in input_shape) or len(output.shape) != 2:
        raise ValueError(
            "Invalid value for argument `model`. Expected a fully defined input "
            "shape and outputs of shape [batch, num_classes]. Received input "
            f"shape {input_shape} and output shape {tuple(output.shape)}."
        )
    return input_shape, int(output.shape[-1])


def _check_stats(mean, std):
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    if mean.ndim > 1 or not np.all(np.isfinite(mean)):
        raise ValueError(
            "Invalid value for argument `mean`. Expected a finite number or a "
            f"per-channel list. Received mean={mean.tolist()!r}."
        )
    if std.ndim > 1 or not np.all(np.isfinite(std)) or not np.all(std > 0):
        raise ValueError(
            "Invalid value for argument `std`. Expected a positive number or a "
            f"per-channel list. Received std={std.tolist()!r}."
        )
    return mean, std


def _normalize(images, mean, std):
    """Same arithmetic, in float32, as `keras_supernet.data.make_dataset`."""
    return (images / 255.0 - mean) / std


def _serving_fn(model, mean, std, from_logits, input_shape):
    mean = tf.constant(mean)
    std = tf.constant(std)

    def serve(images):
        # The signature's shape is not enforced when a loaded SavedModel is
        # called: a request of another rank ([28, 28, 1]) reaches Conv2D,
        # whose kernel aborts the whole process. Checked at run time, it is
        # an InvalidArgumentError for that request only.
        images = tf.ensure_shape(images, (None,) + tuple(input_shape))
        outputs = model(_normalize(images, mean, std), training=False)
        if from_logits:
            outputs = tf.nn.softmax(outputs, axis=-1)
        return {OUTPUT_NAME: outputs}

    return serve


def keras_probabilities(
    model,
    images,
    mean=MNIST_MEAN,
    std=MNIST_STD,
    from_logits=True,
    batch_size=500,
):
    """Reference probabilities: softmax of the Keras model on normalised images.

    Args:
        model: the Keras model (outputs logits unless `from_logits=False`).
        images: raw pixels 0..255, `[N, H, W]` or `[N, H, W, C]`, any dtype.
        mean: pixel mean in [0, 1] units the model was trained with.
        std: pixel standard deviation in [0, 1] units.
        from_logits: whether the model outputs logits (softmax applied here).
        batch_size: images per forward pass.

    Returns:
        float32 numpy array `[N, num_classes]`.
    """
    mean, std = _check_stats(mean, std)
    images = _as_image_batch(images, _model_io(model)[0])
    outputs = []
    for start in range(0, len(images), batch_size):
        x = _normalize(images[start : start + batch_size], mean, std)
        y = model(x, training=False)
        if from_logits:
            y = keras.ops.softmax(y, axis=-1)
        outputs.append(keras.ops.convert_to_numpy(y))
    return np.concatenate(outputs).astype(np.float32)


def _as_image_batch(images, input_shape):
    """Raw pixels as float32 `[N, *input_shape]` (adds a missing channel axis)."""
    images = np.asarray(images)
    if images.ndim == len(input_shape) and input_shape[-1] == 1:
        images = images[..., np.newaxis]
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"Invalid value for argument `images`. Expected shape [N, "
            f"{', '.join(map(str, input_shape))}]. Received shape {images.shape}."
        )
    return images.astype(np.float32)


# === SavedModel ===


def _write_saved_model(model, directory, mean, std, from_logits):
    input_shape, _ = _model_io(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE_KEY,
        fn=_serving_fn(model, mean, std, from_logits, input_shape),
        input_signature=[
            tf.TensorSpec((None,) + input_shape, tf.float32, name=INPUT_NAME)
        ],
    )
    archive.write_out(directory, verbose=False)


def _write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    runs.write_json(path, payload, indent=2, sort_keys=True)


def export_saved_model(
    model,
    directory,
    mean=MNIST_MEAN,
    std=MNIST_STD,
    *,
    from_logits=True,
    metadata=None,
):
    """Exports a Keras classifier as a serving SavedModel that takes raw pixels.

    The signature `serving_default` takes `images`, float32
    `[batch, *model_input_shape]` with pixel values in 0..255, and returns
    `{"probabilities": float32 [batch, num_classes]}`. Normalisation
    (`(images / 255 - mean) / std`) and the softmax are part of the graph, and
    the SavedModel needs neither Keras nor keras_supernet to be loaded.

    The folder is written atomically: the SavedModel is built in a hidden
    sibling folder and renamed into place, so `directory` either does not
    exist or holds a complete SavedModel, even if the export fails.

    Args:
        model: a built `keras.Model` with one input of fully defined shape,
            e.g. the `keras.Sequential` returned by `keras_supernet.extract_path`.
        directory: folder to create; must not exist yet.
        mean: pixel mean in [0, 1] units the model was trained with (a number
            or one value per channel). Defaults to the MNIST training mean.
        std: pixel standard deviation in [0, 1] units. Defaults to MNIST's.
        from_logits: `True` when the model outputs logits (softmax is added);
            `False` when it already outputs probabilities.
        metadata: optional JSON-serialisable dict written to
            `<directory>/assets.extra/export_info.json` (TensorFlow Serving
            ignores that folder).

    Returns:
        `directory`, as a string.

    Raises:
        ValueError: a model without a known input shape, or bad `mean`/`std`.
        FileExistsError: `directory` already exists.
        OSError: the parent folder cannot be written.

    Example:

    ```python
    export_saved_model(model, "saved_models/mnist/1", mean=0.1307, std=0.3081)
    served = tf.saved_model.load("saved_models/mnist/1")
    probs = served.signatures["serving_default"](images=pixels)["probabilities"]
    ```
    """
    mean, std = _check_stats(mean, std)
    _model_io(model)
    directory = os.fspath(directory)
    with _staging_dir(os.path.dirname(os.path.abspath(directory))) as staging:
        target = os.path.join(staging, "saved_model")
        _write_saved_model(model, target, mean, std, from_logits)
        if metadata is not None:
            _write_json(os.path.join(target, EXPORT_INFO_PATH), metadata)
        _publish_dir(target, directory)
    return directory


# === TFLite ===


def _check_quantize(quantize):
    if quantize is None:
        return "none"
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"Invalid value for argument `quantize`. Expected one of "
            f"{QUANTIZE_MODES} or None. Received quantize={quantize!r}."
        )
    return quantize


def _is_saved_model_dir(path):
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def _convert_saved_model(saved_model_dir, quantize, representative_images):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[SIGNATURE_KEY]
    )
    if quantize in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        calibration = np.asarray(representative_images, dtype=np.float32)

        def representative_dataset():
            for image in calibration:
                yield {INPUT_NAME: image[np.newaxis]}

        converter.representative_dataset = representative_dataset
        # Integer kernels everywhere; the interface stays float32 (quantize and
        # dequantize ops at both ends) so that clients send the same pixels.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        # int8 calibration runs the deprecated tf.lite.Interpreter internally.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return converter.convert()


def export_tflite(
    model_or_saved_model_dir,
    path,
    quantize=None,
    representative_images=None,
    *,
    mean=MNIST_MEAN,
    std=MNIST_STD,
    from_logits=True,
):
    """Converts an exported SavedModel (or a Keras model) to a TFLite file.

    The conversion always starts from a SavedModel with the serving signature
    of `export_saved_model`; a Keras model is first exported to a temporary
    SavedModel (with `mean`, `std` and `from_logits`). The TFLite model keeps
    the signature: `serving_default`, input `images` (float32 raw pixels),
    output `probabilities`.

    Args:
        model_or_saved_model_dir: a folder written by `export_saved_model`, or a
            Keras model.
        path: the `.tflite` file to write; must not exist yet. Written
            atomically (temporary file, then renamed).
        quantize: `None` or `"none"` (float32), `"dynamic"` (int8 weights,
            float activations) or `"int8"` (int8 weights and activations,
            float32 input and output).
        representative_images: raw training images (0..255), `[N, H, W]` or
            `[N, H, W, C]`, used to calibrate `"int8"` (a few hundred suffice).
        mean: pixel mean, only used when converting a Keras model.
        std: pixel standard deviation, only used when converting a Keras model.
        from_logits: only used when converting a Keras model.

    Returns:
        `path`, as a string.

    Raises:
        ValueError: unknown `quantize`, `"int8"` without representative images,
            or a folder that holds no SavedModel.
        FileExistsError: `path` already exists.

    Example:

    ```python
    export_tflite("saved_models/mnist/1", "saved_models/mnist/1.int8.tflite",
                  quantize="int8", representative_images=x_train[:500])
    ```
    """
    quantize = _check_quantize(quantize)
    path = os.fspath(path)
    if os.path.lexists(path):
        raise FileExistsError(
            f"Invalid value for argument `path`. The file already exists and "
            f"exports never overwrite. Received path={path!r}."
        )
    source = model_or_saved_model_dir
    with contextlib.ExitStack() as stack:
        if isinstance(source, keras.Model):
            input_shape, _ = _model_io(source)
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            source = export_saved_model(
                source,
                os.path.join(tmp, "saved_model"),
                mean,
                std,
                from_logits=from_logits,
            )
        else:
            source = os.fspath(source)
            if not _is_saved_model_dir(source):
                raise ValueError(
                    "Invalid value for argument `model_or_saved_model_dir`. "
                    "Expected a Keras model or a SavedModel folder (with "
                    f"saved_model.pb). Received {source!r}."
                )
            input_shape = None
        if quantize == "int8":
            if representative_images is None or len(representative_images) == 0:
                raise ValueError(
                    "Invalid value for argument `representative_images`. "
                    'quantize="int8" needs training images to calibrate on. '
                    "Received representative_images=None."
                )
            representative_images = _as_image_batch(
                representative_images,
                input_shape or _saved_model_input_shape(source),
            )
        content = _convert_saved_model(source, quantize, representative_images)
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        fd, tmp_file = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.partial-", dir=parent
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            # mkstemp creates the file private (0600); give it the usual mode.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_file, 0o666 & ~umask)
            _publish_file(tmp_file, path)
        finally:
            if os.path.exists(tmp_file):
                os.remove(tmp_file)
    return path


def _saved_model_input_shape(directory):
    loaded = tf.saved_model.load(directory)
    if SIGNATURE_KEY not in loaded.signatures:
        raise ValueError(
            f"SavedModel {directory} has no `{SIGNATURE_KEY}` signature "
            f"(found {sorted(loaded.signatures)}); export it with "
            "`export_saved_model`."
        )
    _, kwargs = loaded.signatures[SIGNATURE_KEY].structured_input_signature
    if INPUT_NAME not in kwargs:
        raise ValueError(
            f"SavedModel {directory} has no `{INPUT_NAME}` input in its "
            f"`{SIGNATURE_KEY}` signature (found {sorted(kwargs)})."
        )
    return tuple(kwargs[INPUT_NAME].shape)[1:]


# === Running the artifacts ===


def saved_model_probabilities(directory, images, batch_size=500):
    """Runs the `serving_default` signature of a SavedModel on raw pixels.

    Returns:
        float32 numpy array `[N, num_classes]`.
    """
    serve = tf.saved_model.load(os.fspath(directory)).signatures[SIGNATURE_KEY]
    images = np.asarray(images, dtype=np.float32)
    outputs = [
        serve(**{INPUT_NAME: tf.constant(images[start : start + batch_size])})[
            OUTPUT_NAME
        ].numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)


def tflite_probabilities(path, images, batch_size=500):
    """Runs a TFLite file's `serving_default` signature with LiteRT.

    Returns:
        float32 numpy array `[N, num_classes]`.
    """
    # Imported here: `import keras_supernet` must not load LiteRT.
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=os.fspath(path)).get_signature_runner(SIGNATURE_KEY)
    images = np.asarray(images, dtype=np.float32)
    outputs = [
        runner(**{INPUT_NAME: images[start : start + batch_size]})[OUTPUT_NAME]
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32)


def _accuracy(probabilities, labels):
    return float(np.mean(np.argmax(probabilities, axis=-1) == np.asarray(labels)))


def verify_export(
    model,
    images,
    labels,
    *,
    mean=MNIST_MEAN,
    std=MNIST_STD,
    from_logits=True,
    saved_model_dir=None,
    tflite_paths=None,
    saved_model_atol=SAVED_MODEL_ATOL,
    tflite_atol=TFLITE_ATOL,
    max_accuracy_drop=QUANTIZED_MAX_ACCURACY_DROP,
):
    """Compares exported artifacts with the Keras model on real images.

    Each artifact is run on the raw `images` and compared with
    `keras_probabilities(model, images, mean, std)`: the SavedModel must be
    within `saved_model_atol` (max abs difference of probabilities), the float
    TFLite file within `tflite_atol`, and a quantised TFLite file may lose at
    most `max_accuracy_drop` of the Keras model's accuracy.

    Args:
        model: the Keras model that was exported.
        images: raw test images 0..255, `[N, H, W]` or `[N, H, W, C]`.
        labels: integer labels `[N]`.
        mean: pixel mean used in the export.
        std: pixel standard deviation used in the export.
        from_logits: as given to `export_saved_model`.
        saved_model_dir: a folder written by `export_saved_model`, or `None`.
        tflite_paths: `{quantize: path}` with quantize in `"none"`,
            `"dynamic"`, `"int8"`, or `None`.
        saved_model_atol: tolerance of the SavedModel.
        tflite_atol: tolerance of the float TFLite file.
        max_accuracy_drop: tolerated accuracy loss of quantised files.

    Returns:
        `{artifact: {"max_abs_diff", "test_accuracy", "agreement", "path"}}`
        with artifacts `"keras"`, `"saved_model"`, `"tflite"`,
        `"tflite_dynamic"`, `"tflite_int8"` (those that were given);
        `agreement` is the fraction of images with the same predicted class as
        the Keras model.

    Raises:
        ExportVerificationError: an artifact is outside its tolerance.
    """
    input_shape, _ = _model_io(model)
    images = _as_image_batch(images, input_shape)
    labels = np.asarray(labels)
    expected = keras_probabilities(model, images, mean, std, from_logits)
    keras_accuracy = _accuracy(expected, labels)
    results = {
        "keras": {
            "max_abs_diff": 0.0,
            "test_accuracy": keras_accuracy,
            "agreement": 1.0,
            "num_images": int(len(images)),
        }
    }
    runs = []
    if saved_model_dir is not None:
        runs.append(("saved_model", saved_model_dir, saved_model_probabilities))
    for quantize, path in (tflite_paths or {}).items():
        key = "tflite" if _check_quantize(quantize) == "none" else f"tflite_{quantize}"
        runs.append((key, path, tflite_probabilities))
    failures = []
    for key, path, run in runs:
        probabilities = run(path, images)
        result = {
            "path": os.fspath(path),
            "max_abs_diff": float(np.max(np.abs(probabilities - expected))),
            "test_accuracy": _accuracy(probabilities, labels),
            "agreement": float(
                np.mean(probabilities.argmax(-1) == expected.argmax(-1))
            ),
        }
        results[key] = result
        atol = {"saved_model": saved_model_atol, "tflite": tflite_atol}.get(key)
        if atol is not None and not result["max_abs_diff"] <= atol:
            failures.append(
                f"{key} {path} differs from the Keras model by up to "
                f"{result['max_abs_diff']:.3g} (tolerance {atol:g})"
            )
        if (
            atol is None
            and keras_accuracy - result["test_accuracy"] > max_accuracy_drop
        ):
            failures.append(
                f"{key} {path} has test accuracy {result['test_accuracy']:.4f}, "
                f"more than {max_accuracy_drop:g} below the Keras model's "
                f"{keras_accuracy:.4f}"
            )
    if failures:
        raise ExportVerificationError(
            f"Export verification failed on {len(images)} test images: "
            + "; ".join(failures)
            + "."
        )
    return results


# === Files: atomic, never overwriting ===


_STAGING_PREFIX = ".export-partial-"
# Held (fcntl.flock) by the process that builds a staging folder.
_STAGING_OWNER = ".owner"
# A staging folder without an owner file comes from keras_supernet 0.2.0 (or
# from a kill in the instant between its creation and its owner file).
_STAGING_MAX_AGE = 3600


@contextlib.contextmanager
def _staging_dir(parent, argument=None, value=None):
    """A hidden temporary folder in `parent`, removed on exit.

    Folders created to hold it are removed too when they are left empty, so a
    failed export leaves nothing behind. When `parent` cannot be written, the
    `OSError` names `argument` and its `value` if given. Staging folders left
    in `parent` by killed exports are removed first (see
    `_remove_stale_staging`).
    """
    try:
        created = _makedirs(parent)
        try:
            _remove_stale_staging(parent)
            staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=parent)
            try:
                owner = _lock_owner(staging)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except OSError as e:
            _remove_empty(created)
            raise OSError(f"Cannot write in folder {parent}: {e.strerror or e}.") from e
    except OSError as e:
        if argument is None:
            raise
        raise OSError(
            f"Invalid value for argument `{argument}`. Expected a writable "
            f"folder. {e} Received {argument}={value!r}."
        ) from e
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(owner)
        _remove_empty(created)


def _lock_owner(staging):
    """Creates the staging folder's `.owner` file, already locked."""
    # Locked under another name first: a cleaner that found `.owner`
    # unlocked in between would take the folder of a running export.
    pending = os.path.join(staging, _STAGING_OWNER + ".new")
    fd = os.open(pending, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(pending, os.path.join(staging, _STAGING_OWNER))
    except OSError:
        os.close(fd)
        raise
    return fd


def _remove_stale_staging(parent):
    """Removes the staging folders in `parent` whose export was killed.

    A staging folder's owner holds an flock on its `.owner` file for as long
    as it runs. If the lock can be taken, the owner is gone: the kernel drops
    a process's locks when it dies, `kill -9` included. This tells a killed
    export from a running one exactly, where an age limit would remove a long
    export's folder or keep a fresh leftover, and a recorded pid can be
    reused by another process. Folders without an owner file are removed
    once older than an hour.
    """
    for entry in os.listdir(parent):
        folder = os.path.join(parent, entry)
        if not entry.startswith(_STAGING_PREFIX) or not os.path.isdir(folder):
            continue
        try:
            fd = os.open(os.path.join(folder, _STAGING_OWNER), os.O_RDONLY)
        except FileNotFoundError:
            try:
                age = time.time() - os.path.getmtime(folder)
            except OSError:
                continue
            if age > _STAGING_MAX_AGE:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running export
        else:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)


def _makedirs(path):
    """`os.makedirs` that returns the folders it created, deepest last."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        if os.path.lexists(path):
            raise NotADirectoryError(f"{path} exists and is not a folder.")
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    missing.reverse()
    created = []
    for folder in missing:
        try:
            os.mkdir(folder)
        except OSError as e:
            _remove_empty(created)
            raise OSError(f"Cannot create folder {folder}: {e.strerror or e}.") from e
        created.append(folder)
    return created


def _remove_empty(folders):
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _publish_dir(source, target):
    """Renames a folder into place, failing if `target` already exists."""
    if os.path.lexists(target):
        raise FileExistsError(
            f"Export folder {target} already exists; exports never overwrite."
        )
    try:
        os.rename(source, target)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(
                f"Export folder {target} already exists; exports never overwrite."
            ) from e
        raise


def _publish_file(source, target):
    """Moves a file into place, failing if `target` already exists."""
    try:
        # A hard link fails atomically when the target exists.
        os.link(source, target)
    except FileExistsError as e:
        raise FileExistsError(
            f"File {target} already exists; exports never overwrite."
        ) from e
    except OSError as e:
        # File systems without hard links.
        if os.path.lexists(target):
            raise FileExistsError(
                f"File {target} already exists; exports never overwrite."
            ) from e
        os.rename(source, target)
        return
    os.remove(source)


# === Run folders ===


def next_version(model_dir):
    """The next free TensorFlow Serving version number in `model_dir`.

    One more than the largest number used by a version folder (`3/`) or a
    TFLite file (`3.tflite`, `3.int8.tflite`); 1 for a new or empty folder.
    """
    used = [0]
    if os.path.isdir(model_dir):
        for entry in os.listdir(model_dir):
            if entry.isdigit():
                used.append(int(entry))
            elif match := _TFLITE_PATTERN.match(entry):
                used.append(int(match.group(1)))
    return max(used) + 1


def tflite_filename(version, quantize="none"):
    """`3.tflite`, `3.dynamic.tflite` or `3.int8.tflite`."""
    quantize = _check_quantize(quantize)
    return f"{version}.tflite" if quantize == "none" else f"{version}.{quantize}.tflite"


def default_name(mode, seed, path_index, label):
    """`joint_path2_5x5_3x3`: the path's label where it is short, its index
    alone where not; `_seed<N>` is appended for seeds other than 0."""
    name = f"{mode}_path{path_index}"
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", label.replace("->", "_")).strip("_")
    if len(slug) <= 40:
        name = f"{name}_{slug}"
    return name if seed == 0 else f"{name}_seed{seed}"


def _check_list(argument, values, choices):
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    values = list(dict.fromkeys(values))
    if not values or any(v not in choices for v in values):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one or more of "
            f"{choices}. Received {argument}={values!r}."
        )
    return values


def export_path(
    run_dir,
    path,
    mode="joint",
    seed=0,
    epoch="best",
    export_dir=None,
    name=None,
    formats=FORMATS,
    quantize="none",
    data_dir=None,
    *,
    num_calibration_images=NUM_CALIBRATION_IMAGES,
    max_accuracy_drop=QUANTIZED_MAX_ACCURACY_DROP,
    refit_head_batches=0,
    refit_learning_rate=None,
):
    """Exports one path of a training run for serving, verified.

    Reads `<run_dir>/results.json`, rebuilds the supernet from its
    `supernet_config`, loads the weights of the chosen epoch, extracts the path
    as a plain `keras.Sequential` and writes, under the next free version
    number of `<export_dir>/<name>/`, the SavedModel (`<version>/`) and TFLite
    files (`<version>.tflite`, `<version>.<quantize>.tflite`). Everything is
    built and verified on the run's test images in a hidden staging folder
    first, and published only when every check passed.

    Args:
        run_dir: a run folder written by `keras_supernet.experiment`.
        path: path index, kernel sizes `(5, 3)` or a string `"2"` / `"5x5,3x3"`.
        mode: `"joint"` or `"standalone"`: which training run to export from.
        seed: seed of the run.
        epoch: `"best"` (the epoch where the path peaked on validation),
            `"last"`, or an epoch number; its checkpoint must have been kept.
        export_dir: root of the TensorFlow Serving model folders; `None` for
            `<run_dir>/saved_models`, inside the run folder, so that an
            export never adds a version beside models that a checkout ships
            (TensorFlow Serving serves the highest version).
        name: model name (folder in `export_dir`); defaults to
            `default_name(...)`, e.g. `joint_path2_5x5_3x3`.
        formats: any of `"saved_model"`, `"tflite"` (a list or a comma
            separated string).
        quantize: `"none"`, `"dynamic"`, `"int8"` or several of them (list or
            comma separated); the float TFLite file is always written with
            `"tflite"`, quantised files in addition.
        data_dir: folder with the dataset's IDX files; defaults to the run's
            `data_dir` (tensorflow-datasets when that is empty).
        num_calibration_images: training images used to calibrate `"int8"`.
        max_accuracy_drop: tolerated test accuracy loss of quantised files.
        refit_head_batches: non-negative int; with N > 0, the path's head is
            re-fitted (`Supernet.refit_head`) on the run's first N training
            batches of seed 0 before the path is extracted, as
            `bin/search --refit_head_batches=N` scored it.
        refit_learning_rate: Adam's rate of the re-fit; None for the run's
            learning rate.

    Returns:
        A dict with `name`, `version`, `model_dir`, `saved_model`, `tflite`
        (`{quantize: file}`), `path`, `label`, `epoch`, `checkpoint`, and
        `head_refit_batches`, and `artifacts` (see `verify_export`).

    Raises:
        ValueError: a bad argument, an unknown path (the message lists the
            valid ones), a run folder without results.json or checkpoints, an
            epoch whose checkpoint was not kept.
        OSError: the export folder cannot be written.
        keras_supernet.data.DataError: the test images cannot be read.
        ExportVerificationError: an artifact differs from the Keras model.
    """
    run_dir = os.fspath(run_dir)
    formats = _check_list("formats", formats, FORMATS)
    quantize = _check_list("quantize", quantize, QUANTIZE_MODES)
    quantized = [q for q in quantize if q != "none"]
    if quantized and "tflite" not in formats:
        raise ValueError(
            f"Invalid value for argument `quantize`. Quantisation applies to "
            f"TFLite files but `formats` has no 'tflite'. Received "
            f"quantize={quantized!r}, formats={formats!r}."
        )
    if mode not in ("joint", "standalone"):
        raise ValueError(
            "Invalid value for argument `mode`. Expected 'joint' or "
            f"'standalone'. Received mode={mode!r}."
        )
    refit_head_batches = validation.non_negative_int(
        "refit_head_batches", refit_head_batches
    )
    if name is not None and not _NAME_PATTERN.match(name):
        raise ValueError(
            "Invalid value for argument `name`. Expected letters, digits, "
            f"'_', '-' or '.', not starting with '.'. Received name={name!r}."
        )

    folder = runs.RunFolder(run_dir)
    loaded = folder.load(mode, seed, path, epoch)
    supernet, config = loaded.supernet, loaded.config
    path_index, epoch, checkpoint = loaded.path, loaded.epoch, loaded.weights
    label = supernet.path_label(path_index)
    mean, std = config.normalization["mean"], config.normalization["std"]

    name = name or default_name(mode, seed, path_index, label)
    if export_dir is None:
        export_dir = folder.export_dir
    model_dir = os.path.join(os.fspath(export_dir), name)
    dataset = config.dataset
    data_dir = data_dir if data_dir is not None else config.data_dir

    with _staging_dir(model_dir, "export_dir", os.fspath(export_dir)) as staging:
        arrays = data_lib.load_arrays(dataset, data_dir)
        test_images, test_labels = arrays["test"]
        if loaded.recalibrates or refit_head_batches:
            run_data = training.run_data(config, data_dir)
        if loaded.recalibrates:
            # The statistics the path was evaluated with during training:
            # the same training batches, recalibrated the same way.
            supernet.recalibrate_batchnorm(
                run_data.bn(), path=path_index, batches=10**9
            )
        if refit_head_batches:
            # The head the search scored the path with: re-fitted after the
            # recalibration, on the batches and at the rate it used.
            supernet.refit_head(
                run_data.refit_batches(refit_head_batches),
                path=path_index,
                batches=refit_head_batches,
                learning_rate=(
                    config.learning_rate
                    if refit_learning_rate is None
                    else refit_learning_rate
                ),
            )
        # Verified below on the real test images rather than a random batch.
        model = extract_path(supernet, path_index, verify=False)
        input_shape, _ = _model_io(model)
        # The plain model must reproduce the checkpoint's path on real data.
        normalised = _normalize(
            _as_image_batch(test_images, input_shape), *_check_stats(mean, std)
        )
        supernet_diff = max(
            max_path_difference(supernet, path_index, model, normalised[i : i + 1000])
            for i in range(0, len(normalised), 1000)
        )
        if not supernet_diff <= SUPERNET_LOGITS_ATOL:
            raise ExportVerificationError(
                f"The extracted model of path {label} differs from the supernet "
                f"by up to {supernet_diff:.3g} in logits on the test images "
                f"(tolerance {SUPERNET_LOGITS_ATOL:g})."
            )

        metadata = {
            "run_dir": run_dir,
            "mode": mode,
            "seed": seed,
            "path": path_index,
            "indices": list(supernet.path_indices(path_index)),
            "label": label,
            "epoch": epoch,
            "best_epoch": (loaded.entry or {}).get("best_epoch"),
            "batchnorm_recalibrated": loaded.recalibrates,
            "head_refit_batches": refit_head_batches,
            "checkpoint": os.path.relpath(checkpoint, run_dir),
            "dataset": dataset,
            "normalization": {"mean": float(mean), "std": float(std)},
            "signature": {
                "name": SIGNATURE_KEY,
                "inputs": {INPUT_NAME: ["float32", [None, *input_shape]]},
                "outputs": {OUTPUT_NAME: ["float32", [None, model.output_shape[-1]]]},
            },
        }
        saved_model_dir = os.path.join(staging, "saved_model")
        export_saved_model(model, saved_model_dir, mean, std)
        tflite_files = {}
        if "tflite" in formats:
            calibration = None
            if "int8" in quantized:
                train_images = arrays["train"][0]
                rng = np.random.default_rng(seed)
                count = min(num_calibration_images, len(train_images))
                calibration = train_images[
                    rng.choice(len(train_images), count, replace=False)
                ]
            for q in ["none"] + quantized:
                tflite_files[q] = export_tflite(
                    saved_model_dir,
                    os.path.join(staging, tflite_filename(0, q)),
                    quantize=q,
                    representative_images=calibration,
                )
        artifacts = verify_export(
            model,
            test_images,
            test_labels,
            mean=mean,
            std=std,
            saved_model_dir=(saved_model_dir if "saved_model" in formats else None),
            tflite_paths=tflite_files,
            max_accuracy_drop=max_accuracy_drop,
        )
        metadata["test_images"] = len(test_images)
        metadata["supernet_max_abs_logit_diff"] = supernet_diff
        metadata["artifacts"] = {
            key: {k: v for k, v in artifact.items() if k != "path"}
            for key, artifact in artifacts.items()
        }
        version, published = _publish_version(
            model_dir,
            saved_model_dir if "saved_model" in formats else None,
            tflite_files,
            metadata,
        )

    for key, artifact in artifacts.items():
        if key == "saved_model":
            artifact["path"] = os.path.join(model_dir, str(version))
        elif key.startswith("tflite"):
            q = key.partition("_")[2] or "none"
            artifact["path"] = published["tflite"][q]
    return {
        "name": name,
        "version": version,
        "model_dir": model_dir,
        "saved_model": published.get("saved_model"),
        "tflite": published["tflite"],
        "path": path_index,
        "label": label,
        "mode": mode,
        "seed": seed,
        "epoch": epoch,
        "checkpoint": checkpoint,
        "test_images": len(test_images),
        "supernet_max_abs_logit_diff": supernet_diff,
        "head_refit_batches": refit_head_batches,
        "artifacts": artifacts,
    }


def _publish_version(model_dir, saved_model_dir, tflite_files, metadata):
    """Moves staged artifacts to the next free version; retries on a race."""
    for _ in range(100):
        version = next_version(model_dir)
        published = {"tflite": {}}
        moved = []
        try:
            if saved_model_dir is not None:
                # File names relative to the model folder, as published.
                files = {"saved_model": str(version)}
                for q in tflite_files:
                    key = "tflite" if q == "none" else f"tflite_{q}"
                    files[key] = tflite_filename(version, q)
                info = dict(metadata, version=version, files=files)
                _write_json(os.path.join(saved_model_dir, EXPORT_INFO_PATH), info)
                target = os.path.join(model_dir, str(version))
                _publish_dir(saved_model_dir, target)
                moved.append((target, saved_model_dir))
                published["saved_model"] = target
            for q, staged in tflite_files.items():
                target = os.path.join(model_dir, tflite_filename(version, q))
                _publish_file(staged, target)
                moved.append((target, staged))
                published["tflite"][q] = target
            return version, published
        except FileExistsError:
            # Another export took this version meanwhile: undo, take the next.
            for target, staged in reversed(moved):
                os.rename(target, staged)
    raise OSError(f"Cannot find a free version number in {model_dir}.")
