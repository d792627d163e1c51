#!/usr/bin/env bash
# Rebuild the bundled demo model config/models/weld_demo.onnx (and its report weld_demo.md)
# from scratch: `weld-sim record` renders labelled bags of the synthetic camera (640x480,
# noise_scale 1.0, the distribution the demo runs on), `weld-train pipeline` extracts,
# trains (default config: mobilenet_v3_small, RGB-D, seam-strip crop), evaluates and exports,
# and scripts/demo_model_report.py scores the exported model on held-out bags read as the
# ONNX node reads frames.
#
# Seeds: training pool 100-103 (4 bags), held-out evaluation 200-201 (2 bags), as in
# benchmarks/bench_training.py; the demo's synthetic camera runs seed 7. On a 2-core CPU
# this takes about 40 minutes on a quiet machine (recording 1 min, extraction 2-3 min, training about 2 min per epoch).
#
#   scripts/make_demo_model.sh                 # full recipe
#   EPOCHS=2 WELDS=6 scripts/make_demo_model.sh   # a quick check that the recipe runs
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$ROOT/runs/demo_model}"
EPOCHS="${EPOCHS:-16}"           # as the run that produced the committed model (config/models/weld_demo.md)
WELDS="${WELDS:-100}"            # welds per class in the training pool (classes drawn at random)
PER_WELD=5
THREADS="${THREADS:-2}"
OUT_DIR="${OUT_DIR:-$ROOT/config/models}"
START_NS=1767225600000000000

run() { "$ROOT/scripts/with_env.sh" "$@"; }
say() { echo "[make_demo_model $(date +%H:%M:%S)] $*"; }

rm -rf "$WORK"
mkdir -p "$WORK/bags" "$WORK/heldout"
pool_frames=$(( WELDS * 6 * PER_WELD / 4 ))
held_frames=$(( (WELDS / 4 > 3 ? WELDS / 4 : 3) * 6 * PER_WELD / 2 ))
for b in 0 1 2 3; do
  storage=sqlite3; enc=32FC1
  if (( b % 2 )); then storage=mcap; enc=16UC1; fi
  say "recording training bag $((b + 1))/4 (seed $((100 + b)), $pool_frames frames, $storage)"
  run weld-sim record --out "$WORK/bags/bag_1_0$b" --frames "$pool_frames" --seed $((100 + b)) \
    --frames-per-weld $PER_WELD --width 640 --height 480 --noise-scale 1.0 --storage $storage \
    --depth-encoding $enc --start-ns $(( START_NS + b * 10000000000000 )) --quiet
done
for b in 0 1; do
  storage=sqlite3; enc=32FC1
  if (( b % 2 )); then storage=mcap; enc=16UC1; fi
  say "recording held-out bag $((b + 1))/2 (seed $((200 + b)), $held_frames frames)"
  run weld-sim record --out "$WORK/heldout/bag_2_0$b" --frames "$held_frames" --seed $((200 + b)) \
    --frames-per-weld $PER_WELD --width 640 --height 480 --noise-scale 1.0 --storage $storage \
    --depth-encoding $enc --start-ns $(( START_NS + b * 10000000000000 )) --quiet
done

say "weld-train pipeline: extract, train $EPOCHS epochs on $THREADS threads, evaluate, export"
OMP_NUM_THREADS=$THREADS run weld-train pipeline "$WORK/bags" --dataset "$WORK/ds" -o "$WORK/run" \
  --epochs "$EPOCHS" --seed 0 --device cpu --min-samples 3 --split-seed 0 --fractions 0.85,0.15,0.0 \
  --set model.name=mobilenet_v3_small --set train.threads="$THREADS" --set train.patience=0 \
  --set evaluate.split=val --set export.version=weld-demo-mnv3s-rgbd-seam-1024

say "scoring on the held-out bags and writing $OUT_DIR/weld_demo.{onnx,md}"
mkdir -p "$OUT_DIR"
cp "$WORK/run/model.onnx" "$OUT_DIR/weld_demo.onnx"
OMP_NUM_THREADS=$THREADS run python "$ROOT/scripts/demo_model_report.py" "$OUT_DIR/weld_demo.onnx" \
  "$WORK/heldout" --run "$WORK/run" --out "$OUT_DIR/weld_demo.md" \
  --recipe "scripts/make_demo_model.sh (EPOCHS=$EPOCHS WELDS=$WELDS)"
say "done: $OUT_DIR/weld_demo.onnx ($(du -h "$OUT_DIR/weld_demo.onnx" | cut -f1))"
