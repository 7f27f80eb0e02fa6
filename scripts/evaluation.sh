#!/usr/bin/env bash
# WER of a checkpoint on a LibriSpeech subset, nothing else saved: scripts/inference.sh with
# PREDICTION_FILE="" and DATASET=test-other, as the reference's evaluation.sh. Takes the same
# variables and arguments as inference.sh, e.g.
#
#   CHECKPOINT=/ckpt/Jasper_best_checkpoint.pt DATASET=dev-clean bash scripts/evaluation.sh /data/LibriSpeech
set -euo pipefail
set -a
: "${PREDICTION_FILE=}"
: "${DATASET:=test-other}"
export PREDICTION_FILE DATASET
exec bash "$(dirname "${BASH_SOURCE[0]}")/inference.sh" "$@"
