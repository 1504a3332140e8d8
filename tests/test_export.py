"""Tests of keras_supernet.export and bin/export on the committed MNIST subset.

Two fixtures are shared by the module: a small plain CNN trained for one epoch
(for `export_saved_model` / `export_tflite`), and a tiny run folder written by
`keras_supernet.experiment.run_experiment` (for `export_path` and the CLI).
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_supernet import data
from keras_supernet import export
from keras_supernet import presets
from keras_supernet.experiment import run_experiment
from keras_supernet.extract import extract_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_DIR = os.path.join(ROOT, "tests", "data", "mnist_small")
BIN_EXPORT = os.path.join(ROOT, "bin", "export")

# Lines TensorFlow's C++ runtime writes to stderr whatever the program does.
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions:)"
)


def _softmax_reference(model, images, mean, std):
    """Keras softmax of `model` on normalised images, written out in full."""
    x = images.astype(np.float32)[..., np.newaxis]
    x = (x / np.float32(255.0) - np.float32(mean)) / np.float32(std)
    logits = model(x, training=False)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def _serve(directory, images):
    loaded = tf.saved_model.load(directory)
    fn = loaded.signatures["serving_default"]
    x = tf.constant(images.astype(np.float32)[..., np.newaxis])
    return fn(images=x)["probabilities"].numpy()


def _run_tflite(path, images):
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    x = images.astype(np.float32)[..., np.newaxis]
    return runner(images=x)["probabilities"]


def _tree(folder):
    """Every file and folder below `folder`, relative, with hidden ones."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for entry in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, entry), folder))
    return found


# === Fixtures ===


@pytest.fixture(scope="module")
def arrays():
    return data.load_arrays("mnist", SMALL_DIR)


@pytest.fixture(scope="module")
def trained(arrays):
    """A plain CNN trained for one epoch on the subset, with its statistics."""
    x, y = arrays["train"]
    mean, std = data.normalization_stats(x)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="images"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data.make_dataset(x, y, 64, mean, std, shuffle=True, seed=0), verbose=0)
    return model, mean, std


@pytest.fixture(scope="module")
def saved_model_dir(trained, tmp_path_factory):
    model, mean, std = trained
    directory = str(tmp_path_factory.mktemp("plain") / "model" / "1")
    return export.export_saved_model(model, directory, mean, std)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real run folder: joint (all paths) and standalone path 1, 2 epochs."""
    output_dir = str(tmp_path_factory.mktemp("run") / "run")
    run_experiment(
        mode="all",
        data_dir=SMALL_DIR,
        epochs=2,
        batch_size=64,
        learning_rate=3e-3,
        seeds=(0,),
        paths=[1],
        train_size=1500,
        val_size=500,
        output_dir=output_dir,
        filters=(8, 16),
        hidden_units=32,
        verbose=0,
    )
    return output_dir


def _results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def _run_entry(run_dir, mode, path, seed=0):
    for entry in _results(run_dir)["runs"]:
        if (entry["mode"], entry["path"], entry["seed"]) == (mode, path, seed):
            return entry
    raise AssertionError(f"no {mode} run of path {path}")


def _path_model(run_dir, mode, path, epoch):
    """The extracted path model of a checkpoint, built independently."""
    config = _results(run_dir)["config"]
    supernet = presets.build_supernet(config["space"], seed=0)
    folder = os.path.join(run_dir, "checkpoints", mode, "seed0")
    if mode == "standalone":
        folder = os.path.join(folder, f"path{path}")
    supernet.load_weights(os.path.join(folder, f"epoch_{epoch:03d}.weights.h5"))
    return extract_path(supernet, path), config["normalization"]


# === export_saved_model ===


def test_saved_model_signature(saved_model_dir):
    loaded = tf.saved_model.load(saved_model_dir)
    assert list(loaded.signatures) == ["serving_default"]
    fn = loaded.signatures["serving_default"]
    args, kwargs = fn.structured_input_signature
    assert args == ()
    assert list(kwargs) == ["images"]
    assert kwargs["images"].dtype == tf.float32
    assert kwargs["images"].shape.as_list() == [None, 28, 28, 1]
    assert list(fn.structured_outputs) == ["probabilities"]
    assert fn.structured_outputs["probabilities"].shape.as_list() == [None, 10]


def test_saved_model_takes_raw_pixels_and_returns_probabilities(
    trained, saved_model_dir, arrays
):
    model, mean, std = trained
    images, labels = arrays["test"]
    served = _serve(saved_model_dir, images)
    np.testing.assert_allclose(served.sum(axis=-1), 1.0, atol=1e-5)
    expected = _softmax_reference(model, images, mean, std)
    assert np.max(np.abs(served - expected)) <= 1e-5
    # The one-epoch model has learnt something: normalisation is not garbage.
    assert np.mean(served.argmax(-1) == labels) > 0.7


def test_saved_model_normalises_with_the_given_statistics(trained, arrays, tmp_path):
    model, mean, std = trained
    images = arrays["test"][0][:100]
    directory = export.export_saved_model(model, str(tmp_path / "raw"), 0.0, 1.0)
    served = _serve(directory, images)
    np.testing.assert_allclose(
        served, _softmax_reference(model, images, 0.0, 1.0), atol=1e-5
    )
    assert np.max(np.abs(served - _softmax_reference(model, images, mean, std))) > 1e-3


_BAD_SHAPES_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    answers = {}
    for shape in ([28, 28, 1], [1, 28, 28], [2, 30, 30, 1], [1, 28, 28, 1, 1],
                  [3, 28, 28, 1]):
        try:
            answers[str(shape)] = serve(images=tf.zeros(shape))[
                "probabilities"].shape.as_list()
        except tf.errors.InvalidArgumentError as e:
            answers[str(shape)] = [
                line for line in e.message.splitlines() if "Shape of" in line
            ]
    print(json.dumps(answers))
    """
)


