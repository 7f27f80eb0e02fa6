#!/usr/bin/env bash
# Training stability: train the same recipe with NUM_SEEDS seeds (scripts/train.sh, RESUME=true per
# seed), evaluate each final model on every dataset (scripts/inference.sh) and print the reference
# README's table: a row per dataset, a column per seed, Mean and Std (also OUTPUT_DIR/stability.md,
# .json and .png).
#
#   NUM_GPUS=8 AMP=true bash scripts/train_stability.sh                     # the reference's 8 seeds
#   NUM_SEEDS=3 DATA_DIR=data/synth MODEL_CONFIG=configs/jasper5x3_cpu.yaml \
#     TRAIN_MANIFESTS=data/synth/synth-train.json VAL_MANIFESTS=data/synth/synth-dev.json \
#     DATASETS="dev=data/synth/synth-dev.json test=data/synth/synth-test.json" \
#     EXTRA_ARGS="--time_limit_minutes 10" bash scripts/train_stability.sh  # a CPU-sized run
#
# NUM_SEEDS (8)  SEEDS ("1 .. NUM_SEEDS")  OUTPUT_DIR (/results/stability: seed{S}/ per seed)
# DATASETS ("dev-clean dev-other test-clean test-other"): NAME means
#   $DATA_DIR/librispeech-NAME-wav.json; NAME=MANIFEST names any manifest
# REPORT_ONLY (false): tabulate the evaluations already in OUTPUT_DIR
# Every train.sh variable (DATA_DIR, MODEL_CONFIG, NUM_GPUS, AMP, BATCH_SIZE, EPOCHS, EMA, ...) and
# inference.sh variable (BATCH_SIZE, AMP, CPU, ...) applies to each seed's run.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n ${JASPER_PYTHON:-} ]]; then PYTHON=$JASPER_PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
export JASPER_PYTHON=$PYTHON
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

: "${NUM_SEEDS:=8}"
: "${SEEDS:=$(seq -s ' ' 1 "$NUM_SEEDS")}"
: "${OUTPUT_DIR:=/results/stability}"
: "${DATASETS:=dev-clean dev-other test-clean test-other}"
: "${REPORT_ONLY:=false}"
export DATA_DIR=${DATA_DIR:-/datasets/LibriSpeech}

args=(--seeds $SEEDS --datasets $DATASETS --output_dir "$OUTPUT_DIR" --data_dir "$DATA_DIR")
[[ $REPORT_ONLY == true ]] && args+=(--report_only)
exec "$PYTHON" -m jasper.cli train-stability "${args[@]}"
