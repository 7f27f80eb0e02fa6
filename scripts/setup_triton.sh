#!/usr/bin/env bash
# Create the Triton server's own environment, .venv-triton: the `tritonserver` binary bundled in
# the PyPI wheel nvidia-pytriton (Triton 2.51, CPU-capable, Python backend included), ONNX Runtime
# for the models, and numpy < 2. It is separate from .venv because the Python backend stub returns
# empty outputs with numpy 2, and that pin must not constrain the training environment.
# Safe to run again: each step is skipped when already done.
#
#   bash scripts/setup_triton.sh
#   JASPER_TRITON_VENV=/path bash ...   # put the environment elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${JASPER_TRITON_VENV:-.venv-triton}
PYTHON=${PYTHON:-python3}
PACKAGES=("numpy<2" "nvidia-pytriton==0.7.0" "onnxruntime>=1.17" "tritonclient[http,grpc]>=2.50")

if [[ ! -x $VENV/bin/python ]]; then
  echo "== creating the Triton environment $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
CHECK="import numpy, onnxruntime, pytriton, sys, tritonclient.grpc; sys.exit(numpy.__version__ >= '2')"
if ! "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
  echo "== installing ${PACKAGES[*]} into $VENV"
  "$VENV/bin/python" -m pip install -q "${PACKAGES[@]}"
fi

# The wheel ships one Python backend stub per Python version; Triton looks for it in the backend
# directory, so copy the one matching this environment's Python there.
"$VENV/bin/python" - <<'EOF'
import shutil
import sys
from pathlib import Path

import pytriton

root = Path(pytriton.__file__).parent / "tritonserver"
version = f"{sys.version_info.major}.{sys.version_info.minor}"
stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
if not stub.is_file():
    sys.exit(f"nvidia-pytriton has no Python backend stub for Python {version} ({stub})")
target = root / "backends" / "python" / "triton_python_backend_stub"
if not target.is_file() or target.read_bytes() != stub.read_bytes():
    shutil.copy2(stub, target)
print(f"== tritonserver ready: {root / 'bin' / 'tritonserver'} (Python {version} backend stub)")
EOF
