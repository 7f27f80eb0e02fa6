#!/usr/bin/env bash
# Convert each downloaded LibriSpeech subset to 16 kHz WAV and write its manifest:
# $DATA_DIR/<subset> -> $DATA_DIR/<subset>-wav and $DATA_DIR/librispeech-<subset>-wav.json, as the
# reference does. Offline speed perturbation ($SPEEDS) applies to the train-* subsets only.
# The reference overwrote $SPEEDS with its first argument, so `SPEEDS="0.9 1.1" bash ...` did
# nothing there; here both forms work, and the argument wins when both are given.
#
#   bash scripts/preprocess_librispeech.sh
#   SPEEDS="0.9 1.1" bash scripts/preprocess_librispeech.sh
#   bash scripts/preprocess_librispeech.sh "0.9 1.1"                 # the reference's form
#   DATA_DIR=~/data/LibriSpeech SUBSETS="dev-clean" bash scripts/preprocess_librispeech.sh
#
# Subsets whose directory is missing are skipped with a message. The exit code is non-zero when
# any subset had failures (they are listed by path); the other subsets are still converted.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA_DIR=${DATA_DIR:-/datasets/LibriSpeech}
SUBSETS=${SUBSETS:-"dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"}
SPEEDS=${1:-${SPEEDS:-}}

if [[ -n ${JASPER_PYTHON:-} ]]; then PYTHON=$JASPER_PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

status=0
for subset in $SUBSETS; do
  if [[ ! -d $DATA_DIR/$subset ]]; then
    echo "skipping $subset: $DATA_DIR/$subset does not exist"
    continue
  fi
  speed_args=()
  if [[ $subset == train-* && -n $SPEEDS ]]; then
    # shellcheck disable=SC2206  # SPEEDS is a word list
    speed_args=(--speed $SPEEDS)
  fi
  "$PYTHON" -m jasper.cli data prepare --input_dir "$DATA_DIR/$subset" --dest_dir "$DATA_DIR/$subset-wav" \
    --output_json "$DATA_DIR/librispeech-$subset-wav.json" ${speed_args[@]+"${speed_args[@]}"} || status=$?
done
exit "$status"
