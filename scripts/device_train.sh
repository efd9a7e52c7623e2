#!/usr/bin/env bash
# Retrain the bundled retina-cnn on a GPU machine (docs/training.md, "Training on a GPU").
#
#   OUT=/path/to/out bash scripts/device_train.sh [bundle options...]
#
# Run from the repository root of a copy of the working tree. Needs python3 with torch, numpy,
# scipy, xarray, h5py, pluggy, tqdm (captum and netCDF4 are not needed for simulate + train; the
# plugins that need them are skipped by discovery with a warning). Nothing is installed: the repo
# is put on PYTHONPATH and a minimal dist-info in $OUT/.site declares the entry points of
# pyproject.toml, so plugin discovery works as after `pip install -e .`.
#
# Defaults: --device cuda --workdir $OUT/work --max-seconds 300 -o $OUT/default.safetensors; options given
# on the command line come later and win (e.g. --device cpu --minutes 0.2 --max-seconds 30 for a
# local dry run, --resume to continue the state in the work dir, --set train.lr=0.005).
# Writes: $OUT/default.safetensors, $OUT/train.log (everything printed), $OUT/env.txt, and
# $OUT/state/ (the resumable training state and the recipe; a second call with
# WORKDIR=<a copy of it> ... --resume continues from it). The recording itself is not copied (GBs).
set -euo pipefail

OUT="${OUT:?set OUT to the output directory}"
PY="${PYTHON:-python3}"
REPO="$(pwd)"
WORK="${WORKDIR:-$OUT/work}"
mkdir -p "$OUT" "$WORK"
[ -f pyproject.toml ] && [ -d plugins/mechlens_retina ] || { echo "run from the repository root" >&2; exit 2; }

# entry points without installing: a dist-info on PYTHONPATH, its entry_points.txt cut from pyproject.toml
SITE="$OUT/.site"
DIST="$SITE/mechlens-0.1.0.dist-info"
mkdir -p "$DIST"
printf 'Metadata-Version: 2.1\nName: mechlens\nVersion: %s\n' \
    "$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)" > "$DIST/METADATA"
{
    echo "[console_scripts]"
    echo "mechlens = mechlens.cli:main"
    echo "[mechlens]"
    awk '/^\[project.entry-points.mechlens\]/{on=1; next} /^\[/{on=0} on && NF {gsub(/"/, ""); print}' pyproject.toml
} > "$DIST/entry_points.txt"
export PYTHONPATH="$REPO:$REPO/plugins:$SITE${PYTHONPATH:+:$PYTHONPATH}"
# cuBLAS needs this before CUDA starts for deterministic matrix products (TrainParameters.deterministic)
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
export PYTHONUNBUFFERED=1

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    "$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
    "$PY" -c 'from mechlens import registry; print("models:", registry.default().names("model"))'
    nproc
} > "$OUT/env.txt" 2>&1 || true
cat "$OUT/env.txt"

set +e
"$PY" -m mechlens_retina.training.bundle --device cuda --workdir "$WORK" --max-seconds 300 -o "$OUT/default.safetensors" "$@" \
    2>&1 | tee "$OUT/train.log"
status=${PIPESTATUS[0]}
set -e

# the resumable state, whatever happened (a later call can resume from it)
mkdir -p "$OUT/state"
for f in train_state.pt recipe.json; do
    [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/state/"
done
echo "exit status $status; outputs in $OUT" | tee -a "$OUT/train.log"
exit "$status"
