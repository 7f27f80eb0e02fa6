#!/usr/bin/env bash
# NVIDIA NeMo in its own environment, .venv-nemo, beside jasper (not a dependency of it): the peer
# that `scripts/make_nemo_fixtures.py` writes the NeMo parity fixtures with, and that
# `benchmarks/nemo_side_by_side.py` times against jasper on the same weights and audio.
# Pinned: nemo_toolkit[asr] 3.0.0 beside the CPU build of torch 2.13.0.
# Safe to run again: each step is skipped when already done.
#
#   bash scripts/setup_nemo.sh
#   JASPER_NEMO_VENV=/path bash ...   # put the environment elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${JASPER_NEMO_VENV:-.venv-nemo}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
NEMO_VERSION=${NEMO_VERSION:-3.0.0}

if [[ ! -x $VENV/bin/python ]]; then
  echo "== creating the NeMo environment $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install -q)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "== installing PyTorch $TORCH_VERSION (CPU build) into $VENV"
  "${PIP[@]}" --retries 0 --timeout 15 "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || "${PIP[@]}" "torch==$TORCH_VERSION"
fi
if ! "$VENV/bin/python" -c "import nemo.collections.asr" 2>/dev/null; then
  echo "== installing nemo_toolkit[asr]==$NEMO_VERSION into $VENV (a few minutes)"
  # torch pinned so that NeMo's requirements keep the CPU build installed above.
  "${PIP[@]}" "nemo_toolkit[asr]==$NEMO_VERSION" "torch==$TORCH_VERSION"
fi
# The side-by-side benchmark runs jasper (with ONNX Runtime) and NeMo in one process.
"${PIP[@]}" -e ".[export]" "torch==$TORCH_VERSION"
"$VENV/bin/python" -c "import nemo; print('== NeMo', nemo.__version__, 'in $VENV')"
