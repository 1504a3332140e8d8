"""Writes the weights of an earlier keras_supernet that tests/test_supernet.py
loads (tests/data/v0_1_0, tests/data/v0_2_0).

In 0.1.0 the head's hidden layer was a `Dense` with one
`(embedding_size, units)` kernel; 0.2.0 stored it as row blocks; both were
subclassed models whose weight files name their attributes, and 0.3.0 (a
functional graph of `Choice` layers) must still load them. Run with a
checkout of that version first on the path:

    git worktree add /tmp/v010 fc30ce7 && python tests/data/make_legacy_weights.py /tmp/v010 0.1.0
    git worktree add /tmp/v020 8e183b7 && python tests/data/make_legacy_weights.py /tmp/v020 0.2.0
"""

import json
import os
import sys

sys.path.insert(0, sys.argv[1])

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_supernet  # noqa: E402

version = sys.argv[2]
assert keras_supernet.__version__ == version, keras_supernet.__file__

model = keras_supernet.Supernet(
    kernel_sizes=((3, 5), (3, 5)),
    filters=(2, 4),
    hidden_units=8,
    num_classes=10,
    seed=3,
)
model.compile(
    optimizer=keras.optimizers.Adam(1e-2),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, size=32)
model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)

out = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "v" + version.replace(".", "_")
)
os.makedirs(out, exist_ok=True)
model.save_weights(os.path.join(out, "supernet.weights.h5"))
probe = rng.normal(size=(4, 28, 28, 1)).astype("float32")
np.savez(
    os.path.join(out, "expected.npz"),
    inputs=probe,
    **{
        f"path{p}": keras.ops.convert_to_numpy(model.path_call(probe, p))
        for p in range(model.num_paths)
    },
)
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(model.get_config(), f, indent=1)
