#!/usr/bin/env bash
# Train the bundled retina-cnn under several recipes at once on one GPU machine (one lease), so the
# recipe whose probe-agreement gate is best can be chosen with all of them measured:
#
#   OUT=/path/to/out bash scripts/device_sweep.sh [MAX_SECONDS]
#
# Each recipe runs scripts/device_train.sh into /tmp/mechlens-sweep/<name>/ (the recordings, GBs,
# and the resumable state stay there); only its checkpoint (default.safetensors, with the gate in its
# metadata) comes back in $OUT/<name>/, since the device tool returns 8 files per call. The GPU is
# shared: each job gets a part of the CPU. How the bundled recipe was chosen with it:
# docs/training.md and docs/retina-walkthrough.md.
set -uo pipefail
OUT="${OUT:?set OUT to the output directory}"
BUDGET="${1:-185}"
WORK=/tmp/mechlens-sweep
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-5}"
nvidia-smi -L || true
declare -A RECIPES=(
    [scenes-1s]="--set simulate.stimulus_params={image_s=1.0}"
    [scenes-150ms]="--set simulate.stimulus_params={image_s=0.15}"
    [scenes-100ms]="--set simulate.stimulus_params={image_s=0.1}"
)
for name in "${!RECIPES[@]}"; do
    mkdir -p "$WORK/$name"
    # shellcheck disable=SC2086  # the recipe's options are meant to split
    OUT="$WORK/$name/out" WORKDIR="$WORK/$name/work" bash scripts/device_train.sh --max-seconds "$BUDGET" \
        --set train.max_steps=0 ${RECIPES[$name]} > "$WORK/$name.log" 2>&1 &
done
wait
for name in "${!RECIPES[@]}"; do
    mkdir -p "$OUT/$name"
    cp "$WORK/$name/out/default.safetensors" "$OUT/$name/" 2>/dev/null
    echo "== $name"; grep -E "gate|^\| |simulate .* train|best epoch|Error|error" "$WORK/$name.log" | tail -12
done
