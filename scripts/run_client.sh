#!/usr/bin/env bash
# Transcribe audio files (or a manifest, for the WER) with a running server, like the reference's
# triton/scripts/run_client.sh, but zero-padded batches with true lengths.
#
#   bash scripts/run_client.sh FILE_OR_DIR... [-- extra jasper client args]
#   MANIFEST=/data/librispeech-dev-clean-wav.json DATA_DIR=/data bash scripts/run_client.sh
#
# URL ("" = localhost:8000 for http, :8001 for grpc), PROTOCOL http, CONCURRENCY 4, BATCH_SIZE 1,
# MANIFEST "" (comma-separated), DATA_DIR . (manifest paths are relative to it), MODEL jasper
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
files=()
while (($#)) && [[ $1 != -- ]]; do files+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
: "${URL:=}" "${PROTOCOL:=http}" "${CONCURRENCY:=4}" "${BATCH_SIZE:=1}" "${MANIFEST:=}" "${DATA_DIR:=.}"
: "${MODEL:=jasper}"
args=(--protocol "$PROTOCOL" --concurrency "$CONCURRENCY" --batch_size "$BATCH_SIZE" --model "$MODEL")
[[ -n $URL ]] && args+=(--url "$URL")
IFS=, read -ra manifests <<<"$MANIFEST"
for m in "${manifests[@]}"; do args+=(--manifest "$m" --data_dir "$DATA_DIR"); done
exec "${JASPER:-$REPO/.venv/bin/jasper}" client "${files[@]}" "${args[@]}" "$@"
