"""Weight files of the report's supernet saved by keras_supernet 0.1.0 and
0.2.0, before it became a functional graph of `Choice` layers (0.3.0).

Those files were written by a subclassed model; their layout names the old
attributes (`layers/supernet_layer_1/branches/sequential/...`), so Keras
cannot map them onto the functional preset by itself. The arithmetic of
the preset did not change, so their weights load here one by one: the
candidates' convolutions (and 1x1 mixers), the active candidates, the
head's kernel (one block in 0.1.0, row blocks in 0.2.0), the classifier and
the path sampler's random state. Adaptive sampling probabilities were kept
per path then and per candidate now: they are not carried over.
"""

import h5py
import numpy as np

# Top-level groups that only the old subclassed supernet wrote.
_LEGACY_GROUPS = ("layers/supernet_layer", "hidden", "classifier")


def is_legacy_weights(filepath):
    """Whether `filepath` is a weights file of keras_supernet 0.1.0/0.2.0."""
    path = str(filepath)
    if not path.endswith(".h5"):
        return False
    try:
        with h5py.File(path, "r") as f:
            return all(group in f for group in _LEGACY_GROUPS)
    except OSError:
        return False


def _numbered(group, name, position):
    """Keras named a list's layers by class, `name`, `name_1`, ..."""
    key = name if position == 0 else f"{name}_{position}"
    if key not in group:
        raise ValueError(
            f"The weights file has no '{group.name}/{key}': it was not saved "
            "by a supernet of this shape."
        )
    return group[key]


def _values(group):
    variables = group["vars"]
    return [np.asarray(variables[str(i)]) for i in range(len(variables))]


def load_legacy_weights(supernet, filepath):
    """Loads a 0.1.0/0.2.0 weights file into the report's preset.

    Raises:
        ValueError: if `supernet` is not the preset, or the file does not fit
            its shape.
    """
    if not supernet.is_preset:
        raise ValueError(
            f"{filepath} holds weights of keras_supernet 0.1.0 or 0.2.0, "
            "which only fit the report's preset (Supernet(kernel_sizes=...))."
        )
    try:
        with h5py.File(str(filepath), "r") as f:
            layers = f["layers"]
            for position, choice in enumerate(supernet.choices):
                group = _numbered(layers, "supernet_layer", position)
                branches = group["branches"]
                for k, candidate in enumerate(choice.candidates):
                    conv = _numbered(branches, "sequential", k)["layers/conv2d"]
                    candidate.get_layer("conv").set_weights(_values(conv))
                choice.active_index.assign(int(_values(group)[0]))
                if choice.mixer is not None:
                    choice.mixer.set_weights(_values(group["mixer"]))
            # 0.1.0 kept one kernel, 0.2.0 its row blocks: whole, both are
            # the kernel of a Dense layer of the full width.
            stored = _values(f["hidden"])
            supernet.hidden.assign_dense_weights(
                np.concatenate(stored[:-1], axis=0), stored[-1]
            )
            supernet.get_layer("logits").set_weights(_values(f["classifier"]))
            state = f["vars"].get("path_seed_generator_state")
            if state is not None:
                supernet.sampler.seed_generator.state.assign(np.asarray(state))
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"Cannot load {filepath} (keras_supernet 0.1.0/0.2.0 weights) "
            f"into this supernet: {e}"
        ) from None
