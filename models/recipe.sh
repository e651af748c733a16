#!/usr/bin/env bash
# How models/keypoints.pt was made (`make model`): synthetic teach/repeat bags, then the project's trainer.
# Training worlds 1-4 (day teach; dusk and night repeats); validation world 101 (night);
# held-out evaluation worlds 101 and 102 are never trained on.
set -euo pipefail
OUT=${1:-runs/model}
mkdir -p "$OUT/bags"
cd "$OUT/bags"
teach=(); repeat=()
for w in 1 2 3 4; do
  [ -f w$w-teach-day.mcap ] || sdpr-loc make-bag --world $w --condition day --frames 120 --route teach --out w$w-teach-day.mcap
  for c in dusk night; do
    [ -f w$w-repeat-$c.mcap ] || sdpr-loc make-bag --world $w --condition $c --frames 120 --route repeat --seed $w --out w$w-repeat-$c.mcap
    teach+=(w$w-teach-day.mcap); repeat+=(w$w-repeat-$c.mcap)
  done
done
for w in 101 102; do
  [ -f w$w-teach-day.mcap ] || sdpr-loc make-bag --world $w --condition day --frames 120 --route teach --out w$w-teach-day.mcap
  [ -f w$w-repeat-night.mcap ] || sdpr-loc make-bag --world $w --condition night --frames 120 --route repeat --seed $w --out w$w-repeat-night.mcap
done
sdpr-loc train --teach "${teach[@]}" --repeat "${repeat[@]}" \
  --val-teach w101-teach-day.mcap --val-repeat w101-repeat-night.mcap --out ../train \
  --max-steps 700 --epochs 3 --set batch_size=2 --set eval_max_pairs=40 --set checkpoint_every=50 \
  --set warmup_steps=30 --no-progress
for w in 101 102; do
  sdpr-loc build-map --teach w$w-teach-day.mcap --model ../train/model.pt --out ../maps/w$w.npz --device cpu
  sdpr-loc eval --map ../maps/w$w.npz --repeat w$w-repeat-night.mcap --teach w$w-teach-day.mcap \
    --model ../train/model.pt --out ../eval/w$w --device cpu
done
