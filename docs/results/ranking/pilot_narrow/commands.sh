#!/bin/bash
# The pilot behind docs/results/ranking/pilot_narrow, run from the repository
# root beside the test suite: the ranking_depth study's flags (see
# ../commands.sh) on a narrower space, the first 12 architectures, 2 seeds.
cp docs/results/ranking/pilot_narrow/space.json runs/ranking_narrow.json
COMMON="--space=runs/ranking_narrow.json --data_dir=/work/shared/data/mnist --train_size=10000 --val_size=2000 \
  --learning_rate=3e-3 --bn_batches=10 --selection_epochs=6 --pool_size=60 \
  --architectures=30 --bins=6 --standalone_seeds=0,1 --standalone_epochs=8 \
  --average_epochs=2 --standalone_schedule=cosine --supernet_seeds=0,1,2 \
  --supernet_epochs=8 --longer_epochs=16 --few_shot_epochs=2 --warmup_epochs=4 \
  --methods=uniform,no_recalibration,fair,longer,few_shot,warmup,angle \
  --standalone_eval=last"
bin/rank --stage=standalone $COMMON --pilot=12 --threads=1 --output_dir=runs/rnarrow
bin/rank --stage=report --run_dir=runs/rnarrow --output_dir=docs/results/ranking/pilot_narrow
