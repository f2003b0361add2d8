#!/usr/bin/env bash
# Imagination steps/s (ImaginationVecEnv, 256 envs) vs the real env through SB3's
# DummyVecEnv (256 envs), in one run; writes runs/bench_sb3.json.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/mbrl-causal bench sb3 --json runs/bench_sb3.json "$@"