@pytest.mark.slow
def test_saved_model_refuses_wrong_shapes_without_dying(saved_model_dir):
    """TensorFlow does not check a loaded signature's input shape, and a
    Conv2D on a rank-3 input aborts the process (exit 134)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", _BAD_SHAPES_SCRIPT, saved_model_dir],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers.pop("[3, 28, 28, 1]") == [3, 10]
    for shape, answer in answers.items():
        dims = shape.replace(" ", "")
        assert answer == [
            f"Shape of tensor images {dims} is not compatible with expected "
            "shape [?,28,28,1]."
        ], (shape, answer)


def test_export_saved_model_never_overwrites(trained, tmp_path):
    model, mean, std = trained
    target = tmp_path / "1"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_saved_model(model, str(target), mean, std)
    assert _tree(tmp_path) == {"1", os.path.join("1", "keep.txt")}


def test_failed_saved_model_export_leaves_nothing(trained, tmp_path, monkeypatch):
    model, mean, std = trained

    def write_then_fail(model, directory, *args):
        os.makedirs(os.path.join(directory, "variables"))
        raise OSError("disk full")

    monkeypatch.setattr(export, "_write_saved_model", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, str(tmp_path / "a" / "b" / "1"), mean, std)
    assert _tree(tmp_path) == set()


def test_export_saved_model_rejects_bad_arguments(trained, tmp_path):
    model, mean, _ = trained
    with pytest.raises(ValueError, match="argument `std`"):
        export.export_saved_model(model, str(tmp_path / "1"), mean, 0.0)

    class Unbuilt(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="argument `model`"):
        export.export_saved_model(Unbuilt(), str(tmp_path / "2"))
    assert _tree(tmp_path) == set()


# === export_tflite ===


def test_float_tflite_matches_keras(trained, saved_model_dir, arrays, tmp_path):
    model, mean, std = trained
    images = arrays["test"][0]
    path = export.export_tflite(saved_model_dir, str(tmp_path / "m.tflite"))
    interpreter = Interpreter(model_path=path)
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": ["probabilities"]}
    }
    probabilities = _run_tflite(path, images)
    assert probabilities.shape == (len(images), 10)
    expected = _softmax_reference(model, images, mean, std)
    assert np.max(np.abs(probabilities - expected)) <= 1e-4


def test_tflite_from_keras_model_goes_through_a_saved_model(trained, arrays, tmp_path):
    model, mean, std = trained
    images = arrays["test"][0][:64]
    path = export.export_tflite(model, str(tmp_path / "m.tflite"), mean=mean, std=std)
    expected = _softmax_reference(model, images, mean, std)
    assert np.max(np.abs(_run_tflite(path, images) - expected)) <= 1e-4
    assert _tree(tmp_path) == {"m.tflite"}


@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_quantized_tflite_agrees_with_keras(
    trained, saved_model_dir, arrays, tmp_path, quantize
):
    model, mean, std = trained
    (x_train, _), (images, labels) = arrays["train"], arrays["test"]
    float_path = export.export_tflite(saved_model_dir, str(tmp_path / "f.tflite"))
    path = export.export_tflite(
        saved_model_dir,
        str(tmp_path / f"{quantize}.tflite"),
        quantize=quantize,
        representative_images=x_train[:200],
    )
    assert os.path.getsize(path) < 0.5 * os.path.getsize(float_path)
    interpreter = Interpreter(model_path=path)
    types = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in types
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ("QUANTIZE" in ops) == (quantize == "int8")
    probabilities = _run_tflite(path, images)
    expected = _softmax_reference(model, images, mean, std)
    agreement = np.mean(probabilities.argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.97
    keras_accuracy = np.mean(expected.argmax(-1) == labels)
    assert abs(np.mean(probabilities.argmax(-1) == labels) - keras_accuracy) <= 0.02


def test_export_tflite_rejects_bad_arguments(saved_model_dir, tmp_path):
    with pytest.raises(ValueError, match="representative_images"):
        export.export_tflite(saved_model_dir, str(tmp_path / "a.tflite"), "int8")
    with pytest.raises(ValueError, match="argument `quantize`"):
        export.export_tflite(saved_model_dir, str(tmp_path / "a.tflite"), "int4")
    with pytest.raises(ValueError, match="SavedModel folder"):
        export.export_tflite(str(tmp_path), str(tmp_path / "a.tflite"))
    (tmp_path / "b.tflite").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        export.export_tflite(saved_model_dir, str(tmp_path / "b.tflite"))
    assert (tmp_path / "b.tflite").read_bytes() == b"old"
    assert _tree(tmp_path) == {"b.tflite"}


# === Verification ===


def test_verification_fails_on_a_wrong_export(trained, arrays, tmp_path):
    model, mean, std = trained
    images, labels = arrays["test"]
    wrong = export.export_saved_model(model, str(tmp_path / "wrong"), mean + 0.01, std)
    with pytest.raises(export.ExportVerificationError, match="saved_model"):
        export.verify_export(
            model, images, labels, mean=mean, std=std, saved_model_dir=wrong
        )
    tflite = export.export_tflite(wrong, str(tmp_path / "wrong.tflite"))
    with pytest.raises(export.ExportVerificationError, match="tflite"):
        export.verify_export(
            model, images, labels, mean=mean, std=std, tflite_paths={"none": tflite}
        )


def test_next_version_counts_folders_and_tflite_files(tmp_path):
    assert export.next_version(str(tmp_path / "missing")) == 1
    for entry in ("1", "3", ".export-partial-x", "notes"):
        (tmp_path / entry).mkdir()
    (tmp_path / "7.int8.tflite").write_bytes(b"")
    (tmp_path / "README.md").write_text("")
    assert export.next_version(str(tmp_path)) == 8


# === export_path on a run folder ===


@pytest.mark.slow
def test_export_path_best_epoch(run_dir, arrays, tmp_path):
    export_dir = str(tmp_path / "models")
    report = export.export_path(
        run_dir, "3x3,5x5", export_dir=export_dir, quantize="int8", data_dir=SMALL_DIR
    )
    entry = _run_entry(run_dir, "joint", 1)
    assert report["path"] == 1 and report["label"] == "3x3->5x5"
    assert report["epoch"] == entry["best_epoch"]
    assert report["name"] == "joint_path1_3x3_5x5" and report["version"] == 1
    model_dir = os.path.join(export_dir, "joint_path1_3x3_5x5")
    assert report["saved_model"] == os.path.join(model_dir, "1")
    assert report["tflite"] == {
        "none": os.path.join(model_dir, "1.tflite"),
        "int8": os.path.join(model_dir, "1.int8.tflite"),
    }
    assert {e for e in os.listdir(model_dir)} == {"1", "1.tflite", "1.int8.tflite"}
    umask = os.umask(0)
    os.umask(umask)
    for path in report["tflite"].values():
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask

    model, normalization = _path_model(run_dir, "joint", 1, entry["best_epoch"])
    images, labels = arrays["test"]
    expected = _softmax_reference(model, images, **normalization)
    served = _serve(report["saved_model"], images)
    np.testing.assert_allclose(served.sum(axis=-1), 1.0, atol=1e-5)
    assert np.max(np.abs(served - expected)) <= 1e-5
    assert (
        np.max(np.abs(_run_tflite(report["tflite"]["none"], images) - expected)) <= 1e-4
    )
    keras_accuracy = float(np.mean(expected.argmax(-1) == labels))
    # The test accuracy of the exported path is the one the run recorded.
    assert keras_accuracy == pytest.approx(
        entry["test_accuracy"], abs=1.01 / len(labels)
    )

    artifacts = report["artifacts"]
    assert set(artifacts) == {"keras", "saved_model", "tflite", "tflite_int8"}
    assert artifacts["keras"]["test_accuracy"] == pytest.approx(keras_accuracy)
    assert artifacts["saved_model"]["max_abs_diff"] <= 1e-5
    assert artifacts["tflite"]["max_abs_diff"] <= 1e-4
    assert artifacts["tflite_int8"]["agreement"] >= 0.9
    with open(
        os.path.join(report["saved_model"], "assets.extra", "export_info.json")
    ) as f:
        info = json.load(f)
    assert info["version"] == 1 and info["epoch"] == entry["best_epoch"]
    assert info["files"] == {
        "saved_model": "1",
        "tflite": "1.tflite",
        "tflite_int8": "1.int8.tflite",
    }
    assert info["checkpoint"] == entry["best_weights"]
    assert info["normalization"] == normalization


@pytest.mark.slow
def test_export_path_numbers_versions_and_never_overwrites(run_dir, tmp_path):
    export_dir = str(tmp_path / "models")
    first = export.export_path(
        run_dir, 0, epoch=1, export_dir=export_dir, name="m", data_dir=SMALL_DIR
    )
    model_dir = os.path.join(export_dir, "m")
    with open(os.path.join(first["saved_model"], "saved_model.pb"), "rb") as f:
        before = f.read()
    second = export.export_path(
        run_dir,
        0,
        epoch="last",
        export_dir=export_dir,
        name="m",
        formats="saved_model",
        data_dir=SMALL_DIR,
    )
    assert (first["version"], second["version"]) == (1, 2)
    assert (first["epoch"], second["epoch"]) == (1, 2)
    assert second["tflite"] == {}
    assert sorted(os.listdir(model_dir)) == ["1", "1.tflite", "2"]
    with open(os.path.join(first["saved_model"], "saved_model.pb"), "rb") as f:
        assert f.read() == before
    third = export.export_path(
        run_dir,
        0,
        epoch=1,
        export_dir=export_dir,
        name="m",
        formats="tflite",
        data_dir=SMALL_DIR,
    )
    assert third["version"] == 3 and third["saved_model"] is None
    assert sorted(os.listdir(model_dir)) == ["1", "1.tflite", "2", "3.tflite"]


@pytest.mark.slow
def test_export_path_standalone(run_dir, arrays, tmp_path):
    report = export.export_path(
        run_dir,
        "1",
        mode="standalone",
        export_dir=str(tmp_path),
        formats="saved_model",
        data_dir=SMALL_DIR,
    )
    entry = _run_entry(run_dir, "standalone", 1)
    assert report["name"] == "standalone_path1_3x3_5x5"
    assert report["epoch"] == entry["best_epoch"]
    model, normalization = _path_model(run_dir, "standalone", 1, entry["best_epoch"])
    images = arrays["test"][0]
    expected = _softmax_reference(model, images, **normalization)
    assert np.max(np.abs(_serve(report["saved_model"], images) - expected)) <= 1e-5


@pytest.mark.slow
def test_failed_verification_publishes_nothing(run_dir, tmp_path, monkeypatch):
    real = export.saved_model_probabilities

    def off_by_a_bit(directory, images, batch_size=500):
        return real(directory, images, batch_size) + 1e-4

    monkeypatch.setattr(export, "saved_model_probabilities", off_by_a_bit)
    with pytest.raises(export.ExportVerificationError, match="tolerance 1e-05"):
        export.export_path(
            run_dir, 2, export_dir=str(tmp_path / "models"), data_dir=SMALL_DIR
        )
    assert _tree(tmp_path) == set()


@pytest.mark.slow
def test_export_removes_the_staging_folders_of_killed_exports(run_dir, tmp_path):
    model_dir = tmp_path / "models" / "m"
    # An export killed (SIGKILL) while it staged its files.
    script = textwrap.dedent(
        """
        import os, signal, sys
        from keras_supernet import export
        with export._staging_dir(sys.argv[1]) as staging:
            open(os.path.join(staging, "saved_model.pb"), "w").write("partial")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    killed = subprocess.run(
        [sys.executable, "-c", script, str(model_dir)], env=env, timeout=300
    )
    assert killed.returncode == -9
    (leftover,) = os.listdir(model_dir)
    assert leftover.startswith(".export-partial-")
    # A running export's folder: its owner file is locked (by this process).
    running = model_dir / ".export-partial-running"
    running.mkdir()
    owner = os.open(running / ".owner", os.O_RDWR | os.O_CREAT)
    fcntl.flock(owner, fcntl.LOCK_EX)
    # Folders of keras_supernet 0.2.0 (no owner file), an old and a fresh one.
    old, fresh = model_dir / ".export-partial-old", model_dir / ".export-partial-new"
    old.mkdir()
    fresh.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    try:
        report = export.export_path(
            run_dir,
            0,
            export_dir=str(model_dir.parent),
            name="m",
            formats="saved_model",
            data_dir=SMALL_DIR,
        )
    finally:
        os.close(owner)
    assert report["version"] == 1
    assert sorted(os.listdir(model_dir)) == [
        ".export-partial-new",
        ".export-partial-running",
        "1",
    ]


