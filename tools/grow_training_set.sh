#!/usr/bin/env bash
# Grow the shipped default training set in the background and commit finished shards.
#
#   bash tools/grow_training_set.sh [WORKERS]        # from the repository root, after `make test` made .venv
#
# Runs at the lowest CPU priority (nice 19) so that work beside it is not slowed. Resumes
# data/prior.zarr with its own config (each sample is seeded by its
# index, so a resumed store equals an uninterrupted one) and, every 10 minutes, commits the shards
# written so far (path-limited commits: nothing else in the work tree is touched). Logs go to
# synth_log.txt (one line per atmosphere) and synth_run.out (progress bar).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
workers=${1:-2}
store=data/prior.zarr
cfg=data/prior.toml
nohup nice -n 19 .venv/bin/radynversion synth --config "$cfg" --out "$store" --workers "$workers" \
    --log synth_log.txt > synth_run.out 2>&1 &
synth_pid=$!
echo "synth running as pid $synth_pid (progress: tail -c 300 synth_run.out)"
(
  while kill -0 "$synth_pid" 2>/dev/null; do
    sleep 600
    done_shards=$(.venv/bin/python -c "import zarr, numpy as np; d = zarr.open_array('$store/shard_done', mode='r')[:]; print(f'{int(np.sum(d))}/{d.size}')" 2>/dev/null || echo "?")
    git add "$store" 2>/dev/null && git commit -q -m "Training set: ${done_shards} shards of 100 atmospheres done

Made by radynversion synth with $cfg (seed 0, Lightweaver, H 6-level + Ca II NLTE with charge
conservation, 200 depth points, mu = 1). Resume with: bash tools/grow_training_set.sh" -- "$store" 2>/dev/null || true
  done
) > /dev/null 2>&1 &
echo "shard committer running as pid $!"
