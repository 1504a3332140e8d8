"""Extraction of one supernet path into a plain, standalone Keras model.

As in once-for-all's `get_active_subnet`, extraction has three separate
steps: `path_config` describes the chosen path's architecture as plain data,
`build_path_model` builds a `keras.Sequential` of standard layers from that
description, and the path's weights are then copied in and the two models'
outputs compared.
"""

import keras
import numpy as np


def path_config(supernet, path):
    """The architecture of one path of `supernet`, as plain data.

    Args:
        supernet: A `keras_supernet.Supernet`.
        path: The path, as an index, kernel sizes or a string.

    Returns:
        A JSON-serialisable dict accepted by `build_path_model`.
    """
    index = supernet.resolve_path(path)
    layers = []
    for layer, branch in zip(
        supernet.supernet_layers, supernet.branch_indices(index)
    ):
        conv, pool = layer.branches[branch].layers
        layers.append(
            {
                "kernel_size": layer.kernel_sizes[branch],
                "filters": layer.filters,
                "padding": layer.padding,
                "activation": keras.activations.serialize(layer.activation),
                "pool_size": pool.pool_size[0],
                # A concat_1x1 block with one candidate enabled is the
                # candidate followed by its slice of the 1x1 mixer.
                "mix_1x1": layer.mixer is not None,
            }
        )
    return {
        "path": index,
        "label": supernet.path_label(index),
        "input_shape": list(supernet.image_shape),
        "layers": layers,
        "features": supernet.path_features(index),
        "hidden_units": supernet.hidden_units,
        "num_classes": supernet.num_classes,
    }


def build_path_model(config, name=None):
    """A freshly initialised `keras.Sequential` for a `path_config` dict.

    The model holds standard Keras layers only. The supernet's zero padding
    of the embedding is left out: padded features are zeros, so the first
    Dense layer only needs the kernel rows of the real features (the
    supernet's `hidden` layer stores them as its first row blocks).
    """
    layers = [keras.Input(shape=tuple(config["input_shape"]), name="images")]
    for i, spec in enumerate(config["layers"]):
        k = spec["kernel_size"]
        layers += [
            keras.layers.Conv2D(
                spec["filters"],
                k,
                padding=spec["padding"],
                activation=spec["activation"],
                name=f"conv_{i}_{k}x{k}",
            ),
            keras.layers.MaxPooling2D(spec["pool_size"], name=f"pool_{i}"),
        ]
        if spec.get("mix_1x1"):
            layers.append(
                keras.layers.Conv2D(spec["filters"], 1, name=f"mix_{i}")
            )
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(
            config["hidden_units"], activation="relu", name="hidden"
        ),
        keras.layers.Dense(config["num_classes"], name="logits"),
    ]
    if name is None:
        name = "path_" + config["label"].replace("->", "_")
    return keras.Sequential(layers, name=name)


def _copy_path_weights(supernet, index, model):
    for i, (layer, branch) in enumerate(
        zip(supernet.supernet_layers, supernet.branch_indices(index))
    ):
        k = layer.kernel_sizes[branch]
        model.get_layer(f"conv_{i}_{k}x{k}").set_weights(
            layer.branches[branch].layers[0].get_weights()
        )
        if layer.mixer is not None:
            kernel, bias = layer.mixer.get_weights()
            rows = slice(branch * layer.filters, (branch + 1) * layer.filters)
            model.get_layer(f"mix_{i}").set_weights([kernel[:, :, rows], bias])
    features = supernet.path_features(index)
    kernel = np.concatenate(
        [b.numpy() for b in supernet.hidden.blocks_for(features)], axis=0
    )
    model.get_layer("hidden").set_weights([kernel, supernet.hidden.bias.numpy()])
    model.get_layer("logits").set_weights(supernet.classifier.get_weights())


def max_path_difference(supernet, path, model, inputs):
    """Max abs difference of logits between `supernet` on `path` and
    `model` on `inputs`."""
    index = supernet.resolve_path(path)
    expected = keras.ops.convert_to_numpy(
        supernet.path_call(inputs, index, training=False)
    )
    actual = keras.ops.convert_to_numpy(model(inputs, training=False))
    return float(np.max(np.abs(expected - actual)))


def extract_path(supernet, path, verify=True, atol=1e-5, name=None):
    """Extracts one path of a supernet as a standalone `keras.Sequential`.

    The result holds only standard Keras layers (`Conv2D`, `MaxPooling2D`,
    `Flatten`, `Dense`), with the path's candidate weights and the head's
    weights copied in, and outputs the same logits as the supernet on that
    path. It can be saved, exported and served without this package.

    Args:
        supernet: A built `keras_supernet.Supernet`.
        path: The path, as an index, kernel sizes or a string.
        verify: If True, run both models on a seeded random batch and raise
            unless their logits agree within `atol`.
        atol: Tolerance of the verification.
        name: Optional model name; defaults to `path_3x3_5x5` style.

    Returns:
        A `keras.Sequential` model.

    Raises:
        ValueError: if `path` is unknown, or the verification fails.

    Example:

    >>> plain = extract_path(supernet, (5, 3))
    >>> plain.save("path_5x5_3x3.keras")
    """
    index = supernet.resolve_path(path)
    model = build_path_model(path_config(supernet, index), name=name)
    _copy_path_weights(supernet, index, model)
    if verify:
        inputs = np.random.default_rng(index).normal(
            size=(8, *supernet.image_shape)
        ).astype("float32")
        difference = max_path_difference(supernet, index, model, inputs)
        if not difference <= atol:
            raise ValueError(
                f"Extracted path {supernet.path_label(index)} differs from "
                f"the supernet by {difference:.3g} (tolerance {atol:.3g})."
            )
    return model
