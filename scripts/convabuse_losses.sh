#!/usr/bin/env bash
# Train the five losses on ConvAbuse (../shared/data/convabuse) with configs/convabuse.yaml and
# print each run's validation metrics next to the constant train-mean predictor.
#   bash scripts/convabuse_losses.sh [key=value overrides...]   e.g. optim.epochs=1
set -euo pipefail
cd "$(dirname "$0")/.."
for loss in forward-kl reverse-kl jsd soft majority; do
  .venv/bin/bayespref train --config configs/convabuse.yaml name="convabuse-${loss}" \
    loss.name="${loss}" progress=false "$@"
done
