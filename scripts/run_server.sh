#!/usr/bin/env bash
# Serve a model repository with Triton Inference Server (the tritonserver of .venv-triton, made by
# scripts/setup_triton.sh), like the reference's triton/scripts/run_server.sh without Docker.
# Returns when the server stops; SIGTERM or Ctrl-C stops it cleanly.
#
#   bash scripts/run_server.sh [-- extra jasper serve args]
#
# MODEL_REPO    triton/model_repo   (written by scripts/export_model.sh or `jasper triton-repo`)
# ADDRESS       127.0.0.1           interface to bind; 0.0.0.0 serves other machines
# HTTP_PORT 8000, GRPC_PORT 8001, METRICS_PORT 8002, LOG_VERBOSE 0
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ ${1:-} == -- ]] && shift
: "${MODEL_REPO:=triton/model_repo}" "${ADDRESS:=127.0.0.1}"
: "${HTTP_PORT:=8000}" "${GRPC_PORT:=8001}" "${METRICS_PORT:=8002}" "${LOG_VERBOSE:=0}"
exec "${JASPER:-$REPO/.venv/bin/jasper}" serve --repo "$MODEL_REPO" --address "$ADDRESS" \
  --http_port "$HTTP_PORT" --grpc_port "$GRPC_PORT" --metrics_port "$METRICS_PORT" \
  --log_verbose "$LOG_VERBOSE" "$@"
