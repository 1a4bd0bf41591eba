#!/usr/bin/env bash
# Issue 9's targets, measured with `fashion eval` on held-out items (figures in docs/RESULTS.md):
# 1. consumer-to-shop, 1,000 items, seed 11: default `fashion train` (timed, caching included) vs ImageNet;
# 2. in-shop, 1,000 items, seed 11: the same;
# 3. a shop's own catalogue with item groupings only (no landmark, category or attribute files), fine-tuned
#    from the demo checkpoint (`make demo` first), vs ImageNet and vs the demo checkpoint as it is.
set -euo pipefail
FASHION=${FASHION:-.venv/bin/fashion}
ROOT=${ROOT:-var/targets}
INIT=${INIT:-var/demo/runs/demo/model.pt}
mkdir -p "$ROOT/results"
timed() {  # name, command...
  local name=$1; shift
  local start=$SECONDS
  "$@"
  echo "$name: $((SECONDS - start)) s" | tee -a "$ROOT/results/times.txt"
}
for bench in ${BENCHMARKS:-consumer2shop inshop}; do
  data="$ROOT/data/$bench-1000-s11"
  [ -f "$data/Eval/list_eval_partition.txt" ] || $FASHION synth --benchmark "$bench" --out "$data" --items 1000 --seed 11
  timed "train $bench" $FASHION train --data "$data" --out "$ROOT/runs/$bench" --cache-dir "$ROOT/cache"
  $FASHION eval --data "$data" --checkpoint "$ROOT/runs/$bench/model.pt" --json "$ROOT/results/$bench-trained.json"
  $FASHION eval --data "$data" --checkpoint imagenet --json "$ROOT/results/$bench-imagenet.json"
done
[ -n "${SKIP_SHOP:-}" ] && exit 0
# A shop's catalogue: only Eval/list_eval_partition.txt, Anno/list_item_consumer2shop.txt, Anno/list_bbox_*.
shop="$ROOT/data/shop-groupings-500-s21"
if [ ! -f "$shop/Eval/list_eval_partition.txt" ]; then
  $FASHION synth --benchmark consumer2shop --out "$shop" --items 500 --seed 21
  rm -f "$shop"/Anno/list_landmarks_consumer2shop.txt "$shop"/Anno/list_category_*.txt "$shop"/Anno/list_attr_*.txt
  ls "$shop/Anno"
fi
timed "fine-tune groupings" $FASHION train --data "$shop" --out "$ROOT/runs/shop" --cache-dir "$ROOT/cache" --init-checkpoint "$INIT"
$FASHION eval --data "$shop" --checkpoint "$ROOT/runs/shop/model.pt" --json "$ROOT/results/shop-finetuned.json"
$FASHION eval --data "$shop" --checkpoint "$INIT" --json "$ROOT/results/shop-init.json"
$FASHION eval --data "$shop" --checkpoint imagenet --json "$ROOT/results/shop-imagenet.json"
