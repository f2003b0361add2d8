#!/usr/bin/env bash
# The agent issue's speed reference, measured in the same session as `mbrl-causal bench agent`:
# SheepRL's DreamerV3-XS on CartPole-v1 with vector keys (batch 16 sequences x 64 steps,
# replay ratio 1), its gradient updates per second read from its TensorBoard log
# ("Time/sps_train": updates per second of training time, acting excluded).
#   SHEEPRL_VENV=DIR bash benchmarks/sheeprl_reference.sh [TRAIN_UPDATES]   (default 600)
# SheepRL pins its own dependencies, so it lives in its own venv:
#   python3 -m venv DIR && DIR/bin/pip install torch==2.13.0 sheeprl
# Writes runs/sheeprl_reference/speed.json: SheepRL's updates/s, ours (bench agent), ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SHEEPRL_VENV:?set SHEEPRL_VENV to the venv that has sheeprl installed}"
UPDATES="${1:-600}"
START=1024
OUT=runs/sheeprl_reference
THREADS="${THREADS:-2}"
mkdir -p "$OUT"
rm -rf "$OUT/sheeprl"
export OMP_NUM_THREADS="$THREADS"
(cd "$OUT" && mkdir -p sheeprl && cd sheeprl && "$SHEEPRL_VENV/bin/sheeprl" exp=dreamer_v3 \
  algo=dreamer_v3_XS env=gym env.id=CartPole-v1 env.num_envs=1 env.capture_video=false \
  "algo.cnn_keys.encoder=[]" "algo.mlp_keys.encoder=[vector]" \
  "algo.cnn_keys.decoder=[]" "algo.mlp_keys.decoder=[vector]" \
  fabric.accelerator=cpu algo.learning_starts="$START" \
  algo.total_steps=$((START + UPDATES)) metric.log_every=100 checkpoint.every=1000000 \
  algo.run_test=false > sheeprl.log 2>&1)
.venv/bin/mbrl-causal bench agent --json "$OUT/ours.json" > /dev/null
.venv/bin/python - "$OUT" "$THREADS" <<'PY'
import glob, json, statistics, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

out, threads = Path(sys.argv[1]), int(sys.argv[2])
events = sorted(glob.glob(str(out / "sheeprl" / "logs" / "**" / "events.out.tfevents.*"),
                          recursive=True))
if not events:
    sys.exit(f"no SheepRL TensorBoard log under {out / 'sheeprl'}; see sheeprl.log")
acc = EventAccumulator(events[-1])
acc.Reload()
if "Time/sps_train" not in acc.Tags()["scalars"]:
    sys.exit("SheepRL logged no Time/sps_train (too few updates?); see sheeprl.log")
sps = [e.value for e in acc.Scalars("Time/sps_train")]
ours = json.loads((out / "ours.json").read_text())
sheep = statistics.median(sps)
result = {
    "unit": "gradient updates (world model + actor + critic) per second of training time",
    "threads": threads,
    "sheeprl_dreamer_v3_XS_updates_per_s": {"median": sheep, "per_log_interval": sps},
    "ours_updates_per_s": ours["updates_per_s"],
    "ratio_ours_over_sheeprl": ours["updates_per_s"] / sheep,
    "ours": ours,
}
(out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: v for k, v in result.items() if k != "ours"}, indent=2))
PY
