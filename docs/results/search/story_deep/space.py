"""The user's story, second attempt: a space that holds the report model's
kind of path (full-resolution convolutions, max pooling, a dense head over
flattened features) and deeper, cheaper variants of it, with BatchNorm.

    bin/train --mode=joint --space=docs/results/search/story_deep/space.py ...

28x28: one choice of the first convolution (16 filters), two of extra
blocks (or skip); max pooling; 14x14: one choice of the widening
convolution (32 filters), three of extra blocks; max pooling; 7x7: four
choices of extra blocks; max pooling to 3x3, flatten (288 features), a
128-unit dense layer, the logits. 3 * 3**2 * 4 * 4**3 * 4**4 = 1,769,472
paths. Extra blocks keep the width, so a skip is always a candidate; the
report model's own path is not here (its convolutions are `valid`), but
its kind is: `conv3x3->skip->skip->conv3x3->skip...`.
"""

import keras

import keras_supernet as ks


def space(input_shape, num_classes):
    seed = 0
    blocks = iter(range(100))

    def choice(specs, filters, channels):
        index = next(blocks)
        return ks.candidates.choice(
            specs,
            filters,
            input_channels=channels,
            seed=1000 * (index + 1),
            name=f"choice_{index}",
        )

    inputs = keras.Input(input_shape, name="images")
    x = choice(["conv3x3", "conv5x5", "sep5x5"], 16, input_shape[-1])(inputs)
    for _ in range(2):
        x = choice(["skip", "sep3x3", "conv3x3"], 16, 16)(x)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = choice(["conv3x3", "conv5x5", "sep3x3", "sep5x5"], 32, 16)(x)
    for _ in range(3):
        x = choice(["skip", "sep3x3", "conv3x3", "mb3x3_e3"], 32, 32)(x)
    x = keras.layers.MaxPooling2D(2, name="pool_2")(x)
    for _ in range(4):
        x = choice(["skip", "sep3x3", "conv3x3", "mb5x5_e3"], 32, 32)(x)
    x = keras.layers.MaxPooling2D(2, name="pool_3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(
        128,
        activation="relu",
        name="hidden",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 97),
    )(x)
    outputs = keras.layers.Dense(
        num_classes,
        name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 98),
    )(x)
    return inputs, outputs
