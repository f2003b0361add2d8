#!/usr/bin/env bash
# Learning curve of a run from its kept checkpoints: `mbrl-causal evaluate --checkpoint`
# on every checkpoint in RUN_DIR/checkpoints/ (train with --set keep_checkpoints=100 to
# keep them all), deterministic policy, EPISODES episodes of REGIMES each.
#   bash benchmarks/eval_curve.sh RUN_DIR [EPISODES] [REGIMES] [TARGET]
#   (defaults: 20 episodes, regime neutral, target return 0.0)
# Writes RUN_DIR/eval/step_<STEP>/ per checkpoint and RUN_DIR/eval/curve.json:
#   {"run_dir", "regimes", "episodes", "target_return",
#    "curve": [{"step", "return_mean", "return_std"}, ...],   (return: points won - lost
#                                                               per episode, mean over
#                                                               the regimes' episodes)
#    "steps_to_target"}   (first checkpoint's env step with return_mean >= target; null)
# Unlike `rollout/episode_return` (the stochastic policy's last 100 training episodes,
# which lags the policy by up to 100 episodes), each point is the policy at that step.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:?usage: eval_curve.sh RUN_DIR [EPISODES] [REGIMES] [TARGET]}"
EPISODES="${2:-20}"
REGIMES="${3:-neutral}"
TARGET="${4:-0.0}"
BIN=.venv/bin
shopt -s nullglob
ckpts=("$RUN"/checkpoints/step_*.pt)
if [ ${#ckpts[@]} -eq 0 ]; then
  echo "eval_curve.sh: $RUN has no checkpoint in checkpoints/" >&2
  exit 2
fi
for ck in "${ckpts[@]}"; do
  step=$(basename "$ck" .pt)
  step=$((10#${step#step_}))
  $BIN/mbrl-causal evaluate "$RUN" --checkpoint "$step" --regimes "$REGIMES" \
    --episodes "$EPISODES" > /dev/null
done
$BIN/python - "$RUN" "$EPISODES" "$REGIMES" "$TARGET" <<'PY'
import json, pathlib, sys
import numpy as np
run, episodes, regimes, target = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
curve = []
for ck in sorted((run / "checkpoints").glob("step_*.pt")):
    rec = json.loads((run / "eval" / f"step_{int(ck.stem[5:])}" / "eval.json").read_text())
    per = list(rec["per_regime"].values())
    curve.append({"step": rec["checkpoint_step"],
                  "return_mean": float(np.mean([e["return_mean"] for e in per])),
                  "return_std": float(np.mean([e["return_std"] for e in per]))})
hit = [c["step"] for c in curve if c["return_mean"] >= target]
out = {"run_dir": str(run), "regimes": regimes, "episodes": episodes,
       "target_return": target, "curve": curve, "steps_to_target": hit[0] if hit else None}
(run / "eval" / "curve.json").write_text(json.dumps(out, indent=2) + "\n")
for c in curve:
    print(f"{c['step']:>8}  {c['return_mean']:+.2f} +- {c['return_std']:.2f}")
print("steps to target", target, ":", out["steps_to_target"])
PY
