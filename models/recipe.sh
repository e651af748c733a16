#!/usr/bin/env bash
# How models/keypoints.pt was made (`make model`): synthetic teach/repeat bags, then the project's
# trainer in two stages. Training worlds 1-8 (day teach; dusk and night repeats); validation world
# 103 (night). Held-out evaluation worlds 101 and 102 are never trained on or tuned on.
set -euo pipefail
OUT=${1:-runs/model}
mkdir -p "$OUT/bags"
cd "$OUT/bags"
bag() {  # world condition route
  local f=w$1-$3-$2.mcap
  [ -f "$f" ] || sdpr-loc make-bag --world "$1" --condition "$2" --frames 120 --route "$3" --seed "$1" --out "$f" >/dev/null
  echo "$f"
}
pairs() {  # worlds... -> TEACH/REPEAT arrays over dusk and night repeats
  teach=(); repeat=()
  for w in "$@"; do
    for c in dusk night; do teach+=("$(bag "$w" day teach)"); repeat+=("$(bag "$w" "$c" repeat)"); done
  done
}
val_teach=$(bag 103 day teach); val_repeat=$(bag 103 night repeat)
common=(--set batch_size=2 --set eval_max_pairs=40 --set checkpoint_every=50 --set warmup_steps=30 --no-progress
        --val-teach "$val_teach" --val-repeat "$val_repeat")
# Stage 1: pose + keypoint losses only, live keypoints against keyframe pixels (worlds 1-4),
# 480 steps (one epoch of the 3-epoch schedule; the previous packaged model).
pairs 1 2 3 4
sdpr-loc train --teach "${teach[@]}" --repeat "${repeat[@]}" --out ../stage1 --max-steps 480 --epochs 3 \
  --set descriptor_weight=0 --set keypoints_from=live "${common[@]}"
# Stage 2: fine-tune with the descriptor cross-entropy, keyframe keypoints against live pixels
# (what map localization does), worlds 1-8.
pairs 1 2 3 4 5 6 7 8
sdpr-loc train --teach "${teach[@]}" --repeat "${repeat[@]}" --out ../train --init-from ../stage1/model.pt \
  --max-steps 1600 --epochs 2 --set lr=0.0005 "${common[@]}"
# Held-out evaluation: night repeats of worlds 101 and 102 against their day maps.
for w in 101 102; do
  t=$(bag $w day teach); r=$(bag $w night repeat)
  sdpr-loc build-map --teach "$t" --model ../train/model.pt --out ../maps/w$w.npz --device cpu
  sdpr-loc eval --map ../maps/w$w.npz --repeat "$r" --teach "$t" --model ../train/model.pt \
    --methods learned-certified,learned-svd,learned-keypoints,orb-ransac --out ../eval/w$w --device cpu
done
