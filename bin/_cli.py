"""Shared start-up of the bin/ entry points (importable as `_cli`, since a
script's own folder is first on sys.path)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
