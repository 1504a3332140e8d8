"""Extraction of one supernet path into a plain, standalone Keras model.

As in once-for-all's `get_active_subnet`, extraction has three separate
steps: `path_config` describes the chosen path's architecture as plain data
(the Keras config of a functional model of standard layers),
`build_path_model` builds a freshly initialised model from that
description, and `extract_path` copies the path's weights in and checks that
the two models give the same outputs.

In the plain model every `Choice` is replaced by a copy of its chosen
candidate (rebuilt from the candidate's config, named after the choice), a
`PaddedDense` by the `Dense` layer of the path's width, and every other
layer by a copy of itself; nothing of keras_supernet is left, so the model
saves, exports and serves without this package.
"""

import json
import re

import keras
import numpy as np

from keras_supernet.layers import Choice
from keras_supernet.layers import PaddedDense


def _model_name(label):
    return "path_" + re.sub(r"[^A-Za-z0-9_.]+", "_", label.replace("->", "_")).strip(
        "_"
    )


def plain_graph(supernet, path, name=None):
    """The plain functional model of `path` (fresh weights) and its weight
    copiers; `keras_supernet.costs` counts a path's costs on it without
    copying weights."""
    indices = supernet.space.resolve(path)
    positions = {id(c): i for i, c in enumerate(supernet.choices)}
    copies = []

    def clone(layer):
        if isinstance(layer, Choice):
            new, copy = layer.plain_candidate(
                indices[positions[id(layer)]], name=layer.name
            )
        elif isinstance(layer, PaddedDense):
            new, copy = layer.plain_dense()
        else:
            new = layer.__class__.from_config(layer.get_config())

            def copy(layer=layer, new=new):
                new.set_weights(layer.get_weights())

        copies.append(copy)
        return new

    graph = keras.Model(supernet.input, supernet.output, name=supernet.name)
    plain = keras.models.clone_model(graph, clone_function=clone, recursive=True)
    plain = keras.Model(
        plain.input,
        plain.output,
        name=name or _model_name(supernet.path_label(indices)),
    )
    return plain, copies


def path_config(supernet, path):
    """The architecture of one path of `supernet`, as plain data.

    Args:
        supernet: A `keras_supernet.Supernet`.
        path: The path: an index, candidate indices or labels, or a string.

    Returns:
        A JSON-serialisable dict: `path` (index), `label`, `indices` and
        `model`, the Keras config of the path's plain functional model,
        which `build_path_model` builds.
    """
    index = supernet.resolve_path(path)
    plain, _ = plain_graph(supernet, index)
    # Through JSON: plain data, as it is written to files.
    return json.loads(
        json.dumps(
            {
                "path": index,
                "label": supernet.path_label(index),
                "indices": list(supernet.path_indices(index)),
                "model": plain.get_config(),
            }
        )
    )


def build_path_model(config):
    """A freshly initialised plain Keras model for a `path_config` dict."""
    return keras.Model.from_config(config["model"])


def max_path_difference(supernet, path, model, inputs):
    """Max abs difference of outputs between `supernet` on `path` and
    `model` on `inputs`."""
    expected = keras.ops.convert_to_numpy(
        supernet.path_call(inputs, path, training=False)
    )
    actual = keras.ops.convert_to_numpy(model(inputs, training=False))
    return float(np.max(np.abs(expected - actual)))


def extract_path(supernet, path, verify=True, atol=1e-5, name=None):
    """Extracts one path of a supernet as a plain, standalone Keras model.

    The result is a functional `keras.Model` of standard Keras layers: each
    choice replaced by its chosen candidate (`Conv2D`, `Sequential` blocks,
    `Identity`...), the report's `PaddedDense` head by a `Dense` of the
    path's width, every other layer copied; weights copied in. It outputs
    what the supernet outputs on that path, and saves, exports and serves
    without this package.

    Args:
        supernet: A built `keras_supernet.Supernet`.
        path: The path: an index, candidate indices or labels, or a string.
        verify: If True, run both models on a seeded random batch and raise
            unless their outputs agree within `atol`.
        atol: Tolerance of the verification.
        name: Optional model name; defaults to `path_3x3_5x5` style.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: if `path` is unknown, or the verification fails.

    Example:

    >>> plain = extract_path(supernet, "5x5->3x3")
    >>> plain.save("path_5x5_3x3.keras")
    """
    index = supernet.resolve_path(path)
    model, copies = plain_graph(supernet, index, name=name)
    for copy in copies:
        copy()
    if verify:
        rng = np.random.default_rng(index % 2**32)
        inputs = [
            rng.normal(size=(8, *t.shape[1:])).astype(t.dtype) for t in supernet.inputs
        ]
        if len(inputs) == 1:
            inputs = inputs[0]
        difference = max_path_difference(supernet, index, model, inputs)
        if not difference <= atol:
            raise ValueError(
                f"Extracted path {supernet.path_label(index)} differs from "
                f"the supernet by {difference:.3g} (tolerance {atol:.3g})."
            )
    return model
