#!/usr/bin/env bash
# Install what `jasper lm` and beam-search decoding need: KenLM's builders (lmplz, build_binary) in the
# virtual environment's bin/, and the Python side (kenlm query module, pyctcdecode). Safe to run again:
# each step is skipped when already done.
#
# No registry ships KenLM's builder programs (Debian has no kenlm package; PyPI's kenlm builds only the
# query module), but the kenlm sdist on PyPI carries the whole source tree, lm/builder included. So the
# tools are compiled from that sdist with cmake against Debian's boost and compression libraries
# (a few minutes on 2 cores), and the binaries are cached outside the clone, so a fresh clone on the
# same machine (CI) only copies them.
#
# pyctcdecode 0.5.0 pins numpy<2 although it runs unchanged on numpy 2 (its upstream PRs that lift the
# pin change nothing else); installing it with --no-deps keeps the environment's numpy.
#
#   bash scripts/setup_kenlm.sh
#   JASPER_SKIP_APT=1 ...          # no apt-get (build dependencies installed by other means)
#   JASPER_VENV=/path ...          # the environment to install into (default .venv)
#   JASPER_KENLM_CACHE=/path ...   # where the built tools are kept (default ~/.cache/jasper/kenlm-VERSION)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${JASPER_VENV:-.venv}
KENLM_VERSION=${KENLM_VERSION:-0.3.0}
PYCTCDECODE_VERSION=${PYCTCDECODE_VERSION:-0.5.0}
CACHE=${JASPER_KENLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jasper/kenlm-$KENLM_VERSION}
TOOLS=(lmplz build_binary)
# boost's unit_test_framework is only there because KenLM's CMakeLists requires it unconditionally.
APT_PACKAGES=(build-essential cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev
  libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)
PIP=("$VENV/bin/python" -m pip install -q)

if [[ ! -x $VENV/bin/python ]]; then
  echo "setup_kenlm.sh: no environment at $VENV (run scripts/setup.sh first)" >&2
  exit 1
fi

# Both the Python module's build and the tools' need a compiler, cmake and the libraries.
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})) && [[ -z ${JASPER_SKIP_APT:-} ]]; then
  echo "== installing KenLM build dependencies: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$VENV/bin/python" -c "import kenlm, pygtrie" 2>/dev/null; then
  echo "== installing the kenlm Python module $KENLM_VERSION (compiled from source)"
  "${PIP[@]}" "kenlm==$KENLM_VERSION" "pygtrie>=2.1,<3"
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m; m.version('pyctcdecode')" 2>/dev/null; then
  echo "== installing pyctcdecode $PYCTCDECODE_VERSION (--no-deps: keeps numpy 2)"
  "${PIP[@]}" --no-deps "pyctcdecode==$PYCTCDECODE_VERSION"
fi

tools_work() {  # $1: a directory; true when every tool is there with all its libraries
  local tool
  for tool in "${TOOLS[@]}"; do
    [[ -x $1/$tool ]] || return 1
    ! ldd "$1/$tool" | grep -q "not found" || return 1
  done
}

if tools_work "$VENV/bin"; then
  echo "== KenLM tools already in $VENV/bin"
  exit 0
fi

if ! tools_work "$CACHE/bin"; then
  echo "== building KenLM $KENLM_VERSION tools (${TOOLS[*]}) in $CACHE"
  rm -rf "$CACHE/src" "$CACHE/build" "$CACHE/bin"
  mkdir -p "$CACHE/src"
  "$VENV/bin/python" -m pip download -q --no-deps --no-binary kenlm "kenlm==$KENLM_VERSION" -d "$CACHE/src"
  tar -xzf "$CACHE/src/kenlm-$KENLM_VERSION.tar.gz" -C "$CACHE/src"
  if ! { cmake -S "$CACHE/src/kenlm-$KENLM_VERSION" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release \
    -DKENLM_MAX_ORDER=6 && cmake --build "$CACHE/build" --target "${TOOLS[@]}" -j "$(nproc)"; } \
    >"$CACHE/build.log" 2>&1; then
    tail -n 30 "$CACHE/build.log" >&2
    echo "setup_kenlm.sh: building KenLM failed; full log in $CACHE/build.log" >&2
    exit 1
  fi
  mkdir -p "$CACHE/bin"
  for tool in "${TOOLS[@]}"; do
    cp "$CACHE/build/bin/$tool" "$CACHE/bin/"
  done
  rm -rf "$CACHE/build"
fi

for tool in "${TOOLS[@]}"; do
  cp "$CACHE/bin/$tool" "$VENV/bin/"
done
echo "== KenLM tools installed in $VENV/bin: ${TOOLS[*]}"