@pytest.mark.slow
def test_saved_model_loads_without_keras_supernet(run_dir, arrays, tmp_path):
    report = export.export_path(
        run_dir, 3, export_dir=str(tmp_path / "models"), data_dir=SMALL_DIR
    )
    images = arrays["test"][0][:200]
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter

        saved_model, tflite, images_file, out_file = sys.argv[1:]
        images = np.load(images_file).astype(np.float32)[..., None]
        serve = tf.saved_model.load(saved_model).signatures["serving_default"]
        from_saved_model = serve(images=tf.constant(images))["probabilities"].numpy()
        runner = Interpreter(model_path=tflite).get_signature_runner()
        from_tflite = runner(images=images)["probabilities"]
        assert not any(m.startswith("keras_supernet") for m in sys.modules), sorted(
            m for m in sys.modules if m.startswith("keras_supernet"))
        np.savez(out_file, saved_model=from_saved_model, tflite=from_tflite)
        """
    )
    out_file = str(tmp_path / "out.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            report["saved_model"],
            report["tflite"]["none"],
            str(tmp_path / "images.npy"),
            out_file,
        ],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    fresh = np.load(out_file)
    np.testing.assert_allclose(
        fresh["saved_model"], _serve(report["saved_model"], images), atol=1e-6
    )
    np.testing.assert_allclose(
        fresh["tflite"], _run_tflite(report["tflite"]["none"], images), atol=1e-6
    )


# === bin/export ===


def _run_cli(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, BIN_EXPORT, *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line and not _TF_NOISE.match(line)]


@pytest.mark.slow
def test_cli_exports_and_prints_the_verification(run_dir, tmp_path):
    export_dir = str(tmp_path / "models")
    result = _run_cli(
        f"--run_dir={run_dir}",
        "--path=5x5,3x3",
        f"--export_dir={export_dir}",
        "--quantize=dynamic",
        f"--data_dir={SMALL_DIR}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    out = result.stdout
    entry = _run_entry(run_dir, "joint", 2)
    assert f"epoch {entry['best_epoch']}" in out
    for key in ("keras", "saved_model", "tflite", "tflite_dynamic"):
        assert re.search(
            rf"^  {key} +max \|probability difference\| [\d.e+-]+  test accuracy 0\.\d{{4}}",
            out,
            re.M,
        ), out
    assert sorted(os.listdir(os.path.join(export_dir, "joint_path2_5x5_3x3"))) == [
        "1",
        "1.dynamic.tflite",
        "1.tflite",
    ]


@pytest.mark.slow
def test_cli_default_export_dir_is_inside_the_run_folder(run_dir, tmp_path):
    """Without --export_dir nothing is added beside the models a checkout
    ships (TensorFlow Serving would serve the new, highest version)."""
    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy)
    checkout = tmp_path / "checkout"
    shipped = checkout / "saved_models" / "joint_path2_5x5_3x3" / "1"
    shipped.mkdir(parents=True)
    (shipped / "saved_model.pb").write_bytes(b"the served model")
    before = _tree(checkout)
    result = _run_cli(
        f"--run_dir={run_copy}",
        "--path=2",
        "--formats=saved_model",
        f"--data_dir={SMALL_DIR}",
        cwd=str(checkout),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert _tree(checkout) == before
    assert (shipped / "saved_model.pb").read_bytes() == b"the served model"
    model_dir = run_copy / "saved_models" / "joint_path2_5x5_3x3"
    assert os.listdir(model_dir) == ["1"]
    assert os.path.isfile(model_dir / "1" / "saved_model.pb")
    assert str(model_dir / "1") in result.stdout


def _bad_inputs(run_dir, tmp_path):
    no_checkpoints = tmp_path / "no_checkpoints"
    no_checkpoints.mkdir()
    with open(os.path.join(run_dir, "results.json")) as f:
        (no_checkpoints / "results.json").write_text(f.read())
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    return {
        "unknown_path": (
            ["--path=7"],
            r"Unknown path 7: path indices go from 0 to 3\. Valid paths: 0=3x3->3x3, 1=3x3->5x5, 2=5x5->3x3, 3=5x5->5x5",
        ),
        "unknown_kernels": (["--path=7x7,3x3"], r"Valid paths: 0=3x3->3x3"),
        "no_results": ([f"--run_dir={tmp_path}", "--path=1"], r"has no results\.json"),
        "no_checkpoints": (
            [f"--run_dir={no_checkpoints}", "--path=1"],
            r"has no checkpoints/ folder",
        ),
        "epoch_not_kept": (
            ["--path=1", "--epoch=9"],
            r"Epoch 9 .* was not kept.*Kept epochs: 1, 2\.",
        ),
        "no_standalone_run": (
            ["--path=0", "--mode=standalone"],
            r"No standalone run of path 0",
        ),
        "export_dir_is_a_file": (
            ["--path=1", f"--export_dir={a_file}/models"],
            r"argument `export_dir`.*not a folder",
        ),
        "bad_quantize": (["--path=1", "--quantize=int4"], r"argument `quantize`"),
        "missing_data": (
            ["--path=1", f"--data_dir={tmp_path}/nowhere"],
            r"Data folder .*nowhere does not exist",
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "unknown_path",
        "unknown_kernels",
        "no_results",
        "no_checkpoints",
        "epoch_not_kept",
        "no_standalone_run",
        "export_dir_is_a_file",
        "bad_quantize",
        "missing_data",
    ],
)
def test_cli_bad_input_is_one_line_and_leaves_nothing(run_dir, tmp_path, case):
    args, message = _bad_inputs(run_dir, tmp_path)[case]
    export_dir = tmp_path / "models"
    if not any(a.startswith("--run_dir") for a in args):
        args = [f"--run_dir={run_dir}", *args]
    if not any(a.startswith("--export_dir") for a in args):
        args.append(f"--export_dir={export_dir}")
    before = _tree(tmp_path)
    result = _run_cli(*args)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert result.stdout == ""
    assert _tree(tmp_path) == before
    assert not export_dir.exists()


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere"
)
@pytest.mark.slow
def test_cli_read_only_export_dir(run_dir, tmp_path):
    export_dir = tmp_path / "models"
    export_dir.mkdir()
    export_dir.chmod(0o555)
    try:
        result = _run_cli(
            f"--run_dir={run_dir}", "--path=1", f"--export_dir={export_dir}"
        )
    finally:
        export_dir.chmod(0o755)
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "argument `export_dir`" in lines[0], result.stderr[
        -2000:
    ]
    assert os.listdir(export_dir) == []
