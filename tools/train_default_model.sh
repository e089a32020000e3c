#!/usr/bin/env bash
# Retrain the packaged default model, ship it, and re-measure every figure the model card quotes.
#
#   DATA=data/union_v12.toml bash tools/train_default_model.sh [THREADS]   # from the repository root,
#                                                                          # after `make test` made .venv
#   FIRST=12000 bash tools/train_default_model.sh 1    # v7: the first 12,000 draws of the prior only
#
# Trains with radynversion/data/default_model.toml on DATA (a training union, data/union_*.toml)
# or on the first FIRST draws of the shipped prior store, into runs/default_model/<name>
# (resumable: rerun with the same arguments). Then:
#   * stores it in float16 as radynversion/data/default_model.pt (compact_checkpoint) and copies
#     the loss curves to docs/evaluation/loss_curves.png;
#   * docs/evaluation/report.json (+ figures): `radynversion evaluate` on the held-out split of
#     the old prior's first 12,000 draws, CRISP's default program, 512 draws (the card's
#     Evaluation section);
#   * docs/evaluation/programs/default_<program>/report.json (figures dropped) for the even,
#     points and sparse programs (the card's "four observing programs");
#   * docs/evaluation/trust/default_heldout.json: tools/ood_study.py on the held-out draws of
#     every generator and on ../shared/external/check_v1.nc (evaluation only), with the share of
#     pixels trusted (the card's "Beyond the training prior").
# SKIP_TRAIN=1 re-measures the packaged model without training.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
threads=${1:-2}
py=.venv/bin/python
if [ -n "${DATA:-}" ]; then
  name=$(basename "$DATA" .toml)
  data_args=(--data "$DATA")
else
  # the draws of the shards finished now (fixed for the run: the store may still be growing)
  first=${FIRST:-$($py -c "import zarr, numpy as np; d = zarr.open_array('data/prior.zarr/shard_done', mode='r')[:]; print(100 * int(np.argmin(np.append(d, 0) == 1)))")}
  name=first-$first
  data_args=(--first "$first")
fi
run=runs/default_model/$name
if [ -z "${SKIP_TRAIN:-}" ]; then
  echo "training on $name into $run"
  .venv/bin/radynversion train --config radynversion/data/default_model.toml --out "$run" \
      --threads "$threads" "${data_args[@]}" --no-progress
  $py -c "from radynversion.model.checkpoint import compact_checkpoint as c; c('$run/model.pt', 'radynversion/data/default_model.pt')"
  mkdir -p docs/evaluation
  cp "$run/loss_curves.png" docs/evaluation/loss_curves.png
fi

# The old prior's held-out split (the first 12,000 draws: v7's, so every model is scored on the
# same 1,111 atmospheres), through CRISP's default program and three others.
.venv/bin/radynversion evaluate --out docs/evaluation/report.json --samples 512 --first 12000
for program in even points sparse; do
  .venv/bin/radynversion evaluate --out "docs/evaluation/programs/default_$program/report.json" \
      --samples 512 --first 12000 --tunings "$program"
  rm -f docs/evaluation/programs/default_$program/report_*.png docs/evaluation/programs/default_$program/report_per_height.nc
done

# Off the old prior: held-out draws of each generator (of the largest union so far) and check_v1.
union=$(ls data/union_v*.toml | sort -V | tail -1)
pops=(--population "smooth_held=$union:smooth" --population "noneq_held=$union:noneq")
[ -f ../shared/external/check_v1.nc ] && pops+=(--population check=../shared/external/check_v1.nc)
$py tools/ood_study.py --model radynversion/data/default_model.pt --first 12000 --held-out \
    "${pops[@]}" --out docs/evaluation/trust/default_heldout.json
