"""Rebuilds a ranking study's selection (architectures.json) from its ranking.json.

The committed studies keep their report, not their study folders; a later
experiment on the same architectures (more standalone seeds, another
method's supernets) needs the selection as `bin/rank --architectures_file`
takes it: the same paths, labels, selection scores and split choice, under
the same settings.

    PYTHONPATH=. python docs/results/ranking/rebuild_selection.py \\
        docs/results/ranking/ranking.json runs/rnarrow_architectures.json
"""

import json
import sys

from keras_supernet import rank
from keras_supernet import runs


def main(ranking_json, output):
    with open(ranking_json) as f:
        study = json.load(f)
    config = rank.StudyConfig.from_json(study["config"])
    selection = study["selection"]
    runs.write_json(
        output,
        {
            "settings": rank._selection_settings(config),
            "paths": selection["paths"],
            "labels": selection["labels"],
            "selection_scores": selection["selection_scores"],
            "split_choice": selection["split_choice"],
            "reconstructed_from": f"{ranking_json} (selection)",
        },
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
