#!/usr/bin/env bash
# Dynamic-sparsity benchmarks (run on demand, never in CI).
#   bash benchmarks/sparsity.sh [STEPS]   (default 200 Jacobian samples per env)
# Writes runs/sparsity_bench/:
#   speed.json        env-step Jacobians/s on HalfCheetah-v5 (ours per state, batched with 1
#                     and all threads, the mjd_transitionFD chain, their ratios) and
#                     Hopper-v5 (RK4, batched)
#   <env>.json        sparsity figures at T = 1e-6 with the threshold sweep, random policy
#   <env>/            the PNG figures
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-200}"
BIN=.venv/bin
OUT=runs/sparsity_bench
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
$BIN/python -m mbrl_causal.analysis.bench --json "$OUT/speed.json"
for env in HalfCheetah-v5 Hopper-v5 Walker2d-v5 Ant-v5 Reacher-v5 Swimmer-v5 Pusher-v5 \
  InvertedPendulum-v5; do
  $BIN/mbrl-causal sparsity --env "$env" --steps "$STEPS" --threshold 1e-6 --sweep \
    --json "$OUT/$env.json" --plots "$OUT/$env" --no-progress
done
