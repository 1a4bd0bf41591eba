#!/usr/bin/env bash
# The ablation table of docs/RESULTS.md under the cached-feature recipe: for each benchmark and seed,
# (a) ImageNet baseline, (b) global branch only, (c) FashionNet without landmark pooling, (d) FashionNet with
# landmark pooling, both trained on the metric loss alone, and (e) (d) + the category and attribute heads
# (= `fashion train` defaults). Every knob is an environment variable; the defaults are the published table's.
set -euo pipefail
FASHION=${FASHION:-.venv/bin/fashion}
ITEMS=${ITEMS:-150}
SEEDS=${SEEDS:-"1 2 3"}
INPUT=${INPUT:-224}
DATA=${DATA:-var/ablation/data}
RUNS=${RUNS:-var/ablation/runs}
OUT=${OUT_DIR:-var/ablation/results}
CACHE=${CACHE:-var/ablation/cache}
mkdir -p "$OUT"
for bench in ${BENCHMARKS:-consumer2shop inshop}; do
  for seed in $SEEDS; do
    data="$DATA/$bench-$seed"
    [ -f "$data/Eval/list_eval_partition.txt" ] || $FASHION synth --benchmark "$bench" --out "$data" --items "$ITEMS" --seed "$seed"
    $FASHION eval --data "$data" --checkpoint imagenet --input-size "$INPUT" --json "$OUT/$bench-$seed-a-imagenet.json" >/dev/null
    run() {  # name, then fashion train options
      local name=$1; shift
      local start=$SECONDS
      $FASHION train --data "$data" --out "$RUNS/$bench-$seed-$name" --input-size "$INPUT" --cache-dir "$CACHE" \
        --seed "$seed" "$@" >/dev/null 2>&1
      echo "$bench seed $seed $name: $((SECONDS - start)) s" | tee -a "$OUT/times.txt"
      $FASHION eval --data "$data" --checkpoint "$RUNS/$bench-$seed-$name/model.pt" --json "$OUT/$bench-$seed-$name.json" >/dev/null
    }
    run b-global-only --no-landmark-pooling --landmark-epochs 0 --category-weight 0 --attribute-weight 0
    run c-no-landmark-pooling --no-landmark-pooling --category-weight 0 --attribute-weight 0
    run d-landmark-pooling --category-weight 0 --attribute-weight 0
    run e-multitask
  done
done
.venv/bin/python scripts/ablation_table.py "$OUT"
