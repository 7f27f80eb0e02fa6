#!/usr/bin/env bash
# Run the test suite (after scripts/setup.sh). pytest's exit code 5 ("no tests collected") is a
# failure here: a suite that silently runs nothing must not look green.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${JASPER_VENV:-.venv}
"$VENV/bin/ruff" check jasper tests benchmarks || exit 1
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit $rc
