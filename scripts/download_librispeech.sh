#!/usr/bin/env bash
# Download LibriSpeech, check every archive's MD5 and extract it: `jasper data download` with the
# reference's paths. The archives go to $DATA_DIR and unpack to $DATA_ROOT_DIR/LibriSpeech/<subset>.
# Unlike the reference, which did nothing when $DATA_DIR existed, a re-run resumes: finished
# subsets are skipped, an interrupted download continues where it stopped.
#
#   bash scripts/download_librispeech.sh                           # all 7 subsets into /datasets
#   DATA_ROOT_DIR=~/data SUBSETS="dev-clean test-clean" bash scripts/download_librispeech.sh
#   BASE_URL=https://us.openslr.org/resources/12/ bash ...        # a mirror
#   bash scripts/download_librispeech.sh --skip_extract            # extra options go to the command
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA_ROOT_DIR=${DATA_ROOT_DIR:-/datasets}
DATA_DIR=${DATA_DIR:-$DATA_ROOT_DIR/LibriSpeech}
SUBSETS=${SUBSETS:-"dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"}
BASE_URL=${BASE_URL:-http://www.openslr.org/resources/12/}

if [[ -n ${JASPER_PYTHON:-} ]]; then PYTHON=$JASPER_PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p --mode 755 "$DATA_DIR"
# shellcheck disable=SC2086  # SUBSETS is a word list
exec "$PYTHON" -m jasper.cli data download --dest "$DATA_DIR" --extract_dir "$DATA_ROOT_DIR" \
  --subsets $SUBSETS --base_url "$BASE_URL" "$@"
