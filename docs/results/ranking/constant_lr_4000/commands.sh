#!/bin/bash
# The exact commands behind docs/results/ranking (issue 13's reduced study),
# run from the repository root, one process at a time under `nice -n 10`, on a
# 2-core machine shared with other jobs (TensorFlow on one thread).

# 1. Selection: a uniform supernet (seed 1000, 6 epochs) scores 60 random
#    architectures; 30 are drawn from 6 equal-width score bins. (The folder's
#    run was this command without --stage, stopped by hand during its first
#    standalone run: at learning rate 1e-3, 4 epochs of 4,000 images left the
#    models at 67% after 2 epochs. The selection does not depend on that rate.)
nice -n 10 bin/rank --stage=select --data_dir=/work/shared/data/mnist \
  --train_size=4000 --val_size=2000 --bn_batches=10 \
  --selection_epochs=6 --pool_size=60 --architectures=30 --bins=6 \
  --standalone_seeds=0,1 --standalone_epochs=4 --average_epochs=2 \
  --supernet_seeds=0,1,2 --supernet_epochs=8 --longer_epochs=16 \
  --methods=uniform,no_recalibration,fair,angle --threads=1 \
  --output_dir=runs/rank_reduced

# 2. Ground truth and supernets on that selection (resumable: rerun to continue).
#    First started without --standalone_eval=last (seed 0, architectures 0-15
#    were evaluated after every epoch), stopped, and resumed with it: the same
#    accuracies at the averaged epochs, less CPU.
nice -n 10 bin/rank --data_dir=/work/shared/data/mnist \
  --train_size=4000 --learning_rate=3e-3 --val_size=2000 --bn_batches=10 \
  --selection_epochs=6 --pool_size=60 --architectures=30 --bins=6 \
  --standalone_seeds=0,1 --standalone_epochs=4 --average_epochs=2 \
  --supernet_seeds=0,1,2 --supernet_epochs=8 --longer_epochs=16 \
  --methods=uniform,no_recalibration,fair,angle --threads=1 --standalone_eval=last \
  --architectures_file=runs/rank_reduced/architectures.json --output_dir=runs/rank_lr3

# 3. The report.
bin/rank --stage=report --run_dir=runs/rank_lr3 --output_dir=docs/results/ranking/constant_lr_4000
