"""Does a head re-fitted per path fix the supernet's ranking of the fourth
part's feasible paths? An experiment, not part of the library.

For every path of a search (and its reference): the supernet's weights as
trained, BatchNorm recalibrated for the path as bin/search does, the path
extracted as a plain model, then only its dense head (`hidden`, `logits`)
trained for STEPS batches of the run's training data (Adam 1e-3, the
extracted model's other layers frozen, BatchNorm in inference mode), and the
path scored on the same 2,000 validation examples as the search.

    PYTHONPATH=. python docs/results/search/story_report/refit_head.py \\
        RUN_DIR SEARCH_DIR OUTPUT.json [STEPS]
"""

import json
import os
import sys
import time

import keras
import numpy as np

from keras_supernet import extract
from keras_supernet import runs
from keras_supernet import search
from keras_supernet import training

HEAD = ("hidden", "logits")


def main(run_dir, search_dir, output_path, steps="200"):
    steps = int(steps)
    start, cpu = time.time(), time.process_time()
    loaded = runs.RunFolder(run_dir).load("joint", 0, None, "best")
    supernet = loaded.supernet
    data = training.run_data(loaded.config)
    x_val = np.concatenate([x for x, _ in data.val.as_numpy_iterator()])[:2000]
    y_val = np.concatenate([y for _, y in data.val.as_numpy_iterator()])[:2000]
    trained = [w.numpy() for w in supernet.weights]
    result = search.read_search(search_dir)
    records = list(result["evaluated"])
    if result.get("reference"):
        records.append(result["reference"])
    # One fixed stream of training batches, the same for every path.
    batches = list(data.train(seed=0, epoch=0).take(steps).as_numpy_iterator())
    rows = []
    for n, record in enumerate(records, 1):
        for variable, value in zip(supernet.weights, trained):
            variable.assign(value)
        # A fresh scorer: recalibrates this path from the trained statistics.
        scorer = search.PathScorer(supernet, x_val, y_val, recalibration_data=data.bn())
        shared = scorer(record["path"])
        model = extract.extract_path(supernet, record["path"])
        for layer in model.layers:
            layer.trainable = layer.name in HEAD
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        for x, y in batches:
            model.train_on_batch(x, y)
        loss, accuracy = model.evaluate(x_val, y_val, batch_size=256, verbose=0)
        rows.append(
            {
                "path": record["path"],
                "label": record["label"],
                "search_val_accuracy": record["val_accuracy"],
                "shared_val_accuracy": float(shared["val_accuracy"]),
                "refit_val_accuracy": float(accuracy),
                "refit_val_loss": float(loss),
            }
        )
        print(n, len(records), record["label"], rows[-1]["refit_val_accuracy"])
    out = {
        "run_dir": os.path.realpath(run_dir),
        "search_dir": os.path.realpath(search_dir),
        "steps": steps,
        "rows": rows,
        "wall_s": time.time() - start,
        "cpu_s": time.process_time() - cpu,
    }
    with open(output_path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
