#!/usr/bin/env bash
# Agent benchmarks of the agent issue (run on demand; about an hour per model on 2 cores).
#   bash benchmarks/agent.sh [STEPS]   (default 60000 env steps per training run, quick
#   preset sizes at train_ratio TRAIN_RATIO, default 128: about 35 minutes per run on one
#   core; TRAIN_RATIO=512, one update per env step, learns in fewer env steps at about 4x
#   the wall time per env step: docs/results/agent.md gives both)
# Writes runs/agent_bench/<case>/ (run directories) and runs/agent_bench/*.json:
#   neutral-<model>.json  evaluation on InterventionalPong-Neutral-v0 (return vs random)
#   switch-<model>-<trigger>.json  held-out composite regimes after a switch, with the
#                                  surprise trigger and with no adaptation
#   switch-<model>-ac200.json      the surprise trigger, with 200 policy updates in
#                                  imagination after a fitted token (--adapt-ac-updates
#                                  200; the default, 0, acts with the best known token)
#   speed.json            updates/s (batch 16 x 64) and loop env steps/s
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-60000}"
RATIO=(--set train_ratio="${TRAIN_RATIO:-128}" --set threads=1)
BIN=.venv/bin
OUT=runs/agent_bench
mkdir -p "$OUT"
$BIN/mbrl-causal play --env InterventionalPong-Neutral-v0 --episodes 20 --policy random \
  --json "$OUT/neutral-random.json" > /dev/null
for model in spartan s2ssm dense-transformer; do
  $BIN/mbrl-causal train --env InterventionalPong-Neutral-v0 --world-model "$model" \
    --preset quick --steps "$STEPS" "${RATIO[@]}" --logdir "$OUT/neutral-$model" --no-eval \
    --no-progress
  $BIN/mbrl-causal evaluate "$OUT/neutral-$model" --regimes neutral --episodes 20 \
    --json "$OUT/neutral-$model.json"
  $BIN/mbrl-causal train --env InterventionalPong-v0 --world-model "$model" \
    --preset quick --steps "$STEPS" "${RATIO[@]}" --logdir "$OUT/switch-$model" --no-eval \
    --no-progress
  for trigger in surprise none; do
    $BIN/mbrl-causal evaluate "$OUT/switch-$model" --regimes composite --episodes 5 \
      --adapt-trigger "$trigger" --json "$OUT/switch-$model-$trigger.json"
  done
  $BIN/mbrl-causal evaluate "$OUT/switch-$model" --regimes composite --episodes 5 \
    --adapt-trigger surprise --adapt-ac-updates 200 --json "$OUT/switch-$model-ac200.json"
done
$BIN/mbrl-causal bench agent --json "$OUT/speed.json"
