#!/usr/bin/env bash
# Synthesise the training-set components of the new generators in the background, resumably,
# and commit their finished shards at most once an hour (and when the job ends).
#
#   bash tools/grow_generator_sets.sh [WORKERS]     # from the repository root, after `make test` made .venv
#
# Alternates between the stores (2 shards of data/smooth.zarr, then 3 of data/noneq.zarr, whose
# draws cost two solves: ~3/4 of the CPU to noneq) so that a retrain at any time sees both.
# Noneq is favoured since candidate v9 (docs/model_card.md): with 800 draws it is the generator
# furthest from calibrated (68 % coverage of log_ne 0.40, smooth's 0.57 with 2,600), and
# hydrogen ionisation out of equilibrium is what RADYN flares have first. Every draw is seeded by its
# index, so a resumed store equals an uninterrupted one; a shard killed half-way is recomputed
# (shard_done is written last). Runs at nice 19. Logs: synth_<name>_log.txt (one line per
# atmosphere), synth_<name>.out (progress bar).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
workers=${1:-2}
py=.venv/bin/python
stores=(smooth noneq)
batch=(2 3)

progress() {  # "done/total" shards of a store ("0/?" before it exists)
  "$py" -c "import sys, zarr, numpy as np
try:
    d = zarr.open_array('data/$1.zarr/shard_done', mode='r')[:]; print(f'{int(np.sum(d))}/{d.size}')
except Exception:
    print('0/?')"
}

commit() {
  local msg="Training-set components: smooth $(progress smooth), noneq $(progress noneq) shards of 100 done

Made by tools/grow_generator_sets.sh: radynversion synth --config data/<name>.toml (Lightweaver,
H 6-level + Ca II NLTE, Ng acceleration; noneq at a fixed non-equilibrium n_e). Resume with:
bash tools/grow_generator_sets.sh"
  local have=()
  for name in "${stores[@]}"; do [ -d "data/$name.zarr" ] && have+=("data/$name.zarr"); done
  [ ${#have[@]} -eq 0 ] && return 0
  git add "${have[@]}" 2>/dev/null || return 0
  git commit -q -m "$msg" -- "${have[@]}" 2>/dev/null || true
}

(
  trap commit EXIT
  while :; do
    before="$(progress smooth) $(progress noneq)"
    for i in 0 1; do
      name=${stores[$i]}
      nice -n 19 .venv/bin/radynversion synth --config "data/$name.toml" --out "data/$name.zarr" \
        --workers "$workers" --max-shards "${batch[$i]}" --log "synth_${name}_log.txt" \
        > "synth_${name}.out" 2>&1 || true
    done
    after="$(progress smooth) $(progress noneq)"
    [ "$before" = "$after" ] && break  # both complete (or nothing could be written)
  done
) > /dev/null 2>&1 &
synth_pid=$!
echo "synthesis loop running as pid $synth_pid (progress: tail -c 300 synth_smooth.out synth_noneq.out)"
(
  while kill -0 "$synth_pid" 2>/dev/null; do
    sleep 3600
    kill -0 "$synth_pid" 2>/dev/null && commit
  done
) > /dev/null 2>&1 &
echo "hourly committer running as pid $!"
