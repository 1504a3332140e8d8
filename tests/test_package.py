"""The package face: what `import keras_supernet` costs and exposes."""

import subprocess
import sys

import keras_supernet

HEAVY = (
    "ai_edge_litert",
    "keras_tuner",
    "optuna",
    "tensorflow_datasets",
    "matplotlib",
    "scipy",
)


def test_import_loads_no_optional_dependency():
    # TensorFlow itself imports matplotlib and scipy (in this environment):
    # what matters is what keras_supernet adds to `import tensorflow, keras`.
    script = (
        "import sys\n"
        "import keras, tensorflow\n"
        "before = set(sys.modules)\n"
        "import keras_supernet\n"
        f"heavy = {HEAVY!r}\n"
        "added = [m for m in set(sys.modules) - before\n"
        "         if m.split('.')[0] in heavy]\n"
        "print(sorted({m.split('.')[0] for m in added}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_public_names_are_exported():
    for name in keras_supernet.__all__:
        assert hasattr(keras_supernet, name), name
    assert keras_supernet.__version__ == "0.3.0"
