#!/usr/bin/env bash
# Set up jasper on a fresh Debian/Ubuntu machine: system packages, a virtual environment in .venv,
# PyTorch (the CPU build unless a GPU is present or torch is already there), jasper itself and its
# test tools. Safe to run again: every step is skipped when already done.
#
#   bash scripts/setup.sh            # everything
#   JASPER_SKIP_APT=1 bash ...       # no apt-get (no root, or packages installed by other means)
#   JASPER_VENV=/path bash ...       # put the environment elsewhere
#   COMPILE=true bash ...            # also what --compile (torch.compile) needs on a CPU: a C++ compiler
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${JASPER_VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

# System packages: libsndfile for soundfile, and the offline TTS engines that render the synthetic
# corpus (espeak-ng, flite, festival and its voices), and Spanish sentences for `--language es`.
APT_PACKAGES=(libsndfile1 espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes-es)
# torch.compile's CPU backend builds C++ with the Python headers (python3-dev holds them for Debian's
# Python; a python.org or pyenv build ships its own).
[[ ${COMPILE:-false} == true ]] && APT_PACKAGES+=(g++ python3-dev)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})) && [[ -z ${JASPER_SKIP_APT:-} ]]; then
  echo "== installing system packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x $VENV/bin/python ]]; then
  echo "== creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "== installing PyTorch (CUDA build)"
    "${PIP[@]}" "torch>=2.4"
  else
    echo "== installing PyTorch $TORCH_VERSION (CPU build)"
    "${PIP[@]}" --retries 0 --timeout 15 "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
      || "${PIP[@]}" "torch==$TORCH_VERSION"
  fi
fi

echo "== installing jasper and its test tools"
"${PIP[@]}" -e ".[test]"
"${PIP[@]}" -e ".[tts]" || echo "== warning: the optional piper voice (.[tts]) did not install; jasper data synth will use the other engines" >&2
"${PIP[@]}" -e ".[transform]" || echo "== warning: the voice transformation packages (.[transform]) did not install; jasper data transform will not run" >&2
"${PIP[@]}" -e ".[vad]" || echo "== warning: silero-vad (.[vad]) did not install; transcribe --vad silero will not run" >&2
# Kokoro-82M, the many-speaker engine of the synthetic corpus (its model and voice packs).
bash scripts/setup_kokoro.sh || echo "== warning: Kokoro did not install (scripts/setup_kokoro.sh); jasper data synth will use the other engines" >&2
# Deployment: ONNX export and the Triton client here, the Triton server in its own .venv-triton.
# Fatal unless JASPER_SKIP_TRITON=1 (CI must run the real server); the Triton tests then skip.
if [[ -z ${JASPER_SKIP_TRITON:-} ]]; then
  "${PIP[@]}" -e ".[export,serve]"
  bash scripts/setup_triton.sh || { echo "== error: scripts/setup_triton.sh failed (JASPER_SKIP_TRITON=1 skips it)" >&2; exit 1; }
fi
# Beam search with a word LM: kenlm, pyctcdecode and KenLM's lmplz/build_binary (JASPER_SKIP_LM=1 skips them).
[[ -n ${JASPER_SKIP_LM:-} ]] || { "${PIP[@]}" -e ".[lm]" && bash scripts/setup_kenlm.sh; } || { echo "== error: the LM tools did not install (JASPER_SKIP_LM=1 skips them)" >&2; exit 1; }
echo "== ready: $VENV/bin/jasper --help"
