#!/usr/bin/env python3
"""Writes the small real MNIST subset used by the tests (tests/data/mnist_small).

Takes the first `--train` training and the first `--test` test examples of a
folder with the four standard MNIST IDX files and writes them, in the same IDX
format and under the same names, gzip-compressed with a fixed timestamp so that
running the script twice gives byte-identical files. The first examples of
MNIST are close to class-balanced (each digit is 8-14 % of either subset).

Example (from the repository root):

    python tests/data/make_subset.py --source ../shared/data/mnist \
        --output tests/data/mnist_small --train 2000 --test 500
"""

import argparse
import gzip
import os
import struct

import numpy as np

from keras_supernet import data


def write_idx(path, array):
    """Writes a uint8 array as a gzip-compressed IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(header + array.tobytes())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/mnist")
    parser.add_argument("--output", default="tests/data/mnist_small")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    args = parser.parse_args()

    arrays = data.load_arrays("mnist", data_dir=args.source)
    os.makedirs(args.output, exist_ok=True)
    for split, count in (("train", args.train), ("test", args.test)):
        images, labels = arrays[split]
        images_name, labels_name = data.IDX_FILES[split]
        write_idx(os.path.join(args.output, images_name + ".gz"), images[:count])
        write_idx(os.path.join(args.output, labels_name + ".gz"), labels[:count])
        counts = np.bincount(labels[:count], minlength=10)
        print(f"{split}: {count} examples, per class {counts.tolist()}")


if __name__ == "__main__":
    main()
