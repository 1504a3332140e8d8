#!/bin/bash
# The exact commands behind docs/results/ranking/refit_head: the narrow
# study's uniform supernets (seeds 0, 1, 2) trained again and scored twice,
# with the shared head (`uniform`) and with each path's head re-fitted for
# 200 batches (`refit_head`), against the study's ground truth
# (docs/results/ranking/ranking.json). Run from the repository root on a
# 2-core machine shared with other jobs.

# The study's selection, rebuilt from ranking.json (its study folders are not
# kept): the same 30 architectures and split choice, under the same settings.
cp docs/results/ranking/space.json runs/ranking_narrow.json
PYTHONPATH=. python docs/results/ranking/rebuild_selection.py \
  docs/results/ranking/ranking.json runs/rnarrow_architectures.json

# The study's flags (docs/results/ranking/commands.sh), two methods; one
# shard per process (shard 0: seeds 0 and 2, shard 1: seed 1).
COMMON="--space=runs/ranking_narrow.json --data_dir=/work/shared/data/mnist --train_size=10000 --val_size=2000 \
  --learning_rate=3e-3 --bn_batches=10 --selection_epochs=6 --pool_size=60 \
  --architectures=30 --bins=6 --standalone_seeds=0,1 --standalone_epochs=8 \
  --average_epochs=2 --standalone_schedule=cosine --supernet_seeds=0,1,2 \
  --supernet_epochs=8 --longer_epochs=16 --few_shot_epochs=2 --warmup_epochs=4 \
  --methods=uniform,refit_head --standalone_eval=last"
for i in 0 1; do
  bin/rank --stage=supernets $COMMON --threads=1 --shard=$i/2 \
    --architectures_file=runs/rnarrow_architectures.json --output_dir=runs/rrefit_s$i
done

# The comparison (refit_head.json, table.md).
PYTHONPATH=. python docs/results/ranking/refit_head/compare.py \
  docs/results/ranking/ranking.json docs/results/ranking/refit_head runs/rrefit_s0 runs/rrefit_s1
