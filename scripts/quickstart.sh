#!/usr/bin/env bash
# The main job, one command on a fresh machine: set up, then train and evaluate a Jasper and write
# a report (quickstart-output/report.md). Arguments go to `jasper quickstart` (see --help), e.g.
#   bash scripts/quickstart.sh --minutes 60
#
# With DATA_DIR pointing at a prepared LibriSpeech (scripts/download_librispeech.sh, then
# scripts/preprocess_librispeech.sh) and a GPU present, this runs the reference recipe instead:
# scripts/train.sh with its defaults (Jasper 10x5 DR, 440 epochs; every train.sh variable applies).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
VENV=${JASPER_VENV:-.venv}

if [[ -n ${DATA_DIR:-} && -f $DATA_DIR/librispeech-dev-clean-wav.json ]] \
   && "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "== DATA_DIR=$DATA_DIR holds LibriSpeech and a GPU is present: running the reference recipe"
  exec bash scripts/train.sh "$DATA_DIR" "${MODEL_CONFIG:-configs/jasper10x5dr_speedp-online_speca.yaml}" \
    "${OUTPUT_DIR:-results}"
fi
exec "$VENV/bin/jasper" quickstart "$@"
