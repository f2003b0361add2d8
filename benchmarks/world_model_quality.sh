#!/usr/bin/env bash
# Quality benchmark of the world models: `mbrl-causal fit` with the default settings for
# each of the four models, one after the other, JSON in runs/quality/<model>-<obs>.json.
#   bash benchmarks/world_model_quality.sh            # objects mode
#   bash benchmarks/world_model_quality.sh pixels --data-steps 20000
set -euo pipefail
obs="${1:-objects}"
shift || true
bin="${VENV:-.venv}/bin"
mkdir -p runs/quality
for model in spartan dense-transformer s2ssm dense-ssm; do
  "$bin/mbrl-causal" fit --world-model "$model" --obs "$obs" \
    --out "runs/quality/$model-$obs" --json "runs/quality/$model-$obs.json" "$@"
done
"$bin/python" - "$obs" <<'PY'
import json, sys
obs = sys.argv[1]
print(f"{'model':<18} {'mse':>9} {'shd':>6} {'prec':>5} {'rec':>5} {'edges':>5}")
for m in ("spartan", "dense-transformer", "s2ssm", "dense-ssm"):
    r = json.load(open(f"runs/quality/{m}-{obs}.json"))["overall"]
    print(f"{m:<18} {r['mse']:9.2e} {r['shd']:6.3f} {r['precision']:5.2f} "
          f"{r['recall']:5.2f} {r['edges']:5.2f}")
PY
