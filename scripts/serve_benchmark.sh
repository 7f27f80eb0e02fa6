#!/usr/bin/env bash
# Load test of the Triton deployment: throughput and p50/p90/p99 latency against client
# concurrency for 2 s and 7 s of audio, as a table, JSON and PNG, with the batch sizes Triton
# formed. Starts and stops its own server (benchmarks/serve_load.py).
#
#   bash scripts/serve_benchmark.sh [-- extra serve_load.py args]
#
# MODEL_CONFIG     configs/jasper5x3_cpu.yaml
# CHECKPOINT       ""  (random weights: latency does not depend on them)
# CONCURRENCY      "1 2 4 8 16 32"
# DURATIONS        "2 7"          seconds of audio per request
# SECONDS_PER_RUN  10             measured seconds per (duration, concurrency)
# PROTOCOL grpc, MAX_BATCH 8, MAX_QUEUE_DELAY_US 5000, OUTPUT_DIR results/serve_benchmark
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ ${1:-} == -- ]] && shift
: "${MODEL_CONFIG:=$REPO/configs/jasper5x3_cpu.yaml}" "${CHECKPOINT:=}" "${CONCURRENCY:=1 2 4 8 16 32}"
: "${DURATIONS:=2 7}" "${SECONDS_PER_RUN:=10}" "${PROTOCOL:=grpc}" "${MAX_BATCH:=8}"
: "${MAX_QUEUE_DELAY_US:=5000}" "${OUTPUT_DIR:=results/serve_benchmark}"
args=(--model_config "$MODEL_CONFIG" --protocol "$PROTOCOL" --seconds "$SECONDS_PER_RUN"
  --max_batch_size "$MAX_BATCH" --max_queue_delay_us "$MAX_QUEUE_DELAY_US" --output_dir "$OUTPUT_DIR")
[[ -n $CHECKPOINT ]] && args+=(--ckpt "$CHECKPOINT")
# shellcheck disable=SC2086  # the lists are meant to split into words
exec "${PYTHON:-$REPO/.venv/bin/python}" "$REPO/benchmarks/serve_load.py" "${args[@]}" \
  --concurrency $CONCURRENCY --durations $DURATIONS "$@"
