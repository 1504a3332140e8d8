#!/bin/bash
# The exact commands behind docs/results/ranking (issue 13's fourth study: the
# `ranking_depth` space made narrower, space.json), run from the repository
# root on a 2-core machine shared with other jobs (the test suite, the search
# story). The flags are the `ranking_depth` study's
# (ranking_depth_4seeds/commands.sh); only the space differs.
cp docs/results/ranking/space.json runs/ranking_narrow.json
COMMON="--space=runs/ranking_narrow.json --data_dir=/work/shared/data/mnist --train_size=10000 --val_size=2000 \
  --learning_rate=3e-3 --bn_batches=10 --selection_epochs=6 --pool_size=60 \
  --architectures=30 --bins=6 --standalone_seeds=0,1 --standalone_epochs=8 \
  --average_epochs=2 --standalone_schedule=cosine --supernet_seeds=0,1,2 \
  --supernet_epochs=8 --longer_epochs=16 --few_shot_epochs=2 --warmup_epochs=4 \
  --methods=uniform,no_recalibration,fair,longer,few_shot,warmup,angle \
  --standalone_eval=last"

# 1. The pilot (a session before): the selection (a uniform supernet, seed
#    1000, 6 epochs, scores 60 random architectures; 30 drawn from 6 score
#    bins), then the first 12 architectures x seeds 0, 1
#    (docs/results/ranking/pilot_narrow).
bin/rank --stage=standalone $COMMON --pilot=12 --threads=1 --output_dir=runs/rnarrow

# 2. The rest of seeds 0, 1 (resuming in the pilot's folder), then half the
#    supernets there; the other half side by side in a folder of its own.
(bin/rank --stage=standalone $COMMON --threads=1 --output_dir=runs/rnarrow && \
 bin/rank --stage=supernets $COMMON --threads=1 --shard=0/2 --output_dir=runs/rnarrow) &
bin/rank --stage=supernets $COMMON --threads=1 --shard=1/2 \
  --architectures_file=runs/rnarrow/architectures.json --output_dir=runs/rnarrow_s1 &
wait

# 3. Standalone seeds 2 and 3, one shard (one seed) each.
C2=$(echo "$COMMON" | sed 's/--standalone_seeds=0,1/--standalone_seeds=2,3/')
bin/rank --stage=standalone $C2 --threads=1 --shard=0/2 \
  --architectures_file=runs/rnarrow/architectures.json --output_dir=runs/rnarrow_s2 &
bin/rank --stage=standalone $C2 --threads=1 --shard=1/2 \
  --architectures_file=runs/rnarrow/architectures.json --output_dir=runs/rnarrow_s3 &
wait

# 4. The report.
bin/rank --stage=report --run_dir=runs/rnarrow,runs/rnarrow_s1,runs/rnarrow_s2,runs/rnarrow_s3 \
  --output_dir=docs/results/ranking
