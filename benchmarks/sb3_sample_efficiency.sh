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
# does not learn), with the world model WORLD_MODEL (default spartan) and the extra
# fields DREAMER_SET (KEY=VALUE separated by spaces or newlines, no spaces inside a value,
# default none), e.g. the SPARTAN settings with gate exploration and a rising price of
# docs/results/agent.md:
#   TRAIN_RATIO=512 DREAMER_SET="tau_reference=dense gate_detach=true gate_score_cap=5
#   tau_factor=1.5 sparsity_warmup=6000 lambda_min=0.0001 lambda_init=0.0001
#   lambda_max=0.001 gate_explore=0.3 lambda_schedule=[[10000,0.005,0.01]]"
# ppo-imagination runs with the world model IMAG_WORLD_MODEL (default spartan) and the extra fields
# IMAG_SET (space-separated KEY=VALUE, default none), e.g. the settings that learned
# Neutral in docs/results/sb3.md ("ppo-imagination at the Dreamer's update ratio"):
#   IMAG_WORLD_MODEL=dense-transformer IMAG_SET="collect_steps=1000 wm_updates=1000
#   seq_len=32 prefill=2000 n_steps=16 imag_steps=65536 ppo_batch_size=512 ent_coef=0.03"
# PPO runs once per seed of PPO_SEEDS (default "0"; PPO's first crossing varies by 2.8x
# over seeds 0-4, see docs/results/sb3.md) for PPO_STEPS real steps (default STEPS: PPO
# needs 100,000 or more where the others need 16,000), e.g.
#   PPO_SEEDS="0 1 2 3 4" PPO_STEPS=150000 bash benchmarks/sb3_sample_efficiency.sh 16000
# Writes runs/sb3_sample_efficiency/<agent>/ (run directories; PPO's are ppo-seed<S>/) and
# runs/sb3_sample_efficiency/result.json: {agent: {steps_to_target, final_return, ...}};
# "ppo" holds one such record per seed under "seeds" and the median over the seeds of
# both step counts (env steps; the lower middle value for an even count of seeds; a seed
# that never reached TARGET, null, counts as later than every other).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-100000}"
TARGET="${2:-0.0}"
BIN=.venv/bin
OUT=runs/sb3_sample_efficiency
mkdir -p "$OUT"
PPO_SEEDS="${PPO_SEEDS:-0}"
for seed in $PPO_SEEDS; do
  rm -rf "${OUT:?}/ppo-seed$seed"
  $BIN/mbrl-causal train --agent ppo --env InterventionalPong-Neutral-v0 --preset quick \
    --steps "${PPO_STEPS:-$STEPS}" --seed "$seed" --logdir "$OUT/ppo-seed$seed" --no-eval \
    --no-progress --set log_every=1000 --set checkpoint_every="${CKPT_EVERY:-5000}" \
    --set keep_checkpoints=100000
  bash benchmarks/eval_curve.sh "$OUT/ppo-seed$seed" "${EVAL_EPISODES:-20}" neutral "$TARGET" \
    > /dev/null
done
for agent in ppo-imagination dreamer; do
  rm -rf "${OUT:?}/$agent"
  extra=()
  if [ "$agent" = dreamer ]; then
    extra=(--world-model "${WORLD_MODEL:-spartan}" --set train_ratio="${TRAIN_RATIO:-128}")
    read -r -d "" -a kvs <<< "${DREAMER_SET:-}" || true   # no globbing of [[...]]; newlines split too
    for kv in ${kvs[@]+"${kvs[@]}"}; do extra+=(--set "$kv"); done
  elif [ "$agent" = ppo-imagination ]; then
    extra=(--world-model "${IMAG_WORLD_MODEL:-spartan}")
    read -r -d "" -a kvs <<< "${IMAG_SET:-}" || true
    for kv in ${kvs[@]+"${kvs[@]}"}; do extra+=(--set "$kv"); done
  fi
  $BIN/mbrl-causal train --agent "$agent" --env InterventionalPong-Neutral-v0 --preset quick \
    --steps "$STEPS" --logdir "$OUT/$agent" --no-eval --no-progress --set log_every=1000 \
    --set checkpoint_every="${CKPT_EVERY:-5000}" --set keep_checkpoints=100000 "${extra[@]}"
  bash benchmarks/eval_curve.sh "$OUT/$agent" "${EVAL_EPISODES:-20}" neutral "$TARGET" > /dev/null
done
$BIN/python - "$OUT" "$TARGET" $PPO_SEEDS <<'PY'
import json, math, statistics, sys, pathlib
out, target, seeds = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]

def record(run):
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l]
    curve = [(r["step"], r["rollout/episode_return"]) for r in recs
             if r.get("kind") == "scalars" and r.get("rollout/episode_return") is not None]
    hit = [s for s, v in curve if v >= target]
    ev = json.loads((run / "eval" / "curve.json").read_text())
    return {"steps_to_target": hit[0] if hit else None,
            "eval_steps_to_target": ev["steps_to_target"],
            "eval_curve": [[c["step"], c["return_mean"]] for c in ev["curve"]],
            "final_return": curve[-1][1] if curve else None,
            "best_return": max(v for _, v in curve) if curve else None,
            "curve": curve}

def median(values):  # a seed that never reached the target is later than every other
    m = statistics.median_low([math.inf if v is None else v for v in values])
    return None if m == math.inf else m

result = {"env": "InterventionalPong-Neutral-v0", "target_return": target}
per_seed = {s: record(out / f"ppo-seed{s}") for s in seeds}
result["ppo"] = {"seeds": per_seed,
                 "steps_to_target": median([r["steps_to_target"] for r in per_seed.values()]),
                 "eval_steps_to_target": median(
                     [r["eval_steps_to_target"] for r in per_seed.values()])}
for agent in ("ppo-imagination", "dreamer"):
    result[agent] = record(out / agent)
(out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
brief = {k: {kk: vv for kk, vv in v.items() if kk not in ("curve", "eval_curve", "seeds")}
         if isinstance(v, dict) else v for k, v in result.items()}
brief["ppo"]["eval_steps_to_target_per_seed"] = {
    s: r["eval_steps_to_target"] for s, r in per_seed.items()}
print(json.dumps(brief, indent=2))
PY
