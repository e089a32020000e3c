#!/usr/bin/env bash
# Retrain the packaged default model on the shipped training set and re-evaluate it.
#
#   bash tools/train_default_model.sh [THREADS]       # from the repository root, after `make test` made .venv
#
# Trains with radynversion/data/default_model.toml on the shards finished so far (FIRST=N to
# choose the first N draws) into runs/default_model/first-N (resumable: rerun with the same
# FIRST), copies model.pt to radynversion/data/default_model.pt and the loss curves to docs/,
# and evaluates it on the held-out split of the same N draws into docs/evaluation/
# (report.json + figures), the figures quoted in docs/model_card.md.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
threads=${1:-2}
# the draws of the shards finished now (fixed for the run: the store may still be growing)
first=${FIRST:-$(.venv/bin/python -c "import zarr, numpy as np; d = zarr.open_array('data/prior.zarr/shard_done', mode='r')[:]; print(100 * int(np.argmin(np.append(d, 0) == 1)))")}
echo "training on the first $first draws"
run=runs/default_model/first-$first
.venv/bin/radynversion train --config radynversion/data/default_model.toml --out "$run" \
    --threads "$threads" --first "$first"
cp "$run/model.pt" radynversion/data/default_model.pt
mkdir -p docs/evaluation
cp "$run/loss_curves.png" docs/evaluation/loss_curves.png
.venv/bin/radynversion evaluate --out docs/evaluation/report.json --samples 512 --first "$first"
