"""keras_supernet: weight-sharing supernets for Keras 3 / TensorFlow.

Importing the package loads Keras and TensorFlow only; LiteRT, matplotlib,
scipy, Optuna and KerasTuner are imported by the functions that use them.
"""

from keras_supernet import candidates
from keras_supernet import costs
from keras_supernet import sampling
from keras_supernet.costs import LatencyTable
from keras_supernet.export import export_path
from keras_supernet.export import export_saved_model
from keras_supernet.export import export_tflite
from keras_supernet.extract import build_path_model
from keras_supernet.extract import extract_path
from keras_supernet.extract import path_config
from keras_supernet.layers import Choice
from keras_supernet.layers import PaddedDense
from keras_supernet.layers import SupernetLayer
from keras_supernet.sampling import AdaptiveSamplingCallback
from keras_supernet.sampling import PathDropoutSchedule
from keras_supernet.search import PathScorer
from keras_supernet.search import pareto_front
from keras_supernet.search import run_search
from keras_supernet.spaces import SearchSpace
from keras_supernet.supernet import Supernet
from keras_supernet.supernet import path_label

__all__ = [
    "AdaptiveSamplingCallback",
    "Choice",
    "PaddedDense",
    "PathDropoutSchedule",
    "SearchSpace",
    "Supernet",
    "SupernetLayer",
    "build_path_model",
    "candidates",
    "export_path",
    "export_saved_model",
    "export_tflite",
    "extract_path",
    "path_config",
    "path_label",
    "sampling",
]

__version__ = "0.3.0"
