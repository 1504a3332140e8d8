import json

import numpy as np
import pytest

from keras_supernet import presets


@pytest.mark.parametrize(
    "name, num_paths, num_choices",
    [
        ("report", 4, 2),
        ("mnist20", 4**20, 20),
        ("mobile7", 8**7, 7),
        ("ranking", 7**6, 6),
        ("ranking_depth", 4**6, 6),
    ],
)
def test_named_spaces(name, num_paths, num_choices):
    spec = presets.load_space(name)
    model = presets.build_supernet(spec, seed=0)
    assert model.num_paths == num_paths
    assert model.space.num_choices == num_choices
    assert model(np.zeros((2, 28, 28, 1), "float32")).shape == (2, 10)


def test_json_files_describe_stages_or_the_preset(tmp_path):
    stages = {
        "stem": {"filters": 4, "strides": 2},
        "stages": [
            {"filters": 4, "blocks": 2, "candidates": ["conv3x3", "skip"]},
            {
                "filters": 8,
                "blocks": 1,
                "strides": 2,
                "candidates": ["sep3x3", "mb3x3_e2"],
            },
        ],
        "batchnorm": False,
    }
    path = tmp_path / "space.json"
    path.write_text(json.dumps(stages))
    model = presets.build_supernet(presets.load_space(str(path)), seed=1)
    assert model.num_paths == 8 and not model.has_batchnorm
    assert model.path_label(7) == "skip->skip->mb3x3_e2"
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {
                "preset": "report",
                "kernel_sizes": [[3, 5, 7]],
                "filters": [4],
                "hidden_units": 8,
            }
        )
    )
    model = presets.build_supernet(presets.load_space(str(report)), seed=1)
    assert model.is_preset and model.num_paths == 3


def test_the_same_seed_builds_the_same_weights():
    spec = presets.load_space("ranking")
    a = presets.build_supernet(spec, seed=3)
    b = presets.build_supernet(spec, seed=3, sampling="fixed")
    c = presets.build_supernet(spec, seed=4)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert any(
        not np.array_equal(va.numpy(), vc.numpy())
        for va, vc in zip(a.trainable_variables, c.trainable_variables)
    )


def test_python_files_give_the_graph(tmp_path):
    path = tmp_path / "space.py"
    path.write_text(
        "import keras\n"
        "import keras_supernet as ks\n"
        "def space(input_shape, num_classes):\n"
        "    inputs = keras.Input(input_shape)\n"
        "    x = ks.candidates.choice(['conv3x3', 'conv5x5'], 4, name='only')(inputs)\n"
        "    x = keras.layers.GlobalAveragePooling2D()(x)\n"
        "    return inputs, keras.layers.Dense(num_classes)(x)\n"
    )
    spec = presets.load_space(str(path))
    assert spec["python"] == str(path) and len(spec["sha256"]) == 64
    model = presets.build_supernet(spec, seed=0)
    assert model.space.candidate_labels == (("conv3x3", "conv5x5"),)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "the JSON does not parse"),
        ("[1, 2]", "expected a JSON object"),
        ('{"layers": []}', "unknown keys"),
        ('{"stages": []}', "non-empty list 'stages'"),
        (
            '{"stages": [{"filters": 4, "blocks": 1, "candidates": ["conv4x5"]}]}',
            "Invalid candidate spec",
        ),
        (
            '{"stages": [{"filters": 0, "blocks": 1, "candidates": ["skip"]}]}',
            "`filters`",
        ),
        (
            '{"stages": [{"filters": 4, "blocks": 1, "candidates": ["skip", "skip"]}]}',
            "repeats a candidate",
        ),
        ('{"preset": "resnet"}', "unknown preset"),
        ('{"preset": "report", "kernel": 3}', "unknown keys"),
    ],
)
def test_space_files_that_do_not_describe_a_space(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(presets.SpaceError, match=message):
        presets.load_space(str(path))


def test_bad_space_names_and_files(tmp_path):
    with pytest.raises(presets.SpaceError, match="Expected one of report"):
        presets.load_space("resnet50")
    with pytest.raises(presets.SpaceError, match="cannot read the file"):
        presets.load_space(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.py"
    broken.write_text("def space(:\n")
    with pytest.raises(presets.SpaceError, match="running it failed"):
        presets.build_supernet(presets.load_space(str(broken)))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(presets.SpaceError, match="must define `space"):
        presets.build_supernet(presets.load_space(str(empty)))
