#!/usr/bin/env bash
# Sample efficiency on InterventionalPong-Neutral-v0 (issue 5): real env steps until the
# return first reaches TARGET, for SB3 PPO (model-free), ppo-imagination and the Dreamer
# agent, all at the quick preset's sizes, seed 0, measured two ways:
#   steps_to_target       the mean return of the last 100 real training episodes
#                         (rollout/episode_return, logged every 1000 steps; the stochastic
#                         policy, lagging it by up to 100 episodes);
#   eval_steps_to_target  the deterministic policy of the checkpoints (every CKPT_EVERY
#                         steps, default 5000), EVAL_EPISODES (default 20) episodes each
#                         (benchmarks/eval_curve.sh; the curve is in <agent>/eval/curve.json).
#   bash benchmarks/sb3_sample_efficiency.sh [STEPS] [TARGET]   (default 100000, 0.0)
# The Dreamer agent runs at train ratio TRAIN_RATIO (default 128; the quick preset's 16
# does not learn), with the world model WORLD_MODEL (default spartan). ppo-imagination
# runs with the world model IMAG_WORLD_MODEL (default spartan) and the extra fields
# IMAG_SET (space-separated KEY=VALUE, default none), e.g. the settings that learned
# Neutral in docs/results/sb3.md ("ppo-imagination at the Dreamer's update ratio"):
#   IMAG_WORLD_MODEL=dense-transformer IMAG_SET="collect_steps=1000 wm_updates=1000
#   seq_len=32 prefill=2000 n_steps=16 imag_steps=65536 ppo_batch_size=512 ent_coef=0.03"
# Writes runs/sb3_sample_efficiency/<agent>/ (run directories) and
# runs/sb3_sample_efficiency/result.json: {agent: {steps_to_target, final_return, ...}}.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-100000}"
TARGET="${2:-0.0}"
BIN=.venv/bin
OUT=runs/sb3_sample_efficiency
mkdir -p "$OUT"
for agent in ppo ppo-imagination dreamer; do
  rm -rf "${OUT:?}/$agent"
  extra=()
  if [ "$agent" = dreamer ]; then
    extra=(--world-model "${WORLD_MODEL:-spartan}" --set train_ratio="${TRAIN_RATIO:-128}")
  elif [ "$agent" = ppo-imagination ]; then
    extra=(--world-model "${IMAG_WORLD_MODEL:-spartan}")
    for kv in ${IMAG_SET:-}; do extra+=(--set "$kv"); done
  fi
  $BIN/mbrl-causal train --agent "$agent" --env InterventionalPong-Neutral-v0 --preset quick \
    --steps "$STEPS" --logdir "$OUT/$agent" --no-eval --no-progress --set log_every=1000 \
    --set checkpoint_every="${CKPT_EVERY:-5000}" --set keep_checkpoints=100000 "${extra[@]}"
  bash benchmarks/eval_curve.sh "$OUT/$agent" "${EVAL_EPISODES:-20}" neutral "$TARGET" > /dev/null
done
$BIN/python - "$OUT" "$TARGET" <<'PY'
import json, sys, pathlib
out, target = pathlib.Path(sys.argv[1]), float(sys.argv[2])
result = {"env": "InterventionalPong-Neutral-v0", "target_return": target}
for agent in ("ppo", "ppo-imagination", "dreamer"):
    recs = [json.loads(l) for l in (out / agent / "metrics.jsonl").read_text().splitlines() if l]
    curve = [(r["step"], r["rollout/episode_return"]) for r in recs
             if r.get("kind") == "scalars" and r.get("rollout/episode_return") is not None]
    hit = [s for s, v in curve if v >= target]
    ev = json.loads((out / agent / "eval" / "curve.json").read_text())
    result[agent] = {"steps_to_target": hit[0] if hit else None,
                     "eval_steps_to_target": ev["steps_to_target"],
                     "eval_curve": [[c["step"], c["return_mean"]] for c in ev["curve"]],
                     "final_return": curve[-1][1] if curve else None,
                     "best_return": max(v for _, v in curve) if curve else None,
                     "curve": curve}
(out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk not in ("curve", "eval_curve")} if isinstance(v, dict) else v
                  for k, v in result.items()}, indent=2))
PY
