#!/bin/bash
# The exact commands behind docs/results/ranking/more_seeds: the narrow
# study's 30 architectures trained alone with four more seeds (4, 5, 6, 7),
# then its ground truth measured with all eight. Run from the repository root
# on a 2-core machine shared with other jobs.

# The study's selection, rebuilt from ranking.json (its study folders are not
# kept): the same 30 architectures, under the same settings.
cp docs/results/ranking/space.json runs/ranking_narrow.json
PYTHONPATH=. python docs/results/ranking/rebuild_selection.py \
  docs/results/ranking/ranking.json runs/rnarrow_architectures.json

# The study's flags (docs/results/ranking/commands.sh) with seeds 4-7; one
# shard per process, side by side (shard 0: seeds 4 and 6, shard 1: 5 and 7).
COMMON="--space=runs/ranking_narrow.json --data_dir=/work/shared/data/mnist --train_size=10000 --val_size=2000 \
  --learning_rate=3e-3 --bn_batches=10 --selection_epochs=6 --pool_size=60 \
  --architectures=30 --bins=6 --standalone_seeds=4,5,6,7 --standalone_epochs=8 \
  --average_epochs=2 --standalone_schedule=cosine --supernet_seeds=0,1,2 \
  --supernet_epochs=8 --longer_epochs=16 --few_shot_epochs=2 --warmup_epochs=4 \
  --methods=uniform,no_recalibration,fair,longer,few_shot,warmup,angle \
  --standalone_eval=last"
for i in 0 1; do
  bin/rank --stage=standalone $COMMON --threads=1 --shard=$i/2 \
    --architectures_file=runs/rnarrow_architectures.json --output_dir=runs/rseeds_s$i &
done
wait

# The check that a re-run is the study's own run: seed 0 of the first 2
# architectures, again.
C0=$(echo "$COMMON" | sed 's/--standalone_seeds=4,5,6,7/--standalone_seeds=0/')
bin/rank --stage=standalone $C0 --threads=1 --pilot=2 \
  --architectures_file=runs/rnarrow_architectures.json --output_dir=runs/rseeds_check

# The comparison (more_seeds.json, table.md).
PYTHONPATH=. python docs/results/ranking/more_seeds/compare.py \
  docs/results/ranking/ranking.json docs/results/ranking/more_seeds \
  runs/rseeds_s0 runs/rseeds_s1 runs/rseeds_check
