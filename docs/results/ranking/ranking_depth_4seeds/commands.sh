#!/bin/bash
# The exact commands behind docs/results/ranking/ranking_depth_4seeds (issue
# 13's third study, on the `ranking_depth` space), run from the repository
# root on a 2-core machine shared with other jobs: the selection alone, then two shards side by side
# (one core and one TensorFlow thread each), then the report that merges them.
COMMON="--space=ranking_depth --data_dir=/work/shared/data/mnist --train_size=10000 --val_size=2000 \
  --learning_rate=3e-3 --bn_batches=10 --selection_epochs=6 --pool_size=60 \
  --architectures=30 --bins=6 --standalone_seeds=0,1 --standalone_epochs=8 \
  --average_epochs=2 --standalone_schedule=cosine --supernet_seeds=0,1,2 \
  --supernet_epochs=8 --longer_epochs=16 --few_shot_epochs=2 --warmup_epochs=4 \
  --methods=uniform,no_recalibration,fair,longer,few_shot,warmup,angle \
  --standalone_eval=last"

# 1. Selection: a uniform supernet (seed 1000, 6 epochs) scores 60 random
#    architectures; 30 are drawn from 6 equal-width score bins.
bin/rank --stage=select $COMMON --output_dir=runs/rdep0

# 2. Ground truth and supernets in two shards sharing that selection
#    (resumable: rerun a shard to continue it).
bin/rank $COMMON --threads=1 --shard=0/2 --output_dir=runs/rdep0 &
bin/rank $COMMON --threads=1 --shard=1/2 \
  --architectures_file=runs/rdep0/architectures.json --output_dir=runs/rdep1 &
wait

# 2b. (A later session.) Two more standalone seeds of the same 30
#     architectures, one shard each (79 CPU-minutes, run beside other jobs):
#     the ground truth becomes the mean of 4 seeds, and the report measures
#     how two 2-seed ground truths agree (split-half tau).
C2=$(echo "$COMMON" | sed 's/--standalone_seeds=0,1/--standalone_seeds=2,3/')
bin/rank --stage=standalone $C2 --threads=1 --shard=0/2 --output_dir=runs/rdep0 &
bin/rank --stage=standalone $C2 --threads=1 --shard=1/2 \
  --architectures_file=runs/rdep0/architectures.json --output_dir=runs/rdep1 &
wait

# 3. The report.
bin/rank --stage=report --run_dir=runs/rdep0,runs/rdep1 \
  --output_dir=docs/results/ranking/ranking_depth_4seeds
